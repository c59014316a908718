"""Avatar -> bundle: the folder (or zip) users download and the web viewer plays.

The bundle contract ("sega-bundle", format 2) is written down once, in ``docs/bundle-format.md``; this module
holds its names (``BUNDLE_FORMAT`` ... ``OUTPUT_UPDATES``) and writes it:

* ``static.ply``: every Gaussian of the avatar at the neutral expression (all weights 0) and
  canonical pose, INRIA 3DGS layout (``export.ply``), with the extra int32 properties
  ``sega_dynamic_index`` (-1 for static splats, 0..D-1 for the dynamic ones, which follow the
  static ones) and ``sega_texel`` (the avatar's atlas texel of each splat, -1 for hair splats);
* ``displacement_vae.onnx`` and ``dynamic_decoder.onnx``: the per-frame branch (``export.graphs``);
* ``avatar.glb``: the fitted head mesh with the avatar's colours baked into a texture and the
  expressions as ARKit-named morph targets (``export.glb``);
* ``clips/*.json``: procedural animations (``export.clips``);
* ``manifest.json``: format, the per-frame contract, expression names/ranges/groups, camera, counts,
  SHA-256 of every file, provenance (sega version, avatar options, seed, VAE checkpoint) and licences.

``write_bundle`` is a pure function of the avatar (no UI); ``export.playback.load_bundle`` reads and
validates what it writes.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from sega import __version__
from sega.conventions import HEAD_POSE_SIZE
from sega.errors import SegaError
from sega.io import file_sha256

from .clips import CLIP_NAMES, write_clips
from .glb import write_head_glb
from .graphs import (
    DYNAMIC_INPUTS,
    DYNAMIC_OUTPUTS,
    FEATURE_INPUTS,
    FEATURE_OUTPUTS,
    OPSET,
    DynamicBranchGraph,
    ExpressionFeatureGraph,
    export_graph,
)
from .ply import write_splat_ply

BUNDLE_FORMAT = "sega-bundle"
BUNDLE_VERSION = 2  # 2: splat outputs may be component-major ("layout"); readers take 1 and 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
STATIC_PLY = "static.ply"
VAE_GRAPH = "displacement_vae.onnx"
DECODER_GRAPH = "dynamic_decoder.onnx"
GLB_FILE = "avatar.glb"
CLIPS_DIR = "clips"
DYNAMIC_INDEX_PROPERTY = "sega_dynamic_index"
TEXEL_PROPERTY = "sega_texel"
EXPRESSION_RANGE = (0.0, 1.0)
# How an output's values are laid out (docs/bundle-format.md, "Outputs"): splat-major [D, C] (splat k's
# components together; the only layout of format 1, the default) or component-major [C, D].
SPLAT_MAJOR, COMPONENT_MAJOR = "splat_major", "component_major"
OUTPUT_LAYOUTS = (SPLAT_MAJOR, COMPONENT_MAJOR)
# What each per-frame output replaces in the viewer (docs/bundle-format.md, "Outputs").
OUTPUT_UPDATES = {
    "dynamic_means": "center",
    "dynamic_quats": "quaternion_wxyz",
    "dynamic_scales": "scale",
    "dynamic_colors": "rgb",
    "dynamic_opacities": "opacity",
    "head_matrix": "object_matrix_row_major",
}
# Expression groups for UI sliders, by ARKit name prefix (first match wins).
GROUP_PREFIXES = (("brows", "brow"), ("eyes", "eye"), ("jaw", "jaw"), ("mouth", "mouth"), ("cheeks", "cheek"), ("nose", "nose"))
TEXTURE_DILATE_STEPS = 4  # passes that spread texel colours into the atlas gutters (avoids dark seams when mip-mapped)
ZIP_COMPRESSION = zipfile.ZIP_DEFLATED


@dataclass(frozen=True)
class BundleOptions:
    """What goes into a bundle. Stored in the manifest (``provenance.bundle_options``)."""

    glb: bool = True  # include avatar.glb (mesh + baked texture + ARKit morph targets)
    glb_morph_tolerance_m: float = 1e-5  # morph deltas below this (metres, per component) are not stored (~40% smaller GLB)
    clips: tuple[str, ...] = CLIP_NAMES  # procedural clips to include
    clip_fps: float = 30.0  # frames per second of the clips
    clip_seed: int = 0  # seeds the clips' random timing

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@dataclass
class BundleSummary:
    """What ``write_bundle`` wrote."""

    path: Path  # the bundle folder or zip
    num_splats: int  # N
    num_dynamic: int  # D
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    size_bytes: int = 0  # the zip's size, or the folder's total

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in self.files.items() if not k.startswith(CLIPS_DIR + "/"))
        return f"{self.path}: {self.size_bytes / 1e6:.1f} MB, {self.num_splats} splats ({self.num_dynamic} dynamic); {parts}"


def expression_groups(names) -> dict[str, list[str]]:
    """{group: [names]} for the UI, by ARKit prefix; names matching no prefix go to "other"."""
    groups: dict[str, list[str]] = {g: [] for g, _ in GROUP_PREFIXES}
    for n in names:
        group = next((g for g, prefix in GROUP_PREFIXES if n.startswith(prefix)), "other")
        groups.setdefault(group, []).append(n)
    return {g: v for g, v in groups.items() if v}


def frame_contract(num_expressions: int, latent_dim: int, num_dynamic: int) -> dict:
    """The manifest's ``frame`` entry: inputs, the two graph steps, and what each output updates."""
    # The graph's splat attributes are component-major (export.graphs): [C, D].
    shapes = {"dynamic_means": [3, num_dynamic], "dynamic_quats": [4, num_dynamic], "dynamic_scales": [3, num_dynamic],
              "dynamic_colors": [3, num_dynamic], "dynamic_opacities": [num_dynamic], "head_matrix": [4, 4]}  # fmt: skip
    layouts = {n: COMPONENT_MAJOR for n in ("dynamic_means", "dynamic_quats", "dynamic_scales", "dynamic_colors")}
    return {
        "inputs": {
            "expression": {"shape": [1, num_expressions], "dtype": "float32", "meaning": "absolute expression weights, manifest order"},
            "head_pose": {"shape": [1, HEAD_POSE_SIZE], "dtype": "float32", "meaning": "axis-angle radians (3) + translation metres (3)"},
        },
        "steps": [
            {"graph": VAE_GRAPH, "inputs": {n: n for n in FEATURE_INPUTS}, "outputs": list(FEATURE_OUTPUTS),
             "output_shapes": {"expression_feature": [1, latent_dim]}},
            {"graph": DECODER_GRAPH, "inputs": {n: n for n in DYNAMIC_INPUTS}, "outputs": list(DYNAMIC_OUTPUTS)},
        ],
        "outputs": {n: {"shape": shapes[n], "dtype": "float32", "updates": OUTPUT_UPDATES[n], **({"layout": layouts[n]} if n in layouts else {})}
                    for n in DYNAMIC_OUTPUTS},  # fmt: skip
    }


