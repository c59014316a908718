"""A bundle's ``manifest.json``: one schema (``MANIFEST_SPEC``, ``sega.schema``), the checks across its
fields, and the rule that every file of the bundle is listed and hashed.

Why one schema: readers used to index the manifest wherever they needed a field, so a hostile or
damaged manifest (a string where a shape goes, ``1e308`` splats, ``fov_deg: 0``, a list nested 100
deep) failed with ``TypeError`` / ``OverflowError`` / ``ZeroDivisionError`` tracebacks. ``check_manifest``
checks every field a reader uses, once, with one-line messages; code after it may trust types and
ranges. ``provenance`` and ``licences`` are informative and loosely typed (still size- and
depth-capped by ``sega.schema``).

Why every file listed: a file the manifest does not list is loaded unhashed (an ONNX graph's
external data, say) or at least travels unchecked; ``check_files`` refuses any member but
``manifest.json`` that ``files`` does not list, any file the manifest refers to (splats, graphs,
glb, clips) that it does not list, and an empty ``files``.
"""

from __future__ import annotations

import math
import os
import posixpath
import stat
from pathlib import Path

from sega.conventions import HEAD_POSE_SIZE
from sega.io import file_sha256
from sega.schema import Any_, Arr, Const, Map, Nullable, Num, Obj, SchemaError, Str, load_json, validate

from .bundle import BUNDLE_FORMAT, BUNDLE_VERSION, COMPONENT_MAJOR, MANIFEST, OUTPUT_LAYOUTS, OUTPUT_UPDATES, READABLE_VERSIONS, SPLAT_MAJOR
from .bundle_checks import BundleError, BundleLimits

MAX_SPLATS = 1 << 23  # splats of static.ply (8.4 M; a 512 MB PLY holds at most ~8 M INRIA rows)
MAX_EXPRESSIONS = 1024  # expression names (ICT has 53, FLAME 100)
MAX_STEPS = 16  # per-frame graph steps (sega writes 2)
MAX_GRAPH_IO = 64  # inputs / outputs of one step, and frame outputs (sega: at most 6)
MAX_RANK = 8  # dimensions of a declared shape
MAX_DIM = 1 << 24  # one dimension of a declared shape
MAX_CLIPS = 64  # clips listed (sega writes 4)
MAX_FILES = 256  # entries of ``files`` (BundleLimits.max_members is the same cap on the members)
MAX_NAME_CHARS = 128  # tensor, expression and group names
MAX_PATH_CHARS = 256  # bundle-relative paths
MAX_TEXT_CHARS = 4096  # informative strings ("meaning")
FOV_DEG = (1.0, 170.0)  # vertical field of view: below 1 degree or near 180 the projection degenerates
MAX_COORD_M = 1000.0  # camera coordinates (metres; a head is ~0.2 m across)
MIN_CAMERA_DISTANCE_M = 1e-4  # position and target closer than this give no viewing direction
MIN_UP_SINE = 1e-3  # |sin| of the angle between up and the viewing direction (parallel: no image axes)
MAX_WEIGHT = 1e3  # expression weights and ranges (the contract's range is [0, 1])
SHA256_HEX = r"[0-9a-f]{64}"
POINT_DIMS = {"center": 3, "quaternion_wxyz": 4, "scale": 3, "rgb": 3}  # components of each splat update kind

