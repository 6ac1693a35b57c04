"""The CUDA backend: CuPy arrays, with minigrad's CUDA kernels where they pay off.

Generic math goes through CuPy's NumPy-compatible namespace (``xp = cupy``);
the fused kernels of ``Backend`` (batch/group/row normalization, im2col/col2im,
pooling, sigmoid, SGD/Adam steps) are overridden by the CUDA C++ templates
in ``kernels/*.cu``, compiled with NVRTC through ``cupy.RawModule`` on first
use (one module per file, ``name_expressions`` for ``<float>`` and
``<double>``) and cached by CuPy on disk.

Importing this module never imports CuPy: ``CUDABackend.is_available()``
and ``create()`` do, lazily, and ``create()`` raises
``CUDAUnavailableError`` saying whether CuPy or a GPU is missing.

Every wrapper validates on the host (a kernel cannot raise): array type,
dtype, shapes and contiguity (inputs are made C-contiguous, in-place
targets that are not fall back to the reference), and passes scalars with
the exact C type of the kernel's parameter (``np.int64`` for sizes,
``np.int32`` for flags, ``np.float64`` for epsilons, the element type for
optimizer hyper-parameters). Dtypes other than float32/float64 fall back to
the ``xp`` reference of ``Backend``.

Only ``cuda:0`` is supported: the autograd engine does not make a GPU
current around each operation, which ``cuda:N`` for N > 0 would need.
"""

from __future__ import annotations

import re
from importlib import resources

import numpy as np

from .base import Backend

__all__ = ["CUDABackend", "CUDAUnavailableError", "KERNEL_FILES", "kernel_source", "name_expressions"]


class CUDAUnavailableError(RuntimeError):
    """A "cuda" device was requested but CuPy or a usable GPU is missing."""


# Kernel source file -> the kernel templates it defines (each instantiated
# for float and double). The tests check this table against the sources.
KERNEL_FILES: dict[str, tuple[str, ...]] = {
    "batchnorm.cu": (
        "bn_stats_spatial", "bn_stats_columns", "bn_stats_finalize", "channel_affine",
        "bn_backward_reduce_spatial", "bn_backward_reduce_columns", "bn_backward_finalize", "bn_backward_dx",
    ),
    "groupnorm.cu": ("group_norm_forward", "group_norm_backward", "group_norm_backward_params"),
    "rownorm.cu": ("row_norm_forward", "row_norm_backward"),
    "conv.cu": ("im2col", "col2im"),
    "pool.cu": ("max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"),
    "elementwise.cu": ("sigmoid", "sgd_update", "adam_update"),
}
_FILE_OF = {k: f for f, ks in KERNEL_FILES.items() for k in ks}
# The C++ type each supported dtype instantiates the templates with.
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
# NVRTC options; the same ones are used by the compile tests.
COMPILE_OPTIONS = ("-std=c++17",)
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)

_i64 = np.int64
_i32 = np.int32
_f64 = np.float64


def _read_kernel_file(name: str) -> str:
    return (resources.files(__package__) / "kernels" / name).read_text(encoding="utf-8")


def kernel_source(filename: str) -> str:
    """The source handed to NVRTC for ``kernels/<filename>``, local headers inlined.

    Inlining (instead of an ``-I`` option) makes the text CuPy hashes for its
    kernel cache cover the headers too, so editing a header recompiles.
    """
    seen: set[str] = set()

    def expand(name: str) -> str:
        if name in seen:  # headers have include guards; inline each once
            return ""
        seen.add(name)
        return _INCLUDE.sub(lambda m: expand(m.group(1)), _read_kernel_file(name))

    return expand(filename)


def name_expressions(filename: str) -> list[str]:
    """The ``name_expressions`` of a kernel file: ``kernel<float>``, ``kernel<double>``."""
    return [f"{k}<{t}>" for k in KERNEL_FILES[filename] for t in C_TYPES.values()]


_CUPY = None
_CUPY_ERROR: "BaseException | None" = None


