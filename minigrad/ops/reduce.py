"""Reductions: sum, mean, max, min, amax, amin, var, std, logsumexp, argmax, argmin.

``dim`` (or NumPy's ``axis``) is None (all dimensions), an int or a tuple of
ints (negative counts from the end; out of range is an IndexError, see
``minigrad.ops.dims``); ``keepdim`` (or ``keepdims``) keeps reduced
dimensions with length 1. The gradient is broadcast back over the reduced
dimensions. ``max``/``min`` follow PyTorch: the overall extremum, the
``(values, indices)`` named tuple along one ``dim``, or the elementwise
extremum of two tensors.
"""

from __future__ import annotations

from .._dtypes import is_floating
from .. import return_types
from .._ext._engine import Function, TensorBase, make_tensor
from .dims import dim_arg, keepdim_arg, normalize_dim, normalize_dims
from .elementwise import dropout_mask_mul, exp, maximum, minimum, sqrt
from .shape import broadcast_to, getitem, reshape, squeeze, sum_to

__all__ = ["sum", "mean", "max", "min", "amax", "amin", "var", "std", "logsumexp", "argmax", "argmin", "sum_to"]


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
        (x,) = self.inputs
        return self._expand(grad) * exp(x - logsumexp(x, self.axes, keepdims=True))


def _reduce(cls, x, dim, axis, keepdim, keepdims, **kw):
    axes = normalize_dims(dim_arg(dim, axis), x.ndim)
    return cls.apply(x, axes=axes, keepdims=keepdim_arg(keepdim, keepdims), **kw)


def sum(input, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Sum over ``dim`` (all dimensions when None).

    Example::

        >>> import minigrad as mg
        >>> mg.sum(mg.tensor([[1, 2], [3, 4]]), dim=1)
        tensor([3, 7])
    """
    return _reduce(Sum, input, dim, axis, keepdim, keepdims)


def mean(input, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Arithmetic mean over ``dim`` (all dimensions when None); needs a floating tensor."""
    if not is_floating(input.dtype):
        raise TypeError(f"mean() needs a floating tensor, got dtype {input.dtype}; convert with .float()")
    return _reduce(Mean, input, dim, axis, keepdim, keepdims)


def amax(input, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Maximum over one or several dimensions (values only; ties share the gradient evenly)."""
    return _reduce(Max, input, dim, axis, keepdim, keepdims)


def amin(input, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Minimum over one or several dimensions (values only; ties share the gradient evenly)."""
    return _reduce(Min, input, dim, axis, keepdim, keepdims)


def _extremum(name, input, dim, keepdim, axis, keepdims, reduce_all, elementwise):
    dim = dim_arg(dim, axis)
    if isinstance(dim, TensorBase):  # max(a, b): the elementwise maximum, as torch.max(input, other)
        return elementwise(input, dim)
    if dim is None:
        if keepdim or keepdims:
            raise TypeError(f"{name}(): keepdim needs a dim")
        return reduce_all(input)
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"{name}(): dim must be an int, got {dim!r}; use a{name}() to reduce several dims")
    d = normalize_dim(dim, input.ndim)
    keep = keepdim_arg(keepdim, keepdims)
    if input.ndim and input.shape[d] == 0:
        raise IndexError(f"{name}(): expected reduction dim {d} to have non-zero size")
    indices = _arg(input, d, True, f"arg{name}")
    values = _gather(input, indices, d)
    if not keep and input.ndim:
        values, indices = squeeze(values, d), squeeze(indices, d)
    return getattr(return_types, name)(values, indices)


def _gather(x, indices, d):
    """``x`` at ``indices`` (keepdim form) along dimension ``d``, differentiably (through indexing)."""
    if x.ndim == 0:
        return x
    xp = x.backend.xp
    index = tuple(
        indices if i == d else make_tensor(xp.arange(n).reshape([-1 if j == i else 1 for j in range(x.ndim)]),
                                           x.backend)
        for i, n in enumerate(x.shape)
    )
    return getitem(x, index)


def max(input, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """PyTorch's ``max``: ``max(x)`` is the largest value (a 0-d tensor); ``max(x, dim)`` the named tuple
    ``(values, indices)`` along ``dim``; ``max(x, other)`` with a Tensor ``other`` the elementwise maximum.

    Along ``dim`` the gradient goes to the selected element; for ``max(x)``
    ties share it evenly. Use ``amax`` to reduce several dimensions at once.

    Example::

        >>> import minigrad as mg
        >>> values, indices = mg.max(mg.tensor([[1., 5.], [7., 2.]]), dim=1)
        >>> values, indices
        (tensor([5., 7.]), tensor([1, 0]))
    """
    return _extremum("max", input, dim, keepdim, axis, keepdims, amax, maximum)


def min(input, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """PyTorch's ``min``: the smallest value, ``(values, indices)`` along ``dim``, or the elementwise
    minimum of two tensors (see ``max``)."""
    return _extremum("min", input, dim, keepdim, axis, keepdims, amin, minimum)


def var(input, dim=None, keepdim=False, correction=1, *, unbiased=None, axis=None, keepdims=None):
    """Variance over ``dim``: ``Σ(x-mean)²/(n - correction)``.

    ``correction=1`` (the default, as in PyTorch) is the unbiased estimate,
    ``correction=0`` the biased (population) one; ``unbiased=False`` is
    PyTorch's older spelling of ``correction=0``.
    """
    if not is_floating(input.dtype):
        raise TypeError(f"var() needs a floating tensor, got dtype {input.dtype}")
    if unbiased is not None:
        correction = int(bool(unbiased))
    return _reduce(Var, input, dim, axis, keepdim, keepdims, correction=correction)


def std(input, dim=None, keepdim=False, correction=1, *, unbiased=None, axis=None, keepdims=None):
    """Standard deviation, ``sqrt(var(input, dim, keepdim, correction))``."""
    return sqrt(var(input, dim, keepdim, correction, unbiased=unbiased, axis=axis, keepdims=keepdims))


def logsumexp(input, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """``log(Σ exp(x))`` over ``dim``, computed stably."""
    return _reduce(LogSumExp, input, dim, axis, keepdim, keepdims)


def argmax(input, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Indices of the maxima along ``dim`` (of the flattened tensor when None); int64, not differentiable."""
    return _arg(input, dim_arg(dim, axis), keepdim_arg(keepdim, keepdims), "argmax")


def argmin(input, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Indices of the minima along ``dim`` (of the flattened tensor when None); int64, not differentiable."""
    return _arg(input, dim_arg(dim, axis), keepdim_arg(keepdim, keepdims), "argmin")


def _arg(x, dim, keepdim, name):
    if x.array.size == 0:
        raise IndexError(f"{name}(): cannot take the {name} of an empty tensor")
    if dim is not None:
        dim = normalize_dim(dim, x.ndim)
        if x.ndim == 0:
            dim = None
    out = getattr(x.array, name)(axis=dim, keepdims=keepdim)
    return make_tensor(x.backend.xp.asarray(out, dtype="int64"), x.backend)
