"""The avatar's per-frame branch as torch modules made for ONNX export (the bundle's two graphs).

Why separate modules (and not ``torch.onnx.export(avatar.animate)``): ``Avatar.animate`` mixes
numpy, optional hooks and the static part; the graphs must hold only what changes per frame, as
constant-shape tensor code that onnxruntime-web's wasm backend runs. These modules gather the
constants once from the avatar's ``AnimationRig`` and reuse the library's own functions
(``sega.uv.face_frames``, ``sega.geometry``, the decoders), so the graph computes what ``animate``
computes; ``tests/test_export_bundle.py`` checks them against ``animate`` on random expressions.

Graph contract (``web/README.md``, "sega-bundle" format 1); E expressions, Z feature size, D dynamic
splats:

* ``displacement_vae.onnx`` (``ExpressionFeatureGraph``): ``expression [1, E]`` (absolute weights)
  -> ``expression_feature [1, Z]`` (the displacement VAE's encoder mean).
* ``dynamic_decoder.onnx`` (``DynamicBranchGraph``): ``expression [1, E]``, ``expression_feature
  [1, Z]``, ``head_pose [1, 6]`` (axis-angle radians, translation metres) ->
  ``dynamic_means [D, 3]`` (metres, canonical head space), ``dynamic_quats [D, 4]`` (unit wxyz),
  ``dynamic_scales [D, 3]`` (standard deviations, metres), ``dynamic_colors [D, 3]`` (rgb),
  ``dynamic_opacities [D]``, ``head_matrix [4, 4]`` (row-major rigid canonical -> world: rotation
  about the head model's pivot, then translation).

Both are exported by the legacy TorchScript exporter (``dynamo=False``), opset ``OPSET``, weights
inside the file (no external data): the form onnxruntime-web loads from one fetch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from sega.gaussians import QUAT_NORM_EPS
from sega.geometry import axis_angle_to_matrix, matrix_to_quat, quat_multiply
from sega.uv import DEGENERATE_UV_DET, FRAME_NORM_EPS

OPSET = 17  # GridSample needs >= 16; 17 is what onnxruntime-web 1.30 and onnxruntime 1.31 both run fully
REL_QUAT_EPS = 1e-8  # clamp of 1 + trace: a triangle turned by 180 degrees from neutral (never met in practice)
HEAD_POSE_SIZE = 6  # rx, ry, rz (axis-angle, radians), tx, ty, tz (metres)

FEATURE_INPUTS = ("expression",)
FEATURE_OUTPUTS = ("expression_feature",)
DYNAMIC_INPUTS = ("expression", "expression_feature", "head_pose")
DYNAMIC_OUTPUTS = ("dynamic_means", "dynamic_quats", "dynamic_scales", "dynamic_colors", "dynamic_opacities", "head_matrix")


class ExpressionFeatureGraph(nn.Module):
    """expression: Tensor  # [1, E] -> expression_feature: Tensor  # [1, Z] (the avatar's ``decoders.encoder``)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, expression: Tensor) -> Tensor:
        return self.encoder(expression)


def _cross_rows(a: Tensor, b: Tensor) -> Tensor:
    """Cross product of [3, N] row-stacked vectors (x, y, z rows) -> [3, N]."""
    return torch.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _normalise_rows(a: Tensor) -> Tensor:
    """[3, N] -> unit columns (norms clamped like ``sega.uv.face_frames``)."""
    return a / (a * a).sum(0, keepdim=True).sqrt().clamp_min(FRAME_NORM_EPS)


def gather_columns(x: Tensor, index: Tensor) -> Tensor:
    """x: [C, M], index: [N] int64 -> x[:, index]: [C, N], as ONNX GatherElements on an expanded index.

    Why not ``x[:, index]``: onnxruntime's Gather along axis 1 copies element by element (~6x slower
    per element than GatherElements here), and gathering rows of [M, C] needs a Transpose, which
    onnxruntime's transpose optimiser then pushes through the whole graph into the slow [N, 3]
    broadcasting layout. The graphs are exported without constant folding, so the expanded index is
    made at session start and not stored in the file.
    """
    return torch.gather(x, 1, index[None].expand(x.shape[0], -1))


