"""Dimension arguments: the one place where ``dim``/``axis`` values are checked and normalised.

Every operation that takes a dimension goes through ``normalize_dim`` (one
dimension) or ``normalize_dims`` (None, one, or several), so a dimension out
of range is always PyTorch's ``IndexError("Dimension out of range ...")``
and never taken modulo the rank. ``dim_arg``/``keepdim_arg`` accept both
spellings of an argument (PyTorch's ``dim``/``keepdim`` and NumPy's
``axis``/``keepdims``) and refuse a call that gives both.

Example::

    >>> from minigrad.ops.dims import normalize_dim
    >>> normalize_dim(-1, 3)
    2
    >>> normalize_dim(5, 2)
    Traceback (most recent call last):
    ...
    IndexError: Dimension out of range (expected to be in range of [-2, 1], but got 5)
"""

from __future__ import annotations

import operator

__all__ = ["normalize_dim", "normalize_dims", "dim_arg", "keepdim_arg"]

_ALL = [tuple(range(n)) for n in range(33)]


def _as_int(dim, name):
    if isinstance(dim, bool):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {dim!r}")
    try:
        return operator.index(dim)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of ints, got {dim!r}") from None


def normalize_dim(dim, ndim: int, name: str = "dim") -> int:
    """``dim`` as an index in ``[0, ndim)``; negative values count from the end.

    A 0-d tensor accepts ``dim`` in ``[-1, 0]``, as in PyTorch (it is treated as
    1-d for this purpose). Operations that insert a dimension (``unsqueeze``,
    ``stack``) pass the rank of their result.

    Raises:
        IndexError: ``dim`` is outside ``[-ndim, ndim - 1]``.
        TypeError: ``dim`` is not an integer.
    """
    if type(dim) is not int:
        dim = _as_int(dim, name)
    n = ndim if ndim > 0 else 1
    if not -n <= dim < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})")
    return dim + n if dim < 0 else dim


def normalize_dims(dims, ndim: int, name: str = "dim") -> tuple:
    """``dims`` (None for all, an int, or a sequence of ints) as a sorted tuple of distinct indices.

    Raises:
        IndexError: an entry is out of range (see ``normalize_dim``).
        ValueError: an entry appears twice.
    """
    if dims is None:
        return _ALL[ndim] if ndim < len(_ALL) else tuple(range(ndim))
    if type(dims) is int or not isinstance(dims, (tuple, list)):
        d = normalize_dim(dims, ndim, name)
        return (d,) if ndim else ()
    out = []
    for d in dims:
        d = normalize_dim(d, ndim, name)
        if d in out:
            raise ValueError(f"{name} {d} appears multiple times in the list of dims {tuple(dims)!r}")
        out.append(d)
    return tuple(sorted(out)) if ndim else ()


def dim_arg(dim, axis, default=None):
    """The dimension given as ``dim`` (PyTorch) or ``axis`` (NumPy); both at once is a TypeError.

    ``default`` is ``dim``'s default in the caller's signature (``dim`` still
    equal to it counts as not given).
    """
    if axis is None:
        return dim
    if dim is not default and dim != default:
        raise TypeError("give either dim= or axis=, not both")
    return axis


def keepdim_arg(keepdim, keepdims) -> bool:
    """The flag given as ``keepdim`` (PyTorch) or ``keepdims`` (NumPy)."""
    return bool(keepdim if keepdims is None else keepdims)
