"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD with PyTorch's update rule.

    With weight decay λ, momentum μ and dampening τ: ``g ← g + λp``;
    ``b ← μb + (1-τ)g`` (``b = g`` at the first step); ``g ← g + μb`` when
    ``nesterov`` else ``g ← b``; ``p ← p - lr·g``.

    Example::

        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.zero_grad(); loss.backward(); opt.step()
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _validate_group(self, g):
        if not g["lr"] >= 0.0:
            raise ValueError(f"invalid learning rate {g['lr']}: must be >= 0")
        if not g["momentum"] >= 0.0:
            raise ValueError(f"invalid momentum {g['momentum']}: must be >= 0")
        if not g["weight_decay"] >= 0.0:
            raise ValueError(f"invalid weight_decay {g['weight_decay']}: must be >= 0")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")

    def step(self):
        """Apply one update to every parameter that has a gradient."""
        for g in self.param_groups:
            lr, mom, damp, wd, nest = g["lr"], g["momentum"], g["dampening"], g["weight_decay"], g["nesterov"]
            for p in g["params"]:
                grad = p.grad
                if grad is None:
                    continue
                p._bump_version()
                if mom:
                    st = self._param_state(p)
                    st["momentum_buffer"] = p.backend.sgd_update(
                        p.array, grad.array, st.get("momentum_buffer"), lr, mom, damp, wd, nest)
                else:
                    p.backend.sgd_update(p.array, grad.array, None, lr, 0.0, damp, wd, nest)
