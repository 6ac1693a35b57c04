"""Compile-and-launch plumbing of the CUDA backend (Thinc's ``_custom_kernels.py``).

``cuda_backend.CUDABackend`` dispatches each operation to a kernel in a few
lines; everything between such a line and the GPU lives here:

* **CuPy, lazily.** ``import_cupy`` imports it once (``import minigrad``
  never does); ``probe`` asks the CUDA runtime for devices and then
  compiles, loads and runs one tiny kernel the way the backend compiles
  its own, so "available" means "a kernel runs", not "CuPy imports".
* **NVRTC sources.** ``KERNEL_FILES`` (file → kernel templates),
  ``kernel_source`` (local headers inlined), ``name_expressions``
  (``kernel<float>``, ``kernel<double>``, and ``kernel<__half>``,
  ``kernel<__nv_bfloat16>`` for the normalization files: ``file_types``),
  ``COMPILE_OPTIONS``.
* **Launches.** A ``Launcher`` per GPU compiles a file's ``RawModule`` on
  first use, sizes grids to the GPU's multiprocessors and launches.
* **Host-side checks that protect the kernels** (a kernel cannot raise):
  device arrays only, dtypes, shapes, contiguity; scalars are passed as the
  exact C type of the kernel parameter (``I64`` for ``long long`` sizes,
  ``I32`` for ``int`` flags, ``F64`` for ``double`` epsilons, the element
  type for optimizer hyper-parameters).
"""

from __future__ import annotations

import re
from importlib import resources

import numpy as np

from .._dtypes import HALF_DTYPES, accumulation_dtype

__all__ = [
    "CUDAUnavailableError", "KERNEL_FILES", "C_TYPES", "HALF_C_TYPES", "COMPILE_OPTIONS", "file_types",
    "kernel_source", "name_expressions",
    "import_cupy", "cupy_import_error", "probe", "Launcher", "I64", "I32", "F64", "check_shape", "check_ncs",
    "check_groups", "check_window", "geometry",
]

I64, I32, F64 = np.int64, np.int32, np.float64


class CUDAUnavailableError(RuntimeError):
    """A "cuda" device was requested but CuPy, a GPU or a working kernel compiler is missing."""


# Kernel source file -> the kernel templates it defines (each instantiated
# for float and double, the normalization files also for the half types).
# The tests check this table against the sources.
KERNEL_FILES: dict[str, tuple[str, ...]] = {
    "batchnorm.cu": (
        "bn_stats_spatial", "bn_stats_columns", "bn_stats_finalize", "channel_affine",
        "bn_backward_reduce_spatial", "bn_backward_reduce_columns", "bn_backward_finalize", "bn_backward_dx",
    ),
    "groupnorm.cu": ("group_norm_forward", "group_norm_backward"),
    "conv.cu": ("im2col", "col2im"),
    "pool.cu": ("max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"),
    "elementwise.cu": ("sigmoid", "sgd_update", "adam_update"),
}
_FILE_OF = {k: f for f, ks in KERNEL_FILES.items() for k in ks}
# The C++ type each supported dtype instantiates the templates with.
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
# Half-precision storage types (cuda_fp16.h, cuda_bf16.h) of the normalization kernels, which widen
# them to float on load (kernels/common.cuh); bfloat16 where NumPy can hold it (ml_dtypes).
HALF_C_TYPES = {dt: {"float16": "__half", "bfloat16": "__nv_bfloat16"}[dt.name] for dt in HALF_DTYPES}
_NORM_FILES = ("batchnorm.cu", "groupnorm.cu")
# NVRTC options; the same ones are used by the compile tests and the probe.
COMPILE_OPTIONS = ("-std=c++17",)
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)


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


def file_types(filename: str) -> dict:
    """dtype -> C++ type the templates of ``kernels/<filename>`` are instantiated with."""
    return {**C_TYPES, **HALF_C_TYPES} if filename in _NORM_FILES else C_TYPES


def name_expressions(filename: str) -> list[str]:
    """The ``name_expressions`` of a kernel file: ``kernel<float>``, ``kernel<double>`` (and the half types)."""
    return [f"{k}<{t}>" for k in KERNEL_FILES[filename] for t in file_types(filename).values()]


