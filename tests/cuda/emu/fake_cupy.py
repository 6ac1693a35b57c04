"""A NumPy-backed stand-in for the ``cupy`` module whose ``RawModule`` runs
minigrad's real CUDA sources in the g++ emulation (``cuda_emu.h``).

``CUDABackend(device, xp=FakeCupy())`` then runs its real host code (launch
configuration, validation, argument packing) and the real kernels on the
CPU. Device arrays are ``DeviceArray``s (NumPy memory) that keep CuPy's rules
where they differ from NumPy's, so host/device mix-ups fail here as on a GPU:

* an operation (a ufunc, a NumPy function, a ``FakeCupy`` function other
  than ``array``/``asarray``, a kernel launch) given a host ``numpy.ndarray``
  raises TypeError, as CuPy does; results are device arrays, reductions and
  0-d operations included (CuPy returns 0-d arrays, not NumPy scalars);
* ``a[key] = value`` with a device value follows NumPy's broadcasting after
  dropping the value's leading unit axes (CuPy >= 11 does the same); a host
  array or list under basic indexing may only be a scalar (CuPy fills with
  it and raises ValueError otherwise), and so for ``fill``.

Not emulated: ``numpy.asarray(device_array)`` and other implicit copies to
the host (CuPy refuses them) still work here.

Each launch is checked more strictly than a GPU would:

* every argument must have the exact C type of the kernel's parameter
  (signature taken from the compiled template: ``np.float32`` for float,
  ``np.int64`` for long long, ...; Python ints/floats are refused), arrays
  must be C-contiguous with the pointee's dtype;
* arrays are copied into buffers with 64-byte guard zones filled with NaN
  bytes (NaN as float16, bfloat16, float32 and float64: reads out of bounds
  poison results, writes out of bounds are reported), keeping each array's
  alignment modulo 256;
* arrays passed as pointers-to-const must come back unchanged;
* a grid or block dimension of 0, or a block over 1024 threads, is an error.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import types
from pathlib import Path

import numpy as np

EMU_DIR = Path(__file__).resolve().parent
GUARD = 64
_FILL = 0xFF  # all-ones bytes: NaN as float32/float64, -1 as integers

_SCALAR_CODES = {
    "f": np.float32,
    "d": np.float64,
    "i": np.int32,
    "q": np.int64,
    "Q": np.uint64,
}
_CTYPES = {
    "f": ctypes.c_float,
    "d": ctypes.c_double,
    "i": ctypes.c_int,
    "q": ctypes.c_longlong,
    "Q": ctypes.c_ulonglong,
}
# The element codes of pointer parameters: the scalar ones and the half types (never passed by value).
_DTYPE_CODE = {np.dtype(v): k for k, v in _SCALAR_CODES.items()}
_DTYPE_CODE[np.dtype(np.float16)] = "e"
try:
    import ml_dtypes
except ImportError:  # no bfloat16 arrays without it
    pass
else:
    _DTYPE_CODE[np.dtype(ml_dtypes.bfloat16)] = "E"

_BUILD_LOCK = threading.Lock()


class EmulationError(RuntimeError):
    """A launch broke a rule the GPU would (silently or not) break on."""


# ---------------------------------------------------------------- device arrays
def _is_host(a) -> bool:
    return isinstance(a, np.ndarray) and not isinstance(a, DeviceArray)


def _refuse_host(args, kwargs=None) -> None:
    """CuPy's TypeError for a host array among an operation's operands (one level of lists included)."""
    for a in list(args) + list((kwargs or {}).values()):
        for b in a if isinstance(a, (list, tuple)) else (a,):
            if _is_host(b):
                raise TypeError(f"Unsupported type {type(b)}: a host numpy.ndarray given to a CuPy operation")


def _base(a):
    return a.view(np.ndarray) if isinstance(a, DeviceArray) else a


def _to_device(r):
    """Results as device arrays: ndarrays viewed, NumPy scalars made 0-d arrays (tuples element-wise)."""
    if isinstance(r, np.ndarray):
        return r if isinstance(r, DeviceArray) else r.view(DeviceArray)
    if isinstance(r, np.generic):
        return np.asarray(r).view(DeviceArray)
    if isinstance(r, tuple):
        return tuple(_to_device(x) for x in r)
    if isinstance(r, list):
        return [_to_device(x) for x in r]
    return r


def _basic_index(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, (int, np.integer, slice)) for k in keys)


class DeviceArray(np.ndarray):
    """An array on the emulated GPU: NumPy memory, CuPy's operand and assignment rules."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _refuse_host(inputs + (out or ()), kwargs)
        if out is not None:
            kwargs["out"] = tuple(_base(o) for o in out)
        result = getattr(ufunc, method)(*(_base(a) for a in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _to_device(result)

    def __array_function__(self, func, types, args, kwargs):
        _refuse_host(args, kwargs)
        args = [[_base(b) for b in a] if isinstance(a, (list, tuple)) else _base(a) for a in args]
        return _to_device(func(*args, **{k: _base(v) for k, v in kwargs.items()}))

    def __setitem__(self, key, value):
        if _basic_index(key) and (_is_host(value) or isinstance(value, (list, tuple))):
            if np.ndim(value) != 0:  # CuPy's ndarray.fill
                raise ValueError(f"non-scalar numpy.ndarray cannot be used for fill (a host value of shape "
                                 f"{np.shape(value)} assigned to a device array; move it to the device first)")
        # A device value: NumPy's rule (leading unit axes dropped, then broadcast) is CuPy's since v11.
        np.ndarray.__setitem__(self.view(np.ndarray), key, _base(value))

    def fill(self, value):
        if np.ndim(value) != 0:
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        np.ndarray.fill(self, value)


class _Ufunc:
    """A NumPy ufunc as ``cupy.<ufunc>``: host operands refused, device results."""

    def __init__(self, ufunc):
        self._ufunc = ufunc

    def __call__(self, *args, **kwargs):
        _refuse_host(args, kwargs)
        return self._ufunc(*args, **kwargs)

    def __getattr__(self, name):  # reduce, at, accumulate, outer, and plain attributes
        attr = getattr(self._ufunc, name)
        return _Ufunc(attr) if callable(attr) else attr


# CuPy's functions that take host data (the copies to the device).
_FROM_HOST = {"array", "asarray", "asanyarray"}


def _device_function(name, fn):
    def call(*args, **kwargs):
        if name not in _FROM_HOST:
            _refuse_host(args, kwargs)
            return _to_device(fn(*args, **kwargs))
        r = fn(*(_base(a) for a in args), **kwargs)
        if args and _is_host(args[0]) and np.may_share_memory(r, args[0]):
            r = r.copy()  # host data is copied to the device, never shared
        return _to_device(r)

    call.__name__ = name
    return call


def compiler() -> "str | None":
    """The C++ compiler used for the emulation (g++), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _cache_dir() -> Path:
    root = os.environ.get("MINIGRAD_EMU_CACHE") or os.path.join(tempfile.gettempdir(), "minigrad-emu-cache")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


# -fno-gnu-unique: two emulation libraries loaded in one process (a mutated and
# the real kernel source) must not share their static objects, e.g. the kernel
# registry, through GNU_UNIQUE symbols.
CXXFLAGS = ["-std=c++20", "-O1", "-fPIC", "-shared", "-w", "-fno-gnu-unique"]


def build(code: str, names: list[str]) -> ctypes.CDLL:
    """Compile ``code`` (a kernel source as handed to NVRTC) with the emulation; cached by content."""
    regs = "\n".join(f'static emu::Registrar mg_emu_reg_{i}("{n}", &{n});' for i, n in enumerate(names))
    unit = f'{code}\n#include "emu_launch.h"\n{regs}\n'
    headers = "".join((EMU_DIR / h).read_text() for h in ("cuda_emu.h", "emu_launch.h", "cuda_fp16.h", "cuda_bf16.h"))
    key = hashlib.sha256((unit + headers + " ".join(CXXFLAGS)).encode()).hexdigest()[:24]
    so = _cache_dir() / f"mg-emu-{key}.so"
    with _BUILD_LOCK:
        if not so.exists():
            cxx = compiler()
            if cxx is None:
                raise EmulationError("g++ is needed to build the CUDA emulation")
            with tempfile.TemporaryDirectory() as tmp:
                src = Path(tmp) / "module.cpp"
                src.write_text(unit)
                out = Path(tmp) / "module.so"
                cmd = [cxx, *CXXFLAGS, "-include", str(EMU_DIR / "cuda_emu.h"), f"-I{EMU_DIR}", str(src), "-o", str(out)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    raise EmulationError(f"emulation build failed:\n{res.stderr[-4000:]}")
                tmp_so = so.with_suffix(f".{os.getpid()}.tmp")
                shutil.copyfile(out, tmp_so)
                os.replace(tmp_so, so)
    lib = ctypes.CDLL(str(so))
    lib.mg_emu_count.restype = ctypes.c_int
    lib.mg_emu_name.restype = ctypes.c_char_p
    lib.mg_emu_name.argtypes = [ctypes.c_int]
    lib.mg_emu_signature.restype = ctypes.c_char_p
    lib.mg_emu_signature.argtypes = [ctypes.c_int]
    lib.mg_emu_error.restype = ctypes.c_char_p
    lib.mg_emu_launch.restype = ctypes.c_int
    lib.mg_emu_launch.argtypes = [ctypes.c_int] + [ctypes.c_uint] * 6 + [ctypes.POINTER(ctypes.c_void_p),
                                                                          ctypes.c_int, ctypes.c_uint]
    return lib


def parse_signature(sig: str) -> list[str]:
    """"KfPdqq" -> ["Kf", "Pd", "q", "q"]."""
    out, i = [], 0
    while i < len(sig):
        if sig[i] in "PK":
            out.append(sig[i : i + 2])
            i += 2
        else:
            out.append(sig[i])
            i += 1
    return out


class _Guarded:
    """An array copied into a buffer with guard zones (same alignment modulo 256)."""

    def __init__(self, arr: np.ndarray):
        self.device_array = arr
        arr = self.arr = _base(arr)  # the emulator's own copies are host operations
        nbytes = arr.nbytes
        offset = arr.__array_interface__["data"][0] % 256
        self.raw = np.full(nbytes + GUARD + 768, _FILL, dtype=np.uint8)
        base = self.raw.__array_interface__["data"][0]
        start = (-base) % 256 + 256 + offset  # >= GUARD bytes of guard before the data
        self.start = start
        self.view = self.raw[start : start + nbytes]
        self.view[...] = arr.reshape(-1).view(np.uint8)
        self.before = self.raw[start - GUARD : start].copy()
        self.after_slice = slice(start + nbytes, start + nbytes + GUARD)

    @property
    def pointer(self) -> int:
        return self.raw.__array_interface__["data"][0] + self.start

    def intact(self) -> bool:
        return bool(np.all(self.raw[self.start - GUARD : self.start] == _FILL)) and bool(
            np.all(self.raw[self.after_slice] == _FILL)
        )

    def changed(self) -> bool:
        return not np.array_equal(self.view, self.arr.reshape(-1).view(np.uint8))

    def copy_back(self) -> None:
        self.arr.reshape(-1).view(np.uint8)[...] = self.view


class RawKernel:
    """One emulated kernel instantiation (``get_function`` result)."""

    def __init__(self, owner: "FakeCupy", lib, index: int, name: str, signature: str):
        self.owner = owner
        self.lib = lib
        self.index = index
        self.name = name
        self.signature = signature
        self.params = parse_signature(signature)

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        if shared_mem:
            raise EmulationError(f"{self.name}: dynamic shared memory is not emulated")
        if not isinstance(args, tuple):
            raise EmulationError(f"{self.name}: kernel arguments must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            raise EmulationError(f"{self.name}: the kernel takes {len(self.params)} arguments "
                                 f"({self.signature}), got {len(args)}")
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        _refuse_host(args)  # CuPy passes only device arrays (or size-1 host values, which we never use) by pointer
        guarded = {}
        overlapping = {
            id(a) for i, a in enumerate(arrays) for b in arrays[i + 1 :] if np.shares_memory(a, b)
        }
        keep, ptrs = [], []
        for pos, (arg, code) in enumerate(zip(args, self.params)):
            where = f"{self.name}: argument {pos} ({code})"
            if code[0] in "PK":
                if arg is None:
                    value = ctypes.c_void_p(None)
                elif isinstance(arg, np.ndarray):
                    if _DTYPE_CODE.get(arg.dtype) != code[1]:
                        raise EmulationError(f"{where}: array of dtype {arg.dtype} for a pointer to '{code[1]}'")
                    if not arg.flags.c_contiguous:
                        raise EmulationError(f"{where}: array is not C-contiguous")
                    if id(arg) in overlapping or arg.size == 0:
                        value = ctypes.c_void_p(arg.__array_interface__["data"][0])
                    else:
                        g = guarded[pos] = _Guarded(arg)
                        value = ctypes.c_void_p(g.pointer)
                else:
                    raise EmulationError(f"{where}: expected an array or None, got {type(arg).__name__}")
            else:
                expected = _SCALAR_CODES[code]
                if type(arg) is not expected:
                    raise EmulationError(
                        f"{where}: expected {expected.__name__} (the kernel's C type), got {type(arg).__name__}"
                    )
                value = _CTYPES[code](arg)
            keep.append(value)
            ptrs.append(ctypes.cast(ctypes.pointer(value), ctypes.c_void_p))
        argv = (ctypes.c_void_p * max(1, len(ptrs)))(*[p.value for p in ptrs])
        self.owner.launches.append((self.name, grid, block))
        rc = self.lib.mg_emu_launch(self.index, *grid, *block, argv, self.owner.order, self.owner.seed)
        if rc != 0:
            raise EmulationError(f"{self.name}: {self.lib.mg_emu_error().decode()}")
        for pos, g in guarded.items():
            if not g.intact():
                raise EmulationError(f"{self.name}: out-of-bounds write around argument {pos}")
            if self.params[pos][0] == "K":
                if g.changed():
                    raise EmulationError(f"{self.name}: argument {pos} is const but was modified")
            else:
                g.copy_back()


class RawModule:
    """``cupy.RawModule`` look-alike: compiles ``code`` with the emulation on first use."""

    def __init__(self, owner, code=None, *, path=None, options=(), backend="nvrtc", name_expressions=None, **kw):
        if path is not None or code is None:
            raise EmulationError("only RawModule(code=...) is emulated")
        if name_expressions is None:
            raise EmulationError("the emulation needs name_expressions")
        self.owner = owner
        self.code = code
        self.options = tuple(options)
        self.name_expressions = list(name_expressions)
        self._lib = None
        self._index: dict = {}

    def get_function(self, name):
        if self._lib is None:
            self._lib = build(self.code, self.name_expressions)
            self.owner.builds += 1
            n = self._lib.mg_emu_count()
            for i in range(n):
                self._index[self._lib.mg_emu_name(i).decode()] = (i, self._lib.mg_emu_signature(i).decode())
        if name not in self._index:
            raise EmulationError(f"{name!r} is not one of the module's name_expressions {self.name_expressions}")
        i, sig = self._index[name]
        return RawKernel(self.owner, self._lib, i, name, sig)


class _RandomState:
    """``cupy.random.RandomState`` look-alike (dtype arguments accepted)."""

    def __init__(self, seed):
        self._rs = np.random.RandomState(seed % 2**32)

    def standard_normal(self, size=None, dtype=float):
        return _to_device(self._rs.standard_normal(size).astype(dtype))

    def random_sample(self, size=None, dtype=float):
        return _to_device(self._rs.random_sample(size).astype(dtype))

    def randint(self, low, high=None, size=None, dtype="l"):
        return _to_device(self._rs.randint(low, high, size=size, dtype=dtype))

    def permutation(self, n):
        return _to_device(self._rs.permutation(n))


class FakeCupy:
    """The subset of the ``cupy`` module minigrad uses, on NumPy arrays.

    ``sm_count`` is what the fake device reports as its number of
    multiprocessors (small, so grids and hence emulated threads stay few);
    ``order`` and ``seed`` choose the emulated thread schedule;
    ``device_count`` is what the CUDA runtime reports.
    """

    __name__ = "fake_cupy"
    __version__ = "0.0-emulated"
    ndarray = DeviceArray

    def __init__(self, sm_count: int = 2, order: int = 2, seed: int = 0, device_count: int = 1):
        self.sm_count = sm_count
        self.order = order
        self.seed = seed
        self.launches: list = []
        self.builds = 0
        owner = self

        class _Device:
            def __init__(self, index=0):
                self.id = index

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def synchronize(self):
                pass

        runtime = types.SimpleNamespace(
            getDeviceCount=lambda: device_count,
            getDeviceProperties=lambda i: {"multiProcessorCount": owner.sm_count, "name": b"emulated"},
        )
        self.cuda = types.SimpleNamespace(Device=_Device, runtime=runtime)
        self.random = types.SimpleNamespace(RandomState=_RandomState)

    def RawModule(self, code=None, **kw):  # noqa: N802 - cupy's name
        return RawModule(self, code, **kw)

    @staticmethod
    def asnumpy(a):
        return np.array(a, copy=True)  # subok=False: a host ndarray

    def __getattr__(self, name):
        attr = getattr(np, name)
        if isinstance(attr, np.ufunc):
            return _Ufunc(attr)
        if callable(attr) and not isinstance(attr, type) and not isinstance(attr, types.ModuleType):
            return _device_function(name, attr)
        return attr