def face_frames_rows(vertices: Tensor, faces: Tensor, uv_coeffs: Tensor, uv_ok: Tensor) -> tuple[Tensor, ...]:
    """``sega.uv.face_frames`` in row layout, the fast twin used by the exported graph.

    vertices: Tensor  # [3, V] x, y, z rows (metres)
    faces: Tensor  # [3 * F] int64 corners, corner-major (all first corners, then all second, ...)
    uv_coeffs: Tensor  # [2, F] (dv2, dv1) * sign(det) of each face's UVs (``uv_frame_coefficients``)
    uv_ok: Tensor  # [1, F] bool, False where the UVs are degenerate (tangent = edge p0 -> p1)
    returns tangent, bitangent, normal: Tensor  # [3, F] each, the columns of ``face_frames``;
        then p0, e1 = p1 - p0, e2 = p2 - p0: Tensor  # [3, F] each (for surface points).
    Why rows: onnxruntime broadcasts [1, F] against [3, F] with long contiguous spans; the [F, 3]
    layout broadcasts in spans of 3 elements and is several times slower.
    """
    num_faces = faces.shape[0] // 3
    corners = gather_columns(vertices, faces)  # [3, 3F]
    p0, p1, p2 = corners[:, :num_faces], corners[:, num_faces : 2 * num_faces], corners[:, 2 * num_faces :]
    e1, e2 = p1 - p0, p2 - p0
    t = e1 * uv_coeffs[0:1] - e2 * uv_coeffs[1:2]
    n = _normalise_rows(_cross_rows(e1, e2))
    t = torch.where(uv_ok, t, e1)
    t = _normalise_rows(t - (t * n).sum(0, keepdim=True) * n)
    return t, _cross_rows(n, t), n, p0, e1, e2


