"""Elementwise ops: forward against NumPy, backward against finite differences."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minigrad as mg
from minigrad.testing import gradcheck
from minigrad.testing.strategies import arrays, broadcastable_pair, shapes


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _away_from(points, margin=1e-3):
    return lambda a: all(np.all(np.abs(a - p) > margin) for p in points)


# name, minigrad function, NumPy reference, array options, filter
UNARY = [
    ("neg", lambda t: -t, np.negative, {}, None),
    ("exp", mg.exp, np.exp, {}, None),
    ("log", mg.log, np.log, dict(low=0.05, high=4.0), None),
    ("sqrt", mg.sqrt, np.sqrt, dict(low=0.05, high=4.0), None),
    ("tanh", mg.tanh, np.tanh, {}, None),
    ("sigmoid", mg.sigmoid, _sigmoid, dict(low=-8.0, high=8.0), None),
    ("relu", mg.relu, lambda a: np.maximum(a, 0), dict(min_magnitude=1e-3), None),
    ("abs", mg.abs, np.abs, dict(min_magnitude=1e-3), None),
    ("clamp", lambda t: t.clamp(-1.0, 0.5), lambda a: np.clip(a, -1.0, 0.5), {}, _away_from([-1.0, 0.5])),
    ("square", lambda t: t**2, np.square, {}, None),
    ("pow_frac", lambda t: t**1.5, lambda a: a**1.5, dict(low=0.05, high=4.0), None),
    ("rpow", lambda t: 2.0**t, lambda a: 2.0**a, {}, None),
    ("scalar_ops", lambda t: (3.0 - t) * 2 / 4 + 1, lambda a: (3.0 - a) * 2 / 4 + 1, {}, None),
    ("rdiv", lambda t: 1.0 / t, lambda a: 1.0 / a, dict(min_magnitude=0.1), None),
]


@pytest.mark.parametrize("name,fn,ref,opts,keep", UNARY, ids=[u[0] for u in UNARY])
@given(data=st.data())
def test_unary(name, fn, ref, opts, keep, device, data):
    shape = data.draw(shapes(max_dims=3, max_side=4))
    arrs = arrays(shape, **opts)
    a = data.draw(arrs.filter(keep) if keep else arrs)
    x = mg.tensor(a, device=device, requires_grad=True)
    out = fn(x)
    assert out.dtype == np.float64 and out.shape == a.shape
    np.testing.assert_allclose(out.detach().numpy_view(), ref(a), rtol=1e-12, atol=1e-12)
    assert gradcheck(fn, [x])


@pytest.mark.parametrize("name,fn,ref,opts,keep", UNARY, ids=[u[0] for u in UNARY])
def test_unary_keeps_float32(name, fn, ref, opts, keep, device):
    lo, hi = opts.get("low", -2.0), opts.get("high", 2.0)
    a = np.linspace(lo, hi, 24, dtype=np.float32).reshape(4, 6)
    out = fn(mg.tensor(a, device=device))
    assert out.dtype == np.float32
    expected = ref(a.astype(np.float64))
    ok = np.isfinite(expected)
    np.testing.assert_allclose(out.numpy_view()[ok], expected[ok], rtol=2e-6, atol=2e-6)


def _add(a, b):
    return a + b


def _sub(a, b):
    return a - b


def _mul(a, b):
    return a * b


def _div(a, b):
    return a / b


BINARY = [
    ("add", _add, {}, {}),
    ("sub", _sub, {}, {}),
    ("mul", _mul, {}, {}),
    ("div", _div, {}, dict(min_magnitude=0.2)),
    ("pow", lambda a, b: a**b, dict(low=0.2, high=3.0), dict(low=-2.0, high=2.0)),
    ("maximum", lambda a, b: mg.maximum(a, b) if isinstance(a, mg.Tensor) else np.maximum(a, b), {}, {}),
    ("minimum", lambda a, b: mg.minimum(a, b) if isinstance(a, mg.Tensor) else np.minimum(a, b), {}, {}),
]


@pytest.mark.parametrize("name,fn,opts_a,opts_b", BINARY, ids=[b[0] for b in BINARY])
@given(data=st.data())
def test_binary_broadcasting(name, fn, opts_a, opts_b, device, data):
    sa, sb = data.draw(broadcastable_pair())
    a = data.draw(arrays(sa, **opts_a))
    b = data.draw(arrays(sb, **opts_b))
    if name in ("maximum", "minimum"):
        # near-ties (where the subgradient is split) are not differentiable
        assume(not np.any(np.abs(np.subtract(a, b)) < 1e-3))
    x = mg.tensor(a, device=device, requires_grad=True)
    y = mg.tensor(b, device=device, requires_grad=True)
    out = fn(x, y)
    np.testing.assert_allclose(out.detach().numpy_view(), fn(a, b), rtol=1e-12, atol=1e-12)
    assert gradcheck(fn, [x, y])


def test_where_routes_gradients(device):
    a = mg.tensor([1.0, 2.0, 3.0], dtype="float64", device=device, requires_grad=True)
    b = mg.tensor([[10.0], [20.0]], dtype="float64", device=device, requires_grad=True)
    cond = mg.tensor([True, False, True], device=device)
    out = mg.where(cond, a, b)
    np.testing.assert_array_equal(out.detach().numpy_view(), [[1, 10, 3], [1, 20, 3]])
    assert gradcheck(lambda p, q: mg.where(cond, p, q), [a, b])
    with pytest.raises(TypeError, match="bool"):
        mg.where(mg.tensor([1, 0]), a[:2], a[:2])


def test_integer_operands_meet_floats_without_upcasting(device):
    f = mg.tensor([1.5, 2.5], device=device)
    i = mg.tensor([1, 2], device=device)
    assert (f + i).dtype == np.float32
    assert (i * 0.5).dtype == np.float32
    assert (i / i).dtype == np.float32
    assert (i + i).dtype == np.int64
    assert (f * np.float64(2.0)).dtype == np.float32  # NumPy scalars are weak like Python ones


def test_mixing_float_dtypes_raises(device):
    a = mg.ones(3, device=device)
    b = mg.ones(3, dtype="float64", device=device)
    with pytest.raises(TypeError, match="float32 and float64"):
        a + b
    with pytest.raises(TypeError, match="up-cast"):
        a * np.ones(3)  # a float64 NumPy array is not silently mixed in


def test_numpy_on_the_left_defers_to_tensor(device):
    x = mg.tensor([1.0, 2.0], device=device, requires_grad=True)
    out = np.float32(2.0) * x
    assert isinstance(out, mg.Tensor) and out.requires_grad
    out = [1.0, 1.0] + x
    assert isinstance(out, mg.Tensor)


def test_dropout_scales_kept_units_and_is_identity_in_eval(device):
    x = mg.ones(2000, device=device, requires_grad=True)
    y = mg.nn.functional.dropout(x, 0.25, training=True)
    vals = y.detach().cpu().numpy()
    assert np.all(np.isclose(vals, 0.0) | np.isclose(vals, 1 / 0.75))
    kept = float((y.detach().cpu().numpy() != 0).mean())
    assert 0.7 < kept < 0.8
    g = mg.randn(2000, device=device)
    y.backward(g)
    np.testing.assert_allclose(x.grad.cpu().numpy(), g.cpu().numpy() * y.detach().cpu().numpy(), rtol=1e-6)
    assert mg.nn.functional.dropout(x, 0.25, training=False) is x
    with pytest.raises(ValueError, match="probability"):
        mg.nn.functional.dropout(x, 1.5)
