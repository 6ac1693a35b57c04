"""The normalizer contract, checked on every registered normalizer (built-ins and plugins).

A new normalizer gets these tests by being registered and describing
example inputs (``Normalizer.examples``): API and state, input validation,
forward against its NumPy ``reference`` in training and eval, finite-
difference gradients of x, γ and β in both modes, sample independence,
standardization, non-contiguous inputs, and its inference affine map.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minigrad
from minigrad import nn
from minigrad.norm import ChannelAffine, Normalizer
from minigrad.testing import gradcheck, gradgradcheck

NAMES = minigrad.norm.available()


def _cases(batched_only):
    return [
        pytest.param(name, i, shape, id=f"{name}-{i}-{'x'.join(map(str, shape))}")
        for name in NAMES
        for i, ex in enumerate(minigrad.norm.get(name).examples())
        for shape in (ex.shapes if batched_only else ex.shapes + ex.unbatched)
    ]


CASES = _cases(batched_only=False)
BATCHED = _cases(batched_only=True)
EXAMPLES = [
    pytest.param(name, i, id=f"{name}-{i}") for name in NAMES for i, _ in enumerate(minigrad.norm.get(name).examples())
]


def build(name, i, device="cpu", dtype=None, **extra):
    ex = minigrad.norm.get(name).examples()[i]
    kwargs = dict(ex.kwargs, **extra)
    if dtype is not None:
        kwargs["dtype"] = dtype
    return minigrad.norm.create(name, *ex.args, device=device, **kwargs), ex


def host(t):
    return t.detach().numpy().astype(np.float64)


def test_builtins_and_plugins_are_registered():
    for name in ("BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d"):
        assert name in NAMES and minigrad.norm.is_builtin(name)
    assert "RMSNorm" in NAMES and not minigrad.norm.is_builtin("RMSNorm"), "the example plugin was not found"


@pytest.mark.parametrize("name", NAMES)
def test_describes_examples(name):
    cls = minigrad.norm.get(name)
    assert issubclass(cls, Normalizer)
    examples = cls.examples()
    assert examples, f"{name} must describe example inputs with the classmethod examples()"
    assert all(ex.shapes for ex in examples)
    assert cls.__doc__ and cls.__doc__.strip(), f"{name} needs a docstring"


@pytest.mark.parametrize("name, i", EXAMPLES)
def test_state_and_api(name, i, device, randomize_module):
    m, ex = build(name, i, device)
    cls = minigrad.norm.get(name)
    assert isinstance(m, cls) and isinstance(m, nn.Module)
    assert repr(m).startswith(cls.__name__ + "(")
    params = dict(m.named_parameters())
    buffers = dict(m.named_buffers())
    assert set(params) <= {"weight", "bias"}
    assert (m.weight is not None) == ("weight" in params)
    assert not set(params) & set(buffers), "buffers must not be parameters"
    state = m.state_dict()
    assert set(params) | {k for k in buffers} == set(state)
    for p in params.values():
        assert p.requires_grad and p.device == minigrad.device(device)
        assert p.dtype == minigrad.get_default_dtype()
    if m.track_running_stats:
        assert set(buffers) == {"running_mean", "running_var", "num_batches_tracked"}
        assert m.num_batches_tracked.dtype == np.int64
    # reset_parameters restores the initial state
    rng = np.random.default_rng(0)
    randomize_module(m, rng)
    m.reset_parameters()
    if m.weight is not None:
        assert np.all(m.weight.numpy_view() == 1)
    if m.bias is not None:
        assert np.all(m.bias.numpy_view() == 0)
    if m.track_running_stats:
        assert np.all(m.running_mean.numpy_view() == 0) and np.all(m.running_var.numpy_view() == 1)
    # state_dict round trip into a fresh module
    randomize_module(m, rng)
    fresh, _ = build(name, i, device)
    fresh.load_state_dict(m.state_dict())
    for (k, a), (_, b) in zip(m.state_dict().items(), fresh.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


@pytest.mark.parametrize("name, i", EXAMPLES)
def test_dtype_and_device_arguments(name, i, device):
    m, ex = build(name, i, device, dtype="float64")
    for t in list(m.parameters()) + [b for n, b in m.named_buffers() if n != "num_batches_tracked"]:
        assert t.dtype == np.float64
    x = minigrad.randn(*ex.shapes[0], dtype="float64", device=device)
    y = m(x)
    assert y.dtype == np.float64 and y.shape == x.shape and y.device == x.device
    m32, _ = build(name, i, device)
    assert m32(x.float()).dtype == np.float32
    m.float()
    assert m(x.float()).dtype == np.float32


@pytest.mark.parametrize("name, i", EXAMPLES)
def test_rejects_bad_input(name, i, device):
    m, ex = build(name, i, device)
    for shape in ex.bad_shapes:
        with pytest.raises(ValueError):
            m(minigrad.randn(*shape, device=device))
    shape = ex.shapes[0]
    with pytest.raises(TypeError, match="floating"):
        m(minigrad.ones(*shape, dtype="int64", device=device))
    with pytest.raises(TypeError, match="floating"):
        m(minigrad.ones(*shape, dtype="bool", device=device))
    with pytest.raises(TypeError):
        m(np.ones(shape, dtype=np.float32))
    if m.weight is not None or m.running_mean is not None:
        with pytest.raises(TypeError, match="dtype"):
            m(minigrad.randn(*shape, dtype="float64", device=device))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, i, shape", CASES)
def test_forward_matches_reference(name, i, shape, mode, dtype, device, rng, randomize_module):
    m, _ = build(name, i, device, dtype=dtype)
    randomize_module(m, rng)
    m.train(mode == "train")
    xa = rng.standard_normal(shape) * 2.0 + 0.5
    x = minigrad.tensor(xa, dtype=dtype, device=device)
    expected = m.reference(x.numpy().astype(np.float64))
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(host(y), expected, **tol)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name, i", EXAMPLES)
def test_gradients(name, i, mode, device, randomize_module, data):
    """Finite differences of x, γ and β, random upstream gradient, random eps."""
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 0.1]), label="eps")
    m, ex = build(name, i, device, dtype="float64", eps=eps)
    shape = data.draw(st.sampled_from(ex.shapes + ex.unbatched), label="shape")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    randomize_module(m, rng)
    m.train(mode == "train")
    x = minigrad.tensor(rng.standard_normal(shape), dtype="float64", device=device, requires_grad=True)
    params = [p for p in (m.weight, m.bias) if p is not None]
    gradcheck(m, [x], params=params, seed=seed % 1000, atol=1e-6, rtol=1e-4)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=3)
@given(data=st.data())
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name, i", EXAMPLES)
def test_gradients_of_gradients(name, i, mode, device, randomize_module, data):
    """gradgradcheck of x, γ, β and the upstream gradient: the backward is differentiable (create_graph)."""
    m, ex = build(name, i, device, dtype="float64", eps=data.draw(st.sampled_from([1e-5, 0.1]), label="eps"))
    shape = data.draw(st.sampled_from(ex.shapes), label="shape")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    randomize_module(m, rng)
    m.train(mode == "train")
    x = minigrad.tensor(rng.standard_normal(shape), dtype="float64", device=device, requires_grad=True)
    params = [p for p in (m.weight, m.bias) if p is not None]
    gradgradcheck(m, [x], params=params, seed=seed % 1000, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name, i, shape", BATCHED)
def test_sample_independence(name, i, shape, mode, device, rng, randomize_module):
    """A sample's output depends on the others only where the statistics span the batch."""
    m, _ = build(name, i, device, dtype="float64")
    randomize_module(m, rng)
    m.train(mode == "train")
    _, axes = m.statistics_view(shape)
    if shape[0] < 2 or (m.uses_batch_statistics and 0 in axes):
        pytest.skip("the statistics span the batch")
    x = minigrad.tensor(rng.standard_normal(shape), dtype="float64", device=device)
    with minigrad.no_grad():
        full = host(m(x))
        one = host(m(x[1:2]))
    np.testing.assert_allclose(one, full[1:2], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, i, shape", BATCHED)
def test_training_output_is_standardized(name, i, shape, device, rng):
    """γ = 1, β = 0: each statistics group has mean 0 and biased variance var/(var + ε)."""
    m, _ = build(name, i, device, dtype="float64")
    if not m.standardizes:
        pytest.skip(f"{name} does not standardize")
    m.train()
    xa = rng.standard_normal(shape) * 3.0 + 2.0
    y = host(m(minigrad.tensor(xa, device=device)))
    view, axes = m.statistics_view(shape)
    v, yv = xa.reshape(view), y.reshape(view)
    var = v.var(axis=axes)
    np.testing.assert_allclose(yv.mean(axis=axes), 0.0, atol=1e-10)
    np.testing.assert_allclose(yv.var(axis=axes), var / (var + m.eps), rtol=1e-9)


@pytest.mark.parametrize("name, i, shape", CASES)
def test_noncontiguous_input(name, i, shape, device, rng, randomize_module):
    m, _ = build(name, i, device)
    randomize_module(m, rng)
    base = minigrad.tensor(rng.standard_normal(shape[::-1]), dtype="float32", device=device)
    x = base.permute(*reversed(range(len(shape))))  # a transposed view with the wanted shape
    assert x.shape == tuple(shape)
    xc = minigrad.tensor(x.numpy().copy(), device=device)
    for mode in (True, False):
        m.train(mode)
        np.testing.assert_array_equal(m(x).detach().numpy(), m(xc).detach().numpy())


@pytest.mark.parametrize("name, i, shape", CASES)
def test_no_grad_and_detached_output(name, i, shape, device, rng):
    m, _ = build(name, i, device)
    x = minigrad.tensor(rng.standard_normal(shape), dtype="float32", device=device, requires_grad=True)
    with minigrad.no_grad():
        y = m(x)
    assert not y.requires_grad
    assert m(x).requires_grad


@pytest.mark.parametrize("name, i, shape", CASES)
def test_inference_affine_map(name, i, shape, device, rng, randomize_module):
    """Where a normalizer folds to a per-channel affine map in eval, the map equals its output."""
    m, _ = build(name, i, device, dtype="float64")
    randomize_module(m, rng)
    assert m.inference_affine() is None, "a normalizer in training mode is not a fixed affine map"
    m.eval()
    try:
        affine = m.inference_affine()
    except minigrad.norm.FoldError:
        return
    if affine is None:
        return
    x = minigrad.tensor(rng.standard_normal(shape), dtype="float64", device=device)
    if x.ndim < 2 or x.shape[1] != m.num_features:
        return
    np.testing.assert_allclose(host(ChannelAffine.from_normalizer(m)(x)), host(m(x)), rtol=1e-12, atol=1e-12)
