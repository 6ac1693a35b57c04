"""Shape operations: reshape, permute/transpose, broadcast_to, indexing,
concatenate and stack. Each returns a view where the backend can."""

from __future__ import annotations

import numbers

import numpy as np

from .._ext._engine import Function, TensorBase, unbroadcast
from .dims import dim_arg, normalize_dim, normalize_dims

__all__ = ["reshape", "permute", "transpose", "broadcast_to", "sum_to", "getitem", "concatenate", "stack",
           "squeeze", "unsqueeze", "flatten"]


class Reshape(Function):
    def forward(self, x, shape=()):
        self.in_shape = x.shape
        return x.reshape(shape)

    def backward(self, grad):
        return grad.reshape(self.in_shape)

    def vjp(self, grad):
        return reshape(grad, self.in_shape)


class Permute(Function):
    def forward(self, x, axes=()):
        self.inverse = tuple(np.argsort(axes))
        return x.transpose(axes)

    def backward(self, grad):
        return grad.transpose(self.inverse)

    def vjp(self, grad):
        return permute(grad, *self.inverse)


class BroadcastTo(Function):
    def forward(self, x, shape=()):
        self.in_shape = x.shape
        return self.xp.broadcast_to(x, shape)

    def backward(self, grad):
        return unbroadcast(grad, self.in_shape)

    def vjp(self, grad):
        return sum_to(grad, self.in_shape)


class SumTo(Function):
    """Broadcasting's adjoint: the two are each other's gradient, so they live together."""

    def forward(self, x, shape=()):
        self.in_shape = x.shape
        return unbroadcast(x, shape)

    def backward(self, grad):
        return self.xp.broadcast_to(grad, self.in_shape)

    def vjp(self, grad):
        return broadcast_to(grad, self.in_shape)


class GetItem(Function):
    def forward(self, x, index=None, advanced=False):
        self.in_shape, self.index, self.advanced = x.shape, index, advanced
        return x[index]

    def backward(self, grad):
        return _scatter(self.backend, grad, self.index, self.advanced, self.in_shape)

    def vjp(self, grad):
        return Scatter.apply(grad, index=self.index, advanced=self.advanced, shape=self.in_shape)


class Scatter(Function):
    """Place ``g`` at ``index`` of zeros of ``shape`` (adding repeated indices): the adjoint of indexing.

    ``GetItem`` and ``Scatter`` are each other's vjp, so indexing can be
    differentiated to any order.
    """

    def forward(self, g, index=None, advanced=False, shape=()):
        self.index, self.advanced = index, advanced
        return _scatter(self.backend, g, index, advanced, shape)

    def backward(self, grad):
        return grad[self.index]

    def vjp(self, grad):
        return GetItem.apply(grad, index=self.index, advanced=self.advanced)


def _scatter(backend, g, index, advanced, shape):
    out = backend.xp.zeros(shape, dtype=g.dtype)
    if advanced:
        # Repeated indices must accumulate, which plain assignment would not.
        backend.index_add(out, index, g)
    else:
        out[index] = g
    return out


class Concatenate(Function):
    def forward(self, *arrays, axis=0):
        self.axis = axis
        self.sizes = [a.shape[axis] for a in arrays]
        return self.xp.concatenate(arrays, axis=axis)

    def backward(self, grad):
        bounds = np.cumsum(self.sizes)[:-1].tolist()
        return tuple(self.xp.split(grad, bounds, axis=self.axis))

    def vjp(self, grad):
        out, start = [], 0
        lead = (slice(None),) * self.axis
        for size in self.sizes:
            out.append(getitem(grad, lead + (slice(start, start + size),)))
            start += size
        return tuple(out)


class Stack(Function):
    def forward(self, *arrays, axis=0):
        self.axis = axis
        return self.xp.stack(arrays, axis=axis)

    def backward(self, grad):
        n = grad.shape[self.axis]
        return tuple(self.xp.take(grad, i, axis=self.axis) for i in range(n))

    def vjp(self, grad):
        lead = (slice(None),) * self.axis
        return tuple(getitem(grad, lead + (i,)) for i in range(grad.shape[self.axis]))


