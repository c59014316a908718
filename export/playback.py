"""Bundle -> frames: validate and load an avatar bundle, run its per-frame graphs with onnxruntime.

``load_bundle(path)`` accepts a bundle folder or zip (members at the root or inside one folder) and
refuses, each with its own ``BundleError`` message:

* zips with unsafe member names (absolute, ``..``, backslashes, drive letters, NUL), symlinks,
  duplicate names, too many members, members or totals above ``BundleLimits`` (declared *and*
  actually read, so a lying header does not help a zip bomb), or suspicious compression ratios;
* a missing ``manifest.json``, an unknown format or version, a manifest without the required keys;
* missing files (static.ply, every graph, listed clips, listed files), SHA-256 mismatches;
* a static.ply whose splat count or ``sega_dynamic_index`` column disagrees with the manifest;
* ONNX graphs that are not loadable, or whose input/output names, dtypes or shapes do not match
  the manifest's per-frame contract.

Playback uses onnxruntime only (no torch): ``Bundle.frame`` returns the graph outputs and
``Bundle.gaussians`` the posed splats as numpy arrays. ``Bundle.render`` hands them to the same
renderer the avatar uses (``sega.render``, which needs torch).
"""

from __future__ import annotations

import json
import math
import posixpath
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sega.errors import SegaError
from sega.io import file_sha256

from .bundle import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    COMPONENT_MAJOR,
    OUTPUT_LAYOUTS,
    READABLE_VERSIONS,
    SPLAT_MAJOR,
    DYNAMIC_INDEX_PROPERTY,
    MANIFEST,
    OUTPUT_UPDATES,
)
from .clips import ClipError, read_clip
from .ply import SplatPlyError, read_splat_ply

REQUIRED_KEYS = ("format", "format_version", "splats", "frame", "expressions", "files")
FRAME_INPUTS = ("expression", "head_pose")
ONNX_DTYPES = {"tensor(float)": "float32"}
UNSAFE_NAME = re.compile(r"(^/|^[A-Za-z]:|\\|\x00)")


class BundleError(SegaError, ValueError):
    """A bundle that cannot be loaded (the message says which file and why)."""


@dataclass(frozen=True)
class BundleLimits:
    """Caps on what a bundle may hold (a hostile zip must not fill the disk or the memory)."""

    max_members: int = 256  # files in a zip
    max_member_bytes: int = 512 * 1024 * 1024  # uncompressed size of one file
    max_total_bytes: int = 1024 * 1024 * 1024  # uncompressed size of all files
    max_ratio: float = 200.0  # uncompressed / compressed size of one member above which it is a bomb
    ratio_min_bytes: int = 1024 * 1024  # the ratio check applies to members larger than this


def _check_member_name(name: str) -> None:
    parts = name.split("/")
    if UNSAFE_NAME.search(name) or any(p in ("..", ".") for p in parts) or "" in parts[:-1]:
        raise BundleError(f"unsafe path in the zip: {name!r} (absolute, '..', backslash or drive letter)")