# ------------------------------------------------------------ CuPy, lazily
_CUPY = None
_CUPY_ERROR: "BaseException | None" = None


def import_cupy():
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


def cupy_import_error() -> "BaseException | None":
    """Why ``import cupy`` failed (None if it did not, or was not tried)."""
    return _CUPY_ERROR


# A template kernel that uses common.cuh, compiled exactly as the backend
# compiles its own (NVRTC, COMPILE_OPTIONS, name_expressions), then loaded
# and run: it fails where the first real operation would (no NVRTC, no CUDA
# headers, a driver too old for the PTX, no kernel image for the GPU).
_PROBE_KERNEL = "mg_probe<float>"
_PROBE_SOURCE = r"""
template <typename T>
__global__ void mg_probe(T* out, long long n) {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) out[i] = static_cast<T>(mg::lmin(i, n - 1 - i));
}
"""
_PROBE_SIZE = 32


def probe(cupy) -> "tuple[int, str | None]":
    """``(number of GPUs, why none can be used)``: the device count, then one tiny kernel compiled and run.

    ``why`` is None when a kernel compiled with the backend's options ran and
    wrote the right values on ``cuda:0``.
    """
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # cudaErrorNoDevice, cudaErrorInsufficientDriver, ...
        return 0, f"no usable CUDA GPU was found ({type(exc).__name__}: {exc})"
    if count == 0:
        return 0, "no usable CUDA GPU was found (the CUDA runtime reports 0 devices)"
    try:
        module = cupy.RawModule(code=kernel_source("common.cuh") + _PROBE_SOURCE, options=COMPILE_OPTIONS,
                                name_expressions=[_PROBE_KERNEL])
        out = cupy.zeros(_PROBE_SIZE, dtype=np.float32)
        module.get_function(_PROBE_KERNEL)((1,), (_PROBE_SIZE,), (out, I64(_PROBE_SIZE)))
        got = cupy.asnumpy(out)
    except Exception as exc:  # CompileException, a missing libnvrtc, CUDADriverError, ...
        return count, (
            f"a kernel cannot be compiled and run on the {count} CUDA device(s) found "
            f"({type(exc).__name__}: {str(exc).strip()[:500]}); CuPy compiles minigrad's kernels with NVRTC, "
            "which needs the CUDA headers and libraries: install CuPy with its [ctk] extra "
            "(pip install 'minigrad-bn[cuda]') or a CUDA toolkit"
        )
    i = np.arange(_PROBE_SIZE)
    if not np.array_equal(got, np.minimum(i, _PROBE_SIZE - 1 - i)):
        return count, f"a test kernel ran on the {count} CUDA device(s) found but wrote wrong values: {got.tolist()}"
    return count, None


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------- launches
class Launcher:
    """Compiled modules, launch geometry and checked launches for one GPU.

    ``xp`` is the ``cupy`` module (tests pass a stand-in with the same
    interface). Settings, per instance:
    """

    #: Threads per block of the 1-D kernels (a multiple of 32, at most 256:
    #: the reduction kernels are compiled with ``__launch_bounds__(256, 4)``).
    threads = 256
    #: Resident blocks per multiprocessor aimed at when sizing grids.
    blocks_per_sm = 8
    #: Channel reductions use the plane layout from this many elements per
    #: (sample, channel) plane on, the column layout below it.
    spatial_min = 32

    # kind -> (spatial-layout kernel, column-layout kernel, doubles per partial record,
    #          whether the column kernel takes S); see batchnorm.cu.
    _REDUCTIONS = {
        "stats": ("bn_stats_spatial", "bn_stats_columns", 3, False),
        "grad": ("bn_backward_reduce_spatial", "bn_backward_reduce_columns", 2, True),
    }

    def __init__(self, xp, device):
        self.xp = xp
        self.device = device
        self._modules: dict = {}
        self._functions: dict = {}
        self._sm_count: "int | None" = None

    # ------------------------------------------------------------ compile
    def function(self, name: str, dtype):
        """The compiled ``name<float|double|...>`` (its file's module is built on first use, cached on disk by CuPy)."""
        key = (name, dtype)
        fn = self._functions.get(key)
        if fn is None:
            filename = _FILE_OF[name]
            module = self._modules.get(filename)
            if module is None:
                module = self.xp.RawModule(code=kernel_source(filename), options=COMPILE_OPTIONS,
                                           name_expressions=name_expressions(filename))
                self._modules[filename] = module
            fn = module.get_function(f"{name}<{file_types(filename)[dtype]}>")
            self._functions[key] = fn
        return fn

    def launch(self, name, dtype, grid, block, args) -> None:
        """Launch ``name<dtype>`` with ``args`` (arrays and exact-C-type scalars)."""
        if not 32 <= self.threads <= 256 or self.threads % 32:
            raise ValueError(f"threads per block must be a multiple of 32 in [32, 256], got {self.threads}")
        self.function(name, dtype)(grid, block, tuple(args))

    # ----------------------------------------------------------- geometry
    @property
    def sm_count(self) -> int:
        """Number of streaming multiprocessors of the GPU (sizes the grids)."""
        if self._sm_count is None:
            props = self.xp.cuda.runtime.getDeviceProperties(self.device.index)
            self._sm_count = max(1, int(props["multiProcessorCount"]))
        return self._sm_count

    def target_blocks(self) -> int:
        """Blocks that fill the GPU: ``blocks_per_sm`` per multiprocessor."""
        return self.sm_count * self.blocks_per_sm

    @staticmethod
    def vec_units(n: int, dtype) -> int:
        """Number of 16-byte units (8 halves, 4 floats, 2 doubles) covering n elements."""
        return _cdiv(n, 16 // np.dtype(dtype).itemsize)

    def flat(self, name, dtype, items: int, args) -> None:
        """A grid-stride kernel over ``items`` work items in 1-D blocks; nothing is launched for 0."""
        if items:
            grid = (max(1, min(_cdiv(items, self.threads), self.target_blocks())),)
            self.launch(name, dtype, grid, (self.threads,), args)

    def rows(self, name, dtype, R: int, K: int, args) -> None:
        """A per-row kernel over R rows of K elements: (TX, TY) blocks, TX threads (whole warps) per row."""
        units = self.vec_units(K, dtype)
        tx = 32
        while tx < self.threads and 2 * tx <= units:  # at least ~2 units per thread
            tx *= 2
        block = (tx, max(1, self.threads // tx))
        grid = (max(1, min(_cdiv(R, block[1]), self.target_blocks())),)
        self.launch(name, dtype, grid, block, args)

    def channel_partials(self, kind, arrays, N, C, S, dtype, extra=()):
        """Stage 1 of a per-channel reduction over an (N, C, S) layout: ``(partial, P)``.

        ``kind`` is "stats" (Welford records of x) or "grad" (Σg and
        Σg·(x - mean)·invstd of grad, x, mean, invstd). Each channel's P
        records are consecutive float64 values. Channels are split into parts
        so that even a handful of channels fills the GPU. ``extra`` scalars
        follow the sizes.
        """
        spatial, columns, record, columns_take_s = self._REDUCTIONS[kind]
        target = self.target_blocks()
        if S >= self.spatial_min:
            parts = max(1, min(_cdiv(target, C), _cdiv(N * self.vec_units(S, dtype), self.threads)))
            partial = self.xp.empty(C * parts * record, dtype=np.float64)
            self.launch(spatial, dtype, (min(C * parts, 2**31 - 1),), (self.threads,),
                        (*arrays, partial, I64(N), I64(C), I64(S), I64(parts), *extra))
            return partial, parts
        K = C * S
        tiles = _cdiv(K, 32)
        rows_per_block = min(8, self.threads // 32)
        # Split the rows so the grid fills the GPU, keeping >= 4 rows per thread.
        splits = max(1, min(_cdiv(target, tiles), _cdiv(N, 4 * rows_per_block), 65535))
        partial = self.xp.empty(K * splits * record, dtype=np.float64)
        sizes = (I64(N), I64(K)) + ((I64(S),) if columns_take_s else ()) + (I64(splits),)
        self.launch(columns, dtype, (min(tiles, 2**31 - 1), splits), (32, rows_per_block),
                    (*arrays, partial, *sizes, *extra))
        return partial, S * splits

    def per_channel(self, name, dtype, C: int, parts: int, args) -> None:
        """Stage 2 of a per-channel reduction: one block per channel merges its ``parts`` records."""
        block = (min(self.threads, max(32, 32 * _cdiv(parts, 32))),)
        self.launch(name, dtype, (min(C, 2**31 - 1),), block, args)

    # -------------------------------------------------------- host checks
    def common_dtype(self, *arrays):
        """The common float32/float64 dtype of ``arrays`` (None entries skipped); None when the
        dtypes differ or have no kernel (the caller then uses the reference, as the CPU backend does)."""
        dtypes = {self.on_device(a).dtype for a in arrays if a is not None}
        dt = dtypes.pop() if len(dtypes) == 1 else None
        return dt if dt in C_TYPES else None

    def norm_dtype(self, x, *vectors, grad=None):
        """The kernel dtype of a normalization kernel's input ``x``, or None (use the reference).

        x of float32/float64 or a half type has a kernel; a ``grad`` of
        another dtype takes the reference. A per-channel vector or statistic
        must have x's dtype (TypeError otherwise, as on the CPU backend), or
        for a half x float32 or x's dtype (``vector`` gives it to the kernel
        as float32).
        """
        dt = self.on_device(x).dtype
        if dt not in C_TYPES and dt not in HALF_C_TYPES or (grad is not None and self.on_device(grad).dtype != dt):
            return None
        for v in vectors:
            if v is not None and self.on_device(v).dtype not in (dt, accumulation_dtype(dt)):
                raise TypeError(f"normalization kernel: vector of dtype {v.dtype} for an input of dtype {dt}")
        return dt

    def vector(self, v, dtype):
        """A per-channel vector or statistic (None stays None) as the kernels of ``dtype`` data take it:
        C-contiguous, in ``accumulation_dtype(dtype)`` (float32 for half data: a half vector is widened)."""
        if v is None:
            return None
        return self.c(v.astype(accumulation_dtype(dtype), copy=False))

    def on_device(self, a):
        """``a`` itself if it is an array of this GPU; a TypeError naming the fix otherwise."""
        if not isinstance(a, self.xp.ndarray):
            raise TypeError(
                f"expected arrays on {self.device} ({self.xp.__name__}.ndarray), got {type(a).__name__}; "
                "move the data with .to(device) first"
            )
        return a

    def c(self, a):
        """``a`` as a C-contiguous array (no copy when it already is; None stays None)."""
        return a if a is None or a.flags.c_contiguous else self.xp.ascontiguousarray(a)


def check_shape(where, what, a, shape) -> None:
    """ValueError unless ``a`` (None passes) has exactly ``shape``."""
    if a is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{where}: {what} must have shape {tuple(shape)}, got {tuple(a.shape)}")


def check_ncs(where, x, **per_channel) -> "tuple[int, int, int]":
    """``x`` must be an (N, C, S) array and each ``per_channel`` vector (None passes) of shape (C,)."""
    if x.ndim != 3:
        raise ValueError(f"{where}: x must be (N, C, S) (3-D), got shape {tuple(x.shape)}")
    N, C, S = x.shape
    for what, v in per_channel.items():
        check_shape(where, what, v, (C,))
    return N, C, S


def check_groups(where, C, groups) -> int:
    """``groups`` as an int, if it divides the C channels."""
    if int(groups) != groups or groups < 1 or C % groups:
        raise ValueError(f"{where}: groups must be a positive divisor of the {C} channels, got {groups!r}")
    return int(groups)


def check_window(where, shape, kh, kw, sh, sw, ph, pw) -> "tuple[int, int]":
    """The (OH, OW) of a sliding window over an (N, C, H, W) shape; ValueError if it does not fit."""
    if len(shape) != 4:
        raise ValueError(f"{where}: expected an (N, C, H, W) shape, got {tuple(shape)}")
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{where}: kernel and stride must be >= 1 and padding >= 0")
    oh = (shape[2] + 2 * ph - kh) // sh + 1
    ow = (shape[3] + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{where}: window ({kh}, {kw}) does not fit the padded input {tuple(shape[2:])}")
    return oh, ow


def geometry(*values) -> tuple:
    """Window geometry as the kernels' ``long long`` parameters."""
    return tuple(I64(v) for v in values)
