"""2-D max, average and adaptive average pooling on (N, C, H, W) through the backend's kernels,
with PyTorch's arguments (``ceil_mode``, ``count_include_pad``) and output sizes."""

from __future__ import annotations

from .._dtypes import is_floating
from .._ext._engine import Function
from .conv import pair

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


class MaxPool2d(Function):
    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), ceil_mode=False):
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        y, self.argmax = self.backend.max_pool2d_forward(x, kh, kw, sh, sw, ph, pw, ceil_mode)
        self.x_shape = x.shape
        return y

    def backward(self, grad):
        return self.backend.max_pool2d_backward(grad, self.argmax, self.x_shape)

    def vjp(self, grad):  # the selection is piecewise constant: the gradient is a scatter
        return MaxPoolScatter.apply(grad, argmax=self.argmax, x_shape=self.x_shape)


class MaxPoolScatter(Function):
    """``max_pool2d``'s backward as a node: scatter a (N, C, OH, OW) gradient to the chosen pixels.

    Linear in its input; its adjoint (``vjp``) gathers at the same pixels,
    and the gather's adjoint is this scatter, so any order works.
    """

    def forward(self, grad, argmax=None, x_shape=None):
        self.argmax, self.out_shape = argmax, grad.shape
        return self.backend.max_pool2d_backward(grad, argmax, x_shape)

    def backward(self, gg):
        n, c, oh, ow = self.out_shape
        flat = gg.reshape(n * c, -1)
        return self.xp.take_along_axis(flat, self.argmax.reshape(n * c, oh * ow), axis=1).reshape(self.out_shape)

    def vjp(self, gg):
        return MaxPoolGather.apply(gg, argmax=self.argmax, x_shape=gg.shape)


class MaxPoolGather(Function):
    """The adjoint of ``MaxPoolScatter``: each pooled position reads the pixel its window chose."""

    def forward(self, gg, argmax=None, x_shape=None):
        self.argmax, self.x_shape = argmax, x_shape
        n, c, oh, ow = argmax.shape
        flat = gg.reshape(n * c, -1)
        return self.xp.take_along_axis(flat, argmax.reshape(n * c, oh * ow), axis=1).reshape(argmax.shape)

    def backward(self, grad):
        return self.backend.max_pool2d_backward(grad, self.argmax, self.x_shape)

    def vjp(self, grad):
        return MaxPoolScatter.apply(grad, argmax=self.argmax, x_shape=self.x_shape)


class AvgPool2d(Function):
    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), ceil_mode=False, count_include_pad=True):
        self.arguments = dict(kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                              count_include_pad=count_include_pad)
        self.params = kernel + stride + padding + (count_include_pad,)
        self.x_shape = x.shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        return self.backend.avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, count_include_pad, ceil_mode)

    def backward(self, grad):
        return self.backend.avg_pool2d_backward(grad, self.x_shape, *self.params)

    def vjp(self, grad):  # average pooling is linear: its backward is its adjoint, and back
        backend, x_shape, params = self.backend, self.x_shape, self.params
        return _LinearAdjoint.apply(grad, apply_adjoint=lambda g: backend.avg_pool2d_backward(g, x_shape, *params),
                                    pooling=AvgPool2d, arguments=self.arguments)


class AdaptiveAvgPool2d(Function):
    def forward(self, x, output_size=(1, 1)):
        self.arguments = dict(output_size=output_size)
        self.x_shape = x.shape
        return self.backend.adaptive_avg_pool2d_forward(x, *output_size)

    def backward(self, grad):
        return self.backend.adaptive_avg_pool2d_backward(grad, self.x_shape)

    def vjp(self, grad):
        backend, x_shape = self.backend, self.x_shape
        return _LinearAdjoint.apply(grad, apply_adjoint=lambda g: backend.adaptive_avg_pool2d_backward(g, x_shape),
                                    pooling=AdaptiveAvgPool2d, arguments=self.arguments)


