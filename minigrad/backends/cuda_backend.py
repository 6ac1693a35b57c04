"""The CUDA backend: CuPy arrays, with minigrad's CUDA kernels where they pay off.

Generic math goes through CuPy's NumPy-compatible namespace (``xp = cupy``);
the fused kernels of ``Backend`` (batch and group normalization, im2col/col2im,
pooling, sigmoid, SGD/Adam steps) are overridden by the CUDA C++ templates
in ``kernels/*.cu``. This module is the dispatch: one short method per
kernel (choose the kernel or the reference, check shapes, allocate, launch).
Compiling, launch geometry and the host-side checks live in
``cuda_launch.py`` (Thinc's ``cupy_ops.py`` / ``_custom_kernels.py`` split).

Importing this module never imports CuPy: ``CUDABackend.is_available()``
and ``create()`` do, lazily, and ``create()`` raises
``CUDAUnavailableError`` saying whether CuPy, a GPU or a working kernel
compiler is missing.

Dtypes: float32/float64 run every kernel; float16 (and bfloat16, where
CuPy and ml_dtypes hold it) run the normalization kernels, which load half
values, compute in float and return float32 statistics and parameter
gradients (``Backend``'s convention), and use the ``xp`` reference
elsewhere. A per-channel vector of another dtype than a normalization
kernel's input (float32 or the input's own for a half input) is a
TypeError, as on the CPU backend. Only ``cuda:0`` is supported: the autograd engine does not make
a GPU current around each operation, which ``cuda:N`` for N > 0 would need.
"""

from __future__ import annotations

import numpy as np

from .._dtypes import accumulation_dtype
from .base import Backend
from .cuda_launch import (C_TYPES, F64, I32, I64, CUDAUnavailableError, Launcher, check_groups, check_ncs,
                          check_shape, check_window, cupy_import_error, geometry, import_cupy, probe)

__all__ = ["CUDABackend", "CUDAUnavailableError"]


