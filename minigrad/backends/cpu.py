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

from .._ext import _conv, _elementwise
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

    # ------------------------------------------------ convolution & pooling
    # The Cython kernels take C-contiguous float32/float64 arrays; anything
    # else (integer tensors, say) takes the NumPy reference in base.py.

    def im2col(self, x, kh, kw, sh, sw, ph, pw):
        if not _kernel_dtype(x):
            return super().im2col(x, kh, kw, sh, sw, ph, pw)
        x = np.ascontiguousarray(x)
        n, c, h, w = x.shape
        oh = self.conv_output_size(h, kh, sh, ph)
        ow = self.conv_output_size(w, kw, sw, pw)
        cols = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
        _conv.im2col(x, cols, kh, kw, sh, sw, ph, pw)
        return cols

    def col2im(self, cols, x_shape, kh, kw, sh, sw, ph, pw):
        if not _kernel_dtype(cols):
            return super().col2im(cols, x_shape, kh, kw, sh, sw, ph, pw)
        n, c, h, w = x_shape
        oh = self.conv_output_size(h, kh, sh, ph)
        ow = self.conv_output_size(w, kw, sw, pw)
        cols = np.ascontiguousarray(cols).reshape(n, c * kh * kw, oh * ow)
        out = np.zeros((n, c, h, w), dtype=cols.dtype)
        _conv.col2im(cols, out, kh, kw, sh, sw, ph, pw)
        return out

    def max_pool2d_forward(self, x, kh, kw, sh, sw, ph, pw):
        if not _kernel_dtype(x):
            return super().max_pool2d_forward(x, kh, kw, sh, sw, ph, pw)
        n, c, h, w = x.shape
        oh = self.conv_output_size(h, kh, sh, ph)
        ow = self.conv_output_size(w, kw, sw, pw)
        planes = np.ascontiguousarray(x).reshape(n * c, h, w)
        y = np.empty((n * c, oh, ow), dtype=x.dtype)
        arg = np.empty((n * c, oh, ow), dtype=np.int64)
        _conv.max_pool2d_forward(planes, y, arg, h, w, kh, kw, sh, sw, ph, pw)
        return y.reshape(n, c, oh, ow), arg.reshape(n, c, oh, ow)

    def max_pool2d_backward(self, grad, argmax, x_shape):
        if not _kernel_dtype(grad):
            return super().max_pool2d_backward(grad, argmax, x_shape)
        n, c, h, w = x_shape
        g = np.ascontiguousarray(grad).reshape(n * c, grad.shape[2], grad.shape[3])
        arg = np.ascontiguousarray(argmax, dtype=np.int64).reshape(g.shape)
        dx = np.zeros((n * c, h * w), dtype=grad.dtype)
        _conv.max_pool2d_backward(g, arg, dx)
        return dx.reshape(x_shape)

    def avg_pool2d_forward(self, x, kh, kw, sh, sw, ph, pw, count_include_pad=True):
        if not _kernel_dtype(x):
            return super().avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, count_include_pad)
        n, c, h, w = x.shape
        oh = self.conv_output_size(h, kh, sh, ph)
        ow = self.conv_output_size(w, kw, sw, pw)
        y = np.empty((n * c, oh, ow), dtype=x.dtype)
        _conv.avg_pool2d_forward(np.ascontiguousarray(x).reshape(n * c, h, w), y, h, w, kh, kw, sh, sw, ph, pw,
                                 count_include_pad)
        return y.reshape(n, c, oh, ow)

    def avg_pool2d_backward(self, grad, x_shape, kh, kw, sh, sw, ph, pw, count_include_pad=True):
        if not _kernel_dtype(grad):
            return super().avg_pool2d_backward(grad, x_shape, kh, kw, sh, sw, ph, pw, count_include_pad)
        n, c, h, w = x_shape
        g = np.ascontiguousarray(grad).reshape(n * c, grad.shape[2], grad.shape[3])
        dx = np.zeros((n * c, h, w), dtype=grad.dtype)
        _conv.avg_pool2d_backward(g, dx, kh, kw, sh, sw, ph, pw, count_include_pad)
        return dx.reshape(x_shape)

    def erf(self, x):
        if not _kernel_dtype(x):
            return super().erf(x)
        flat = np.ascontiguousarray(x).reshape(-1)
        out = np.empty_like(flat)
        _elementwise.erf(flat, out)
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
        _elementwise.sgd_update(param.reshape(-1), g, flat_buf, lr, momentum, dampening, weight_decay,
                                nesterov, first)
        return buf

    def adam_update(self, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
        if not (_kernel_dtype(param) and param.flags.c_contiguous and grad.dtype == param.dtype):
            return super().adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                                       weight_decay)
        _elementwise.adam_update(param.reshape(-1), np.ascontiguousarray(grad).reshape(-1),
                                 exp_avg.reshape(-1), exp_avg_sq.reshape(-1), lr, beta1, beta2, eps,
                                 weight_decay, 1.0 - beta1**step, 1.0 - beta2**step)


    # ==================================================================
    # normalization kernels (minigrad/_ext/_norm.pyx, used by minigrad.norm)
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
        _norm_kernels().batch_norm_forward_train(x, _vector(weight, x), _vector(bias, x), float(eps), y, mean, var)
        return y, mean, var

    def channel_affine(self, x, scale, shift):
        if x.dtype not in _KERNEL_DTYPES:
            return super().channel_affine(x, scale, shift)
        x = _per_channel_layout(x)
        y = np.empty(x.shape, dtype=x.dtype)
        _norm_kernels().channel_affine(x, _vector(scale, x), _vector(shift, x), y)
        return y

    def batch_norm_forward_eval(self, x, mean, var, weight, bias, eps):
        if x.dtype not in _KERNEL_DTYPES:
            return super().batch_norm_forward_eval(x, mean, var, weight, bias, eps)
        x = _per_channel_layout(x)
        y = np.empty(x.shape, dtype=x.dtype)
        _norm_kernels().batch_norm_forward_eval(x, _vector(mean, x), _vector(var, x), _vector(weight, x),
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
        _norm_kernels().batch_norm_backward(grad, x, _vector(mean, x), _vector(invstd, x), _vector(weight, x),
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
        _norm_kernels().group_norm_forward(x, _vector(weight, x), _vector(bias, x), int(groups), float(eps), y,
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
        _norm_kernels().group_norm_backward(grad, x, _vector(mean, x), _vector(invstd, x), _vector(weight, x),
                                            int(groups), dx, dweight, dbias)
        return dx, dweight, dbias


# The dtypes the Cython kernels are compiled for (fused float/double).
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _kernel_dtype(a) -> bool:
    """Whether the Cython kernels handle this array's dtype."""
    return a.dtype in _KERNEL_DTYPES


# ---------------------------------------------- normalization kernel helpers
_NORM_MODULE = None


def _norm_kernels():
    """The compiled kernel module: the widest build the CPU can run.

    AVX-512 (``_norm_avx512``) where the processor and OS support it, else
    AVX2+FMA (``_norm_avx2``), else the portable baseline (``_norm``).
    ``MINIGRAD_NORM_SIMD=baseline`` (or ``avx2``) caps the choice, for
    tests and comparisons.
    """
    global _NORM_MODULE
    if _NORM_MODULE is None:
        import importlib

        from .._ext import _norm

        cap = os.environ.get("MINIGRAD_NORM_SIMD", "").strip().lower()
        order = [("_norm_avx512", _norm.cpu_has_avx512), ("_norm_avx2", _norm.cpu_has_avx2_fma)]
        if cap == "baseline":
            order = []
        elif cap == "avx2":
            order = order[1:]
        module = _norm
        for name, supported in order:
            if supported():
                try:
                    module = importlib.import_module(f".._ext.{name}", __package__)
                except ImportError:  # a build without this variant
                    continue
                break
        _NORM_MODULE = module
    return _NORM_MODULE


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
