"""Stateless versions of the layers: ``minigrad.nn.functional`` (``F``).

Each function is a thin wrapper over ``minigrad.ops``, with the argument
names users know from ``torch.nn.functional``. The normalization functions
of ``__all__`` (``batch_norm``, ``layer_norm``, ``group_norm``,
``instance_norm``) are ``minigrad.norm.functional``'s own: ``minigrad.norm``
sits a layer above this package (its normalizers are ``nn.Module``s), so it
puts them here when it loads, which ``import minigrad`` does.
"""

from __future__ import annotations

import math

from .._dtypes import is_floating
from .. import ops
from ..ops import (adaptive_avg_pool2d, avg_pool2d, conv2d, cross_entropy, linear, log_softmax, max_pool2d, nll_loss,
                   relu, sigmoid, softmax, softplus, tanh)
from ..ops.loss import binary_cross_entropy, binary_cross_entropy_with_logits

__all__ = [
    "linear", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "relu", "sigmoid", "tanh", "softmax",
    "log_softmax", "cross_entropy", "nll_loss", "mse_loss", "dropout", "flatten", "batch_norm", "layer_norm", "group_norm",
    "instance_norm", "leaky_relu", "gelu", "softplus", "dropout2d", "embedding", "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
]


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """``x`` where ``x > 0``, else ``negative_slope·x`` (``inplace`` accepted; computed out of place)."""
    return ops.where(input > 0, input, input * negative_slope)


def gelu(input, approximate="none"):
    """Gaussian Error Linear Unit ``x·Φ(x)``: exact, ``0.5·x·(1 + erf(x/√2))``, or with
    ``approximate="tanh"``, ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``."""
    if approximate == "none":
        return 0.5 * input * (1 + ops.erf(input * (1 / math.sqrt(2))))
    if approximate == "tanh":
        return 0.5 * input * (1 + ops.tanh(math.sqrt(2 / math.pi) * (input + 0.044715 * input * input * input)))
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels with probability ``p`` (scaling the rest by ``1/(1-p)``), for (N, C, H, W)
    or unbatched (C, H, W) input; identity in eval."""
    if input.ndim not in (3, 4):
        raise ValueError(f"dropout2d: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape "
                         f"{tuple(input.shape)}")
    return _dropout(input, p, training, input.shape[:-2] + (1, 1))


def embedding(input, weight, padding_idx=None):
    """Rows of ``weight`` (num_embeddings, dim) at the integer indices ``input`` (any shape): output
    ``input.shape + (dim,)``. The row ``padding_idx`` receives no gradient."""
    if input.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be an integer tensor, got dtype {input.dtype}")
    n = weight.shape[0]
    if input.array.size and (int(input.array.min()) < 0 or int(input.array.max()) >= n):
        raise IndexError(f"embedding: index out of range: indices must be in [0, {n}) for {n} embeddings")
    out = ops.getitem(weight, input)
    if padding_idx is None:
        return out
    keep = (input != padding_idx).unsqueeze(-1)
    return ops.where(keep, out, ops.getitem(weight.detach(), input))


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


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)`` (training only).

    ``inplace`` is accepted for PyTorch's signature; the result is computed out of place.
    """
    return _dropout(input, p, training, input.shape)


def _dropout(input, p, training, mask_shape):
    """Dropout with one Bernoulli draw per entry of ``mask_shape`` (broadcast against ``input``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if not is_floating(input.dtype):
        raise TypeError(f"dropout needs a floating tensor, got dtype {input.dtype}")
    backend = input.backend
    if p == 1.0:
        mask = backend.xp.zeros(mask_shape, dtype=input.dtype)
    else:
        keep = backend.uniform(mask_shape, 0.0, 1.0, input.dtype) >= p
        mask = keep.astype(input.dtype) * (1.0 / (1.0 - p))
    return ops.dropout_mask_mul(input, mask)


def flatten(input, start_dim=1, end_dim=-1):
    """Flatten dimensions ``start_dim..end_dim`` (by default all but the batch one)."""
    return ops.flatten(input, start_dim, end_dim)
