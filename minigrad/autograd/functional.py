"""Higher-order autograd helpers with PyTorch's signatures (``torch.autograd.functional``).

``vjp``, ``jvp``, ``vhp``, ``hvp``, ``jacobian`` and ``hessian`` of a Python
function of Tensors, built on ``minigrad.autograd.grad`` with
``create_graph=True``. ``inputs`` is a Tensor or a tuple of Tensors; the
results mirror it (a Tensor, or a tuple). ``jacobian`` and ``hessian``
take one backward pass per output element: meant for small inputs.

Example (the curvature of f(x) = Σ x³ along v)::

    from minigrad.autograd.functional import hvp
    x = minigrad.tensor([1.0, 2.0], dtype="float64")
    f = lambda t: (t ** 3).sum()
    value, hv = hvp(f, x, minigrad.ones(2, dtype="float64"))   # H = diag(6x): hv == [6, 12]
"""

from __future__ import annotations

from .._ext._engine import TensorBase
from . import enable_grad, grad

__all__ = ["vjp", "jvp", "vhp", "hvp", "jacobian", "hessian"]


def _as_tuple(x, name):
    if isinstance(x, TensorBase):
        return False, (x,)
    if isinstance(x, (tuple, list)) and all(isinstance(t, TensorBase) for t in x):
        return True, tuple(x)
    raise TypeError(f"{name} must be a Tensor or a tuple of Tensors, got {type(x).__name__}")


def _prepare(inputs, create_graph):
    """Inputs to differentiate with respect to: detached leaves, or (create_graph) graph-connected copies."""
    out = []
    for t in inputs:
        if t.dtype.kind != "f":
            raise TypeError(f"inputs must be floating tensors, got dtype {t.dtype}")
        if create_graph and t.requires_grad:
            out.append(t + 0)  # stays connected to the caller's graph
        else:
            out.append(t.detach().requires_grad_(True))
    return tuple(out)


def _zeros_for_none(grads, like):
    from ..tensor import zeros_like

    return tuple(zeros_like(x) if g is None else g for g, x in zip(grads, like))


def _check_v(v, like, name):
    is_tuple, vs = _as_tuple(v, name)
    if len(vs) != len(like):
        raise RuntimeError(f"{name} has {len(vs)} entries, expected {len(like)}")
    for i, (a, b) in enumerate(zip(vs, like)):
        if tuple(a.shape) != tuple(b.shape):
            raise RuntimeError(f"{name}[{i}] has shape {tuple(a.shape)}, expected {tuple(b.shape)}")
    return vs


def _outputs(func, inputs):
    with enable_grad():
        out = func(*inputs)
    return _as_tuple(out, "the output of func")


def _finish(values, create_graph):
    return values if create_graph else tuple(v.detach() for v in values)


def _shape_like(is_tuple, values):
    return tuple(values) if is_tuple else values[0]


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), vᵀ·J)``: the vector-Jacobian product of ``func`` at ``inputs``.

    ``v`` is shaped like the output (optional for a single-element output).
    ``strict``: raise if an input does not influence the output (otherwise
    its product is zeros).
    """
    in_tuple, xs = _as_tuple(inputs, "inputs")
    xs = _prepare(xs, create_graph)
    out_tuple, ys = _outputs(func, xs)
    vs = None if v is None else _check_v(v, ys, "v")
    gs = grad(ys, xs, vs, create_graph=True, allow_unused=not strict)
    gs = _finish(_zeros_for_none(gs, xs), create_graph)
    return _shape_like(out_tuple, _finish(ys, create_graph)), _shape_like(in_tuple, gs)


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), J·v)``: the Jacobian-vector product, by the double-vjp trick.

    ``uᵀJ`` is linear in a dummy ``u``; differentiating it with respect to
    ``u`` along ``v`` gives ``J·v`` with two reverse passes.
    """
    from ..tensor import zeros_like

    in_tuple, xs = _as_tuple(inputs, "inputs")
    xs = _prepare(xs, create_graph)
    vs = None if v is None else _check_v(v, xs, "v")
    if vs is None:
        if any(x.numel() != 1 for x in xs):
            raise RuntimeError("jvp: v can only be omitted when every input has a single element")
        from ..tensor import ones_like

        vs = tuple(ones_like(x) for x in xs)
    out_tuple, ys = _outputs(func, xs)
    us = tuple(zeros_like(y).requires_grad_(True) for y in ys)
    gs = grad(ys, xs, us, create_graph=True, allow_unused=not strict)
    live = [(g, v_) for g, v_ in zip(gs, vs) if g is not None and g.requires_grad]
    if not live:
        jv = tuple(zeros_like(y) for y in ys)
    else:
        jv = grad([g for g, _ in live], us, [v_ for _, v_ in live], create_graph=create_graph, allow_unused=True)
        jv = _zeros_for_none(jv, ys)
    return _shape_like(out_tuple, _finish(ys, create_graph)), _shape_like(out_tuple, _finish(jv, create_graph))


