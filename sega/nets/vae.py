"""SEGA's displacement VAE: expression weights -> latent *expression feature* -> UV displacement map.

Why a VAE and a UV map instead of the head model's linear blendshapes: the rest of SEGA (the
Gaussian attribute networks) wants a compact, smooth *expression feature* ``z`` to condition on,
and a displacement field laid out like the Gaussians themselves (texels of a UV atlas, see
``sega.uv``) that 2D convolutions can produce and consume. The VAE learns both from the head
model's own expression space: its encoder maps ARKit-style weights ``expr [B, E]`` to a Gaussian
posterior over ``z [B, Z]``; its decoder, a small CNN, turns ``z`` into a displacement map
``[B, 3, R, R]`` (metres, head-model xyz) over the packed atlas; sampling that map at each
vertex's atlas UV gives per-vertex displacements that are trained to match the linear
blendshapes ``expr @ expression_basis``.

Architecture choices (measured on 2 CPU cores, see scripts/train_displacement_vae.py): the
target is linear in ``expr``, and on a CPU budget of a few thousand Adam steps what limits
accuracy is how fast the fit converges, not capacity. Hence a linear encoder by default (an MLP
encoder halved the convergence speed), a decoder whose parameters sit mostly in one cheap
Linear (latent -> 32 x 32 x 16 feature map, position-specific), residual conv blocks whose last
conv starts at zero (training starts from a linear decoder), and a PixelShuffle head so the conv
work stays at 32 x 32 while the map is 128 x 128.

Everything in ``DisplacementVAE.forward`` is a standard op (Linear, Conv2d, bilinear Upsample,
PixelShuffle, LeakyReLU/SiLU, grid_sample), so the model exports to ONNX (opset >= 16 for
grid_sample).

UV -> ``grid_sample`` coordinates (written once, here). Our UVs follow ``sega.conventions``:
u right, v up, origin bottom-left, and in the map image row 0 is the top, so texel (row r,
col c) has its centre at u = (c + 0.5) / R, v = 1 - (r + 0.5) / R. ``grid_sample`` with
``align_corners=False`` puts the centre of column c at x = (2c + 1) / R - 1 and of row r at
y = (2r + 1) / R - 1 (x, y in [-1, 1], y down). Hence::

    grid_x = 2 u - 1        grid_y = 1 - 2 v

Per-vertex UVs: a vertex on a UV seam has several atlas UVs (one per island). Every vertex takes
the UV of its **first face corner** (lowest face index, then corner 0, 1, 2 in ``model.faces``
order). The training loss is on vertices, so the map only has to be right at that one UV; the
other islands' copies of a seam vertex are fitted through their own neighbouring vertices.
Vertices not used by any atlas face get zero displacement (``vertex_mask``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import HeadModelError
from ..headmodel.base import HeadModel
from .options import options_from_dict, options_to_dict

CHECKPOINT_FORMAT_VERSION = 1  # bump when the checkpoint layout changes
DEFAULT_CHECKPOINT_NAME = "ict_displacement_vae.pt"  # shipped in sega/data
M_TO_MM = 1000.0  # metres -> millimetres (losses and reports are in mm)
LOSS_DISTANCE_EPS_MM2 = 1e-8  # added under the sqrt of per-vertex squared errors (finite gradient at 0)
ACTIVE_VERTEX_THRESHOLD_M = 1e-5  # a region is expression-active if some vertex moves more than this (per unit weight)
LOGVAR_CLAMP = (-30.0, 20.0)  # keeps exp(logvar) finite during training
LOSSES = ("mse", "l2")  # vertex loss: mean squared distance (mm^2; converges fastest) or mean distance (mm)


@dataclass(frozen=True)
class DisplacementVAEOptions:
    """Architecture, atlas layout and training recipe of a ``DisplacementVAE`` (stored in checkpoints)."""

    # ---- architecture ----------------------------------------------------------------------
    num_expressions: int = 53  # E: expression weights in (ARKit 53 for ICT-FaceKit)
    latent_dim: int = 64  # Z: size of the expression feature (>= E so the linear expression space is not squeezed)
    map_resolution: int = 128  # R: side of the UV displacement map (texels)
    encoder_hidden: tuple[int, ...] = ()  # widths of SiLU hidden layers before (mu, logvar); () = linear encoder (fits fastest: the target is linear in expr)
    decoder_base_resolution: int = 32  # side of the first decoder feature map (reshaped from the Linear's output)
    decoder_channels: tuple[int, ...] = (16,)  # feature channels at base, 2x base, ... (one entry per level)
    decoder_convs_per_level: int = 2  # LeakyReLU + 3x3 conv layers in each level's residual block
    output_upscale: int = 4  # PixelShuffle factor from the last feature level to the map (1 = plain 3x3 conv to xyz)
    leaky_slope: float = 0.2  # negative slope of the decoder's LeakyReLU
    output_scale_m: float = 0.01  # the head's output times this = metres (unit-scale activations for ~cm motion)
    # ---- UV atlas the map is laid out in (sega.uv.Atlas.build options) ------------------------
    atlas_resolution: int = 128  # atlas packing resolution; = map_resolution so the cell gutters are whole map texels
    atlas_regions: tuple[str, ...] | None = None  # regions with texels; None = every region (the default atlas)
    atlas_padding_texels: int = 2  # gutter around each atlas cell (atlas texels) so bilinear taps never mix cells
    atlas_packing: str = "area"  # "area" or "grid" (see sega.uv)
    # ---- training --------------------------------------------------------------------------
    seed: int = 0  # seeds weight init and the training-sample stream
    steps: int = 3000  # optimiser steps
    batch_size: int = 16  # expressions per step
    learning_rate: float = 1e-2  # Adam peak learning rate
    final_learning_rate: float = 1e-5  # end of the cosine schedule
    warmup_steps: int = 100  # linear warm-up before the cosine decay
    kl_weight: float = 1e-4  # weight of the KL term (nats per sample) against the vertex term (mm^2 or mm)
    initial_logvar: float = -8.0  # bias of the encoder's logvar output at init (small noise from step 0, not std 1)
    max_active: int = 8  # sparse samples activate 1..max_active expressions with weights U(0, 1)
    dense_fraction: float = 0.15  # fraction of samples with every weight U(0, 1)
    anchor_fraction: float = 0.1  # fraction of samples drawn from the 53 one-hots and the zero vector
    grad_clip: float = 1.0  # global gradient-norm clip
    loss: str = "mse"  # vertex term: "mse" = mean squared distance (mm^2), "l2" = mean distance (mm)
    # ---- evaluation ------------------------------------------------------------------------
    eval_seed: int = 12345  # seed of the fixed held-out expression set (separate from training)
    eval_count: int = 500  # held-out expressions

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        produced = self.decoder_base_resolution * 2 ** (len(self.decoder_channels) - 1) * self.output_upscale
        if produced != self.map_resolution:
            raise ValueError(f"decoder makes {self.decoder_base_resolution} * 2^{len(self.decoder_channels) - 1} * "
                             f"{self.output_upscale} = {produced} texels per side, map_resolution is {self.map_resolution}")

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        return options_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DisplacementVAEOptions:
        """Inverse of ``to_dict``; unknown keys are an error (a checkpoint from a newer layout)."""
        return options_from_dict(cls, d)


# ---------------------------------------------------------------------------------------------
# head-model helpers
# ---------------------------------------------------------------------------------------------


def expression_basis_sha256(model: HeadModel) -> str:
    """Git-independent fingerprint of the expression basis a VAE was trained on.

    sha256 of the shape and the float32 bytes of ``model.expression_basis`` *rounded to float16*
    (the precision SEGA's head-model cache stores), so a freshly converted model and its cached
    copy hash alike.
    """
    basis = np.ascontiguousarray(np.asarray(model.expression_basis).astype(np.float16).astype(np.float32))
    h = hashlib.sha256()
    h.update(json.dumps(list(basis.shape)).encode())
    h.update(basis.tobytes())
    return h.hexdigest()


def vertex_atlas_uv(model: HeadModel, config: DisplacementVAEOptions) -> tuple[np.ndarray, np.ndarray]:
    """Each vertex's UV in the config's packed atlas: its first face corner's UV (module docstring).

    returns: uv [V, 2] float32 (atlas UV, origin bottom-left), in_atlas [V] bool (False: vertex of no atlas face)
    """
    # Local import: building an atlas is only needed when training or checking layouts, not to load a VAE.
    from ..uv import Atlas

    atlas = Atlas.build(model, resolution=config.atlas_resolution, regions=config.atlas_regions,
                        padding_texels=config.atlas_padding_texels, packing=config.atlas_packing)
    faces = np.asarray(model.faces, dtype=np.int64)
    corner_vertex = np.where(atlas.face_mask[:, None], faces, -1).reshape(-1)  # [3F]; -1 = not in the atlas
    corner_uv = atlas.face_atlas_uvs.reshape(-1, 2)
    order = np.flatnonzero(corner_vertex >= 0)
    # First occurrence of every vertex among the atlas corners, in face/corner order.
    verts, first = np.unique(corner_vertex[order], return_index=True)
    uv = np.zeros((model.num_vertices, 2), dtype=np.float32)
    uv[verts] = corner_uv[order[first]]
    in_atlas = np.zeros(model.num_vertices, dtype=bool)
    in_atlas[verts] = True
    return uv, in_atlas


def expression_active_vertex_mask(model: HeadModel, threshold_m: float = ACTIVE_VERTEX_THRESHOLD_M) -> np.ndarray:
    """[V] bool: vertices of the regions that move with expressions (some vertex moves > threshold per unit weight).

    For ICT-FaceKit that is everything but the eyeballs (eye gaze is not a vertex blendshape there).
    """
    moves = np.linalg.norm(np.asarray(model.expression_basis, dtype=np.float32), axis=-1).max(0) > threshold_m  # [V]
    mask = np.zeros(model.num_vertices, dtype=bool)
    for name in model.region_names:
        vmask = model.region_vertex_mask(name)
        if (moves & vmask).any():
            mask |= vmask
    return mask


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------


class DisplacementVAE(nn.Module):
    """expr [B, E] -> (mu, logvar) [B, Z] -> UV displacement map [B, 3, R, R] -> vertex displacements [B, V, 3].

    Buffers: ``vertex_uv [V, 2]`` (atlas UV per vertex, see module docstring) and ``vertex_mask [V]``
    (1 for vertices in the atlas, 0 otherwise). Both travel in the checkpoint.
    """

    def __init__(self, config: DisplacementVAEOptions, vertex_uv: Tensor, vertex_mask: Tensor | None = None):
        super().__init__()
        self.config = config
        c = config
        layers: list[nn.Module] = []
        width = c.num_expressions
        for hidden in c.encoder_hidden:
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.encoder = nn.Sequential(*layers)
        self.to_posterior = nn.Linear(width, 2 * c.latent_dim)  # -> (mu, logvar)
        with torch.no_grad():
            self.to_posterior.bias[c.latent_dim:].fill_(c.initial_logvar)

        # Decoder: a big, cheap Linear gives position-specific features at the base resolution; each
        # level upsamples them (bilinear) and adds a residual conv block whose last conv starts at
        # zero, so training starts from a *linear* decoder (fast to fit: the target is linear in expr)
        # and the convs add detail. The head's PixelShuffle gives each texel of an upscale x upscale
        # block its own output weights.
        ch = c.decoder_channels
        self.from_latent = nn.Linear(c.latent_dim, ch[0] * c.decoder_base_resolution**2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.skips = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for level, c_out in enumerate(ch):
            c_in = ch[max(level - 1, 0)]
            self.skips.append(nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1))
            layers: list[nn.Module] = []
            for k in range(c.decoder_convs_per_level):
                layers += [nn.LeakyReLU(c.leaky_slope), nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, padding=1)]
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
            self.blocks.append(nn.Sequential(*layers))
        head: list[nn.Module] = [nn.Conv2d(ch[-1], 3 * c.output_upscale**2, 3, padding=1)]
        if c.output_upscale > 1:
            head.append(nn.PixelShuffle(c.output_upscale))
        self.head = nn.Sequential(*head)

        vertex_uv = torch.as_tensor(vertex_uv, dtype=torch.float32)
        if vertex_mask is None:
            vertex_mask = torch.ones(vertex_uv.shape[0])
        self.register_buffer("vertex_uv", vertex_uv)  # [V, 2] atlas UV of each vertex
        self.register_buffer("vertex_mask", torch.as_tensor(vertex_mask, dtype=torch.float32))  # [V] 1 = in the atlas

    @property
    def num_vertices(self) -> int:
        return int(self.vertex_uv.shape[0])

    def encode(self, expr: Tensor) -> tuple[Tensor, Tensor]:
        """expr: Tensor  # [B, E] weights -> (mu: [B, Z], logvar: [B, Z])."""
        mu, logvar = self.to_posterior(self.encoder(expr)).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """z: Tensor  # [B, Z] -> disp_map: Tensor  # [B, 3, R, R] metres, channels xyz (head-model space)."""
        c = self.config
        h = self.from_latent(z).reshape(z.shape[0], c.decoder_channels[0], c.decoder_base_resolution, c.decoder_base_resolution)
        for level, (skip, block) in enumerate(zip(self.skips, self.blocks)):
            if level > 0:
                h = self.upsample(h)
            h = skip(h) + block(h)
        return self.head(h) * c.output_scale_m

    def vertex_displacements(self, disp_map: Tensor, vertex_uv: Tensor | None = None) -> Tensor:
        """Bilinear samples of the map at vertex UVs.

        disp_map: Tensor  # [B, 3, R, R]
        vertex_uv: Tensor  # [V, 2] atlas UVs; default the model's own ``vertex_uv`` (then masked by ``vertex_mask``)
        returns: Tensor  # [B, V, 3] metres
        """
        own = vertex_uv is None
        uv = self.vertex_uv if own else vertex_uv
        grid = torch.stack([2.0 * uv[:, 0] - 1.0, 1.0 - 2.0 * uv[:, 1]], dim=-1)  # module docstring
        grid = grid[None, None].expand(disp_map.shape[0], 1, -1, -1)  # [B, 1, V, 2]
        out = F.grid_sample(disp_map, grid, mode="bilinear", padding_mode="border", align_corners=False)  # [B, 3, 1, V]
        out = out[:, :, 0].transpose(1, 2)  # [B, V, 3]
        return out * self.vertex_mask[:, None] if own else out

    def forward(self, expr: Tensor) -> Tensor:
        """Deterministic inference (z = mu). expr: Tensor  # [B, E] -> Tensor  # [B, V, 3] metres."""
        mu, _ = self.encode(expr)
        return self.vertex_displacements(self.decode(mu))

    def expression_feature(self, expr: Tensor) -> Tensor:
        """The latent expression feature (posterior mean). expr: [B, E] -> [B, Z]."""
        return self.encode(expr)[0]


def build_displacement_vae(model: HeadModel, config: DisplacementVAEOptions) -> DisplacementVAE:
    """A freshly initialised VAE for ``model`` (weights from torch's global RNG; seed it first)."""
    if config.num_expressions != model.num_expressions:
        raise ValueError(f"config has {config.num_expressions} expressions, model {model.name} has {model.num_expressions}")
    uv, in_atlas = vertex_atlas_uv(model, config)
    return DisplacementVAE(config, torch.from_numpy(uv), torch.from_numpy(in_atlas.astype(np.float32)))


# ---------------------------------------------------------------------------------------------
# data: random expressions and their linear-blendshape targets
# ---------------------------------------------------------------------------------------------


def sample_expressions(n: int, config: DisplacementVAEOptions, generator: torch.Generator) -> Tensor:
    """Random expression vectors [n, E] float32 in [0, 1] (the training / held-out distribution).

    Each row is, independently: an *anchor* (one of the E one-hots or the zero vector) with
    probability ``anchor_fraction``; *dense* (every weight U(0, 1)) with ``dense_fraction``;
    otherwise *sparse*: k ~ U{1..max_active} distinct expressions with weights U(0, 1).
    All randomness comes from ``generator`` in a fixed order, so a seed fixes the set.
    """
    e = config.num_expressions
    kind = torch.rand(n, generator=generator)
    weights = torch.rand(n, e, generator=generator)
    # Sparse: keep the k expressions with the smallest random keys (a uniform random subset).
    k = torch.randint(1, config.max_active + 1, (n, 1), generator=generator)
    rank = torch.rand(n, e, generator=generator).argsort(dim=1).argsort(dim=1)
    sparse = weights * (rank < k)
    anchor_id = torch.randint(0, e + 1, (n,), generator=generator)  # e = the zero vector
    anchors = torch.cat([torch.eye(e), torch.zeros(1, e)])[anchor_id]
    is_anchor = kind < config.anchor_fraction
    is_dense = (kind >= config.anchor_fraction) & (kind < config.anchor_fraction + config.dense_fraction)
    out = torch.where(is_anchor[:, None], anchors, torch.where(is_dense[:, None], weights, sparse))
    return out.float()


def heldout_expressions(config: DisplacementVAEOptions, count: int | None = None) -> Tensor:
    """The fixed held-out set [count, E] (seed ``eval_seed``; the first k rows of any larger count are the same)."""
    count = config.eval_count if count is None else count
    gen = torch.Generator().manual_seed(config.eval_seed)
    return torch.cat([sample_expressions(1, config, gen) for _ in range(count)])


def basis_tensor(model: HeadModel) -> Tensor:
    """model.expression_basis as float32 [E, V*3] (targets = expr @ basis)."""
    return torch.as_tensor(np.asarray(model.expression_basis, dtype=np.float32)).reshape(model.num_expressions, -1)


# ---------------------------------------------------------------------------------------------
# training and evaluation
# ---------------------------------------------------------------------------------------------


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over Z, mean over the batch. mu, logvar: [B, Z] -> scalar."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1).mean()


def vertex_error_mm(pred: Tensor, target: Tensor) -> Tensor:
    """Per-vertex Euclidean error in mm. pred, target: [B, V, 3] metres -> [B, V]."""
    return ((pred - target) * M_TO_MM).square().sum(-1).add(LOSS_DISTANCE_EPS_MM2).sqrt()


def _learning_rate(step: int, config: DisplacementVAEOptions) -> float:
    """Linear warm-up, then cosine decay from learning_rate to final_learning_rate."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    t = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.final_learning_rate + 0.5 * (config.learning_rate - config.final_learning_rate) * (1.0 + math.cos(math.pi * t))


def train_displacement_vae(
    model: HeadModel,
    config: DisplacementVAEOptions,
    log: Callable[[int, dict], None] | None = None,
    log_every: int = 100,
) -> DisplacementVAE:
    """Train a VAE on ``model``'s expression space (CPU, deterministic for a given seed and thread count).

    Loss per step: the vertex term (``config.loss``: mean squared or mean Euclidean per-vertex
    distance in mm between the decoded map sampled at the vertices, z drawn from the posterior, and
    ``expr @ expression_basis``) plus ``kl_weight`` * KL. Adam, linear warm-up then cosine decay.
    log: optional callable(step, {"loss", "vertex_loss", "kl", "lr", "seconds"}) every ``log_every`` steps.
    """
    torch.manual_seed(config.seed)
    vae = build_displacement_vae(model, config)
    basis = basis_tensor(model)  # [E, V*3]
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(vae.parameters(), lr=config.learning_rate)
    start = time.perf_counter()
    vae.train()
    for step in range(config.steps):
        lr = _learning_rate(step, config)
        for group in opt.param_groups:
            group["lr"] = lr
        expr = sample_expressions(config.batch_size, config, gen)  # [B, E]
        target = (expr @ basis).reshape(config.batch_size, -1, 3)  # [B, V, 3]
        mu, logvar = vae.encode(expr)
        logvar = logvar.clamp(*LOGVAR_CLAMP)
        z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=gen)
        pred = vae.vertex_displacements(vae.decode(z))
        if config.loss == "mse":
            err = ((pred - target) * M_TO_MM).square().sum(-1).mean()
        else:
            err = vertex_error_mm(pred, target).mean()
        kl = kl_divergence(mu, logvar)
        loss = err + config.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(vae.parameters(), config.grad_clip)
        opt.step()
        if log is not None and (step % log_every == 0 or step == config.steps - 1):
            log(step, {"loss": loss.item(), "vertex_loss": err.item(), "kl": kl.item(), "lr": lr,
                       "seconds": time.perf_counter() - start})
    vae.eval()
    return vae


@torch.no_grad()
def evaluate_displacement_vae(vae: DisplacementVAE, model: HeadModel, expr: Tensor, batch_size: int = 50) -> dict:
    """Deterministic (z = mu) vertex errors against the linear blendshapes, in mm.

    expr: Tensor  # [N, E]
    returns: {"mean_mm_active", "mean_mm_all", "max_mm", "relative_active", "target_mean_mm_active", "count"};
    "active" = vertices of expression-active regions (``expression_active_vertex_mask``), "relative" =
    summed error / summed target displacement over those vertices.
    """
    basis = basis_tensor(model)
    active = torch.from_numpy(expression_active_vertex_mask(model))
    err_sum_all = err_sum_act = tgt_sum_act = 0.0
    err_max = 0.0
    for chunk in expr.split(batch_size):
        target = (chunk @ basis).reshape(chunk.shape[0], -1, 3)
        err = vertex_error_mm(vae(chunk), target)  # [b, V]
        tgt = (target * M_TO_MM).norm(dim=-1)
        err_sum_all += float(err.double().sum())
        err_sum_act += float(err[:, active].double().sum())
        tgt_sum_act += float(tgt[:, active].double().sum())
        err_max = max(err_max, float(err.max()))
    n = expr.shape[0]
    return {
        "mean_mm_active": err_sum_act / (n * int(active.sum())),
        "mean_mm_all": err_sum_all / (n * vae.num_vertices),
        "max_mm": err_max,
        "relative_active": err_sum_act / max(tgt_sum_act, 1e-12),
        "target_mean_mm_active": tgt_sum_act / (n * int(active.sum())),
        "count": n,
    }


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


def default_checkpoint_path() -> Path:
    """The checkpoint shipped with SEGA (ICT-FaceKit): ``sega/data/ict_displacement_vae.pt``."""
    return Path(__file__).resolve().parents[1] / "data" / DEFAULT_CHECKPOINT_NAME


def save_displacement_vae(vae: DisplacementVAE, path: str | Path, provenance: dict, half: bool = True) -> Path:
    """Write ``{"format_version", "config", "provenance", "state_dict"}`` with ``torch.save``.

    Only plain dicts / lists / numbers / strings and tensors, so ``torch.load(weights_only=True)``
    reads it. half: store floating weights as float16 (the UV buffer stays float32).
    """
    state = {}
    for key, t in vae.state_dict().items():
        t = t.detach().cpu().clone()
        if half and t.is_floating_point() and key != "vertex_uv":
            t = t.half()
        state[key] = t
    payload = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": vae.config.to_dict(),
        "provenance": json.loads(json.dumps(provenance)),
        "state_dict": state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # saving to a buffer keeps the file's bytes independent of its name (torch names the zip root after it)
    torch.save(payload, buf)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


def read_displacement_vae_checkpoint(path: str | Path | None = None) -> dict:
    """The raw checkpoint dict (weights_only load); ``path`` defaults to the shipped one."""
    path = Path(path) if path is not None else default_checkpoint_path()
    if not path.is_file():
        raise HeadModelError(f"displacement VAE checkpoint {path} not found; train one with scripts/train_displacement_vae.py")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise HeadModelError(f"displacement VAE checkpoint {path} has format {payload.get('format_version')}, "
                             f"expected {CHECKPOINT_FORMAT_VERSION}")
    return payload


def load_displacement_vae(model: HeadModel, path: str | Path | None = None) -> DisplacementVAE:
    """Rebuild a VAE from a checkpoint's stored config and weights (float32, eval mode).

    Refuses (HeadModelError) when ``model``'s expression basis is not the one the checkpoint was
    trained on (``expression_basis_sha256``), since its displacements would then be wrong.
    """
    payload = read_displacement_vae_checkpoint(path)
    prov = payload["provenance"]
    want = prov.get("expression_basis_sha256")
    have = expression_basis_sha256(model)
    if want != have:
        raise HeadModelError(
            f"displacement VAE {path or default_checkpoint_path()} was trained on another expression basis "
            f"(checkpoint {str(want)[:12]}..., model '{model.name}' {have[:12]}...); "
            "retrain it for this head model with scripts/train_displacement_vae.py"
        )
    config = DisplacementVAEOptions.from_dict(payload["config"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    if state["vertex_uv"].shape[0] != model.num_vertices:
        raise HeadModelError(f"checkpoint has {state['vertex_uv'].shape[0]} vertices, model has {model.num_vertices}")
    vae = DisplacementVAE(config, state["vertex_uv"], state["vertex_mask"])
    vae.load_state_dict(state)
    vae.provenance = prov  # plain attribute: the checkpoint's provenance dict, for reports
    return vae.eval()


def with_overrides(config: DisplacementVAEOptions, **overrides) -> DisplacementVAEOptions:
    """``dataclasses.replace`` that ignores None values (for CLI flags left unset)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
