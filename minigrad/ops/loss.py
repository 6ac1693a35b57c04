"""Binary cross-entropy losses, on probabilities and (stably) on logits, with PyTorch's semantics."""

from __future__ import annotations

import numpy as np

from .._dtypes import is_floating
from .._ext._engine import Function, TensorBase
from .elementwise import cast, clamp, div, log, mul, softplus, sub

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits"]

_REDUCTIONS = ("mean", "sum", "none")


class BinaryCrossEntropy(Function):
    """``-(t·log p + (1-t)·log(1-p))`` elementwise, each log clamped at -100 as PyTorch does."""

    def forward(self, p, t):
        xp = self.xp
        with np.errstate(divide="ignore"):  # log(0) = -inf, clamped at -100 below
            log_p = xp.maximum(xp.log(p), -100)
            log_q = xp.maximum(xp.log1p(-p), -100)
        self.save_for_backward(p, t, log_p, log_q)
        return -(t * log_p + (1 - t) * log_q)

    def backward(self, grad):
        p, t, log_p, log_q = self.saved_tensors
        xp = self.xp
        need = self.needs_input_grad
        # d/dp = (p - t)/(p(1-p)), the denominator kept away from 0 (PyTorch's EPSILON 1e-12).
        gp = grad * (p - t) / xp.maximum(p * (1 - p), 1e-12) if need[0] else None
        gt = grad * (log_q - log_p) if need[1] else None
        return gp, gt

    def vjp(self, grad):
        p, t, _, _ = self.saved_as_tensors()
        need = self.needs_input_grad
        gp = div(mul(grad, sub(p, t)), clamp(mul(p, sub(1.0, p)), min=1e-12)) if need[0] else None
        gt = None
        if need[1]:
            with np.errstate(divide="ignore"):
                gt = mul(grad, sub(clamp(log(sub(1.0, p)), min=-100.0), clamp(log(p), min=-100.0)))
        return gp, gt


def _reduce(loss, reduction, name):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check(name, input, target):
    for what, t in (("input", input), ("target", target)):
        if not isinstance(t, TensorBase):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(t).__name__}")
    if not is_floating(input.dtype):
        raise TypeError(f"{name}: input must be floating, got dtype {input.dtype}")
    if target.shape != input.shape:
        raise ValueError(f"{name}: using a target size {tuple(target.shape)} that is different to the input size "
                         f"{tuple(input.shape)} is not supported; please ensure they have the same size")
    if target.dtype != input.dtype:
        target = cast(target, input.dtype)
    return target


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """Binary cross-entropy of probabilities ``input`` (any shape) against ``target`` (same shape) in [0, 1].

    ``loss = -weight·(t·log p + (1-t)·log(1-p))``, each log clamped at -100
    (so p = 0 or 1 gives a finite loss), reduced by "mean", "sum" or "none".
    """
    target = _check("binary_cross_entropy", input, target)
    if input.array.size and (float(input.array.min()) < 0 or float(input.array.max()) > 1):
        raise ValueError("binary_cross_entropy: all elements of input should be between 0 and 1 "
                         "(use binary_cross_entropy_with_logits for logits)")
    loss = BinaryCrossEntropy.apply(input, target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """Binary cross-entropy of ``sigmoid(input)`` against ``target``, computed stably from the logits.

    ``loss = (1-t)·x + (1 + (pos_weight-1)·t)·softplus(-x)``, times ``weight``;
    ``pos_weight`` (broadcast along the last dimension) weighs the positive
    examples. Equals ``binary_cross_entropy(sigmoid(x), t)`` without its
    overflow for large ``|x|``.

    Example::

        >>> import minigrad as mg
        >>> x = mg.tensor([0.0, 2.0]); t = mg.tensor([1.0, 0.0])
        >>> round(mg.nn.functional.binary_cross_entropy_with_logits(x, t).item(), 4)
        1.41
    """
    target = _check("binary_cross_entropy_with_logits", input, target)
    # softplus without its linear threshold: exact for every logit.
    sp = softplus(-input, threshold=float("inf"))
    log_weight = 1 if pos_weight is None else 1 + (pos_weight - 1) * target
    loss = (1 - target) * input + log_weight * sp
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")
