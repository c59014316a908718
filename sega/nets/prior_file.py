"""Prior files: a trained ``SegaPrior`` (and, in a training checkpoint, the optimiser's state) on disk.

A prior file is a ``.npz`` (a zip of ``.npy`` members, no pickles: read with ``allow_pickle=False``):

    header_json        uint8 [n]  JSON: format ``PRIOR_FORMAT`` / ``PRIOR_FORMAT_VERSION``, sega version, the head
                                  model (name, expression names and their basis' SHA-256), the displacement VAE whose
                                  expression features the dynamic decoder was trained on (its checkpoint SHA-256), the
                                  three network configs, the atlas resolution of the UV input, and the training run
                                  (its resolved ``TrainOptions``, seed, step, data set), plus ``extra`` (free-form)
    prior.<name>       float32    the ``SegaPrior`` state dict (persistent entries)
    optim.<name>       float32    checkpoints only: per trainable parameter ``<index>.exp_avg`` / ``.exp_avg_sq`` /
                                  ``.step`` of Adam

Reading checks, before the bytes they protect are read: the file size, the zip directory (member count,
names, declared sizes, no member that inflates past what it declares), the header's size, format, version
and head model, the configs' sizes (a hostile header must not make a huge network), then each array's
shape against the network the configs make, and finite values. Every refusal is a ``PriorFileError`` that
names the file and says what to do.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import SegaError
from ..io import file_sha256
from .decoders import DynamicDecoderOptions, StaticDecoderOptions
from .prior import IdentityEncoderOptions, SegaPrior

PRIOR_FORMAT = "sega-prior"
PRIOR_FORMAT_VERSION = 1
HEADER_MEMBER = "header_json"
MAX_PRIOR_BYTES = 256 * 2**20  # the default prior is ~0.2 MB, a checkpoint three times that; wide margin for larger configs
MAX_MEMBERS = 512  # ~60 state entries, three optimiser entries each
MAX_HEADER_BYTES = 2**20
MAX_CHANNELS = 512  # per conv level, in any config
MAX_SIDE = 1024  # feature / map / UV sides
MAX_LEVELS = 8  # conv levels per trunk or encoder
DEFLATE_SLACK_FRACTION, DEFLATE_SLACK_BYTES = 1 / 1000, 64  # deflate's worst-case growth (zlib's deflateBound)
MEMBER_NAME = re.compile(r"(header_json|prior\.[A-Za-z0-9_.]{1,128}|optim\.[A-Za-z0-9_.]{1,128})\.npy")


class PriorFileError(SegaError, ValueError):
    """A prior file cannot be used: missing, damaged, hostile, or made for another head model or format."""


@dataclass
class LoadedPrior:
    """A prior read from disk: the network (CPU, eval mode), its header, where it came from, and (checkpoints) the
    optimiser's arrays."""

    net: SegaPrior
    header: dict
    path: Path
    sha256: str
    optimiser: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def atlas_resolution(self) -> int:
        return int(self.header["atlas_resolution"])

    def provenance(self) -> dict:
        """What an avatar built from this prior records (``Avatar.provenance["prior"]``)."""
        train = self.header.get("train") or {}
        return {"file": self.path.name, "sha256": self.sha256, "format_version": self.header["format_version"],
                "step": train.get("step"), "seed": train.get("seed")}  # fmt: skip


def head_model_info(model) -> dict:
    """What a prior records of the head model it was trained for, and checks against the one it is used with."""
    from .vae import expression_basis_sha256

    return {"name": model.name, "num_expressions": int(model.num_expressions), "expression_names": list(model.expression_names),
            "expression_basis_sha256": expression_basis_sha256(model)}  # fmt: skip


