"""2-D convolution as im2col + matrix multiply (the backend's im2col/col2im
kernels do the unfolding; BLAS does the arithmetic)."""

from __future__ import annotations

from .._ext._engine import Function
from .linalg import check_same_kind

__all__ = ["conv2d", "pair"]


def pair(value, name):
    """Normalize an int or a pair of ints to a tuple of two non-negative ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (a, b)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(a), int(b)


class Conv2d(Function):
    def forward(self, x, weight, bias=None, stride=(1, 1), padding=(0, 0)):
        backend, xp = self.backend, self.xp
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        (sh, sw), (ph, pw) = stride, padding
        oh = backend.conv_output_size(h, kh, sh, ph)
        ow = backend.conv_output_size(w, kw, sw, pw)
        cols = backend.im2col(x, kh, kw, sh, sw, ph, pw)          # (N, C·kh·kw, OH·OW)
        w2 = weight.reshape(o, -1)                                 # (O, C·kh·kw)
        out = xp.matmul(w2, cols)                                  # (N, O, OH·OW)
        if bias is not None:
            out += bias[None, :, None]
        self.save_for_backward(cols, weight)
        self.geometry = (x.shape, kh, kw, sh, sw, ph, pw)
        return out.reshape(n, o, oh, ow)

    def backward(self, grad):
        cols, weight = self.saved_tensors
        x_shape, kh, kw, sh, sw, ph, pw = self.geometry
        xp = self.xp
        n, o = grad.shape[:2]
        g = grad.reshape(n, o, -1)                                 # (N, O, L)
        need = self.needs_input_grad
        gx = gw = gb = None
        if need[0]:
            dcols = xp.matmul(weight.reshape(o, -1).T, g)          # (N, C·kh·kw, L)
            gx = self.backend.col2im(dcols, x_shape, kh, kw, sh, sw, ph, pw)
        if need[1]:
            # Σ_n g_n @ cols_nᵀ as one BLAS call over the merged (N, L) axes.
            gw = xp.tensordot(g, cols, axes=([0, 2], [0, 2])).reshape(weight.shape)
        if len(need) > 2 and need[2]:
            gb = g.sum(axis=(0, 2))
        return gx, gw, gb


def conv2d(input, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation of ``input`` (N, C, H, W) with ``weight`` (O, C, kh, kw).

    Output (N, O, OH, OW) with ``OH = (H + 2·pad - kh)//stride + 1``; zero padding.
    """
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    check_same_kind("conv2d", input, weight)
    if input.ndim != 4:
        raise ValueError(f"conv2d: input must be (N, C, H, W), got shape {tuple(input.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be (O, C, kh, kw), got shape {tuple(weight.shape)}")
    if input.shape[1] != weight.shape[1]:
        raise ValueError(
            f"conv2d: input has {input.shape[1]} channels but the weight expects {weight.shape[1]} "
            f"(weight shape {tuple(weight.shape)})"
        )
    if min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"conv2d: stride must be >= 1 and padding >= 0, got {stride} and {padding}")
    kh, kw = weight.shape[2:]
    h, w = input.shape[2:]
    if h + 2 * padding[0] < kh or w + 2 * padding[1] < kw:
        raise ValueError(
            f"conv2d: kernel ({kh}, {kw}) is larger than the padded input ({h + 2 * padding[0]}, {w + 2 * padding[1]})"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    args = (input, weight) if bias is None else (input, weight, bias)
    return Conv2d.apply(*args, stride=stride, padding=padding)
