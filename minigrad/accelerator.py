"""``minigrad.accelerator``: the device-agnostic questions of PyTorch's ``torch.accelerator``.

minigrad's only accelerator is CUDA (through CuPy), so these answer for it;
they never import CuPy before they are asked. The device-selection idiom of
PyTorch scripts runs unchanged:

Example::

    >>> import minigrad as mg
    >>> device = mg.accelerator.current_accelerator() if mg.accelerator.is_available() else "cpu"
    >>> x = mg.zeros(3, device=device)
"""

from __future__ import annotations

from . import cuda as _cuda
from .device import Device, get_default_device

__all__ = ["is_available", "current_accelerator", "device_count", "current_device_index", "synchronize"]


def is_available() -> bool:
    """True if an accelerator (a usable CUDA device) is present."""
    return _cuda.is_available()


def current_accelerator(check_available: bool = False) -> Device | None:
    """The accelerator as a ``Device`` (``device('cuda:0')``, whose ``.type`` is ``"cuda"``), or None.

    minigrad answers None whenever no CUDA device is usable, so
    ``check_available`` (PyTorch's switch for builds with a compiled-in but
    absent accelerator) changes nothing and is accepted for compatibility.
    """
    return Device("cuda") if _cuda.is_available() else None


def device_count() -> int:
    """Number of accelerator devices (0 when there is none)."""
    return _cuda.device_count()


def current_device_index() -> int:
    """Index of the current accelerator device: the default device's index when it is a GPU, else 0."""
    dev = get_default_device()
    return dev.index if dev.type == "cuda" else 0


def synchronize(device=None) -> None:
    """Wait for all work queued on the accelerator (``device``, or the current one)."""
    _cuda.synchronize(device)
