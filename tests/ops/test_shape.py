"""Shape operations and indexing."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from minigrad.testing import gradcheck
from minigrad.testing.strategies import arrays, shapes


@given(a=shapes(min_dims=1, max_dims=4, max_side=4).flatmap(arrays), data=st.data())
def test_reshape_permute_transpose(a, data, device):
    x = mg.tensor(a, device=device, requires_grad=True)
    perm = data.draw(st.permutations(range(a.ndim)))
    new_shape = (-1,) + a.shape[2:] if a.ndim > 1 else (a.size,)
    for fn, ref in [
        (lambda t: t.reshape(*new_shape), lambda v: v.reshape(new_shape)),
        (lambda t: t.permute(*perm), lambda v: v.transpose(perm)),
        (lambda t: t.T, lambda v: v.T),
        (lambda t: t.transpose(0, -1), lambda v: np.swapaxes(v, 0, -1)),
        (lambda t: t.flatten(), lambda v: v.reshape(-1)),
        (lambda t: t.unsqueeze(1).squeeze(1), lambda v: v),
    ]:
        np.testing.assert_array_equal(fn(x).detach().cpu().numpy(), ref(a))
        assert gradcheck(fn, [x])


@st.composite
def basic_index(draw):
    shape = draw(shapes(min_dims=1, max_dims=3, min_side=2, max_side=5))
    parts = []
    for s in shape:
        kind = draw(st.sampled_from(["int", "slice", "full"]))
        if kind == "int":
            parts.append(draw(st.integers(-s, s - 1)))
        elif kind == "slice":
            start = draw(st.integers(-s, s - 1))
            stop = draw(st.none() | st.integers(-s, s))
            step = draw(st.sampled_from([1, 2, -1]))
            parts.append(slice(start, stop, step))
        else:
            parts.append(slice(None))
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), None)
    return shape, tuple(parts)


@given(case=basic_index(), data=st.data())
def test_basic_indexing(case, data, device):
    shape, index = case
    a = data.draw(arrays(shape))
    x = mg.tensor(a, device=device, requires_grad=True)
    np.testing.assert_array_equal(x[index].detach().cpu().numpy(), a[index])
    if a[index].size:
        assert gradcheck(lambda t: t[index], [x])


def test_advanced_indexing_accumulates_repeated_indices(device):
    a = np.arange(12.0).reshape(4, 3)
    x = mg.tensor(a, device=device, requires_grad=True)
    idx = mg.tensor([0, 2, 0, 3], device=device)
    np.testing.assert_array_equal(x[idx].detach().cpu().numpy(), a[[0, 2, 0, 3]])
    assert gradcheck(lambda t: t[idx, 1:], [x])
    g = mg.ones(4, 3, dtype="float64", device=device)
    x[idx].backward(g)
    np.testing.assert_array_equal(x.grad.cpu().numpy()[:, 0], [2, 0, 1, 1])


def test_boolean_mask_indexing(device):
    a = np.arange(6.0).reshape(2, 3)
    x = mg.tensor(a, device=device, requires_grad=True)
    mask = x > 2.0
    np.testing.assert_array_equal(x[mask].detach().cpu().numpy(), [3, 4, 5])
    assert gradcheck(lambda t: t[mask], [x])


def test_bad_indices_raise(device):
    x = mg.ones(3, 3, device=device)
    with pytest.raises(IndexError, match="integer or bool"):
        x[mg.tensor([0.5])]
    with pytest.raises(IndexError, match="unsupported index"):
        x["a"]


@given(data=st.data())
def test_concatenate_and_stack(data, device):
    shape = data.draw(shapes(min_dims=1, max_dims=3, max_side=3))
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = data.draw(st.integers(1, 3))
    arrs = []
    for _ in range(n):
        s = list(shape)
        s[axis] = data.draw(st.integers(1, 3))
        arrs.append(data.draw(arrays(tuple(s))))
    ts = [mg.tensor(a, device=device, requires_grad=True) for a in arrs]
    np.testing.assert_array_equal(mg.concatenate(ts, axis).detach().cpu().numpy(), np.concatenate(arrs, axis))
    assert gradcheck(lambda *t: mg.concatenate(t, axis), ts)
    same = [mg.tensor(data.draw(arrays(shape)), device=device, requires_grad=True) for _ in range(n)]
    np.testing.assert_array_equal(mg.stack(same, axis).detach().cpu().numpy(),
                                  np.stack([t.detach().cpu().numpy() for t in same], axis))
    assert gradcheck(lambda *t: mg.stack(t, -1), same)


@given(data=st.data())
def test_broadcast_to_sums_gradient_back(data, device):
    a = data.draw(arrays(data.draw(st.sampled_from([(1,), (3,), (2, 1), (1, 3)]))))
    x = mg.tensor(a, device=device, requires_grad=True)
    assert gradcheck(lambda t: t.expand(4, 2, 3), [x])


def test_shape_errors(device):
    x = mg.ones(2, 3, device=device)
    with pytest.raises(ValueError, match="cannot reshape"):
        x.reshape(4, 2)
    with pytest.raises(ValueError, match="permutation"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match="differ outside dimension"):
        mg.concatenate([x, mg.ones(3, 3, device=device)], axis=1)
    with pytest.raises(ValueError, match="same shape"):
        mg.stack([x, mg.ones(3, 2, device=device)])
    with pytest.raises(ValueError, match="cannot broadcast"):
        x.expand(3, 3)
    assert x.squeeze(1) is x or x.squeeze(1).shape == (2, 3)  # PyTorch leaves a dim of length != 1 alone


# 10.7: every op that takes a dimension refuses one out of range, as PyTorch does (never modulo ndim).
OUT_OF_RANGE = [
    ("cat", lambda a: mg.cat([a, a], dim=5)),
    ("cat axis", lambda a: mg.cat([a, a], axis=-3)),
    ("stack", lambda a: mg.stack([a, a], dim=4)),
    ("permute", lambda a: a.permute(0, 5)),
    ("transpose", lambda a: a.transpose(0, 5)),
    ("flatten", lambda a: a.flatten(0, 7)),
    ("squeeze", lambda a: mg.ones(1, 3).squeeze(2)),
    ("unsqueeze", lambda a: a.unsqueeze(4)),
    ("softmax", lambda a: mg.softmax(a, dim=2)),
    ("log_softmax", lambda a: a.log_softmax(dim=-3)),
    ("sum", lambda a: a.sum(dim=2)),
    ("mean", lambda a: mg.mean(a, dim=(0, 3))),
    ("max", lambda a: mg.max(a, dim=2)),
    ("min", lambda a: a.min(-3)),
    ("argmax", lambda a: a.argmax(dim=2)),
    ("var", lambda a: a.var(dim=9)),
    ("logsumexp", lambda a: a.logsumexp(dim=2)),
    ("size", lambda a: a.size(2)),
]


@pytest.mark.parametrize("name,call", OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE])
def test_dimension_out_of_range(name, call, device):
    a = mg.ones(2, 3, device=device)
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-\d, \d\]"):
        call(a)


def test_scalar_tensors_accept_dims_minus_one_and_zero():
    s = mg.tensor(3.0)
    assert s.sum(dim=0).item() == 3.0 and s.sum(dim=-1).item() == 3.0 and s.unsqueeze(0).shape == (1,)
    with pytest.raises(IndexError, match=r"\[-1, 0\], but got 1"):
        s.sum(dim=1)
