"""2-D convolution through the backend's ``conv2d_forward``/``conv2d_backward`` kernels (im2col and
matrix products; on the CPU fused per image and run in minigrad's own thread team).

PyTorch's arguments: stride, zero padding (an int, a pair, ``"valid"`` or
``"same"``), dilation and groups.
"""

from __future__ import annotations

from .._ext._engine import Function
from .linalg import check_same_kind

__all__ = ["conv2d", "pair", "conv_padding"]


def pair(value, name, allow_none=False):
    """Normalize an int or a pair of ints (or None, where ``allow_none``) to a tuple of two."""
    if (isinstance(value, int) and not isinstance(value, bool)) or (allow_none and value is None):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if not all((isinstance(v, int) and not isinstance(v, bool)) or (allow_none and v is None) for v in (a, b)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return tuple(v if v is None else int(v) for v in (a, b))


def conv_padding(padding, kernel, stride, dilation, fname="conv2d"):
    """``padding`` as PyTorch takes it (an int, a pair, ``"valid"``, ``"same"``) → ``(pad, extra)``.

    ``pad`` is the symmetric zero padding of each side; ``extra`` the one more
    row/column that ``"same"`` needs at the bottom/right when the dilated
    kernel's size is even (PyTorch puts the odd one there too).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ValueError(f"{fname}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"{fname}: padding='same' is not supported for strided convolutions (stride {stride})")
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple(t // 2 for t in total), tuple(t - t // 2 * 2 for t in total)
    pad = pair(padding, "padding")
    if min(pad) < 0:
        raise ValueError(f"{fname}: padding must be >= 0, got {pad}")
    return pad, (0, 0)


class Conv2d(Function):
    def forward(self, x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, extra=(0, 0)):
        if extra != (0, 0):  # "same" with an even dilated kernel: the odd row/column of zeros at the end
            x = self.xp.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
        y, saved = self.backend.conv2d_forward(x, weight, bias, stride, padding, dilation, groups)
        self.save_for_backward(saved, weight)
        self.geometry = (x.shape, stride, padding, dilation, groups, extra)
        return y

    def backward(self, grad):
        saved, weight = self.saved_tensors
        x_shape, stride, padding, dilation, groups, extra = self.geometry
        need = self.needs_input_grad
        gx, gw, gb = self.backend.conv2d_backward(grad, x_shape, weight, saved, stride, padding, dilation, groups,
                                                  (need[0], need[1], len(need) > 2 and need[2]))
        if gx is not None and extra != (0, 0):
            gx = gx[:, :, : x_shape[2] - extra[0], : x_shape[3] - extra[1]]
        return gx, gw, gb

    def vjp(self, grad):
        # T(x, W, g) = <g, conv(x, W)> is trilinear: dx = convᵀ(g, W) and dW = corr(x, g) are two
        # more bilinear nodes whose vjps are conv, convᵀ and corr again, to any order.
        from .reduce import sum as _sum
        from .shape import Scatter, getitem

        x, weight = self.inputs[0], self.inputs[1]
        x_shape, stride, padding, dilation, groups, extra = self.geometry
        geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        need = self.needs_input_grad
        gx = gw = gb = None
        # x_shape includes the extra row/column of "same" padding: work at that size, crop or pad around it.
        crop = (slice(None), slice(None), slice(0, x.shape[2]), slice(0, x.shape[3]))
        if need[0]:
            gx = ConvGradInput.apply(grad, weight, x_shape=x_shape, **geometry)
            if extra != (0, 0):
                gx = getitem(gx, crop)
        if need[1]:
            xp = x if extra == (0, 0) else Scatter.apply(x, index=crop, advanced=False, shape=x_shape)
            gw = ConvGradWeight.apply(xp, grad, w_shape=weight.shape, **geometry)
        if len(need) > 2 and need[2]:
            gb = _sum(grad, (0, 2, 3))
        return gx, gw, gb


class ConvGradInput(Function):
    """``convᵀ(g, W)``: the gradient of conv2d with respect to its input, as a node of its own."""

    def forward(self, grad, weight, x_shape=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
        self.geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        gx, _, _ = self.backend.conv2d_backward(grad, x_shape, weight, None, stride, padding, dilation, groups,
                                                (True, False, False))
        return gx

    def vjp(self, ggx):
        grad, weight = self.inputs
        need = self.needs_input_grad
        d_grad = Conv2d.apply(ggx, weight, **self.geometry) if need[0] else None
        d_weight = ConvGradWeight.apply(ggx, grad, w_shape=weight.shape, **self.geometry) if need[1] else None
        return d_grad, d_weight


class ConvGradWeight(Function):
    """``corr(x, g)``: the gradient of conv2d with respect to its weight, as a node of its own."""

    def forward(self, x, grad, w_shape=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
        self.geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        probe = self.xp.zeros(w_shape, dtype=x.dtype)  # the columns of x come from a forward pass
        _, saved = self.backend.conv2d_forward(x, probe, None, stride, padding, dilation, groups)
        _, gw, _ = self.backend.conv2d_backward(grad, x.shape, probe, saved, stride, padding, dilation, groups,
                                                (False, True, False))
        return gw

    def vjp(self, ggw):
        x, grad = self.inputs
        need = self.needs_input_grad
        d_x = ConvGradInput.apply(grad, ggw, x_shape=x.shape, **self.geometry) if need[0] else None
        d_grad = Conv2d.apply(x, ggw, **self.geometry) if need[1] else None
        return d_x, d_grad


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation of ``input`` (N, C, H, W) with ``weight`` (O, C/groups, kh, kw), plus ``bias`` (O,).

    Output (N, O, OH, OW) with
    ``OH = (H + 2·padding - dilation·(kh - 1) - 1) // stride + 1`` (the same
    along W), zero padding. ``padding`` may be ``"valid"`` (none) or
    ``"same"`` (output the size of the input; stride 1 only). ``groups``
    splits the channels into independent blocks: output channel o sees input
    channels of its block only (``groups = C`` is a depthwise convolution).

    Example::

        import minigrad as mg
        x = mg.randn(2, 4, 8, 8)
        y = mg.nn.functional.conv2d(x, mg.randn(6, 2, 3, 3), padding="same", groups=2)   # (2, 6, 8, 8)
    """
    check_same_kind("conv2d", input, weight)
    if input.ndim != 4:
        raise ValueError(f"conv2d: input must be (N, C, H, W), got shape {tuple(input.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be (O, C/groups, kh, kw), got shape {tuple(weight.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"conv2d: stride and dilation must be >= 1, got {stride} and {dilation}")
    n, c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    if c % groups or o % groups:
        raise ValueError(f"conv2d: groups={groups} must divide the input channels ({c}) and the output channels "
                         f"({o})")
    if cg * groups != c:
        raise ValueError(
            f"conv2d: input has {c} channels but the weight expects {cg * groups} "
            f"({cg} per group, {groups} groups; weight shape {tuple(weight.shape)})"
        )
    if min(kh, kw) < 1:
        raise ValueError(f"conv2d: the kernel must be at least 1x1, got weight shape {tuple(weight.shape)}")
    padding, extra = conv_padding(padding, (kh, kw), stride, dilation)
    eff = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    if h + 2 * padding[0] + extra[0] < eff[0] or w + 2 * padding[1] + extra[1] < eff[1]:
        raise ValueError(
            f"conv2d: the kernel {eff} (dilated) is larger than the padded input "
            f"({h + 2 * padding[0] + extra[0]}, {w + 2 * padding[1] + extra[1]})"
        )
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"conv2d: bias must have shape ({o},), got {tuple(bias.shape)}")
    args = (input, weight) if bias is None else (input, weight, bias)
    return Conv2d.apply(*args, stride=stride, padding=padding, dilation=dilation, groups=groups, extra=extra)