class CUDABackend(Backend):
    """CuPy arrays on ``cuda:0``; RawModule kernels for the fused operations.

    ``xp`` (the array namespace) is the ``cupy`` module; tests may pass a
    stand-in module with the same interface. ``launcher`` holds the compiled
    kernels and the launch settings (threads per block, ...).
    """

    name = "cuda"

    _probe_result: "tuple[int, str | None] | None" = None

    def __init__(self, device, xp=None):
        super().__init__(device)
        if xp is None:
            xp = import_cupy()
            if xp is None:
                raise CUDAUnavailableError(self.unavailable_reason() or "CuPy could not be imported")
        self.xp = xp
        self.launcher = Launcher(xp, device)

    # ------------------------------------------------------ availability
    @classmethod
    def _probe(cls) -> "tuple[int, str | None]":
        """(number of GPUs, why none can be used): asked once per process (see ``cuda_launch.probe``)."""
        if cls._probe_result is None:
            cupy = import_cupy()
            if cupy is None:
                return 0, None
            cls._probe_result = probe(cupy)
        return cls._probe_result

    @classmethod
    def unavailable_reason(cls) -> "str | None":
        """Why "cuda" cannot be used here, naming what is missing; None when it can."""
        cupy = import_cupy()
        if cupy is None:
            err = cupy_import_error()
            return (
                f"CuPy is not installed or failed to import ({type(err).__name__}: {err}); "
                "install the GPU extra: pip install 'minigrad-bn[cuda]'"
            )
        why = cls._probe()[1]
        return None if why is None else f"CuPy {getattr(cupy, '__version__', '?')} is installed but {why}"

    @classmethod
    def is_available(cls) -> bool:
        """True when CuPy imports, the CUDA runtime sees a GPU and a test kernel compiles and runs on it."""
        return cls.unavailable_reason() is None

    @classmethod
    def device_count(cls) -> int:
        """Number of CUDA devices (0 without CuPy or a GPU)."""
        return cls._probe()[0] if import_cupy() is not None else 0

    @classmethod
    def create(cls, device) -> "CUDABackend":
        """The backend of ``device`` ("cuda:0"); raises if CuPy, a GPU or a kernel compiler is missing."""
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

    def _unit_uniform(self, shape, dtype):
        dt = np.dtype(dtype)
        return self.rng.random_sample(size=shape, dtype=dt if dt in C_TYPES else np.float32).astype(dt, copy=False)

    def randint(self, low, high, shape, dtype):
        return self.rng.randint(low, high, size=shape, dtype=dtype)

    def permutation(self, n):
        return self.rng.permutation(n).astype(np.int64, copy=False)

    # ----------------------------------------------- per-channel reductions
    # Two-stage reductions (batchnorm.cu): partial records per slice of a
    # channel, one block per channel merging them, then a flat pass.
    def batch_norm_forward_train(self, x, weight, bias, eps):
        dtype = self.launcher.norm_dtype(x, weight, bias)
        if dtype is None:
            return super().batch_norm_forward_train(x, weight, bias, eps)
        N, C, S = check_ncs("batch_norm_forward_train", x, weight=weight, bias=bias)
        if N * S == 0 and C > 0:
            raise ValueError(f"batch_norm_forward_train: batch statistics need at least one value per channel, "
                             f"got shape {tuple(x.shape)}")
        k, xp, acc = self.launcher, self.xp, accumulation_dtype(dtype)
        y, mean, var = xp.empty(x.shape, dtype=dtype), xp.empty((C,), dtype=acc), xp.empty((C,), dtype=acc)
        if C == 0:
            return y, mean, var
        x = k.c(x)
        partial, parts = k.channel_partials("stats", (x,), N, C, S, dtype)
        p = xp.empty((4, C), dtype=acc)  # mean_hi, mean_lo, scale, shift
        k.per_channel("bn_stats_finalize", dtype, C, parts,
                      (partial, I64(C), I64(parts), k.vector(weight, dtype), k.vector(bias, dtype), F64(eps), mean,
                       var, *p))
        self._affine(x, y, p[2], p[3], p[0], p[1])
        return y, mean, var

    def _affine(self, x, y, scale, shift, mean_hi=None, mean_lo=None):
        N, C, S = x.shape
        self.launcher.flat("channel_affine", x.dtype, self.launcher.vec_units(x.size, x.dtype),
                           (x, y, scale, shift, mean_hi, mean_lo, I64(x.size), I64(C), I64(S)))

    def channel_affine(self, x, scale, shift):
        dtype = self.launcher.norm_dtype(x, scale, shift)
        if dtype is None:
            return super().channel_affine(x, scale, shift)
        check_ncs("channel_affine", x, scale=scale, shift=shift)
        y = self.xp.empty(x.shape, dtype=dtype)
        self._affine(self.launcher.c(x), y, self.launcher.vector(scale, dtype), self.launcher.vector(shift, dtype))
        return y

    def batch_norm_forward_eval(self, x, mean, var, weight, bias, eps):
        dtype = self.launcher.norm_dtype(x, mean, var, weight, bias)
        if dtype is None:
            return super().batch_norm_forward_eval(x, mean, var, weight, bias, eps)
        check_ncs("batch_norm_forward_eval", x, mean=mean, var=var, weight=weight, bias=bias)
        # C values: the per-channel scale and shift are a few element-wise ops (in float64), the
        # N·C·S multiply-adds one channel_affine launch.
        scale, shift = self.batch_norm_eval_affine(mean, var, weight, bias, eps)
        y = self.xp.empty(x.shape, dtype=dtype)
        self._affine(self.launcher.c(x), y, self.launcher.vector(scale, dtype), self.launcher.vector(shift, dtype))
        return y

    def batch_norm_backward(self, grad, x, mean, invstd, weight, training):
        dtype = self.launcher.norm_dtype(x, mean, invstd, weight, grad=grad)
        if dtype is None:
            return super().batch_norm_backward(grad, x, mean, invstd, weight, training)
        N, C, S = check_ncs("batch_norm_backward", x, mean=mean, invstd=invstd, weight=weight)
        check_shape("batch_norm_backward", "grad", grad, x.shape)
        k, xp, acc = self.launcher, self.xp, accumulation_dtype(dtype)
        dx, dweight, dbias = xp.empty(x.shape, dtype=dtype), xp.empty((C,), dtype=acc), xp.empty((C,), dtype=acc)
        if N * S == 0 or C == 0:  # empty sums
            return dx, xp.zeros((C,), dtype=acc), xp.zeros((C,), dtype=acc)
        grad, x, mean = k.c(grad), k.c(x), k.vector(mean, dtype)
        # Per-channel statistics: index n·0 + c/1; invstd is applied per channel in stage 2.
        partial, parts = k.channel_partials("grad", (grad, x, mean, None), N, C, S, dtype, (I64(0), I64(1)))
        coef = xp.empty((3, C), dtype=acc)
        k.per_channel("bn_backward_finalize", dtype, C, parts,
                      (partial, I64(C), I64(parts), k.vector(invstd, dtype), k.vector(weight, dtype), I64(N * S),
                       I32(bool(training)), dweight, dbias, *coef))
        k.flat("bn_backward_dx", dtype, k.vec_units(x.size, dtype),
               (grad, x, mean, *coef, dx, I32(bool(training)), I64(x.size), I64(C), I64(S)))
        return dx, dweight, dbias

    # ------------------------------------------------- per-group normalization
    def group_norm_forward(self, x, weight, bias, groups, eps):
        dtype = self.launcher.norm_dtype(x, weight, bias)
        if dtype is None:
            return super().group_norm_forward(x, weight, bias, groups, eps)
        N, C, S = check_ncs("group_norm_forward", x, weight=weight, bias=bias)
        G = check_groups("group_norm_forward", C, groups)
        if C * S == 0 and N > 0:
            raise ValueError(f"group_norm_forward: rows must not be empty, got shape {tuple(x.shape)} with {G} group(s)")
        k, xp, acc = self.launcher, self.xp, accumulation_dtype(dtype)
        y, mean, invstd = xp.empty(x.shape, dtype=dtype), xp.empty((N, G), dtype=acc), xp.empty((N, G), dtype=acc)
        if N:
            k.rows("group_norm_forward", dtype, N * G, (C // G) * S,
                   (k.c(x), k.vector(weight, dtype), k.vector(bias, dtype), y, mean, invstd, I64(N), I64(C), I64(S),
                    I64(G), F64(eps)))
        return y, mean, invstd

    def group_norm_backward(self, grad, x, mean, invstd, weight, groups):
        dtype = self.launcher.norm_dtype(x, mean, invstd, weight, grad=grad)
        if dtype is None:
            return super().group_norm_backward(grad, x, mean, invstd, weight, groups)
        N, C, S = check_ncs("group_norm_backward", x, weight=weight)
        G = check_groups("group_norm_backward", C, groups)
        check_shape("group_norm_backward", "grad", grad, x.shape)
        check_shape("group_norm_backward", "mean", mean, (N, G))
        check_shape("group_norm_backward", "invstd", invstd, (N, G))
        k, xp, acc = self.launcher, self.xp, accumulation_dtype(dtype)
        dx, dweight, dbias = xp.empty(x.shape, dtype=dtype), xp.empty((C,), dtype=acc), xp.empty((C,), dtype=acc)
        if N * S == 0 or C == 0:  # empty sums
            return dx, xp.zeros((C,), dtype=acc), xp.zeros((C,), dtype=acc)
        grad, x, mean, invstd = k.c(grad), k.c(x), k.vector(mean, dtype), k.vector(invstd, dtype)
        k.rows("group_norm_backward", dtype, N * G, (C // G) * S,
               (grad, x, mean, invstd, k.vector(weight, dtype), dx, I64(N), I64(C), I64(S), I64(G)))
        # dweight/dbias: BatchNorm's per-channel sums, with the statistics of row (n, c/(C/G)): index n·G + c/(C/G).
        partial, parts = k.channel_partials("grad", (grad, x, mean, invstd), N, C, S, dtype, (I64(G), I64(C // G)))
        k.per_channel("bn_backward_finalize", dtype, C, parts,
                      (partial, I64(C), I64(parts), None, None, I64(N * S), I32(0), dweight, dbias, None, None, None))
        return dx, dweight, dbias

    # ---------------------------------------------------- convolution
    def _window_kernel(self, name, src, out, *sizes, flag=None):
        """Launch ``name(src, out, sizes..., [flag])``, one thread per element of ``out``; returns ``out``."""
        self.launcher.flat(name, out.dtype, out.size, (self.launcher.c(src), out, *geometry(*sizes),
                                                        *(() if flag is None else (I32(bool(flag)),))))
        return out

    def im2col(self, x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
        dtype = self.launcher.common_dtype(x)
        if dtype is None or (dh, dw) != (1, 1):  # no dilated kernel yet: the reference
            return super().im2col(x, kh, kw, sh, sw, ph, pw, dh, dw)
        oh, ow = check_window("im2col", x.shape, kh, kw, sh, sw, ph, pw)
        n, c, h, w = x.shape
        return self._window_kernel("im2col", x, self.xp.empty((n, c * kh * kw, oh * ow), dtype=dtype),
                                   n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow)

    def col2im(self, cols, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
        dtype = self.launcher.common_dtype(cols)
        if dtype is None or (dh, dw) != (1, 1):  # no dilated kernel yet: the reference
            return super().col2im(cols, x_shape, kh, kw, sh, sw, ph, pw, dh, dw)
        oh, ow = check_window("col2im", x_shape, kh, kw, sh, sw, ph, pw)
        n, c, h, w = (int(s) for s in x_shape)
        check_shape("col2im", "cols", cols, (n, c * kh * kw, oh * ow))
        return self._window_kernel("col2im", cols, self.xp.empty((n, c, h, w), dtype=dtype),
                                   n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow)

    # -------------------------------------------------------- pooling
    def max_pool2d_forward(self, x, kh, kw, sh, sw, ph, pw, ceil_mode=False):
        dtype = self.launcher.common_dtype(x)
        if dtype is None or ceil_mode:  # no ceil_mode kernel yet: the reference
            return super().max_pool2d_forward(x, kh, kw, sh, sw, ph, pw, ceil_mode)
        oh, ow = check_window("max_pool2d_forward", x.shape, kh, kw, sh, sw, ph, pw)
        n, c, h, w = x.shape
        y = self.xp.empty((n, c, oh, ow), dtype=dtype)
        argmax = self.xp.empty((n, c, oh, ow), dtype=np.int64)
        self.launcher.flat("max_pool2d_forward", dtype, y.size,
                           (self.launcher.c(x), y, argmax, *geometry(n * c, h, w, kh, kw, sh, sw, ph, pw, oh, ow)))
        return y, argmax

    def max_pool2d_backward(self, grad, argmax, x_shape):
        dtype = self.launcher.common_dtype(grad)
        if dtype is None:
            return super().max_pool2d_backward(grad, argmax, x_shape)
        if len(x_shape) != 4 or grad.ndim != 4:
            raise ValueError(f"max_pool2d_backward: expected 4-D grad and x_shape, got {tuple(grad.shape)}, {tuple(x_shape)}")
        check_shape("max_pool2d_backward", "argmax", argmax, grad.shape)
        if self.launcher.on_device(argmax).dtype != np.int64:
            raise TypeError(f"max_pool2d_backward: argmax must be an int64 array on {self.device}")
        n, c, h, w = (int(s) for s in x_shape)
        if tuple(grad.shape[:2]) != (n, c):
            raise ValueError(f"max_pool2d_backward: grad {tuple(grad.shape)} does not match x_shape {tuple(x_shape)}")
        dx = self.xp.zeros((n, c, h, w), dtype=dtype)
        self.launcher.flat("max_pool2d_backward", dtype, grad.size,
                           (self.launcher.c(grad), self.launcher.c(argmax), dx, *geometry(n * c, h * w, grad.shape[2] * grad.shape[3])))
        return dx

    def avg_pool2d_forward(self, x, kh, kw, sh, sw, ph, pw, count_include_pad=True, ceil_mode=False):
        dtype = self.launcher.common_dtype(x)
        if dtype is None or ceil_mode:  # no ceil_mode kernel yet: the reference
            return super().avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, count_include_pad, ceil_mode)
        oh, ow = check_window("avg_pool2d_forward", x.shape, kh, kw, sh, sw, ph, pw)
        n, c, h, w = x.shape
        return self._window_kernel("avg_pool2d_forward", x, self.xp.empty((n, c, oh, ow), dtype=dtype),
                                   n * c, h, w, kh, kw, sh, sw, ph, pw, oh, ow, flag=count_include_pad)

    def avg_pool2d_backward(self, grad, x_shape, kh, kw, sh, sw, ph, pw, count_include_pad=True):
        dtype = self.launcher.common_dtype(grad)
        if dtype is None or _ceil_mode_output(self, grad, x_shape, kh, kw, sh, sw, ph, pw):
            # no ceil_mode kernel yet: the reference
            return super().avg_pool2d_backward(grad, x_shape, kh, kw, sh, sw, ph, pw, count_include_pad)
        oh, ow = check_window("avg_pool2d_backward", x_shape, kh, kw, sh, sw, ph, pw)
        n, c, h, w = (int(s) for s in x_shape)
        check_shape("avg_pool2d_backward", "grad", grad, (n, c, oh, ow))
        return self._window_kernel("avg_pool2d_backward", grad, self.xp.empty((n, c, h, w), dtype=dtype),
                                   n * c, h, w, kh, kw, sh, sw, ph, pw, oh, ow, flag=count_include_pad)

    # --------------------------------------------- fused elementwise ops
    def sigmoid(self, x):
        dtype = self.launcher.common_dtype(x)
        if dtype is None:
            return super().sigmoid(x)
        y = self.xp.empty(x.shape, dtype=dtype)
        self.launcher.flat("sigmoid", dtype, self.launcher.vec_units(y.size, dtype),
                           (self.launcher.c(x), y, I64(y.size)))
        return y

    def erf(self, x):
        import cupyx.scipy.special  # part of CuPy (an elementwise kernel; SciPy itself is not needed)

        return cupyx.scipy.special.erf(x).astype(x.dtype, copy=False)

    # In-place updates: a parameter or state that is not C-contiguous (or of
    # mixed dtypes) takes the reference, which updates any layout in place.
    def sgd_update(self, param, grad, buf, lr, momentum, dampening, weight_decay, nesterov):
        dtype = self.launcher.common_dtype(param, grad, buf)
        if dtype is None or not all(a.flags.c_contiguous for a in (param, buf) if a is not None):
            return super().sgd_update(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov)
        check_shape("sgd_update", "grad", grad, param.shape)
        check_shape("sgd_update", "momentum buffer", buf, param.shape)
        first = momentum != 0 and buf is None
        if first:
            buf = self.xp.empty(param.shape, dtype=dtype)
        t = dtype.type
        self.launcher.flat("sgd_update", dtype, self.launcher.vec_units(param.size, dtype),
                           (param, self.launcher.c(grad), buf if momentum else None, I64(param.size), t(lr),
                            t(momentum), t(1.0 - dampening), t(weight_decay), I32(bool(nesterov)), I32(first)))
        return buf

    def adam_update(self, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
        dtype = self.launcher.common_dtype(param, grad, exp_avg, exp_avg_sq)
        if dtype is None or not all(a.flags.c_contiguous for a in (param, exp_avg, exp_avg_sq)):
            return super().adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)
        for what, a in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
            check_shape("adam_update", what, a, param.shape)
        if step < 1:
            raise ValueError(f"adam_update: step must be >= 1, got {step}")
        t = dtype.type
        self.launcher.flat("adam_update", dtype, self.launcher.vec_units(param.size, dtype),
                           (param, self.launcher.c(grad), exp_avg, exp_avg_sq, I64(param.size), t(beta1),
                            t(1.0 - beta1), t(beta2), t(1.0 - beta2), t(lr / (1.0 - beta1**step)),
                            t(1.0 - beta2**step), t(eps), t(weight_decay)))


def _ceil_mode_output(backend, grad, x_shape, kh, kw, sh, sw, ph, pw):
    """Whether ``grad`` has the size of a ceil_mode pooling output that differs from the floor one."""
    if grad.ndim != 4 or len(x_shape) != 4:
        return False
    sizes = [(x_shape[2], kh, sh, ph), (x_shape[3], kw, sw, pw)]
    floor = tuple(backend.conv_output_size(n, k, s, p) for n, k, s, p in sizes)
    ceil = tuple(backend.conv_output_size(n, k, s, p, 1, True) for n, k, s, p in sizes)
    return tuple(grad.shape[2:]) == ceil != floor
