"""The CPU backend: NumPy arrays, with minigrad's Cython kernels where they pay off.

Overrides keep the base signatures; everything not overridden falls back to
the NumPy reference in ``base.py``. The Cython kernels take contiguous
arrays, so the wrappers here make non-contiguous inputs contiguous first
(a copy) and validate what a kernel cannot check itself.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from .base import Backend

__all__ = ["CPUBackend"]


def _keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS.

    A training step frees and re-allocates the same megabyte-sized arrays
    every time. By default glibc serves such sizes with fresh ``mmap``s (or
    trims them off the heap when freed), so every step pays a page fault per
    4 KiB touched, inside the kernels; on 2 cores that doubled the time of
    the seed CNN's step (measured: docs/benchmarks.md). Arrays below 32 MiB
    (the largest threshold glibc accepts) now come from the heap, and the
    heap is not trimmed below 1 GiB of free space. The cost is that a
    process keeps its peak memory. ``MINIGRAD_MALLOC_TUNING=0`` opts out;
    elsewhere than glibc this does nothing. Returns whether it was applied.
    """
    if os.environ.get("MINIGRAD_MALLOC_TUNING", "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30)
                and mallopt(m_top_pad, 64 << 20))


MALLOC_TUNED = _keep_freed_memory()


def _cache_large_arrays() -> bool:
    """Keep a few freed NumPy buffers of 32 MiB and more for the next array of the same size.

    Above glibc's largest mmap threshold every array is a fresh mapping,
    faulted in page by page inside the kernels that first write it (a
    float64 BatchNorm2d of (32, 64, 56, 56) is 51 MB: its training step
    measured 13-15 ms, with single steps of 80-115 ms). The cache
    (``minigrad/_ext/_memory.h``) holds at most 256 MiB of freed blocks
    (``MINIGRAD_ARRAY_CACHE_MB``; 0 turns it off) and serves only requests of
    exactly a cached size, in the thread that imports minigrad (NumPy keeps
    its allocator per context). Returns whether it was installed.
    """
    mb = os.environ.get("MINIGRAD_ARRAY_CACHE_MB", "256").strip()
    try:
        cap = int(mb) << 20
    except ValueError:
        raise ValueError(f"MINIGRAD_ARRAY_CACHE_MB must be a number of MiB, got {mb!r}") from None
    if cap <= 0:
        return False
    from .._ext import _memory

    _memory.install(cap)
    return True


ARRAY_CACHE = _cache_large_arrays()

# Matrix products (matmul, Linear, convolution) run in minigrad's own thread team (_gemm.pxi).
# MINIGRAD_CPU_MATMUL=blas sends them to NumPy's BLAS instead (its own thread pool, limited to the same
# budget through threadpoolctl): the alternative that benchmarks/bench.py compares against.
MATMUL_IN_TEAM = os.environ.get("MINIGRAD_CPU_MATMUL", "team").strip().lower() != "blas"


