"""The preset registry: one list of quality presets that every command, the app and the benches offer.

A preset names a level of effort; each options dataclass turns the name into its own settings
(``AvatarOptions.preset``, ``FitOptions.preset``). Choice lists, defaults and help texts come from here.
"""

from __future__ import annotations

PRESET_NAMES = ("fast", "default", "high")  # in increasing effort
DEFAULT_PRESET = "default"  # `sega build`, `sega fit`, `sega eval`
QUICK_PRESET = "fast"  # where a quick result matters more than quality: the app's first choice, quick evals
PRESET_HELP = {
    "fast": "atlas 128, ~7k Gaussians on the head (plus the hair's), ~15 s on 2 CPU cores",
    "default": "atlas 256, ~31k Gaussians on the head (plus the hair's), ~40 s on 2 CPU cores",
    "high": "atlas 320, more iterations, a 64x64 dynamic residual map; several minutes on 2 CPU cores",
}


def check_preset(name: str) -> str:
    """``name`` if it is a preset, else ValueError naming the choices."""
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r} ({', '.join(PRESET_NAMES)})")
    return name
