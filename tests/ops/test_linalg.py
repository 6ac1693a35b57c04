"""matmul (all of NumPy's shape rules) and the fused linear."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from minigrad.testing import gradcheck
from minigrad.testing.strategies import arrays


@st.composite
def matmul_shapes(draw):
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["mm", "mv", "vm", "vv", "batched", "broadcast"]))
    if kind == "mm":
        return (n, k), (k, m)
    if kind == "mv":
        return (n, k), (k,)
    if kind == "vm":
        return (k,), (k, m)
    if kind == "vv":
        return (k,), (k,)
    b = draw(st.integers(1, 3))
    if kind == "batched":
        return (b, n, k), (b, k, m)
    return (2, 1, n, k), (b, k, m)


@given(shapes=matmul_shapes(), data=st.data())
def test_matmul(shapes, data, device):
    sa, sb = shapes
    a, b = data.draw(arrays(sa)), data.draw(arrays(sb))
    x = mg.tensor(a, device=device, requires_grad=True)
    y = mg.tensor(b, device=device, requires_grad=True)
    np.testing.assert_allclose((x @ y).detach().cpu().numpy(), a @ b, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda p, q: p @ q, [x, y])


@given(data=st.data(), bias=st.booleans(), lead=st.sampled_from([(), (3,), (2, 3)]))
def test_linear(data, bias, lead, device):
    fin, fout = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    x = mg.tensor(data.draw(arrays(lead + (fin,))), device=device, requires_grad=True)
    w = mg.tensor(data.draw(arrays((fout, fin))), device=device, requires_grad=True)
    b = mg.tensor(data.draw(arrays((fout,))), device=device, requires_grad=True) if bias else None
    expected = x.detach().cpu().numpy() @ w.detach().cpu().numpy().T + (b.detach().cpu().numpy() if bias else 0)
    np.testing.assert_allclose(mg.ops.linear(x, w, b).detach().cpu().numpy(), expected, rtol=1e-12, atol=1e-12)
    inputs = [x, w] + ([b] if bias else [])
    assert gradcheck(lambda *t: mg.ops.linear(*t), inputs)


def test_matmul_shape_errors(device):
    with pytest.raises(ValueError, match="do not align"):
        mg.ones(2, 3, device=device) @ mg.ones(2, 3, device=device)
    with pytest.raises(ValueError, match="features"):
        mg.ops.linear(mg.ones(2, 3, device=device), mg.ones(4, 2, device=device))


ORDS = [2, 1, 3.5, np.inf, -np.inf]


@pytest.mark.parametrize("ord", ORDS)
@pytest.mark.parametrize("dim,keepdim", [(None, False), (1, False), ((0, 2), True), (-1, True)])
def test_vector_norm_values_and_gradients(ord, dim, keepdim):
    from minigrad.testing import gradgradcheck

    x = np.random.default_rng(15).standard_normal((3, 4, 2))
    t = mg.tensor(x, requires_grad=True)
    out = mg.linalg.vector_norm(t, ord, dim=dim, keepdim=keepdim)
    axes = tuple(range(3)) if dim is None else dim
    expected = np.linalg.norm(x.reshape(-1), ord) if dim is None else None
    if dim is None:
        np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12)
    else:
        a = np.abs(x)
        ref = {2: np.sqrt((x * x).sum(axes, keepdims=keepdim)), 1: a.sum(axes, keepdims=keepdim),
               np.inf: a.max(axes, keepdims=keepdim), -np.inf: a.min(axes, keepdims=keepdim)}.get(
            ord, (a**ord).sum(axes, keepdims=keepdim) ** (1 / ord) if ord not in (np.inf, -np.inf) else None)
        np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12)
    f = lambda a: mg.linalg.vector_norm(a, ord, dim=dim, keepdim=keepdim)  # noqa: E731
    assert gradcheck(f, [t])
    if ord == 2:
        assert gradgradcheck(f, [t])


def test_tensor_norm_is_pytorchs():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(16).standard_normal((5, 6))
    for args, kwargs in [((), {}), ((2,), {"dim": 1}), (("fro",), {"dim": (0, 1)}), ((1,), {"dim": 0, "keepdim": True}),
                         ((float("inf"),), {"dim": 1})]:
        ours = mg.tensor(x, requires_grad=True)
        theirs = torch.tensor(x, requires_grad=True)
        a, b = ours.norm(*args, **kwargs), theirs.norm(*args, **kwargs)
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12)
        a.sum().backward()
        b.sum().backward()
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)


def test_gradient_penalty_with_norm_and_a_zero_row_matches_torch():
    # the WGAN-GP idiom, ((∇x D).norm(2, dim=1) - 1)², with one example whose gradient is exactly zero:
    # PyTorch's gradient of the norm there is 0, not NaN, and so is ours, to the second order
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(17)
    w, x = rng.standard_normal((3, 1)), rng.standard_normal((4, 3))
    x[2] = 0.0

    def penalty(lib, w_, x_):
        out = (x_ * x_ * x_) @ w_                      # a zero row of x has a zero gradient
        (g,) = (mg.autograd.grad if lib is mg else torch.autograd.grad)(out.sum(), x_, create_graph=True)
        return ((g.norm(2, dim=1) - 1) ** 2).mean()

    mw, mx = mg.tensor(w, requires_grad=True), mg.tensor(x, requires_grad=True)
    tw, tx = torch.tensor(w, requires_grad=True), torch.tensor(x, requires_grad=True)
    pm, pt = penalty(mg, mw, mx), penalty(torch, tw, tx)
    np.testing.assert_allclose(pm.item(), pt.item(), rtol=1e-12)
    gm = mg.autograd.grad(pm, [mw, mx])
    gt = torch.autograd.grad(pt, [tw, tx])
    for a, b in zip(gm, gt):
        assert np.all(np.isfinite(a.numpy()))
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def test_vector_norm_rejects_bad_input():
    with pytest.raises(TypeError, match="floating point Tensor"):
        mg.linalg.vector_norm(mg.tensor([1, 2]))
    with pytest.raises(ValueError, match="ord must be a number"):
        mg.linalg.vector_norm(mg.randn(3), "two")
    with pytest.raises(ValueError, match="'nuc' is not supported"):
        mg.randn(3, 3).norm("nuc")
    with pytest.raises(IndexError):
        mg.randn(3).norm(dim=2)
