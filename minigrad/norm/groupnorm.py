"""Group Normalization (Wu & He, 2018): statistics per sample over groups of channels."""

from __future__ import annotations

import math

from .base import Example, Normalizer
from .functional import _check_count, _check_group_norm, _check_groups, _group_norm
from .registry import register

__all__ = ["GroupNorm"]


@register("GroupNorm")
class GroupNorm(Normalizer):
    """Group Normalization: the C channels split into ``num_groups`` groups.

    ``GroupNorm(num_groups, num_channels, eps=1e-5, affine=True, *,
    device=None, dtype=None)``; input (N, C, *). The C/G·∏spatial values
    of each (sample, group) share one mean and biased variance:
    ``y = γ_c·(x - μ_ng)/sqrt(σ²_ng + ε) + β_c`` with per-channel γ (ones)
    and β (zeros). No running statistics; statistics view (N·G, K) over
    axis 1. ``num_groups=1`` is LayerNorm over (C, *) with per-channel
    affine, ``num_groups=C`` is InstanceNorm.

    Example::

        gn = minigrad.nn.GroupNorm(4, 32)
        y = gn(minigrad.randn(2, 32, 8, 8))
    """

    input_ranks = range(2, 34)
    mixed_precision = True  # float16/bfloat16 inputs with float32 parameters

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, *, device=None, dtype=None):
        _check_count("GroupNorm", "num_channels", num_channels)
        _check_groups("GroupNorm", num_groups, num_channels)
        super().__init__(num_channels, eps, momentum=None, affine=affine, track_running_stats=False, device=device,
                         dtype=dtype)
        self.num_groups = int(num_groups)
        self.num_channels = self.num_features

    def forward(self, x):
        self.check_input(x)
        _check_group_norm("GroupNorm", x, self.num_groups, self.weight, self.bias, self.eps)
        return _group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def statistics_view(self, shape):
        g = self.num_groups
        return (shape[0] * g, math.prod(shape[1:]) // g), (1,)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"

    @classmethod
    def examples(cls):
        return [
            Example(args=(2, 4), shapes=((3, 4), (2, 4, 3), (2, 4, 2, 3)), bad_shapes=((4,), (2, 6, 3))),
            Example(args=(1, 3), kwargs=dict(affine=False), shapes=((2, 3, 4),)),
            Example(args=(3, 3), kwargs=dict(eps=1e-3), shapes=((2, 3, 2, 2),)),
        ]
