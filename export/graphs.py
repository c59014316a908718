"""The avatar's per-frame branch as torch modules made for ONNX export (the bundle's two graphs).

Why separate modules (and not ``torch.onnx.export(avatar.animate)``): ``Avatar.animate`` mixes
numpy, optional hooks and the static part; the graphs must hold only what changes per frame, as
constant-shape tensor code that onnxruntime-web's wasm backend runs. These modules gather the
constants once from the avatar's ``AnimationRig`` and reuse the library's own functions
(``sega.uv.face_frames``, ``sega.geometry``, the decoders), so the graph computes what ``animate``
computes; ``tests/test_export_bundle.py`` checks them against ``animate`` on random expressions.

Graph contract (``docs/bundle-format.md``, "sega-bundle" format 2); E expressions, Z feature size, D dynamic
splats:

* ``displacement_vae.onnx`` (``ExpressionFeatureGraph``): ``expression [1, E]`` (absolute weights)
  -> ``expression_feature [1, Z]`` (the displacement VAE's encoder mean).
* ``dynamic_decoder.onnx`` (``DynamicBranchGraph``): ``expression [1, E]``, ``expression_feature
  [1, Z]``, ``head_pose [1, 6]`` (axis-angle radians, translation metres) ->
  ``dynamic_means [3, D]`` (metres, canonical head space), ``dynamic_quats [4, D]`` (unit wxyz),
  ``dynamic_scales [3, D]`` (standard deviations, metres), ``dynamic_colors [3, D]`` (rgb),
  ``dynamic_opacities [D]``, ``head_matrix [4, 4]`` (row-major rigid canonical -> world: rotation
  about the head model's pivot, then translation). The splat attributes are *component-major*
  (``"layout": "component_major"`` in the manifest, format 2): component c of splat k at c * D + k,
  the graph's own row layout, so it ends without four Transposes; the viewer's per-splat write loop
  reads either layout at the same cost.

Both are exported by the legacy TorchScript exporter (``dynamo=False``), opset ``OPSET``, weights
inside the file (no external data): the form onnxruntime-web loads from one fetch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import Tensor, nn

from sega.gaussians import AREA_EPS, QUAT_NORM_EPS
from sega.geometry import axis_angle_to_matrix, matrix_to_quat, quat_multiply
from sega.uv import FRAME_NORM_EPS, frames_from_edges

OPSET = 17  # GridSample needs >= 16; 17 is what onnxruntime-web 1.30 and onnxruntime 1.31 both run fully

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


ROW_ROLL_1 = (1, 2, 0)  # row i -> row i + 1 (mod 3): (a x b)_i = a_{i+1} b_{i+2} - a_{i+2} b_{i+1}
ROW_ROLL_2 = (2, 0, 1)  # row i -> row i + 2 (mod 3)


def _cross_rows(a: Tensor, b: Tensor) -> Tensor:
    """Cross product of [3, N] row-stacked vectors (x, y, z rows) -> [3, N].

    Rolled rows (Gather along axis 0: three contiguous row copies each) rather than six row slices,
    six products of single rows and a Concat: fewer, larger nodes and one copy less of the result."""
    r1, r2 = list(ROW_ROLL_1), list(ROW_ROLL_2)
    return a[r1] * b[r2] - a[r2] * b[r1]


def _sum_rows(a: Tensor) -> Tensor:
    """[3, N] -> [1, N] column sums, as a MatMul with a row of ones: onnxruntime's ReduceSum over the
    leading axis is about 3x slower than that (native and wasm)."""
    return _ONES_3.to(a.dtype) @ a


_ONES_3 = torch.ones(1, 3)


def _normalise_rows(a: Tensor) -> Tensor:
    """[3, N] -> unit columns (norms clamped like ``sega.uv.face_frames``)."""
    return a / _sum_rows(a * a).sqrt().clamp_min(FRAME_NORM_EPS)


def gather_columns(x: Tensor, index: Tensor) -> Tensor:
    """x: [C, M], index: [N] int64 -> x[:, index]: [C, N], as ONNX GatherElements on an expanded index.

    Why not ``x[:, index]``: onnxruntime's Gather along axis 1 copies element by element (~6x slower
    per element than GatherElements here), and gathering rows of [M, C] needs a Transpose, which
    onnxruntime's transpose optimiser then pushes through the whole graph into the slow [N, 3]
    broadcasting layout. The graphs are exported without constant folding, so the expanded index is
    made at session start and not stored in the file.
    """
    return torch.gather(x, 1, index[None].expand(x.shape[0], -1))


def _frame_rows(frames: Tensor) -> Tensor:
    """frames [N, 3, 3] (columns t, b, n) -> [9, N] rows t_xyz, b_xyz, n_xyz (the graph's frame layout)."""
    return frames.permute(2, 1, 0).reshape(9, -1).contiguous()


def _split_columns(x: Tensor, sizes: list[int]) -> list[Tensor | None]:
    """x [C, sum(sizes)] -> one [C, size] block per size (None for empty ones), in one Split node."""
    kept = [n for n in sizes if n > 0]
    blocks = iter(x.split(kept, 1) if len(kept) > 1 else (x,))
    return [next(blocks) if n > 0 else None for n in sizes]


def face_frames_rows(e1: Tensor, e2: Tensor, uv_coeffs: Tensor, uv_ok: Tensor | None,
                     normal: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """``sega.uv.face_frames`` in row layout, the fast twin used by the exported graph.

    e1, e2: Tensor  # [3, F] edges p1 - p0, p2 - p0 of each face (metres), x, y, z rows
    uv_coeffs: Tensor  # [2, F] (dv2, dv1) * sign(det) of each face's UVs (``sega.uv.uv_frame_coefficients``)
    uv_ok: Tensor  # [1, F] bool, False where the UVs are degenerate (tangent = edge p0 -> p1);
        None when no face is degenerate (the graph then has no Where)
    normal: Tensor  # [3, F] the unit normals (e1 x e2 normalised) when the caller has them already, else None
    returns tangent, bitangent, normal: Tensor  # [3, F] each, the columns of ``face_frames``.
    Why rows: onnxruntime broadcasts [1, F] against [3, F] with long contiguous spans; the [F, 3]
    layout broadcasts in spans of 3 elements and is several times slower.
    """
    t = e1 * uv_coeffs[0:1] - e2 * uv_coeffs[1:2]
    n = _normalise_rows(_cross_rows(e1, e2)) if normal is None else normal
    if uv_ok is not None:
        t = torch.where(uv_ok, t, e1)
    t = _normalise_rows(t - _sum_rows(t * n) * n)
    return t, _cross_rows(n, t), n


def face_corners_rows(motion: Tensor, faces: Tensor, base_p0: Tensor, base_e1: Tensor, base_e2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Corner point and edges of each face, from the vertices' blendshape motion.

    motion: Tensor  # [3, V] vertex offsets from the neutral (metres, rows x, y, z)
    faces: Tensor  # [3 * F] int64 corners, corner-major (all first corners, then all second, ...)
    base_p0, base_e1, base_e2: Tensor  # [3, F] the neutral corner p0 and edges p1 - p0, p2 - p0
    returns p0, e1, e2: Tensor  # [3, F]
    Why edges as neutral edge + motion difference (not p1 - p0 of the moved vertices): a vertex is
    ~0.1 m from the origin, so float32 rounds it to ~1e-8 m, which is 1e-4 of the edge of a 0.15 mm
    triangle (teeth, lids) and shows in its frame; the neutral edges are computed in float64 once,
    and the motion is millimetres, rounded a hundred times finer.
    """
    num_faces = faces.shape[0] // 3
    # One gather per corner (slices of a constant index), not one of [3, 3F] split afterwards (a copy).
    m0, m1, m2 = (gather_columns(motion, faces[k * num_faces : (k + 1) * num_faces]) for k in range(3))
    return base_p0 + m0, base_e1 + (m1 - m0), base_e2 + (m2 - m0)


EXPRESSION_BLOCKS = 8  # dense blocks of the per-frame expression MatMul (ICT: ~0.55 of the dense volume)


def expression_blocks(support: np.ndarray, num_blocks: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group vertices into at most ``num_blocks`` dense blocks of the expression MatMul.

    support: [V, E] bool, True where expression e moves vertex v. Returns [(vertex ids [V_k],
    expression ids [E_k])], every vertex in one block, E_k the expressions that move some vertex of
    block k. Why: ARKit shapes are local (a blink moves no lip), so half of the dense [E, 3V] basis is
    zeros; block k costs E_k x V_k instead of E x V_k, and the MatMul is the largest single cost of the
    per-frame graph. Greedy agglomeration (deterministic): one group per distinct support pattern, then
    the smallest group is merged into the one whose cost |union| x size grows least, until
    ``num_blocks`` remain.
    """
    patterns, inverse = np.unique(support, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sets = patterns.copy()  # [G, E]
    sizes = np.bincount(inverse, minlength=len(patterns))
    members = [[g] for g in range(len(patterns))]
    while len(sizes) > max(1, num_blocks):
        small = int(np.lexsort((np.arange(len(sizes)), sizes))[0])  # smallest group (lowest id on ties)
        union = (sets | sets[small]).sum(1)
        growth = union * (sizes + sizes[small]) - sets.sum(1) * sizes - sets[small].sum() * sizes[small]
        growth[small] = np.iinfo(growth.dtype).max
        into = int(np.argmin(growth))
        sets[into] |= sets[small]
        sizes[into] += sizes[small]
        members[into] += members[small]
        keep = np.arange(len(sizes)) != small
        sets, sizes = sets[keep], sizes[keep]
        members = [m for g, m in enumerate(members) if g != small]
    out = []
    for group, cols in zip(members, sets):
        verts = np.flatnonzero(np.isin(inverse, group))
        out.append((verts, np.flatnonzero(cols)))
    return out


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
    ``Avatar.animate`` (quaternions up to sign), computed in a form that is cheap in onnxruntime, where
    what costs is the data each node reads and writes (a node itself costs ~0.3 us native, ~0.8 us in
    wasm; an elementwise op on [3, 15k] ~5 us / ~7 us; a GatherElements of the same ~30 us / ~60 us):

    * row layout ([3, D] not [D, 3]; see ``face_frames_rows``), kept in the outputs (component-major);
    * the expression MatMul only over the vertices some expression moves, in dense blocks over the
      expressions that move each block (``expression_blocks``);
    * the rig orders the dynamic texels (``sega.avatar.dynamic_texel_order``): first one texel per
      moving triangle, in triangle order, so the per-triangle arrays *are* theirs (no gather); then the
      other moving texels, which gather their triangle's arrays; then the texels on triangles no
      expression moves, whose point, frame and rotation are constants (only the residual offset moves
      them);
    * triangle edges as neutral edge + motion difference (``face_corners_rows``, as ``Avatar.animate``),
      which keeps the frames of sub-millimetre triangles accurate in float32;
    * frame rotations as quaternions *relative to the neutral frames*: q(F) = q(F F0^T) q(F0), and
      q(F0) times the texel's local rotation is a per-texel constant, so the per-frame quaternion is
      q_rel times a constant (four broadcast multiply-adds). q_rel is taken unnormalised, as
      (1 + trace, skew part) of F F0^T = 4 w q_rel, exact while the triangle turns by less than 180
      degrees from neutral: the final normalisation removes the factor, so no square root;
    * sums over the three components as MatMuls with constant 0/1 matrices (onnxruntime's ReduceSum
      over the leading axis is ~3x slower), cross products from rolled rows (two row Gathers, not nine
      slices and a Concat);
    * the decoder's residual map is read through an x-upsample (Resize) and two row taps when the
      texels sit on an atlas k times the map's resolution (``sample_rows_upsampled``; about half the
      cost of the four fixed bilinear taps, which remain the fallback);
    * the decoder's output units are folded into its last conv.
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
        support = (basis != 0).any(-1)  # [E, Vd]: expression e moves vertex v
        moving = support.any(0)  # [Vd]
        # Moving vertices first, grouped into blocks by the expressions that move them; then the others.
        blocks = expression_blocks(support[:, moving].T.numpy(), EXPRESSION_BLOCKS)
        moving_ids = torch.nonzero(moving)[:, 0]
        order = torch.cat([moving_ids[torch.as_tensor(np.concatenate([v for v, _ in blocks]))], torch.nonzero(~moving)[:, 0]])
        new_index = torch.empty_like(order)
        new_index[order] = torch.arange(order.numel())
        self.num_moving = int(moving.sum())
        self.block_expressions = [cols.tolist() for _, cols in blocks]  # expression columns of each block
        self.block_sizes = [int(v.size) for v, _ in blocks]
        start = 0
        for k, (verts, cols) in enumerate(blocks):
            ids = order[start : start + verts.size]
            start += verts.size
            # [E_k, 3 * V_k]: x rows of the block's vertices, then y, then z (a [3, V_k] reshape per frame).
            self.register_buffer(f"basis_block_{k}", basis[torch.as_tensor(cols)][:, ids].transpose(1, 2).reshape(len(cols), -1).contiguous())
        self.register_buffer("still_rows", torch.zeros(3, order.numel() - self.num_moving))  # [3, Vd - Vm] zero motion

        # Texels: the first num_moving_texels lie on triangles with a moving vertex (the rig's order).
        nt = self.num_moving_texels = int(rig.num_moving)
        if not bool(moving[rig.texel_tri[:nt]].any(1).all()) or bool(moving[rig.texel_tri[nt:]].any()):
            raise ValueError("the rig's dynamic texels are not ordered moving first (AnimationRig.num_moving)")
        # Faces of the moving texels, renumbered 0..Um-1; their corners in the reordered vertex numbering.
        used, texel_face = torch.unique(rig.texel_face[:nt], return_inverse=True)
        faces = new_index[rig.faces[used]]  # [Um, 3]
        self.register_buffer("faces", faces.T.reshape(-1).contiguous())  # [3 * Um] corner-major
        # The rig's UV coefficients and neutral edges (float64 differences, rounded once: sega.uv.frames_from_edges).
        coeffs, ok = rig.face_uv_coeffs[used].T.contiguous(), rig.face_uv_ok[used][None]
        self.register_buffer("uv_coeffs", coeffs)  # [2, Um]
        self.uv_any_degenerate = not bool(ok.all())
        self.register_buffer("uv_ok", ok)  # [1, Um]
        texel_face = texel_face.reshape(-1)
        num_faces = self.num_primary = int(used.numel())  # Um: the first Um texels are one per face, in face order
        if not torch.equal(texel_face[:num_faces], torch.arange(num_faces)):
            raise ValueError("the rig's moving texels do not start with one texel per triangle (sega.avatar.dynamic_texel_order)")
        self.register_buffer("extra_face", texel_face[num_faces:].clone())  # [De] faces of the other moving texels
        bary = rig.texel_bary.T.contiguous()  # [3, D]
        self.register_buffer("bary_primary", bary[1:3, :num_faces].contiguous())  # [2, Um] (b1, b2)
        self.register_buffer("bary_extra", bary[1:3, num_faces:nt].contiguous())  # [2, De]
        # Neutral corner point and edges of the moving faces (the rig's).
        self.register_buffer("base_p0", rig.base_vertices[rig.faces[used, 0]].T.contiguous())  # [3, Um]
        self.register_buffer("base_e1", rig.face_edges[used, 0].T.contiguous())  # [3, Um]
        self.register_buffer("base_e2", rig.face_edges[used, 1].T.contiguous())
        # Neutral frames of every dynamic texel in float64 (fixed ones included: their frame never changes);
        # the first Um texels are one per face, in face order, so theirs are the faces' neutral frames.
        all_frames64 = frames_from_edges(rig.face_edges[:, 0].double(), rig.face_edges[:, 1].double(), rig.face_uv_coeffs.double(),
                                         rig.face_uv_ok)[rig.texel_face]  # [D, 3, 3] columns t, b, n  # fmt: skip
        all_frames = all_frames64.float()
        self.register_buffer("neutral_frames", _frame_rows(all_frames[:num_faces]))  # [9, Um] rows t_xyz, b_xyz, n_xyz
        # Constant operands of the relative rotation: skew = sum_c (c0 x c) = sum_c c0[r1] c[r2] - c0[r2] c[r1].
        self.roll_1 = [3 * c + r for c in range(3) for r in ROW_ROLL_1]  # rows of [9, U] rolled by one within each column
        self.roll_2 = [3 * c + r for c in range(3) for r in ROW_ROLL_2]
        self.register_buffer("skew_a", self.neutral_frames[self.roll_1].contiguous())  # [9, Um]
        self.register_buffer("skew_b", self.neutral_frames[self.roll_2].contiguous())  # [9, Um]
        column_sum = torch.eye(3).repeat(1, 3)  # [3, 9]: row r sums rows r, 3 + r, 6 + r (over the three columns)
        self.register_buffer("column_sum", column_sum)
        self.register_buffer("trace_sum", torch.cat([torch.ones(1, 9), torch.zeros(3, 9)]))  # [4, 9]: products -> (trace, 0, 0, 0)
        self.register_buffer("skew_sum", torch.cat([torch.zeros(1, 9), column_sum]))  # [4, 9]: crossed -> (0, skew)
        self.register_buffer("q_one", torch.tensor([[1.0], [0.0], [0.0], [0.0]]))  # [4, 1]: the 1 of 1 + trace
        self.register_buffer("ones_4", torch.ones(1, 4))
        self.offset_rows = [c for c in range(3) for _ in range(3)]  # offset component c for frame rows 3c .. 3c + 2
        local = maps.rotation / maps.rotation.norm(dim=-1, keepdim=True).clamp_min(QUAT_NORM_EPS)
        texel_quat = quat_multiply(matrix_to_quat(all_frames64), local.double()).float()  # [D, 4] = rotation at the neutral expression
        self.register_buffer("quat_rows_primary", right_multiplication_rows(texel_quat[:num_faces]))  # [4, 4, Um]
        self.register_buffer("quat_rows_extra", right_multiplication_rows(texel_quat[num_faces:nt]))  # [4, 4, De]
        self.register_buffer("fixed_quats", texel_quat[nt:].T.contiguous())  # [4, Dk]
        pts = (rig.base_vertices[rig.texel_tri[nt:]] * rig.texel_bary[nt:, :, None]).sum(1)  # [Dk, 3]
        self.register_buffer("fixed_points", (pts + (all_frames[nt:] * maps.offset[nt:, None, :]).sum(-1)).T.contiguous())  # [3, Dk]
        self.register_buffer("fixed_frames", _frame_rows(all_frames[nt:]))  # [9, Dk] rows t_xyz, b_xyz, n_xyz
        self.register_buffer("offset_primary", maps.offset[:num_faces].T.contiguous())  # [3, Um]
        self.register_buffer("offset_extra", maps.offset[num_faces:nt].T.contiguous())  # [3, De]
        self.register_buffer("log_scale", maps.log_scale.T.contiguous())  # [3, D]
        self.register_buffer("log_scale_cap", rig.dynamic_scale_cap.T.contiguous())  # [1, D] (sega.avatar.scale_cap)
        # Splats grow with their triangle's stretch (sega.gaussians.stretch_log_scale), compared as squared doubled
        # areas: k = (|e1 x e2|^2 / rest^2)^(1/4), two Sqrts (no Log: bundle_checks.EXPORTER_OPS stays as it is).
        self.max_stretch = float(rig.max_stretch)
        if self.max_stretch > 1.0 and nt > 0:
            self.register_buffer("rest_area2_sq", (rig.face_rest_area2[used].clamp_min(AREA_EPS) ** 2)[None].contiguous())  # [1, Um]
            self.register_buffer("no_stretch", torch.ones(1, rig.texel_face.numel() - nt))  # [1, Dk] the never-moving texels
        self.register_buffer("opacity_logit", maps.opacity_logit.clone())  # [D]
        self.register_buffer("color", maps.color.T.contiguous())  # [3, D]
        # The lids' colours move to their closed colours with each eye's blink past its fitted weight
        # (sega.avatar.lids.LidClosing): w = clip((b - b_fit) / (1 - b_fit), 0, 1) per eye, spread to the texels by
        # a [2, D] one-hot MatMul (no gather), then clip((w - onset) / span, 0, 1) per texel (the lids change early
        # in the blink, the eyeballs late).
        closing = rig.lid_closing
        self.closing = closing is not None
        if self.closing:
            self.closing_columns = closing.columns.tolist()  # the two blink channels' expression columns
            self.register_buffer("closing_fitted", closing.fitted[None].clone())  # [1, 2]
            self.register_buffer("closing_inv_range", (1.0 / (1.0 - closing.fitted))[None])  # [1, 2]
            self.register_buffer("closing_eye_rows", F.one_hot(closing.eye, 2).T.float().contiguous())  # [2, D]
            self.register_buffer("closing_color", closing.color.T.contiguous())  # [3, D]
            self.register_buffer("closing_onset", closing.onset[None].clone())  # [1, D]
            self.register_buffer("closing_inv_span", (1.0 / closing.span)[None])  # [1, D]
        self.register_buffer("pivot", rig.pivot.clone())  # [3]
        head = dec.trunk.head  # last conv, with the output units folded in (the map comes out in attribute units)
        self.register_buffer("head_weight", (head.weight * dec.units[:, None, None, None]).detach().clone())
        self.register_buffer("head_bias", (head.bias * dec.units).detach().clone())
        bound = dec.bound  # residual saturation b tanh(x / b) (sega.nets.decoders.saturate), as [1, A, 1, 1] b and 1 / b
        self.saturated = bound is not None
        if self.saturated:
            self.register_buffer("bound", bound.reshape(1, -1, 1, 1).clone())
            self.register_buffer("inv_bound", (1.0 / bound).reshape(1, -1, 1, 1))

    @property
    def num_dynamic(self) -> int:
        return int(self.log_scale.shape[1])

    def residual_map(self, expression_feature: Tensor) -> Tensor:
        """``DynamicDecoder.residual_map`` with the units folded into the last conv: [1, Z] -> [1, A, R, R]."""
        dec = self.decoder
        c = dec.config
        r = c.feature_resolution
        expr_map = F.leaky_relu(dec.from_latent(expression_feature).reshape(1, c.expression_channels, r, r), c.leaky_slope)
        # (Precomputing the identity channels' half of the first conv as a bias map was tried: the
        # per-pixel Add keeps onnxruntime's first upsample out of its fast NCHWc layout, a wash overall.)
        h = torch.cat([dec.identity[None], expr_map], dim=1)
        for level, conv in enumerate(dec.trunk.levels):
            if level > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = F.leaky_relu(conv(h), dec.trunk.slope)
        out = F.conv2d(h, self.head_weight, self.head_bias, padding=1)
        return self.bound * torch.tanh(out * self.inv_bound) if self.saturated else out

    def forward(self, expression: Tensor, expression_feature: Tensor, head_pose: Tensor):
        nt = self.num_moving_texels
        motion = self.vertex_motion(expression)  # [3, Vd]
        res = self.decoder.sample_rows_upsampled(self.residual_map(expression_feature)).reshape(-1, self.num_dynamic)  # [A, D] rows sega.nets.decoders.ATTRIBUTES
        res_offset = res[0:3]
        log_scale = torch.minimum(self.log_scale + res[3:6], self.log_scale_cap)  # [3, D]
        opacities = torch.sigmoid(self.opacity_logit + res[6])
        colors = self.color + res[7:10]
        if self.closing:
            blinks = expression[:, self.closing_columns]  # [1, 2]
            eye_w = ((blinks - self.closing_fitted) * self.closing_inv_range).clamp(0.0, 1.0)
            texel_w = (((eye_w @ self.closing_eye_rows) - self.closing_onset) * self.closing_inv_span).clamp(0.0, 1.0)
            colors = colors + self.closing_color * texel_w  # [3, D]
        if nt == 0:  # no texel moves: constant points, frames and rotations
            fixed_means = self.fixed_points + self.column_sum @ (self.fixed_frames * res_offset[self.offset_rows])
            return self._outputs(fixed_means, self.fixed_quats, torch.exp(log_scale), colors, opacities, head_pose)
        p0, e1, e2 = face_corners_rows(motion, self.faces, self.base_p0, self.base_e1, self.base_e2)  # [3, Um] each
        scales = torch.exp(log_scale)
        normal = None
        if self.max_stretch > 1.0:  # e1 x e2 once: its squared length is the stretch's, its direction the frames' normal
            c = _cross_rows(e1, e2)
            c_sq = _sum_rows(c * c)  # [1, Um]
            normal = c / c_sq.sqrt().clamp_min(FRAME_NORM_EPS)  # = _normalise_rows(c)
            k = (c_sq / self.rest_area2_sq).clamp(1.0, self.max_stretch**4).sqrt().sqrt()  # [1, Um]
            parts = [k] + ([gather_columns(k, self.extra_face)] if nt > self.num_primary else [])
            parts += [self.no_stretch] if nt < self.num_dynamic else []
            scales = scales * torch.cat(parts, 1)
        t, b, n = face_frames_rows(e1, e2, self.uv_coeffs, self.uv_ok if self.uv_any_degenerate else None, normal)  # [3, Um] each
        frames = torch.cat([t, b, n])  # [9, Um]: rows t_xyz, b_xyz, n_xyz
        # Relative rotation R = F F0^T as the unnormalised quaternion (1 + trace, skew) = 4 w q_rel:
        # trace = sum_c c0 . c, skew = sum_c c0 x c = sum_c c0[r1] c[r2] - c0[r2] c[r1], as two MatMuls
        # that sum the nine rows into the four components.
        products = frames * self.neutral_frames  # [9, Um]
        crossed = self.skew_a * frames[self.roll_2] - self.skew_b * frames[self.roll_1]  # [9, Um]
        q_rel = self.trace_sum @ products + self.skew_sum @ crossed + self.q_one  # [4, Um]
        um = self.num_primary
        res_p, res_e, res_k = _split_columns(res_offset, [um, nt - um, self.num_dynamic - nt])  # primary, other moving, never-moving texels
        # Primary texels (one per face, in face order): the face arrays are theirs, no gather.
        means_p, quats_p = self._bind(p0, e1, e2, frames, q_rel, self.bary_primary, self.offset_primary + res_p, self.quat_rows_primary)
        parts_m, parts_q = [means_p], [quats_p]
        if nt > um:  # the other moving texels gather their face's quantities
            f = self.extra_face
            means_e, quats_e = self._bind(*(gather_columns(x, f) for x in (p0, e1, e2, frames, q_rel)),
                                          self.bary_extra, self.offset_extra + res_e, self.quat_rows_extra)  # fmt: skip
            parts_m.append(means_e)
            parts_q.append(quats_e)
        quats = torch.cat(parts_q, 1) if len(parts_q) > 1 else quats_p
        quats = quats / (self.ones_4 @ (quats * quats)).sqrt()
        means = torch.cat(parts_m, 1) if len(parts_m) > 1 else means_p
        if nt < self.num_dynamic:
            fixed_means = self.fixed_points + self.column_sum @ (self.fixed_frames * res_k[self.offset_rows])  # [3, Dk]
            means = torch.cat([means, fixed_means], 1)
            quats = torch.cat([quats, self.fixed_quats], 1)
        return self._outputs(means, quats, scales, colors, opacities, head_pose)

    def vertex_motion(self, expression: Tensor) -> Tensor:
        """expression [1, E] -> [3, Vd] blendshape offsets of the (reordered) vertices, one dense MatMul
        per block of ``expression_blocks`` over the expressions that move its vertices."""
        parts = []
        for k, cols in enumerate(self.block_expressions):
            weights = expression if len(cols) == expression.shape[1] else expression[:, cols]  # [1, E_k]
            parts.append((weights @ getattr(self, f"basis_block_{k}")).reshape(3, self.block_sizes[k]))
        if self.still_rows.shape[1]:
            parts.append(self.still_rows)
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]

    def _bind(self, p0, e1, e2, frames, q_rel, bary, offset, quat_rows):
        """Means [3, N] and unnormalised quaternions [4, N] of N texels from their faces' corner point
        p0, edges e1, e2 [3, N], frames [9, N] and relative quaternions [4, N]; bary [2, N] (b1, b2),
        offset [3, N] local offsets (metres), quat_rows [4, 4, N] (``right_multiplication_rows``)."""
        points = p0 + e1 * bary[0:1] + e2 * bary[1:2]  # p0 + b1 e1 + b2 e2
        means = points + self.column_sum @ (frames * offset[self.offset_rows])  # + sum_c frame_c offset_c
        qw, qx, qy, qz = q_rel.split(1, 0)  # [1, N] each
        return means, quat_rows[0] * qw + quat_rows[1] * qx + quat_rows[2] * qy + quat_rows[3] * qz

    def _outputs(self, means, quats, scales, colors, opacities, head_pose):
        rot = axis_angle_to_matrix(head_pose[0, 0:3])  # [3, 3]
        trans = self.pivot - rot @ self.pivot + head_pose[0, 3:6]
        top = torch.cat([rot, trans[:, None]], dim=1)  # [3, 4]
        bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=top.dtype)
        head_matrix = torch.cat([top, bottom], dim=0)
        return means, quats, scales, colors, opacities, head_matrix  # component-major: [3 | 4, D], [D]


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
