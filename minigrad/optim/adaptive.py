"""Optimizers with per-coordinate step sizes: ``Adagrad``, ``Adadelta`` and ``RMSprop`` (PyTorch's rules).

Each works on raw arrays through the parameter's array namespace ``xp``, in
place; ``weight_decay`` λ adds ``λp`` to the gradient first (L2).
"""

from __future__ import annotations

from .optimizer import Optimizer

__all__ = ["Adagrad", "Adadelta", "RMSprop"]


def _decayed(p, grad, g):
    return grad + g["weight_decay"] * p.array if g["weight_decay"] else grad


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011): ``s ← s + g²``, ``p ← p - lr_t·g/(√s + ε)``
    with ``lr_t = lr/(1 + (t-1)·lr_decay)``.

    Example::

        opt = optim.Adagrad(model.parameters(), lr=0.01)
    """

    state_keys = ("step", "sum")

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                 *, maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))

    def _validate_group(self, g):
        super()._validate_group(g)
        if not g["lr_decay"] >= 0.0 or not g["initial_accumulator_value"] >= 0.0:
            raise ValueError("invalid lr_decay or initial_accumulator_value: both must be >= 0")

    def _update(self, p, grad, st, g):
        xp = p.backend.xp
        if not st:
            st["step"] = 0
            st["sum"] = xp.full_like(p.array, g["initial_accumulator_value"])
        st["step"] += 1
        grad = _decayed(p, grad, g)
        clr = g["lr"] / (1 + (st["step"] - 1) * g["lr_decay"])
        st["sum"] += grad * grad
        std = xp.sqrt(st["sum"])
        std += g["eps"]
        p.array -= clr * (grad / std)


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012): ``v ← ρv + (1-ρ)g²``, ``Δ = √(u + ε)/√(v + ε)·g``,
    ``u ← ρu + (1-ρ)Δ²``, ``p ← p - lr·Δ``.

    Example::

        opt = optim.Adadelta(model.parameters(), lr=1.0)
    """

    state_keys = ("step", "square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize))

    def _validate_group(self, g):
        super()._validate_group(g)
        if not 0.0 <= g["rho"] <= 1.0:
            raise ValueError(f"invalid rho {g['rho']}: must be in [0, 1]")

    def _update(self, p, grad, st, g):
        xp = p.backend.xp
        if not st:
            st["step"] = 0
            st["square_avg"] = xp.zeros_like(p.array)
            st["acc_delta"] = xp.zeros_like(p.array)
        st["step"] += 1
        grad = _decayed(p, grad, g)
        rho, eps = g["rho"], g["eps"]
        sq, acc = st["square_avg"], st["acc_delta"]
        sq *= rho
        sq += (1 - rho) * (grad * grad)
        delta = xp.sqrt(acc + eps) / xp.sqrt(sq + eps) * grad
        acc *= rho
        acc += (1 - rho) * (delta * delta)
        p.array -= g["lr"] * delta


class RMSprop(Optimizer):
    """RMSprop (Hinton): ``v ← αv + (1-α)g²``, ``p ← p - lr·g/(√v + ε)``; ``centered`` subtracts the
    squared running mean of g from v; ``momentum`` μ keeps ``b ← μb + g/(√v + ε)`` and steps by ``lr·b``.

    Example::

        opt = optim.RMSprop(model.parameters(), lr=0.01, momentum=0.9)
    """

    state_keys = ("step", "square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    def _validate_group(self, g):
        super()._validate_group(g)
        if not g["alpha"] >= 0.0 or not g["momentum"] >= 0.0:
            raise ValueError("invalid alpha or momentum: both must be >= 0")

    def _update(self, p, grad, st, g):
        xp = p.backend.xp
        if not st:
            st["step"] = 0
            st["square_avg"] = xp.zeros_like(p.array)
            if g["momentum"] > 0:
                st["momentum_buffer"] = xp.zeros_like(p.array)
            if g["centered"]:
                st["grad_avg"] = xp.zeros_like(p.array)
        st["step"] += 1
        grad = _decayed(p, grad, g)
        alpha = g["alpha"]
        sq = st["square_avg"]
        sq *= alpha
        sq += (1 - alpha) * (grad * grad)
        if g["centered"]:
            ga = st["grad_avg"]
            ga *= alpha
            ga += (1 - alpha) * grad
            avg = xp.sqrt(sq - ga * ga)
        else:
            avg = xp.sqrt(sq)
        avg += g["eps"]
        if g["momentum"] > 0:
            buf = st["momentum_buffer"]
            buf *= g["momentum"]
            buf += grad / avg
            p.array -= g["lr"] * buf
        else:
            p.array -= g["lr"] * (grad / avg)
