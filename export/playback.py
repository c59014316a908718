"""Bundle -> frames: validate and load an avatar bundle, run its per-frame graphs with onnxruntime.

``load_bundle(path)`` accepts a bundle folder or zip (members at the root or inside one folder) and
refuses, each with its own ``BundleError`` message:

* zips with unsafe member names (absolute, ``..``, backslashes, drive letters, NUL), symlinks,
  duplicate names, too many members, members or totals above ``BundleLimits`` (declared *and*
  actually read, so a lying header does not help a zip bomb), or suspicious compression ratios;
* zip members outside the folder that holds ``manifest.json``;
* a missing, oversized or malformed ``manifest.json`` (one schema and the checks across fields:
  ``export.bundle_schema``), an unknown format or version;
* missing files (static.ply, every graph, listed clips, listed files), files the manifest does not
  list (every member but manifest.json must be listed and hashed), SHA-256 mismatches;
* a static.ply whose splat count or ``sega_dynamic_index`` column disagrees with the manifest;
* ONNX graphs that are not loadable, that use anything sega's exporter does not write (operators
  outside an allow-list, control flow, external data, custom domains), whose values are not of
  fixed, bounded shapes, or whose input/output names, dtypes or shapes do not match the manifest's
  per-frame contract (``export.bundle_checks``; checked with ``onnx`` before onnxruntime loads them).

Playback uses onnxruntime only (no torch): ``Bundle.frame`` returns the graph outputs, each checked
every frame (shape and finite values; onnxruntime failures become ``BundleError`` too), and
``Bundle.gaussians`` the posed splats as numpy arrays. ``Bundle.render`` hands them to the same
renderer the avatar uses (``sega.render``, which needs torch).

``load_bundle(..., device="cuda")`` (a resolved name: ``sega.devices.resolve_device``) renders on the GPU
(gsplat) and runs the graphs with onnxruntime's CUDA provider where the installed onnxruntime has one
(``onnxruntime-gpu``, as in the CUDA Space image), else with its CPU provider: the graphs are small, the
rendering is what the GPU is for.
"""

from __future__ import annotations

import math
import posixpath
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from sega.conventions import HEAD_POSE_SIZE

from .bundle import COMPONENT_MAJOR, DYNAMIC_INDEX_PROPERTY, MANIFEST
from .bundle_checks import BundleError, BundleLimits, check_frame_output, check_graph, first_line
from .bundle_schema import check_files, check_output_shapes, read_manifest, referenced_files
from .clips import ClipError, read_clip
from .ply import SplatPlyError, read_splat_ply

UNSAFE_NAME = re.compile(r"(^/|^[A-Za-z]:|\\|\x00)")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"  # onnxruntime-gpu only


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
        outside = [i.filename for i in infos if not i.filename.startswith(root)]
        if outside:
            raise BundleError(f"{path}: member {outside[0]!r} lies outside the bundle's folder {root!r}")
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


