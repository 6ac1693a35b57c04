"""Adam (Kingma & Ba, 2015) with L2 weight decay, and AdamW (Loshchilov & Hutter, 2019) with decoupled decay."""

from __future__ import annotations

from .optimizer import Optimizer, _by_backend

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam: ``m ← β₁m + (1-β₁)g``, ``v ← β₂v + (1-β₂)g²``,
    ``p ← p - lr·m̂/(√v̂ + ε)`` with ``m̂ = m/(1-β₁ᵗ)``, ``v̂ = v/(1-β₂ᵗ)``.

    ``weight_decay`` adds ``λp`` to the gradient (L2, as in PyTorch's Adam).
    ``foreach`` (None or True: the default) updates a whole parameter group in
    one backend call; False one parameter at a time (the same values).

    Example::

        opt = optim.Adam(model.parameters(), lr=1e-3)
    """

    state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, maximize=False,
                 foreach=None):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      maximize=maximize, foreach=foreach))

    def _validate_group(self, g):
        super()._validate_group(g)
        b1, b2 = g["betas"]
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"invalid betas {g['betas']}: each must be in [0, 1)")

    def _update(self, p, grad, st, g):
        _count_step(p, st)
        b1, b2 = g["betas"]
        p.backend.adam_update(p.array, grad, st["exp_avg"], st["exp_avg_sq"], st["step"], g["lr"], b1, b2,
                              g["eps"], self._l2(g))

    def _l2(self, g):
        return g["weight_decay"]

    def _decay(self, g):
        """The factor a parameter is scaled by before the step (AdamW's decoupled decay; 1 for Adam)."""
        return 1.0

    def _update_group(self, params, grads, states, g):
        if g.get("foreach") is False:
            return super()._update_group(params, grads, states, g)
        for st, p in zip(states, params):
            _count_step(p, st)
        b1, b2 = g["betas"]
        for backend, idx in _by_backend(params).items():
            backend.adam_update_multi([params[i].array for i in idx], [grads[i] for i in idx],
                                      [states[i]["exp_avg"] for i in idx], [states[i]["exp_avg_sq"] for i in idx],
                                      [states[i]["step"] for i in idx], g["lr"], b1, b2, g["eps"], self._l2(g),
                                      self._decay(g))


def _count_step(p, st):
    """Adam's state for ``p`` (zero moments at the first step), its step count advanced."""
    if not st:
        xp = p.backend.xp
        st["step"] = 0
        st["exp_avg"] = xp.zeros_like(p.array)
        st["exp_avg_sq"] = xp.zeros_like(p.array)
    st["step"] += 1


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p ← p·(1 - lr·λ)``, then Adam's step without L2.

    The default ``weight_decay`` is 0.01, as in PyTorch.

    Example::

        opt = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, *, maximize=False,
                 foreach=None):
        super().__init__(params, lr, betas, eps, weight_decay, maximize=maximize, foreach=foreach)

    def _update(self, p, grad, st, g):
        if g["weight_decay"]:
            p.array *= 1.0 - g["lr"] * g["weight_decay"]
        super()._update(p, grad, st, g)

    def _l2(self, g):
        return 0.0

    def _decay(self, g):
        return 1.0 - g["lr"] * g["weight_decay"]