def _extract_zip(path: Path, dest: Path, limits: BundleLimits) -> Path:
    """Check every member, then extract into ``dest``; returns the folder holding manifest.json."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise BundleError(f"{path} is not a readable zip: {err}") from err
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise BundleError(f"{path}: {len(infos)} members, more than the {limits.max_members} a bundle may have")
        seen: set[str] = set()
        total = 0
        for info in infos:
            _check_member_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise BundleError(f"{path}: member {info.filename!r} is a symbolic link; bundles hold plain files only")
            if info.filename in seen:
                raise BundleError(f"{path}: member {info.filename!r} appears twice")
            seen.add(info.filename)
            if info.file_size > limits.max_member_bytes:
                raise BundleError(f"{path}: member {info.filename!r} is {info.file_size} bytes uncompressed, over the {limits.max_member_bytes}-byte limit")
            if info.file_size > limits.ratio_min_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
                raise BundleError(f"{path}: member {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}x (a zip bomb?)")
            total += info.file_size
            if total > limits.max_total_bytes:
                raise BundleError(f"{path}: members add up to more than the {limits.max_total_bytes}-byte limit")
        manifests = [i.filename for i in infos if posixpath.basename(i.filename) == MANIFEST]
        if not manifests:
            raise BundleError(f"{path} is not an avatar bundle: the zip has no {MANIFEST}")
        root = min(manifests, key=len)[: -len(MANIFEST)]
        if root.count("/") > 1:
            raise BundleError(f"{path}: {MANIFEST} must be at the zip's root or inside one folder, found {root + MANIFEST!r}")
        try:
            _inflate(zf, infos, root, dest, path, limits)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise BundleError(f"{path}: the zip is damaged ({err})") from err
    return dest


def _inflate(zf: zipfile.ZipFile, infos, root: str, dest: Path, path: Path, limits: BundleLimits) -> None:
    """Extract the members under ``root`` into ``dest``, counting the bytes really inflated."""
    written = 0
    for info in infos:
        if info.is_dir() or not info.filename.startswith(root):
            continue
        target = dest / info.filename[len(root):]
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with zf.open(info) as src, open(target, "wb") as dst:
            while block := src.read(1 << 20):
                size += len(block)  # count what is really inflated: headers can lie
                written += len(block)
                if size > info.file_size or size > limits.max_member_bytes or written > limits.max_total_bytes:
                    raise BundleError(f"{path}: member {info.filename!r} inflates beyond its declared size or the limits (a zip bomb?)")
                dst.write(block)


def _resolve(root: Path, rel: str, what: str) -> Path:
    """A file named by the manifest, inside the bundle."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{MANIFEST}: {what} must be a relative path, got {rel!r}")
    _check_member_name(rel)
    if rel.startswith("/") or ".." in rel.split("/"):
        raise BundleError(f"{MANIFEST}: {what} {rel!r} leaves the bundle")
    path = root / rel
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except OSError:
        inside = False
    if not inside:
        raise BundleError(f"{MANIFEST}: {what} {rel!r} resolves outside the bundle")
    if not path.is_file():
        raise BundleError(f"bundle is missing {rel} ({what})")
    return path


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not an avatar bundle: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{MANIFEST} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} must hold a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{MANIFEST}: format {manifest.get('format')!r} is not {BUNDLE_FORMAT!r}")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise BundleError(f"unknown bundle format version {manifest.get('format_version')!r}; this sega reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))} (writes {BUNDLE_VERSION})")  # fmt: skip
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{MANIFEST} lacks required keys {missing}")
    return manifest


