"""Stateless versions of the layers: ``minigrad.nn.functional`` (``F``).

Each function is a thin wrapper over ``minigrad.ops`` (or over the
normalizer functions in ``minigrad.norm``), with the argument names users
know from ``torch.nn.functional``.
"""

from __future__ import annotations

from .. import ops
from ..ops import (adaptive_avg_pool2d, avg_pool2d, conv2d, cross_entropy, linear, log_softmax, max_pool2d, nll_loss, relu,
                   sigmoid, softmax, tanh)

__all__ = [
    "linear", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "relu", "sigmoid", "tanh", "softmax", "log_softmax",
    "cross_entropy", "nll_loss", "mse_loss", "dropout", "flatten", "batch_norm", "layer_norm", "group_norm",
    "instance_norm",
]


def mse_loss(input, target, reduction="mean"):
    """Mean squared error ``(input - target)²``, reduced by "mean", "sum" or "none"."""
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input shape {tuple(input.shape)} and target shape {tuple(target.shape)} differ")
    diff = input - target
    sq = diff * diff
    if reduction == "mean":
        return sq.mean()
    if reduction == "sum":
        return sq.sum()
    if reduction == "none":
        return sq
    raise ValueError(f"mse_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def dropout(input, p=0.5, training=True):
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)`` (training only)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if input.dtype.kind != "f":
        raise TypeError(f"dropout needs a floating tensor, got dtype {input.dtype}")
    backend = input.backend
    if p == 1.0:
        mask = backend.xp.zeros(input.shape, dtype=input.dtype)
    else:
        keep = backend.uniform(input.shape, 0.0, 1.0, input.dtype) >= p
        mask = keep.astype(input.dtype) * (1.0 / (1.0 - p))
    return ops.dropout_mask_mul(input, mask)


def flatten(input, start_dim=1, end_dim=-1):
    """Flatten dimensions ``start_dim..end_dim`` (by default all but the batch one)."""
    return ops.flatten(input, start_dim, end_dim)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch Normalization (see ``minigrad.norm.functional.batch_norm``)."""
    from ..norm.functional import batch_norm as _bn

    return _bn(input, running_mean, running_var, weight, bias, training, momentum, eps)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer Normalization (see ``minigrad.norm.functional.layer_norm``)."""
    from ..norm.functional import layer_norm as _ln

    return _ln(input, normalized_shape, weight, bias, eps)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group Normalization (see ``minigrad.norm.functional.group_norm``)."""
    from ..norm.functional import group_norm as _gn

    return _gn(input, num_groups, weight, bias, eps)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Instance Normalization (see ``minigrad.norm.functional.instance_norm``)."""
    from ..norm.functional import instance_norm as _in

    return _in(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
