"""Checked avatar files (``sega.avatar.file``): each defect is refused with a one-line ``SegaError`` naming
the file, zip bombs before they inflate, and a seeded fuzz over the file raises nothing else.

One saved avatar from the session's fast build (``fast_build`` in conftest.py); every case mutates its
arrays or header and writes a new ``.npz`` (stored, not compressed: fast to write and read).
"""

from __future__ import annotations

import json
import random
import struct
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from sega.avatar import file as avatar_file
from sega.avatar import Avatar
from sega.avatar.file import AvatarFileError, read_avatar_file, read_avatar_header
from sega.cli import main
from sega.errors import SegaError

pytestmark = pytest.mark.slow

BOMB_BYTES = 2**30  # what the bombs inflate to (never inflated: refused from the zip's directory)
ZERO_BLOCK = 2**24  # deflated once, repeated (after a full flush the compressor restarts: same bytes again)
MAX_REFUSAL_SECONDS = 1.0
MAX_REFUSAL_PEAK_BYTES = 32 * 2**20  # traced allocations while refusing (the good file's arrays are ~4 MB)
FUZZ_SEED = 0
MIN_FUZZ_CASES = 300
FILE_TRUNCATIONS = 24  # fuzz cases cutting the file at random offsets
BAD_VALUES = (None, True, -1, 0, 1, 1e308, "x", [], {})