def _check_graph(session, step: dict, frame: dict, table: dict[str, list], graph: str) -> None:
    """Graph inputs/outputs vs the manifest: names, float32, and shapes where both are known."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    want_in = step.get("inputs")
    if not isinstance(want_in, dict) or set(want_in) != set(inputs):
        raise BundleError(f"{graph}: graph inputs {sorted(inputs)} do not match the manifest's {sorted(want_in or [])}")
    want_out = step.get("outputs")
    if not isinstance(want_out, list) or not set(want_out) <= set(outputs):
        raise BundleError(f"{graph}: graph outputs {sorted(outputs)} do not include the manifest's {want_out}")
    for name, src in want_in.items():
        if src not in table:
            raise BundleError(f"{graph}: input {name!r} reads {src!r}, which no frame input or earlier step provides")
    checks = [(inputs[n], table[src], f"input {n!r}") for n, src in want_in.items()]
    shapes = dict(step.get("output_shapes", {}))
    shapes.update({n: frame["outputs"][n]["shape"] for n in want_out if n in frame.get("outputs", {})})
    checks += [(outputs[n], shapes.get(n), f"output {n!r}") for n in want_out]
    for arg, shape, what in checks:
        if ONNX_DTYPES.get(arg.type) != "float32":
            raise BundleError(f"{graph}: {what} is {arg.type}, the contract needs float32")
        if shape is None:
            continue
        got = list(arg.shape)
        if len(got) != len(shape) or any(isinstance(g, int) and g != s for g, s in zip(got, shape)):
            raise BundleError(f"{graph}: {what} has shape {got}, the manifest says {shape}")
    for n in want_out:
        table[n] = shapes.get(n)


class Bundle:
    """A loaded, validated bundle. Create with ``load_bundle``; ``close()`` (or ``with``) removes the
    temporary folder of an unzipped bundle."""

    def __init__(self, root: Path, manifest: dict, splats: dict, dynamic_rows: np.ndarray, sessions: list, tmp: Path | None):
        self.root = root  # folder holding manifest.json
        self.manifest = manifest
        self.splats = splats  # read_splat_ply of static.ply (activated values, file order)
        self.dynamic_rows = dynamic_rows  # [D] row of static.ply holding dynamic splat d
        self._sessions = sessions  # [(step, onnxruntime session)]
        self._tmp = tmp

    # ---- facts ---------------------------------------------------------------------------------
    @property
    def expression_names(self) -> list[str]:
        return list(self.manifest["expressions"]["names"])

    @property
    def num_splats(self) -> int:
        return int(self.splats["means"].shape[0])

    @property
    def num_dynamic(self) -> int:
        return int(self.dynamic_rows.shape[0])

    @property
    def clip_names(self) -> list[str]:
        return [posixpath.splitext(posixpath.basename(c))[0] for c in self.manifest.get("clips", [])]

    def expression_with(self, **weights: float) -> np.ndarray:
        """[E] zeros with the named weights set, e.g. ``expression_with(jawOpen=1.0)``."""
        out = np.zeros(len(self.expression_names), dtype=np.float32)
        for name, value in weights.items():
            if name not in self.expression_names:
                raise BundleError(f"unknown expression {name!r}")
            out[self.expression_names.index(name)] = value
        return out

    # ---- per frame -----------------------------------------------------------------------------
    def frame(self, expression=None, head_pose=None) -> dict[str, np.ndarray]:
        """Run the per-frame steps. expression: [E] (default zeros); head_pose: [6] (default zeros).
        Returns {name: array} for every frame input and step output; the frame outputs splat-major
        ([D, C] or [D], whatever the bundle's layout: component-major ones are transposed views)."""
        inputs = self.manifest["frame"]["inputs"]
        e = len(self.expression_names)
        expr = np.zeros(e, np.float32) if expression is None else np.asarray(expression, dtype=np.float32)
        pose = np.zeros(6, np.float32) if head_pose is None else np.asarray(head_pose, dtype=np.float32)
        if expr.size != e or pose.size != 6:
            raise ValueError(f"expected {e} expression weights and 6 head-pose values, got {expr.size} and {pose.size}")
        table = {"expression": expr.reshape(inputs["expression"]["shape"]), "head_pose": pose.reshape(inputs["head_pose"]["shape"])}
        for step, session in self._sessions:
            feeds = {name: table[src] for name, src in step["inputs"].items()}
            for name, value in zip(step["outputs"], session.run(step["outputs"], feeds)):
                table[name] = value
        for name, spec in self.manifest["frame"]["outputs"].items():
            if spec.get("layout") == COMPONENT_MAJOR:
                table[name] = table[name].T
        return table

    def gaussians(self, expression=None, head_pose=None) -> dict[str, np.ndarray]:
        """World-space splats of one frame: {"means" [N, 3], "quats" [N, 4] wxyz, "scales" [N, 3],
        "opacities" [N], "colors" [N, 3]} in static.ply order, after the frame outputs are applied."""
        table = self.frame(expression, head_pose)
        out = {k: self.splats[k].copy() for k in ("means", "quats", "scales", "opacities", "colors")}
        rows = self.dynamic_rows
        matrix = np.eye(4, dtype=np.float32)
        field_of = {"center": "means", "quaternion_wxyz": "quats", "scale": "scales", "rgb": "colors", "opacity": "opacities"}
        for name, spec in self.manifest["frame"]["outputs"].items():
            kind = spec.get("updates")
            if kind == "object_matrix_row_major":
                matrix = np.asarray(table[name], dtype=np.float32).reshape(4, 4)
            elif kind in field_of:
                out[field_of[kind]][rows] = np.asarray(table[name], dtype=np.float32).reshape(out[field_of[kind]][rows].shape)
        rot, trans = matrix[:3, :3], matrix[:3, 3]
        out["means"] = out["means"] @ rot.T + trans
        out["quats"] = _quat_multiply(_matrix_to_quat(rot), out["quats"])
        return out

    def camera(self, width: int = 512, height: int = 512):
        """The manifest's default camera as a ``sega.camera.Camera`` of ``width`` x ``height`` px."""
        from sega.camera import look_at_camera

        cam = self.manifest.get("camera") or {}
        try:
            return look_at_camera(cam["position"], cam["target"], cam.get("up", [0.0, 1.0, 0.0]), float(cam["fov_deg"]), width, height)
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(f"{MANIFEST}: camera entry is unusable: {err}") from err

    def render(self, expression=None, head_pose=None, camera=None, width: int = 512, height: int = 512,
               background=(1.0, 1.0, 1.0), backend: str = "auto"):  # fmt: skip
        """Render one frame with ``sega.render`` (torch) -> its ``RenderOutput`` (rgb [H, W, 3] ...)."""
        import torch

        from sega.render import render as render_gaussians

        cam = self.camera(width, height) if camera is None else camera
        g = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.gaussians(expression, head_pose).items()}
        with torch.no_grad():
            return render_gaussians(
                g["means"], g["quats"], g["scales"], g["opacities"], g["colors"],
                torch.as_tensor(cam.K, dtype=torch.float32), torch.as_tensor(cam.viewmat, dtype=torch.float32),
                cam.width, cam.height, torch.tensor(background, dtype=torch.float32), backend=backend,
            )  # fmt: skip

    def clip(self, name: str) -> dict:
        """A clip of the bundle by name (e.g. "talk") -> ``export.clips.read_clip`` dict."""
        for rel in self.manifest.get("clips", []):
            if posixpath.splitext(posixpath.basename(rel))[0] == name:
                try:
                    return read_clip(self.root / rel)
                except ClipError as err:
                    raise BundleError(str(err)) from err
        raise BundleError(f"the bundle has no clip {name!r}; it has {self.clip_names}")

    def clip_frames(self, name: str):
        """Yield (expression [E], head_pose [6]) per frame of a clip, its weights re-indexed by name."""
        clip = self.clip(name)
        names = self.expression_names
        index = [names.index(n) if n in names else -1 for n in clip["expression_names"]]
        for weights, pose in zip(clip["frames"], clip["head_pose"]):
            expr = np.zeros(len(names), np.float32)
            for i, w in zip(index, weights):
                if i >= 0:
                    expr[i] = w
            yield expr, np.asarray(pose, dtype=np.float32)

    # ---- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        self._sessions = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """[3, 3] rotation -> [4] wxyz (numpy; the loader must not need torch)."""
    tr = float(np.trace(m))
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-12)) * 2
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.asarray(q, dtype=np.float32)
    return q / np.linalg.norm(q)


