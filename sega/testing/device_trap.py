"""Catch tensors made on torch's default device where a chosen device was meant, on a machine with no GPU.

A build or an avatar on CUDA fails (or copies every frame) wherever a tensor is made without
``device=`` and then meets the avatar's tensors: ``torch.zeros(n) + rig.base_vertices``. On the CPU,
where CI runs, both land on the same device and nothing shows. ``DeviceTrap`` makes the difference
visible there: inside ``with DeviceTrap():`` every tensor is *host* (made by a factory without a
device, ``torch.from_numpy``, ``.cpu()``) or *placed* (made with an explicit ``device=``, moved with
``.to(device)``, or made before the trap). An operation whose inputs mix placed tensors with a host
tensor of one element or more raises ``DeviceMixError`` naming the operation and the line that made the
host tensor: on a GPU that is the "Expected all tensors to be on the same device" error, or a hidden
copy per call. Host-only work (numpy bridges, CPU generators, the numba rasterisers) and 0-dim host
tensors, which CUDA kernels take as scalars, pass. Results take the kind of their inputs (placed if any
input is placed); ``device=t.device`` gives t's kind.

Run the code under test with ``device="cpu"`` explicitly: then every ``device=`` it passes is a placed
tensor, and every tensor it forgot one for is a host one. What it cannot see: a literal
``device="cpu"`` in product code looks placed here (grep for those), and a host tensor "moved" with
``.to(device)`` counts as placed afterwards also under its old name (on the CPU it is the same object).
"""

from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

_FACTORIES = _device_constructors()  # torch functions that take device= (zeros, tensor, as_tensor, arange, ...)
_FROM_DATA = {torch.tensor, torch.as_tensor, torch.asarray}  # ... of which these keep a tensor argument's device
_HOST_MAKERS = {torch.from_numpy, torch.frombuffer}  # always on the CPU, whatever the default device
_COPIES = {torch.Tensor.copy_}  # cross-device copies are what moving a tensor is
_STACK_DEPTH = 24  # frames searched for the code that made a host tensor (nn.Module calls nest a few deep)


class DeviceMixError(RuntimeError):
    """A host tensor (made without a device) met tensors placed on the chosen device."""


def _tensors(tree) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(tree)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


def _descriptor(func) -> str | None:
    """The attribute name when ``func`` is a tensor attribute's getter or setter (``t.device``, ``p.data = x``)."""
    owner = getattr(func, "__self__", None)
    return getattr(owner, "__name__", None) if type(owner).__name__ == "getset_descriptor" else None


def _target_device(func, args, kwargs) -> object | None:
    """The device a ``Tensor.to`` / ``.cuda`` call moves to (a device, a string or a tensor), else None."""
    if func is torch.Tensor.cuda:
        return "cuda"
    if func is not torch.Tensor.to:
        return None
    if kwargs.get("device") is not None:
        return kwargs["device"]
    for a in args[1:]:
        if isinstance(a, (str, torch.device, torch.Tensor)):
            return a
    return None


