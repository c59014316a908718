"""The head mesh as a glTF 2.0 binary (.glb) with all expressions as named morph targets.

Why: next to the Gaussian avatar, users get a plain textured mesh of their head that any 3D tool
(Blender, three.js, game engines) opens and can drive with ARKit-style blendshape weights. The
file is written here with ``struct`` + ``json`` only: the layout is small, and being explicit
keeps every detail the validator checks (alignment, bounds, sparse storage) under our control.

What the file holds (one scene, one node, one mesh, one primitive):

* ``POSITION`` (float32, metres, with min/max), ``NORMAL`` (area-weighted vertex normals of the
  neutral shape), ``TEXCOORD_0`` and ``indices`` (uint16, or uint32 above 65534 vertices).
* one material; with a texture its ``baseColorTexture`` is a PNG embedded in the binary buffer.
* ``targets``: one per expression, ``POSITION`` deltas only (float32 metres, with min/max as the
  spec requires for morph ``POSITION`` accessors). No normal deltas: they would double the size
  and viewers shade acceptably with the neutral normals at these amplitudes.
* ``mesh.extras.targetNames``: the expression names in target order (ARKit names for ICT), the
  de facto convention that three.js (``morphTargetDictionary``) and Blender (shape-key names) read;
  ``mesh.weights`` all zero.

Coordinates: SEGA world (``sega.conventions``) is metres, +Y up, +Z out of the face, which is
exactly glTF's convention (+Y up, +Z forward, metres), so positions are written unchanged. glTF's
UV origin is the **top-left** of the image while ours is bottom-left: ``v_gltf = 1 - v``.

UV seams: glTF has one UV per vertex, so a mesh vertex whose corners carry different UVs is split
into one glTF vertex per distinct (vertex, UV) pair (``split_uv_seams``); its morph deltas are
duplicated accordingly. ICT-FaceKit's own UVs span several UDIM tiles with overlapping parts, so
by default the UVs come from a packed ``sega.uv.Atlas`` (one texture covers everything).

Morph target storage: most of a target's deltas are exactly zero (an eye blink moves a few
thousand of ~30k vertices), so targets can be stored as glTF *sparse* accessors (no bufferView,
i.e. zeros, plus the indices and values of the moved vertices). ``morph_storage="auto"`` picks,
per target, whichever of dense and sparse is smaller. On the ICT head (default regions, 26,588
split vertices, 53 targets, 512^2 PNG) every target comes out sparse and the file shrinks from
18.1 MB (dense) to 9.0 MB; ``morph_tolerance=1e-5`` (10 micrometres) brings it to 5.5 MB.
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from sega.errors import SegaError
from sega.headmodel.base import HeadModel

GLB_MAGIC = 0x46546C67  # b"glTF"
GLB_VERSION = 2
GLB_HEADER_BYTES = 12
CHUNK_JSON = 0x4E4F534A  # b"JSON"
CHUNK_BIN = 0x004E4942  # b"BIN\0"
ALIGNMENT = 4  # bytes; chunks and every bufferView start on a multiple of 4

# glTF enums
FLOAT = 5126
UNSIGNED_BYTE = 5121
UNSIGNED_SHORT = 5123
UNSIGNED_INT = 5125
ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
TRIANGLES = 4
LINEAR = 9729
LINEAR_MIPMAP_LINEAR = 9987
CLAMP_TO_EDGE = 33071
COMPONENT_DTYPES = {FLOAT: np.dtype("<f4"), UNSIGNED_BYTE: np.dtype("u1"), UNSIGNED_SHORT: np.dtype("<u2"), UNSIGNED_INT: np.dtype("<u4")}
TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
MAX_UINT16_INDEX = 65534  # 65535 is the primitive-restart value, which glTF forbids in indices

MORPH_STORAGE_MODES = ("auto", "dense", "sparse")
OPTIONAL_REGIONS = ("eyelashes",)  # left out unless asked for (cards that need alpha to look right)
UV_ATLAS_RESOLUTION = 256  # atlas built only for its UVs when no texture fixes the resolution
UV_RANGE_TOLERANCE = 1e-5  # UVs may exceed [0, 1] by this much (float rounding) before we refuse them
NORMAL_EPS = 1e-20  # squared length below which a vertex normal counts as undefined
FALLBACK_NORMAL = (0.0, 0.0, 1.0)  # used for vertices without a usable normal (isolated/degenerate)
BASE_COLOR_FACTOR = (0.8, 0.8, 0.8, 1.0)  # material colour without a texture
METALLIC_FACTOR = 0.0
ROUGHNESS_FACTOR = 0.8
GENERATOR = "SEGA export.glb"


class GlbExportError(SegaError, ValueError):
    """The inputs cannot be written as a GLB, or a file is not a GLB we can read."""


@dataclass(frozen=True)
class GlbSummary:
    """What ``write_head_glb`` wrote."""

    path: Path
    num_vertices: int  # glTF vertices (after seam splitting)
    num_triangles: int
    num_targets: int
    num_sparse_targets: int  # targets stored as sparse accessors
    file_bytes: int
    morph_bytes: int  # bytes of the binary buffer used by morph targets


@dataclass(frozen=True)
class SeamSplit:
    """Mesh with one UV per vertex. S = split vertices, F = triangles."""

    source_vertex: np.ndarray  # [S] int64, the original mesh vertex of each split vertex
    uvs: np.ndarray  # [S, 2] float32, UVs in the input's convention
    faces: np.ndarray  # [F, 3] int64 indices into the split vertices


def split_uv_seams(faces: np.ndarray, face_uvs: np.ndarray) -> SeamSplit:
    """One vertex per distinct (mesh vertex, UV) pair.

    faces: [F, 3] int vertex ids; face_uvs: [F, 3, 2] per-corner UVs.
    Corners with bit-identical float32 UVs share a vertex. Split vertices are ordered by source
    vertex id (then UV), so vertex order follows the input mesh.
    """
    faces = np.asarray(faces, dtype=np.int64)
    uv = np.ascontiguousarray(np.asarray(face_uvs, dtype=np.float32).reshape(-1, 2))
    corner_vid = faces.reshape(-1)
    if uv.shape[0] != corner_vid.shape[0]:
        raise GlbExportError(f"face_uvs must have shape [{faces.shape[0]}, 3, 2], got {list(np.shape(face_uvs))}")
    uv = uv + np.float32(0.0)  # -0.0 -> +0.0 so bit patterns of equal UVs agree
    keys = np.column_stack([corner_vid, uv.view(np.uint32).astype(np.int64)])  # [3F, 3]
    unique, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return SeamSplit(
        source_vertex=unique[:, 0].copy(),
        uvs=uv[first],
        faces=inverse.reshape(-1).reshape(faces.shape).astype(np.int64),
    )


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals. vertices: [V, 3], faces: [F, 3] (CCW) -> [V, 3] float64.

    Vertices used by no (non-degenerate) face get ``FALLBACK_NORMAL``.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, f[:, k], fn)
    sq = (out**2).sum(1)
    ok = sq > NORMAL_EPS
    out[ok] /= np.sqrt(sq[ok])[:, None]
    out[~ok] = FALLBACK_NORMAL
    return out


# ---- GLB assembly -------------------------------------------------------------------------------


class _GlbBuilder:
    """Accumulates bufferViews and accessors in one binary buffer (internal)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0
        self.buffer_views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        pad = (-self.offset) % ALIGNMENT
        if pad:
            self.chunks.append(b"\0" * pad)
            self.offset += pad
        bv = {"buffer": 0, "byteOffset": self.offset, "byteLength": len(data)}
        if target is not None:
            bv["target"] = target
        self.chunks.append(data)
        self.offset += len(data)
        self.buffer_views.append(bv)
        return len(self.buffer_views) - 1

    def accessor(self, array: np.ndarray, component: int, type_: str, target: int | None, bounds: bool = False) -> int:
        arr = np.ascontiguousarray(array, dtype=COMPONENT_DTYPES[component])
        acc = {
            "bufferView": self.view(arr.tobytes(), target),
            "componentType": component,
            "count": int(arr.shape[0]),
            "type": type_,
        }
        if bounds:
            acc.update(_bounds(arr))
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def sparse_vec3(self, full: np.ndarray) -> int:
        """A float32 VEC3 accessor that is zero except at the rows where ``full`` [S, 3] is non-zero."""
        full = np.asarray(full, dtype="<f4")
        rows = np.flatnonzero(np.any(full != 0, axis=1))
        acc = {"componentType": FLOAT, "count": int(full.shape[0]), "type": "VEC3", **_bounds(full)}
        if rows.size:  # sparse.count must be >= 1; an all-zero target is an accessor without data
            index_type = UNSIGNED_SHORT if full.shape[0] <= MAX_UINT16_INDEX + 1 else UNSIGNED_INT
            acc["sparse"] = {
                "count": int(rows.size),
                "indices": {"bufferView": self.view(rows.astype(COMPONENT_DTYPES[index_type]).tobytes()), "componentType": index_type},
                "values": {"bufferView": self.view(np.ascontiguousarray(full[rows]).tobytes())},
            }
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def binary(self) -> bytes:
        data = b"".join(self.chunks)
        return data + b"\0" * ((-len(data)) % ALIGNMENT)


