"""Tensor creation and dtypes: the factories (``tensor``, ``zeros``, ``randn``, ...) and the dtype helpers.

The layer between the backends and the operations: ``minigrad.ops``
creates tensors from here, and ``minigrad.tensor`` (the ``Tensor`` class,
whose methods call ``minigrad.ops``) sits above both. Factories build their
results with the engine's ``make_tensor``, which makes instances of the
``Tensor`` class registered by ``minigrad.tensor``; every name here is also
importable from ``minigrad`` and ``minigrad.tensor``.

Example::

    from minigrad.creation import zeros, get_default_dtype
    z = zeros(2, 3)            # float32, on the default device
    z.dtype == get_default_dtype()
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _dtypes
from ._ext._engine import TensorBase, make_tensor
from .backends import backend_of, get_backend
from .device import Device

__all__ = [
    "tensor", "as_tensor", "from_numpy", "zeros", "ones", "full", "empty", "arange", "linspace",
    "eye", "randn", "rand", "randint", "zeros_like", "ones_like", "full_like", "empty_like", "randn_like",
    "rand_like", "get_default_dtype", "set_default_dtype",
    "float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool_",
]

float16 = np.dtype("float16")
float32 = np.dtype("float32")
float64 = np.dtype("float64")
int8 = np.dtype("int8")
int16 = np.dtype("int16")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
uint8 = np.dtype("uint8")
bool_ = np.dtype("bool")
if _dtypes.bfloat16 is not None:
    #: bfloat16 (from the optional ml_dtypes package).
    bfloat16 = _dtypes.bfloat16
else:  # minigrad.bfloat16 then raises, naming the missing package (minigrad/__init__.py)
    __all__.remove("bfloat16")

_SUPPORTED_KINDS = "biuf"


def _bfloat16_dtype():
    """bfloat16, or an error naming the package it needs."""
    if _dtypes.bfloat16 is None:
        raise TypeError("bfloat16 needs the ml_dtypes package: pip install 'minigrad-bn[bfloat16]'")
    return _dtypes.bfloat16


_default_dtype = float32


def get_default_dtype() -> np.dtype:
    """The floating dtype of tensors created from Python floats (float32 unless changed)."""
    return _default_dtype


def set_default_dtype(dtype) -> None:
    """Set the floating dtype used for Python floats and random factories."""
    global _default_dtype
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"the default dtype must be floating, got {dt}")
    _default_dtype = dt


def _check_dtype(dtype):
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype == "bool":
        return bool_
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{dtype!r} is not a dtype") from None
    if dt.kind not in _SUPPORTED_KINDS and not _dtypes.is_floating(dt):
        raise TypeError(f"unsupported dtype {dt}: minigrad supports bool, integer and floating dtypes")
    return dt


def _host_array(data, dtype):
    """Turn Python data (scalars, nested lists, NumPy arrays) into a NumPy array."""
    if isinstance(data, np.ndarray):
        arr = data if dtype is None else data.astype(dtype, copy=False)
    else:
        try:
            arr = np.asarray(data, dtype=dtype)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"could not convert {type(data).__name__} to a tensor: {exc}") from None
        if dtype is None and arr.dtype == float64 and not isinstance(data, np.generic):
            arr = arr.astype(_default_dtype)  # Python floats -> the default dtype
    return _check_array_dtype(arr)


def _check_array_dtype(arr):
    if arr.dtype.kind not in _SUPPORTED_KINDS and not _dtypes.is_floating(arr.dtype):
        raise TypeError(
            f"could not convert data of dtype {arr.dtype} to a tensor: expected numbers or booleans"
        )
    return arr


def _to_backend(data, dtype, backend, copy):
    """Convert ``data`` to an array of ``backend`` (copying when ``copy``)."""
    if isinstance(data, TensorBase):
        arr = data.array
        if data.backend is not backend:
            arr = backend.transfer(arr, data.backend)
            copy = False
        if dtype is not None and arr.dtype != dtype:
            return arr.astype(dtype)
        return arr.copy() if copy else arr
    if not isinstance(data, np.ndarray):
        owner = backend_of(data)
        if owner is backend:  # already an array of this device
            arr = _check_array_dtype(backend.asarray(data, dtype=dtype))
            return arr.copy() if copy and arr is data else arr
        if owner is not None:
            raise TypeError(f"an array of device {owner.device} cannot become a tensor on {backend.device} "
                            f"implicitly; make it a tensor on {owner.device} first, then .to({str(backend.device)!r})")
    host = _host_array(data, dtype)
    arr = backend.asarray(host)
    # A backend whose arrays live in host memory hands ``host`` back: copy it if it is the caller's memory.
    if copy and arr is host and (host is data or host.base is not None):
        arr = arr.copy()
    return arr


def _device_and_dtype(fname, args, device, dtype):
    """Sort ``to()``'s positional arguments into a device and a dtype (PyTorch: ``t.to("cuda", float64)``).

    A string is a device if it names one, else a dtype; one that is neither
    raises naming both readings (``t.to("tpu")``).
    """
    for a in args:
        if isinstance(a, Device):
            device = a
        elif isinstance(a, str):
            try:
                device = Device(a)
                continue
            except ValueError as device_error:
                try:
                    dtype = _check_dtype(a)
                except TypeError:
                    raise ValueError(f"{fname}(): {device_error} ({a!r} is not a dtype either)") from None
        else:
            dtype = a
    return device, dtype



# ------------------------------------------------------------------ factories
def tensor(data, dtype=None, device=None, requires_grad=False):
    """Create a tensor from data (a copy), like ``torch.tensor``.

    Python floats become the default dtype (float32), ints int64, bools
    bool; NumPy arrays keep their dtype unless ``dtype`` is given.
    """
    arr, backend = _new_array(data, dtype, device)
    return make_tensor(arr, backend, requires_grad)


def _new_array(data, dtype, device):
    """A fresh array holding ``data`` for a new tensor, and its backend (``Tensor(...)`` and ``tensor(...)``)."""
    if device is None and isinstance(data, TensorBase):
        device = data.device
    backend = get_backend(device)
    return _to_backend(data, _check_dtype(dtype), backend, copy=True), backend


def as_tensor(data, dtype=None, device=None):
    """Like ``tensor`` but without copying when the data is already suitable."""
    if isinstance(data, TensorBase):
        return data.to(device=device, dtype=dtype) if (device or dtype) else data
    backend = get_backend(device)
    return make_tensor(_to_backend(data, _check_dtype(dtype), backend, copy=False), backend)


def from_numpy(array: np.ndarray):
    """A CPU tensor sharing memory with a NumPy array."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    _check_dtype(array.dtype)
    return make_tensor(array, get_backend("cpu"))


