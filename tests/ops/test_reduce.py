"""Reductions over random axes, with and without keepdims."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minigrad as mg
from minigrad.testing import gradcheck
from minigrad.testing.strategies import arrays, shapes


@st.composite
def array_and_axis(draw, min_dims=1):
    shape = draw(shapes(min_dims=min_dims, max_dims=4, max_side=4))
    a = draw(arrays(shape))
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none" or nd == 0:
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-nd, nd - 1))
    else:
        axis = tuple(draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True)))
    return a, axis, draw(st.booleans())


REDUCTIONS = [
    ("sum", lambda t, ax, k: t.sum(ax, k), lambda a, ax, k: a.sum(ax, keepdims=k)),
    ("mean", lambda t, ax, k: t.mean(ax, k), lambda a, ax, k: a.mean(ax, keepdims=k)),
    ("max", lambda t, ax, k: t.max(ax, k), lambda a, ax, k: a.max(ax, keepdims=k)),
    ("min", lambda t, ax, k: t.min(ax, k), lambda a, ax, k: a.min(ax, keepdims=k)),
    ("logsumexp", lambda t, ax, k: t.logsumexp(ax, k),
     lambda a, ax, k: np.log(np.exp(a).sum(ax, keepdims=k))),
]


@pytest.mark.parametrize("name,fn,ref", REDUCTIONS, ids=[r[0] for r in REDUCTIONS])
@given(case=array_and_axis())
def test_reduction(name, fn, ref, case, device):
    a, axis, keep = case
    if name in ("max", "min"):
        # ties split the subgradient; spread values so finite differences see one winner
        a = a + 0.1234567 * np.arange(a.size).reshape(a.shape)
        flat = np.sort(a.reshape(-1))
        assume(flat.size < 2 or np.diff(flat).min() > 1e-4)
    x = mg.tensor(a, device=device, requires_grad=True)
    out = fn(x, axis, keep)
    np.testing.assert_allclose(out.detach().cpu().numpy(), ref(a, axis, keep), rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda t: fn(t, axis, keep), [x])


@given(case=array_and_axis(), correction=st.sampled_from([0, 1]))
def test_var_and_std(case, correction, device):
    a, axis, keep = case
    axes = range(a.ndim) if axis is None else ([axis] if isinstance(axis, int) else axis)
    n = int(np.prod([a.shape[i] for i in axes]))
    x = mg.tensor(a, device=device, requires_grad=True)
    if n - correction <= 0:
        assert np.all(np.isnan(x.var(axis, keep, correction).detach().cpu().numpy()))
        return
    np.testing.assert_allclose(x.var(axis, keep, correction).detach().cpu().numpy(),
                               a.var(axis, keepdims=keep, ddof=correction), rtol=1e-10, atol=1e-12)
    assert gradcheck(lambda t: t.var(axis, keep, correction), [x])
    if np.all(a.var(axis, ddof=correction) > 1e-3):
        assert gradcheck(lambda t: t.std(axis, keep, correction), [x])


def test_var_is_stable_for_a_large_mean(device):
    rng = np.random.default_rng(0)
    a = (1e4 + rng.standard_normal(10_000)).astype(np.float32)
    got = mg.tensor(a, device=device).var(correction=0).item()
    assert got == pytest.approx(a.astype(np.float64).var(), rel=1e-3)


def test_max_splits_gradient_between_ties(device):
    x = mg.tensor([1.0, 3.0, 3.0], device=device, requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad.cpu().numpy(), [0.0, 0.5, 0.5])


def test_dim_keepdim_aliases(device):
    x = mg.randn(2, 3, device=device)
    assert x.sum(dim=1, keepdim=True).shape == (2, 1)
    assert x.mean(dim=0).shape == (3,)


def test_argmax_argmin(device):
    x = mg.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], device=device)
    assert x.argmax(axis=1).tolist() == [1, 0]
    assert x.argmin(axis=0).tolist() == [0, 1, 0]
    assert x.argmax().item() == 3
    assert x.argmax(axis=1).dtype == np.int64


@pytest.mark.parametrize("axis", [2, -3, (0, 0)])
def test_bad_axes_raise(axis, device):
    x = mg.ones(2, 2, device=device)
    with pytest.raises((IndexError, ValueError), match="axis"):
        x.sum(axis)


def test_empty_max_raises(device):
    with pytest.raises(ValueError, match="empty"):
        mg.zeros(0, device=device).max()


def test_mean_of_integers_asks_for_a_float(device):
    with pytest.raises(TypeError, match="floating"):
        mg.arange(3, device=device).mean()