def baked_texture(atlas, colors: np.ndarray) -> np.ndarray:
    """[R, R, 3] uint8 atlas image of per-texel rgb ``colors`` [T, 3] (row 0 = top, as glTF wants),
    spread ``TEXTURE_DILATE_STEPS`` texels into the empty gutters; never-reached pixels get the mean colour."""
    rgb = np.clip(np.asarray(colors, dtype=np.float32), 0.0, 1.0)
    img = atlas.to_image(rgb)
    known = atlas.to_image(np.ones(atlas.num_texels, dtype=bool), fill=False)
    for _ in range(TEXTURE_DILATE_STEPS):
        acc = np.zeros_like(img)
        cnt = np.zeros(known.shape, dtype=np.float32)
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            acc += np.roll(img * known[..., None], (dr, dc), axis=(0, 1))
            cnt += np.roll(known, (dr, dc), axis=(0, 1))
        grow = ~known & (cnt > 0)
        img[grow] = acc[grow] / cnt[grow][:, None]
        known = known | grow
    img[~known] = rgb.mean(0)
    return np.round(img * 255.0).astype(np.uint8)


def default_camera(avatar) -> dict:
    """The manifest camera: the avatar's frontal orbit camera (position, target, vertical fov, up)."""
    from sega.avatar import ORBIT_FOV_DEG

    cam = avatar.orbit_camera(0.0)
    return {
        "position": [round(float(v), 6) for v in cam.position],
        "target": [round(float(v), 6) for v in avatar.rig.head_centre],
        "fov_deg": ORBIT_FOV_DEG,
        "up": [0.0, 1.0, 0.0],
    }