def save_prior(path: str | Path, net: SegaPrior, header: dict, optimiser: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``net`` (+ optional optimiser arrays) with ``header`` (the caller's: head_model, displacement_vae,
    atlas_resolution, train, extra; format, version and configs are filled in here), atomically."""
    path = Path(path)
    full = {"format": PRIOR_FORMAT, "format_version": PRIOR_FORMAT_VERSION, "sega_version": __version__, **header,
            "configs": net.configs()}  # fmt: skip
    arrays = {HEADER_MEMBER: np.frombuffer(json.dumps(full, sort_keys=True).encode(), np.uint8)}
    arrays |= {f"prior.{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    arrays |= {f"optim.{k}": np.asarray(v, np.float32) for k, v in (optimiser or {}).items()}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    tmp.replace(path)
    return path


def _fail(path: Path, what: str) -> PriorFileError:
    return PriorFileError(f"{path}: {what}")


def _members(path: Path, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _fail(path, f"holds {len(infos)} members; a prior file has at most {MAX_MEMBERS}")
    out = {}
    for info in infos:
        if not MEMBER_NAME.fullmatch(info.filename) or info.filename[:-4] in out:
            raise _fail(path, f"unexpected member {info.filename[:80]!r} (not a prior array)")
        if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _fail(path, f"member {info.filename} is encrypted or uses an unknown compression")
        bound = info.file_size + int(info.file_size * DEFLATE_SLACK_FRACTION) + DEFLATE_SLACK_BYTES
        if info.compress_size > bound:
            raise _fail(path, f"member {info.filename} holds more compressed bytes than it declares")
        out[info.filename[:-4]] = info
    if sum(i.file_size for i in infos) > MAX_PRIOR_BYTES:
        raise _fail(path, f"declares over {MAX_PRIOR_BYTES // 2**20} MiB of arrays")
    if HEADER_MEMBER not in out or out[HEADER_MEMBER].file_size > MAX_HEADER_BYTES:
        raise _fail(path, "has no readable header; is it a prior written by `sega train`?")
    return out


def _array(path: Path, z, name: str) -> np.ndarray:
    """Member ``name`` of an open npz (``allow_pickle=False``): a pickled member is refused by name."""
    try:
        return z[name]
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise _fail(path, f"member {name} holds Python objects (a pickle); a prior holds numbers only") from None
        raise


def _check_sizes(path: Path, cfg) -> None:
    """Every int of a config within the caps before a network is made from it."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        values = v if isinstance(v, tuple) else (v,)
        if isinstance(v, tuple) and len(v) > MAX_LEVELS:
            raise _fail(path, f"config field {f.name} has {len(v)} levels (at most {MAX_LEVELS})")
        if any(isinstance(x, int) and not isinstance(x, bool) and not -1 <= x <= max(MAX_SIDE, MAX_CHANNELS) for x in values):
            raise _fail(path, f"config field {f.name} = {v} is out of range")


def _net_from_header(path: Path, header: dict) -> SegaPrior:
    try:
        configs = header["configs"]
        enc = IdentityEncoderOptions.from_dict(configs["identity_encoder"])
        sta = StaticDecoderOptions.from_dict(configs["static"])
        dyn = DynamicDecoderOptions.from_dict(configs["dynamic"])
        for cfg in (enc, sta, dyn):
            _check_sizes(path, cfg)
        return SegaPrior(enc, sta, dyn)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, PriorFileError):
            raise
        raise _fail(path, f"its network configs are not usable ({str(err)[:160]})") from None


def check_head_model(path: Path, header: dict, model) -> None:
    """The prior must have been trained for ``model`` (same name, expressions and expression basis)."""
    mine, theirs = head_model_info(model), header.get("head_model") or {}
    for key in ("name", "expression_names", "expression_basis_sha256"):
        if theirs.get(key) != mine[key]:
            what = {"name": f"the head model {theirs.get('name')!r}, this build uses {mine['name']!r}",
                    "expression_names": "another set of expressions than this head model's",
                    "expression_basis_sha256": "another version of this head model's expression basis"}[key]  # fmt: skip
            raise _fail(path, f"this prior was trained for {what}; train one for this head model")