NAME = Str(MAX_NAME_CHARS)
PATH = Str(MAX_PATH_CHARS)  # checked for safety (relative, no '..') by the loader, with its own message
SHAPE = Arr(Num(1, MAX_DIM, integer=True), 1, MAX_RANK)
TEXT = Str(MAX_TEXT_CHARS)
DTYPE = Str(16, choices=("float32",))
VEC3 = Arr(Num(-MAX_COORD_M, MAX_COORD_M), 3, 3)
TENSOR_SPEC = Obj(required={"shape": SHAPE}, optional={"dtype": DTYPE, "meaning": TEXT})
OUTPUT_SPEC = Obj(required={"shape": SHAPE, "updates": NAME}, optional={"layout": NAME, "dtype": DTYPE, "meaning": TEXT})
STEP_SPEC = Obj(
    required={"graph": PATH, "inputs": Map(NAME, NAME, 1, MAX_GRAPH_IO), "outputs": Arr(NAME, 1, MAX_GRAPH_IO)},
    optional={"output_shapes": Map(NAME, SHAPE, 0, MAX_GRAPH_IO)},
)
MANIFEST_SPEC = Obj(
    required={
        "format": Const(BUNDLE_FORMAT),
        "format_version": Num(min(READABLE_VERSIONS), max(READABLE_VERSIONS), integer=True),
        "splats": Obj(required={"file": PATH, "count": Num(1, MAX_SPLATS, integer=True), "dynamic_count": Num(1, MAX_SPLATS, integer=True)},
                      optional={"dynamic_index_property": NAME}),  # fmt: skip
        "frame": Obj(required={"inputs": Obj(required={"expression": TENSOR_SPEC, "head_pose": TENSOR_SPEC}, closed=True),
                               "steps": Arr(STEP_SPEC, 1, MAX_STEPS),
                               "outputs": Map(NAME, OUTPUT_SPEC, 1, MAX_GRAPH_IO)}),  # fmt: skip
        "expressions": Obj(required={"names": Arr(NAME, 1, MAX_EXPRESSIONS)},
                           optional={"range": Arr(Num(-MAX_WEIGHT, MAX_WEIGHT), 2, 2),
                                     "groups": Map(NAME, Arr(NAME, 0, MAX_EXPRESSIONS), 0, MAX_EXPRESSIONS),
                                     "fitted": Arr(Num(-MAX_WEIGHT, MAX_WEIGHT), 0, MAX_EXPRESSIONS)}),  # fmt: skip
        "camera": Obj(required={"position": VEC3, "target": VEC3, "fov_deg": Num(*FOV_DEG)}, optional={"up": VEC3}),
        "files": Map(PATH, Str(64, pattern=SHA256_HEX), 1, MAX_FILES),
    },
    optional={"glb": Nullable(PATH), "clips": Arr(PATH, 0, MAX_CLIPS), "provenance": Any_(), "licences": Any_()},
)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_manifest(root: Path, limits: BundleLimits) -> dict:
    """``root/manifest.json`` read (size-capped) and checked -> the manifest dict."""
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not an avatar bundle: no {MANIFEST}")
    try:
        manifest = load_json(path, limits.max_manifest_bytes, MANIFEST)
    except SchemaError as err:
        raise BundleError(str(err)) from err
    return check_manifest(manifest)


