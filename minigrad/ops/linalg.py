"""Matrix products: ``matmul`` (NumPy semantics, batched and broadcast) and the
fused ``linear`` (``x @ W.T + b``, one graph node instead of three), through
the backend's ``matmul`` (on the CPU, minigrad's own kernel in its thread team);
and ``vector_norm`` (PyTorch's ``torch.linalg.vector_norm``)."""

from __future__ import annotations

from .._dtypes import is_floating
from .._ext._engine import Function, TensorBase, unbroadcast
import math
import numbers

from .dims import normalize_dims
from .elementwise import abs as _abs, div, mul, pow as _pow, where
from .reduce import amax, amin, sum as _sum
from .shape import reshape, sum_to, transpose, unsqueeze

__all__ = ["matmul", "linear", "vector_norm"]


class MatMul(Function):
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both operands need at least one dimension, got a scalar")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(
                f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not align "
                f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})"
            )
        self.save_for_backward(a, b)
        return self.backend.matmul(a, b)

    def backward(self, grad):
        a, b = self.saved_tensors
        xp = self.xp
        # Treat vectors as matrices (row for a, column for b), as matmul does.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = grad
        if b.ndim == 1:
            g = g[..., None]
        if a.ndim == 1:
            g = xp.expand_dims(g, -2)
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = self.backend.matmul(g, xp.swapaxes(b2, -1, -2))
            if a.ndim == 1:
                ga = ga.reshape(ga.shape[:-2] + ga.shape[-1:])
            ga = unbroadcast(ga, a.shape)
        if self.needs_input_grad[1]:
            gb = self.backend.matmul(xp.swapaxes(a2, -1, -2), g)
            if b.ndim == 1:
                gb = gb.reshape(gb.shape[:-1])
            gb = unbroadcast(gb, b.shape)
        return ga, gb

    def vjp(self, grad):
        a, b = self.saved_as_tensors()
        # Treat vectors as matrices (row for a, column for b), as matmul does.
        a2 = unsqueeze(a, 0) if a.ndim == 1 else a
        b2 = unsqueeze(b, 1) if b.ndim == 1 else b
        g = grad
        if b.ndim == 1:
            g = unsqueeze(g, -1)
        if a.ndim == 1:
            g = unsqueeze(g, -2)
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = matmul(g, transpose(b2, -1, -2))
            if a.ndim == 1:
                ga = reshape(ga, ga.shape[:-2] + ga.shape[-1:])
            ga = sum_to(ga, a.shape)
        if self.needs_input_grad[1]:
            gb = matmul(transpose(a2, -1, -2), g)
            if b.ndim == 1:
                gb = reshape(gb, gb.shape[:-1])
            gb = sum_to(gb, b.shape)
        return ga, gb


class Linear(Function):
    """``y = x @ W.T + b`` for x of shape (..., in), W (out, in), b (out,) or None."""

    def forward(self, x, weight, bias=None):
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input has {x.shape[-1]} features in its last dimension but the "
                f"weight expects {weight.shape[1]} (weight shape {tuple(weight.shape)})"
            )
        self.save_for_backward(x, weight)
        out = self.backend.matmul(x, weight.T)
        if bias is not None:
            out += bias
        return out

    def backward(self, grad):
        x, weight = self.saved_tensors
        need = self.needs_input_grad
        g2 = grad.reshape(-1, grad.shape[-1])
        mm = self.backend.matmul
        gx = mm(grad, weight) if need[0] else None
        gw = mm(g2.T, x.reshape(-1, x.shape[-1])) if need[1] else None
        gb = g2.sum(axis=0) if len(need) > 2 and need[2] else None
        return gx, gw, gb

    def vjp(self, grad):
        x, weight = self.saved_as_tensors()
        need = self.needs_input_grad
        g2 = reshape(grad, -1, grad.shape[-1])
        gx = matmul(grad, weight) if need[0] else None
        gw = matmul(transpose(g2), reshape(x, -1, x.shape[-1])) if need[1] else None
        gb = _sum(g2, 0) if len(need) > 2 and need[2] else None
        return gx, gw, gb


