"""Checked reading of avatar files (``avatar.npz``): every refusal is an ``AvatarFileError`` naming the file.

An avatar file is a zip of ``.npy`` members (``numpy.savez_compressed``) plus a JSON header
(``header_json``, see ``Avatar.header``). A damaged or hostile file must neither crash
``Avatar.load`` with a traceback nor exhaust memory, so the checks run in this order, each before
the bytes it protects are read:

1. the zip's directory: file size, entry count and directory size (from the end record, before
   ``zipfile`` parses the directory), member names (only the known arrays), no duplicates, no
   encryption, stored or deflated only, each member's declared size and their total under caps, a
   compressed size no larger than deflate can make of the declared size (a stream holding more
   than it declares is a bomb; ``zipfile`` never inflates past the declared size either);
2. the JSON header (size-capped) against ``HEADER_SCHEMA`` (``sega.schema``), then the head model
   it names against the one given;
3. every member's ``.npy`` header (``numpy.lib.format``): dtype and shape against the layout the
   header and the head model imply, and the declared member size equal to header + data;
4. the data: finite floats, indices in range, bool bytes 0 / 1, coefficients in plausible ranges.

Caps are derived from the largest preset ("high": 320 x 320 atlas, ~45k texels of 102,400 atlas
cells) with a wide margin: atlases up to ``MAX_ATLAS_RESOLUTION`` per side, so at most
1024^2 = 1M texels.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SegaError
from ..gaussians import GAUSSIAN_MAP_FIELDS
from ..headmodel.base import HeadModel
from ..nets.decoders import NUM_ATTRIBUTES, DynamicDecoderOptions, StaticDecoderOptions
from ..nets.vae import LOSSES, DisplacementVAEOptions
from ..schema import Any_, Arr, Bool, Nullable, Num, Obj, SchemaError, Str, parse_json, validate
from ..uv import Atlas
from .options import AVATAR_FORMAT_VERSION, AvatarOptions

# ---- caps ----------------------------------------------------------------------------------------
MAX_ATLAS_RESOLUTION = 1024  # texels per atlas side: 3.2x the high preset's 320 (10x its texels)
MAX_TEXELS = MAX_ATLAS_RESOLUTION**2  # one Gaussian per atlas cell at most
MAX_HAIR = 1 << 20  # hair Gaussians (sega.avatar.build.hair: ~10k on real photos)
MAX_HAIR_SCALE_M = 0.05  # a hair Gaussian's std-dev (sega.avatar.build.hair: 2.4 mm): no splat may cover the frame
MAX_HAIR_REACH_M = 1.0  # hair means within a metre of the head model's origin
# Largest legitimate member: texel_rc [T, 2] int64 at MAX_TEXELS = 16 MiB (the high preset's is 0.7 MiB).
MAX_MEMBER_BYTES = 32 * 2**20
# All members at MAX_TEXELS: maps 56 MiB + texel arrays 39 MiB + face_id_map 8 MiB + mesh-sized atlas
# arrays (ICT: 3 MiB) + decoders (< 2 MiB): ~110 MiB. A high-preset avatar holds ~12 MiB.
MAX_TOTAL_BYTES = 192 * 2**20
MAX_HEADER_BYTES = 2**20  # the JSON header is ~6 KB (53 expression names, cameras, configs, provenance)
# 5 maps + 11 atlas arrays + 3 fit arrays + header = 20; decoders add 2 per layer (~40 at the largest
# configs HEADER_SCHEMA allows: 8 levels per trunk, 8 encoder layers).
MAX_MEMBERS = 128
ZIP_DIRECTORY_ENTRY_MAX_BYTES = 512  # one central-directory entry: 46 fixed bytes + a short name + zip64 extras
MAX_FILE_BYTES = MAX_TOTAL_BYTES + MAX_MEMBERS * 4096  # stored (uncompressed) members plus zip / npy headers
NPY_HEADER_MAX_BYTES = 4096  # an .npy header (dict literal) is ~128 bytes
# Deflate expands incompressible data by at most ~0.03% + a few bytes per block (zlib's deflateBound).
DEFLATE_SLACK_FRACTION = 1 / 1000
DEFLATE_SLACK_BYTES = 64
MAX_ABS_IDENTITY = 20.0  # identity coefficients are in standard deviations (prior N(0, 1)); fits stay within +-5
MAX_ABS_EXPRESSION = 20.0  # expression weights (ARKit: [0, 1]; FLAME: std-dev units, within +-3)
MAX_IMAGE_SIDE = 65_536  # px, camera image sizes
MAX_NAME_CHARS = 128  # region / expression / model names
EOCD = struct.Struct("<4s4H2LH")  # zip end record: signature, disks (2), entries here, entries, dir size, dir offset, comment
EOCD_SIGNATURE = b"PK\x05\x06"
MAX_ZIP_COMMENT = 0xFFFF

FLOAT32, INT64, INT16, BOOL, UINT8 = (np.dtype(t) for t in ("<f4", "<i8", "<i2", "|b1", "|u1"))
HEADER_MEMBER = "header_json"
FIT_ARRAYS = {"identity": (("I",), FLOAT32), "expression": (("E",), FLOAT32), "static_mask": (("T",), BOOL)}
MAP_ARRAYS = {f"maps_{k}": (("T", *tail), FLOAT32) for k, tail in
              {"offset": (3,), "rotation": (4,), "log_scale": (3,), "opacity_logit": (), "color": (3,)}.items()}
HAIR_ARRAYS = {f"hair_{k}": (("H", *tail), FLOAT32) for k, tail in
               {"means": (3,), "quats": (4,), "scales": (3,), "opacities": (), "colors": (3,)}.items()}  # fmt: skip
ATLAS_ARRAYS = {  # F faces, C cells, R atlas side, T texels (see sega.uv.Atlas)
    "atlas_faces": (("F", 3), INT64),
    "atlas_face_atlas_uvs": (("F", 3, 2), FLOAT32),
    "atlas_face_cell": (("F",), INT64),
    "atlas_cell_tile": (("C", 2), INT64),
    "atlas_cell_layer": (("C",), INT64),
    "atlas_cell_box": (("C", 3), INT64),
    "atlas_face_id_map": (("R", "R"), INT64),
    "atlas_texel_face": (("T",), INT64),
    "atlas_texel_bary": (("T", 3), FLOAT32),
    "atlas_texel_rc": (("T", 2), INT64),
    "atlas_texel_region": (("T",), INT16),
}
assert set(MAP_ARRAYS) == {f"maps_{k}" for k in GAUSSIAN_MAP_FIELDS} and set(ATLAS_ARRAYS) == {f"atlas_{k}" for k in Atlas._ARRAYS}
INDEX_RANGES = {  # name -> (lowest, one past the highest) allowed value, as symbols of the layout
    "atlas_faces": (0, "V"),
    "atlas_face_cell": (-1, "C"),
    "atlas_cell_layer": (0, "F"),
    "atlas_cell_box": (0, "R+1"),
    "atlas_face_id_map": (-1, "F"),
    "atlas_texel_face": (0, "F"),
    "atlas_texel_rc": (0, "R"),
    "atlas_texel_region": (0, "regions"),
}
DECODER_NAME = re.compile(r"decoder_(encoder|dynamic|static)\.[A-Za-z0-9_.]{1,128}")
FIXED_NAMES = frozenset({HEADER_MEMBER, *FIT_ARRAYS, *MAP_ARRAYS, *ATLAS_ARRAYS, *HAIR_ARRAYS})


class AvatarFileError(SegaError, ValueError):
    """An avatar file that cannot be used (the message names the file and what is wrong)."""


@dataclass(frozen=True)
class Int(Num):
    """A JSON integer (not ``2.0``: sizes go to numpy and torch, which refuse floats) in [lo, hi].

    (A local spec class: ``sega.schema.Num(integer=True)`` accepts whole floats.)"""

    integer: bool = True

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(f"{where}: must be an integer in [{self.lo:g}, {self.hi:g}], got {json.dumps(value)[:60]}")
        super().check(value, where)


# ---- header schema -------------------------------------------------------------------------------
SEED = Int(0, 2**63 - 1)
NAME = Str(MAX_NAME_CHARS)
ANY_OBJECT = Obj(max_keys=1024)  # informative (provenance): any keys, nesting capped by sega.schema
GENERIC_INT = Int(0, 10**9)
GENERIC_FLOAT = Num(-1e9, 1e9)


UNCHECKED_FIELDS: list[str] = []  # fields without a spec (a test keeps this empty: new fields need a range here)


def _dataclass_spec(cls: type, ranges: dict[str, Any], closed: bool = True, floats: Num = GENERIC_FLOAT) -> Obj:
    """An Obj over ``cls``'s fields (all optional: older files may lack newer fields), with ``ranges``
    for the named fields and a generic spec by the default's type for the others (``floats`` for float
    fields). ``closed``: other keys are refused (``options_from_dict`` refuses them too)."""
    specs = {}
    for f in fields(cls):
        spec = ranges.get(f.name)
        if spec is None:
            default = f.default
            spec = (Bool() if isinstance(default, bool) else GENERIC_INT if isinstance(default, int)
                    else floats if isinstance(default, float) else Str(64) if isinstance(default, str) else None)
        if spec is None:  # a new field of another type: readable (not to break every avatar), listed for the test
            UNCHECKED_FIELDS.append(f"{cls.__name__}.{f.name}")
            spec = Any_()
        specs[f.name] = spec
    return Obj(optional=specs, closed=closed)


OPTIONS_SPEC = _dataclass_spec(AvatarOptions, {
    "atlas_resolution": Int(8, MAX_ATLAS_RESOLUTION),
    "render_size": Int(8, MAX_IMAGE_SIDE),
    "coverage_size": Int(8, MAX_IMAGE_SIDE),
    "coverage_every": Int(1, 10**6),
    "residual_every": Int(1, 10**6),
    "dynamic_map_resolution": Int(1, MAX_ATLAS_RESOLUTION),
    "photo_cos_low": Num(-1, 1),
    "photo_cos_high": Num(-1, 1),
    "seed": SEED,
    "preset_name": NAME,
    "fit_preset": NAME,
    "background": Arr(Num(0, 1), 3, 3),
}, closed=False, floats=Num(0, 1e9))  # from_dict ignores unknown keys: so do we. Every float option (scales,
# thresholds, learning rates, loss weights, bounds) is >= 0; w_offset, the largest, is 1e6.
UNIT = Num(1e-9, 1e3)  # raw decoder output -> attribute units (a sign flip or zero would be a different decoder)
_TRUNK = {"feature_resolution": Int(1, 128), "channels": Arr(Int(1, 512), 1, 8), "map_resolution": Int(1, MAX_ATLAS_RESOLUTION),
          "leaky_slope": Num(0, 1), "seed": SEED, "offset_unit_m": UNIT, "log_scale_unit": UNIT, "opacity_unit": UNIT, "color_unit": UNIT}
DYNAMIC_SPEC = _dataclass_spec(DynamicDecoderOptions, {**_TRUNK, "latent_dim": Int(1, 1024), "identity_channels": Int(1, 512),
                                                      "expression_channels": Int(1, 512),
                                                      "residual_bounds": Nullable(Arr(Num(1e-6, 1e6), 4, 4))})  # b of b tanh(x / b)
STATIC_SPEC = _dataclass_spec(StaticDecoderOptions, {**_TRUNK, "feature_channels": Int(1, 512)})
ENCODER_SPEC = _dataclass_spec(DisplacementVAEOptions, {
    "num_expressions": Int(1, 4096), "latent_dim": Int(1, 1024), "encoder_hidden": Arr(Int(1, 4096), 0, 8),
    "map_resolution": Int(1, 4096), "decoder_base_resolution": Int(1, 4096), "decoder_channels": Arr(Int(1, 4096), 1, 8),
    "output_upscale": Int(1, 64), "atlas_resolution": Int(1, 4096), "atlas_regions": Nullable(Arr(NAME, 0, 256)),
    "atlas_packing": Str(choices=("area", "grid")), "loss": Str(choices=LOSSES), "seed": SEED, "eval_seed": SEED,
})
MATRIX3 = Arr(Arr(Num(-1e9, 1e9), 3, 3), 3, 3)
MATRIX4 = Arr(Arr(Num(-1e9, 1e9), 4, 4), 4, 4)
CAMERA_SPEC = Obj(required={"K": MATRIX3, "viewmat": MATRIX4, "width": Int(1, MAX_IMAGE_SIDE), "height": Int(1, MAX_IMAGE_SIDE)})
HEADER_SCHEMA = Obj(
    required={
        "format_version": Int(AVATAR_FORMAT_VERSION, AVATAR_FORMAT_VERSION),
        "options": OPTIONS_SPEC,
        "head_model": Obj(required={"name": NAME, "num_vertices": Int(1, 10**8), "num_faces": Int(1, 10**8),
                                    "expression_names": Arr(NAME, 0, 4096)},
                          optional={"licence": Str(4096), "num_identity": Int(0, 10**6)}),
        "atlas": Obj(required={
            "options": Obj(required={"resolution": Int(8, MAX_ATLAS_RESOLUTION), "regions": Nullable(Arr(NAME, 0, 256)),
                                     "padding_texels": Int(0, 64), "packing": Str(choices=("area", "grid"))}, closed=True),
            "region_names": Arr(NAME, 1, 256)}),
        "camera": CAMERA_SPEC,
        "crop_camera": CAMERA_SPEC,
    },
    optional={
        "sega_version": Str(64),
        "seed": SEED,
        "provenance": ANY_OBJECT,
        "decoders": Nullable(Obj(required={"encoder": ENCODER_SPEC, "dynamic": DYNAMIC_SPEC, "static": STATIC_SPEC},
                                 optional={"displacement_vae": ANY_OBJECT})),
    },
)


# ---- the zip -------------------------------------------------------------------------------------
def _fail(path: Path, what: str) -> AvatarFileError:
    return AvatarFileError(f"{path}: {what}")


def _check_end_record(path: Path, fh, size: int) -> None:
    """Entry count and directory size from the zip's end record, before ``zipfile`` parses the directory."""
    tail_len = min(size, EOCD.size + MAX_ZIP_COMMENT)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    plain = tail[-EOCD.size:]  # no comment: the record ends the file (zipfile looks there first, too)
    at = len(tail) - EOCD.size if plain[:4] == EOCD_SIGNATURE and plain[-2:] == b"\0\0" else tail.rfind(EOCD_SIGNATURE)
    if at < 0 or len(tail) - at < EOCD.size:
        raise _fail(path, "is not an avatar file (not a zip archive; it may be truncated)")
    entries, dir_bytes = EOCD.unpack_from(tail, at)[4:6]
    if entries > MAX_MEMBERS or dir_bytes > MAX_MEMBERS * ZIP_DIRECTORY_ENTRY_MAX_BYTES:
        raise _fail(path, f"holds {entries} entries ({dir_bytes} directory bytes); an avatar file has at most {MAX_MEMBERS}")


