"""Softmax, log-softmax and the fused cross-entropy loss (numerically stable:
the maximum is subtracted before exponentiating)."""

from __future__ import annotations

import math

from .._dtypes import is_floating
from .._ext._engine import Function, TensorBase, make_tensor
from .dims import dim_arg, normalize_dim
from .elementwise import mul
from .reduce import sum as _sum
from .shape import getitem

__all__ = ["softmax", "log_softmax", "cross_entropy", "nll_loss"]


def _log_softmax(xp, x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class Softmax(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        e = self.xp.exp(x - x.max(axis=axis, keepdims=True))
        out = e / e.sum(axis=axis, keepdims=True)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (y,) = self.saved_tensors
        # J^T g = y·(g - Σ g·y)
        return y * (grad - (grad * y).sum(axis=self.axis, keepdims=True))

    def vjp(self, grad):
        (y,) = self.saved_as_tensors()
        return y * (grad - (grad * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        out = _log_softmax(self.xp, x, axis)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_tensors
        return grad - self.xp.exp(out) * grad.sum(axis=self.axis, keepdims=True)

    def vjp(self, grad):
        (out,) = self.saved_as_tensors()
        return grad - out.exp() * grad.sum(axis=self.axis, keepdims=True)


class CrossEntropy(Function):
    """``-log softmax(x)[target]`` per row, reduced; x (N, C), target int (N,)."""

    def forward(self, x, target=None, reduction="mean", weight=None, ignore_index=-100, label_smoothing=0.0):
        xp = self.xp
        n, c = x.shape
        self.reduction, self.label_smoothing, self.weight = reduction, label_smoothing, weight
        self.fused = weight is None and not label_smoothing and reduction != "none"
        if self.fused:  # the usual case: one backend call each way, the softmax saved for backward
            total, count, probs = self.backend.cross_entropy_forward(x, target, ignore_index)
            self.save_for_backward(probs, target.copy())  # the caller's target may change before backward
            self.ignore_index = ignore_index
            self.denom = 1.0 if reduction == "sum" else count
            return xp.asarray(_divide(xp, total, self.denom), dtype=x.dtype)
        logp = _log_softmax(xp, x, 1)
        valid = target != ignore_index
        safe_t = xp.where(valid, target, 0)
        rows = xp.arange(n)
        w_rows = weight[safe_t] * valid if weight is not None else valid.astype(x.dtype)
        picked = logp[rows, safe_t]
        loss = -picked * w_rows
        if label_smoothing:
            # Mix the one-hot target with the uniform distribution.
            w_all = weight[None, :] if weight is not None else 1.0
            smooth = -(logp * w_all).sum(axis=1) / c * valid
            loss = (1 - label_smoothing) * loss + label_smoothing * smooth
        self.save_for_backward(logp, safe_t, w_rows, valid)
        if reduction == "none":
            self.denom = None
            return loss.astype(x.dtype, copy=False)
        if reduction == "sum":
            self.denom = 1.0
            return xp.asarray(loss.sum(), dtype=x.dtype)
        total = w_rows.sum()
        self.denom = total
        return xp.asarray(loss.sum() / total, dtype=x.dtype)

    def backward(self, grad):
        xp = self.xp
        if self.fused:
            probs, target = self.saved_tensors
            return self.backend.cross_entropy_backward(probs, target, self.ignore_index,
                                                       _divide(xp, grad, self.denom))
        logp = self.saved_tensors[0]
        n = logp.shape[0]
        if self.reduction == "none":
            g_rows = grad
        else:
            g_rows = xp.broadcast_to(grad / self.denom, (n,))
        dx = self._dlogits(xp.exp(logp))
        dx *= g_rows[:, None]
        return dx.astype(logp.dtype, copy=False)

    def vjp(self, grad):
        (x,) = [t for t in self.inputs if t is not None]
        if self.reduction == "none":
            g_rows = grad.reshape(x.shape[0], 1)
        else:
            g_rows = (grad / float(self.denom)).reshape(1, 1)
        return self._dlogits(softmax(x, 1), const=lambda a: make_tensor(a, self.backend)) * g_rows

    def _row_terms(self):
        """``(target with ignored rows at 0, row weights, counted rows)`` of either forward."""
        if self.fused:
            probs, target = self.saved_tensors
            valid = target != self.ignore_index
            return self.xp.where(valid, target, 0), valid.astype(probs.dtype), valid
        _, t, w_rows, valid = self.saved_tensors
        return t, w_rows, valid

    def _dlogits(self, p, const=lambda a: a):
        """``d loss_i / d x = w_i·(softmax - onehot)`` mixed with the label-smoothing term, before the
        upstream gradient; ``p`` the softmax (an array, or a Tensor with ``const`` wrapping the constants)."""
        xp = self.xp
        t, w_rows, valid = self._row_terms()
        n, c = p.shape
        onehot = xp.zeros(p.shape, dtype=p.dtype)
        onehot[xp.arange(n), t] = 1
        eps = self.label_smoothing
        dx = (p - const(onehot)) * const((w_rows * (1 - eps))[:, None].astype(p.dtype))
        if eps:
            w_all = self.weight[None, :] if self.weight is not None else xp.ones((1, c), dtype=p.dtype)
            # d/dx of -(Σ_j w_j log p_j)/C = (p·Σ_j w_j - w)/C
            dx = dx + (p * float(w_all.sum()) - const(w_all)) * const((eps / c * valid[:, None]).astype(p.dtype))
        return dx


def _divide(xp, a, b):
    """``a / b``, NaN or ±inf for a zero ``b`` (PyTorch's mean over no rows), without a warning and without
    waiting for a device (a device's count is a 0-d array, divided there in float64)."""
    if isinstance(b, (int, float)):
        if b:
            return a / b
        if not hasattr(a, "shape"):
            return math.nan if a == 0 else math.copysign(math.inf, a)
    a = xp.asarray(a, dtype=xp.float64)
    b = xp.asarray(b, dtype=xp.float64)
    if hasattr(xp, "errstate"):
        with xp.errstate(divide="ignore", invalid="ignore"):
            return a / b
    return a / b


def softmax(input, dim=None, *, axis=None):
    """``exp(x)/Σexp(x)`` along ``dim`` (the last dimension when None).

    Example::

        >>> import minigrad as mg
        >>> mg.softmax(mg.tensor([[0.0, 0.0]]), dim=1)
        tensor([[0.5000, 0.5000]])
    """
    return Softmax.apply(input, axis=_softmax_dim(input, dim, axis))


def log_softmax(input, dim=None, *, axis=None):
    """``log softmax(x)`` along ``dim`` (the last dimension when None), computed without overflow."""
    return LogSoftmax.apply(input, axis=_softmax_dim(input, dim, axis))


def _softmax_dim(x, dim, axis):
    dim = normalize_dim(-1 if dim_arg(dim, axis) is None else dim_arg(dim, axis), x.ndim)
    return dim if x.ndim else None  # a 0-d tensor is its own (single) class


_REDUCTIONS = ("mean", "sum", "none")


def _check_classification(name, input, target, weight, ignore_index, reduction, what):
    """The checks ``cross_entropy`` and ``nll_loss`` share; returns the raw target and weight arrays."""
    if not isinstance(input, TensorBase) or not isinstance(target, TensorBase):
        bad = "input" if not isinstance(input, TensorBase) else "target"
        raise TypeError(f"{name}: {bad} must be a Tensor, got {type(input if bad == 'input' else target).__name__}")
    if input.ndim != 2:
        raise ValueError(f"{name}: input must be (N, C) {what}, got shape {tuple(input.shape)}")
    if not is_floating(input.dtype):
        raise TypeError(f"{name}: input must be floating, got dtype {input.dtype}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices, got dtype {target.dtype}")
    if target.shape != (input.shape[0],):
        raise ValueError(
            f"{name}: target must have shape ({input.shape[0]},) to match input "
            f"{tuple(input.shape)}, got {tuple(target.shape)}"
        )
    if target.device != input.device:
        raise RuntimeError(f"{name}: target is on {target.device}, input on {input.device}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    t = target.array
    c = input.shape[1]
    if t.size:
        valid = t[t != ignore_index]
        if valid.size and (int(valid.min()) < 0 or int(valid.max()) >= c):
            bad = int(valid.min()) if int(valid.min()) < 0 else int(valid.max())
            raise IndexError(f"{name}: target {bad} is out of range for {c} classes")
    if weight is None:
        return t, None
    if not isinstance(weight, TensorBase):
        raise TypeError(f"{name}: weight must be a Tensor, got {type(weight).__name__}")
    if tuple(weight.shape) != (c,):
        raise ValueError(f"{name}: weight must have shape ({c},), got {tuple(weight.shape)}")
    if weight.dtype != input.dtype:
        raise TypeError(f"{name}: weight has dtype {weight.dtype}, input {input.dtype}")
    if weight.device != input.device:
        raise RuntimeError(f"{name}: weight is on {weight.device}, input on {input.device}")
    return t, weight.array


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross-entropy between logits ``input`` (N, C) and class indices ``target`` (N,).

    Equivalent to ``nll_loss(log_softmax(input, 1), target)`` in one node.
    ``weight`` (C,) rescales classes; rows whose target is ``ignore_index``
    count for nothing; ``reduction`` is "mean" (weighted mean), "sum" or "none".
    """
    t, w = _check_classification("cross_entropy", input, target, weight, ignore_index, reduction, "logits")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    return CrossEntropy.apply(input, target=t, reduction=reduction, weight=w,
                              ignore_index=ignore_index, label_smoothing=label_smoothing)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices ``target`` (N,) under row-wise log-probabilities ``input`` (N, C).

    ``loss_i = -weight[t_i]·input[i, t_i]``; targets equal to ``ignore_index``
    count for nothing; "mean" divides by the sum of the weights of the rows
    counted. Validated exactly as ``cross_entropy``.
    """
    t, w_arr = _check_classification("nll_loss", input, target, weight, ignore_index, reduction, "log-probabilities")
    xp = input.backend.xp
    valid = t != ignore_index
    safe = xp.where(valid, t, 0)
    rows = xp.arange(input.shape[0])
    picked = getitem(input, (make_tensor(rows, input.backend), make_tensor(safe, input.backend)))
    w = valid.astype(input.dtype)
    if w_arr is not None:
        w = w * w_arr[safe]
    losses = -mul(picked, make_tensor(w, input.backend))
    if reduction == "none":
        return losses
    total = _sum(losses)
    if reduction == "sum":
        return total
    return total / float(w.sum())