class CPUBackend(Backend):
    """NumPy arrays; Cython kernels for the fused operations."""

    name = "cpu"
    xp = np

    def asarray(self, data, dtype=None):
        return np.asarray(data, dtype=dtype)

    def to_numpy(self, array):
        return array

    def from_numpy(self, array):
        return np.array(array, copy=True)

    def transfer(self, array, source):
        # A device's to_numpy returns a fresh host copy; a backend on host memory hands out its own array
        # or a view of it, which the new tensor must not share.
        host = source.to_numpy(array)
        return host.copy() if host is array or host.base is not None else host

    def manual_seed(self, seed):
        self._seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self._seed))

    # ------------------------------------------------ matrix products
    def matmul(self, a, b):
        if not (MATMUL_IN_TEAM and a.dtype == b.dtype and a.dtype in _KERNEL_DTYPES and a.ndim and b.ndim):
            return super().matmul(a, b)
        if a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[0]:  # the common case, without broadcasting
            out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
            if out.size:
                _kernels().matmul(a[None], b[None], out[None])
            return out
        # NumPy's rules: a vector is a matrix of one row (a) or one column (b), dropped from the result
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        m, k = a2.shape[-2:]
        if b2.shape[-2] != k:
            return super().matmul(a, b)  # NumPy's error message
        n = b2.shape[-1]
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        out = np.empty(batch + (m, n), dtype=a.dtype)
        if out.size:
            nb = out.size // (m * n)
            _kernels().matmul(_batched(a2, batch, nb), _batched(b2, batch, nb), out.reshape(nb, m, n))
        if b.ndim == 1:
            out = out[..., 0]
        if a.ndim == 1:
            out = out[..., 0, :] if b.ndim > 1 else out[..., 0]
        return out

    # ------------------------------------------------ convolution & pooling
    # The kernels take C-contiguous float32/float64 arrays (the wrappers copy
    # anything else once); other dtypes (integer tensors, say) take the NumPy
    # reference in base.py.
    def im2col(self, x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
        if not _kernel_dtype(x):
            return super().im2col(x, kh, kw, sh, sw, ph, pw, dh, dw)
        n, c, h, w = x.shape
        cols = np.empty((n, c * kh * kw, self.conv_output_size(h, kh, sh, ph, dh)
                         * self.conv_output_size(w, kw, sw, pw, dw)), dtype=x.dtype)
        _kernels().im2col(np.ascontiguousarray(x), cols, kh, kw, sh, sw, ph, pw, dh, dw)
        return cols

    def col2im(self, cols, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
        if not _kernel_dtype(cols):
            return super().col2im(cols, x_shape, kh, kw, sh, sw, ph, pw, dh, dw)
        n, c, h, w = x_shape
        cols = np.ascontiguousarray(cols).reshape(n, c * kh * kw, self.conv_output_size(h, kh, sh, ph, dh)
                                                  * self.conv_output_size(w, kw, sw, pw, dw))
        out = np.empty((n, c, h, w), dtype=cols.dtype)
        _kernels().col2im(cols, out, kh, kw, sh, sw, ph, pw, dh, dw)
        return out

    def conv2d_forward(self, x, weight, bias, stride, padding, dilation, groups):
        if not (MATMUL_IN_TEAM and _kernel_dtype(x) and weight.dtype == x.dtype
                and (bias is None or bias.dtype == x.dtype)):
            return super().conv2d_forward(x, weight, bias, stride, padding, dilation, groups)
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        n, c, h, w = x.shape
        o, cg, kh, kw = weight.shape
        oh = self.conv_output_size(h, kh, sh, ph, dh)
        ow = self.conv_output_size(w, kw, sw, pw, dw)
        x = np.ascontiguousarray(x)
        y = np.empty((n, o, oh, ow), dtype=x.dtype)
        pointwise = kh == kw == sh == sw == 1 and ph == pw == 0
        # The backward pass needs every image's columns; a 1x1 convolution's are the input itself.
        cols = None if pointwise else np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
        _kernels().conv2d_forward(x, np.ascontiguousarray(weight), None if bias is None else np.ascontiguousarray(bias),
                                  y, cols, sh, sw, ph, pw, dh, dw, groups)
        return y, (x.reshape(n, c, h * w) if pointwise else cols)

    def conv2d_backward(self, grad, x_shape, weight, saved, stride, padding, dilation, groups, needs):
        if not (MATMUL_IN_TEAM and _kernel_dtype(grad) and weight.dtype == grad.dtype
                and (saved is None or saved.dtype == grad.dtype)):  # no saved columns when only dx is wanted
            return super().conv2d_backward(grad, x_shape, weight, saved, stride, padding, dilation, groups, needs)
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        n, o, oh, ow = grad.shape
        g = np.ascontiguousarray(grad).reshape(n, o, oh * ow)
        weight = np.ascontiguousarray(weight)
        gx = gw = gb = None
        k = _kernels()
        if needs[0]:
            gx = np.empty(x_shape, dtype=grad.dtype)
            k.conv2d_backward_input(g, weight, gx, sh, sw, ph, pw, dh, dw, groups)
        if needs[1] or needs[2]:
            gw2 = np.empty((o, int(np.prod(weight.shape[1:]))), dtype=grad.dtype)
            gb = np.empty(o, dtype=grad.dtype) if needs[2] else None
            k.conv2d_backward_weight(g, saved, gw2, gb, groups)
            gw = gw2.reshape(weight.shape) if needs[1] else None
        return gx, gw, gb

    def max_pool2d_forward(self, x, kh, kw, sh, sw, ph, pw, ceil_mode=False):
        if not _kernel_dtype(x):
            return super().max_pool2d_forward(x, kh, kw, sh, sw, ph, pw, ceil_mode)
        n, c, h, w = x.shape
        oh = self.conv_output_size(h, kh, sh, ph, 1, ceil_mode)
        ow = self.conv_output_size(w, kw, sw, pw, 1, ceil_mode)
        y = np.empty((n * c, oh, ow), dtype=x.dtype)
        arg = np.empty((n * c, oh, ow), dtype=np.int64)
        _kernels().max_pool2d_forward(np.ascontiguousarray(x).reshape(n * c, h, w), y, arg, kh, kw, sh, sw, ph, pw)
        return y.reshape(n, c, oh, ow), arg.reshape(n, c, oh, ow)

    def max_pool2d_backward(self, grad, argmax, x_shape):
        if not _kernel_dtype(grad):
            return super().max_pool2d_backward(grad, argmax, x_shape)
        n, c, h, w = x_shape
        g = np.ascontiguousarray(grad).reshape(n * c, grad.shape[2], grad.shape[3])
        arg = np.ascontiguousarray(argmax, dtype=np.int64).reshape(g.shape)
        dx = np.empty((n * c, h * w), dtype=grad.dtype)
        _kernels().max_pool2d_backward(g, arg, dx)
        return dx.reshape(x_shape)

    def avg_pool2d_forward(self, x, kh, kw, sh, sw, ph, pw, count_include_pad=True, ceil_mode=False):
        if not _kernel_dtype(x):
            return super().avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, count_include_pad, ceil_mode)
        n, c, h, w = x.shape
        oh = self.conv_output_size(h, kh, sh, ph, 1, ceil_mode)
        ow = self.conv_output_size(w, kw, sw, pw, 1, ceil_mode)
        y = np.empty((n * c, oh, ow), dtype=x.dtype)
        _kernels().avg_pool2d_forward(np.ascontiguousarray(x).reshape(n * c, h, w), y, kh, kw, sh, sw, ph, pw,
                                      count_include_pad)
        return y.reshape(n, c, oh, ow)

    def avg_pool2d_backward(self, grad, x_shape, kh, kw, sh, sw, ph, pw, count_include_pad=True):
        if not _kernel_dtype(grad):
            return super().avg_pool2d_backward(grad, x_shape, kh, kw, sh, sw, ph, pw, count_include_pad)
        n, c, h, w = x_shape
        g = np.ascontiguousarray(grad).reshape(n * c, grad.shape[2], grad.shape[3])
        dx = np.empty((n * c, h, w), dtype=grad.dtype)
        _kernels().avg_pool2d_backward(g, dx, kh, kw, sh, sw, ph, pw, count_include_pad)
        return dx.reshape(x_shape)

    def adaptive_avg_pool2d_forward(self, x, oh, ow):
        if not _kernel_dtype(x):
            return super().adaptive_avg_pool2d_forward(x, oh, ow)
        n, c, h, w = x.shape
        y = np.empty((n * c, oh, ow), dtype=x.dtype)
        _kernels().adaptive_avg_pool2d_forward(np.ascontiguousarray(x).reshape(n * c, h, w), y)
        return y.reshape(n, c, oh, ow)

    def adaptive_avg_pool2d_backward(self, grad, x_shape):
        if not _kernel_dtype(grad):
            return super().adaptive_avg_pool2d_backward(grad, x_shape)
        n, c, h, w = x_shape
        g = np.ascontiguousarray(grad).reshape(n * c, grad.shape[2], grad.shape[3])
        dx = np.empty((n * c, h, w), dtype=grad.dtype)
        _kernels().adaptive_avg_pool2d_backward(g, dx)
        return dx.reshape(x_shape)

    # ------------------------------------------------- elementwise
    # One kernel per direction over flat C-ordered copies (activation forward: x -> y; backward from the
    # forward's output: grad, y -> dx); other dtypes, or mismatched arrays, go to the reference.
    def relu(self, x):
        return _flat_forward("relu_forward", x) if _kernel_dtype(x) else super().relu(x)

    def relu_backward(self, grad, y):
        if not _flat_backward_applies(grad, y):
            return super().relu_backward(grad, y)
        return _flat_backward("relu_backward", grad, y)

    def sigmoid(self, x):
        return _flat_forward("sigmoid_forward", x) if _kernel_dtype(x) else super().sigmoid(x)

    def sigmoid_backward(self, grad, y):
        if not _flat_backward_applies(grad, y):
            return super().sigmoid_backward(grad, y)
        return _flat_backward("sigmoid_backward", grad, y)

    def erf(self, x):
        if not _kernel_dtype(x):
            return super().erf(x)
        flat = np.ascontiguousarray(x).reshape(-1)
        out = np.empty_like(flat)
        _kernels().erf(flat, out)
        return out.reshape(x.shape)

    # ------------------------------------------------- optimizer updates
    def sgd_update(self, param, grad, buf, lr, momentum, dampening, weight_decay, nesterov):
        if not (_kernel_dtype(param) and param.flags.c_contiguous and grad.dtype == param.dtype):
            return super().sgd_update(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov)
        first = momentum != 0 and buf is None
        if first:
            buf = np.empty_like(param)
        g = np.ascontiguousarray(grad).reshape(-1)
        flat_buf = buf.reshape(-1) if buf is not None else param.reshape(-1)
        _kernels().sgd_update(param.reshape(-1), g, flat_buf, lr, momentum, dampening, weight_decay, nesterov, first)
        return buf

    def sgd_update_multi(self, params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov):
        # One kernel call for the whole list. The kernel checks every array before it writes any, so a
        # list it refuses (a float16 parameter, a non-contiguous gradient) is done one at a time instead.
        new = [np.empty_like(p) if b is None else b for p, b in zip(params, bufs)] if momentum else bufs
        try:
            _kernels().sgd_update_multi(params, grads, new, [b is None for b in bufs], lr, momentum, dampening,
                                        weight_decay, nesterov)
        except TypeError:
            return super().sgd_update_multi(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov)
        return new

    def adam_update(self, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
        if not (_kernel_dtype(param) and param.flags.c_contiguous and grad.dtype == param.dtype):
            return super().adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                                       weight_decay)
        _kernels().adam_update(param.reshape(-1), np.ascontiguousarray(grad).reshape(-1), exp_avg.reshape(-1),
                               exp_avg_sq.reshape(-1), lr, beta1, beta2, eps, weight_decay, 1.0 - beta1**step,
                               1.0 - beta2**step)

    def adam_update_multi(self, params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                          decay=1.0):
        # As sgd_update_multi: one call, or one parameter at a time for a list the kernel refuses.
        try:
            _kernels().adam_update_multi(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps,
                                         weight_decay, decay)
        except TypeError:
            super().adam_update_multi(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps,
                                      weight_decay, decay)

    # ==================================================================
    # normalization kernels (minigrad/_ext/_batchnorm.pxi, _groupnorm.pxi, used by minigrad.norm)
    #
    # float32/float64 go to the fused Cython kernels; other dtypes (float16)
    # fall back to the NumPy reference. Inputs whose last axis is strided
    # are copied once; any other layout (channel slices, transposed batch
    # axes) is read in place. Arguments arrive validated (norm/functional.py
    # checks shapes, dtypes and devices and answers empty inputs).
    # ==================================================================
    def batch_norm_forward_train(self, x, weight, bias, eps):
        if x.dtype not in _KERNEL_DTYPES:
            return super().batch_norm_forward_train(x, weight, bias, eps)
        x = _per_channel_layout(x)
        n, c, s = x.shape
        y = np.empty((n, c, s), dtype=x.dtype)
        mean = np.empty(c, dtype=x.dtype)
        var = np.empty(c, dtype=x.dtype)
        _kernels().batch_norm_forward_train(x, _vector(weight, x), _vector(bias, x), float(eps), y, mean, var)
        return y, mean, var

    def cross_entropy_forward(self, x, target, ignore_index):
        if not (_kernel_dtype(x) and target.dtype == np.int64 and x.ndim == 2):
            return super().cross_entropy_forward(x, target, ignore_index)
        x = _c_order(x)
        probs = np.empty(x.shape, dtype=x.dtype)
        total, count = _kernels().cross_entropy_forward(x, _c_order(target), int(ignore_index), probs)
        return total, count, probs

    def cross_entropy_backward(self, probs, target, ignore_index, scale):
        if not (_kernel_dtype(probs) and target.dtype == np.int64 and probs.ndim == 2):
            return super().cross_entropy_backward(probs, target, ignore_index, scale)
        probs = _c_order(probs)
        dx = np.empty(probs.shape, dtype=probs.dtype)
        _kernels().cross_entropy_backward(probs, _c_order(target), int(ignore_index), float(scale), dx)
        return dx

    def batch_norm_update_stats(self, running_mean, running_var, mean, var, factor, unbias):
        if not (running_mean.dtype in _KERNEL_DTYPES and running_mean.dtype == running_var.dtype == mean.dtype
                == var.dtype):
            return super().batch_norm_update_stats(running_mean, running_var, mean, var, factor, unbias)
        _kernels().batch_norm_update_stats(running_mean, running_var, mean, var, factor, unbias)

    def channel_affine(self, x, scale, shift):
        if x.dtype not in _KERNEL_DTYPES:
            return super().channel_affine(x, scale, shift)
        x = _per_channel_layout(x)
        y = np.empty(x.shape, dtype=x.dtype)
        _kernels().channel_affine(x, _vector(scale, x), _vector(shift, x), y)
        return y

    def batch_norm_forward_eval(self, x, mean, var, weight, bias, eps):
        if x.dtype not in _KERNEL_DTYPES:
            return super().batch_norm_forward_eval(x, mean, var, weight, bias, eps)
        x = _per_channel_layout(x)
        y = np.empty(x.shape, dtype=x.dtype)
        _kernels().batch_norm_forward_eval(x, _vector(mean, x), _vector(var, x), _vector(weight, x),
                                                _vector(bias, x), float(eps), y)
        return y

    def batch_norm_backward(self, grad, x, mean, invstd, weight, training):
        if x.dtype not in _KERNEL_DTYPES or grad.dtype != x.dtype:
            return super().batch_norm_backward(grad, x, mean, invstd, weight, training)
        x = _per_channel_layout(x)
        grad = _per_channel_layout(grad)
        dx = np.empty(x.shape, dtype=x.dtype)
        c = x.shape[1]
        dweight = np.empty(c, dtype=x.dtype)
        dbias = np.empty(c, dtype=x.dtype)
        _kernels().batch_norm_backward(grad, x, _vector(mean, x), _vector(invstd, x), _vector(weight, x),
                                            bool(training), dx, dweight, dbias)
        return dx, dweight, dbias

    def group_norm_forward(self, x, weight, bias, groups, eps):
        if x.dtype not in _KERNEL_DTYPES:
            return super().group_norm_forward(x, weight, bias, groups, eps)
        x = _per_channel_layout(x)
        n, c, s = x.shape
        y = np.empty((n, c, s), dtype=x.dtype)
        mean = np.empty((n, groups), dtype=x.dtype)
        invstd = np.empty((n, groups), dtype=x.dtype)
        _kernels().group_norm_forward(x, _vector(weight, x), _vector(bias, x), int(groups), float(eps), y,
                                           mean, invstd)
        return y, mean, invstd

    def group_norm_backward(self, grad, x, mean, invstd, weight, groups):
        if x.dtype not in _KERNEL_DTYPES or grad.dtype != x.dtype:
            return super().group_norm_backward(grad, x, mean, invstd, weight, groups)
        x = _per_channel_layout(x)
        grad = _per_channel_layout(grad)
        c = x.shape[1]
        dx = np.empty(x.shape, dtype=x.dtype)
        dweight = np.empty(c, dtype=x.dtype)
        dbias = np.empty(c, dtype=x.dtype)
        _kernels().group_norm_backward(grad, x, _vector(mean, x), _vector(invstd, x), _vector(weight, x),
                                            int(groups), dx, dweight, dbias)
        return dx, dweight, dbias


# The dtypes the Cython kernels are compiled for (fused float/double).
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _kernel_dtype(a) -> bool:
    """Whether the Cython kernels handle this array's dtype."""
    return a.dtype in _KERNEL_DTYPES


# ---------------------------------------------------------- kernel helpers
_KERNELS = None


def _kernels():
    """The compiled kernel module: the widest build the CPU can run.

    AVX-512 (``_kernels_avx512``) where the processor and OS support it, else
    AVX2+FMA (``_kernels_avx2``), else the portable baseline (``_kernels``).
    A build the processor cannot run refuses to import (ImportError), so
    trying them widest first is safe. ``MINIGRAD_SIMD=baseline`` (or
    ``avx2``) caps the choice, for tests and comparisons.
    """
    global _KERNELS
    if _KERNELS is None:
        import importlib

        cap = os.environ.get("MINIGRAD_SIMD", "").strip().lower()
        order = ["_kernels_avx512", "_kernels_avx2", "_kernels"]
        for name in order[{"avx2": 1, "baseline": 2}.get(cap, 0):]:
            try:
                _KERNELS = importlib.import_module(f".._ext.{name}", __package__)
            except ImportError:  # this processor cannot run it, or a build without this variant
                continue
            break
    return _KERNELS


def _flat_forward(kernel, x):
    """``y = kernel(x)`` elementwise through the flat Cython kernel of that name."""
    x = _c_order(x)
    y = np.empty(x.shape, dtype=x.dtype)
    getattr(_kernels(), kernel)(x.reshape(-1), y.reshape(-1))
    return y


def _flat_backward_applies(grad, y) -> bool:
    """Whether an activation's flat backward kernel takes (grad, y): a kernel dtype, one dtype, one shape."""
    return _kernel_dtype(grad) and y.dtype == grad.dtype and grad.shape == y.shape


def _flat_backward(kernel, grad, y):
    """``dx = kernel(grad, y)`` elementwise through the flat Cython kernel of that name."""
    grad, y = _c_order(grad), _c_order(y)
    dx = np.empty(grad.shape, dtype=grad.dtype)
    getattr(_kernels(), kernel)(grad.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx


def _c_order(a):
    """``a`` itself when C-contiguous, else a C-contiguous copy of the same shape (NumPy's
    ``ascontiguousarray`` turns a 0-d array into a 1-d one)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _batched(a, batch, nb):
    """``a`` (..., M, K) broadcast to ``batch`` + (M, K), as a 3-D (nb, M, K) view (a copy only when the
    batch axes cannot be merged into one strided axis)."""
    return np.broadcast_to(a, batch + a.shape[-2:]).reshape((nb,) + a.shape[-2:])


def _inner_contiguous(a):
    """``a`` itself when its last axis has unit stride (all the kernels need), else a contiguous copy."""
    if a.shape[-1] > 1 and a.strides[-1] != a.itemsize:
        return np.ascontiguousarray(a)
    return a


def _per_channel_layout(x):
    """An (N, C, S) array the per-channel kernels read fast.

    For S = 1 (BatchNorm1d on (N, C)) the kernels walk rows of channels,
    which needs unit stride along C; otherwise unit stride along S.
    """
    if x.shape[2] == 1:
        if x.shape[1] > 1 and x.strides[1] != x.itemsize:
            return np.ascontiguousarray(x)
        return x
    return _inner_contiguous(x)


def _vector(v, like):
    """A per-channel vector (or (N, G) statistics) as the kernels take it (None stays None):
    C-contiguous, x's dtype. The normalizers never pass another dtype (norm/functional.py checks);
    a direct call that does gets the same TypeError as from the CUDA backend."""
    if v is None:
        return None
    if v.dtype != like.dtype:
        raise TypeError(f"normalization kernel: vector of dtype {v.dtype} for an input of dtype {like.dtype}")
    return np.ascontiguousarray(v)
