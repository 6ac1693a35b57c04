"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD with PyTorch's update rule.

    With weight decay λ, momentum μ and dampening τ: ``g ← g + λp``;
    ``b ← μb + (1-τ)g`` (``b = g`` at the first step); ``g ← g + μb`` when
    ``nesterov`` else ``g ← b``; ``p ← p - lr·g`` (``p ← p + lr·g`` when
    ``maximize``).

    Example::

        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.zero_grad(); loss.backward(); opt.step()
    """

    state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _validate_group(self, g):
        super()._validate_group(g)
        if not g["momentum"] >= 0.0:
            raise ValueError(f"invalid momentum {g['momentum']}: must be >= 0")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")

    def _update(self, p, grad, state, g):
        buf = p.backend.sgd_update(p.array, grad, state.get("momentum_buffer"), g["lr"], g["momentum"],
                                   g["dampening"], g["weight_decay"], g["nesterov"])
        if g["momentum"]:
            state["momentum_buffer"] = buf
