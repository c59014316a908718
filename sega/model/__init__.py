"""Learned models of SEGA (trained by scripts in ``scripts/``, shipped as small checkpoints in ``sega/data``)."""

from .vae import (
    DisplacementVAE,
    DisplacementVAEConfig,
    build_displacement_vae,
    evaluate_displacement_vae,
    expression_basis_sha256,
    load_displacement_vae,
    save_displacement_vae,
    train_displacement_vae,
)

__all__ = [
    "DisplacementVAE",
    "DisplacementVAEConfig",
    "build_displacement_vae",
    "evaluate_displacement_vae",
    "expression_basis_sha256",
    "load_displacement_vae",
    "save_displacement_vae",
    "train_displacement_vae",
]
