"""Batch Normalization (Ioffe & Szegedy, 2015): ``BatchNorm1d`` and ``BatchNorm2d``.

Each channel is standardized with statistics over the batch (and the
spatial positions), then scaled and shifted by learned γ and β:

    y = γ·(x - μ_B)/sqrt(σ²_B + ε) + β

In training the batch statistics are used (biased variance) and the
running averages are updated; in eval the running averages are used, and
the layer is one per-channel multiply-add (``inference_affine``), which
``minigrad.norm.fold`` folds into a preceding Linear or Conv2d.
"""

from __future__ import annotations

from ..nn import lazy as _lazy
from ..nn.lazy import LazyModuleMixin
from .base import Example, Normalizer
from .fold import FoldError
from .functional import _batch_norm_eval, _batch_norm_train, _check_batch_norm
from .registry import register

__all__ = ["BatchNorm1d", "BatchNorm2d", "LazyBatchNorm1d", "LazyBatchNorm2d"]


class _BatchNorm(Normalizer):
    """What BatchNorm1d and BatchNorm2d share; they differ only in ``input_ranks``."""

    mixed_precision = True  # float16/bfloat16 inputs with float32 parameters and running statistics

    def forward(self, x):
        self.check_input(x)
        batch_stats = self.uses_batch_statistics
        _check_batch_norm(type(self).__name__, x, self.running_mean, self.running_var, self.weight, self.bias,
                          batch_stats, self.momentum, self.eps, momentum_may_be_none=True)
        if not batch_stats:
            return _batch_norm_eval(x, self.running_mean, self.running_var, self.weight, self.bias, self.eps)
        y, mean, var = _batch_norm_train(x, self.weight, self.bias, self.eps)
        if self.training and x.numel():  # the running statistics move here, and only here
            self.update_running_stats(mean, var, x.numel() // x.shape[1])
        return y

    def inference_affine(self):
        if self.training:
            return None
        if not self.track_running_stats:
            raise FoldError(
                f"{type(self).__name__} has no running statistics (track_running_stats=False): it normalizes with "
                f"the statistics of each batch even in eval mode, so it is not an affine map and cannot be folded"
            )
        return self.running_affine()


@register("BatchNorm1d")
class BatchNorm1d(_BatchNorm):
    """Batch Normalization of (N, C) or (N, C, L) inputs, per channel C.

    ``BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, device=None, dtype=None)``.
    Statistics of channel c over the N (or N·L) values:
    ``y = γ·(x - μ_B)/sqrt(σ²_B + ε) + β``. Parameters ``weight`` (γ, ones)
    and ``bias`` (β, zeros) of shape (C,) when ``affine``; buffers
    ``running_mean``, ``running_var``, ``num_batches_tracked`` when
    ``track_running_stats``, updated in training as
    ``running = (1 - momentum)·running + momentum·batch`` (unbiased
    variance; ``momentum=None`` averages all batches).

    Example::

        bn = minigrad.nn.BatchNorm1d(100)
        y = bn(minigrad.randn(32, 100))   # training mode: batch statistics
        bn.eval(); y = bn(x)              # running statistics
    """

    input_ranks = (2, 3)

    @classmethod
    def examples(cls):
        return [
            Example(args=(3,), shapes=((4, 3), (2, 3, 5)), bad_shapes=((3,), (2, 3, 4, 4), (4, 2))),
            Example(args=(2,), kwargs=dict(affine=False, momentum=None), shapes=((5, 2), (3, 2, 2))),
            Example(args=(2,), kwargs=dict(track_running_stats=False), shapes=((3, 2),)),
        ]


@register("BatchNorm2d")
class BatchNorm2d(_BatchNorm):
    """Batch Normalization of (N, C, H, W) inputs, per channel over N·H·W values.

    ``BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, device=None, dtype=None)``; see
    ``BatchNorm1d`` for the parameters, buffers and update rule.
    ``y = γ·(x - μ_B)/sqrt(σ²_B + ε) + β`` with μ_B, σ²_B over (N, H, W).

    Example::

        bn = minigrad.nn.BatchNorm2d(64)
        y = bn(minigrad.randn(8, 64, 14, 14))
    """

    input_ranks = (4,)

    @classmethod
    def examples(cls):
        return [
            Example(args=(3,), shapes=((2, 3, 2, 3), (1, 3, 2, 2)), bad_shapes=((2, 3), (2, 3, 4), (2, 4, 2, 2))),
            Example(args=(2,), kwargs=dict(affine=False, eps=1e-3), shapes=((3, 2, 1, 2),)),
            Example(args=(2,), kwargs=dict(track_running_stats=False, momentum=None), shapes=((2, 2, 2, 1),)),
        ]


class _LazyBatchNorm(LazyModuleMixin):
    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None):
        self._lazy_init(1, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats,
                        device=device, dtype=dtype)
        object.__setattr__(self, "num_features", 0)

    def _input_size(self, x):
        return x.shape[1] if x.ndim > 1 else x.shape[0]


class LazyBatchNorm1d(_LazyBatchNorm, BatchNorm1d):
    """``BatchNorm1d`` with ``num_features`` inferred from dimension 1 of the first input (``minigrad.nn.lazy``).

    ``LazyBatchNorm1d(eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None)``.

    Example::

        bn = minigrad.nn.LazyBatchNorm1d()
        bn(minigrad.randn(8, 5))   # now a BatchNorm1d(5)
    """

    cls_to_become = BatchNorm1d


class LazyBatchNorm2d(_LazyBatchNorm, BatchNorm2d):
    """``BatchNorm2d`` with ``num_features`` inferred from dimension 1 of the first input (``minigrad.nn.lazy``).

    Example::

        bn = minigrad.nn.LazyBatchNorm2d()
        bn(minigrad.randn(2, 3, 4, 4))   # now a BatchNorm2d(3)
    """

    cls_to_become = BatchNorm2d


# They are also names of minigrad.nn.lazy, beside PyTorch's other lazy layers; that module is a layer below
# this one, so they are added there from here.
for _cls in (LazyBatchNorm1d, LazyBatchNorm2d):
    setattr(_lazy, _cls.__name__, _cls)
    _lazy.__all__.append(_cls.__name__)