@pytest.fixture(scope="module")
def saved(fast_build, tmp_path_factory):
    """(path of the saved fast-preset astronaut, its arrays, its header)."""
    path = fast_build[0].save(tmp_path_factory.mktemp("avatar") / "avatar.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return path, arrays, json.loads(bytes(arrays["header_json"]))


def write(path: Path, arrays: dict, header: dict | None = None) -> Path:
    arrays = dict(arrays)
    if header is not None:
        arrays["header_json"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    np.savez(path, **arrays)
    return path


def refusal(path: Path, model) -> str:
    """The one-line message of loading ``path`` (which must be refused with an AvatarFileError naming it)."""
    with pytest.raises(AvatarFileError) as err:
        Avatar.load(path, model)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def measured(fn):
    """(exception, peak traced bytes, seconds) of ``fn()``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        fn()
        err = None
    except Exception as e:  # noqa: BLE001 - callers assert the type
        err = e
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return err, peak, seconds


# ---- the good path ---------------------------------------------------------------------------------
def test_saved_avatar_reads_back_exactly(saved, ict_model, tmp_path):
    path, arrays, header = saved
    got_header, got = read_avatar_file(path, ict_model)
    assert got_header == header and read_avatar_header(path) == header
    assert set(got) == set(arrays) - {"header_json"}
    for name, arr in got.items():
        assert arr.dtype == arrays[name].dtype and np.array_equal(arr, arrays[name]) and arr.flags.writeable, name
    stored = write(tmp_path / "stored.npz", arrays)  # np.savez (stored members) reads the same
    assert all(np.array_equal(a, arrays[k]) for k, a in read_avatar_file(stored, ict_model)[1].items())
    fortran = write(tmp_path / "fortran.npz", {**arrays, "maps_color": np.asfortranarray(arrays["maps_color"])})
    assert np.array_equal(read_avatar_file(fortran, ict_model)[1]["maps_color"], arrays["maps_color"])


def test_every_config_field_has_a_header_spec():
    assert not avatar_file.UNCHECKED_FIELDS, "give these fields a range in sega/avatar_file.py"


def test_decoder_layout_matches_the_modules(saved, ict_model):
    """The shapes worked out from the configs are those of the real modules' state dicts, also for other configs."""
    from sega.nets.decoders import AvatarDecoders, DynamicDecoderOptions, StaticDecoderOptions

    header = saved[2]
    for dyn, sta in ((None, None), (DynamicDecoderOptions(latent_dim=64, channels=(8, 4), feature_resolution=16, map_resolution=32),
                                    StaticDecoderOptions(channels=(4,), feature_resolution=8, map_resolution=8))):
        decoders = AvatarDecoders.create(ict_model, dynamic=dyn, static=sta) if dyn else None
        h = decoders.header() if decoders else header["decoders"]
        layout = avatar_file.decoder_layout(Path("x"), h, ict_model.num_expressions)
        arrays = decoders.arrays() if decoders else {k[8:]: v for k, v in saved[1].items() if k.startswith("decoder_")}
        assert {k: (a.shape, a.dtype) for k, a in arrays.items()} == {k[8:]: v for k, v in layout.items()}
    enc = dict(header["decoders"]["encoder"], encoder_hidden=[32, 16])
    layout = avatar_file.decoder_layout(Path("x"), dict(header["decoders"], encoder=enc), ict_model.num_expressions)
    from sega.nets.decoders import ExpressionEncoder
    from sega.nets.vae import DisplacementVAEOptions

    module = ExpressionEncoder(DisplacementVAEOptions.from_dict(enc))
    assert {f"decoder_encoder.{k}": (tuple(v.shape), avatar_file.FLOAT32) for k, v in module.state_dict().items()} == \
        {k: v for k, v in layout.items() if k.startswith("decoder_encoder.")}


# ---- defects ---------------------------------------------------------------------------------------
def test_each_defect_is_refused_with_a_message(saved, ict_model, tmp_path):
    path, arrays, header = saved
    bad = tmp_path / "bad.npz"
    t = arrays["maps_color"].shape[0]
    nan = arrays["maps_color"].copy()
    nan[5, 1] = np.nan
    cases = {
        "maps_color must be float32, got float64": {"maps_color": arrays["maps_color"].astype(np.float64)},
        "maps_color holds NaN": {"maps_color": nan},
        f"maps_color must have shape [{t}, 3], got [{t - 1}, 3]": {"maps_color": arrays["maps_color"][:-1]},
        "atlas_texel_face holds values outside": {"atlas_texel_face": np.full_like(arrays["atlas_texel_face"], ict_model.num_faces)},
        "static_mask holds bytes other than 0 and 1": {"static_mask": (arrays["static_mask"].view(np.uint8) * 2).view(bool)},
        "identity coefficients exceed": {"identity": arrays["identity"] + 1e6},
        "header_json must be a 1-D uint8 array": {"header_json": arrays["header_json"].astype(np.int16)},
        # hair: a splat as wide as the frame, out-of-range opacity, a splat far from the head
        "hair_scales must lie in": {"hair_means": np.zeros((1, 3), np.float32), "hair_quats": np.array([[1, 0, 0, 0]], np.float32),
                                    "hair_scales": np.full((1, 3), 10.0, np.float32), "hair_opacities": np.ones(1, np.float32),
                                    "hair_colors": np.zeros((1, 3), np.float32)},
        "hair_opacities must lie in [0, 1]": {"hair_means": np.zeros((1, 3), np.float32), "hair_quats": np.array([[1, 0, 0, 0]], np.float32),
                                              "hair_scales": np.full((1, 3), 0.002, np.float32), "hair_opacities": np.full(1, 7.0, np.float32),
                                              "hair_colors": np.zeros((1, 3), np.float32)},
        "hair_means lie more than": {"hair_means": np.full((1, 3), 1e4, np.float32), "hair_quats": np.array([[1, 0, 0, 0]], np.float32),
                                     "hair_scales": np.full((1, 3), 0.002, np.float32), "hair_opacities": np.ones(1, np.float32),
                                     "hair_colors": np.zeros((1, 3), np.float32)},
        "hair_colors must have shape [1, 3]": {"hair_means": np.zeros((1, 3), np.float32), "hair_quats": np.array([[1, 0, 0, 0]], np.float32),
                                               "hair_scales": np.full((1, 3), 0.002, np.float32), "hair_opacities": np.ones(1, np.float32),
                                               "hair_colors": np.zeros((2, 3), np.float32)},
    }
    for expected, change in cases.items():
        assert expected in refusal(write(bad, {**arrays, **change}), ict_model), expected
    np.savez(bad, **{**arrays, "maps_color": np.array([None] * t, dtype=object)}, allow_pickle=True)
    assert "maps_color.npy holds Python objects" in refusal(bad, ict_model)
    assert "lacks the arrays ['maps_color']" in refusal(write(bad, {k: v for k, v in arrays.items() if k != "maps_color"}), ict_model)
    assert "unexpected member 'notes.npy'" in refusal(write(bad, {**arrays, "notes": np.zeros(3)}), ict_model)
    for field, value, expected in (("options", {"render_size": -1}, "header.options.render_size: must be a whole number in [8, "),
                                   ("camera", {**header["camera"], "K": [[0, 0, 0]] * 3}, "focal lengths must be positive"),
                                   ("format_version", 1, "rebuild it from the photo")):
        assert expected in refusal(write(bad, arrays, {**header, field: value}), ict_model), field
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "not a readable avatar file" in refusal(bad, ict_model) or "not a zip" in refusal(bad, ict_model)
    for junk in (b"", b"not a zip at all"):
        bad.write_bytes(junk)
        refusal(bad, ict_model)
    assert "not found" in refusal(tmp_path / "missing.npz", ict_model)
    refusal(tmp_path, ict_model)  # a folder


def _deflate_with_zeros(prefix: bytes, zeros: int) -> bytes:
    """A raw deflate stream of ``prefix`` + ``zeros`` zero bytes, made in ~0.1 s for a gigabyte."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(ZERO_BLOCK)) + c.flush(zlib.Z_FULL_FLUSH)
    return head + block * (zeros // ZERO_BLOCK) + c.flush()


def write_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> Path:
    """A zip of (name, deflated data, crc, declared size): the directory says whatever it is told."""
    body, directory = bytearray(), bytearray()
    for name, data, crc, size in members:
        raw, offset = name.encode(), len(body)
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, zipfile.ZIP_DEFLATED, 0, 0, crc, len(data), size, len(raw), 0) + raw + data
        directory += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, zipfile.ZIP_DEFLATED, 0, 0, crc, len(data), size,
                                 len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), len(body), 0)
    path.write_bytes(bytes(body + directory + end))
    return path


@pytest.mark.parametrize("declares", ["its inflated size", "a small size"])
def test_zip_bomb_is_refused_before_inflating(saved, ict_model, tmp_path, declares):
    """maps_color inflates to 1 GiB; declared honestly it is over the member cap, declared small its
    compressed stream is larger than deflate makes of the declared size. Either way: refused from the directory."""
    path, arrays, _ = saved
    members = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            data = zf.read(info)
            if info.filename == "maps_color.npy":
                npy_header = data[: len(data) - arrays["maps_color"].nbytes]
                bomb = _deflate_with_zeros(npy_header, BOMB_BYTES)
                size = len(npy_header) + BOMB_BYTES if declares == "its inflated size" else info.file_size
                members.append((info.filename, bomb, info.CRC, size))
            else:
                c = zlib.compressobj(6, zlib.DEFLATED, -15)
                members.append((info.filename, c.compress(data) + c.flush(), zlib.crc32(data), len(data)))
    bomb_path = write_zip(tmp_path / "bomb.npz", members)
    assert bomb_path.stat().st_size < 8 * 2**20
    err, peak, seconds = measured(lambda: Avatar.load(bomb_path, ict_model))
    assert isinstance(err, AvatarFileError) and "maps_color.npy" in str(err), err
    assert seconds < MAX_REFUSAL_SECONDS and peak < MAX_REFUSAL_PEAK_BYTES, (seconds, peak)


def test_zip_directory_claiming_many_entries_is_refused_unparsed(saved, ict_model, tmp_path):
    data = bytearray(saved[0].read_bytes())
    struct.pack_into("<2H", data, len(data) - 12, 60000, 60000)  # the end record's entry counts
    bad = tmp_path / "many.npz"
    bad.write_bytes(bytes(data))
    assert "60000 entries" in refusal(bad, ict_model)


# ---- fuzz ------------------------------------------------------------------------------------------
def _paths(value, prefix=()):
    """Every field path of a JSON value (objects and lists, leaves included)."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


def _set(header: dict, path: tuple, value) -> dict:
    header = json.loads(json.dumps(header))
    target = header
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return header


def _changed_dtype(arr: np.ndarray) -> np.ndarray:
    return arr.astype({"f": np.float64, "i": np.int32, "b": np.uint8, "u": np.int16}[arr.dtype.kind])


def _fuzz_cases(arrays: dict, header: dict, rng: random.Random):
    """(label, arrays, header or None, byte length to cut the file at or None)."""
    for name in sorted(arrays):
        arr = arrays[name]
        yield f"drop {name}", {k: v for k, v in arrays.items() if k != name}, None, None
        yield f"dtype {name}", {**arrays, name: _changed_dtype(arr)}, None, None
        yield f"truncate {name}", {**arrays, name: arr.reshape(-1)[: max(arr.size // 2, 1) - 1]}, None, None
    for path in _paths(header):
        if path:
            value = rng.choice(BAD_VALUES)
            yield f"header {'.'.join(map(str, path))} = {value!r}", arrays, _set(header, path, value), None
    for _ in range(FILE_TRUNCATIONS):
        yield "cut file", arrays, None, rng.randrange(1, 4_000_000)


def test_fuzzed_avatar_files_raise_only_sega_errors(saved, ict_model, tmp_path):
    _, arrays, header = saved
    rng = random.Random(FUZZ_SEED)
    path = tmp_path / "fuzz.npz"
    other, loaded, refused = [], 0, 0
    for label, case_arrays, case_header, cut in _fuzz_cases(arrays, header, rng):
        write(path, case_arrays, case_header)
        if cut is not None:
            path.write_bytes(path.read_bytes()[:cut])
        try:
            Avatar.load(path, ict_model)
            loaded += 1
        except SegaError as err:
            assert "\n" not in str(err), (label, str(err))
            refused += 1
        except Exception as err:  # noqa: BLE001 - collected: the test fails on any
            other.append(f"{label}: {type(err).__name__}: {str(err)[:200]}")
    assert not other, "\n".join(other[:20])
    assert loaded + refused >= MIN_FUZZ_CASES and refused > loaded, (loaded, refused)


def test_cli_export_of_a_bad_avatar_is_one_error_line(saved, tmp_path, capsys):
    _, arrays, _ = saved
    nan = arrays["maps_opacity_logit"].copy()
    nan[0] = np.inf
    bad = write(tmp_path / "bad.npz", {**arrays, "maps_opacity_logit": nan})
    assert main(["export", str(bad), "-o", str(tmp_path / "x.zip"), "--no-download"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "maps_opacity_logit" in err and "Traceback" not in err
    assert not (tmp_path / "x.zip").exists()
