"""Instance Normalization (Ulyanov et al., 2016): statistics per sample and channel."""

from __future__ import annotations

import math

from .base import Example, Normalizer
from .functional import _batch_norm_eval, _check_instance_norm, instance_norm_train, update_running_stats
from .registry import register

__all__ = ["InstanceNorm1d", "InstanceNorm2d"]


class _InstanceNorm(Normalizer):
    """What InstanceNorm1d and InstanceNorm2d share (PyTorch's defaults: no affine, no running statistics)."""

    #: Rank of a batched input; one less is an unbatched input (a single sample).
    batched_rank = 3
    mixed_precision = True  # float16/bfloat16 inputs with float32 parameters and running statistics

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False, *,
                 device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.input_ranks = (self.batched_rank - 1, self.batched_rank)

    def check_input(self, x) -> None:
        self.check_rank(x)
        self.check_channels(x, 1 if x.ndim == self.batched_rank else 0)  # unbatched inputs have channels first
        self.check_dtype(x)

    def forward(self, x):
        self.check_input(x)
        unbatched = x.ndim == self.batched_rank - 1
        if unbatched:
            x = x.unsqueeze(0)
        _check_instance_norm(type(self).__name__, x, self.running_mean, self.running_var, self.weight, self.bias,
                             self.uses_batch_statistics, self.momentum, self.eps, momentum_may_be_none=True)
        if not self.uses_batch_statistics:
            y = _batch_norm_eval(x, self.running_mean, self.running_var, self.weight, self.bias, self.eps)
        else:
            track = self.training and self.track_running_stats
            y, mean, var, count = instance_norm_train(x, self.weight, self.bias, self.eps, with_statistics=track)
            if track:  # the running statistics move here, and only here
                self.update_running_stats(mean, var, count)
        return y.squeeze(0) if unbatched else y

    def update_running_stats(self, mean, var, count) -> None:
        """PyTorch's rule for InstanceNorm: ``num_batches_tracked`` is not counted, and
        ``momentum=None`` leaves the running statistics as they are."""
        if self.momentum is not None and count:
            update_running_stats(self.running_mean, self.running_var, mean, var, self.momentum, count)

    def statistics_view(self, shape):
        if len(shape) == self.batched_rank - 1:
            shape = (1,) + tuple(shape)
        return (shape[0] * shape[1], math.prod(shape[2:])), (1,)

    def affine_shape(self, ndim):
        shape = [1] * ndim
        shape[1 if ndim == self.batched_rank else 0] = -1
        return tuple(shape)

    def inference_affine(self):
        if self.training or not self.track_running_stats:
            return None  # per-instance statistics: not an affine map
        return self.running_affine()


@register("InstanceNorm1d")
class InstanceNorm1d(_InstanceNorm):
    """Instance Normalization of (N, C, L) inputs (or unbatched (C, L)).

    ``InstanceNorm1d(num_features, eps=1e-5, momentum=0.1, affine=False,
    track_running_stats=False, *, device=None, dtype=None)``. Each (sample,
    channel) is standardized over its L values:
    ``y = γ_c·(x - μ_nc)/sqrt(σ²_nc + ε) + β_c``. With
    ``track_running_stats`` the batch averages of the instance statistics
    are tracked in training and used in eval (then it is a per-channel
    affine map, like BatchNorm in eval); as in PyTorch,
    ``num_batches_tracked`` stays 0 and ``momentum=None`` leaves the running
    statistics unchanged.

    Example::

        y = minigrad.nn.InstanceNorm1d(3)(minigrad.randn(2, 3, 10))
    """

    batched_rank = 3

    @classmethod
    def examples(cls):
        return [
            Example(args=(3,), shapes=((2, 3, 4),), unbatched=((3, 5),), bad_shapes=((2, 3, 4, 4), (2, 4, 3), (3,))),
            Example(args=(2,), kwargs=dict(affine=True, track_running_stats=True), shapes=((3, 2, 3),)),
            Example(args=(2,), kwargs=dict(affine=True, momentum=None, track_running_stats=True),
                    shapes=((2, 2, 4),)),
        ]


@register("InstanceNorm2d")
class InstanceNorm2d(_InstanceNorm):
    """Instance Normalization of (N, C, H, W) inputs (or unbatched (C, H, W)).

    ``InstanceNorm2d(num_features, eps=1e-5, momentum=0.1, affine=False,
    track_running_stats=False, *, device=None, dtype=None)``; each (sample,
    channel) is standardized over its H·W values. See ``InstanceNorm1d``.

    Example::

        y = minigrad.nn.InstanceNorm2d(3, affine=True)(minigrad.randn(2, 3, 8, 8))
    """

    batched_rank = 4

    @classmethod
    def examples(cls):
        return [
            Example(args=(3,), shapes=((2, 3, 2, 3),), unbatched=((3, 2, 2),), bad_shapes=((2, 3, 4), (2, 4, 2, 2))),
            Example(args=(2,), kwargs=dict(affine=True, track_running_stats=True, eps=1e-3), shapes=((2, 2, 3, 1),)),
        ]
