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

import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import Tensor, nn

from sega.gaussians import QUAT_NORM_EPS
from sega.geometry import axis_angle_to_matrix, matrix_to_quat, quat_multiply
from sega.uv import DEGENERATE_UV_DET, FRAME_NORM_EPS

OPSET = 17  # GridSample needs >= 16; 17 is what onnxruntime-web 1.30 and onnxruntime 1.31 both run fully
REL_QUAT_EPS = 1e-8  # clamp of 1 + trace: a triangle turned by 180 degrees from neutral (never met in practice)

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
    """Cross product of [3, N] row-stacked vectors (x, y, z rows) -> [3, N].

    Row slices and ``cat`` (not ``a[1]`` and ``stack``): no Squeeze / Unsqueeze copies in the graph."""
    ax, ay, az = a[0:1], a[1:2], a[2:3]
    bx, by, bz = b[0:1], b[1:2], b[2:3]
    return torch.cat([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx])


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
    # One gather per corner (slices of a constant index), not one of [3, 3F] split afterwards (a copy).
    p0, p1, p2 = (gather_columns(vertices, faces[k * num_faces : (k + 1) * num_faces]) for k in range(3))
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
    * the decoder's residual map is read through an x-upsample (Resize) and two row taps when the
      texels sit on an atlas k times the map's resolution (``sample_rows_upsampled``; about half the
      cost of the four fixed bilinear taps, which remain the fallback);
    * the decoder's output units are folded into its last conv, so the map needs no extra Mul;
    * only the vertices that some expression moves go through the expression MatMul (about 20% of
      the dynamic vertices never move; they are ordered last and copied from ``base_rows``);
    * per-face quantities are gathered to the texels one tensor at a time (no Concat of 22 rows and
      Split afterwards: both copy the data, and in the browser those copies cost as much as the gathers).
    ``export_graph`` then gives every GatherElements int32 indices (``int32_gather_indices``).
    """

    def __init__(self, avatar):
        super().__init__()
        rig = avatar.rig
        if avatar.decoders is None:
            raise ValueError("the avatar has no learned decoders (format 1 avatars); rebuild it to export the dynamic branch")
        if avatar.dynamic_residual is not None:
            raise ValueError("the avatar's dynamic branch is a Python hook (dynamic_residual), which cannot be exported")
        maps = rig.dynamic_maps
        self.decoder = dec = avatar.decoders.dynamic  # tap_index/tap_weight, row_tap_* hold the dynamic texels' UVs
        num_e = rig.expression_basis.shape[0]
        basis = rig.expression_basis.reshape(num_e, -1, 3)  # [E, Vd, 3]
        # Vertices that some expression moves first, the others (exactly zero basis rows) last.
        moving = (basis != 0).any(-1).any(0)  # [Vd]
        order = torch.cat([torch.nonzero(moving)[:, 0], torch.nonzero(~moving)[:, 0]])
        new_index = torch.empty_like(order)
        new_index[order] = torch.arange(order.numel())
        self.num_moving = int(moving.sum())
        self.register_buffer("base_rows", rig.base_vertices[order].T.contiguous())  # [3, Vd], reordered
        self.register_buffer("basis_rows", basis[:, order[: self.num_moving]].transpose(1, 2).reshape(num_e, -1).contiguous())  # [E, 3 * Vm]
        self.register_buffer("faces", new_index[rig.faces].T.reshape(-1).contiguous())  # [3 * U] corner-major, reordered vertices
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
        head = dec.trunk.head  # last conv, with the output units folded in (the map comes out in attribute units)
        self.register_buffer("head_weight", (head.weight * dec.units[:, None, None, None]).detach().clone())
        self.register_buffer("head_bias", (head.bias * dec.units).detach().clone())

    @property
    def num_dynamic(self) -> int:
        return int(self.texel_face.shape[0])

    def residual_map(self, expression_feature: Tensor) -> Tensor:
        """``DynamicDecoder.residual_map`` with the units folded into the last conv: [1, Z] -> [1, A, R, R]."""
        dec = self.decoder
        c = dec.config
        r = c.feature_resolution
        expr_map = F.leaky_relu(dec.from_latent(expression_feature).reshape(1, c.expression_channels, r, r), c.leaky_slope)
        h = torch.cat([dec.identity[None], expr_map], dim=1)
        for level, conv in enumerate(dec.trunk.levels):
            if level > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = F.leaky_relu(conv(h), dec.trunk.slope)
        return F.conv2d(h, self.head_weight, self.head_bias, padding=1)

    def forward(self, expression: Tensor, expression_feature: Tensor, head_pose: Tensor):
        nm, num_v = self.num_moving, self.base_rows.shape[1]
        if nm == num_v:
            verts = self.base_rows + (expression @ self.basis_rows).reshape(3, nm)  # [3, Vd]
        elif nm == 0:
            verts = self.base_rows
        else:
            moved = self.base_rows[:, :nm] + (expression @ self.basis_rows).reshape(3, nm)
            verts = torch.cat([moved, self.base_rows[:, nm:]], 1)  # [3, Vd]
        t, b, n, p0, e1, e2 = face_frames_rows(verts, self.faces, self.uv_coeffs, self.uv_ok)  # [3, U] each
        t0, b0, n0 = self.neutral_frames.unbind(0)
        # Relative rotation R = F F0^T: trace and skew vector (R21 - R12, R02 - R20, R10 - R01).
        trace = (t * t0 + b * b0 + n * n0).sum(0, keepdim=True)  # [1, U]
        skew = _cross_rows(t0, t) + _cross_rows(b0, b) + _cross_rows(n0, n)  # [3, U]
        w = 0.5 * (1.0 + trace).clamp_min(REL_QUAT_EPS).sqrt()  # [1, U]; the rest of q_rel (wxyz) is skew / (4 w)
        res = self.decoder.sample_rows_upsampled(self.residual_map(expression_feature)).reshape(-1, self.num_dynamic)  # [A, D] rows sega.model.decoders.ATTRIBUTES
        offset = self.offset + res[0:3]
        bary = self.texel_bary
        face = self.texel_face
        points = gather_columns(p0, face) + gather_columns(e1, face) * bary[1:2] + gather_columns(e2, face) * bary[2:3]  # p0 + b1 e1 + b2 e2
        means = points + gather_columns(t, face) * offset[0:1] + gather_columns(b, face) * offset[1:2] + gather_columns(n, face) * offset[2:3]
        qw, qv = gather_columns(w, face), gather_columns(skew / (4.0 * w), face)  # [1, D], [3, D]
        quats = self.quat_rows[0] * qw + self.quat_rows[1] * qv[0:1] + self.quat_rows[2] * qv[1:2] + self.quat_rows[3] * qv[2:3]
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


def int32_gather_indices(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every GatherElements int32 indices (a Cast in front of its index input), in place; returns model.

    Why: torch gathers with int64 indices only, and onnxruntime's GatherElements is faster on int32 ones
    when gathers dominate (the four-tap fallback: 9.9 -> 8.6 ms per frame in onnxruntime-web, 6.6 -> 6.2
    ms native at 18k texels; within noise for the default two-row-tap graph). The indices here are
    constants expanded at session start, so onnxruntime folds the Cast there too: nothing of it runs per
    frame or is stored in the file.
    """
    nodes = []
    for node in model.graph.node:
        if node.op_type == "GatherElements":
            cast_out = f"{node.input[1]}_int32_{len(nodes)}"
            nodes.append(helper.make_node("Cast", [node.input[1]], [cast_out], to=TensorProto.INT32, name=f"{node.name}_int32_indices"))
            node.input[1] = cast_out
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def export_graph(module: nn.Module, args: tuple, path: str | Path, input_names, output_names) -> Path:
    """Export ``module(*args)`` to ``path`` (legacy exporter, ``OPSET``, constants not folded, weights
    inside, GatherElements indices int32: ``int32_gather_indices``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation and traces constants
        torch.onnx.export(
            module, args, str(path), input_names=list(input_names), output_names=list(output_names),
            opset_version=OPSET, dynamo=False, do_constant_folding=False,
        )  # fmt: skip
    model = int32_gather_indices(onnx.load(str(path)))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