def _import_cupy():
    """Import CuPy once; None (and the error remembered) when it cannot be imported."""
    global _CUPY, _CUPY_ERROR
    if _CUPY is None and _CUPY_ERROR is None:
        try:
            import cupy
        except Exception as exc:  # ImportError, or a CUDA library that fails to load
            _CUPY_ERROR = exc
        else:
            _CUPY = cupy
    return _CUPY


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class CUDABackend(Backend):
    """CuPy arrays on ``cuda:0``; RawModule kernels for the fused operations.

    ``xp`` (the array namespace) is the ``cupy`` module; tests may pass a
    stand-in module with the same interface.
    """

    name = "cuda"
    #: Threads per block of the 1-D kernels (a multiple of 32, at most 256:
    #: the reduction kernels are compiled with ``__launch_bounds__(256, 4)``).
    threads = 256
    #: Resident blocks per multiprocessor aimed at when sizing grids.
    blocks_per_sm = 8
    #: Channel reductions use the plane layout from this many elements per
    #: (sample, channel) plane on, the column layout below it.
    spatial_min = 32

    _probe_result: "tuple[int, str | None] | None" = None

    def __init__(self, device, xp=None):
        super().__init__(device)
        if xp is None:
            xp = _import_cupy()
            if xp is None:
                raise CUDAUnavailableError(self.unavailable_reason() or "CuPy could not be imported")
        self.xp = xp
        self._modules: dict = {}
        self._functions: dict = {}
        self._sm_count: "int | None" = None

    # ------------------------------------------------------ availability
    @classmethod
    def _probe(cls) -> "tuple[int, str | None]":
        """(number of GPUs, why none) — asked of the CUDA runtime once."""
        if cls._probe_result is None:
            cupy = _import_cupy()
            if cupy is None:
                return 0, None
            try:
                count = int(cupy.cuda.runtime.getDeviceCount())
                why = None if count > 0 else "the CUDA runtime reports 0 devices"
            except Exception as exc:  # cudaErrorNoDevice, cudaErrorInsufficientDriver, ...
                count, why = 0, f"{type(exc).__name__}: {exc}"
            cls._probe_result = (count, why)
        return cls._probe_result

    @classmethod
    def unavailable_reason(cls) -> "str | None":
        """Why "cuda" cannot be used here, naming what is missing; None when it can."""
        cupy = _import_cupy()
        if cupy is None:
            return (
                f"CuPy is not installed or failed to import ({type(_CUPY_ERROR).__name__}: {_CUPY_ERROR}); "
                "install the GPU extra: pip install 'minigrad-bn[cuda]'"
            )
        count, why = cls._probe()
        if count == 0:
            version = getattr(cupy, "__version__", "?")
            return f"CuPy {version} is installed but no usable CUDA GPU was found ({why})"
        return None

    @classmethod
    def is_available(cls) -> bool:
        """True when CuPy imports and the CUDA runtime sees at least one GPU."""
        return cls.unavailable_reason() is None

    @classmethod
    def device_count(cls) -> int:
        """Number of CUDA devices (0 without CuPy or a GPU)."""
        return cls._probe()[0] if _import_cupy() is not None else 0

    @classmethod
    def create(cls, device) -> "CUDABackend":
        """The backend of ``device`` ("cuda:0"); raises if CuPy or a GPU is missing."""
        reason = cls.unavailable_reason()
        if reason is not None:
            raise CUDAUnavailableError(f"cannot use device '{device}': {reason}")
        count = cls.device_count()
        if device.index >= count:
            raise ValueError(f"device '{device}' does not exist: this machine has {count} CUDA device(s)")
        if device.index != 0:
            raise NotImplementedError(
                f"device '{device}': minigrad supports only cuda:0 for now (the autograd engine does not "
                "yet make a GPU current around each operation); use CUDA_VISIBLE_DEVICES to pick the GPU"
            )
        return cls(device)

    # ------------------------------------------------------------ memory
    def asarray(self, data, dtype=None):
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, array) -> np.ndarray:
        """Copy to the host (a NumPy array)."""
        return self.xp.asnumpy(array)

    def from_numpy(self, array):
        """Copy a host array to the GPU (always a new array)."""
        return self.xp.array(array, copy=True)

    def transfer(self, array, source):
        """Copy an array of backend ``source`` here: device to device without the host."""
        if isinstance(source, CUDABackend):
            with self.xp.cuda.Device(self.device.index):
                return self.xp.array(array, copy=True)
        return self.from_numpy(source.to_numpy(array))

    def synchronize(self) -> None:
        """Wait until all work queued on this GPU has finished."""
        self.xp.cuda.Device(self.device.index).synchronize()

    # ------------------------------------------------------------ random
    def manual_seed(self, seed):
        self._seed = int(seed)
        self._rng = self.xp.random.RandomState(self._seed)

    def standard_normal(self, shape, dtype):
        dt = np.dtype(dtype)
        if dt in C_TYPES:
            return self.rng.standard_normal(size=shape, dtype=dt)
        return self.rng.standard_normal(size=shape, dtype=np.float32).astype(dt)

    def uniform(self, shape, low, high, dtype):
        dt = np.dtype(dtype)
        out = self.rng.random_sample(size=shape, dtype=dt if dt in C_TYPES else np.float32).astype(dt, copy=False)
        if low != 0.0 or high != 1.0:
            out *= high - low
            out += low
        return out

    def randint(self, low, high, shape, dtype):
        return self.rng.randint(low, high, size=shape, dtype=dtype)

    def permutation(self, n):
        return self.rng.permutation(n).astype(np.int64, copy=False)

    # ------------------------------------------------------- kernel plumbing
    @property
    def sm_count(self) -> int:
        """Number of streaming multiprocessors of the GPU (sizes the grids)."""
        if self._sm_count is None:
            props = self.xp.cuda.runtime.getDeviceProperties(self.device.index)
            self._sm_count = max(1, int(props["multiProcessorCount"]))
        return self._sm_count

    def _function(self, name: str, dtype):
        key = (name, dtype)
        fn = self._functions.get(key)
        if fn is None:
            filename = _FILE_OF[name]
            module = self._modules.get(filename)
            if module is None:
                # Compiled by NVRTC on the first get_function; CuPy caches the binary on disk.
                module = self.xp.RawModule(
                    code=kernel_source(filename), options=COMPILE_OPTIONS, name_expressions=name_expressions(filename)
                )
                self._modules[filename] = module
            fn = module.get_function(f"{name}<{C_TYPES[dtype]}>")
            self._functions[key] = fn
        return fn

    def _launch(self, name, dtype, grid, block, args) -> None:
        if not 1 <= self.threads <= 256 or self.threads % 32:
            raise ValueError(f"CUDABackend.threads must be a multiple of 32 in [32, 256], got {self.threads}")
        self._function(name, dtype)(grid, block, tuple(args))

    def _target_blocks(self) -> int:
        return self.sm_count * self.blocks_per_sm

    def _grid_1d(self, work_items: int) -> tuple[int]:
        return (max(1, min(_cdiv(work_items, self.threads), self._target_blocks())),)

    def _finalize_block(self, parts: int) -> tuple[int]:
        return (min(self.threads, max(32, 32 * _cdiv(parts, 32))),)

    def _kernel_dtype(self, *arrays):
        """The common float32/float64 dtype of ``arrays`` on this device, else None (use the reference)."""
        dt = None
        for a in arrays:
            if a is None:
                continue
            if not isinstance(a, self.xp.ndarray):
                raise TypeError(
                    f"expected arrays on {self.device} ({self.xp.__name__}.ndarray), got {type(a).__name__}; "
                    "move the data with .to(device) first"
                )
            if dt is None:
                dt = a.dtype
            elif a.dtype != dt:
                return None
        return dt if dt in C_TYPES else None

    def _c(self, a):
        """``a`` as a C-contiguous array (no copy when it already is)."""
        return a if a is None or a.flags.c_contiguous else self.xp.ascontiguousarray(a)

    @staticmethod
    def _check_shape(where, what, a, shape):
        if a is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{where}: {what} must have shape {tuple(shape)}, got {tuple(a.shape)}")

    @staticmethod
    def _check_ndim(where, what, a, ndim, layout):
        if a.ndim != ndim:
            raise ValueError(f"{where}: {what} must be {layout} ({ndim}-D), got shape {tuple(a.shape)}")

    # ----------------------------------------------- per-channel reductions
    def _channel_partials(self, kind, arrays, N, C, S, dtype):
        """Stage 1 of a per-channel reduction over an (N, C, S) layout.

        ``kind`` is "stats" (Welford records of x) or "backward" (Σg and
        Σg·(x - mean) of grad, x, mean). Returns (partial, P): each channel's P
        records are consecutive. Channels are split into parts so that even a
        handful of channels fills the GPU.
        """
        xp = self.xp
        itemsize = np.dtype(dtype).itemsize
        vec = 16 // itemsize
        record = 3 if kind == "stats" else 2
        target = self._target_blocks()
        if S >= self.spatial_min:
            units = N * _cdiv(S, vec)
            parts = max(1, min(_cdiv(target, C), _cdiv(units, self.threads)))
            partial = xp.empty(C * parts * record, dtype=np.float64)
            grid = (min(C * parts, 2**31 - 1),)
            name = "bn_stats_spatial" if kind == "stats" else "bn_backward_reduce_spatial"
            sizes = (_i64(N), _i64(C), _i64(S), _i64(parts))
            self._launch(name, dtype, grid, (self.threads,), (*arrays, partial, *sizes))
            return partial, parts
        K = C * S
        tiles = _cdiv(K, 32)
        rows_per_block = min(8, self.threads // 32)
        # Split the rows so the grid fills the GPU, keeping >= 4 rows per thread.
        splits = max(1, min(_cdiv(target, tiles), _cdiv(N, 4 * rows_per_block), 65535))
        partial = xp.empty(K * splits * record, dtype=np.float64)
        grid = (min(tiles, 2**31 - 1), splits)
        block = (32, rows_per_block)
        if kind == "stats":
            self._launch("bn_stats_columns", dtype, grid, block, (*arrays, partial, _i64(N), _i64(K), _i64(splits)))
        else:
            self._launch("bn_backward_reduce_columns", dtype, grid, block,
                         (*arrays, partial, _i64(N), _i64(K), _i64(S), _i64(splits)))
        return partial, S * splits

    def batch_norm_forward_train(self, x, weight, bias, eps):
        dtype = self._kernel_dtype(x, weight, bias)
        if dtype is None:
            return super().batch_norm_forward_train(x, weight, bias, eps)
        where = "batch_norm_forward_train"
        self._check_ndim(where, "x", x, 3, "(N, C, S)")
        N, C, S = x.shape
        self._check_shape(where, "weight", weight, (C,))
        self._check_shape(where, "bias", bias, (C,))
        if N * S == 0 and C > 0:
            raise ValueError(f"{where}: batch statistics need at least one value per channel, got shape {tuple(x.shape)}")
        xp = self.xp
        y = xp.empty(x.shape, dtype=dtype)
        mean = xp.empty((C,), dtype=dtype)
        var = xp.empty((C,), dtype=dtype)
        if C == 0:
            return y, mean, var
        x, weight, bias = self._c(x), self._c(weight), self._c(bias)
        partial, parts = self._channel_partials("stats", (x,), N, C, S, dtype)
        params = xp.empty((4, C), dtype=dtype)  # mean_hi, mean_lo, scale, shift
        self._launch("bn_stats_finalize", dtype, (min(C, 2**31 - 1),), self._finalize_block(parts),
                     (partial, _i64(C), _i64(parts), weight, bias, _f64(eps), mean, var,
                      params[0], params[1], params[2], params[3]))
        self._affine(x, y, params[2], params[3], params[0], params[1], dtype)
        return y, mean, var

    def _affine(self, x, y, scale, shift, mean_hi, mean_lo, dtype):
        N, C, S = x.shape
        total = N * C * S
        if total == 0:
            return
        units = _cdiv(total, 16 // np.dtype(dtype).itemsize)
        self._launch("channel_affine", dtype, self._grid_1d(units), (self.threads,),
                     (x, y, scale, shift, mean_hi, mean_lo, _i64(total), _i64(C), _i64(S)))

    def channel_affine(self, x, scale, shift):
        dtype = self._kernel_dtype(x, scale, shift)
        if dtype is None:
            return super().channel_affine(x, scale, shift)
        where = "channel_affine"
        self._check_ndim(where, "x", x, 3, "(N, C, S)")
        C = x.shape[1]
        self._check_shape(where, "scale", scale, (C,))
        self._check_shape(where, "shift", shift, (C,))
        y = self.xp.empty(x.shape, dtype=dtype)
        self._affine(self._c(x), y, self._c(scale), self._c(shift), None, None, dtype)
        return y

    def batch_norm_forward_eval(self, x, mean, var, weight, bias, eps):
        dtype = self._kernel_dtype(x, mean, var, weight, bias)
        if dtype is None:
            return super().batch_norm_forward_eval(x, mean, var, weight, bias, eps)
        where = "batch_norm_forward_eval"
        self._check_ndim(where, "x", x, 3, "(N, C, S)")
        C = x.shape[1]
        for what, a in (("mean", mean), ("var", var), ("weight", weight), ("bias", bias)):
            self._check_shape(where, what, a, (C,))
        # C values: the per-channel scale and shift are a few element-wise ops (in float64), the
        # N·C·S multiply-adds one channel_affine launch.
        scale, shift = self.batch_norm_eval_affine(mean, var, weight, bias, eps)
        y = self.xp.empty(x.shape, dtype=dtype)
        self._affine(self._c(x), y, scale.astype(dtype), shift.astype(dtype), None, None, dtype)
        return y

    def batch_norm_backward(self, grad, x, mean, invstd, weight, training):
        dtype = self._kernel_dtype(grad, x, mean, invstd, weight)
        if dtype is None:
            return super().batch_norm_backward(grad, x, mean, invstd, weight, training)
        where = "batch_norm_backward"
        self._check_ndim(where, "x", x, 3, "(N, C, S)")
        N, C, S = x.shape
        self._check_shape(where, "grad", grad, x.shape)
        for what, a in (("mean", mean), ("invstd", invstd), ("weight", weight)):
            self._check_shape(where, what, a, (C,))
        xp = self.xp
        dx = xp.empty(x.shape, dtype=dtype)
        if N * S == 0 or C == 0:  # empty sums
            return dx, xp.zeros((C,), dtype=dtype), xp.zeros((C,), dtype=dtype)
        grad, x, mean, invstd, weight = (self._c(a) for a in (grad, x, mean, invstd, weight))
        partial, parts = self._channel_partials("backward", (grad, x, mean), N, C, S, dtype)
        dweight = xp.empty((C,), dtype=dtype)
        dbias = xp.empty((C,), dtype=dtype)
        coef = xp.empty((3, C), dtype=dtype)
        self._launch("bn_backward_finalize", dtype, (min(C, 2**31 - 1),), self._finalize_block(parts),
                     (partial, _i64(C), _i64(parts), invstd, weight, _i64(N * S), _i32(bool(training)),
                      dweight, dbias, coef[0], coef[1], coef[2]))
        total = N * C * S
        units = _cdiv(total, 16 // np.dtype(dtype).itemsize)
        self._launch("bn_backward_dx", dtype, self._grid_1d(units), (self.threads,),
                     (grad, x, mean, coef[0], coef[1], coef[2], dx, _i32(bool(training)),
                      _i64(total), _i64(C), _i64(S)))
        return dx, dweight, dbias

    # ------------------------------------------------- per-group normalization
    @staticmethod
    def _check_groups(where, C, groups):
        if int(groups) != groups or groups < 1 or C % groups:
            raise ValueError(f"{where}: groups must be a positive divisor of the {C} channels, got {groups!r}")

    def group_norm_forward(self, x, weight, bias, groups, eps):
        dtype = self._kernel_dtype(x, weight, bias)
        if dtype is None:
            return super().group_norm_forward(x, weight, bias, groups, eps)
        where = "group_norm_forward"
        self._check_ndim(where, "x", x, 3, "(N, C, S)")
        N, C, S = x.shape
        self._check_groups(where, C, groups)
        self._check_shape(where, "weight", weight, (C,))
        self._check_shape(where, "bias", bias, (C,))
        G = int(groups)
        K = (C // G) * S
        if K == 0 and N > 0:
            raise ValueError(f"{where}: rows must not be empty, got shape {tuple(x.shape)} with {G} group(s)")
        xp = self.xp
        y = xp.empty(x.shape, dtype=dtype)
        mean = xp.empty((N, G), dtype=dtype)
        invstd = xp.empty((N, G), dtype=dtype)
        if N == 0:
            return y, mean, invstd
        block = self._row_block(K, dtype)
        grid = (max(1, min(_cdiv(N * G, block[1]), self._target_blocks())),)
        self._launch("group_norm_forward", dtype, grid, block,
                     (self._c(x), self._c(weight), self._c(bias), y, mean, invstd, _i64(N), _i64(C), _i64(S), _i64(G),
                      _f64(eps)))
        return y, mean, invstd

    def group_norm_backward(self, grad, x, mean, invstd, weight, groups):
        dtype = self._kernel_dtype(grad, x, mean, invstd, weight)
        if dtype is None:
            return super().group_norm_backward(grad, x, mean, invstd, weight, groups)
        where = "group_norm_backward"
        self._check_ndim(where, "x", x, 3, "(N, C, S)")
        N, C, S = x.shape
        self._check_groups(where, C, groups)
        G = int(groups)
        self._check_shape(where, "grad", grad, x.shape)
        self._check_shape(where, "mean", mean, (N, G))
        self._check_shape(where, "invstd", invstd, (N, G))
        self._check_shape(where, "weight", weight, (C,))
        xp = self.xp
        dx = xp.empty(x.shape, dtype=dtype)
        if N * S == 0 or C == 0:  # empty sums
            return dx, xp.zeros((C,), dtype=dtype), xp.zeros((C,), dtype=dtype)
        grad, x, mean, invstd, weight = (self._c(a) for a in (grad, x, mean, invstd, weight))
        K = (C // G) * S
        block = self._row_block(K, dtype)
        grid = (max(1, min(_cdiv(N * G, block[1]), self._target_blocks())),)
        self._launch("group_norm_backward", dtype, grid, block,
                     (grad, x, mean, invstd, weight, dx, _i64(N), _i64(C), _i64(S), _i64(G)))
        dweight = xp.empty((C,), dtype=dtype)
        dbias = xp.empty((C,), dtype=dtype)
        spatial = S >= self.spatial_min
        pblock = (32, max(1, min(8, self.threads // 32)))
        pgrid = (max(1, min(C if spatial else _cdiv(C, 32), self._target_blocks())),)
        self._launch("group_norm_backward_params", dtype, pgrid, pblock,
                     (grad, x, mean, invstd, dweight, dbias, _i64(N), _i64(C), _i64(S), _i64(G), _i32(spatial)))
        return dx, dweight, dbias

    # --------------------------------------------------- per-row reductions
    def _row_block(self, K, dtype):
        units = _cdiv(K, 16 // np.dtype(dtype).itemsize)
        tx = 32
        while tx < self.threads and 2 * tx <= units:  # at least ~2 units per thread
            tx *= 2
        return (tx, max(1, self.threads // tx))

    def row_norm_forward(self, x, eps):
        dtype = self._kernel_dtype(x)
        if dtype is None:
            return super().row_norm_forward(x, eps)
        self._check_ndim("row_norm_forward", "x", x, 2, "(R, K)")
        R, K = x.shape
        if K == 0 and R > 0:
            raise ValueError(f"row_norm_forward: rows must not be empty, got shape {tuple(x.shape)}")
        xp = self.xp
        xhat = xp.empty(x.shape, dtype=dtype)
        mean = xp.empty((R,), dtype=dtype)
        invstd = xp.empty((R,), dtype=dtype)
        if R == 0:
            return xhat, mean, invstd
        block = self._row_block(K, dtype)
        grid = (max(1, min(_cdiv(R, block[1]), self._target_blocks())),)
        self._launch("row_norm_forward", dtype, grid, block,
                     (self._c(x), xhat, mean, invstd, _i64(R), _i64(K), _f64(eps)))
        return xhat, mean, invstd

    def row_norm_backward(self, grad, xhat, invstd):
        dtype = self._kernel_dtype(grad, xhat, invstd)
        if dtype is None:
            return super().row_norm_backward(grad, xhat, invstd)
        self._check_ndim("row_norm_backward", "xhat", xhat, 2, "(R, K)")
        R, K = xhat.shape
        self._check_shape("row_norm_backward", "grad", grad, xhat.shape)
        self._check_shape("row_norm_backward", "invstd", invstd, (R,))
        dx = self.xp.empty(xhat.shape, dtype=dtype)
        if R == 0 or K == 0:
            return dx
        block = self._row_block(K, dtype)
        grid = (max(1, min(_cdiv(R, block[1]), self._target_blocks())),)
        self._launch("row_norm_backward", dtype, grid, block,
                     (self._c(grad), self._c(xhat), self._c(invstd), dx, _i64(R), _i64(K)))
        return dx

    # ---------------------------------------------------- convolution
    def _window_sizes(self, where, shape, kh, kw, sh, sw, ph, pw):
        if len(shape) != 4:
            raise ValueError(f"{where}: expected an (N, C, H, W) shape, got {tuple(shape)}")
        if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
            raise ValueError(f"{where}: kernel and stride must be >= 1 and padding >= 0")
        oh = self.conv_output_size(shape[2], kh, sh, ph)
        ow = self.conv_output_size(shape[3], kw, sw, pw)
        if oh < 1 or ow < 1:
            raise ValueError(f"{where}: window ({kh}, {kw}) does not fit the padded input {tuple(shape[2:])}")
        return oh, ow

    @staticmethod
    def _geometry(*values):
        return tuple(_i64(v) for v in values)

    def im2col(self, x, kh, kw, sh, sw, ph, pw):
        dtype = self._kernel_dtype(x)
        if dtype is None:
            return super().im2col(x, kh, kw, sh, sw, ph, pw)
        oh, ow = self._window_sizes("im2col", x.shape, kh, kw, sh, sw, ph, pw)
        n, c, h, w = x.shape
        cols = self.xp.empty((n, c * kh * kw, oh * ow), dtype=dtype)
        if cols.size:
            self._launch("im2col", dtype, self._grid_1d(cols.size), (self.threads,),
                         (self._c(x), cols, *self._geometry(n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow)))
        return cols

    def col2im(self, cols, x_shape, kh, kw, sh, sw, ph, pw):
        dtype = self._kernel_dtype(cols)
        if dtype is None:
            return super().col2im(cols, x_shape, kh, kw, sh, sw, ph, pw)
        oh, ow = self._window_sizes("col2im", x_shape, kh, kw, sh, sw, ph, pw)
        n, c, h, w = (int(s) for s in x_shape)
        self._check_shape("col2im", "cols", cols, (n, c * kh * kw, oh * ow))
        x = self.xp.empty((n, c, h, w), dtype=dtype)
        if x.size:
            self._launch("col2im", dtype, self._grid_1d(x.size), (self.threads,),
                         (self._c(cols), x, *self._geometry(n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow)))
        return x

    # -------------------------------------------------------- pooling
    def max_pool2d_forward(self, x, kh, kw, sh, sw, ph, pw):
        dtype = self._kernel_dtype(x)
        if dtype is None:
            return super().max_pool2d_forward(x, kh, kw, sh, sw, ph, pw)
        oh, ow = self._window_sizes("max_pool2d_forward", x.shape, kh, kw, sh, sw, ph, pw)
        n, c, h, w = x.shape
        y = self.xp.empty((n, c, oh, ow), dtype=dtype)
        argmax = self.xp.empty((n, c, oh, ow), dtype=np.int64)
        if y.size:
            self._launch("max_pool2d_forward", dtype, self._grid_1d(y.size), (self.threads,),
                         (self._c(x), y, argmax, *self._geometry(n * c, h, w, kh, kw, sh, sw, ph, pw, oh, ow)))
        return y, argmax

    def max_pool2d_backward(self, grad, argmax, x_shape):
        dtype = self._kernel_dtype(grad)
        if dtype is None:
            return super().max_pool2d_backward(grad, argmax, x_shape)
        if len(x_shape) != 4 or grad.ndim != 4:
            raise ValueError(f"max_pool2d_backward: expected 4-D grad and x_shape, got {tuple(grad.shape)}, {tuple(x_shape)}")
        self._check_shape("max_pool2d_backward", "argmax", argmax, grad.shape)
        if not isinstance(argmax, self.xp.ndarray) or argmax.dtype != np.int64:
            raise TypeError(f"max_pool2d_backward: argmax must be an int64 array on {self.device}")
        n, c, h, w = (int(s) for s in x_shape)
        if tuple(grad.shape[:2]) != (n, c):
            raise ValueError(f"max_pool2d_backward: grad {tuple(grad.shape)} does not match x_shape {tuple(x_shape)}")
        dx = self.xp.zeros((n, c, h, w), dtype=dtype)
        if grad.size:
            self._launch("max_pool2d_backward", dtype, self._grid_1d(grad.size), (self.threads,),
                         (self._c(grad), self._c(argmax), dx, _i64(n * c), _i64(h * w),
                          _i64(grad.shape[2] * grad.shape[3])))
        return dx

    def avg_pool2d_forward(self, x, kh, kw, sh, sw, ph, pw, count_include_pad=True):
        dtype = self._kernel_dtype(x)
        if dtype is None:
            return super().avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, count_include_pad)
        oh, ow = self._window_sizes("avg_pool2d_forward", x.shape, kh, kw, sh, sw, ph, pw)
        n, c, h, w = x.shape
        y = self.xp.empty((n, c, oh, ow), dtype=dtype)
        if y.size:
            self._launch("avg_pool2d_forward", dtype, self._grid_1d(y.size), (self.threads,),
                         (self._c(x), y, *self._geometry(n * c, h, w, kh, kw, sh, sw, ph, pw, oh, ow),
                          _i32(bool(count_include_pad))))
        return y

    def avg_pool2d_backward(self, grad, x_shape, kh, kw, sh, sw, ph, pw, count_include_pad=True):
        dtype = self._kernel_dtype(grad)
        if dtype is None:
            return super().avg_pool2d_backward(grad, x_shape, kh, kw, sh, sw, ph, pw, count_include_pad)
        oh, ow = self._window_sizes("avg_pool2d_backward", x_shape, kh, kw, sh, sw, ph, pw)
        n, c, h, w = (int(s) for s in x_shape)
        self._check_shape("avg_pool2d_backward", "grad", grad, (n, c, oh, ow))
        dx = self.xp.empty((n, c, h, w), dtype=dtype)
        if dx.size:
            self._launch("avg_pool2d_backward", dtype, self._grid_1d(dx.size), (self.threads,),
                         (self._c(grad), dx, *self._geometry(n * c, h, w, kh, kw, sh, sw, ph, pw, oh, ow),
                          _i32(bool(count_include_pad))))
        return dx

    # --------------------------------------------- fused elementwise ops
    def _vec_units(self, n, dtype):
        return _cdiv(n, 16 // np.dtype(dtype).itemsize)

    def sigmoid(self, x):
        dtype = self._kernel_dtype(x)
        if dtype is None:
            return super().sigmoid(x)
        y = self.xp.empty(x.shape, dtype=dtype)
        if y.size:
            self._launch("sigmoid", dtype, self._grid_1d(self._vec_units(y.size, dtype)), (self.threads,),
                         (self._c(x), y, _i64(y.size)))
        return y

    def sgd_update(self, param, grad, buf, lr, momentum, dampening, weight_decay, nesterov):
        dtype = self._kernel_dtype(param, grad, buf)
        in_place = [param] + ([buf] if buf is not None else [])
        if dtype is None or not all(a.flags.c_contiguous for a in in_place):
            return super().sgd_update(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov)
        self._check_shape("sgd_update", "grad", grad, param.shape)
        self._check_shape("sgd_update", "momentum buffer", buf, param.shape)
        first = 0
        if momentum:
            if buf is None:
                buf = self.xp.empty(param.shape, dtype=dtype)
                first = 1
            target = buf
        else:
            target = None
        if param.size:
            t = dtype.type
            self._launch("sgd_update", dtype, self._grid_1d(self._vec_units(param.size, dtype)), (self.threads,),
                         (param, self._c(grad), target, _i64(param.size), t(lr), t(momentum), t(1.0 - dampening),
                          t(weight_decay), _i32(bool(nesterov)), _i32(first)))
        return buf

    def adam_update(self, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
        dtype = self._kernel_dtype(param, grad, exp_avg, exp_avg_sq)
        if dtype is None or not all(a.flags.c_contiguous for a in (param, exp_avg, exp_avg_sq)):
            return super().adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)
        for what, a in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
            self._check_shape("adam_update", what, a, param.shape)
        if step < 1:
            raise ValueError(f"adam_update: step must be >= 1, got {step}")
        if param.size:
            t = dtype.type
            bc1 = 1.0 - beta1**step
            bc2 = 1.0 - beta2**step
            self._launch("adam_update", dtype, self._grid_1d(self._vec_units(param.size, dtype)), (self.threads,),
                         (param, self._c(grad), exp_avg, exp_avg_sq, _i64(param.size), t(beta1), t(1.0 - beta1),
                          t(beta2), t(1.0 - beta2), t(lr / bc1), t(bc2), t(eps), t(weight_decay)))
