"""Backends: one object per device, owning arrays, the array namespace and the kernels.

``get_backend(device)`` returns the (cached) backend for a device name. The
device types and the backend class of each are one table (in
``minigrad.device``): ``register_backend("mydev", "pkg.mod:MyBackend")`` is
all a new backend needs for ``minigrad.zeros(2, device="mydev")`` to work.
Backend classes are imported on the first request for their device, so
``import minigrad`` never needs CuPy.

Code outside this package never asks which backend it runs on; it asks
the backend (``asarray``, ``to_numpy``, ``is_array``) or uses
``backend_of``/``to_host`` for a raw array of unknown origin.
"""

from __future__ import annotations

import importlib

import numpy as np

from ..device import _DEVICE_TYPES, Device, _DeviceType, device_types, get_default_device
from .base import Backend

__all__ = ["Backend", "get_backend", "register_backend", "backend_class", "loaded_backends", "device_types",
           "backend_of", "to_host"]

_INSTANCES: dict[Device, Backend] = {}
# Fast path: the same device string asked for again.
_BY_NAME: dict[str, Backend] = {}


def register_backend(device_type: str, path: str, *, indexed: bool = True) -> None:
    """Make ``device_type`` a device type run by the backend class at ``path`` ("package.module:Class").

    The class (a ``Backend`` subclass) is imported on the first request for
    such a device. ``indexed`` says whether devices are numbered
    (``"mydev:1"``; ``"mydev"`` means ``"mydev:0"``). Registering a type
    again replaces its backend for devices requested from then on.

    Example::

        register_backend("mydev", "mypackage.backend:MyBackend")
        x = minigrad.zeros(2, device="mydev")
    """
    if not (isinstance(device_type, str) and device_type.isidentifier() and device_type == device_type.lower()):
        raise ValueError(f"register_backend: a device type must be a lower-case identifier, got {device_type!r}")
    module, sep, name = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not (sep and module and name):
        raise ValueError(f"register_backend: path must be 'package.module:Class', got {path!r}")
    _DEVICE_TYPES[device_type] = _DeviceType(path, bool(indexed))
    for dev in [d for d in _INSTANCES if d.type == device_type]:
        del _INSTANCES[dev]
    _BY_NAME.clear()


def backend_class(device_type: str) -> type[Backend]:
    """Import and return the backend class of ``device_type`` ("cpu", "cuda", ...)."""
    try:
        path = _DEVICE_TYPES[device_type].backend
    except KeyError:
        raise ValueError(f"no backend for device type {device_type!r}; known: {list(device_types())}") from None
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"the backend of device type {device_type!r}, {path}, is not a minigrad Backend subclass")
    return cls


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


Backend._lookup = staticmethod(get_backend)  # what a pickled backend is rebuilt with: the same singleton


def loaded_backends() -> list[Backend]:
    """The backends instantiated so far (for re-seeding and the like)."""
    return list(_INSTANCES.values())


def backend_of(array) -> "Backend | None":
    """The backend whose arrays ``array`` is one of, among those loaded (None for anything else).

    A NumPy array belongs to the CPU backend; a device array (a CuPy array)
    to the backend of its kind. For code that holds raw arrays of unknown
    origin, such as optimizer state in a checkpoint.

    Example::

        backend_of(numpy.ones(2)) is get_backend("cpu")   # True
        backend_of([1.0]) is None                           # True: not an array
    """
    if isinstance(array, np.ndarray):
        return get_backend("cpu")
    for backend in list(_INSTANCES.values()):
        if backend.is_array(array):
            return backend
    return None


def to_host(array) -> np.ndarray:
    """``array`` (of any loaded backend, or host data) as a NumPy array; no copy where none is needed.

    Example::

        to_host(minigrad.ones(2, device="cuda").array)   # array([1., 1.], dtype=float32)
    """
    backend = backend_of(array)
    return backend.to_numpy(array) if backend is not None else np.asarray(array)
