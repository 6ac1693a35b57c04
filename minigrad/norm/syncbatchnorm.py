"""Synchronized Batch Normalization: the statistics of the batch of all ranks together.

With data-parallel training each process sees only its share of the
batch; with 2-8 samples per process, per-process BN statistics are noisy
and training suffers. ``SyncBatchNorm`` normalizes with the statistics of
the **global** batch (the concatenation of every rank's batch), so N
processes with batch b train like one process with batch N·b.

Forward, per channel: each rank computes its (count, mean, M2 = Σ(x-mean)²)
with the backend's fused statistics kernel; ONE allgather brings every
rank's triple to every rank, and each combines them in float64 with Chan
et al.'s parallel formula (never E[x²] - E[x]²), in rank order, so all
ranks get the same numbers:

    n = n_a + n_b,  δ = mean_b - mean_a,
    mean = mean_a + δ·n_b/n,  M2 = M2_a + M2_b + δ²·n_a·n_b/n

then ``y = γ·(x - mean)/sqrt(M2/n + ε) + β``. Backward needs the global
per-channel sums Σdy and Σdy·x̂: ONE allreduce, then
``dx = γ/σ·(dy - Σdy/n - x̂·Σdy·x̂/n)``; dγ and dβ stay per rank (their
sum over ranks is the global gradient; ``DistributedDataParallel``
averages them like every other gradient). Ranks may hold different batch
sizes, empty ones included; the running variance is the global unbiased
one, M2/(n - 1).
"""

from __future__ import annotations

import math

import numpy as np

from .._dtypes import accumulation_dtype
from .._ext._engine import Function
from .base import Example
from .batchnorm import _BatchNorm
from .functional import _as_dtypes, _dtypes_of
from .registry import register

__all__ = ["SyncBatchNorm", "SyncBatchNormFunction", "global_batch_statistics"]


def global_batch_statistics(v, backend, group, eps):
    """Per-channel ``(count, mean, M2)`` of the global batch, float64 arrays on ``v``'s device.

    ``v``: this rank's ``(N, C, S)`` view (N·S may be 0). One allgather of
    each rank's ``(count, mean[C], M2[C])``; Chan's formula combines them
    in rank order (identical on every rank). ``count`` is a Python int.
    """
    xp = backend.xp
    n, c, s = v.shape
    m = n * s
    local = xp.zeros(2 * c + 1, dtype=xp.float64)
    if m:
        _, mean, var = backend.batch_norm_forward_train(v, None, None, eps)
        local[0] = m
        local[1:c + 1] = mean
        local[c + 1:] = var.astype(xp.float64) * m
    gathered = xp.empty((group.size, 2 * c + 1), dtype=xp.float64)
    group.allgather(local, gathered, backend, async_op=False)
    counts = backend.to_numpy(gathered[:, 0])
    count, mean, m2 = 0, xp.zeros(c, dtype=xp.float64), xp.zeros(c, dtype=xp.float64)
    for r in np.flatnonzero(counts):
        n_b = int(counts[r])
        total = count + n_b
        delta = gathered[r, 1:c + 1] - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + gathered[r, c + 1:] + delta * delta * (count * n_b / total)
        count = total
    return count, mean, m2


class SyncBatchNormFunction(Function):
    """Batch normalization with given global statistics, whose backward reduces over the ranks (one graph node).

    ``apply(x, weight, bias, mean=..., var=..., count=..., eps=1e-5, group=...)``:
    ``mean``/``var`` (biased) are the global batch's per-channel statistics
    (arrays in x's accumulation dtype: float32 for a half x, whose γ and β
    may be float32 too, as in BatchNorm), ``count`` the global number of
    values per channel. Forward is ``y = γ·(x - mean)/sqrt(var + ε) + β``
    (``batch_norm_forward_eval``). Backward allreduces the per-channel
    Σdy and Σdy·x̂ (float64, one collective) and returns
    ``dx = γ/σ·(dy - Σdy/count - x̂·Σdy·x̂/count)`` with the global sums,
    and this rank's dγ = Σdy·x̂, dβ = Σdy.
    """

    mixed_precision = True

    def forward(self, x, weight=None, bias=None, mean=None, var=None, count=0, eps=1e-5, group=None):
        shape = x.shape
        v = x.reshape(shape[0], shape[1], math.prod(shape[2:]))
        self.shape, self.count, self.eps, self.group = shape, count, eps, group
        self.param_dtypes = _dtypes_of(weight, bias)
        self.save_for_backward(v, mean, var, weight)
        if v.size == 0:
            return self.xp.empty(shape, dtype=x.dtype)
        return self.backend.batch_norm_forward_eval(v, mean, var, weight, bias, eps).reshape(shape)

    def backward(self, grad):
        v, mean, var, weight = self.saved_tensors
        xp, backend, dtype = self.xp, self.backend, accumulation_dtype(v.dtype)  # the vectors' dtype
        c = v.shape[1]
        invstd = 1.0 / xp.sqrt(var.astype(xp.float64) + self.eps)
        g = grad.reshape(v.shape)
        if v.size:
            # dx_direct = γ·invstd·dy; the kernel's eval-mode sums are this rank's Σdy·x̂ and Σdy.
            dx, sum_dy_xhat, sum_dy = backend.batch_norm_backward(g, v, mean, invstd.astype(dtype), weight, False)
        else:
            dx, sum_dy_xhat, sum_dy = xp.empty(v.shape, dtype=v.dtype), xp.zeros(c, dtype), xp.zeros(c, dtype)
        sums = xp.concatenate([sum_dy, sum_dy_xhat]).astype(xp.float64)
        self.group.allreduce(sums, _sum_op(), backend, async_op=False)
        need = self.needs_input_grad
        sum_dy_xhat, sum_dy = _as_dtypes((sum_dy_xhat, sum_dy), self.param_dtypes)
        if need[0] and v.size:
            # dx = γ·invstd·(dy - a - x̂·b) = dx_direct + x̂·(-γ·invstd·b) - γ·invstd·a; the eval kernel
            # computes the x̂ term from x without cancellation.
            scale = invstd if weight is None else invstd * weight
            a, b = sums[:c] / self.count, sums[c:] / self.count
            dx += backend.batch_norm_forward_eval(v, mean, var, (-scale * b).astype(dtype),
                                                  (-scale * a).astype(dtype), self.eps)
        return (dx.reshape(self.shape) if need[0] else None,
                sum_dy_xhat if need[1] else None,
                sum_dy if need[2] else None)