def check_manifest(manifest) -> dict:
    """The format gate, ``MANIFEST_SPEC`` and the checks across fields -> ``manifest``."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} must hold a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{MANIFEST}: format {_short(manifest.get('format'))} is not {BUNDLE_FORMAT!r}")
    version = manifest.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise BundleError(f"unknown bundle format version {_short(version)}; this sega reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))} (writes {BUNDLE_VERSION})")  # fmt: skip
    missing = [k for k in MANIFEST_SPEC.required if k not in manifest]
    if missing:
        raise BundleError(f"{MANIFEST} lacks required keys {missing}")
    try:
        for key, spec in {**MANIFEST_SPEC.required, **MANIFEST_SPEC.optional}.items():
            if key in manifest:
                validate(manifest[key], spec, f"{MANIFEST}: {key}")
    except SchemaError as err:
        raise BundleError(str(err)) from err
    _check_frame(manifest)
    _check_expressions(manifest["expressions"])
    _check_camera(manifest["camera"])
    _check_clip_names(manifest.get("clips", []))
    if manifest["splats"]["dynamic_count"] > manifest["splats"]["count"]:
        raise BundleError(f"{MANIFEST}: splats.dynamic_count {manifest['splats']['dynamic_count']} exceeds count {manifest['splats']['count']}")
    return manifest


def _check_frame(manifest: dict) -> None:
    """Input shapes, update kinds, layouts, and the steps' name table (each name made once, read after)."""
    frame, version = manifest["frame"], manifest["format_version"]
    num_e = len(manifest["expressions"]["names"])
    if frame["inputs"]["expression"]["shape"] != [1, num_e]:
        raise BundleError(f"{MANIFEST}: expression input shape {frame['inputs']['expression']['shape']} does not match {num_e} expression names")
    if frame["inputs"]["head_pose"]["shape"] != [1, HEAD_POSE_SIZE]:
        raise BundleError(f"{MANIFEST}: head_pose input shape {frame['inputs']['head_pose']['shape']} is not [1, {HEAD_POSE_SIZE}]")
    outputs = frame["outputs"]
    unknown = sorted({spec["updates"] for spec in outputs.values()} - set(OUTPUT_UPDATES.values()))
    if unknown:
        raise BundleError(f"{MANIFEST}: unknown output update kinds {unknown}")
    for name, spec in outputs.items():
        layout = spec.get("layout", SPLAT_MAJOR)
        if layout not in OUTPUT_LAYOUTS or (layout != SPLAT_MAJOR and version < 2):
            raise BundleError(f"{MANIFEST}: output {name} has layout {_short(layout)}; format {version} knows "
                              f"{list(OUTPUT_LAYOUTS) if version >= 2 else [SPLAT_MAJOR]}")  # fmt: skip
    made = set(frame["inputs"])
    for step in frame["steps"]:
        for graph_input, src in step["inputs"].items():
            if src not in made:
                raise BundleError(f"{step['graph']}: input {graph_input!r} reads {src!r}, which no frame input or earlier step provides")
        for out in step["outputs"]:
            if out in made:
                raise BundleError(f"{MANIFEST}: {step['graph']} outputs {out!r}, which a frame input or earlier step already provides")
            made.add(out)
    missing = [n for n in outputs if n not in made]
    if missing:
        raise BundleError(f"{MANIFEST}: frame outputs {missing} are produced by no step")


def check_output_shapes(manifest: dict, num_dynamic: int) -> None:
    """Each frame output's shape fits its update kind and the D dynamic splats: [D, C] (splat-major) or
    [C, D] (component-major) with C the kind's components; [D] for opacity; [4, 4] for the head matrix."""
    for name, spec in manifest["frame"]["outputs"].items():
        kind, shape = spec["updates"], spec["shape"]
        if kind == "object_matrix_row_major":
            want = [4, 4]
        elif kind == "opacity":
            want = [num_dynamic]
        elif spec.get("layout") == COMPONENT_MAJOR:
            want = [POINT_DIMS[kind], num_dynamic]
        else:
            want = [num_dynamic, POINT_DIMS[kind]]
        splat_axis = -1 if spec.get("layout") == COMPONENT_MAJOR else 0
        if kind != "object_matrix_row_major" and shape[splat_axis] != num_dynamic:
            raise BundleError(f"{MANIFEST}: output shape {shape} does not cover the {num_dynamic} dynamic splats")
        if shape != want:
            raise BundleError(f"{MANIFEST}: output {name} ({kind}) has shape {shape}, its update kind needs {want}")


def _check_expressions(expressions: dict) -> None:
    names = expressions["names"]
    if len(set(names)) != len(names):
        raise BundleError(f"{MANIFEST}: expressions.names holds duplicates")
    lo, hi = expressions.get("range", [0.0, 1.0])
    if not lo < hi:
        raise BundleError(f"{MANIFEST}: expressions.range {[lo, hi]} is empty")


