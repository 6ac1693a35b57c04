"""Reductions: sum, mean, max, min, var, std, logsumexp over axes.

``axis`` is None (all axes), an int or a tuple of ints (negative counts from
the end); ``keepdims`` keeps reduced axes with length 1. The gradient is
broadcast back over the reduced axes.
"""

from __future__ import annotations

import builtins

from .._ext._engine import Function

__all__ = ["normalize_axes", "sum", "mean", "max", "min", "var", "std", "logsumexp", "argmax", "argmin", "sum_to"]


_ALL_AXES = [tuple(range(n)) for n in range(33)]


def normalize_axes(axis, ndim, name="axis"):
    """Return ``axis`` as a sorted tuple of non-negative ints (None: all axes)."""
    if axis is None:
        return _ALL_AXES[ndim] if ndim < len(_ALL_AXES) else tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:
        return (axis % ndim,)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < builtins.max(ndim, 1):
            raise IndexError(f"{name} {a} is out of range for a tensor with {ndim} dimensions")
        a = a % ndim if ndim else 0
        if a in out:
            raise ValueError(f"{name} {a} appears more than once in {axis!r}")
        out.append(a)
    return tuple(sorted(out))


def _keep_shape(shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def _count(shape, axes):
    n = 1
    for a in axes:
        n *= shape[a]
    return n


class _Reduction(Function):
    def _expand(self, grad):
        """Reshape ``grad`` (an array or a Tensor) to keepdims form so it broadcasts against the input."""
        return grad if self.keepdims else grad.reshape(_keep_shape(self.in_shape, self.axes))

    def _spread(self, grad):
        """The Tensor ``grad`` broadcast back over the reduced axes (differentiable)."""
        from .shape import broadcast_to

        return broadcast_to(self._expand(grad), self.in_shape)


def _np_axis(axes, ndim):
    # NumPy reduces fastest over all axes when given axis=None.
    return None if len(axes) == ndim else axes


class Sum(_Reduction):
    def forward(self, x, axes=(), keepdims=False):
        self.in_shape, self.axes, self.keepdims = x.shape, axes, keepdims
        return x.sum(axis=_np_axis(axes, x.ndim), keepdims=keepdims)

    def backward(self, grad):
        return self.xp.broadcast_to(self._expand(grad), self.in_shape)

    def vjp(self, grad):
        return self._spread(grad)


class Mean(_Reduction):
    def forward(self, x, axes=(), keepdims=False):
        self.in_shape, self.axes, self.keepdims = x.shape, axes, keepdims
        return x.mean(axis=_np_axis(axes, x.ndim), keepdims=keepdims)

    def backward(self, grad):
        return self.xp.broadcast_to(self._expand(grad) / _count(self.in_shape, self.axes), self.in_shape)

    def vjp(self, grad):
        return self._spread(grad / float(_count(self.in_shape, self.axes)))


class _Extremum(_Reduction):
    def forward(self, x, axes=(), keepdims=False):
        if x.size == 0:
            raise ValueError(f"{type(self).__name__.lower()}() of an empty tensor has no identity")
        self.in_shape, self.axes, self.keepdims = x.shape, axes, keepdims
        out = self._reduce(x, axes)
        self.save_for_backward(x, out)
        return out if keepdims else out.reshape(tuple(s for i, s in enumerate(x.shape) if i not in axes))

    def backward(self, grad):
        return self._expand(grad) * self._mask(grad.dtype)

    def vjp(self, grad):  # the selection is piecewise constant
        from .elementwise import dropout_mask_mul

        return dropout_mask_mul(self._spread(grad), self._mask(grad.dtype))

    def _mask(self, dtype):
        """Where the extremum was taken; ties share the gradient evenly."""
        x, out = self.saved_tensors
        mask = (x == out).astype(dtype)
        mask /= mask.sum(axis=self.axes, keepdims=True)
        return mask


class Max(_Extremum):
    def _reduce(self, x, axes):
        return x.max(axis=axes, keepdims=True)


class Min(_Extremum):
    def _reduce(self, x, axes):
        return x.min(axis=axes, keepdims=True)


class Var(_Reduction):
    def forward(self, x, axes=(), correction=1, keepdims=False):
        self.in_shape, self.axes, self.keepdims = x.shape, axes, keepdims
        n = _count(x.shape, axes)
        self.denom = n - correction
        # Two passes (mean, then squared deviations) stay accurate when the
        # mean is large compared with the spread.
        centered = x - x.mean(axis=axes, keepdims=True)
        self.save_for_backward(centered)
        if self.denom <= 0:
            out = self.xp.full(_keep_shape(x.shape, axes), self.xp.nan, dtype=x.dtype)
            return out if keepdims else out.reshape(tuple(s for i, s in enumerate(x.shape) if i not in axes))
        return (centered * centered).sum(axis=axes, keepdims=keepdims) / self.denom

    def backward(self, grad):
        (centered,) = self.saved_tensors
        return self._expand(grad) * centered * (2.0 / self.denom)

    def vjp(self, grad):
        (x,) = self.inputs
        centered = x - mean(x, self.axes, keepdims=True)
        return self._expand(grad) * centered * (2.0 / self.denom)


class LogSumExp(_Reduction):
    def forward(self, x, axes=(), keepdims=False):
        xp = self.xp
        self.in_shape, self.axes, self.keepdims = x.shape, axes, keepdims
        m = x.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        out = xp.log(xp.exp(x - m).sum(axis=axes, keepdims=True)) + m
        self.save_for_backward(x, out)
        return out if keepdims else out.reshape(tuple(s for i, s in enumerate(x.shape) if i not in axes))

    def backward(self, grad):
        x, out = self.saved_tensors
        return self._expand(grad) * self.xp.exp(x - out)

    def vjp(self, grad):
        from .elementwise import exp

        (x,) = self.inputs
        return self._expand(grad) * exp(x - logsumexp(x, self.axes, keepdims=True))


def sum_to(x, shape):
    """Sum the Tensor ``x`` down to ``shape`` (the adjoint of broadcasting ``shape`` up to ``x.shape``).

    The differentiable twin of ``unbroadcast``, for ``vjp`` methods: sums
    the leading axes ``x`` has beyond ``shape`` and the axes where ``shape``
    has length 1. ``x`` itself when the shapes match.

    Example::

        g = minigrad.ones(4, 3)
        sum_to(g, (1, 3))     # tensor([[4., 4., 4.]])
    """
    shape = tuple(shape)
    if tuple(x.shape) == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and x.shape[i + lead] != 1)
    out = sum(x, axes, keepdims=True) if axes else x
    if lead:
        from .shape import reshape

        out = reshape(out, *shape)
    return out


