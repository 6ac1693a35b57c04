"""Batch Renormalization for minigrad (Ioffe, 2017): an example normalizer plugin.

Batch Normalization normalizes with the minibatch's statistics in training
and with the running statistics in inference, so the network computes
different functions in the two modes, the more so the smaller or the less
i.i.d. the minibatches. Batch Renormalization corrects each channel of the
training output towards the running statistics μ and σ:

    x̂ = (x - μ_B)/σ_B · r + d,   y = γ·x̂ + β
    r = clip(σ_B/σ, 1/r_max, r_max),   d = clip((μ_B - μ)/σ, -d_max, d_max)

with σ_B = sqrt(σ²_B + ε) (biased batch variance) and σ = sqrt(running_var + ε).
r and d are treated as constants in backward (the paper's stop_gradient):
the gradient is BatchNorm's with γ·r in place of γ. The running statistics
follow the paper, μ ← μ + α(μ_B - μ) and σ ← σ + α(σ_B - σ): σ, not σ², is
averaged (kept as ``running_var = σ² - ε``, so inference, y = γ·(x - μ)/σ + β,
is BatchNorm's eval and folds like it). With r_max = 1 and d_max = 0 the
layer is BatchNorm; the paper trains so for 5,000 steps, then relaxes r_max
to 3 (reached at 40k steps) and d_max to 5 (at 25k): ``PAPER_R_MAX`` and
``PAPER_D_MAX``, the defaults, relaxed linearly (the paper says
"gradually"). The step is the number of training batches seen,
``num_batches_tracked``.

Built from minigrad's public API only: ``BatchNorm1d``/``BatchNorm2d`` for
the arguments, buffers, validation and folding, ``batch_norm_train`` /
``batch_norm_eval`` for the numerics, and ``update_running_stats`` as the
one place the running statistics move.

Example::

    import minigrad
    bn = minigrad.norm.create("BatchRenorm2d", 16)       # found through the entry point
    y = bn(minigrad.randn(8, 16, 4, 4))
"""

from __future__ import annotations

import math
import numbers

import numpy as np

import minigrad
from minigrad.norm import BatchNorm1d, BatchNorm2d, Example, register
from minigrad.norm.functional import batch_norm_eval, batch_norm_train

__all__ = ["BatchRenorm1d", "BatchRenorm2d", "Ramp", "PAPER_R_MAX", "PAPER_D_MAX"]
__version__ = "0.1.0"


class Ramp:
    """A value moving linearly from ``start`` to ``end`` between two steps: ``start`` up to step
    ``begin``, ``end`` from step ``finish`` on. Called with a step, it returns the value.

    Example::

        Ramp(1.0, 3.0, 5000, 40000)(22500)   # 2.0
    """

    def __init__(self, start, end, begin, finish):
        if not finish > begin >= 0:
            raise ValueError(f"Ramp: expected 0 <= begin < finish, got begin={begin!r}, finish={finish!r}")
        self.start, self.end, self.begin, self.finish = float(start), float(end), begin, finish

    def __call__(self, step):
        t = min(max((step - self.begin) / (self.finish - self.begin), 0.0), 1.0)
        return self.start + t * (self.end - self.start)

    def __repr__(self) -> str:
        return f"Ramp({self.start}, {self.end}, {self.begin}, {self.finish})"


#: The paper's r_max: 1 (plain BatchNorm) for 5,000 steps, then up to 3 at 40,000.
PAPER_R_MAX = Ramp(1.0, 3.0, 5000, 40000)
#: The paper's d_max: 0 for 5,000 steps, then up to 5 at 25,000.
PAPER_D_MAX = Ramp(0.0, 5.0, 5000, 25000)