def check_same_kind(name, *tensors):
    """Refuse to mix integer/bool and floating operands (PyTorch's "must have the same dtype"), at forward
    time: NumPy would silently compute in float64 and the backward pass would fail later."""
    if len(tensors) == 2 and isinstance(tensors[0], TensorBase) and isinstance(tensors[1], TensorBase) \
            and tensors[0].dtype == tensors[1].dtype:
        return  # the usual case, at once
    kinds = {is_floating(t.dtype) for t in tensors if isinstance(t, TensorBase)}
    if len(kinds) > 1:
        dtypes = ", ".join(str(t.dtype) for t in tensors if isinstance(t, TensorBase))
        raise TypeError(f"{name}: expected operands of the same kind, got dtypes {dtypes}; convert the integer "
                        f"input with .float() (or .to(weight.dtype))")


def matmul(a, b):
    """Matrix product with NumPy's rules (1-D operands, batch broadcasting)."""
    check_same_kind("matmul", a, b)
    return MatMul.apply(a, b)


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` as one node (the layer ``nn.Linear`` uses)."""
    check_same_kind("linear", x, weight)
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
    if x.ndim == 0:
        raise ValueError(f"linear: the input needs at least 1 dimension, the last of in_features={weight.shape[1]} "
                         f"features; got a 0-d tensor")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, bias)


class VectorNorm2(Function):
    """The Euclidean norm over ``axes`` (kept as dimensions of size 1): ``‖x‖ = sqrt(Σ x²)``, one node.

    Its gradient ``x·g/‖x‖`` is 0 where ‖x‖ = 0 (PyTorch's choice: there x = 0),
    not 0/0; the vjp is the same formula in differentiable ops, so gradient
    penalties differentiate it again.
    """

    def forward(self, x, axes=()):
        n = self.xp.sqrt((x * x).sum(axis=axes, keepdims=True))
        self.save_for_backward(x, n)
        return n

    def backward(self, grad):
        x, n = self.saved_tensors
        safe = self.xp.where(n == 0, 1, n).astype(n.dtype, copy=False)
        return x * (grad / safe)

    def vjp(self, grad):
        x, n = self.saved_as_tensors()
        return mul(x, div(grad, where(n.detach() == 0, 1.0, n)))


def vector_norm(x, ord=2, dim=None, keepdim=False):
    """The vector ``ord``-norm of ``x`` over ``dim`` (all dimensions when None), PyTorch's
    ``torch.linalg.vector_norm``.

    ``ord``: 2 (``sqrt(Σ x²)``), 1 (``Σ|x|``), ``inf`` (``max|x|``), ``-inf``
    (``min|x|``), 0 (the number of non-zeros, no gradient) or any other
    number p (``(Σ|x|^p)^(1/p)``). The gradient of the 2-norm at x = 0 is 0.

    Example::

        g = minigrad.randn(8, 784)
        minigrad.linalg.vector_norm(g, dim=1)      # shape (8,): one norm per row
    """
    if not isinstance(x, TensorBase) or not is_floating(x.dtype):
        got = f"dtype {x.dtype}" if isinstance(x, TensorBase) else type(x).__name__
        raise TypeError(f"vector_norm: expected a floating point Tensor, got {got}")
    if not isinstance(ord, numbers.Real) or isinstance(ord, bool) or math.isnan(ord):
        raise ValueError(f"vector_norm: ord must be a number (2, 1, inf, -inf, 0 or any p), got {ord!r}")
    axes = normalize_dims(dim, x.ndim)
    if ord == 2:
        out = VectorNorm2.apply(x, axes=axes)
        if keepdim:
            return out
        return reshape(out, tuple(s for i, s in enumerate(x.shape) if i not in axes))
    if ord == math.inf:
        return amax(_abs(x), dim=axes, keepdim=keepdim)
    if ord == -math.inf:
        return amin(_abs(x), dim=axes, keepdim=keepdim)
    if ord == 0:
        return _sum((x != 0).to(dtype=x.dtype), dim=axes, keepdim=keepdim)
    if ord == 1:
        return _sum(_abs(x), dim=axes, keepdim=keepdim)
    return _pow(_sum(_pow(_abs(x), float(ord)), dim=axes, keepdim=keepdim), 1.0 / ord)