def uv_frame_coefficients(face_uvs: Tensor) -> tuple[Tensor, Tensor]:
    """face_uvs: [F, 3, 2] -> (uv_coeffs [2, F], uv_ok [1, F] bool) for ``face_frames_rows``."""
    d1 = face_uvs[:, 1] - face_uvs[:, 0]
    d2 = face_uvs[:, 2] - face_uvs[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    sign = torch.sign(det)
    return torch.stack([d2[:, 1] * sign, d1[:, 1] * sign]), (det.abs() > DEGENERATE_UV_DET)[None]


def right_multiplication_rows(c: Tensor) -> Tensor:
    """c: [N, 4] wxyz -> M: [4, 4, N] with ``quat_multiply(q, c)[:, i] == sum_j M[j, i] * q[:, j]``."""
    w, x, y, z = c.unbind(-1)
    return torch.stack(
        [
            torch.stack([w, x, y, z]),  # coefficient rows of q_w
            torch.stack([-x, w, -z, y]),  # of q_x
            torch.stack([-y, z, w, -x]),  # of q_y
            torch.stack([-z, -y, x, w]),  # of q_z
        ]
    )


class DynamicBranchGraph(nn.Module):
    """The dynamic Gaussians of one frame and the head's rigid transform (see the module docstring).

    Built from an avatar with learned decoders (``Avatar.decoders``); everything it needs is copied
    into buffers here, so the exported graph depends on nothing else. Same result as
    ``Avatar.animate`` (quaternions up to sign), computed in a form that is cheap in onnxruntime:

    * row layout ([3, D] not [D, 3]; see ``face_frames_rows``), outputs transposed at the end;
    * frame rotations as quaternions *relative to the neutral frames*: q(F) = q(F F0^T) q(F0), and
      q(F0) times the texel's local rotation is a per-texel constant, so the per-frame quaternion is
      q_rel (four rows, from the trace and the skew part of F F0^T, exact while the triangle turns by
      less than 180 degrees from neutral) times a constant: four broadcast multiplies;
    * the decoder's residual map is read with its fixed bilinear taps (``sample_rows``).
    """

    def __init__(self, avatar):
        super().__init__()
        rig = avatar.rig
        if avatar.decoders is None:
            raise ValueError("the avatar has no learned decoders (format 1 avatars); rebuild it to export the dynamic branch")
        if avatar.dynamic_residual is not None:
            raise ValueError("the avatar's dynamic branch is a Python hook (dynamic_residual), which cannot be exported")
        maps = rig.dynamic_maps
        self.decoder = avatar.decoders.dynamic  # tap_index/tap_weight hold the dynamic texels' UVs
        num_e = rig.expression_basis.shape[0]
        base = rig.base_vertices  # [Vd, 3]
        self.register_buffer("base_rows", base.T.contiguous())  # [3, Vd]
        self.register_buffer("basis_rows", rig.expression_basis.reshape(num_e, -1, 3).transpose(1, 2).reshape(num_e, -1).contiguous())  # [E, 3 * Vd]
        self.register_buffer("faces", rig.faces.T.reshape(-1).contiguous())  # [3 * U] corner-major
        coeffs, ok = uv_frame_coefficients(rig.face_uvs)
        self.register_buffer("uv_coeffs", coeffs)  # [2, U]
        self.register_buffer("uv_ok", ok)  # [1, U]
        self.register_buffer("texel_face", rig.texel_face.clone())  # [D]
        self.register_buffer("texel_bary", rig.texel_bary.T.contiguous())  # [3, D]
        t0, b0, n0 = face_frames_rows(self.base_rows, self.faces, coeffs, ok)[:3]  # neutral (zero expression) frames
        self.register_buffer("neutral_frames", torch.stack([t0, b0, n0]))  # [3 columns, 3, U]
        local = maps.rotation / maps.rotation.norm(dim=-1, keepdim=True).clamp_min(QUAT_NORM_EPS)
        neutral_quat = matrix_to_quat(torch.stack([t0, b0, n0], -1).permute(1, 0, 2))[rig.texel_face]  # [D, 4]
        self.register_buffer("quat_rows", right_multiplication_rows(quat_multiply(neutral_quat, local)))  # [4, 4, D]
        self.register_buffer("offset", maps.offset.T.contiguous())  # [3, D]
        self.register_buffer("log_scale", maps.log_scale.T.contiguous())  # [3, D]
        self.register_buffer("opacity_logit", maps.opacity_logit.clone())  # [D]
        self.register_buffer("color", maps.color.T.contiguous())  # [3, D]
        self.register_buffer("pivot", rig.pivot.clone())  # [3]

    @property
    def num_dynamic(self) -> int:
        return int(self.texel_face.shape[0])

    def forward(self, expression: Tensor, expression_feature: Tensor, head_pose: Tensor):
        verts = self.base_rows + (expression @ self.basis_rows).reshape(3, -1)  # [3, Vd]
        t, b, n, p0, e1, e2 = face_frames_rows(verts, self.faces, self.uv_coeffs, self.uv_ok)  # [3, U] each
        t0, b0, n0 = self.neutral_frames.unbind(0)
        # Relative rotation R = F F0^T: trace and skew vector (R21 - R12, R02 - R20, R10 - R01).
        trace = (t * t0 + b * b0 + n * n0).sum(0, keepdim=True)  # [1, U]
        skew = _cross_rows(t0, t) + _cross_rows(b0, b) + _cross_rows(n0, n)  # [3, U]
        w = 0.5 * (1.0 + trace).clamp_min(REL_QUAT_EPS).sqrt()
        rel = torch.cat([w, skew / (4.0 * w)], 0)  # [4, U] wxyz
        per_face = gather_columns(torch.cat([t, b, n, rel, p0, e1, e2], 0), self.texel_face)  # [22, D]
        res = self.decoder.sample_rows(self.decoder.residual_map(expression_feature))[0]  # [A, D] rows sega.model.decoders.ATTRIBUTES
        offset = self.offset + res[0:3]
        bary = self.texel_bary
        points = per_face[13:16] + per_face[16:19] * bary[1:2] + per_face[19:22] * bary[2:3]  # p0 + b1 e1 + b2 e2
        means = points + per_face[0:3] * offset[0:1] + per_face[3:6] * offset[1:2] + per_face[6:9] * offset[2:3]
        q = per_face[9:13]
        quats = self.quat_rows[0] * q[0:1] + self.quat_rows[1] * q[1:2] + self.quat_rows[2] * q[2:3] + self.quat_rows[3] * q[3:4]
        quats = quats / (quats * quats).sum(0, keepdim=True).sqrt()
        scales = torch.exp(self.log_scale + res[3:6])
        opacities = torch.sigmoid(self.opacity_logit + res[6])
        colors = self.color + res[7:10]
        rot = axis_angle_to_matrix(head_pose[0, 0:3])  # [3, 3]
        trans = self.pivot - rot @ self.pivot + head_pose[0, 3:6]
        top = torch.cat([rot, trans[:, None]], dim=1)  # [3, 4]
        bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=top.dtype)
        head_matrix = torch.cat([top, bottom], dim=0)
        return means.T, quats.T, scales.T, colors.T, opacities, head_matrix


def export_graph(module: nn.Module, args: tuple, path: str | Path, input_names, output_names) -> Path:
    """Export ``module(*args)`` to ``path`` (legacy exporter, ``OPSET``, constants folded, weights inside)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation and traces constants
        torch.onnx.export(
            module, args, str(path), input_names=list(input_names), output_names=list(output_names),
            opset_version=OPSET, dynamo=False, do_constant_folding=False,
        )  # fmt: skip
    return path
