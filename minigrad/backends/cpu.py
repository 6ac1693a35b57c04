"""The CPU backend: NumPy arrays, with minigrad's Cython kernels where they pay off.

Overrides keep the base signatures; everything not overridden falls back to
the NumPy reference in ``base.py``. The Cython kernels take contiguous
arrays, so the wrappers here make non-contiguous inputs contiguous first
(a copy) and validate what a kernel cannot check itself.
"""

from __future__ import annotations

import numpy as np

from .._ext import _conv, _elementwise
from .base import Backend

__all__ = ["CPUBackend"]


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
        # Another device's to_numpy already returns a fresh host copy.
        host = source.to_numpy(array)
        return host.copy() if source.name == "cpu" else host

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


def _kernel_dtype(a) -> bool:
    """Whether the Cython kernels handle this array's dtype."""
    return a.dtype == np.float32 or a.dtype == np.float64