def _licences(avatar) -> list[dict]:
    out = [{"component": "head model " + avatar.head_model.name, "notice": avatar.head_model.licence}]
    if avatar.head_model.name.lower().startswith("flame"):
        out.append({"component": "FLAME", "notice": "FLAME is licensed for non-commercial scientific research only "
                    "(https://flame.is.tue.mpg.de/modellicense.html); a bundle made with it carries those terms."})  # fmt: skip
    out.append({"component": "sega", "notice": "code MIT; the avatar is derived from the user's photo"})
    return out


class BundleExportError(SegaError):
    """A bundle cannot be written where asked (the message says why)."""


def _bundle_file_names() -> set[str]:
    """Names a bundle folder may hold (what ``write_bundle_folder`` writes, for any clip set)."""
    return {MANIFEST, STATIC_PLY, VAE_GRAPH, DECODER_GRAPH, GLB_FILE, CLIPS_DIR}


def _prepare_folder(out: Path) -> None:
    """Create ``out``, or empty it of an earlier bundle. A folder holding anything else is refused: a
    bundle's readers refuse members the manifest does not list, so the files would make it unloadable."""
    out.mkdir(parents=True, exist_ok=True)
    entries = list(out.iterdir())
    others = sorted(p.name for p in entries if p.name not in _bundle_file_names()
                    or (p.name == CLIPS_DIR and any(not c.is_file() or c.suffix != ".json" for c in p.iterdir())))  # fmt: skip
    if others:
        raise BundleExportError(f"{out} holds other files ({', '.join(others[:3])}{' ...' if len(others) > 3 else ''}); "
                                "export the bundle into an empty folder, or to a .zip")  # fmt: skip
    for p in entries:
        if p.is_dir():
            for c in p.iterdir():
                c.unlink()
            p.rmdir()
        else:
            p.unlink()