def _bounds(arr: np.ndarray) -> dict:
    """Exact per-component min/max of an [N, C] (or [N]) array as JSON numbers."""
    a = arr.reshape(arr.shape[0], -1)
    cast = float if a.dtype.kind == "f" else int
    return {"min": [cast(x) for x in a.min(0)], "max": [cast(x) for x in a.max(0)]}


def _morph_bytes(full: np.ndarray, sparse: bool) -> int:
    """Buffer bytes one [S, 3] target takes, dense or sparse (alignment padding included)."""
    n = full.shape[0]
    if not sparse:
        return 12 * n
    k = int(np.count_nonzero(np.any(full != 0, axis=1)))
    idx = (2 if n <= MAX_UINT16_INDEX + 1 else 4) * k
    return idx + (-idx) % ALIGNMENT + 12 * k


def _glb_bytes(doc: dict, binary: bytes) -> bytes:
    js = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    js += b" " * ((-len(js)) % ALIGNMENT)
    total = GLB_HEADER_BYTES + 8 + len(js) + (8 + len(binary) if binary else 0)
    out = [struct.pack("<III", GLB_MAGIC, GLB_VERSION, total), struct.pack("<II", len(js), CHUNK_JSON), js]
    if binary:
        out += [struct.pack("<II", len(binary), CHUNK_BIN), binary]
    return b"".join(out)