def load_prior(path: str | Path, model=None, with_optimiser: bool = False) -> LoadedPrior:
    """Read and check a prior file (module docstring); with ``model``, also that it was trained for that head model."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "prior file not found")
    size = path.stat().st_size
    if size > MAX_PRIOR_BYTES:
        raise _fail(path, f"is {size / 2**20:.0f} MiB, over the {MAX_PRIOR_BYTES // 2**20} MiB limit for a prior file")
    try:
        with zipfile.ZipFile(path) as zf:
            members = _members(path, zf)
        with np.load(path, allow_pickle=False) as z:
            try:
                header = json.loads(_array(path, z, HEADER_MEMBER).tobytes().decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as err:
                if isinstance(err, PriorFileError):
                    raise
                raise _fail(path, f"its header is not JSON ({err})") from None
            if not isinstance(header, dict) or header.get("format") != PRIOR_FORMAT:
                raise _fail(path, "is not a sega prior (another kind of .npz)")
            if header.get("format_version") != PRIOR_FORMAT_VERSION:
                raise _fail(path, f"prior format version {str(header.get('format_version'))[:20]}, this sega reads "
                                  f"{PRIOR_FORMAT_VERSION}; train the prior again with this version")  # fmt: skip
            if model is not None:
                check_head_model(path, header, model)
            if not isinstance(header.get("atlas_resolution"), int) or not 8 <= header["atlas_resolution"] <= MAX_SIDE:
                raise _fail(path, "its header has no usable atlas_resolution")
            net = _net_from_header(path, header)
            state = net.state_dict()
            expected = {f"prior.{k}" for k in state}
            names = set(members) - {HEADER_MEMBER}
            if {n for n in names if n.startswith("prior.")} != expected:
                raise _fail(path, "its weights do not match its network configs (missing or extra arrays)")
            loaded = {}
            for k, v in state.items():
                a = _array(path, z, f"prior.{k}")
                if a.shape != tuple(v.shape) or a.dtype != np.float32 or not np.isfinite(a).all():
                    raise _fail(path, f"array prior.{k} has shape {list(a.shape)} {a.dtype} (expected {list(v.shape)} float32, finite)")
                loaded[k] = torch.from_numpy(np.array(a))
            optimiser = {}
            if with_optimiser:
                for n in sorted(names - expected):
                    a = _array(path, z, n)
                    if a.dtype != np.float32 or not np.isfinite(a).all():
                        raise _fail(path, f"array {n} is not finite float32")
                    optimiser[n[len("optim."):]] = np.array(a)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as err:
        if isinstance(err, PriorFileError):
            raise
        raise _fail(path, f"is not a readable prior file ({str(err)[:160]}); it may be truncated") from None
    net.load_state_dict(loaded)
    net.eval()
    return LoadedPrior(net, header, path, file_sha256(path), optimiser)


def decoders_from_prior(prior: LoadedPrior, model, dynamic: DynamicDecoderOptions, uv: torch.Tensor,
                        device: torch.device | str | None = None):
    """An avatar's ``AvatarDecoders`` started from ``prior`` for one person: the prior's weights, and the feature
    maps its identity encoder predicts from that person's unwrap uv: Tensor  # [6, U, U] (``uv_input``).

    dynamic: the dynamic decoder the build's options ask for (``dynamic_decoder_options``): the prior's must be
    the same (the exported per-frame graph is built for it). The expression encoder is the build's (the shipped
    displacement VAE's); the prior must have been trained on its features."""
    from .decoders import AvatarDecoders
    from .prior import prior_state_for_decoders

    net, path = prior.net, prior.path
    if net.dynamic.config != dynamic:
        raise _fail(path, f"this prior's dynamic decoder makes a {net.dynamic.config.map_resolution}² residual map from "
                          f"{net.dynamic.config.feature_resolution}² features; this preset asks for {dynamic.map_resolution}² from "
                          f"{dynamic.feature_resolution}² (build with the preset the prior was trained for, or train one for this preset)")
    decoders = AvatarDecoders.create(model, dynamic=dynamic, static=net.static.config)
    theirs = (prior.header.get("displacement_vae") or {}).get("checkpoint_sha256")
    if theirs != decoders.vae_provenance.get("checkpoint_sha256"):
        raise _fail(path, "this prior was trained on the expression features of another displacement VAE than this sega's "
                          f"({str(theirs)[:12]} vs {str(decoders.vae_provenance.get('checkpoint_sha256'))[:12]}); train it again")
    static_state, dynamic_state = prior_state_for_decoders(net, uv)
    decoders.static.load_state_dict(static_state)
    decoders.dynamic.load_state_dict(dynamic_state)
    return decoders._moved(device)


__all__ = ["PRIOR_FORMAT", "PRIOR_FORMAT_VERSION", "LoadedPrior", "PriorFileError", "check_head_model", "decoders_from_prior",
           "head_model_info", "load_prior", "save_prior"]  # fmt: skip
