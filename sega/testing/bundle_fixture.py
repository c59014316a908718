"""A small synthetic avatar bundle ("sega-bundle" format version 2) for the web viewer's tests and bench.

Why synthetic: the viewer must be testable without a photo, a head model or a trained avatar, and
the bundle writer is developed separately. This module writes a bundle that follows the same
contract (see ``docs/bundle-format.md``), small enough for software WebGL:

* ``static.ply``: an ellipsoid "head" of ``num_splats`` Gaussians (skin colour, dark hair at the
  back and top, two dark eyes, red lips; SEGA world coordinates, metres, +Y up, +Z out of the face),
  written with ``export.ply.write_splat_ply`` and the extra int32 property ``sega_dynamic_index``
  (-1 for static splats, 0..D-1 for the ``num_dynamic`` splats around the mouth and the eyes);
* ``displacement_vae.onnx``: expression [1, E] -> expression_feature [1, Z] (a bias-free Linear + tanh,
  so the neutral expression gives a zero feature);
* ``dynamic_decoder.onnx``: (expression, expression_feature, head_pose) -> dynamic_means [D, 3],
  dynamic_quats [D, 4] (wxyz), dynamic_scales [D, 3] (linear std devs, ``updates: "scale"``, as the
  real bundle writer ``export/bundle.py`` has; left out with ``dynamic_scales=False``),
  dynamic_colors [D, 3], dynamic_opacities [D], head_matrix [4, 4]
  (row-major, rotation about ``HEAD_PIVOT`` then translation; Rodrigues written with basic ops);
  with ``component_major=True`` the splat attributes are [C, D] (``"layout": "component_major"``).
  It is a linear blend-shape model: ``jawOpen`` moves the chin/lower-lip splats down by up to
  ``JAW_DROP_M`` (and tilts them), ``mouthSmile_L/R`` lift the mouth corners, ``eyeBlink_L/R``
  paint the eye splats with a lid colour and lower them a little, ``SCALE_EXPRESSION`` (mouthFunnel)
  also grows the splats around the mouth up to ``SCALE_GROWTH`` times; every other expression moves a
  random patch by a few millimetres. At the neutral expression it reproduces ``static.ply`` exactly;
* ``clips/*.json`` (``export.clips.write_clips``) and ``manifest.json`` with SHA-256 of every file.

Both graphs are exported with the legacy exporter (``dynamo=False``, opset 17, weights inside the
file), the form onnxruntime-web loads. ``reference_outputs`` runs a bundle's steps with onnxruntime
(Python) for comparison with the browser.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from .arkit_names import (
    ARKIT_53 as ARKIT_NAMES,  # ICT-FaceKit's 53 expressions (ARKit names), model order
)

from export.bundle import (  # the contract's names, written once
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    DECODER_GRAPH,
    DYNAMIC_INDEX_PROPERTY,
    MANIFEST,
    STATIC_PLY,
    VAE_GRAPH,
    expression_groups,
)
from export.graphs import OPSET
from sega.io import file_sha256

# ---- synthetic head geometry (metres, SEGA world axes) -------------------------------------------
HEAD_RADII = np.array([0.075, 0.10, 0.09])  # ellipsoid semi-axes x, y, z, centred at the origin
HEAD_PIVOT = np.array([0.0, -0.07, -0.02])  # head pose rotates about this point (neck)
EYE_CENTRES_XY = {"L": (0.03, 0.025), "R": (-0.03, 0.025)}  # subject's left eye on +X
EYE_RADIUS = 0.012
MOUTH_CENTRE_Y = -0.05
MOUTH_HALF_WIDTH = 0.028
LIP_HALF_HEIGHT = 0.007
SKIN_RGB = (0.87, 0.67, 0.57)
HAIR_RGB = (0.25, 0.17, 0.12)
EYE_RGB = (0.10, 0.07, 0.06)
LIP_RGB = (0.62, 0.16, 0.16)
LID_RGB = (0.80, 0.58, 0.48)
OPACITY = 0.95
NORMAL_SIGMA_FRACTION = 0.25  # normal std dev / tangential std dev (flat splats on the surface)
TANGENT_SIGMA_FRACTION = 0.7  # tangential std dev / mean splat spacing

# ---- blend-shape model -------------------------------------------------------------------------------
JAW_DROP_M = 0.02  # jawOpen = 1 moves the chin down by this much
JAW_PUSH_BACK_M = 0.005
JAW_TILT_RAD = 0.15
JAW_BAND_M = 0.02  # the jaw weight ramps from 0 at the lip line to 1 this far below it
SMILE_LIFT_M = 0.006
BLINK_DROP_M = 0.002
OTHER_AMPLITUDE_M = 0.003  # every other expression moves a random patch by up to this much
OTHER_RADIUS_M = 0.015
SCALE_EXPRESSION = "mouthFunnel"  # also scales the splats around the mouth (the "scale" update kind)
SCALE_GROWTH = 2.0  # ... by up to this factor at weight 1
SCALE_RADIUS_M = 0.02
FEATURE_SIZE = 16
FEATURE_GAIN_M = 0.001  # scale of the feature -> displacement correction

# ---- default camera (three.js / OpenGL style: looks from +Z at the face) ----------------------------
CAMERA = {"position": [0.0, 0.0, 0.6], "target": [0.0, 0.0, 0.0], "fov_deg": 30.0, "up": [0.0, 1.0, 0.0]}


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1.0 - 2.0 * i / n)
    theta = np.pi * (1.0 + 5.0**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.cos(phi), np.sin(theta) * np.sin(phi)], axis=1)


def _frames_to_quats_wxyz(normals: np.ndarray) -> np.ndarray:
    """Unit quaternions (wxyz) rotating local +Z onto each normal."""
    from scipy.spatial.transform import Rotation

    helper = np.where(np.abs(normals[:, 1:2]) < 0.9, np.array([[0.0, 1.0, 0.0]]), np.array([[1.0, 0.0, 0.0]]))
    t1 = np.cross(helper, normals)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(normals, t1)
    xyzw = Rotation.from_matrix(np.stack([t1, t2, normals], axis=2)).as_quat()
    return np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)


def synthetic_head(num_splats: int, num_dynamic: int) -> dict:
    """The canonical (neutral) splats and which of them are dynamic.

    returns {"means" [N,3], "quats" [N,4] wxyz, "scales" [N,3] m, "opacities" [N], "colors" [N,3],
             "dynamic" [D] splat indices (ordered: dynamic index k is splat dynamic[k])}
    """
    if not 0 < num_dynamic < num_splats:
        raise ValueError("need 0 < num_dynamic < num_splats")
    unit = _fibonacci_sphere(num_splats)
    means = unit * HEAD_RADII
    normals = means / HEAD_RADII**2
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    a, b, c = HEAD_RADII
    area = 4.0 * np.pi * (((a * b) ** 1.6 + (a * c) ** 1.6 + (b * c) ** 1.6) / 3.0) ** (1.0 / 1.6)  # Thomsen
    tangent = TANGENT_SIGMA_FRACTION * np.sqrt(area / num_splats)
    scales = np.tile([tangent, tangent, tangent * NORMAL_SIGMA_FRACTION], (num_splats, 1))
    x, y, z = means.T
    colors = np.tile(SKIN_RGB, (num_splats, 1)).astype(np.float64)
    hair = (y > 0.06) | ((z < -0.01) & (y > -0.03))
    colors[hair] = HAIR_RGB
    front = z > 0.02
    for ex, ey in EYE_CENTRES_XY.values():
        colors[front & ((x - ex) ** 2 + (y - ey) ** 2 < EYE_RADIUS**2)] = EYE_RGB
    lips = front & (np.abs(x) < MOUTH_HALF_WIDTH * (1.0 - ((y - MOUTH_CENTRE_Y) / (2.2 * LIP_HALF_HEIGHT)) ** 2))
    lips &= np.abs(y - MOUTH_CENTRE_Y) < LIP_HALF_HEIGHT
    colors[lips] = LIP_RGB
    # Dynamic splats: the num_dynamic front splats closest to the mouth (wider than high) or an eye.
    d_mouth = np.hypot(x / 1.6, y - MOUTH_CENTRE_Y)
    d_eyes = np.min([np.hypot(x - ex, y - ey) * 1.3 for ex, ey in EYE_CENTRES_XY.values()], axis=0)
    score = np.where(front, np.minimum(d_mouth, d_eyes), np.inf)
    dynamic = np.sort(np.argsort(score, kind="stable")[:num_dynamic])
    if not np.isfinite(score[dynamic]).all():
        raise ValueError(f"num_dynamic={num_dynamic} is more than the front of the head holds")
    return {
        "means": means.astype(np.float32),
        "quats": _frames_to_quats_wxyz(normals).astype(np.float32),
        "scales": scales.astype(np.float32),
        "opacities": np.full(num_splats, OPACITY, dtype=np.float32),
        "colors": colors.astype(np.float32),
        "dynamic": dynamic,
    }


def _blendshapes(head: dict, names: Sequence[str], seed: int) -> dict:
    """Per-expression linear bases over the D dynamic splats: displacement [E,D,3], colour [E,D,3],
    opacity [E,D], rotation angle about +X [E,D], log scale factor [E,D]; and mouth_area [D] (1 away
    from the eyes)."""
    rng = np.random.default_rng(seed)
    idx = head["dynamic"]
    p = head["means"][idx].astype(np.float64)
    c0 = head["colors"][idx].astype(np.float64)
    x, y, _ = p.T
    e, d = len(names), len(idx)
    disp, col = np.zeros((e, d, 3)), np.zeros((e, d, 3))
    opa, tilt = np.zeros((e, d)), np.zeros((e, d))
    eye_w = {s: np.exp(-((np.hypot(x - ex, y - ey) / EYE_RADIUS) ** 2)) for s, (ex, ey) in EYE_CENTRES_XY.items()}
    near_eyes = np.max(list(eye_w.values()), axis=0) > 0.05
    # The jaw carries the lower lip and the chin: weight 0 at the lip line, 1 JAW_BAND_M below it.
    jaw_w = np.clip((MOUTH_CENTRE_Y - y) / JAW_BAND_M, 0.0, 1.0) * np.clip(1.0 - (np.abs(x) - 0.03) / 0.04, 0.0, 1.0)
    jaw_w[near_eyes] = 0.0
    corner_w = np.exp(-(((y - MOUTH_CENTRE_Y) / 0.015) ** 2)) * np.clip(np.abs(x) / 0.04, 0.0, 1.0)
    for k, name in enumerate(names):
        if name == "jawOpen":
            disp[k, :, 1] = -JAW_DROP_M * jaw_w
            disp[k, :, 2] = -JAW_PUSH_BACK_M * jaw_w
            tilt[k] = JAW_TILT_RAD * jaw_w
            # Splats stretched between the lip line and the chin (0 < jaw weight < 1) darken: the open mouth.
            gap_w = 4.0 * jaw_w * (1.0 - jaw_w) * (np.abs(x) < MOUTH_HALF_WIDTH)
            col[k] = -0.8 * gap_w[:, None] * c0
            opa[k] = 0.05 * gap_w
        elif name in ("mouthSmile_L", "mouthSmile_R"):
            side = 1.0 if name.endswith("_L") else -1.0  # subject's left is +X
            w = corner_w * (side * x > 0)
            disp[k, :, 0] = side * SMILE_LIFT_M * w
            disp[k, :, 1] = SMILE_LIFT_M * w
        elif name in ("eyeBlink_L", "eyeBlink_R"):
            w = eye_w[name[-1]]
            disp[k, :, 1] = -BLINK_DROP_M * w
            col[k] = w[:, None] * (np.asarray(LID_RGB) - c0)
        else:
            region = np.flatnonzero(near_eyes if name.startswith(("eye", "brow")) else ~near_eyes)
            centre = p[rng.choice(region if region.size else np.arange(d))]
            direction = rng.normal(size=3)
            w = np.exp(-((np.linalg.norm(p - centre, axis=1) / OTHER_RADIUS_M) ** 2))
            disp[k] = OTHER_AMPLITUDE_M * w[:, None] * direction / np.linalg.norm(direction)
    lnscale = np.zeros((e, d))
    if SCALE_EXPRESSION in names:  # on top of its random patch (no extra draws: the other motions stay as they were)
        w = np.exp(-((np.hypot(x, y - MOUTH_CENTRE_Y) / SCALE_RADIUS_M) ** 2)) * ~near_eyes
        lnscale[list(names).index(SCALE_EXPRESSION)] = np.log(SCALE_GROWTH) * w
    return {"disp": disp, "col": col, "opa": opa, "tilt": tilt, "lnscale": lnscale, "mouth_area": (~near_eyes).astype(np.float64)}


def _torch_modules(head: dict, names: Sequence[str], seed: int, dynamic_scales: bool = True, component_major: bool = False):
    import torch

    torch.manual_seed(seed)
    e, d = len(names), len(head["dynamic"])
    bases = _blendshapes(head, names, seed)
    rng = np.random.default_rng(seed + 1)
    idx = head["dynamic"]

    def const(a) -> torch.Tensor:
        return torch.tensor(np.asarray(a), dtype=torch.float32)

    class DisplacementVAE(torch.nn.Module):
        """expression [1, E] -> expression_feature [1, Z] (the "encoder mean"; zero at neutral)."""

        def __init__(self):
            super().__init__()
            self.register_buffer("weight", const(rng.normal(scale=1.0 / np.sqrt(e), size=(e, FEATURE_SIZE))))

        def forward(self, expression):
            return torch.tanh(expression @ self.weight)

    class DynamicDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("means0", const(head["means"][idx]))
            self.register_buffer("quats0", const(head["quats"][idx]))
            self.register_buffer("scales0", const(head["scales"][idx]))
            self.register_buffer("lnscale", const(bases["lnscale"]))
            self.register_buffer("colors0", const(head["colors"][idx]))
            self.register_buffer("opac0", const(head["opacities"][idx]))
            self.register_buffer("disp", const(bases["disp"].reshape(e, d * 3)))
            self.register_buffer("col", const(bases["col"].reshape(e, d * 3)))
            self.register_buffer("opa", const(bases["opa"]))
            self.register_buffer("tilt", const(bases["tilt"]))
            # The feature correction moves the mouth-area splats only (so jawOpen leaves the eyes alone).
            feat = rng.normal(scale=FEATURE_GAIN_M, size=(FEATURE_SIZE, d, 3)) * bases["mouth_area"][None, :, None]
            self.register_buffer("feat", const(feat.reshape(FEATURE_SIZE, d * 3)))
            self.register_buffer("pivot", const(HEAD_PIVOT))

        def forward(self, expression, expression_feature, head_pose):
            offset = expression @ self.disp + expression_feature @ self.feat  # [1, D*3]
            means = self.means0 + offset.reshape(d, 3)
            colors = torch.clamp(self.colors0 + (expression @ self.col).reshape(d, 3), 0.0, 1.0)
            opacities = torch.clamp(self.opac0 + (expression @ self.opa).reshape(d), 0.0, 1.0)
            half = 0.5 * (expression @ self.tilt).reshape(d, 1)  # rotation about +X, then the canonical one
            cw, sx = torch.cos(half), torch.sin(half)
            w2, x2, y2, z2 = self.quats0[:, 0:1], self.quats0[:, 1:2], self.quats0[:, 2:3], self.quats0[:, 3:4]
            quats = torch.cat([cw * w2 - sx * x2, cw * x2 + sx * w2, cw * y2 - sx * z2, cw * z2 + sx * y2], dim=1)
            # head_matrix: Rodrigues about the pivot, then translation (row-major 4x4).
            r, t = head_pose[0, 0:3], head_pose[0, 3:6]
            theta = torch.sqrt((r * r).sum() + 1e-12)
            k = r / theta
            zero = torch.zeros_like(theta)
            kx, ky, kz = k[0], k[1], k[2]
            kmat = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero]).reshape(3, 3)
            rot = torch.eye(3) + torch.sin(theta) * kmat + (1.0 - torch.cos(theta)) * (kmat @ kmat)
            trans = t + self.pivot - rot @ self.pivot
            top = torch.cat([rot, trans.reshape(3, 1)], dim=1)
            head_matrix = torch.cat([top, torch.tensor([[0.0, 0.0, 0.0, 1.0]])], dim=0)
            if component_major:  # [C, D] (the layout sega's own graphs write)
                means, quats, colors = means.T, quats.T, colors.T
            if not dynamic_scales:
                return means, quats, colors, opacities, head_matrix
            scales = self.scales0 * torch.exp(expression @ self.lnscale).reshape(d, 1)
            return means, quats, scales.T if component_major else scales, colors, opacities, head_matrix

    return DisplacementVAE().eval(), DynamicDecoder().eval()


def _export(module, args, path: Path, input_names, output_names) -> None:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter warns that it is deprecated
        torch.onnx.export(
            module, args, str(path), input_names=list(input_names), output_names=list(output_names),
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )  # fmt: skip


def make_test_bundle(
    directory: str | Path,
    num_splats: int = 3000,
    num_dynamic: int = 600,
    num_expressions: int = 53,
    names: Sequence[str] | None = None,
    seed: int = 0,
    dynamic_scales: bool = True,
    component_major: bool = False,
) -> Path:
    """Write a synthetic bundle into ``directory`` (created) and return its path.

    names: expression names (default: the first ``num_expressions`` of ``ARKIT_NAMES``; must include
        jawOpen, mouthSmile_L/R and eyeBlink_L/R for the designed motions to exist).
    dynamic_scales: give the decoder the output dynamic_scales [D, 3] (``updates: "scale"``).
    component_major: the splat outputs as [C, D] (``"layout": "component_major"``) instead of [D, C].
    """
    import torch

    from export.clips import CLIP_NAMES, write_clips
    from export.ply import write_splat_ply

    names = list(names) if names is not None else list(ARKIT_NAMES[:num_expressions])
    if len(names) != len(set(names)) or not names:
        raise ValueError("names must be distinct and non-empty")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    head = synthetic_head(num_splats, num_dynamic)
    dyn_index = np.full(num_splats, -1, dtype=np.int32)
    dyn_index[head["dynamic"]] = np.arange(num_dynamic, dtype=np.int32)
    write_splat_ply(
        out / STATIC_PLY, head["means"], head["quats"], head["scales"], head["opacities"], head["colors"],
        extra={DYNAMIC_INDEX_PROPERTY: dyn_index},
    )  # fmt: skip
    e = len(names)
    vae, decoder = _torch_modules(head, names, seed, dynamic_scales, component_major)
    expression = torch.zeros(1, e)
    feature = vae(expression)
    _export(vae, (expression,), out / VAE_GRAPH, ["expression"], ["expression_feature"])
    outputs = ["dynamic_means", "dynamic_quats", *(["dynamic_scales"] if dynamic_scales else []), "dynamic_colors", "dynamic_opacities", "head_matrix"]
    _export(decoder, (expression, feature, torch.zeros(1, 6)), out / DECODER_GRAPH,
            ["expression", "expression_feature", "head_pose"], outputs)  # fmt: skip
    clip_paths = write_clips(out / "clips", CLIP_NAMES, names)

    def splat_output(components: int, updates: str) -> dict:
        if component_major:
            return {"shape": [components, num_dynamic], "updates": updates, "layout": "component_major"}
        return {"shape": [num_dynamic, components], "updates": updates}

    files = [STATIC_PLY, VAE_GRAPH, DECODER_GRAPH] + [p.relative_to(out).as_posix() for p in clip_paths]
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "splats": {"file": STATIC_PLY, "count": num_splats, "dynamic_count": num_dynamic},
        "frame": {
            "inputs": {
                "expression": {"shape": [1, e], "dtype": "float32"},
                "head_pose": {"shape": [1, 6], "dtype": "float32", "meaning": "axis-angle radians (3) + translation metres (3)"},
            },
            "steps": [
                {"graph": VAE_GRAPH, "inputs": {"expression": "expression"}, "outputs": ["expression_feature"]},
                {
                    "graph": DECODER_GRAPH,
                    "inputs": {"expression": "expression", "expression_feature": "expression_feature", "head_pose": "head_pose"},
                    "outputs": outputs,
                },
            ],
            "outputs": {
                "dynamic_means": splat_output(3, "center"),
                "dynamic_quats": splat_output(4, "quaternion_wxyz"),
                **({"dynamic_scales": splat_output(3, "scale")} if dynamic_scales else {}),
                "dynamic_colors": splat_output(3, "rgb"),
                "dynamic_opacities": {"shape": [num_dynamic], "updates": "opacity"},
                "head_matrix": {"shape": [4, 4], "updates": "object_matrix_row_major"},
            },
        },
        "expressions": {"names": names, "range": [0, 1], "groups": expression_groups(names)},
        "camera": CAMERA,
        "clips": [f for f in files if f.startswith("clips/")],
        "files": {f: file_sha256(out / f) for f in files},
        "provenance": {"generator": "sega/testing/bundle_fixture.py", "synthetic": True, "seed": seed},
        "licences": [{"component": "synthetic test bundle", "licence": "MIT"}],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return out


def zip_bundle(bundle: str | Path, zip_path: str | Path, prefix: str = "") -> Path:
    """Zip a bundle folder (members under ``prefix``, e.g. "avatar/"; deflate) -> the zip path."""
    bundle, zip_path = Path(bundle), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
            zf.write(f, prefix + f.relative_to(bundle).as_posix())
    return zip_path


def read_manifest(bundle: str | Path) -> dict:
    return json.loads((Path(bundle) / MANIFEST).read_text(encoding="utf-8"))


def reference_outputs(bundle: str | Path, expression, head_pose) -> dict[str, np.ndarray]:
    """Run the bundle's per-frame steps with onnxruntime (Python) -> {tensor name: array} (every step output).

    expression: [E] or [1, E]; head_pose: [6] or [1, 6].
    """
    import onnxruntime as ort

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    frame = manifest["frame"]
    table = {
        "expression": np.asarray(expression, dtype=np.float32).reshape(frame["inputs"]["expression"]["shape"]),
        "head_pose": np.asarray(head_pose, dtype=np.float32).reshape(frame["inputs"]["head_pose"]["shape"]),
    }
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    for step in frame["steps"]:
        sess = ort.InferenceSession(str(bundle / step["graph"]), opts, providers=["CPUExecutionProvider"])
        feeds = {graph_name: table[tensor_name] for graph_name, tensor_name in step["inputs"].items()}
        for name, value in zip(step["outputs"], sess.run(step["outputs"], feeds)):
            table[name] = value
    return table


def read_static_splats(bundle: str | Path) -> dict:
    """``export.ply.read_splat_ply`` of the bundle's static.ply."""
    from export.ply import read_splat_ply

    return read_splat_ply(Path(bundle) / read_manifest(bundle)["splats"]["file"])
