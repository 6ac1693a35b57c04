"""Adam (Kingma & Ba, 2015) with bias correction and optional L2 weight decay."""

from __future__ import annotations

from .optimizer import Optimizer

__all__ = ["Adam"]


class Adam(Optimizer):
    """Adam: ``m ← β₁m + (1-β₁)g``, ``v ← β₂v + (1-β₂)g²``,
    ``p ← p - lr·m̂/(√v̂ + ε)`` with ``m̂ = m/(1-β₁ᵗ)``, ``v̂ = v/(1-β₂ᵗ)``.

    ``weight_decay`` adds ``λp`` to the gradient (L2, as in PyTorch's Adam).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _validate_group(self, g):
        b1, b2 = g["betas"]
        if not g["lr"] >= 0.0:
            raise ValueError(f"invalid learning rate {g['lr']}: must be >= 0")
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"invalid betas {g['betas']}: each must be in [0, 1)")
        if not g["eps"] >= 0.0:
            raise ValueError(f"invalid eps {g['eps']}: must be >= 0")
        if not g["weight_decay"] >= 0.0:
            raise ValueError(f"invalid weight_decay {g['weight_decay']}: must be >= 0")

    def step(self):
        """Apply one Adam update to every parameter that has a gradient."""
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                p._bump_version()
                st = self._param_state(p)
                if not st:
                    xp = p.backend.xp
                    st["step"] = 0
                    st["exp_avg"] = xp.zeros_like(p.array)
                    st["exp_avg_sq"] = xp.zeros_like(p.array)
                st["step"] += 1
                p.backend.adam_update(p.array, p.grad.array, st["exp_avg"], st["exp_avg_sq"], st["step"],
                                      g["lr"], b1, b2, g["eps"], g["weight_decay"])
