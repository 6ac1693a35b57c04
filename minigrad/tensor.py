"""``Tensor``: an n-dimensional array on a device, with reverse-mode autograd.

The storage and autograd state live in the compiled ``TensorBase``; this
class adds the user-facing API (operators, methods, conversion). Every
differentiable method is a thin wrapper over a function of ``minigrad.ops``.
"""

from __future__ import annotations

import numpy as np

from ._dtypes import is_floating
from . import _dtypes, creation, ops
from ._ext import _engine
from ._ext._engine import TensorBase, make_tensor
from .backends import get_backend
# The factories and dtypes live one layer down (minigrad.creation, which minigrad.ops builds on); they stay
# importable from here.
from .creation import *  # noqa: F403
from .creation import _bfloat16_dtype, _check_dtype, _device_and_dtype, _new_array
from .ops.dims import normalize_dim
from .ops.shape import _index_to_device, _raw_index
from .ops.transfer import to_backend

__all__ = ["Tensor", *creation.__all__]


class Tensor(TensorBase):
    """An n-dimensional array on a device that records operations for autograd.

    Create tensors with ``minigrad.tensor(data)`` or the factories
    (``zeros``, ``randn``, ...). Arithmetic follows NumPy broadcasting;
    ``t.backward()`` fills ``.grad`` of every leaf with ``requires_grad=True``.

    Example::

        >>> import minigrad as mg
        >>> x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
        >>> y = (x * x).sum()
        >>> y.backward()
        >>> x.grad
        tensor([2., 4., 6.])
    """

    __slots__ = ()
    # NumPy must defer to Tensor's reflected operators (ndarray + Tensor)
    # instead of turning the Tensor into an array and dropping its graph.
    __array_ufunc__ = None
    __hash__ = object.__hash__

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        arr, backend = _new_array(data, dtype, device)
        self._set_fields(arr, backend, requires_grad)

    # ------------------------------------------------------------ basics
    def __repr__(self) -> str:
        body = np.array2string(
            self.numpy_view(), separator=", ", prefix="tensor(", threshold=1000, edgeitems=3,
            precision=4, floatmode="maxprec_equal" if is_floating(self.dtype) else "maxprec",
        )
        extras = []
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype not in (get_default_dtype(), int64, bool_) or self.array.size == 0:
            extras.append(f"dtype={self.dtype.name}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{type(self.grad_fn).__name__}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __bool__(self) -> bool:
        if self.array.size != 1:
            raise ValueError(
                f"the truth value of a tensor with {self.array.size} elements is ambiguous; use .any() or .all()"
            )
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.kind not in "iu" or self.array.size != 1:
            raise TypeError("only single-element integer tensors can be used as an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        arr = self.numpy_view()
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        return np.array(arr, copy=True) if copy else arr

    def __dlpack__(self, *args, **kwargs):
        return self.array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()

    def __deepcopy__(self, memo):
        # A new leaf with copied storage (and gradient) on the same device,
        # of the same class (a Parameter stays a Parameter).
        if self.grad_fn is not None:
            raise RuntimeError("only leaf tensors can be deep-copied; detach() first")
        new = type(self).__new__(type(self))
        new._set_fields(self.array.copy(), self.backend, self.requires_grad)
        if self.grad is not None:
            new.grad = self.grad.__deepcopy__(memo)
        memo[id(self)] = new
        return new

    def __reduce__(self):
        # Pickle as host data plus device name; unpickling places it back.
        return _rebuild_tensor, (type(self), self.backend.to_numpy(self.array).copy(), str(self.device),
                                 self.requires_grad)

    def size(self, dim=None):
        """The shape, or the length of dimension ``dim``."""
        return self.shape if dim is None else self.shape[normalize_dim(dim, self.ndim)]

    def numel(self) -> int:
        """Number of elements."""
        return int(self.array.size)

    def dim(self) -> int:
        """Number of dimensions (same as ``ndim``)."""
        return self.ndim

    @property
    def T(self) -> "Tensor":
        """The tensor with its dimensions reversed."""
        return ops.transpose(self)

    @property
    def data(self) -> "Tensor":
        """A tensor sharing this one's storage, detached from the graph (PyTorch's ``.data``)."""
        return self.detach()

    @data.setter
    def data(self, value) -> None:
        if not isinstance(value, TensorBase):
            raise TypeError(f"data must be set to a Tensor, got {type(value).__name__}")
        if value.shape != self.shape or value.dtype != self.dtype or value.device != self.device:
            raise ValueError(
                f"data must keep shape, dtype and device: got {tuple(value.shape)} {value.dtype} on "
                f"{value.device}, expected {tuple(self.shape)} {self.dtype} on {self.device}"
            )
        self.array = value.array

    # -------------------------------------------------------- conversion
    def numpy_view(self) -> np.ndarray:
        """The values as a NumPy array, sharing memory on the CPU."""
        return self.backend.to_numpy(self.array)

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (shares memory on the CPU, like PyTorch).

        Raises for a tensor that requires grad, as PyTorch does: call
        ``.detach().numpy()`` to make dropping the graph explicit.
        """
        if self.requires_grad:
            raise RuntimeError("can't call numpy() on a tensor that requires grad; use tensor.detach().numpy()")
        return self.numpy_view()

    def item(self):
        """The single value of a one-element tensor, as a Python number."""
        if self.array.size != 1:
            raise ValueError(f"item() needs a tensor with exactly one element, got shape {tuple(self.shape)}")
        return self.numpy_view().reshape(()).item()

    def tolist(self):
        """The values as (nested) Python lists."""
        return self.numpy_view().tolist()

    def detach(self) -> "Tensor":
        """A tensor sharing storage (and the in-place version counter) with this one, outside the graph."""
        out = make_tensor(self.array, self.backend, False)
        out._share_version(self)
        return out

    def detach_(self) -> "Tensor":
        """Detach in place (this tensor becomes a leaf without grad)."""
        if self.grad_fn is not None:
            raise RuntimeError("detach_() is only supported on leaf tensors; use detach()")
        self.requires_grad = False
        return self

    def requires_grad_(self, requires_grad=True) -> "Tensor":
        """Set ``requires_grad`` in place and return self."""
        self.requires_grad = requires_grad
        return self

    def clone(self) -> "Tensor":
        """A differentiable copy with its own storage."""
        return ops.add(self, 0) if _dtypes.is_floating(self.dtype) else make_tensor(self.array.copy(), self.backend)

    def to(self, *args, dtype=None, device=None, copy=False) -> "Tensor":
        """Convert to a device and/or dtype: ``t.to("cuda")``, ``t.to(mg.float64)``.

        Returns self when nothing changes (unless ``copy``). Differentiable.
        """
        device, dtype = _device_and_dtype("to", args, device, dtype)
        out = self
        if device is not None:
            target = get_backend(device)
            if target is not self.backend:
                out = to_backend(self, target)
        if dtype is not None:
            out = ops.cast(out, _check_dtype(dtype))
        if copy and out is self:
            out = self.clone()
        return out

    def cpu(self) -> "Tensor":
        """The tensor on the CPU."""
        return self.to("cpu")

    def cuda(self, index: int = 0) -> "Tensor":
        """The tensor on ``cuda:index``."""
        return self.to(f"cuda:{index}")

    def float(self) -> "Tensor":
        """Convert to float32."""
        return self.to(float32)

    def double(self) -> "Tensor":
        """Convert to float64."""
        return self.to(float64)

    def half(self) -> "Tensor":
        """Convert to float16."""
        return self.to(float16)

    def bfloat16(self) -> "Tensor":
        """Convert to bfloat16 (needs the ml_dtypes package)."""
        return self.to(_bfloat16_dtype())

    def long(self) -> "Tensor":
        """Convert to int64."""
        return self.to(int64)

    def int(self) -> "Tensor":
        """Convert to int32."""
        return self.to(int32)

    def bool(self) -> "Tensor":
        """Convert to bool."""
        return self.to(bool_)

    def type(self, dtype) -> "Tensor":
        """Convert to ``dtype``."""
        return self.to(dtype)

    astype = type

    def contiguous(self) -> "Tensor":
        """A tensor whose storage is C-contiguous (self when it already is)."""
        xp = self.backend.xp
        if self.array.flags.c_contiguous:
            return self
        return (ops.add(self, 0) if _dtypes.is_floating(self.dtype)
                else make_tensor(xp.ascontiguousarray(self.array), self.backend))

    # -------------------------------------------------------- arithmetic
    def __add__(self, other):
        return ops.add(self, other)

    def __radd__(self, other):
        return ops.add(other, self)

    def __sub__(self, other):
        return ops.sub(self, other)

    def __rsub__(self, other):
        return ops.sub(other, self)

    def __mul__(self, other):
        return ops.mul(self, other)

    def __rmul__(self, other):
        return ops.mul(other, self)

    def __truediv__(self, other):
        return ops.div(self, other)

    def __rtruediv__(self, other):
        return ops.div(other, self)

    def __pow__(self, other):
        return ops.pow(self, other)

    def __rpow__(self, other):
        return ops.pow(other, self)

    def __matmul__(self, other):
        return ops.matmul(self, _coerce(other, self))

    def __rmatmul__(self, other):
        return ops.matmul(_coerce(other, self), self)

    def __neg__(self):
        return ops.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return ops.abs(self)

    # In-place operators: in place when no graph is being recorded through
    # this tensor (e.g. parameter updates under no_grad); an error on a leaf
    # that requires grad, as in PyTorch; out of place on a non-leaf.
    def __iadd__(self, other):
        return self._inplace("__iadd__", ops.add, other)

    def __isub__(self, other):
        return self._inplace("__isub__", ops.sub, other)

    def __imul__(self, other):
        return self._inplace("__imul__", ops.mul, other)

    def __itruediv__(self, other):
        return self._inplace("__itruediv__", ops.div, other)

    def _inplace(self, method, op, other):
        if not _engine.is_grad_enabled() or not (
            self.requires_grad or (isinstance(other, TensorBase) and other.requires_grad)
        ):
            self._check_inplace_operand(other)
            getattr(self.array, method)(other.array if isinstance(other, TensorBase) else other)
            self._bump_version()
            return self
        if self.grad_fn is None:
            raise RuntimeError(
                "a leaf tensor that requires grad is used in an in-place operation; wrap the update in "
                "`with minigrad.no_grad():`"
            )
        return op(self, other)

    def _check_inplace_operand(self, other):
        if isinstance(other, TensorBase):
            if other.device != self.device:
                raise RuntimeError(f"in-place operation with a tensor on {other.device}; this one is on {self.device}")
            if other.dtype != self.dtype and is_floating(other.dtype) and is_floating(self.dtype):
                raise TypeError(f"in-place operation would mix {self.dtype} and {other.dtype}")

    def _begin_inplace(self, name):
        """Refuse an in-place change the graph would not see; else count it (see ``_version``)."""
        if _engine.is_grad_enabled() and self.requires_grad:
            raise RuntimeError(
                f"{name}: in-place modification of a tensor that requires grad; use `with minigrad.no_grad():`"
            )
        self._bump_version()

    def add_(self, other, alpha=1):
        """In place: ``self += alpha·other``."""
        self._begin_inplace("add_")
        self._check_inplace_operand(other)
        val = other.array if isinstance(other, TensorBase) else other
        self.array.__iadd__(val * alpha if alpha != 1 else val)
        return self

    def sub_(self, other, alpha=1):
        """In place: ``self -= alpha·other``."""
        return self.add_(other, alpha=-alpha)

    def mul_(self, other):
        """In place: ``self *= other``."""
        self._begin_inplace("mul_")
        self._check_inplace_operand(other)
        self.array.__imul__(other.array if isinstance(other, TensorBase) else other)
        return self

    def div_(self, other):
        """In place: ``self /= other``."""
        self._begin_inplace("div_")
        self._check_inplace_operand(other)
        self.array.__itruediv__(other.array if isinstance(other, TensorBase) else other)
        return self

    def zero_(self):
        """Fill with zeros in place."""
        return self.fill_(0)

    def fill_(self, value):
        """Fill with ``value`` in place."""
        self._begin_inplace("fill_")
        self.array.fill(value)
        return self

    def copy_(self, src):
        """Copy the values of ``src`` (broadcast to this shape) into this tensor in place."""
        self._begin_inplace("copy_")
        src_t = src if isinstance(src, TensorBase) else tensor(src, dtype=self.dtype, device=self.device)
        arr = src_t.array
        if src_t.backend is not self.backend:
            arr = self.backend.from_numpy(src_t.backend.to_numpy(arr))
        self.array[...] = arr
        return self

    def uniform_(self, low=0.0, high=1.0):
        """Fill in place with samples from U[low, high)."""
        self._begin_inplace("uniform_")
        self.array[...] = self.backend.uniform(self.shape, low, high, self.dtype)
        return self

    def normal_(self, mean=0.0, std=1.0):
        """Fill in place with samples from N(mean, std²)."""
        self._begin_inplace("normal_")
        sample = self.backend.standard_normal(self.shape, self.dtype)
        self.array[...] = sample * std + mean
        return self

    def __setitem__(self, index, value):
        self._begin_inplace("__setitem__")
        raw, advanced = _raw_index(index)
        if advanced:
            raw = _index_to_device(raw, self.backend)
        if isinstance(value, TensorBase):
            if value.device != self.device:
                raise RuntimeError(f"cannot assign a tensor on {value.device} into one on {self.device}")
            value = value.array
        self.array[raw] = value

    def __getitem__(self, index):
        return ops.getitem(self, index)

    def _compare(self, other, op):
        other = other.array if isinstance(other, TensorBase) else other
        return make_tensor(op(self.array, other), self.backend)

    def __eq__(self, other):
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other):
        return self._compare(other, lambda a, b: a != b)

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    def __invert__(self):
        if self.dtype != bool_:
            raise TypeError(f"~ is only defined for bool tensors, got {self.dtype}")
        return make_tensor(~self.array, self.backend)

    def __and__(self, other):
        return self._compare(other, lambda a, b: a & b)

    def __or__(self, other):
        return self._compare(other, lambda a, b: a | b)

    def any(self) -> "Tensor":
        """True if any element is non-zero."""
        return make_tensor(self.array.any(), self.backend)

    def all(self) -> "Tensor":
        """True if every element is non-zero."""
        return make_tensor(self.array.all(), self.backend)

    def isnan(self) -> "Tensor":
        """Elementwise test for NaN."""
        return make_tensor(self.backend.xp.isnan(self.array), self.backend)

    def isfinite(self) -> "Tensor":
        """Elementwise test for finite values."""
        return make_tensor(self.backend.xp.isfinite(self.array), self.backend)

    # ------------------------------------------------------ math methods
    def exp(self):
        """Elementwise ``e**x``."""
        return ops.exp(self)

    def log(self):
        """Elementwise natural logarithm."""
        return ops.log(self)

    def sqrt(self):
        """Elementwise square root."""
        return ops.sqrt(self)

    def tanh(self):
        """Elementwise hyperbolic tangent."""
        return ops.tanh(self)

    def sigmoid(self):
        """Elementwise logistic function."""
        return ops.sigmoid(self)

    def relu(self):
        """Elementwise ``max(x, 0)``."""
        return ops.relu(self)

    def abs(self):
        """Elementwise absolute value."""
        return ops.abs(self)

    def clamp(self, min=None, max=None):
        """Clip to ``[min, max]``."""
        return ops.clamp(self, min, max)

    clip = clamp

    def pow(self, exponent):
        """``self ** exponent``."""
        return ops.pow(self, exponent)

    def matmul(self, other):
        """Matrix product."""
        return ops.matmul(self, other)

    def sum(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Sum over ``dim`` (see ``minigrad.sum``)."""
        return ops.sum(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def mean(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Mean over ``dim`` (see ``minigrad.mean``)."""
        return ops.mean(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """The maximum; ``(values, indices)`` along ``dim``; or the elementwise maximum with a Tensor
        (see ``minigrad.max``)."""
        return ops.max(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """The minimum; ``(values, indices)`` along ``dim``; or the elementwise minimum (see ``minigrad.min``)."""
        return ops.min(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def norm(self, p="fro", dim=None, keepdim=False):
        """The vector p-norm over ``dim`` (all dimensions when None), PyTorch's ``Tensor.norm``.

        ``p``: ``"fro"`` or 2 (Euclidean; Frobenius over all or two dims), 1,
        ``inf``, ``-inf``, 0 or any number (see ``minigrad.linalg.vector_norm``).

        Example::

            g.norm(2, dim=1)     # the per-example gradient norms of a WGAN-GP penalty
        """
        if p is None or (isinstance(p, str) and p == "fro"):
            p = 2
        elif isinstance(p, str):
            raise ValueError(f"norm: p={p!r} is not supported (the vector norms and 'fro' are); "
                             f"expected 'fro' or a number")
        return ops.vector_norm(self, p, dim, keepdim)

    def amax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Maximum over one or several dimensions, values only (see ``minigrad.amax``)."""
        return ops.amax(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def amin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Minimum over one or several dimensions, values only (see ``minigrad.amin``)."""
        return ops.amin(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def var(self, dim=None, keepdim=False, correction=1, *, unbiased=None, axis=None, keepdims=None):
        """Variance over ``dim`` (unbiased by default, ``correction=0`` for biased)."""
        return ops.var(self, dim, keepdim, correction, unbiased=unbiased, axis=axis, keepdims=keepdims)

    def std(self, dim=None, keepdim=False, correction=1, *, unbiased=None, axis=None, keepdims=None):
        """Standard deviation over ``dim``."""
        return ops.std(self, dim, keepdim, correction, unbiased=unbiased, axis=axis, keepdims=keepdims)

    def logsumexp(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """``log Σ exp`` over ``dim``, computed stably."""
        return ops.logsumexp(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def argmax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Indices of maxima along ``dim`` (int64)."""
        return ops.argmax(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def argmin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Indices of minima along ``dim`` (int64)."""
        return ops.argmin(self, dim, keepdim, axis=axis, keepdims=keepdims)

    def softmax(self, dim=None, *, axis=None):
        """Softmax along ``dim`` (the last when None)."""
        return ops.softmax(self, dim, axis=axis)

    def log_softmax(self, dim=None, *, axis=None):
        """Log-softmax along ``dim`` (the last when None)."""
        return ops.log_softmax(self, dim, axis=axis)

    def relu_(self):
        """``max(x, 0)`` in place (out of place, returning the result, while a graph records this tensor)."""
        return ops.relu(self, inplace=True)

    # -------------------------------------------------------- comparison
    def eq(self, other) -> "Tensor":
        """Elementwise ``self == other`` (a bool tensor)."""
        return self == other

    def ne(self, other) -> "Tensor":
        """Elementwise ``self != other``."""
        return self != other

    def lt(self, other) -> "Tensor":
        """Elementwise ``self < other``."""
        return self < other

    def le(self, other) -> "Tensor":
        """Elementwise ``self <= other``."""
        return self <= other

    def gt(self, other) -> "Tensor":
        """Elementwise ``self > other``."""
        return self > other

    def ge(self, other) -> "Tensor":
        """Elementwise ``self >= other``."""
        return self >= other

    def equal(self, other) -> bool:
        """True if ``other`` has the same shape and the same values."""
        return isinstance(other, TensorBase) and self.shape == other.shape and bool((self == other).all())

    # ------------------------------------------------------------- shape
    def reshape(self, *shape):
        """Same elements, new shape (one entry may be -1)."""
        return ops.reshape(self, *shape)

    view = reshape

    def reshape_as(self, other) -> "Tensor":
        """Reshaped to ``other``'s shape."""
        return ops.reshape(self, other.shape)

    view_as = reshape_as

    def expand_as(self, other) -> "Tensor":
        """Broadcast to ``other``'s shape (no copy)."""
        return ops.broadcast_to(self, other.shape)

    def type_as(self, other) -> "Tensor":
        """Converted to ``other``'s dtype."""
        return self.to(other.dtype)

    def flatten(self, start_dim=0, end_dim=-1):
        """Merge dimensions ``start_dim..end_dim`` into one."""
        return ops.flatten(self, start_dim, end_dim)

    def squeeze(self, dim=None, *, axis=None):
        """Remove dimensions of length 1 (all, or those among ``dim``)."""
        return ops.squeeze(self, dim, axis=axis)

    def unsqueeze(self, dim=None, *, axis=None):
        """Insert a dimension of length 1 at ``dim``."""
        return ops.unsqueeze(self, dim, axis=axis)

    def permute(self, *dims):
        """Reorder dimensions."""
        return ops.permute(self, *dims)

    def transpose(self, dim0=None, dim1=None):
        """Swap two dimensions (or reverse all)."""
        return ops.transpose(self, dim0, dim1)

    def expand(self, *shape):
        """Broadcast to ``shape`` (no copy)."""
        return ops.broadcast_to(self, *shape)

    broadcast_to = expand


def _rebuild_tensor(cls, host, device, requires_grad):
    backend = get_backend(device)
    new = cls.__new__(cls)
    new._set_fields(backend.asarray(host), backend, requires_grad)
    return new


def _coerce(value, ref):
    if isinstance(value, TensorBase):
        return value
    return tensor(value, device=ref.device)


_engine.set_tensor_type(Tensor)
_engine.register_scalar_types((np.generic,))