# ----------------------------------------------------------------- functions
def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool):
            raise TypeError(f"shape entries must be ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def reshape(x, *shape):
    """Return a tensor with the same elements and a new shape (one entry may be -1)."""
    shape = _shape_arg(shape)
    size = x.array.size
    known = 1
    for s in shape:
        if s != -1:
            known *= s
    if shape.count(-1) > 1 or (shape.count(-1) == 0 and known != size) or (
        shape.count(-1) == 1 and (known == 0 or size % known)
    ):
        raise ValueError(f"cannot reshape a tensor of shape {tuple(x.shape)} ({size} elements) into {shape}")
    if shape == x.shape:
        return x
    return Reshape.apply(x, shape=shape)


def flatten(input, start_dim=0, end_dim=-1):
    """Merge dimensions ``start_dim..end_dim`` (inclusive) into one."""
    nd = input.ndim
    s, e = normalize_dim(start_dim, nd, "start_dim"), normalize_dim(end_dim, nd, "end_dim")
    if nd == 0:
        return reshape(input, 1)
    if s > e:
        raise ValueError(f"flatten() has invalid args: start_dim {start_dim} cannot come after end_dim {end_dim}")
    shape = input.shape
    return reshape(input, shape[:s] + (-1,) + shape[e + 1 :])


def squeeze(input, dim=None, *, axis=None):
    """Remove dimensions of length 1: all of them, or those among ``dim`` (an int or a tuple).

    As in PyTorch, a named dimension whose length is not 1 is left alone.
    """
    dim = dim_arg(dim, axis)
    dims = range(input.ndim) if dim is None else normalize_dims(dim, input.ndim)
    new = tuple(s for i, s in enumerate(input.shape) if not (i in dims and s == 1))
    return reshape(input, new)


def unsqueeze(input, dim=None, *, axis=None):
    """Insert a dimension of length 1 at position ``dim`` (in ``[-ndim-1, ndim]``)."""
    dim = dim_arg(dim, axis)
    if dim is None:
        raise TypeError("unsqueeze() missing required argument 'dim'")
    a = normalize_dim(dim, input.ndim + 1)
    return reshape(input, input.shape[:a] + (1,) + input.shape[a:])


def permute(input, *dims):
    """Reorder the dimensions: ``permute(x, 2, 0, 1)`` or ``permute(x, (2, 0, 1))``."""
    dims = _shape_arg(dims)
    nd = input.ndim
    if len(dims) != nd:
        raise ValueError(f"permute(): number of dims don't match: the tensor has {nd}, got {len(dims)} ({dims})")
    axes = tuple(normalize_dim(d, nd) for d in dims)
    if len(set(axes)) != nd:
        raise ValueError(f"permute(): {dims} repeats a dimension; expected a permutation of the {nd} dimensions")
    if axes == tuple(range(nd)):
        return input
    return Permute.apply(input, axes=axes)


def transpose(input, dim0=None, dim1=None):
    """Swap dimensions ``dim0`` and ``dim1``; with neither, reverse all of them (``x.T``)."""
    nd = input.ndim
    if dim0 is None and dim1 is None:
        return permute(input, *reversed(range(nd)))
    if dim0 is None or dim1 is None:
        raise TypeError("transpose takes either no dimensions or two")
    d0, d1 = normalize_dim(dim0, nd), normalize_dim(dim1, nd)
    axes = list(range(nd))
    axes[d0], axes[d1] = axes[d1], axes[d0]
    return permute(input, *axes)


def broadcast_to(x, *shape):
    """Broadcast ``x`` to ``shape`` (NumPy rules); the gradient is summed back."""
    shape = _shape_arg(shape)
    try:
        np.broadcast_shapes(x.shape, shape)
    except ValueError:
        raise ValueError(f"cannot broadcast a tensor of shape {tuple(x.shape)} to {shape}") from None
    if tuple(shape) == x.shape:
        return x
    return BroadcastTo.apply(x, shape=shape)


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
    return SumTo.apply(x, shape=shape)


def _raw_index(index):
    """Convert Tensors inside an index to arrays; tell whether it is advanced."""
    parts = index if isinstance(index, tuple) else (index,)
    out, advanced = [], False
    for p in parts:
        if isinstance(p, TensorBase):
            if p.dtype.kind not in "biu":
                raise IndexError(f"tensors used as indices must be integer or bool, got {p.dtype}")
            p = p.array
            advanced = True
        elif isinstance(p, (list, np.ndarray)):
            p = np.asarray(p)
            if p.dtype.kind not in "biu":
                raise IndexError(f"arrays used as indices must be integer or bool, got {p.dtype}")
            advanced = True
        elif not (p is None or p is Ellipsis or isinstance(p, (slice, numbers.Integral))):
            raise IndexError(f"unsupported index {p!r}: use ints, slices, None, ..., or integer/bool tensors")
        out.append(p)
    return (tuple(out) if isinstance(index, tuple) else out[0]), advanced


def getitem(x, index):
    """``x[index]`` with basic (ints, slices, None, ...) and integer/bool array indices."""
    raw, advanced = _raw_index(index)
    if advanced:
        raw = _index_to_device(raw, x.backend)
    return GetItem.apply(x, index=raw, advanced=advanced)


def _index_to_device(raw, backend):
    parts = raw if isinstance(raw, tuple) else (raw,)
    moved = tuple(backend.asarray(p) if isinstance(p, np.ndarray) else p for p in parts)
    return moved if isinstance(raw, tuple) else moved[0]


def _check_same_rank(name, tensors):
    if not tensors:
        raise ValueError(f"{name} needs at least one tensor")
    for t in tensors:
        if not isinstance(t, TensorBase):
            raise TypeError(f"{name} expects Tensors, got {type(t).__name__}")


def concatenate(tensors, dim=0, *, axis=None):
    """Join tensors along an existing dimension ``dim`` (shapes must match elsewhere); ``cat`` is an alias."""
    tensors = list(tensors)
    _check_same_rank("cat", tensors)
    nd = tensors[0].ndim
    if nd == 0:
        raise ValueError("cat(): zero-dimensional tensors cannot be concatenated")
    ax = normalize_dim(dim_arg(dim, axis, 0), nd)
    for t in tensors[1:]:
        if t.ndim != nd or any(s != r for i, (s, r) in enumerate(zip(t.shape, tensors[0].shape)) if i != ax):
            raise ValueError(
                f"cat(): shapes {tuple(tensors[0].shape)} and {tuple(t.shape)} differ outside dimension {ax}"
            )
    return Concatenate.apply(*tensors, axis=ax)


def stack(tensors, dim=0, *, axis=None):
    """Join same-shaped tensors along a new dimension ``dim``."""
    tensors = list(tensors)
    _check_same_rank("stack", tensors)
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack(): all tensors must have the same shape, got {tuple(tensors[0].shape)} and {tuple(t.shape)}")
    return Stack.apply(*tensors, axis=normalize_dim(dim_arg(dim, axis, 0), tensors[0].ndim + 1))
