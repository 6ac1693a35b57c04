"""Backends: one object per device, owning arrays, the array namespace and the kernels.

``get_backend(device)`` returns the (cached) backend for a device name. The
CPU backend is always available; the CUDA backend is imported lazily, on the
first request for a "cuda" device, so ``import minigrad`` never needs CuPy.
"""

from __future__ import annotations

import importlib

from ..device import Device, get_default_device
from .base import Backend

__all__ = ["Backend", "get_backend", "register_backend", "backend_class", "loaded_backends"]

# Device type -> "module:Class" of its backend, imported on first use.
_BACKEND_CLASSES: dict[str, str] = {
    "cpu": "minigrad.backends.cpu:CPUBackend",
    "cuda": "minigrad.backends.cuda_backend:CUDABackend",
}
_INSTANCES: dict[Device, Backend] = {}
# Fast path: the same device string asked for again.
_BY_NAME: dict[str, Backend] = {}


def register_backend(device_type: str, path: str) -> None:
    """Declare the backend class (``"package.module:Class"``) for a device type."""
    _BACKEND_CLASSES[device_type] = path


def backend_class(device_type: str) -> type[Backend]:
    """Import and return the backend class for ``device_type`` ("cpu", "cuda")."""
    try:
        path = _BACKEND_CLASSES[device_type]
    except KeyError:
        raise ValueError(f"no backend for device type {device_type!r}; known: {sorted(_BACKEND_CLASSES)}") from None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def get_backend(device: "str | Device | None" = None) -> Backend:
    """Return the backend object for ``device`` (default: the default device)."""
    if device is None:
        device = get_default_device()
    elif isinstance(device, str):
        found = _BY_NAME.get(device)
        if found is not None:
            return found
    elif isinstance(device, Backend):
        return device
    dev = Device(device)
    backend = _INSTANCES.get(dev)
    if backend is None:
        backend = backend_class(dev.type).create(dev)
        _INSTANCES[dev] = backend
    if isinstance(device, str):
        _BY_NAME[device] = backend
    return backend


def loaded_backends() -> list[Backend]:
    """The backends instantiated so far (for re-seeding and the like)."""
    return list(_INSTANCES.values())
