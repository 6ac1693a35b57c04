"""Autograd: the ``Function`` base class, the backward walk, grad mode and higher-order gradients.

The engine is compiled (``minigrad._ext._engine``); this package is its
public face: ``backward`` and ``grad`` (PyTorch's signatures, including
``create_graph`` for gradients of gradients), grad-mode switches, and
``minigrad.autograd.functional`` (``vjp``, ``jvp``, ``hvp``, ``hessian``,
``jacobian``). See ``Function`` for how to write a differentiable
operation, with ``vjp`` for double backward.
"""

from __future__ import annotations

import functools

from .._ext._engine import Function, HookHandle, VersionCounter, is_grad_enabled, run_backward, unbroadcast
from .._ext._engine import TensorBase, _reset_grad_enabled, _set_grad_enabled

__all__ = ["Function", "functional", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "backward",
           "unbroadcast", "grad", "zero_grads", "VersionCounter", "HookHandle"]


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


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate into ``.grad`` the gradients of ``tensors`` (PyTorch's ``torch.autograd.backward``).

    ``tensors``: a Tensor or a sequence of Tensors; ``grad_tensors``: their
    upstream gradients (None for single-element tensors, meaning 1).
    ``inputs``: accumulate only into these (leaves or not). The graph is
    freed unless ``retain_graph`` (default ``create_graph``); with
    ``create_graph=True`` the backward pass is recorded.

    Example::

        x = minigrad.tensor([1.0, 2.0], requires_grad=True)
        minigrad.autograd.backward([(x * x).sum(), x.sum()])   # x.grad == 2x + 1
    """
    tensors = _tensor_tuple(tensors, "tensors")
    grads = _grads_for(tensors, grad_tensors, "grad_tensors")
    if inputs is not None:
        inputs = _tensor_tuple(inputs, "inputs")
    if retain_graph is None:
        retain_graph = create_graph
    run_backward(tensors, grads, bool(retain_graph), bool(create_graph), inputs, True, True)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """The gradients of ``outputs`` with respect to ``inputs``, without touching any ``.grad``.

    PyTorch's ``torch.autograd.grad``: ``outputs`` and ``inputs`` are Tensors
    or sequences of Tensors (inputs may be leaves or intermediate results);
    ``grad_outputs`` the upstream gradients (None for single-element
    outputs). Returns a tuple with one Tensor per input (None for an input
    the outputs do not depend on, which raises unless ``allow_unused``).
    Only the part of the graph leading to the inputs runs. The graph is
    freed unless ``retain_graph`` (default ``create_graph``). With
    ``create_graph=True`` the backward pass is recorded, so the result can
    be differentiated again (Hessian-vector products, gradient penalties).

    Example::

        x = minigrad.tensor(3.0, requires_grad=True)
        (dx,) = minigrad.autograd.grad(x ** 3, x, create_graph=True)   # 3x² = 27
        (dxx,) = minigrad.autograd.grad(dx, x)                         # 6x = 18
    """
    outputs = _tensor_tuple(outputs, "outputs")
    inputs = _tensor_tuple(inputs, "inputs")
    if not inputs:
        raise RuntimeError("grad(): inputs must not be empty")
    grads = _grads_for(outputs, grad_outputs, "grad_outputs")
    if retain_graph is None:
        retain_graph = create_graph
    return run_backward(outputs, grads, bool(retain_graph), bool(create_graph), inputs, False, bool(allow_unused))


def _tensor_tuple(value, name):
    if isinstance(value, TensorBase):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a Tensor or a sequence of Tensors, got {type(value).__name__}") from None
    for i, t in enumerate(items):
        if not isinstance(t, TensorBase):
            raise TypeError(f"{name}[{i}] must be a Tensor, got {type(t).__name__}")
    return items


def _grads_for(tensors, grads, name):
    if grads is None:
        return (None,) * len(tensors)
    if isinstance(grads, TensorBase) or not isinstance(grads, (list, tuple)):
        grads = (grads,)
    grads = tuple(grads)
    if len(grads) != len(tensors):
        raise RuntimeError(f"{name} has {len(grads)} entries but there are {len(tensors)} outputs")
    return grads


def zero_grads(tensors, set_to_none=True):
    """Reset the ``.grad`` of each tensor: to None (the default, which frees it) or to zeros in place."""
    for t in tensors:
        if t.grad is None:
            continue
        if set_to_none:
            t.grad = None
        else:
            t.grad.array[...] = 0


def __getattr__(name):
    if name == "functional":  # imported on first use: it needs Tensor ops, which need this package
        import importlib

        return importlib.import_module(f"{__name__}.functional")
    raise AttributeError(f"module 'minigrad.autograd' has no attribute {name!r}")