def _check_member(path: Path, info: zipfile.ZipInfo) -> str:
    """The array name of one zip entry, after the checks that need no decompression."""
    name = info.filename[: -len(".npy")] if info.filename.endswith(".npy") else None
    if name is None or not (name in FIXED_NAMES or DECODER_NAME.fullmatch(name)):
        raise _fail(path, f"unexpected member {info.filename[:80]!r} (not an avatar array)")
    if info.flag_bits & 0x1:
        raise _fail(path, f"member {info.filename} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _fail(path, f"member {info.filename} uses compression method {info.compress_type} (only stored or deflated)")
    cap = MAX_HEADER_BYTES + NPY_HEADER_MAX_BYTES if name == HEADER_MEMBER else MAX_MEMBER_BYTES
    if info.file_size > cap:
        raise _fail(path, f"member {info.filename} declares {info.file_size} bytes, over the {cap}-byte limit")
    bound = info.file_size if info.compress_type == zipfile.ZIP_STORED else \
        info.file_size + int(info.file_size * DEFLATE_SLACK_FRACTION) + DEFLATE_SLACK_BYTES
    if info.compress_size > bound:
        raise _fail(path, f"member {info.filename} holds {info.compress_size} compressed bytes for {info.file_size} declared "
                          "(it would inflate to more than it declares)")
    return name


def _open_zip(path: Path) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """The open archive and its members by array name (checked as in step 1 of the module docstring)."""
    try:
        with open(path, "rb") as fh:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise _fail(path, f"is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit for an avatar file")
            _check_end_record(path, fh, size)
        zf = zipfile.ZipFile(path)
    except FileNotFoundError as err:
        raise _fail(path, "avatar file not found") from err
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as err:
        raise _fail(path, f"is not a readable avatar file ({str(err)[:120]})") from err
    members: dict[str, zipfile.ZipInfo] = {}
    try:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _fail(path, f"holds {len(infos)} members; an avatar file has at most {MAX_MEMBERS}")
        for info in infos:
            name = _check_member(path, info)
            if name in members:
                raise _fail(path, f"member {info.filename} appears twice")
            members[name] = info
        total = sum(i.file_size for i in infos)
        if total > MAX_TOTAL_BYTES:
            raise _fail(path, f"declares {total / 2**20:.0f} MiB of arrays, over the {MAX_TOTAL_BYTES / 2**20:.0f} MiB limit")
        if HEADER_MEMBER not in members:
            raise _fail(path, "has no header (header_json); is it an avatar file written by sega?")
    except BaseException:
        zf.close()
        raise
    return zf, members


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: a hostile shape cannot overflow


READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError, NotImplementedError, struct.error)


