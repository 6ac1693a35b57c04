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
    ("amax", lambda t, ax, k: t.amax(ax, k), lambda a, ax, k: a.max(ax, keepdims=k)),
    ("amin", lambda t, ax, k: t.amin(ax, k), lambda a, ax, k: a.min(ax, keepdims=k)),
    ("logsumexp", lambda t, ax, k: t.logsumexp(ax, k),
     lambda a, ax, k: np.log(np.exp(a).sum(ax, keepdims=k))),
]


@pytest.mark.parametrize("name,fn,ref", REDUCTIONS, ids=[r[0] for r in REDUCTIONS])
@given(case=array_and_axis())
def test_reduction(name, fn, ref, case, device):
    a, axis, keep = case
    if name in ("amax", "amin"):
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
    with pytest.raises((IndexError, ValueError), match="Dimension out of range|multiple times"):
        x.sum(axis)


def test_empty_max_raises(device):
    with pytest.raises(ValueError, match="empty"):
        mg.zeros(0, device=device).max()
    with pytest.raises(IndexError, match="non-zero size"):
        mg.zeros(2, 0, device=device).max(dim=1)


@pytest.mark.parametrize("name", ["max", "min"])
@given(case=array_and_axis(min_dims=1), keep=st.booleans())
def test_max_min_along_a_dim_return_values_and_indices(name, case, keep, device):
    """``max(x, dim)`` is PyTorch's named tuple; the gradient goes to the selected element only."""
    a, _, _ = case
    dim = -1
    x = mg.tensor(a, device=device, requires_grad=True)
    out = getattr(mg, name)(x, dim, keepdim=keep)
    assert type(out).__name__ == name and out._fields == ("values", "indices")
    values, indices = out
    idx = getattr(np, f"arg{name}")(a, axis=dim)
    expected = np.take_along_axis(a, np.expand_dims(idx, dim), dim)
    np.testing.assert_array_equal(indices.cpu().numpy(), np.expand_dims(idx, dim) if keep else idx)
    np.testing.assert_array_equal(values.detach().cpu().numpy(), expected if keep else expected.squeeze(dim))
    values.sum().backward()
    grad = np.zeros_like(a)
    np.put_along_axis(grad, np.expand_dims(idx, dim), 1.0, dim)
    np.testing.assert_array_equal(x.grad.cpu().numpy(), grad)


def test_max_of_a_batch_of_two_unpacks_the_indices(device):
    """The issue's trap: ``_, pred = mg.max(t, 1)`` with exactly 2 rows must give the predictions."""
    logits = mg.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]], device=device)
    _, pred = mg.max(logits, 1)
    assert pred.tolist() == [1, 0]
    assert mg.max(logits, dim=1).indices.tolist() == [1, 0]
    assert logits.max(1)[0].tolist() == pytest.approx([0.9, 0.8])


def test_max_min_of_two_tensors_is_elementwise(device):
    a, b = mg.tensor([1.0, 5.0], device=device), mg.tensor([3.0, 2.0], device=device)
    assert mg.max(a, b).tolist() == [3.0, 5.0] and mg.min(a, b).tolist() == [1.0, 2.0]
    assert a.max(b).tolist() == [3.0, 5.0]
    assert mg.max(a).item() == 5.0 and mg.min(a).item() == 1.0


def test_max_with_several_dims_points_to_amax(device):
    with pytest.raises(TypeError, match="amax"):
        mg.max(mg.ones(2, 2, device=device), (0, 1))


@pytest.mark.parametrize("call", [
    lambda x: mg.sum(x, dim=1, keepdim=True), lambda x: mg.mean(x, dim=1, keepdim=True),
    lambda x: mg.amax(x, dim=1, keepdim=True), lambda x: mg.logsumexp(x, dim=1, keepdim=True),
    lambda x: mg.var(x, dim=1, keepdim=True), lambda x: mg.std(x, dim=1, keepdim=True),
    lambda x: mg.argmax(x, dim=1, keepdim=True), lambda x: mg.max(x, dim=1, keepdim=True).values,
])
def test_module_functions_take_dim_and_keepdim(call, device):
    x = mg.randn(2, 3, device=device)
    assert call(x).shape == (2, 1)


def test_dim_and_axis_together_are_refused():
    with pytest.raises(TypeError, match="not both"):
        mg.sum(mg.ones(2), dim=0, axis=0)


def test_mean_of_integers_asks_for_a_float(device):
    with pytest.raises(TypeError, match="floating"):
        mg.arange(3, device=device).mean()
