"""The networks of SEGA (nn.Modules, no losses inside): the displacement VAE and its expression encoder, the static
and dynamic decoders. Trained by ``scripts/`` (the VAE) or fitted per avatar (the decoders); checkpoints ship in ``sega/data``."""

from .vae import (
    DisplacementVAE,
    DisplacementVAEOptions,
    build_displacement_vae,
    evaluate_displacement_vae,
    expression_basis_sha256,
    load_displacement_vae,
    save_displacement_vae,
    train_displacement_vae,
)

__all__ = [
    "DisplacementVAE",
    "DisplacementVAEOptions",
    "build_displacement_vae",
    "evaluate_displacement_vae",
    "expression_basis_sha256",
    "load_displacement_vae",
    "save_displacement_vae",
    "train_displacement_vae",
]