class DeviceTrap(TorchFunctionMode):
    """``with DeviceTrap():`` raises ``DeviceMixError`` where host tensors meet placed ones (module docstring).

    ``host_ops``: how many tensors were made on the host inside the trap (a sanity figure for tests)."""

    def __init__(self) -> None:
        super().__init__()
        # Host tensors -> where they were made ("file:line"). Keyed by identity (a WeakSet would compare tensors
        # with ==, elementwise).
        self._host: WeakIdKeyDictionary = WeakIdKeyDictionary()
        # ``t.device`` returns a new torch.device each time: remember whose it was, so that
        # ``torch.eye(3, device=t.device)`` is host when t is (id -> (the object, kept alive; host?)).
        self._devices: dict[int, tuple[torch.device, bool]] = {}
        self.host_ops = 0

    def __enter__(self) -> DeviceTrap:
        # nn.Parameter(data) wraps its data without a torch function call: follow it by hand, so a module
        # made without device= (parameters from torch.empty) has host parameters.
        self._parameter_new = torch.nn.Parameter.__new__
        trap, original = self, self._parameter_new

        def parameter_new(cls, data=None, requires_grad=True):
            p = original(cls, data, requires_grad)
            if isinstance(data, torch.Tensor) and trap.is_host(data):
                trap._host[p] = trap._host[data]
            return p

        torch.nn.Parameter.__new__ = staticmethod(parameter_new)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        torch.nn.Parameter.__new__ = staticmethod(self._parameter_new)
        super().__exit__(*exc)

    def is_host(self, t: torch.Tensor) -> bool:
        return t in self._host

    def _device_is_host(self, device) -> bool:
        """A device argument: None (torch's default), a ``t.device`` of a host tensor, or a host tensor (``.to(t)``)
        -> host; a device name or any other device -> placed (an explicit choice)."""
        if device is None:
            return True
        if isinstance(device, torch.Tensor):
            return self.is_host(device)
        seen = self._devices.get(id(device))
        return seen is not None and seen[0] is device and seen[1]

    def _mark(self, out, origin: str | None) -> None:
        """Mark every tensor of ``out`` host (made at ``origin``, "file:line") or, with None, placed."""
        for t in _tensors(out):
            if origin is not None:
                self._host[t] = origin
            else:
                self._host.pop(t, None)

    def _new_host(self, out, source=None) -> None:
        """Mark ``out`` host, made here, unless it is ``source`` itself: ``t.cpu()`` of a tensor already on the CPU
        returns t, which on a GPU machine would stay where it was (a copy would be host)."""
        if out is source and not self.is_host(source):
            return
        self.host_ops += 1
        self._mark(out, _caller())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
        if func in _HOST_MAKERS or func is torch.Tensor.cpu:
            out = func(*args, **kwargs)
            self._new_host(out, args[0] if func is torch.Tensor.cpu else None)
            return out
        if func in _FACTORIES:
            data = args[0] if args else kwargs.get("data")
            out = func(*args, **kwargs)
            if kwargs.get("device") is None and func in _FROM_DATA and isinstance(data, torch.Tensor):
                self._mark(out, self._host.get(data))  # as_tensor(t) keeps t's device
            elif self._device_is_host(kwargs.get("device")):
                self._new_host(out)
            else:
                self._mark(out, None)
            return out
        target = _target_device(func, args, kwargs)
        if target is not None:
            out = func(*args, **kwargs)
            if self._device_is_host(target):
                self._new_host(out, args[0])
            else:
                self._mark(out, None)  # moved to the chosen device (also a host tensor "moved" to where it is)
            return out
        attribute = _descriptor(func)
        if attribute == "device" and args and isinstance(args[0], torch.Tensor):
            out = func(*args, **kwargs)
            self._devices[id(out)] = (out, self.is_host(args[0]))
            return out
        if attribute == "data" and len(args) == 2 and all(isinstance(a, torch.Tensor) for a in args):
            out = func(*args, **kwargs)  # param.data = moved (nn.Module.to): the parameter takes the value's kind
            self._mark(args[0], self._host.get(args[1]))
            return out
        inputs = _tensors((args, kwargs))
        host = [t for t in inputs if self.is_host(t)]
        placed = [t for t in inputs if not self.is_host(t)]
        if func not in _COPIES and placed and any(t.dim() > 0 for t in host):
            made = ", ".join(f"{tuple(t.shape)} made at {self._host[t]}" for t in host if t.dim() > 0)
            raise DeviceMixError(f"{name}: host tensor(s) {made} meet tensors placed on {placed[0].device}; "
                                 "make them with device= (or .to(device))")  # fmt: skip
        out = func(*args, **kwargs)
        if inputs:
            self._mark(out, None if placed else self._host[host[0]])
        return out


def _caller() -> str:
    """ "file:line" of the innermost frame outside torch and this module: where a host tensor was made."""
    for frame in reversed(traceback.extract_stack(limit=_STACK_DEPTH)):
        path = frame.filename.replace("\\", "/")
        if "/torch/" not in path and not path.endswith("device_trap.py"):
            return f"{path}:{frame.lineno}"
    return "?"


__all__ = ["DeviceMixError", "DeviceTrap"]