class _LinearAdjoint(Function):
    """The backward of a linear pooling node as a node of its own: ``Aᵀ·g`` through the node's backward
    kernel; its ``vjp`` applies ``A`` again (the pooling Function with the same arguments)."""

    def forward(self, grad, apply_adjoint=None, pooling=None, arguments=None):
        self.pooling, self.arguments = pooling, arguments
        return apply_adjoint(grad)

    def vjp(self, gg):
        return self.pooling.apply(gg, **self.arguments)


def _pool_args(name, x, kernel_size, stride, padding, dilation=1):
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding")
    if pair(dilation, "dilation") != (1, 1):
        raise NotImplementedError(f"{name}: dilation other than 1 is not supported")
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


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Maximum over ``kernel_size`` windows of (N, C, H, W) (stride defaults to the kernel size).

    Output size ``(H + 2·padding - kernel) / stride + 1`` rounded down, or up
    with ``ceil_mode`` (a window may then run past the input, never starting
    in the right padding). Padding never wins; a NaN does.

    Example::

        import minigrad as mg
        y = mg.nn.functional.max_pool2d(mg.randn(1, 2, 5, 5), 2, ceil_mode=True)   # (1, 2, 3, 3)
    """
    if return_indices:
        raise NotImplementedError("max_pool2d: return_indices=True is not supported")
    kernel, stride, padding = _pool_args("max_pool2d", input, kernel_size, stride, padding, dilation)
    return MaxPool2d.apply(input, kernel=kernel, stride=stride, padding=padding, ceil_mode=bool(ceil_mode))


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over ``kernel_size`` windows of (N, C, H, W) with zero padding (PyTorch's argument order).

    The divisor is the window's size clipped to the padded input when
    ``count_include_pad``, else the number of its pixels inside the input;
    ``ceil_mode`` as in ``max_pool2d``.

    Example::

        import minigrad as mg
        y = mg.nn.functional.avg_pool2d(mg.randn(1, 2, 4, 4), 2)   # (1, 2, 2, 2)
    """
    if divisor_override is not None:
        raise NotImplementedError("avg_pool2d: divisor_override is not supported")
    if not is_floating(input.dtype):
        raise TypeError(f"avg_pool2d needs a floating tensor, got dtype {input.dtype}")
    kernel, stride, padding = _pool_args("avg_pool2d", input, kernel_size, stride, padding)
    return AvgPool2d.apply(input, kernel=kernel, stride=stride, padding=padding, ceil_mode=bool(ceil_mode),
                           count_include_pad=bool(count_include_pad))


def adaptive_avg_pool2d(input, output_size):
    """Average pooling of (N, C, H, W) or (C, H, W) to a given ``output_size`` (an int, a pair; None keeps
    that input size).

    Output (i, j) averages rows ``[floor(i·H/OH), ceil((i+1)·H/OH))`` and the
    columns likewise (PyTorch's windows; they overlap when OH does not
    divide H). ``output_size=1`` is global average pooling.

    Example::

        import minigrad as mg
        y = mg.nn.functional.adaptive_avg_pool2d(mg.randn(2, 8, 7, 7), 1)   # (2, 8, 1, 1)
    """
    if input.ndim not in (3, 4):
        raise ValueError(f"adaptive_avg_pool2d: input must be (N, C, H, W) or (C, H, W), got shape "
                         f"{tuple(input.shape)}")
    if not is_floating(input.dtype):
        raise TypeError(f"adaptive_avg_pool2d needs a floating tensor, got dtype {input.dtype}")
    oh, ow = pair(output_size, "adaptive_avg_pool2d: output_size", allow_none=True)
    h, w = input.shape[-2:]
    oh, ow = h if oh is None else oh, w if ow is None else ow
    if min(oh, ow) < 0:
        raise ValueError(f"adaptive_avg_pool2d: output_size must hold non-negative ints, got {output_size!r}")
    if (h == 0 or w == 0) and oh * ow:
        raise ValueError(f"adaptive_avg_pool2d: cannot pool an empty ({h}, {w}) input to ({oh}, {ow})")
    if input.ndim == 3:
        return AdaptiveAvgPool2d.apply(input.unsqueeze(0), output_size=(oh, ow)).squeeze(0)
    return AdaptiveAvgPool2d.apply(input, output_size=(oh, ow))
