"""Finite-difference gradient checking: ``gradcheck`` and ``gradgradcheck`` (public, for plugin authors too)."""

from __future__ import annotations

import numpy as np

from .._ext._engine import TensorBase
from ..autograd import enable_grad, grad, no_grad
from ..tensor import tensor, zeros_like

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError", "numerical_vjp"]


class GradcheckError(AssertionError):
    """The analytic gradient of a function disagrees with finite differences."""


def _outputs(fn, inputs):
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if not isinstance(o, TensorBase):
            raise TypeError(f"gradcheck: the function must return Tensors, got {type(o).__name__}")
    return outs


def _dot(outs, vs) -> float:
    return float(sum(float((o.numpy_view().astype(np.float64) * v).sum()) for o, v in zip(outs, vs)))


def numerical_vjp(fn, inputs, targets, vs, eps=1e-6):
    """Central-difference ``vᵀJ`` of ``fn(*inputs)`` with respect to each tensor in ``targets``.

    Each element of each target is perturbed by ±eps in place (and
    restored). Returns one float64 NumPy array per target.
    """
    result = []
    with no_grad():
        for t in targets:
            host = t.backend.to_numpy(t.array)
            flat_grad = np.zeros(t.array.size, dtype=np.float64)
            for j in range(t.array.size):
                idx = np.unravel_index(j, t.shape) if t.ndim else ()
                orig = float(host[idx])
                t.array[idx] = orig + eps
                plus = _dot(_outputs(fn, inputs), vs)
                t.array[idx] = orig - eps
                minus = _dot(_outputs(fn, inputs), vs)
                t.array[idx] = orig
                flat_grad[j] = (plus - minus) / (2 * eps)
            result.append(flat_grad.reshape(t.shape))
    return result


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, params=(), seed=0, raise_exception=True):
    """Check the analytic backward of ``fn`` against central finite differences.

    ``fn(*inputs)`` must return a Tensor (or a tuple of Tensors). A random
    upstream gradient ``v`` (seeded by ``seed``) is drawn for each output;
    the analytic ``vᵀJ`` from ``backward`` is compared, element by element,
    with ``(f(x+eps)·v - f(x-eps)·v)/(2·eps)`` for every input (and every
    tensor in ``params``, e.g. a layer's weights) that requires grad.
    Inputs must be float64. A mismatch beyond ``atol + rtol·|numeric|``
    raises ``GradcheckError`` naming the input and element (or returns
    False with ``raise_exception=False``); success returns True.

    Example::

        x = minigrad.randn(3, 4, dtype="float64", requires_grad=True)
        gradcheck(lambda t: (t * t).sigmoid(), [x])
    """
    inputs = list(inputs)
    targets = [t for t in list(inputs) + list(params) if isinstance(t, TensorBase) and t.requires_grad]
    if not targets:
        raise ValueError("gradcheck: no input or parameter requires grad")
    for t in targets:
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 tensors for accurate finite differences, got {t.dtype}")
    rng = np.random.default_rng(seed)
    for t in targets:
        t.grad = None
    outs = _outputs(fn, inputs)
    vs = [rng.standard_normal(o.shape) for o in outs]
    live = [(o, v) for o, v in zip(outs, vs) if o.requires_grad]
    if not live:
        raise GradcheckError("gradcheck: no output requires grad (was the function run under no_grad?)")
    for k, (o, v) in enumerate(live):
        o.backward(o.backend.asarray(v, dtype=o.dtype), retain_graph=k + 1 < len(live))
    analytic = [
        (t.backend.to_numpy(t.grad.array).astype(np.float64) if t.grad is not None else np.zeros(t.shape))
        for t in targets
    ]
    numeric = numerical_vjp(fn, inputs, targets, vs, eps)
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        bad = ~(np.abs(a - n) <= atol + rtol * np.abs(n))
        if bad.any():
            j = tuple(int(k) for k in np.argwhere(bad)[0])
            msg = (
                f"gradcheck failed for {_describe(targets[i], inputs)} of shape {tuple(targets[i].shape)} at element "
                f"{j}: analytic {a[j]!r}, numerical {n[j]!r} (max abs difference {np.abs(a - n).max():.3e}, "
                f"{int(bad.sum())} of {bad.size} elements out of tolerance atol={atol}, rtol={rtol})"
            )
            if raise_exception:
                raise GradcheckError(msg)
            return False
    for t in targets:
        t.grad = None
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, params=(), seed=0,
                  raise_exception=True):
    """Check the second derivatives of ``fn`` (its backward recorded with ``create_graph=True``)
    against finite differences of the first derivatives (PyTorch's ``gradgradcheck``).

    The checked function is ``(x, v) ↦ vᵀ·∂fn/∂x`` for the inputs (and
    ``params``) that require grad, with ``v`` the upstream gradients
    (``grad_outputs``, or random ones seeded by ``seed``, which are checked
    too): ``gradcheck`` is run on it, so every ``vjp`` on the way is
    compared with central differences of the backward. float64 only.

    Example::

        x = minigrad.randn(3, dtype="float64", requires_grad=True)
        gradgradcheck(lambda t: (t * t).sigmoid(), [x])
    """
    inputs = list(inputs)
    targets = [t for t in inputs + list(params) if isinstance(t, TensorBase) and t.requires_grad]
    if not targets:
        raise ValueError("gradgradcheck: no input or parameter requires grad")
    outs = _outputs(fn, inputs)
    if grad_outputs is None:
        rng = np.random.default_rng(seed)
        grad_outputs = [o.backend.asarray(rng.standard_normal(o.shape), dtype=o.dtype) for o in outs]
    elif isinstance(grad_outputs, TensorBase):
        grad_outputs = [grad_outputs]
    vs = [g if isinstance(g, TensorBase) else tensor(g, device=o.device) for g, o in zip(grad_outputs, outs)]
    vs = [v.detach().to(o.dtype).requires_grad_(True) for v, o in zip(vs, outs)]
    n = len(inputs)

    def first_derivatives(*args):
        with enable_grad():  # finite differences call this under no_grad
            return _first_derivatives(args)

    def _first_derivatives(args):
        current = _outputs(fn, list(args[:n]))
        live = [(o, v) for o, v in zip(current, args[n:]) if o.requires_grad]
        if not live:
            raise GradcheckError("gradgradcheck: no output requires grad")
        gs = grad([o for o, _ in live], targets, [v for _, v in live], create_graph=True, allow_unused=True)
        return tuple(zeros_like(t) if g is None else g for g, t in zip(gs, targets))

    return gradcheck(first_derivatives, inputs + vs, eps=eps, atol=atol, rtol=rtol, params=params, seed=seed + 1,
                     raise_exception=raise_exception)


def _describe(t, inputs):
    for i, x in enumerate(inputs):
        if x is t:
            return f"input {i}"
    return "parameter"
