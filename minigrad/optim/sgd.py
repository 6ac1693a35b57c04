"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from .optimizer import Optimizer, _by_backend

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD with PyTorch's update rule.

    With weight decay λ, momentum μ and dampening τ: ``g ← g + λp``;
    ``b ← μb + (1-τ)g`` (``b = g`` at the first step); ``g ← g + μb`` when
    ``nesterov`` else ``g ← b``; ``p ← p - lr·g`` (``p ← p + lr·g`` when
    ``maximize``). ``foreach`` (None or True: the default) updates all the
    parameters of a group in one backend call; False updates them one at a
    time (the same values).

    Example::

        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.zero_grad(); loss.backward(); opt.step()
    """

    state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, foreach=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                      foreach=foreach))

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

    def _update_group(self, params, grads, states, g):
        if g.get("foreach") is False:
            return super()._update_group(params, grads, states, g)
        # One backend call per device for the whole group (parameters on several devices are split).
        for backend, idx in _by_backend(params).items():
            bufs = backend.sgd_update_multi([params[i].array for i in idx], [grads[i] for i in idx],
                                            [states[i].get("momentum_buffer") for i in idx], g["lr"],
                                            g["momentum"], g["dampening"], g["weight_decay"], g["nesterov"])
            if g["momentum"]:
                for i, buf in zip(idx, bufs):
                    states[i]["momentum_buffer"] = buf


