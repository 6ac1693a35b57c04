"""RMSNorm for minigrad: an example normalizer plugin composed of minigrad ops.

Root-mean-square normalization (Zhang & Sennrich, 2019) rescales each
sample's feature vector by its RMS, without centring it:

    y = γ · x / sqrt(mean(x², over the last axis) + ε)

It is registered under the name "RMSNorm" twice over, which is harmless and
shows both paths: the ``@register`` line (when the module is imported
directly) and the entry point in ``pyproject.toml`` (how an installed
package is found by ``minigrad.norm.create``).
"""

from __future__ import annotations

import math

import numpy as np

from minigrad.norm import Example, Normalizer, register

__all__ = ["RMSNorm"]
__version__ = "0.1.0"


@register("RMSNorm")
class RMSNorm(Normalizer):
    """RMS normalization over the last axis (``num_features`` values per row).

    ``RMSNorm(num_features, eps=1e-6, elementwise_affine=True, *,
    device=None, dtype=None)``; input (*, num_features), at least 2-D.
    ``y = γ·x/sqrt(mean(x²) + ε)`` with γ (ones) of shape (num_features,);
    no β, no running statistics, same in training and eval.

    Example::

        norm = minigrad.norm.create("RMSNorm", 16)
        y = norm(minigrad.randn(4, 16))
    """

    input_ranks = (2, 3, 4)
    channel_axis = -1
    standardizes = False  # it rescales but does not centre

    def __init__(self, num_features, eps=1e-6, elementwise_affine=True, *, device=None, dtype=None):
        super().__init__(num_features, eps, momentum=None, affine=elementwise_affine, track_running_stats=False,
                         device=device, dtype=dtype)
        self.bias = None  # RMSNorm has a gain but no shift

    def forward(self, x):
        self.check_input(x)
        # Composed of differentiable ops: autograd derives the backward.
        rms = ((x * x).mean(axis=-1, keepdims=True) + self.eps).sqrt()
        y = x / rms
        return y * self.weight if self.weight is not None else y

    def statistics_view(self, shape):
        return (math.prod(shape[:-1]), shape[-1]), (1,)

    def reference(self, x):
        x64 = np.asarray(x, dtype=np.float64)
        y = x64 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.detach().numpy().astype(np.float64)
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, elementwise_affine={self.affine}"

    @classmethod
    def examples(cls):
        return [
            Example(args=(4,), shapes=((3, 4), (2, 3, 4)), bad_shapes=((4,), (4, 3))),
            Example(args=(3,), kwargs=dict(elementwise_affine=False, eps=1e-3), shapes=((2, 2, 2, 3),)),
        ]
