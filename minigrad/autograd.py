"""Autograd: the ``Function`` base class, the backward walk and grad mode.

The engine is compiled (``minigrad._ext._engine``); this module is its
public face. See ``Function`` for how to write a differentiable operation.
"""

from __future__ import annotations

import functools

from ._ext._engine import Function, is_grad_enabled, run_backward, unbroadcast
from ._ext._engine import _reset_grad_enabled, _set_grad_enabled

__all__ = ["Function", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "backward",
           "unbroadcast", "grad", "zero_grads"]


class _GradMode:
    """Context manager and decorator that sets grad mode for its block."""

    mode = True

    def __init__(self):
        self._tokens = []

    def __enter__(self):
        self._tokens.append(_set_grad_enabled(self.mode))
        return self

    def __exit__(self, *exc):
        _reset_grad_enabled(self._tokens.pop())
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Disable recording of operations, as a ``with`` block or a decorator.

    Example::

        with minigrad.no_grad():
            y = model(x)          # no graph is built

        @minigrad.no_grad()
        def evaluate(model, x): ...
    """

    mode = False


class enable_grad(_GradMode):
    """Re-enable recording inside a ``no_grad`` block (context manager or decorator)."""

    mode = True


class set_grad_enabled(_GradMode):
    """Set grad mode to ``mode`` for a ``with`` block (or, called plainly, from now on)."""

    def __init__(self, mode: bool):
        super().__init__()
        self.mode = bool(mode)
        # Like PyTorch, calling it without ``with`` switches the mode at once.
        self._plain = _set_grad_enabled(self.mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _reset_grad_enabled(self._plain)
        return False


def backward(tensor, grad=None, retain_graph=False):
    """Backpropagate from ``tensor`` (same as ``tensor.backward(grad, retain_graph)``)."""
    run_backward(tensor, grad, retain_graph)


def grad(output, inputs, grad_output=None, retain_graph=False):
    """Return the gradients of ``output`` with respect to ``inputs`` without touching ``.grad``.

    ``inputs`` are tensors that require grad; the result is a tuple of
    Tensors (None for an input the output does not depend on).
    """
    single = not isinstance(inputs, (list, tuple))
    inputs = [inputs] if single else list(inputs)
    for t in inputs:
        if not t.is_leaf or not t.requires_grad:
            raise ValueError("grad(): every input must be a leaf tensor with requires_grad=True")
    saved = [t.grad for t in inputs]
    for t in inputs:
        t.grad = None
    try:
        run_backward(output, grad_output, retain_graph)
        result = tuple(t.grad for t in inputs)
    finally:
        for t, g in zip(inputs, saved):
            t.grad = g
    return result[0] if single else result


def zero_grads(tensors, set_to_none=True):
    """Reset the ``.grad`` of each tensor: to None (the default, which frees it) or to zeros in place."""
    for t in tensors:
        if t.grad is None:
            continue
        if set_to_none:
            t.grad = None
        else:
            t.grad.array[...] = 0