def _read_npy_header(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> NpyHeader:
    fmt = np.lib.format
    try:
        with zf.open(info) as f:
            version = fmt.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"npy format version {version}")
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = reader(f, max_header_size=NPY_HEADER_MAX_BYTES)
            header = NpyHeader(tuple(int(s) for s in shape), dtype, bool(fortran), f.tell())
    except READ_ERRORS as err:
        raise _fail(path, f"member {info.filename} is not a readable array ({str(err)[:120]})") from err
    if header.dtype.hasobject:
        raise _fail(path, f"member {info.filename} holds Python objects (a pickle), not numbers")
    if header.offset + header.nbytes != info.file_size:
        raise _fail(path, f"member {info.filename}: its array header (shape {list(header.shape)}, {header.dtype}) does not "
                          f"match its size ({info.file_size} bytes)")
    return header


def _read_data(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, header: NpyHeader) -> np.ndarray:
    """The array of a member whose header has been checked (exactly its declared bytes are inflated; CRC checked)."""
    flat = np.empty(header.nbytes // header.dtype.itemsize, header.dtype)
    view = memoryview(flat).cast("B")
    try:
        with zf.open(info) as f:
            f.seek(header.offset)
            done = 0
            while done < len(view):
                n = f.readinto(view[done:])
                if not n:
                    raise EOFError(f"data ends after {done} of {len(view)} bytes")
                done += n
    except READ_ERRORS as err:
        raise _fail(path, f"member {info.filename} is damaged ({str(err)[:120]})") from err
    return flat.reshape(header.shape[::-1]).T if header.fortran else flat.reshape(header.shape)


def _read_header_json(path: Path, zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> dict:
    info = members[HEADER_MEMBER]
    npy = _read_npy_header(path, zf, info)
    if npy.dtype != UINT8 or len(npy.shape) != 1:
        raise _fail(path, f"header_json must be a 1-D uint8 array, got {npy.dtype} of shape {list(npy.shape)}")
    text = _read_data(path, zf, info, npy).tobytes()
    try:
        header = parse_json(text, f"{path}: header")
        if not isinstance(header, dict):
            raise _fail(path, "the header is not a JSON object")
        if header.get("format_version") != AVATAR_FORMAT_VERSION:
            raise _fail(path, f"avatar format {str(header.get('format_version'))[:20]}, this sega reads {AVATAR_FORMAT_VERSION} "
                              "(older avatars lack what this version draws: rebuild it from the photo)")
        return validate(header, HEADER_SCHEMA, f"{path}: header")
    except SchemaError as err:
        raise AvatarFileError(str(err)) from err


def read_avatar_header(path: str | Path) -> dict:
    """The checked JSON header of an avatar file (no array data is read)."""
    path = Path(path)
    zf, members = _open_zip(path)
    with zf:
        return _read_header_json(path, zf, members)


# ---- layout: what the header and the head model imply ----------------------------------------------
def _check_model(path: Path, header: dict, model: HeadModel) -> None:
    hm = header["head_model"]
    if hm["name"] != model.name or hm["num_vertices"] != model.num_vertices or hm["num_faces"] != model.num_faces:
        raise AvatarFileError(f"{path} was built with head model {hm['name']!r} ({hm['num_vertices']} vertices); "
                              f"got {model.name!r} ({model.num_vertices})")
    if tuple(hm["expression_names"]) != tuple(model.expression_names):
        raise AvatarFileError(f"{path} was built with other expressions than the given head model's")
    if hm.get("num_identity", model.num_identity) != model.num_identity:
        raise AvatarFileError(f"{path} uses {hm['num_identity']} identity components; "
                              f"the head model has {model.num_identity} (--num-identity)")


TRUNK_KERNEL = 3  # conv kernel side of sega.nets.decoders._UVTrunk


def _trunk_layout(prefix: str, c_in: int, channels: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of a ``_UVTrunk``: one conv per level, then the head conv to ``NUM_ATTRIBUTES`` channels."""
    out = {}
    for i, c_out in enumerate((*channels, NUM_ATTRIBUTES)):
        key = f"{prefix}.trunk.levels.{i}" if i < len(channels) else f"{prefix}.trunk.head"
        out[f"{key}.weight"], out[f"{key}.bias"] = (c_out, c_in, TRUNK_KERNEL, TRUNK_KERNEL), (c_out,)
        c_in = c_out
    return out


def decoder_layout(path: Path, decoders: dict, num_expressions: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``decoder_*`` array shapes of the configs in the header (the state dicts of ``ExpressionEncoder``,
    ``DynamicDecoder`` and ``StaticDecoder``), worked out without building the modules: a hostile config
    could ask for billions of parameters. Configs the config classes refuse are refused here."""
    try:
        enc = DisplacementVAEOptions.from_dict(decoders["encoder"])
        dyn = DynamicDecoderOptions.from_dict(decoders["dynamic"])
        sta = StaticDecoderOptions.from_dict(decoders["static"])
    except (TypeError, ValueError) as err:
        raise _fail(path, f"header.decoders: {str(err)[:160]}") from err
    if enc.num_expressions != num_expressions or dyn.latent_dim != enc.latent_dim:
        raise _fail(path, f"header.decoders: the encoder takes {enc.num_expressions} expressions and makes {enc.latent_dim}-d "
                          f"features; the head model has {num_expressions}, the dynamic decoder takes {dyn.latent_dim}-d")
    shapes: dict[str, tuple[int, ...]] = {}
    width = enc.num_expressions
    for i, hidden in enumerate(enc.encoder_hidden):  # nn.Sequential(Linear, SiLU, ...): Linears at even indices
        shapes[f"encoder.encoder.{2 * i}.weight"], shapes[f"encoder.encoder.{2 * i}.bias"] = (hidden, width), (hidden,)
        width = hidden
    shapes["encoder.to_posterior.weight"], shapes["encoder.to_posterior.bias"] = (2 * enc.latent_dim, width), (2 * enc.latent_dim,)
    r, expr_features = dyn.feature_resolution, dyn.expression_channels * dyn.feature_resolution**2
    shapes["dynamic.identity"] = (dyn.identity_channels, r, r)
    shapes["dynamic.from_latent.weight"], shapes["dynamic.from_latent.bias"] = (expr_features, dyn.latent_dim), (expr_features,)
    shapes.update(_trunk_layout("dynamic", dyn.identity_channels + dyn.expression_channels, dyn.channels))
    shapes["static.features"] = (sta.feature_channels, sta.feature_resolution, sta.feature_resolution)
    shapes.update(_trunk_layout("static", sta.feature_channels, sta.channels))
    return {f"decoder_{k}": (v, FLOAT32) for k, v in shapes.items()}


def expected_layout(path: Path, header: dict, model: HeadModel, npy: dict[str, NpyHeader]) -> tuple[dict, dict[str, int]]:
    """({array name: (shape, dtype)}, sizes by symbol) for this header, model and texel / cell counts."""
    def count(name: str, tail: tuple[int, ...], lo: int, hi: int, what: str) -> int:
        h = npy.get(name)
        if h is None:
            raise _fail(path, f"lacks the array {name}")
        if len(h.shape) != 1 + len(tail) or h.shape[1:] != tail or not lo <= h.shape[0] <= hi:
            raise _fail(path, f"{name} must have shape [{what}, {', '.join(map(str, tail))}] with {what} in [{lo}, {hi}], "
                              f"got {list(h.shape)}")
        return h.shape[0]

    resolution = header["atlas"]["options"]["resolution"]
    sizes = {"V": model.num_vertices, "F": model.num_faces, "R": resolution, "R+1": resolution + 1,
             "I": model.num_identity, "E": model.num_expressions, "regions": len(header["atlas"]["region_names"])}
    sizes["T"] = count("maps_offset", (3,), 1, min(resolution**2, MAX_TEXELS), "texels")
    sizes["C"] = count("atlas_cell_box", (3,), 1, model.num_faces, "cells")
    sizes["H"] = count("hair_means", (3,), 0, MAX_HAIR, "hair Gaussians")
    layout = {HEADER_MEMBER: ((npy[HEADER_MEMBER].shape[0],), UINT8)}
    for table in (MAP_ARRAYS, ATLAS_ARRAYS, FIT_ARRAYS, HAIR_ARRAYS):
        layout.update({k: (tuple(sizes[d] if isinstance(d, str) else d for d in dims), dt) for k, (dims, dt) in table.items()})
    if header.get("decoders") is not None:
        layout.update(decoder_layout(path, header["decoders"], model.num_expressions))
    return layout, sizes


def _check_layout(path: Path, npy: dict[str, NpyHeader], layout: dict) -> None:
    missing = sorted(set(layout) - set(npy))
    if missing:
        raise _fail(path, f"lacks the arrays {missing[:4]}")
    extra = sorted(set(npy) - set(layout))
    if extra:
        raise _fail(path, f"has arrays its header does not describe: {extra[:4]}")
    for name, (shape, dtype) in layout.items():
        h = npy[name]
        if h.dtype != dtype:
            raise _fail(path, f"{name} must be {dtype.name}, got {h.dtype}")
        if h.shape != shape:
            raise _fail(path, f"{name} must have shape {list(shape)}, got {list(h.shape)}")


# ---- values --------------------------------------------------------------------------------------
def _check_values(path: Path, arrays: dict[str, np.ndarray], sizes: dict[str, int]) -> None:
    for name, arr in arrays.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise _fail(path, f"{name} holds NaN or infinite values")
    for name, (lo, hi_symbol) in INDEX_RANGES.items():
        arr, hi = arrays[name], sizes[hi_symbol]
        if arr.size and (arr.min() < lo or arr.max() >= hi):
            raise _fail(path, f"{name} holds values outside [{lo}, {hi - 1}] (from {arr.min()} to {arr.max()})")
    for name, bound in (("identity", MAX_ABS_IDENTITY), ("expression", MAX_ABS_EXPRESSION)):
        if np.abs(arrays[name]).max(initial=0.0) > bound:
            raise _fail(path, f"{name} coefficients exceed +-{bound:g} (largest {np.abs(arrays[name]).max():.3g})")
    if arrays["hair_scales"].size and not (arrays["hair_scales"].min() > 0 and arrays["hair_scales"].max() <= MAX_HAIR_SCALE_M):
        raise _fail(path, f"hair_scales must lie in (0, {MAX_HAIR_SCALE_M:g}] metres")
    if arrays["hair_opacities"].size and not (arrays["hair_opacities"].min() >= 0 and arrays["hair_opacities"].max() <= 1):
        raise _fail(path, "hair_opacities must lie in [0, 1]")
    if np.abs(arrays["hair_means"]).max(initial=0.0) > MAX_HAIR_REACH_M:
        raise _fail(path, f"hair_means lie more than {MAX_HAIR_REACH_M:g} m from the head's origin")
    mask = arrays["static_mask"].view(np.uint8)
    if mask.max(initial=0) > 1:
        raise _fail(path, "static_mask holds bytes other than 0 and 1 (not a boolean array)")
    if mask.all() or not mask.any():
        raise _fail(path, "static_mask must mark some texels static and some dynamic")


def _check_cameras(path: Path, header: dict) -> None:
    """Positive focal lengths; world-to-camera matrices whose last row is (0, 0, 0, 1)."""
    for key in ("camera", "crop_camera"):
        k, last = header[key]["K"], header[key]["viewmat"][3]
        if not (k[0][0] > 0 and k[1][1] > 0):
            raise _fail(path, f"header.{key}.K: focal lengths must be positive, got {k[0][0]:g}, {k[1][1]:g}")
        if last != [0, 0, 0, 1]:
            raise _fail(path, f"header.{key}.viewmat: the last row must be [0, 0, 0, 1], got {last}")


def read_avatar_file(path: str | Path, model: HeadModel) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays by name) of an avatar file for ``model``, every check of the module docstring passed.

    The arrays are exactly those ``Avatar.save`` writes, with their dtypes and consistent shapes."""
    path = Path(path)
    zf, members = _open_zip(path)
    with zf:
        header = _read_header_json(path, zf, members)
        _check_model(path, header, model)
        _check_cameras(path, header)
        npy = {name: _read_npy_header(path, zf, info) for name, info in members.items()}
        layout, sizes = expected_layout(path, header, model, npy)
        _check_layout(path, npy, layout)
        arrays = {name: _read_data(path, zf, members[name], npy[name]) for name in layout if name != HEADER_MEMBER}
    _check_values(path, arrays, sizes)
    return header, arrays


__all__ = ["HEADER_SCHEMA", "AvatarFileError", "read_avatar_file", "read_avatar_header"]
