"""2-D max and average pooling on (N, C, H, W) through the backend's kernels."""

from __future__ import annotations

from .._ext._engine import Function
from .conv import pair

__all__ = ["max_pool2d", "avg_pool2d"]


class MaxPool2d(Function):
    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0)):
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        y, self.argmax = self.backend.max_pool2d_forward(x, kh, kw, sh, sw, ph, pw)
        self.x_shape = x.shape
        return y

    def backward(self, grad):
        return self.backend.max_pool2d_backward(grad, self.argmax, self.x_shape)


class AvgPool2d(Function):
    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), count_include_pad=True):
        self.params = kernel + stride + padding + (count_include_pad,)
        self.x_shape = x.shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        return self.backend.avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, count_include_pad)

    def backward(self, grad):
        return self.backend.avg_pool2d_backward(grad, self.x_shape, *self.params)


def _pool_args(name, x, kernel_size, stride, padding):
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding")
    if x.ndim != 4:
        raise ValueError(f"{name}: input must be (N, C, H, W), got shape {tuple(x.shape)}")
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"{name}: kernel and stride must be >= 1 and padding >= 0")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{name}: padding {padding} must be at most half the kernel size {kernel}")
    h, w = x.shape[2:]
    if h + 2 * padding[0] < kernel[0] or w + 2 * padding[1] < kernel[1]:
        raise ValueError(f"{name}: kernel {kernel} is larger than the padded input ({h}, {w})")
    return kernel, stride, padding


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Maximum over ``kernel_size`` windows (stride defaults to the kernel size)."""
    kernel, stride, padding = _pool_args("max_pool2d", x, kernel_size, stride, padding)
    return MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Mean over ``kernel_size`` windows; zero padding counted when ``count_include_pad``."""
    if x.dtype.kind != "f":
        raise TypeError(f"avg_pool2d needs a floating tensor, got dtype {x.dtype}")
    kernel, stride, padding = _pool_args("avg_pool2d", x, kernel_size, stride, padding)
    return AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding,
                           count_include_pad=count_include_pad)
