"""Layer Normalization (Ba, Kiros & Hinton, 2016): statistics per sample over the trailing axes."""

from __future__ import annotations

import math

from .base import Example, Normalizer
from .functional import _check_layer_norm, _layer_norm, _normalized_shape
from .registry import register

__all__ = ["LayerNorm"]


@register("LayerNorm")
class LayerNorm(Normalizer):
    """Layer Normalization over the last ``len(normalized_shape)`` axes.

    ``LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True,
    bias=True, *, device=None, dtype=None)``; input (*, *normalized_shape).
    Each sample's K = ∏normalized_shape values share one mean and biased
    variance: ``y = γ·(x - μ)/sqrt(σ² + ε) + β`` with γ (ones) and β
    (zeros) of shape normalized_shape. No running statistics: training
    and eval compute the same thing. Statistics view: (R, K) over axis 1.

    Example::

        ln = minigrad.nn.LayerNorm(16)
        y = ln(minigrad.randn(2, 5, 16))
    """

    channel_axis = None
    mixed_precision = True  # float16/bfloat16 inputs with float32 parameters

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *, device=None, dtype=None):
        shape = _normalized_shape("LayerNorm", normalized_shape)
        super().__init__(math.prod(shape), eps, momentum=None, affine=elementwise_affine, track_running_stats=False,
                         param_shape=shape, device=device, dtype=dtype)
        self.normalized_shape = shape
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine and not bias:
            self.bias = None
        # Any rank that ends with normalized_shape.
        self.input_ranks = range(len(shape), len(shape) + 32)

    def check_input(self, x) -> None:
        super().check_input(x)
        _check_layer_norm("LayerNorm", x, self.normalized_shape, self.weight, self.bias, self.eps)

    def forward(self, x):
        self.check_input(x)
        return _layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def statistics_view(self, shape):
        k = math.prod(self.normalized_shape)
        return (math.prod(shape) // k, k), (1,)

    def affine_shape(self, ndim):
        return (1,) * (ndim - len(self.normalized_shape)) + self.normalized_shape

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"

    @classmethod
    def examples(cls):
        return [
            Example(args=(4,), shapes=((3, 4), (2, 3, 4), (1, 4)), bad_shapes=((4, 3), (2, 5))),
            Example(args=((2, 3),), kwargs=dict(elementwise_affine=False, eps=1e-3), shapes=((2, 2, 3),), unbatched=((2, 3),),
                    bad_shapes=((3,), (2, 3, 2))),
        ]