def _reduce(cls, x, axis, keepdims, **kw):
    return cls.apply(x, axes=normalize_axes(axis, x.ndim), keepdims=bool(keepdims), **kw)


def sum(x, axis=None, keepdims=False):
    """Sum over ``axis`` (all axes when None)."""
    return _reduce(Sum, x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    """Arithmetic mean over ``axis``."""
    if x.dtype.kind != "f":
        raise TypeError(f"mean() needs a floating tensor, got dtype {x.dtype}; convert with .float()")
    return _reduce(Mean, x, axis, keepdims)


def max(x, axis=None, keepdims=False):
    """Maximum over ``axis`` (values only; see ``argmax`` for indices)."""
    return _reduce(Max, x, axis, keepdims)


def min(x, axis=None, keepdims=False):
    """Minimum over ``axis``."""
    return _reduce(Min, x, axis, keepdims)


def var(x, axis=None, keepdims=False, correction=1):
    """Variance over ``axis``: ``Σ(x-mean)²/(n - correction)``.

    ``correction=1`` (the default, as in PyTorch) is the unbiased estimate,
    ``correction=0`` the biased (population) one.
    """
    if x.dtype.kind != "f":
        raise TypeError(f"var() needs a floating tensor, got dtype {x.dtype}")
    return _reduce(Var, x, axis, keepdims, correction=correction)


def std(x, axis=None, keepdims=False, correction=1):
    """Standard deviation, ``sqrt(var(x, axis, keepdims, correction))``."""
    from .elementwise import sqrt

    return sqrt(var(x, axis, keepdims, correction))


def logsumexp(x, axis=None, keepdims=False):
    """``log(Σ exp(x))`` over ``axis``, computed stably."""
    return _reduce(LogSumExp, x, axis, keepdims)


def argmax(x, axis=None, keepdims=False):
    """Indices of the maxima along ``axis`` (int64, not differentiable)."""
    return _arg(x, axis, keepdims, "argmax")


def argmin(x, axis=None, keepdims=False):
    """Indices of the minima along ``axis`` (int64, not differentiable)."""
    return _arg(x, axis, keepdims, "argmin")


def _arg(x, axis, keepdims, name):
    from .._ext._engine import make_tensor

    if axis is not None:
        axis = normalize_axes(axis, x.ndim)
        if len(axis) != 1:
            raise ValueError(f"{name} takes a single axis, got {axis}")
        axis = axis[0]
    out = getattr(x.array, name)(axis=axis, keepdims=keepdims)
    return make_tensor(x.backend.xp.asarray(out, dtype="int64"), x.backend)
