"""Elementwise differentiable operations (NumPy broadcasting rules).

Binary operations accept Tensors and Python scalars; gradients of broadcast
inputs are summed back to the input's shape (``unbroadcast``). Integer
operands meet a floating operand in the floating dtype; two different
floating dtypes are an error (raised by ``Function.apply``), never a silent
up-cast.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._ext._engine import Function, TensorBase, is_grad_enabled, make_tensor, unbroadcast
from .._dtypes import is_floating
from ..creation import get_default_dtype, tensor
from .shape import sum_to

__all__ = [
    "add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "tanh",
    "sigmoid", "relu", "abs", "clamp", "maximum", "minimum", "where", "cast",
    "dropout_mask_mul", "erf", "softplus",
]


def _shape(a):
    return getattr(a, "shape", ())


def _float_dtype_of(a):
    dt = a.dtype
    return dt if is_floating(dt) else None


def _weak_scalar(value, dtype):
    """A Python scalar meeting a floating array or Tensor of ``dtype``, typed so that the result keeps
    ``dtype``: NumPy promotes a Python float weakly for its own floats, but ml_dtypes' bfloat16 plus a
    Python float gives float32 (PyTorch keeps bfloat16)."""
    return dtype.type(value) if dtype.kind != "f" and is_floating(dtype) else value


def _promote(a, b):
    """Bring two operands to a common dtype without up-casting floats.

    Python/NumPy scalars stay scalars (weak types, they take the tensor's
    dtype). An integer/bool tensor meeting a float tensor or a float scalar
    is cast (non-differentiably) to the float dtype.
    """
    a_t = isinstance(a, TensorBase)
    b_t = isinstance(b, TensorBase)
    # Fast paths: the common cases of a training step.
    if a_t and b_t:
        if a.dtype is b.dtype:
            return a, b
    elif a_t and type(b) is float:
        if a.dtype.kind == "f":
            return a, b
    elif b_t and type(a) is float:
        if b.dtype.kind == "f":
            return a, b
    return _promote_slow(a, b)


def _promote_slow(a, b):
    if isinstance(b, np.generic):
        b = b.item()
    if isinstance(a, np.generic):
        a = a.item()
    a_t = isinstance(a, TensorBase)
    b_t = isinstance(b, TensorBase)
    if not b_t and not isinstance(b, numbers.Number):
        b = _as_tensor_like(b, a)
        b_t = True
    if not a_t and not isinstance(a, numbers.Number):
        a = _as_tensor_like(a, b)
        a_t = True
    if a_t and b_t:
        fa, fb = _float_dtype_of(a), _float_dtype_of(b)
        if fa is not None and fb is None:
            b = cast(b, fa)
        elif fb is not None and fa is None:
            a = cast(a, fb)
    elif a_t and a.dtype.kind in "biu" and isinstance(b, float):
        a = cast(a, get_default_dtype())
    elif b_t and b.dtype.kind in "biu" and isinstance(a, float):
        b = cast(b, get_default_dtype())
    elif a_t and not b_t:
        b = _weak_scalar(b, a.dtype)
    elif b_t and not a_t:
        a = _weak_scalar(a, b.dtype)
    return a, b


def _as_tensor_like(value, ref):
    if isinstance(value, (list, tuple, np.ndarray)):
        return tensor(value, device=ref.device if isinstance(ref, TensorBase) else None)
    raise TypeError(f"unsupported operand of type {type(value).__name__}; expected a Tensor or a number")


class Add(Function):
    def forward(self, a, b):
        self.shapes = (_shape(a), _shape(b))
        return a + b

    def backward(self, grad):
        sa, sb = self.shapes
        need = self.needs_input_grad
        return (unbroadcast(grad, sa) if need[0] else None,
                unbroadcast(grad, sb) if need[1] else None)

    def vjp(self, grad):
        sa, sb = self.shapes
        need = self.needs_input_grad
        return (sum_to(grad, sa) if need[0] else None,
                sum_to(grad, sb) if need[1] else None)


class Sub(Function):
    def forward(self, a, b):
        self.shapes = (_shape(a), _shape(b))
        return a - b

    def backward(self, grad):
        sa, sb = self.shapes
        need = self.needs_input_grad
        return (unbroadcast(grad, sa) if need[0] else None,
                unbroadcast(-grad, sb) if need[1] else None)

    def vjp(self, grad):
        sa, sb = self.shapes
        need = self.needs_input_grad
        return (sum_to(grad, sa) if need[0] else None,
                sum_to(neg(grad), sb) if need[1] else None)


class Mul(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, grad):
        a, b = self.saved_tensors
        need = self.needs_input_grad
        return (unbroadcast(grad * b, _shape(a)) if need[0] else None,
                unbroadcast(grad * a, _shape(b)) if need[1] else None)

    def vjp(self, grad):
        a, b = self.saved_as_tensors()
        need = self.needs_input_grad
        return (sum_to(mul(grad, b), _shape(a)) if need[0] else None,
                sum_to(mul(grad, a), _shape(b)) if need[1] else None)


class Div(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a / b

    def backward(self, grad):
        a, b = self.saved_tensors
        need = self.needs_input_grad
        ga = grad / b
        # d(a/b)/db = -a/b²
        gb = unbroadcast(-ga * a / b, _shape(b)) if need[1] else None
        return (unbroadcast(ga, _shape(a)) if need[0] else None), gb

    def vjp(self, grad):
        a, b = self.saved_as_tensors()
        need = self.needs_input_grad
        ga = div(grad, b)
        gb = sum_to(neg(div(mul(ga, a), b)), _shape(b)) if need[1] else None
        return (sum_to(ga, _shape(a)) if need[0] else None), gb


class Pow(Function):
    def forward(self, a, b):
        out = a ** b
        self.save_for_backward(a, b, out)
        return out

    def backward(self, grad):
        a, b, out = self.saved_tensors
        need = self.needs_input_grad
        ga = gb = None
        if need[0]:
            if isinstance(b, numbers.Number):
                ga = grad * (b * a ** (b - 1)) if b != 0 else grad * 0
            else:
                ga = unbroadcast(grad * b * a ** (b - 1), _shape(a))
        if need[1]:
            xp = self.xp
            # d(a^b)/db = a^b·ln a, taken as 0 where a == 0 (the limit for b > 0)
            safe = xp.where(a > 0, a, 1)
            gb = unbroadcast(grad * out * xp.log(safe), _shape(b))
        return ga, gb

    def vjp(self, grad):
        a, b, out = self.saved_as_tensors()
        need = self.needs_input_grad
        ga = gb = None
        if need[0]:
            if isinstance(b, numbers.Number):
                ga = mul(grad, mul(pow(a, b - 1), b)) if b != 0 else mul(grad, 0.0)
            else:
                ga = sum_to(mul(mul(grad, b), pow(a, sub(b, 1.0))), _shape(a))
        if need[1]:
            if isinstance(a, numbers.Number):  # d(a^b)/db = a^b·ln a (0 where a == 0, the limit for b > 0)
                log_a = math.log(a) if a > 0 else 0.0
            else:
                log_a = log(where(make_tensor(self.saved_tensors[0] > 0, self.backend), a, 1.0))
            gb = sum_to(mul(mul(grad, out), log_a), _shape(b))
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, grad):
        return -grad

    def vjp(self, grad):
        return neg(grad)


class Exp(Function):
    def forward(self, a):
        out = self.xp.exp(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_tensors
        return grad * out

    def vjp(self, grad):
        (out,) = self.saved_as_tensors()
        return mul(grad, out)


class Log(Function):
    def forward(self, a):
        self.save_for_backward(a)
        return self.xp.log(a)

    def backward(self, grad):
        (a,) = self.saved_tensors
        return grad / a

    def vjp(self, grad):
        (a,) = self.saved_as_tensors()
        return div(grad, a)


class Sqrt(Function):
    def forward(self, a):
        out = self.xp.sqrt(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_tensors
        return grad / (2 * out)

    def vjp(self, grad):
        (out,) = self.saved_as_tensors()
        return div(grad, mul(out, 2.0))


class Tanh(Function):
    def forward(self, a):
        out = self.xp.tanh(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_tensors
        return grad * (1 - out * out)

    def vjp(self, grad):
        (out,) = self.saved_as_tensors()
        return mul(grad, sub(1.0, mul(out, out)))


class Sigmoid(Function):
    def forward(self, a):
        out = self.backend.sigmoid(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_tensors
        return self.backend.sigmoid_backward(grad, out)

    def vjp(self, grad):
        (out,) = self.saved_as_tensors()
        return mul(grad, mul(out, sub(1.0, out)))


class ReLU(Function):
    def forward(self, a):
        out = self.backend.relu(a)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_tensors
        return self.backend.relu_backward(grad, out)

    def vjp(self, grad):  # the mask is piecewise constant: its derivative is 0
        (out,) = self.saved_tensors
        return dropout_mask_mul(grad, (out > 0).astype(grad.dtype))


class Abs(Function):
    def forward(self, a):
        self.save_for_backward(a)
        return self.xp.abs(a)

    def backward(self, grad):
        (a,) = self.saved_tensors
        return grad * self.xp.sign(a)

    def vjp(self, grad):
        (a,) = self.saved_tensors
        return dropout_mask_mul(grad, self.xp.sign(a).astype(grad.dtype))


class Clamp(Function):
    def forward(self, a, min=None, max=None):
        min = None if min is None else _weak_scalar(min, a.dtype)
        max = None if max is None else _weak_scalar(max, a.dtype)
        self.save_for_backward(a)
        self.bounds = (min, max)
        out = self.xp.clip(a, min, max)
        # NumPy clips bfloat16 through float32; clipping is exact, so casting back loses nothing.
        return out.astype(a.dtype) if out.dtype != a.dtype and is_floating(a.dtype) else out

    def backward(self, grad):
        return grad * self._keep()

    def vjp(self, grad):
        return dropout_mask_mul(grad, self._keep().astype(grad.dtype))

    def _keep(self):
        """Where the input lies inside the bounds (the gradient passes)."""
        (a,) = self.saved_tensors
        lo, hi = self.bounds
        keep = self.xp.ones(a.shape, dtype=bool)
        if lo is not None:
            keep &= a >= lo
        if hi is not None:
            keep &= a <= hi
        return keep


class _MaxMin(Function):
    take_first = None  # comparison selecting the first argument

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return self._op(a, b)

    def backward(self, grad):
        a, b = self.saved_tensors
        first = self._first(a, b, grad.dtype)
        need = self.needs_input_grad
        return (unbroadcast(grad * first, _shape(a)) if need[0] else None,
                unbroadcast(grad * (1 - first), _shape(b)) if need[1] else None)

    def vjp(self, grad):
        a, b = self.saved_tensors
        first = self._first(a, b, grad.dtype)
        need = self.needs_input_grad
        return (sum_to(dropout_mask_mul(grad, first), _shape(a)) if need[0] else None,
                sum_to(dropout_mask_mul(grad, 1 - first), _shape(b)) if need[1] else None)

    def _first(self, a, b, dtype):
        """The share of the gradient going to ``a``: 1 where it wins, 0.5 on ties (the subgradient average)."""
        first = self.take_first(a, b).astype(dtype)
        first += (a == b).astype(dtype) * dtype.type(0.5)
        return first


class Maximum(_MaxMin):
    def _op(self, a, b):
        return self.xp.maximum(a, b)

    @staticmethod
    def take_first(a, b):
        return a > b


class Minimum(_MaxMin):
    def _op(self, a, b):
        return self.xp.minimum(a, b)

    @staticmethod
    def take_first(a, b):
        return a < b


class Erf(Function):
    def forward(self, a):
        self.save_for_backward(a)
        return self.backend.erf(a).astype(a.dtype, copy=False)

    def backward(self, grad):
        (a,) = self.saved_tensors
        # d erf(a)/da = 2/√π·exp(-a²)
        return grad * (self.xp.exp(-(a * a)) * (2.0 / math.sqrt(math.pi))).astype(grad.dtype, copy=False)

    def vjp(self, grad):
        (a,) = self.saved_as_tensors()
        return mul(grad, mul(exp(neg(mul(a, a))), 2.0 / math.sqrt(math.pi)))


class Softplus(Function):
    """``log(1 + exp(β·a))/β``, and ``a`` itself where ``β·a > threshold`` (PyTorch's softplus)."""

    def forward(self, a, beta=1.0, threshold=math.inf):
        xp = self.xp
        self.save_for_backward(a)
        self.beta, self.threshold = beta, threshold
        ba = a * beta
        # max(βa, 0) + log1p(exp(-|βa|)) never overflows.
        out = (xp.maximum(ba, 0) + xp.log1p(xp.exp(-xp.abs(ba)))) / beta
        return xp.where(ba > threshold, a, out).astype(a.dtype, copy=False)

    def backward(self, grad):
        (a,) = self.saved_tensors
        ba = a * self.beta
        return grad * self.xp.where(ba > self.threshold, 1, self.backend.sigmoid(ba)).astype(grad.dtype, copy=False)

    def vjp(self, grad):
        (a,) = self.saved_as_tensors()
        ba = mul(a, self.beta)
        return mul(grad, where(ba > self.threshold, 1.0, sigmoid(ba)))


class Where(Function):
    def forward(self, a, b, condition=None):
        self.condition = condition
        self.shapes = (_shape(a), _shape(b))
        return self.xp.where(condition, a, b)

    def backward(self, grad):
        xp, cond = self.xp, self.condition
        need = self.needs_input_grad
        zero = xp.zeros((), dtype=grad.dtype)
        return (unbroadcast(xp.where(cond, grad, zero), self.shapes[0]) if need[0] else None,
                unbroadcast(xp.where(cond, zero, grad), self.shapes[1]) if need[1] else None)

    def vjp(self, grad):
        need = self.needs_input_grad
        cond = make_tensor(self.condition, self.backend)
        return (sum_to(where(cond, grad, 0.0), self.shapes[0]) if need[0] else None,
                sum_to(where(cond, 0.0, grad), self.shapes[1]) if need[1] else None)


class Cast(Function):
    def forward(self, a, dtype=None):
        self.in_dtype = a.dtype
        return a.astype(dtype)

    def backward(self, grad):
        return grad.astype(self.in_dtype)

    def vjp(self, grad):
        return cast(grad, self.in_dtype)


class MaskMul(Function):
    """``a · mask`` for a constant mask (dropout); the mask is not differentiated."""

    def forward(self, a, mask=None):
        self.mask = mask
        return a * mask

    def backward(self, grad):
        return grad * self.mask

    def vjp(self, grad):
        return dropout_mask_mul(grad, self.mask)


# ----------------------------------------------------------------- functions
def add(a, b):
    """``a + b`` with broadcasting."""
    a, b = _promote(a, b)
    return Add.apply(a, b)


def sub(a, b):
    """``a - b`` with broadcasting."""
    a, b = _promote(a, b)
    return Sub.apply(a, b)


def mul(a, b):
    """``a * b`` with broadcasting."""
    a, b = _promote(a, b)
    return Mul.apply(a, b)


def div(a, b):
    """``a / b`` (true division) with broadcasting; integer tensors divide in float."""
    a, b = _promote(a, b)
    # True division of integers gives the default float dtype (as in PyTorch),
    # not NumPy's float64.
    if isinstance(a, TensorBase) and a.dtype.kind in "biu":
        a = cast(a, get_default_dtype())
    if isinstance(b, TensorBase) and b.dtype.kind in "biu" and not (
        isinstance(a, TensorBase) and is_floating(a.dtype)
    ):
        b = cast(b, get_default_dtype())
    a, b = _promote(a, b)
    return Div.apply(a, b)


def pow(a, b):
    """``a ** b`` (``b`` a number or a tensor)."""
    a, b = _promote(a, b)
    return Pow.apply(a, b)


def neg(a):
    """``-a``."""
    return Neg.apply(a)


def exp(a):
    """Elementwise ``e**a``."""
    return Exp.apply(a)


def log(a):
    """Elementwise natural logarithm."""
    return Log.apply(a)


def sqrt(a):
    """Elementwise square root."""
    return Sqrt.apply(a)


def tanh(a):
    """Elementwise hyperbolic tangent."""
    return Tanh.apply(a)


def sigmoid(a):
    """Elementwise logistic function ``1/(1+e^-a)``, stable for large ``|a|``."""
    return Sigmoid.apply(a)


def relu(a, inplace=False):
    """Elementwise ``max(a, 0)``.

    With ``inplace=True`` the result overwrites ``a``'s storage when no graph
    records ``a`` (inference, or a tensor that does not require grad); when
    one does, the result is computed out of place (the same values and
    gradients), so ``x = relu(x, inplace=True)`` is always right.
    """
    if inplace and not (is_grad_enabled() and a.requires_grad):
        a._begin_inplace("relu_")
        a.backend.xp.maximum(a.array, 0, out=a.array)
        return a
    return ReLU.apply(a)


def abs(a):
    """Elementwise absolute value (gradient ``sign(a)``, 0 at 0)."""
    return Abs.apply(a)


def clamp(a, min=None, max=None):
    """Clip values to ``[min, max]`` (either may be None); gradient 0 outside."""
    if min is None and max is None:
        raise ValueError("clamp needs at least one of min and max")
    return Clamp.apply(a, min=min, max=max)


def maximum(a, b):
    """Elementwise maximum of two tensors (ties share the gradient)."""
    a, b = _promote(a, b)
    return Maximum.apply(a, b)


def minimum(a, b):
    """Elementwise minimum of two tensors (ties share the gradient)."""
    a, b = _promote(a, b)
    return Minimum.apply(a, b)


def erf(a):
    """The error function ``erf(a) = 2/√π·∫₀ᵃ exp(-t²) dt`` elementwise."""
    return Erf.apply(a)


def softplus(a, beta=1.0, threshold=20.0):
    """``log(1 + exp(β·a))/β`` elementwise, computed without overflow; ``a`` itself where ``β·a > threshold``.

    Example::

        >>> import minigrad as mg
        >>> mg.ops.softplus(mg.tensor([0.0, 100.0]))
        tensor([  0.6931, 100.0000])
    """
    return Softplus.apply(a, beta=float(beta), threshold=float(threshold))


def where(condition, a, b):
    """Elements of ``a`` where ``condition`` is true, else of ``b``."""
    a, b = _promote(a, b)
    ref = a if isinstance(a, TensorBase) else b
    if not isinstance(ref, TensorBase):
        raise TypeError("where: at least one of a and b must be a Tensor")
    if isinstance(condition, TensorBase):
        if condition.device != ref.device:
            raise RuntimeError(f"where: condition is on {condition.device}, the values on {ref.device}")
        cond = condition.array
    else:
        cond = ref.backend.from_numpy(np.asarray(condition))
    if cond.dtype != bool:
        raise TypeError(f"where: condition must be a bool tensor, got dtype {cond.dtype}")
    return Where.apply(a, b, condition=cond)


def cast(a, dtype):
    """Convert ``a`` to ``dtype`` (differentiable between floating dtypes)."""
    dtype = np.dtype(dtype)
    if a.dtype == dtype:
        return a
    return Cast.apply(a, dtype=dtype)


def dropout_mask_mul(a, mask):
    """Multiply by a constant mask array (used by dropout)."""
    return MaskMul.apply(a, mask=mask)
