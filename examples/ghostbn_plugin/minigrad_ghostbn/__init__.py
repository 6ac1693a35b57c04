"""Ghost Batch Normalization for minigrad (Hoffer, Hubara & Soudry, 2017): an example normalizer plugin.

Training with large batches generalizes worse, in part because Batch
Normalization's statistics over a large batch lose the noise that
regularizes small-batch training. Ghost Batch Normalization keeps the large
batch for the gradient step but normalizes each "ghost" batch of
``virtual_batch_size`` consecutive samples (Keras's name) with its own
statistics:

    y = γ·(x - μ_g)/sqrt(σ²_g + ε) + β      for x in ghost batch g

The batch size must be a multiple of ``virtual_batch_size`` (Keras's rule);
None means the whole batch (then it is BatchNorm). The running statistics
move once per ghost batch, in order, with BatchNorm's rule (the paper's
Algorithm 1; Keras folds the ghost batches' averaged statistics in with
one update instead, which its comment calls not strictly correct but
cheaper), so ``num_batches_tracked`` counts ghost batches. Inference uses
the running statistics, as BatchNorm does, and folds like it.

Built from minigrad's public API only: ``BatchNorm1d``/``BatchNorm2d`` for
the arguments, buffers, validation and folding, ``batch_norm_train`` per
ghost batch, and ``update_running_stats`` for the running statistics.

Example::

    import minigrad
    bn = minigrad.norm.create("GhostBatchNorm2d", 16, virtual_batch_size=32)
    y = bn(minigrad.randn(128, 16, 4, 4))   # four ghost batches of 32
"""

from __future__ import annotations

import math
import numbers

import minigrad
from minigrad.norm import BatchNorm1d, BatchNorm2d, Example, register
from minigrad.norm.functional import batch_norm_eval, batch_norm_train

__all__ = ["GhostBatchNorm1d", "GhostBatchNorm2d"]
__version__ = "0.1.0"


class _GhostBatchNorm:
    """What GhostBatchNorm1d and GhostBatchNorm2d add to BatchNorm1d and BatchNorm2d."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *,
                 virtual_batch_size=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        if virtual_batch_size is not None and (not isinstance(virtual_batch_size, numbers.Integral)
                                               or isinstance(virtual_batch_size, bool) or virtual_batch_size < 1):
            raise ValueError(f"{type(self).__name__}: virtual_batch_size must be a positive int or None, got "
                             f"{virtual_batch_size!r}")
        self.virtual_batch_size = None if virtual_batch_size is None else int(virtual_batch_size)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"

    def ghost_size(self, batch):
        """The number of samples per ghost batch for a batch of ``batch`` samples (ValueError if it does not
        divide it)."""
        size = self.virtual_batch_size or max(batch, 1)
        if batch % size:
            raise ValueError(f"{type(self).__name__}: the batch size ({batch}) must be a multiple of "
                             f"virtual_batch_size ({size}); each ghost batch of {size} samples is normalized "
                             f"with its own statistics")
        return size

    def forward(self, x):
        self.check_input(x)
        if not self.uses_batch_statistics:  # inference: the running statistics, as BatchNorm
            return batch_norm_eval(x, self.running_mean, self.running_var, self.weight, self.bias, self.eps)
        size = self.ghost_size(x.shape[0])
        outputs = []
        for start in range(0, max(x.shape[0], 1), size):
            y, mean, var = batch_norm_train(x[start:start + size], self.weight, self.bias, self.eps)
            if self.training:  # each ghost batch moves the running statistics, in order (Algorithm 1)
                self.update_running_stats(mean, var, y.shape[0] * math.prod(y.shape[2:]))
            outputs.append(y)
        return outputs[0] if len(outputs) == 1 else minigrad.cat(outputs)

    def statistics_view(self, shape):
        """(ghost batch, sample in it, channel, position) over the last three but the channel: the statistics
        of each ghost batch (``shape[0]`` a multiple of the ghost size)."""
        size = self.ghost_size(shape[0])
        return (shape[0] // size, size, shape[1], math.prod(shape[2:])), (1, 3)


@register("GhostBatchNorm1d")
class GhostBatchNorm1d(_GhostBatchNorm, BatchNorm1d):
    """Ghost Batch Normalization of (N, C) or (N, C, L) inputs: per channel and ghost batch.

    ``GhostBatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, virtual_batch_size=None, device=None,
    dtype=None)``. In training each run of ``virtual_batch_size`` samples
    is normalized with its own statistics, ``y = γ·(x - μ_g)/sqrt(σ²_g + ε) + β``,
    and moves the running statistics once; eval uses the running
    statistics (BatchNorm1d's eval).

    Example::

        bn = GhostBatchNorm1d(100, virtual_batch_size=16)
        y = bn(minigrad.randn(64, 100))
    """

    @classmethod
    def examples(cls):
        return [
            Example(args=(3,), kwargs=dict(virtual_batch_size=2), shapes=((4, 3), (6, 3, 2)),
                    bad_shapes=((3,), (2, 3, 4, 4), (4, 2), (5, 3))),
            Example(args=(2,), kwargs=dict(virtual_batch_size=3, affine=False, momentum=None),
                    shapes=((6, 2), (3, 2, 2))),
            Example(args=(2,), kwargs=dict(virtual_batch_size=1), shapes=((3, 2, 4),)),
            Example(args=(2,), kwargs=dict(track_running_stats=False), shapes=((3, 2),)),
        ]


@register("GhostBatchNorm2d")
class GhostBatchNorm2d(_GhostBatchNorm, BatchNorm2d):
    """Ghost Batch Normalization of (N, C, H, W) inputs: per channel and ghost batch, over its samples'
    H·W positions.

    ``GhostBatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, virtual_batch_size=None, device=None,
    dtype=None)``; see ``GhostBatchNorm1d``.

    Example::

        bn = GhostBatchNorm2d(16, virtual_batch_size=32)
        y = bn(minigrad.randn(128, 16, 4, 4))
    """

    @classmethod
    def examples(cls):
        return [
            Example(args=(3,), kwargs=dict(virtual_batch_size=2), shapes=((4, 3, 2, 2), (2, 3, 1, 3)),
                    bad_shapes=((2, 3), (2, 3, 4), (2, 4, 2, 2), (3, 3, 2, 2))),
            Example(args=(2,), kwargs=dict(virtual_batch_size=3, track_running_stats=False, eps=1e-3),
                    shapes=((6, 2, 2, 1),)),
        ]