class _BatchRenorm:
    """What BatchRenorm1d and BatchRenorm2d add to BatchNorm1d and BatchNorm2d."""

    #: Training outputs are corrected by r and d, so they are not standardized.
    standardizes = False
    #: Inputs in the module's dtype only (BatchNorm takes float16 into float32 modules; this example does
    #: not mix r and d, which come in the statistics' float32, with float16 data).
    mixed_precision = False

    def __init__(self, num_features, eps=1e-5, momentum=0.01, affine=True, track_running_stats=True,
                 r_max=PAPER_R_MAX, d_max=PAPER_D_MAX, *, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        for name, value in (("r_max", r_max), ("d_max", d_max)):
            if not callable(value):
                _check_limit(type(self).__name__, name, value)
        self.r_max, self.d_max = r_max, d_max

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r_max={self.r_max!r}, d_max={self.d_max!r}"

    def limits(self):
        """``(r_max, d_max)`` at the current step (``num_batches_tracked``)."""
        step = int(self.num_batches_tracked.item())
        name = type(self).__name__
        return (_check_limit(name, "r_max", self.r_max(step) if callable(self.r_max) else self.r_max),
                _check_limit(name, "d_max", self.d_max(step) if callable(self.d_max) else self.d_max))

    def corrections(self, mean, var):
        """r and d (Tensors of shape (C,), outside the graph) for a batch with per-channel mean μ_B and
        biased variance σ²_B."""
        r_max, d_max = self.limits()
        sigma = (self.running_var + self.eps).sqrt()
        r = ((var + self.eps).sqrt() / sigma).clamp(1.0 / r_max, r_max)
        d = ((mean - self.running_mean) / sigma).clamp(-d_max, d_max)
        return r, d

    def forward(self, x):
        self.check_input(x)
        if not self.uses_batch_statistics:  # inference: y = γ·(x - μ)/σ + β, BatchNorm's eval
            return batch_norm_eval(x, self.running_mean, self.running_var, self.weight, self.bias, self.eps)
        if not self.track_running_stats:  # nothing to correct towards: BatchNorm
            return batch_norm_train(x, self.weight, self.bias, self.eps)[0]
        xhat, mean, var = batch_norm_train(x, None, None, self.eps)  # gradients flow through μ_B and σ_B
        # The statistics come in the accumulation dtype (float32 for a float16 x); r, d and the running
        # statistics are in the module's.
        mean, var = mean.to(dtype=self.running_mean.dtype), var.to(dtype=self.running_var.dtype)
        r, d = self.corrections(mean, var)  # constants: no gradient flows through them
        scale, shift = (r, d) if self.weight is None else (self.weight * r, self.weight * d)
        if self.bias is not None:
            shift = shift + self.bias
        shape = self.affine_shape(x.ndim)
        # Training (the only mode left): the running statistics move here, and only here.
        self.update_running_stats(mean, var, x.shape[0] * math.prod(x.shape[2:]))
        return xhat * scale.reshape(shape) + shift.reshape(shape)

    def update_running_stats(self, mean, var, count) -> None:
        """The paper's rule, ``μ ← μ + α(μ_B - μ)`` and ``σ ← σ + α(σ_B - σ)``, with
        α = ``running_stats_factor()``; counts the batch (the step of the r_max/d_max schedules)."""
        if not self.track_running_stats or not count:
            return
        alpha = self.running_stats_factor()
        with minigrad.no_grad():
            self.num_batches_tracked.add_(1)
            sigma = (self.running_var + self.eps).sqrt()
            sigma = sigma + ((var + self.eps).sqrt() - sigma) * alpha
            self.running_mean.add_(mean - self.running_mean, alpha=alpha)
            self.running_var.copy_(sigma * sigma - self.eps)

    def reference(self, x):
        """Plain-NumPy float64 forward of the current mode (the running statistics are not updated)."""
        if not (self.training and self.track_running_stats):
            return super().reference(x)
        x64 = np.asarray(x, dtype=np.float64)
        shape = self.affine_shape(x64.ndim)
        axes = (0,) + tuple(range(2, x64.ndim))
        mean, var = x64.mean(axis=axes, keepdims=True), x64.var(axis=axes, keepdims=True)

        def buffer(t):
            return t.detach().numpy().astype(np.float64).reshape(shape)

        sigma = np.sqrt(buffer(self.running_var) + self.eps)
        r_max, d_max = self.limits()
        r = np.clip(np.sqrt(var + self.eps) / sigma, 1.0 / r_max, r_max)
        d = np.clip((mean - buffer(self.running_mean)) / sigma, -d_max, d_max)
        y = (x64 - mean) / np.sqrt(var + self.eps) * r + d
        if self.weight is not None:
            y = y * buffer(self.weight)
        if self.bias is not None:
            y = y + buffer(self.bias)
        return y


def _check_limit(name, what, value):
    """r_max >= 1 and d_max >= 0, finite; returns the value as a float."""
    low = 1.0 if what == "r_max" else 0.0
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not low <= value < math.inf:
        raise ValueError(f"{name}: {what} must be a finite number >= {low:g} (or a schedule: a callable of the "
                         f"step), got {value!r}")
    return float(value)


@register("BatchRenorm1d")
class BatchRenorm1d(_BatchRenorm, BatchNorm1d):
    """Batch Renormalization of (N, C) or (N, C, L) inputs, per channel C.

    ``BatchRenorm1d(num_features, eps=1e-5, momentum=0.01, affine=True,
    track_running_stats=True, r_max=PAPER_R_MAX, d_max=PAPER_D_MAX, *,
    device=None, dtype=None)``; ``r_max``/``d_max`` are numbers or callables
    of the step (``Ramp``). Training: ``y = γ·((x - μ_B)/σ_B·r + d) + β``
    with r and d the clipped corrections towards the running statistics
    (constants in backward); eval: ``y = γ·(x - μ)/σ + β``. momentum is the
    paper's α (0.01: Keras's ``renorm_momentum=0.99``). Without running
    statistics it is BatchNorm1d.

    Example::

        bn = BatchRenorm1d(100, r_max=3.0, d_max=5.0)
        y = bn(minigrad.randn(32, 100))
    """

    @classmethod
    def examples(cls):
        return [
            Example(args=(3,), kwargs=dict(r_max=2.0, d_max=0.5), shapes=((4, 3), (2, 3, 5)),
                    bad_shapes=((3,), (2, 3, 4, 4), (4, 2))),
            Example(args=(2,), shapes=((5, 2),)),  # the paper's schedule at step 0: BatchNorm
            Example(args=(2,), kwargs=dict(affine=False, momentum=None, r_max=1.5, d_max=1.0), shapes=((3, 2, 2),)),
            Example(args=(2,), kwargs=dict(track_running_stats=False), shapes=((3, 2),)),
        ]


@register("BatchRenorm2d")
class BatchRenorm2d(_BatchRenorm, BatchNorm2d):
    """Batch Renormalization of (N, C, H, W) inputs, per channel over N·H·W values.

    ``BatchRenorm2d(num_features, eps=1e-5, momentum=0.01, affine=True,
    track_running_stats=True, r_max=PAPER_R_MAX, d_max=PAPER_D_MAX, *,
    device=None, dtype=None)``; see ``BatchRenorm1d``.

    Example::

        bn = BatchRenorm2d(16, r_max=Ramp(1.0, 3.0, 5000, 40000))
        y = bn(minigrad.randn(8, 16, 4, 4))
    """

    @classmethod
    def examples(cls):
        return [
            Example(args=(3,), kwargs=dict(r_max=2.0, d_max=0.5), shapes=((2, 3, 2, 3), (3, 3, 1, 2)),
                    bad_shapes=((2, 3), (2, 3, 4), (2, 4, 2, 2))),
            Example(args=(2,), kwargs=dict(eps=1e-3, r_max=Ramp(1.0, 3.0, 0, 4), d_max=Ramp(0.0, 5.0, 0, 4)),
                    shapes=((2, 2, 2, 2),)),
        ]