def write_bundle_folder(avatar, directory: str | Path, options: BundleOptions = BundleOptions()) -> BundleSummary:
    """Write the bundle files into ``directory``: created, or emptied of an earlier bundle; a folder
    holding other files is refused (``BundleExportError``). An avatar on a GPU is exported from a CPU copy
    (``Avatar.to``): graphs traced on the CPU, the same bundle whichever device built or holds the avatar."""
    out = Path(directory)
    _prepare_folder(out)
    avatar = avatar.to("cpu")
    model = avatar.head_model
    num_e = model.num_expressions
    neutral = np.zeros(num_e, dtype=np.float32)
    rig = avatar.rig

    # Graphs first: their neutral outputs are what static.ply holds for the dynamic splats.
    dynamic_graph = DynamicBranchGraph(avatar)  # refuses avatars without learned decoders
    feature_graph = ExpressionFeatureGraph(avatar.decoders.encoder)
    expr = torch.zeros(1, num_e)
    with torch.no_grad():
        feature = feature_graph(expr)
        means, quats, scales, colors, opacities, _ = dynamic_graph(expr, feature, torch.zeros(1, HEAD_POSE_SIZE))
        means, quats, scales, colors = means.T, quats.T, scales.T, colors.T  # component-major -> [D, C] rows of the PLY
    export_graph(feature_graph, (expr,), out / VAE_GRAPH, FEATURE_INPUTS, FEATURE_OUTPUTS)
    export_graph(dynamic_graph, (expr, feature, torch.zeros(1, HEAD_POSE_SIZE)), out / DECODER_GRAPH, DYNAMIC_INPUTS, DYNAMIC_OUTPUTS)

    static = rig.static
    num_static, num_dynamic = len(static), dynamic_graph.num_dynamic
    dyn_index = np.concatenate([np.full(num_static, -1, np.int32), np.arange(num_dynamic, dtype=np.int32)])
    texel = np.concatenate([rig.static_index.numpy(), np.full(rig.num_hair, -1), rig.dynamic_index.numpy()]).astype(np.int32)
    write_splat_ply(
        out / STATIC_PLY,
        torch.cat([static.means, means]), torch.cat([static.quats, quats]), torch.cat([static.scales, scales]),
        torch.cat([static.opacities, opacities]), torch.cat([static.colors, colors]),
        extra={DYNAMIC_INDEX_PROPERTY: dyn_index, TEXEL_PROPERTY: texel},
    )  # fmt: skip

    files = [STATIC_PLY, VAE_GRAPH, DECODER_GRAPH]
    if options.glb:
        texture = baked_texture(avatar.atlas, avatar.texel_maps(neutral).color.numpy())
        write_head_glb(out / GLB_FILE, model, identity=avatar.identity, texture=texture, face_uvs=avatar.atlas.face_atlas_uvs,
                       morph_tolerance=options.glb_morph_tolerance_m, name="sega_head")  # fmt: skip
        files.append(GLB_FILE)
    clip_paths = write_clips(out / CLIPS_DIR, options.clips, model.expression_names, fps=options.clip_fps, seed=options.clip_seed)
    clips = [p.relative_to(out).as_posix() for p in clip_paths]
    files += clips

    names = list(model.expression_names)
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "splats": {"file": STATIC_PLY, "count": num_static + num_dynamic, "dynamic_count": num_dynamic,
                   "dynamic_index_property": DYNAMIC_INDEX_PROPERTY},
        "frame": frame_contract(num_e, int(feature.shape[1]), num_dynamic),
        "expressions": {"names": names, "range": list(EXPRESSION_RANGE), "groups": expression_groups(names),
                        "fitted": [round(float(v), 5) for v in avatar.expression]},
        "camera": default_camera(avatar),
        "glb": GLB_FILE if options.glb else None,
        "clips": clips,
        "files": {f: file_sha256(out / f) for f in files},
        "provenance": {
            "generator": f"sega {__version__} export.bundle",
            "onnx_opset": OPSET,
            "seed": avatar.seed,
            "avatar_options": avatar.options.to_dict(),
            "bundle_options": options.to_dict(),
            "head_model": {"name": model.name, "num_identity": len(avatar.identity)},
            "avatar": avatar.provenance,
        },
        "licences": _licences(avatar),
    }  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    sizes = {f: (out / f).stat().st_size for f in [MANIFEST] + files}
    return BundleSummary(out, num_static + num_dynamic, num_dynamic, sizes, sum(sizes.values()))


def zip_folder(folder: str | Path, zip_path: str | Path) -> Path:
    """Zip a bundle folder (members at the zip's root, deflated), atomically (temp file + rename)."""
    folder, zip_path = Path(folder), Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=ZIP_COMPRESSION) as zf:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(f, f.relative_to(folder).as_posix())
    os.replace(tmp, zip_path)
    return zip_path


def write_bundle(avatar, path: str | Path, options: BundleOptions = BundleOptions()) -> BundleSummary:
    """Write the avatar's bundle to ``path``: a ``.zip`` file, or else a folder.

    avatar: a ``sega.avatar.Avatar`` with learned decoders (format 2). Returns a ``BundleSummary``.
    """
    path = Path(path)
    if path.suffix.lower() != ".zip":
        return write_bundle_folder(avatar, path, options)
    with tempfile.TemporaryDirectory(prefix="sega-bundle-") as tmp:
        summary = write_bundle_folder(avatar, Path(tmp) / "bundle", options)
        zip_folder(summary.path, path)
    summary.path = path
    summary.size_bytes = path.stat().st_size
    return summary


__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "COMPONENT_MAJOR",
    "OUTPUT_LAYOUTS",
    "READABLE_VERSIONS",
    "SPLAT_MAJOR",
    "BundleExportError",
    "BundleOptions",
    "BundleSummary",
    "write_bundle",
    "write_bundle_folder",
    "zip_folder",
]
