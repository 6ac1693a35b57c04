"""Gradient clipping: rescale (``clip_grad_norm_``) or clamp (``clip_grad_value_``) ``.grad`` in place."""

from __future__ import annotations

import math

import numpy as np

from ..._ext._engine import TensorBase, make_tensor
from ...tensor import tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    if isinstance(parameters, TensorBase):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients so that their joint ``norm_type``-norm is at most ``max_norm``; return the norm.

    The norm is taken over all gradients together, as if concatenated into
    one vector (``norm_type=inf``: the largest absolute value). Gradients are
    multiplied by ``min(1, max_norm/(norm + 1e-6))``. Returns the total norm
    before clipping (a 0-d Tensor); with ``error_if_nonfinite`` a NaN or
    infinite norm raises RuntimeError.

    Example::

        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()
    """
    grads = _grads(parameters)
    norm_type = float(norm_type)
    if not grads:
        return tensor(0.0)
    backend = grads[0].backend
    xp = backend.xp
    if math.isinf(norm_type):
        norms = [xp.abs(g.array).max() if g.array.size else xp.zeros((), g.dtype) for g in grads]
        total = xp.max(xp.stack([xp.asarray(n, dtype=xp.float64) for n in norms]))
    else:
        total = sum(xp.sum(xp.abs(g.array.astype(xp.float64)) ** norm_type) for g in grads) ** (1.0 / norm_type)
    total_f = float(total)
    if error_if_nonfinite and not math.isfinite(total_f):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
                           f"so it cannot be clipped. To disable this error and scale the gradients by the "
                           f"non-finite norm anyway, set `error_if_nonfinite=False`")
    coef = min(1.0, float(max_norm) / (total_f + 1e-6))
    with np.errstate(invalid="ignore"):  # an infinite gradient times 0 is NaN, as in PyTorch
        for g in grads:
            g._bump_version()
            g.array *= coef
    return make_tensor(xp.asarray(total, dtype=grads[0].dtype), backend)


def clip_grad_value_(parameters, clip_value, foreach=None) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        g._bump_version()
        g.backend.xp.clip(g.array, -clip_value, clip_value, out=g.array)