def _scalar_output(func, xs, name):
    out_tuple, ys = _outputs(func, xs)
    if out_tuple or ys[0].numel() != 1:
        raise RuntimeError(f"{name}: func must return a single-element Tensor, got shape {tuple(ys[0].shape)}")
    return ys[0]


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), vᵀ·H)``: vector-Hessian product of a scalar ``func``."""
    in_tuple, xs = _as_tuple(inputs, "inputs")
    xs = _prepare(xs, create_graph)
    vs = None if v is None else _check_v(v, xs, "v")
    if vs is None:
        if any(x.numel() != 1 for x in xs):
            raise RuntimeError("vhp: v can only be omitted when every input has a single element")
        from ..tensor import ones_like

        vs = tuple(ones_like(x) for x in xs)
    y = _scalar_output(func, xs, "vhp")
    gs = grad(y, xs, create_graph=True, allow_unused=not strict)
    live = [(g, v_) for g, v_ in zip(gs, vs) if g is not None and g.requires_grad]
    if live:
        hv = grad([g for g, _ in live], xs, [v_ for _, v_ in live], create_graph=create_graph,
                  allow_unused=True)
        hv = _zeros_for_none(hv, xs)
    else:
        hv = _zeros_for_none((None,) * len(xs), xs)
    return _finish((y,), create_graph)[0], _shape_like(in_tuple, _finish(hv, create_graph))


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), H·v)``: Hessian-vector product of a scalar ``func`` (H is symmetric, so ``vᵀH``).

    Example::

        value, hv = hvp(lambda t: (t ** 3).sum(), x, v)
    """
    return vhp(func, inputs, v, create_graph, strict)


def jacobian(func, inputs, create_graph=False, strict=False):
    """The Jacobian of ``func`` at ``inputs``: entry [i][j] has shape ``out_i.shape + in_j.shape``.

    One reverse pass per output element (small inputs only). A single
    Tensor input and output give a single Tensor.
    """
    from ..ops import stack
    from ..tensor import zeros

    in_tuple, xs = _as_tuple(inputs, "inputs")
    xs = _prepare(xs, create_graph)
    out_tuple, ys = _outputs(func, xs)
    result = []
    for y in ys:
        flat = y.reshape(-1)
        rows = [[] for _ in xs]
        for k in range(flat.shape[0]):
            gs = grad(flat[k], xs, retain_graph=True, create_graph=create_graph, allow_unused=not strict) \
                if y.requires_grad else (None,) * len(xs)
            for j, (g, x) in enumerate(zip(gs, xs)):
                rows[j].append(zeros(x.shape, dtype=x.dtype, device=x.device) if g is None else g)
        per_input = []
        for j, x in enumerate(xs):
            if rows[j]:
                block = stack(rows[j]).reshape(tuple(y.shape) + tuple(x.shape))
            else:
                block = zeros(tuple(y.shape) + tuple(x.shape), dtype=x.dtype, device=x.device)
            per_input.append(block if create_graph else block.detach())
        result.append(_shape_like(in_tuple, per_input))
    return _shape_like(out_tuple, result)


def hessian(func, inputs, create_graph=False, strict=False):
    """The Hessian of a scalar ``func``: entry [i][j] has shape ``in_i.shape + in_j.shape``.

    One reverse pass per input element through the gradient (small inputs only).

    Example::

        H = hessian(lambda t: (t ** 3).sum(), minigrad.tensor([1.0, 2.0], dtype="float64"))  # diag(6x)
    """
    in_tuple, xs = _as_tuple(inputs, "inputs")

    def gradient(*ts):
        y = _scalar_output(func, ts, "hessian")
        gs = grad(y, ts, create_graph=True, allow_unused=not strict)
        return tuple(_zeros_for_none(gs, ts))

    jac = jacobian(gradient, tuple(xs), create_graph=create_graph, strict=strict)
    return _shape_like(in_tuple, [_shape_like(in_tuple, row) for row in jac])
