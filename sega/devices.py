"""Where torch work runs: the ``device`` option of builds, avatars and the commands that render.

``"auto"`` is CUDA when torch sees a GPU, else the CPU; ``"cpu"`` and ``"cuda"`` ask for one. The
resolved name (never ``"auto"``) is what artefacts record (``AvatarOptions.device``). MediaPipe, the
numba mesh rasteriser and file I/O always run on the CPU whatever the device: only torch tensors move.

Why a module of its own: the CLI, the app, the build, the runtime avatar and bundle playback all
resolve the same option the same way, and a request for CUDA on a machine without it must give the
same one-line message everywhere (``DeviceError``, a ``SegaError``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import SegaError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")  # the choices every option and --device flag offers
DEFAULT_DEVICE = "auto"


class DeviceError(SegaError):
    """A device was asked for that this machine cannot give (CUDA without a GPU torch can see)."""


def cuda_available() -> bool:
    """torch sees a CUDA GPU (a CPU build of torch, or no driver or GPU: False)."""
    import torch  # here, not at the top: the CLI imports DEVICES for its --help without loading torch

    return torch.cuda.is_available()


def resolve_device(name: str | torch.device | None = DEFAULT_DEVICE) -> str:
    """``"auto"`` (or None) -> ``"cuda"`` when ``cuda_available()`` else ``"cpu"``; ``"cpu"`` / ``"cuda"``
    (or ``"cuda:N"``, a ``torch.device``) pass through, checked. Raises ``DeviceError`` for CUDA on a
    machine without it and for unknown names."""
    text = DEFAULT_DEVICE if name is None else str(name)
    if text == "auto":
        return "cuda" if cuda_available() else "cpu"
    kind = text.split(":", 1)[0]
    if kind not in DEVICES[1:]:
        raise DeviceError(f"unknown device {text!r}; choose one of {', '.join(DEVICES)}")
    if kind == "cuda" and not cuda_available():
        import torch

        raise DeviceError(f"device {text!r} was asked for, but torch sees no CUDA GPU on this machine "
                          f"(torch {torch.__version__}); use --device cpu or auto")  # fmt: skip
    return text


def device_label(device: str | torch.device) -> str:
    """A short human name of a resolved device for status lines: ``"cpu"`` or ``"cuda (<GPU name>)"``."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return dev.type
    return f"cuda ({torch.cuda.get_device_name(dev)})"


__all__ = ["DEFAULT_DEVICE", "DEVICES", "DeviceError", "cuda_available", "device_label", "resolve_device"]