def _check_camera(camera: dict) -> None:
    position, target = camera["position"], camera["target"]
    view = [t - p for p, t in zip(position, target)]
    distance = math.sqrt(sum(v * v for v in view))
    if distance < MIN_CAMERA_DISTANCE_M:
        raise BundleError(f"{MANIFEST}: camera position {position} is (almost) its target {target}")
    up = camera.get("up", [0.0, 1.0, 0.0])
    cross = [view[1] * up[2] - view[2] * up[1], view[2] * up[0] - view[0] * up[2], view[0] * up[1] - view[1] * up[0]]
    up_norm = math.sqrt(sum(u * u for u in up))
    if up_norm == 0 or math.sqrt(sum(c * c for c in cross)) < MIN_UP_SINE * distance * up_norm:
        raise BundleError(f"{MANIFEST}: camera up {up} is zero or parallel to the viewing direction")


def _check_clip_names(clips: list) -> None:
    stems = [posixpath.splitext(posixpath.basename(c))[0] for c in clips]
    if len(set(stems)) != len(stems):
        raise BundleError(f"{MANIFEST}: two clips share a name ({sorted(stems)[:8]})")


# ---- files: every member listed and hashed -------------------------------------------------------


def referenced_files(manifest: dict) -> list[tuple[str, str]]:
    """[(path, what)] of the files the manifest refers to: the splat file, each graph, the glb, each clip."""
    refs = [(manifest["splats"]["file"], "splat file")] + [(s["graph"], "graph") for s in manifest["frame"]["steps"]]
    if manifest.get("glb") is not None:
        refs.append((manifest["glb"], "glb"))
    return refs + [(c, "clip") for c in manifest.get("clips", [])]


def bundle_members(root: Path, limits: BundleLimits) -> list[str]:
    """Relative POSIX paths of the plain files under ``root`` but ``manifest.json`` (symlinks refused)."""
    members: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in dirnames + filenames:
            path = Path(dirpath) / entry
            mode = path.lstat().st_mode
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                raise BundleError(f"{rel} in the bundle is a symbolic link; bundles hold plain files only")
            if entry in filenames and not stat.S_ISREG(mode):
                raise BundleError(f"{rel} in the bundle is not a plain file")
            if entry in filenames and rel != MANIFEST:
                members.append(rel)
        if len(members) > limits.max_members:
            raise BundleError(f"the bundle holds more than the {limits.max_members} files a bundle may have")
    return members


def check_files(root: Path, manifest: dict, limits: BundleLimits, resolve, verify_hashes: bool = True) -> None:
    """Every member listed, every referenced file listed, sizes within the limits, SHA-256 as listed.

    resolve: (root, rel, what) -> Path, the loader's safe path resolver (refuses unsafe or missing paths)
    """
    files = manifest["files"]
    paths = {rel: resolve(root, rel, "listed file") for rel in files}
    unlisted = sorted(set(bundle_members(root, limits)) - set(files))
    if unlisted:
        raise BundleError(f"{unlisted[0]} is in the bundle but not listed in {MANIFEST} 'files' (every file must be listed and hashed)")
    for rel, what in referenced_files(manifest):
        if rel not in files:
            raise BundleError(f"{MANIFEST}: the {what} {rel} is not listed in 'files' (every file must be listed and hashed)")
    total = 0
    for rel, path in paths.items():
        size = path.stat().st_size
        total += size
        if size > limits.max_member_bytes:
            raise BundleError(f"{rel} is {size} bytes, over the {limits.max_member_bytes}-byte limit")
        if total > limits.max_total_bytes:
            raise BundleError(f"the bundle's files add up to more than the {limits.max_total_bytes}-byte limit")
        if verify_hashes and file_sha256(path) != files[rel]:
            raise BundleError(f"{rel}: SHA-256 does not match the manifest (the file was changed or damaged)")


__all__ = ["MANIFEST_SPEC", "bundle_members", "check_files", "check_manifest", "check_output_shapes", "read_manifest", "referenced_files"]