def _sum_op():
    from ..distributed import ReduceOp

    return ReduceOp.SUM


def _process_group(group):
    """The group to synchronize over: ``group``, else the default one if initialized, else None."""
    from .. import distributed

    if group is not None:
        return group
    return distributed.process_group.default_group() if distributed.is_initialized() else None


@register("SyncBatchNorm")
class SyncBatchNorm(_BatchNorm):
    """Batch Normalization over the global batch of all ranks, for (N, C, *) inputs.

    ``SyncBatchNorm(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, process_group=None, *, device=None,
    dtype=None)``; parameters, buffers and the update rule are
    ``BatchNorm1d``'s. In training, with a process group (``process_group``,
    else the default one once ``minigrad.distributed.init_process_group``
    ran), μ and σ² are the statistics of every rank's batch together:
    ``y = γ·(x - μ_global)/sqrt(σ²_global + ε) + β``, one collective in
    forward and one in backward; ranks may hold different (even empty)
    batches, and every rank gets the same running statistics (global
    unbiased variance). In eval mode, or without a process group, it is
    BatchNorm. ``convert_sync_batchnorm`` swaps it into a model.

    Example::

        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)   # every BatchNorm1d/2d
        bn = nn.SyncBatchNorm(64)
        y = bn(minigrad.randn(4, 64, 8, 8))   # statistics over all ranks' 4·8·8 values per channel
    """

    input_ranks = range(2, 33)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, *, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def forward(self, x):
        group = _process_group(self.process_group) if self.training else None
        if group is None:
            return super().forward(x)
        self.check_input(x)
        shape = x.shape
        v = x.array.reshape(shape[0], shape[1], math.prod(shape[2:]))
        count, mean, m2 = global_batch_statistics(v, x.backend, group, self.eps)
        if count == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(shape)} "
                             f"on rank {group.rank} and 1 value per channel over all {group.size} ranks")
        var = m2 / count if count else m2
        self.update_running_stats(mean, var, count)  # the global mean and biased variance, over count values
        dtype = accumulation_dtype(x.dtype)  # float32 statistics for a half x, never rounded to half
        return SyncBatchNormFunction.apply(x, self.weight, self.bias, mean=mean.astype(dtype), var=var.astype(dtype),
                                           count=count, eps=self.eps, group=group)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Return ``module`` with every BatchNorm1d/BatchNorm2d replaced by a SyncBatchNorm.

        The replacements take over the originals' parameters and buffers
        (the same Tensor objects, so an optimizer built before keeps
        working) and training mode; containers are changed in place, and a
        BatchNorm passed as ``module`` itself is returned converted.

        Example::

            model = nn.Sequential(nn.Linear(784, 100), nn.BatchNorm1d(100), nn.Sigmoid())
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            # model[1] is now SyncBatchNorm(100, ...)
        """
        out = module
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      process_group)
            for store in ("_parameters", "_buffers"):
                getattr(out, store).update(getattr(module, store))
            out.train(module.training)
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out

    @classmethod
    def examples(cls):
        return [
            Example(args=(3,), shapes=((4, 3), (2, 3, 5), (2, 3, 2, 3)), bad_shapes=((3,), (4, 2), (2, 4, 2, 2))),
            Example(args=(2,), kwargs=dict(affine=False, momentum=None), shapes=((5, 2), (3, 2, 2, 2))),
        ]