def _quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [4] * b [N, 4] (wxyz Hamilton product, rotation b first)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b.T
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], 1).astype(np.float32)  # fmt: skip


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise BundleError(f"{path.name} is not a loadable ONNX graph: {str(err).splitlines()[0][:300]}") from err


def load_bundle(path: str | Path, limits: BundleLimits = BundleLimits(), threads: int | None = None, verify_hashes: bool = True) -> Bundle:
    """Validate and load a bundle folder or ``.zip`` (see the module docstring for what is refused).

    threads: onnxruntime intra-op threads (default: onnxruntime's choice).
    Raises ``BundleError`` (a ``SegaError``) with a specific message (also when ``path`` does not exist).
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle not found: {path}")
    tmp = None
    if path.is_dir():
        root = path
    else:
        tmp = Path(tempfile.mkdtemp(prefix="sega-bundle-"))
        try:
            root = _extract_zip(path, tmp, limits)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    try:
        return _load_folder(root, limits, threads, verify_hashes, tmp)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_folder(root: Path, limits: BundleLimits, threads, verify_hashes: bool, tmp: Path | None) -> Bundle:
    manifest = _read_manifest(root)
    files = manifest["files"]
    if not isinstance(files, dict):
        raise BundleError(f"{MANIFEST}: 'files' must map paths to SHA-256 hashes")
    for rel, digest in files.items():
        file = _resolve(root, rel, "listed file")
        if file.stat().st_size > limits.max_member_bytes:
            raise BundleError(f"{rel} is {file.stat().st_size} bytes, over the {limits.max_member_bytes}-byte limit")
        if verify_hashes and file_sha256(file) != digest:
            raise BundleError(f"{rel}: SHA-256 does not match the manifest (the file was changed or damaged)")

    splats_entry = manifest["splats"]
    frame = manifest["frame"]
    try:
        count, dyn_count = int(splats_entry["count"]), int(splats_entry["dynamic_count"])
        steps, outputs = frame["steps"], frame["outputs"]
        frame_inputs = frame["inputs"]
        names = manifest["expressions"]["names"]
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"{MANIFEST}: malformed splats/frame/expressions entry: {err!r}") from err
    if set(frame_inputs) != set(FRAME_INPUTS):
        raise BundleError(f"{MANIFEST}: frame inputs must be {list(FRAME_INPUTS)}, got {sorted(frame_inputs)}")
    if list(frame_inputs["expression"].get("shape", [])) != [1, len(names)]:
        raise BundleError(f"{MANIFEST}: expression input shape {frame_inputs['expression'].get('shape')} does not match {len(names)} expression names")
    unknown = sorted({spec.get("updates") for spec in outputs.values()} - set(OUTPUT_UPDATES.values()))
    if unknown:
        raise BundleError(f"{MANIFEST}: unknown output update kinds {unknown}")
    for name, spec in outputs.items():
        layout = spec.get("layout", SPLAT_MAJOR)
        if layout not in OUTPUT_LAYOUTS or (layout != SPLAT_MAJOR and manifest["format_version"] < 2):
            raise BundleError(f"{MANIFEST}: output {name} has layout {layout!r}; format {manifest['format_version']} knows "
                              f"{list(OUTPUT_LAYOUTS) if manifest['format_version'] >= 2 else [SPLAT_MAJOR]}")  # fmt: skip

    ply_path = _resolve(root, splats_entry.get("file", ""), "splat file")
    try:
        splats = read_splat_ply(ply_path)
    except SplatPlyError as err:
        raise BundleError(str(err)) from err
    if splats["means"].shape[0] != count:
        raise BundleError(f"{ply_path.name} holds {splats['means'].shape[0]} splats, the manifest says {count}")
    prop = splats_entry.get("dynamic_index_property", DYNAMIC_INDEX_PROPERTY)
    if prop not in splats["extra"]:
        raise BundleError(f"{ply_path.name} has no {prop} property: the viewer cannot tell dynamic splats apart")
    dyn = np.asarray(splats["extra"][prop]).astype(np.int64)
    rows = np.flatnonzero(dyn >= 0)
    if len(rows) != dyn_count or not np.array_equal(np.sort(dyn[rows]), np.arange(dyn_count)) or (dyn < -1).any():
        raise BundleError(f"{ply_path.name}: {prop} must number the {dyn_count} dynamic splats 0..{dyn_count - 1} once each (-1 elsewhere)")
    dynamic_rows = np.empty(dyn_count, dtype=np.int64)
    dynamic_rows[dyn[rows]] = rows

    table: dict[str, list] = {n: spec.get("shape") for n, spec in frame_inputs.items()}
    sessions = []
    for step in steps:
        graph_path = _resolve(root, step.get("graph", ""), "graph")
        session = _session(graph_path, threads)
        _check_graph(session, step, frame, table, graph_path.name)
        sessions.append((step, session))
    missing = [n for n in outputs if n not in table]
    if missing:
        raise BundleError(f"{MANIFEST}: frame outputs {missing} are produced by no step")
    for spec in outputs.values():
        splat_axis = -1 if spec.get("layout") == COMPONENT_MAJOR else 0
        if spec.get("updates") != "object_matrix_row_major" and (not spec.get("shape") or spec["shape"][splat_axis] != dyn_count):
            raise BundleError(f"{MANIFEST}: output shape {spec.get('shape')} does not cover the {dyn_count} dynamic splats")
    for rel in manifest.get("clips", []):
        _resolve(root, rel, "clip")
    return Bundle(root, manifest, splats, dynamic_rows, sessions, tmp)
