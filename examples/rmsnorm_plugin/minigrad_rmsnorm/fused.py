"""FusedRMSNorm: the same RMSNorm written the second way, with its own forward/backward.

One graph node instead of five: a ``Function`` whose ``forward`` computes
the output and saves what ``backward`` needs, and whose ``backward`` is
the derivative worked out by hand. With r = 1/sqrt(mean(x²) + ε) and
x̂ = x·r per row of K values,

    y  = γ·x̂
    dγ = Σ_rows dy·x̂
    dx = r·(g - x̂·mean(g·x̂)),   g = γ·dy

Both methods are written against ``self.xp`` (NumPy or CuPy), so the node
runs on every backend. ``vjp`` is the same backward written with minigrad
operations on Tensors: with it the node can be differentiated twice
(``create_graph=True``: gradient penalties, Hessian-vector products). A compiled kernel slots in the same way: call it
from ``forward``/``backward`` when the backend provides one (see
docs/plugins.md).
"""

from __future__ import annotations

from minigrad import Function
from minigrad.norm import Example, register

from . import RMSNorm

__all__ = ["FusedRMSNorm", "RMSNormFunction"]


class RMSNormFunction(Function):
    """``y = γ·x/sqrt(mean(x²) + ε)`` over the last axis, as one graph node."""

    def forward(self, x, weight=None, eps=1e-6):
        xp = self.xp
        self.eps = eps
        # Mean of squares accumulated in float64, then back to x's dtype.
        ms = (x.astype(xp.float64) ** 2).mean(axis=-1, keepdims=True)
        r = (1.0 / xp.sqrt(ms + eps)).astype(x.dtype)
        xhat = x * r
        self.save_for_backward(xhat, r, weight)
        return xhat * weight if weight is not None else xhat

    def backward(self, grad):
        xhat, r, weight = self.saved_tensors
        return _rms_norm_grads(grad, xhat, r, weight, self.needs_input_grad[1])

    def vjp(self, grad):
        x, weight = self.inputs[0], self.inputs[1]
        r = ((x * x).mean(axis=-1, keepdims=True) + self.eps) ** -0.5
        return _rms_norm_grads(grad, x * r, r, weight, self.needs_input_grad[1])


@register("FusedRMSNorm")
class FusedRMSNorm(RMSNorm):
    """RMSNorm with a hand-written fused backward (``RMSNormFunction``); same API and outputs as RMSNorm.

    Example::

        norm = minigrad.norm.create("FusedRMSNorm", 16)
        y = norm(minigrad.randn(4, 16))
    """

    def forward(self, x):
        self.check_input(x)
        return RMSNormFunction.apply(x, self.weight, eps=self.eps)

    @classmethod
    def examples(cls):
        return [
            Example(args=(5,), shapes=((2, 5), (3, 1, 5)), bad_shapes=((5, 2),)),
            Example(args=(2,), kwargs=dict(elementwise_affine=False), shapes=((4, 2),)),
        ]


def _rms_norm_grads(grad, xhat, r, weight, need_weight):
    """``(dx, dγ)`` of ``y = γ·x·r``, ``r = 1/sqrt(mean(x²) + ε)``, ``xhat = x·r``. Written once for
    arrays (``backward``) and Tensors (``vjp``, which records it so it differentiates again): both
    spell ``*``, ``mean``, ``reshape`` and ``sum`` alike."""
    g = grad * weight if weight is not None else grad
    dx = r * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    dweight = None
    if weight is not None and need_weight:
        dweight = (grad * xhat).reshape(-1, xhat.shape[-1]).sum(axis=0)
    return dx, dweight