def _check_sampled(dt, fname):
    if dt.kind != "f":
        raise TypeError(f"{fname} samples floating point numbers: dtype must be float16, float32 or float64, got {dt}")


def _shape_of(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0:
            raise ValueError(f"shape entries must be non-negative ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def _make(array_fn, shape, dtype, device, requires_grad):
    backend = get_backend(device)
    dt = _check_dtype(dtype) or _default_dtype
    arr = array_fn(backend, _shape_of(shape), dt)
    return make_tensor(arr, backend, requires_grad)


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    """A tensor of zeros: ``zeros(2, 3)`` or ``zeros((2, 3))``."""
    return _make(lambda b, s, d: b.xp.zeros(s, dtype=d), shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    """A tensor of ones."""
    return _make(lambda b, s, d: b.xp.ones(s, dtype=d), shape, dtype, device, requires_grad)


def empty(*shape, dtype=None, device=None, requires_grad=False):
    """An uninitialised tensor."""
    return _make(lambda b, s, d: b.xp.empty(s, dtype=d), shape, dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    """A tensor filled with ``fill_value``."""
    if dtype is None and isinstance(fill_value, bool):
        dtype = bool_
    elif dtype is None and isinstance(fill_value, numbers.Integral):
        dtype = int64
    shape = shape if isinstance(shape, (tuple, list)) else (shape,)
    return _make(lambda b, s, d: b.xp.full(s, fill_value, dtype=d), (tuple(shape),), dtype, device, requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Samples from the standard normal distribution."""
    dt = _check_dtype(dtype) or _default_dtype
    _check_sampled(dt, "randn")
    return _make(lambda b, s, d: b.standard_normal(s, d), shape, dt, device, requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Samples from U[0, 1)."""
    dt = _check_dtype(dtype) or _default_dtype
    _check_sampled(dt, "rand")
    return _make(lambda b, s, d: b.uniform(s, 0.0, 1.0, d), shape, dt, device, requires_grad)


def randint(low, high=None, size=(), dtype=None, device=None):
    """Integers drawn uniformly from ``[low, high)`` (``randint(high, size=...)`` also works)."""
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    dt = _check_dtype(dtype) or int64
    return _make(lambda b, s, d: b.randint(low, high, s, d), (tuple(size) if isinstance(size, (tuple, list)) else (size,)),
                 dt, device, False)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """Evenly spaced values in ``[start, end)``: int64 for ints, else the default float dtype."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must not be zero")
    if dtype is None:
        ints = all(isinstance(v, numbers.Integral) for v in (start, end, step))
        dtype = int64 if ints else _default_dtype
    backend = get_backend(device)
    arr = backend.xp.arange(start, end, step, dtype=_check_dtype(dtype))
    return make_tensor(arr, backend, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    backend = get_backend(device)
    arr = backend.xp.linspace(start, end, int(steps), dtype=_check_dtype(dtype) or _default_dtype)
    return make_tensor(arr, backend, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    """The identity matrix (n × m)."""
    backend = get_backend(device)
    arr = backend.xp.eye(n, m, dtype=_check_dtype(dtype) or _default_dtype)
    return make_tensor(arr, backend, requires_grad)


def _like(fn, t, dtype, device, requires_grad):
    return fn(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    """Zeros with the shape (and by default dtype and device) of ``t``."""
    return _like(zeros, t, dtype, device, requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    """Ones shaped like ``t``."""
    return _like(ones, t, dtype, device, requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False):
    """An uninitialised tensor shaped like ``t``."""
    return _like(empty, t, dtype, device, requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    """``fill_value`` everywhere, shaped like ``t``."""
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    """Standard normal samples shaped like ``t``."""
    return _like(randn, t, dtype, device, requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    """U[0, 1) samples shaped like ``t``."""
    return _like(rand, t, dtype, device, requires_grad)