def _png_bytes(texture: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(texture).save(buf, format="PNG")
    return buf.getvalue()


# ---- inputs ------------------------------------------------------------------------------------


def default_regions(model: HeadModel) -> tuple[str, ...]:
    """Regions exported by default: every region of the model except ``OPTIONAL_REGIONS``."""
    return tuple(r for r in model.region_names if r not in OPTIONAL_REGIONS)


def _check_texture(texture) -> np.ndarray | None:
    if texture is None:
        return None
    tex = np.asarray(texture)
    if tex.dtype != np.uint8 or tex.ndim != 3 or tex.shape[2] not in (3, 4) or min(tex.shape[:2]) < 1:
        raise GlbExportError(f"texture must be an [H, W, 3|4] uint8 image, got {tex.dtype} {list(tex.shape)}")
    return np.ascontiguousarray(tex)


def _resolve_face_uvs(model: HeadModel, face_uvs, texture: np.ndarray | None, regions: tuple[str, ...], mask: np.ndarray) -> np.ndarray:
    """[F, 3, 2] UVs in [0, 1] (bottom-left origin) for the selected faces."""
    if face_uvs is None:
        from sega.uv import Atlas  # local import: only needed for the default

        if texture is not None and texture.shape[0] != texture.shape[1]:
            raise GlbExportError("a non-square texture needs explicit face_uvs (a packed Atlas is square)")
        res = texture.shape[0] if texture is not None else UV_ATLAS_RESOLUTION
        face_uvs = Atlas.build(model, resolution=res, regions=regions).face_atlas_uvs
    uvs = np.asarray(face_uvs, dtype=np.float64)
    if uvs.shape != (model.num_faces, 3, 2):
        raise GlbExportError(f"face_uvs must have shape [{model.num_faces}, 3, 2], got {list(uvs.shape)}")
    sel = uvs[mask]
    if not np.isfinite(sel).all():
        raise GlbExportError("face_uvs contain NaN or infinite values")
    if sel.min() < -UV_RANGE_TOLERANCE or sel.max() > 1 + UV_RANGE_TOLERANCE:
        raise GlbExportError(
            f"face_uvs span [{sel.min():.3g}, {sel.max():.3g}], not one [0, 1] texture; the model's own UVs may use "
            "several UDIM tiles: pass sega.uv.Atlas.build(model, ...).face_atlas_uvs"
        )
    return np.clip(uvs, 0.0, 1.0).astype(np.float32)


def _shape_and_deltas(model: HeadModel, identity: np.ndarray, expr_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Neutral vertices [V, 3] and per-expression deltas [K, V, 3] (float64, metres) via ``model.deform``."""
    buffers = model.torch_buffers(dtype=torch.float64)
    ident = torch.as_tensor(identity, dtype=torch.float64)
    expr = torch.zeros(len(expr_ids) + 1, model.num_expressions, dtype=torch.float64)
    expr[torch.arange(1, len(expr_ids) + 1), torch.as_tensor(expr_ids, dtype=torch.int64)] = 1.0
    with torch.no_grad():
        verts = model.deform(buffers, ident.expand(expr.shape[0], -1), expr).numpy()
    return verts[0], verts[1:] - verts[:1]


# ---- public API ----------------------------------------------------------------------------------


def write_head_glb(
    path: str | Path,
    model: HeadModel,
    identity=None,
    texture: np.ndarray | None = None,
    face_uvs: np.ndarray | None = None,
    regions: Sequence[str] | None = None,
    expressions: Sequence[str] | None = None,
    morph_storage: str = "auto",
    morph_tolerance: float = 0.0,
    name: str = "head",
) -> GlbSummary:
    """Write the head (identity applied, neutral expression) as a GLB with expression morph targets.

    path: output ``.glb`` (parent folders are created)
    model: the head model (ICT or FLAME); vertices come from ``model.deform`` so subclasses work
    identity: [I] identity coefficients (None = zeros, the template head)
    texture: [H, W, 3|4] uint8 base-colour image laid out in ``face_uvs`` (row 0 = top), or None
    face_uvs: [F, 3, 2] per-corner UVs in [0, 1], origin bottom-left, for the faces of ``regions``.
        Default: ``sega.uv.Atlas.build(model, resolution=<texture side, else 256>, regions=regions)
        .face_atlas_uvs``, i.e. the texture must then come from an atlas built with default
        padding/packing; pass the atlas's ``face_atlas_uvs`` explicitly when in doubt.
    regions: region names to include (default: all but eyelashes, see ``default_regions``)
    expressions: expression names to export as morph targets, in order (default: all of
        ``model.expression_names``, i.e. the 53 ARKit names for ICT)
    morph_storage: "auto" (per target, the smaller of dense/sparse), "dense" or "sparse"
    morph_tolerance: metres; a vertex whose delta has no component larger than this stores no delta
        (0 = lossless; 1e-5 drops ~45% of the ICT deltas and cuts the file by ~40%)
    name: name of the mesh and node
    returns: ``GlbSummary``. Raises ``GlbExportError`` on bad inputs.
    """
    if morph_storage not in MORPH_STORAGE_MODES:
        raise GlbExportError(f"morph_storage must be one of {MORPH_STORAGE_MODES}, got {morph_storage!r}")
    if not (math.isfinite(morph_tolerance) and morph_tolerance >= 0):
        raise GlbExportError(f"morph_tolerance must be >= 0 metres, got {morph_tolerance}")
    regions = default_regions(model) if regions is None else tuple(regions)
    try:
        mask = model.region_face_mask(*regions)
    except KeyError as err:
        raise GlbExportError(str(err.args[0])) from err
    if not mask.any():
        raise GlbExportError(f"no faces in regions {regions}")
    identity = np.zeros(model.num_identity) if identity is None else np.asarray(identity, dtype=np.float64)
    if identity.shape != (model.num_identity,) or not np.isfinite(identity).all():
        raise GlbExportError(f"identity must be [{model.num_identity}] finite values, got shape {list(identity.shape)}")
    expressions = tuple(model.expression_names) if expressions is None else tuple(expressions)
    unknown = [e for e in expressions if e not in model.expression_names]
    if unknown or len(set(expressions)) != len(expressions):
        raise GlbExportError(f"expressions must be distinct names from the model; unknown: {unknown}")
    texture = _check_texture(texture)
    uvs = _resolve_face_uvs(model, face_uvs, texture, regions, mask)

    # Geometry: split seams, then gather per split vertex.
    split = split_uv_seams(model.faces[mask], uvs[mask])
    src = split.source_vertex
    neutral, deltas = _shape_and_deltas(model, identity, [model.expression_index(e) for e in expressions])
    normals = vertex_normals(neutral, model.faces[mask])[src]
    positions = neutral[src].astype(np.float32)
    tex_uv = np.column_stack([split.uvs[:, 0], 1.0 - split.uvs[:, 1]]).astype(np.float32)  # glTF: origin top-left
    n_vert = positions.shape[0]
    index_type = UNSIGNED_SHORT if n_vert <= MAX_UINT16_INDEX else UNSIGNED_INT

    b = _GlbBuilder()
    attributes = {
        "POSITION": b.accessor(positions, FLOAT, "VEC3", ARRAY_BUFFER, bounds=True),
        "NORMAL": b.accessor(normals.astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER),
        "TEXCOORD_0": b.accessor(tex_uv, FLOAT, "VEC2", ARRAY_BUFFER),
    }
    indices = b.accessor(split.faces.reshape(-1), index_type, "SCALAR", ELEMENT_ARRAY_BUFFER, bounds=True)
    targets, n_sparse, morph_start = [], 0, b.offset
    for k in range(len(expressions)):
        full = deltas[k][src].astype(np.float32)
        if morph_tolerance > 0:
            full[np.abs(full).max(axis=1) <= morph_tolerance] = 0.0
        sparse = morph_storage == "sparse" or (
            morph_storage == "auto" and _morph_bytes(full, True) < _morph_bytes(full, False)
        )
        if sparse:
            targets.append({"POSITION": b.sparse_vec3(full)})
            n_sparse += 1
        else:
            targets.append({"POSITION": b.accessor(full, FLOAT, "VEC3", ARRAY_BUFFER, bounds=True)})
    morph_bytes = b.offset - morph_start

    material: dict = {
        "name": f"{name}_material",
        "pbrMetallicRoughness": {"metallicFactor": METALLIC_FACTOR, "roughnessFactor": ROUGHNESS_FACTOR},
    }
    doc: dict = {
        "asset": {"version": "2.0", "generator": GENERATOR},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [],
        "materials": [material],
    }
    if model.licence:
        doc["asset"]["copyright"] = model.licence
    if texture is not None:
        image_view = b.view(_png_bytes(texture))
        doc["images"] = [{"bufferView": image_view, "mimeType": "image/png", "name": f"{name}_basecolor"}]
        doc["samplers"] = [{"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR, "wrapS": CLAMP_TO_EDGE, "wrapT": CLAMP_TO_EDGE}]
        doc["textures"] = [{"source": 0, "sampler": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0, "texCoord": 0}
    else:
        material["pbrMetallicRoughness"]["baseColorFactor"] = list(BASE_COLOR_FACTOR)
    primitive = {"attributes": attributes, "indices": indices, "material": 0, "mode": TRIANGLES}
    mesh: dict = {"name": name, "primitives": [primitive]}
    if targets:
        primitive["targets"] = targets
        mesh["weights"] = [0.0] * len(targets)
        mesh["extras"] = {"targetNames": list(expressions)}
    doc["meshes"].append(mesh)
    binary = b.binary()
    doc["accessors"] = b.accessors
    doc["bufferViews"] = b.buffer_views
    doc["buffers"] = [{"byteLength": len(binary)}]
    doc["asset"]["extras"] = {
        "sega": {"units": "metres", "up": "+Y", "forward": "+Z (out of the face)", "regions": list(regions), "model": model.name}
    }

    data = _glb_bytes(doc, binary)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return GlbSummary(
        path=path,
        num_vertices=n_vert,
        num_triangles=int(split.faces.shape[0]),
        num_targets=len(targets),
        num_sparse_targets=n_sparse,
        file_bytes=len(data),
        morph_bytes=morph_bytes,
    )


def read_glb(path: str | Path) -> tuple[dict, bytes]:
    """Split a GLB file into its JSON document and binary chunk (b"" when there is none).

    Raises ``GlbExportError`` when the file is not a well-formed GLB 2.0 container.
    """
    data = Path(path).read_bytes()
    if len(data) < GLB_HEADER_BYTES + 8:
        raise GlbExportError(f"{path}: too short to be a GLB")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != GLB_VERSION:
        raise GlbExportError(f"{path}: not a glTF 2.0 binary (magic {magic:#x}, version {version})")
    if total != len(data):
        raise GlbExportError(f"{path}: header length {total} != file size {len(data)}")
    pos, chunks = GLB_HEADER_BYTES, []
    while pos < total:
        if pos + 8 > total:
            raise GlbExportError(f"{path}: truncated chunk header at byte {pos}")
        length, ctype = struct.unpack_from("<II", data, pos)
        if pos + 8 + length > total:
            raise GlbExportError(f"{path}: chunk at byte {pos} runs past the end of the file")
        chunks.append((ctype, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length
    if not chunks or chunks[0][0] != CHUNK_JSON:
        raise GlbExportError(f"{path}: the first chunk is not JSON")
    try:
        doc = json.loads(chunks[0][1].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GlbExportError(f"{path}: JSON chunk does not parse: {err}") from err
    binary = chunks[1][1] if len(chunks) > 1 and chunks[1][0] == CHUNK_BIN else b""
    return doc, binary


def read_accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    """The values of accessor ``index`` of a GLB read by ``read_glb`` -> [count, C] (or [count]) array.

    Handles tightly packed or strided bufferViews of the embedded buffer and sparse accessors
    (zeros or bufferView data, then the sparse substitutions). Normalised integers are not rescaled.
    """
    acc = doc["accessors"][index]
    dtype = COMPONENT_DTYPES[acc["componentType"]]
    comps = TYPE_SIZES[acc["type"]]
    count = acc["count"]

    def view_array(view_index: int, offset: int, n: int, dt: np.dtype, c: int) -> np.ndarray:
        bv = doc["bufferViews"][view_index]
        start = bv.get("byteOffset", 0) + offset
        stride = bv.get("byteStride", dt.itemsize * c)
        raw = np.frombuffer(binary, dtype=np.uint8, count=stride * (n - 1) + dt.itemsize * c, offset=start) if n else np.zeros(0, np.uint8)
        rows = np.lib.stride_tricks.as_strided(raw, shape=(n, dt.itemsize * c), strides=(stride, 1)) if n else raw.reshape(0, dt.itemsize * c)
        return np.ascontiguousarray(rows).view(dt).reshape(n, c)

    if "bufferView" in acc:
        out = view_array(acc["bufferView"], acc.get("byteOffset", 0), count, dtype, comps).copy()
    else:
        out = np.zeros((count, comps), dtype=dtype)
    sparse = acc.get("sparse")
    if sparse:
        si, sv = sparse["indices"], sparse["values"]
        rows = view_array(si["bufferView"], si.get("byteOffset", 0), sparse["count"], COMPONENT_DTYPES[si["componentType"]], 1)[:, 0]
        out[rows.astype(np.int64)] = view_array(sv["bufferView"], sv.get("byteOffset", 0), sparse["count"], dtype, comps)
    return out[:, 0] if comps == 1 else out