class Bundle:
    """A loaded, validated bundle. Create with ``load_bundle``; ``close()`` (or ``with``) removes the
    temporary folder of an unzipped bundle."""

    def __init__(self, root: Path, manifest: dict, splats: dict, dynamic_rows: np.ndarray, sessions: list,
                 shapes: dict[str, list[int]], tmp: Path | None, device: str = "cpu"):  # fmt: skip
        self.root = root  # folder holding manifest.json
        self.manifest = manifest
        self.splats = splats  # read_splat_ply of static.ply (activated values, file order)
        self.dynamic_rows = dynamic_rows  # [D] row of static.ply holding dynamic splat d
        self._sessions = sessions  # [(graph path, step, onnxruntime session)]
        self._shapes = {n: tuple(v) for n, v in shapes.items()}  # step output -> its checked static shape
        self._tmp = tmp
        self.device = device  # where ``render`` puts the splats ("cpu", "cuda": resolved names)

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
        ([D, C] or [D], whatever the bundle's layout: component-major ones are transposed views).
        Raises ``BundleError`` when a graph fails or returns a wrongly shaped or non-finite output."""
        inputs = self.manifest["frame"]["inputs"]
        e = len(self.expression_names)
        expr = np.zeros(e, np.float32) if expression is None else np.asarray(expression, dtype=np.float32)
        pose = np.zeros(HEAD_POSE_SIZE, np.float32) if head_pose is None else np.asarray(head_pose, dtype=np.float32)
        if expr.size != e or pose.size != HEAD_POSE_SIZE:
            raise BundleError(f"expected {e} expression weights and {HEAD_POSE_SIZE} head-pose values, got {expr.size} and {pose.size}")
        if not (np.isfinite(expr).all() and np.isfinite(pose).all()):
            raise BundleError("expression weights and head pose must be finite numbers")
        table = {"expression": expr.reshape(inputs["expression"]["shape"]), "head_pose": pose.reshape(inputs["head_pose"]["shape"])}
        for graph, step, session in self._sessions:
            feeds = {name: table[src] for name, src in step["inputs"].items()}
            try:
                values = session.run(step["outputs"], feeds)
            except Exception as err:  # onnxruntime's own exception types (Fail, RuntimeException, ...), MemoryError
                raise BundleError(f"{graph}: onnxruntime failed on this frame: {first_line(err)}") from err
            for name, value in zip(step["outputs"], values):
                table[name] = check_frame_output(graph, name, value, self._shapes[name])
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
        """Render one frame with ``sega.render`` (torch) on the bundle's ``device`` -> its ``RenderOutput``
        (rgb [H, W, 3] ..., on that device)."""
        import torch

        from sega.render import render as render_gaussians

        dev = torch.device(self.device)
        cam = self.camera(width, height) if camera is None else camera
        g = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dev) for k, v in self.gaussians(expression, head_pose).items()}
        with torch.no_grad():
            return render_gaussians(
                g["means"], g["quats"], g["scales"], g["opacities"], g["colors"],
                torch.as_tensor(cam.K, dtype=torch.float32, device=dev), torch.as_tensor(cam.viewmat, dtype=torch.float32, device=dev),
                cam.width, cam.height, torch.tensor(background, dtype=torch.float32, device=dev), backend=backend,
            )  # fmt: skip

    def clip(self, name: str, max_frames: int | None = None) -> dict:
        """A clip of the bundle by name (e.g. "talk") -> ``export.clips.read_clip`` dict, holding at
        most ``max_frames`` frames (None: all)."""
        for rel in self.manifest.get("clips", []):
            if posixpath.splitext(posixpath.basename(rel))[0] == name:
                try:
                    return read_clip(self.root / rel, max_frames=max_frames)
                except (ClipError, OSError) as err:
                    raise BundleError(f"{rel}: {err}" if isinstance(err, OSError) else str(err)) from err
        raise BundleError(f"the bundle has no clip {name!r}; it has {self.clip_names}")

    def clip_frames(self, name: str, max_frames: int | None = None):
        """Yield (expression [E], head_pose [6]) per frame of a clip (at most ``max_frames``), its
        weights re-indexed by name."""
        return self.frames_of(self.clip(name, max_frames))

    def frames_of(self, clip: dict):
        """Yield (expression [E], head_pose [6]) per frame of a ``read_clip`` dict, re-indexed by name."""
        names = self.expression_names
        index = np.asarray([names.index(n) if n in names else -1 for n in clip["expression_names"]], dtype=np.int64)  # [Ec]
        known = index >= 0
        for weights, pose in zip(clip["frames"], clip["head_pose"]):  # [Ec], [6]
            expr = np.zeros(len(names), np.float32)
            expr[index[known]] = weights[known]
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


def onnx_providers(device: str = "cpu") -> list[str]:
    """onnxruntime execution providers for a resolved device: the CUDA provider first on "cuda" when this
    onnxruntime has it (``onnxruntime-gpu``), the CPU provider always (the fallback for what CUDA lacks)."""
    import onnxruntime as ort

    cuda = str(device).split(":", 1)[0] == "cuda" and CUDA_PROVIDER in ort.get_available_providers()
    return [CUDA_PROVIDER, CPU_PROVIDER] if cuda else [CPU_PROVIDER]


def _session(data: bytes, name: str, threads: int | None, device: str = "cpu"):
    """An onnxruntime session of checked graph bytes (the bytes, not the path: nothing next to the file is read)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(data, opts, providers=onnx_providers(device))
    except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise BundleError(f"{name} is not a loadable ONNX graph: {first_line(err)}") from err


def load_bundle(path: str | Path, limits: BundleLimits = BundleLimits(), threads: int | None = None, verify_hashes: bool = True,
                device: str = "cpu") -> Bundle:  # fmt: skip
    """Validate and load a bundle folder or ``.zip`` (see the module docstring for what is refused).

    threads: onnxruntime intra-op threads (default: onnxruntime's choice). device: a resolved device name
    ("cpu", "cuda"; ``sega.devices.resolve_device``) for ``Bundle.render`` and the graphs' provider
    (``onnx_providers``).
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
        return _load_folder(root, limits, threads, verify_hashes, tmp, device)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_folder(root: Path, limits: BundleLimits, threads, verify_hashes: bool, tmp: Path | None, device: str = "cpu") -> Bundle:
    manifest = read_manifest(root, limits)
    for rel, what in referenced_files(manifest):
        _resolve(root, rel, what)
    check_files(root, manifest, limits, _resolve, verify_hashes)
    splats, dynamic_rows = _read_splats(root, manifest["splats"])
    shapes: dict[str, list[int]] = {n: spec["shape"] for n, spec in manifest["frame"]["inputs"].items()}
    sessions = []
    for step in manifest["frame"]["steps"]:
        sessions.append(_load_step(root, step, manifest["frame"], shapes, limits, threads, device))
    check_output_shapes(manifest, len(dynamic_rows))
    return Bundle(root, manifest, splats, dynamic_rows, sessions, shapes, tmp, device)


def _read_splats(root: Path, entry: dict) -> tuple[dict, np.ndarray]:
    """static.ply checked against the manifest's splats entry -> (read_splat_ply dict, dynamic_rows [D])."""
    count, dyn_count = entry["count"], entry["dynamic_count"]
    ply_path = _resolve(root, entry["file"], "splat file")
    try:
        splats = read_splat_ply(ply_path)
    except SplatPlyError as err:
        raise BundleError(str(err)) from err
    if splats["means"].shape[0] != count:
        raise BundleError(f"{ply_path.name} holds {splats['means'].shape[0]} splats, the manifest says {count}")
    prop = entry.get("dynamic_index_property", DYNAMIC_INDEX_PROPERTY)
    if prop not in splats["extra"]:
        raise BundleError(f"{ply_path.name} has no {prop} property: the viewer cannot tell dynamic splats apart")
    dyn = np.asarray(splats["extra"][prop]).astype(np.int64)  # [N]
    rows = np.flatnonzero(dyn >= 0)
    if len(rows) != dyn_count or not np.array_equal(np.sort(dyn[rows]), np.arange(dyn_count)) or (dyn < -1).any():
        raise BundleError(f"{ply_path.name}: {prop} must number the {dyn_count} dynamic splats 0..{dyn_count - 1} once each (-1 elsewhere)")
    dynamic_rows = np.empty(dyn_count, dtype=np.int64)
    dynamic_rows[dyn[rows]] = rows
    return splats, dynamic_rows


def _load_step(root: Path, step: dict, frame: dict, shapes: dict[str, list[int]], limits: BundleLimits, threads, device: str = "cpu"):
    """Check one step's graph file (size, then ``check_graph``), compare its outputs with the manifest's
    shapes, add them to ``shapes``, and open it in onnxruntime -> (graph path, step, session)."""
    rel = step["graph"]
    path = _resolve(root, rel, "graph")
    size = path.stat().st_size
    if size > limits.max_graph_bytes:
        raise BundleError(f"{rel} is {size} bytes, over the {limits.max_graph_bytes}-byte limit of a graph")
    data = path.read_bytes()
    inputs = {name: shapes[src] for name, src in step["inputs"].items()}
    got = check_graph(data, rel, inputs, step["outputs"], limits)
    want = {**step.get("output_shapes", {}), **{n: frame["outputs"][n]["shape"] for n in step["outputs"] if n in frame["outputs"]}}
    for name in step["outputs"]:
        if name in want and got[name] != want[name]:
            raise BundleError(f"{rel}: output {name!r} has shape {got[name]}, the manifest says {want[name]}")
        shapes[name] = got[name]
    return rel, step, _session(data, rel, threads, device)
