"""Batch Normalization: PyTorch's semantics, the paper's equations, properties and numerics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minigrad
from minigrad import nn
from minigrad.nn import functional as F
from minigrad.testing import gradcheck

HYPO = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def make_bn(rank, c, device="cpu", **kwargs):
    return (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(c, device=device, **kwargs)


def host(t):
    return t.detach().numpy().astype(np.float64)


def reduce_axes(ndim):
    return (0,) + tuple(range(2, ndim))


def bcast(v, ndim):
    return np.asarray(v, dtype=np.float64).reshape((1, -1) + (1,) * (ndim - 2))


# ------------------------------------------------------------ NumPy reference
def np_bn_forward(x, gamma, beta, eps):
    """The paper's Algorithm 1 (per channel over the batch and spatial axes)."""
    axes = reduce_axes(x.ndim)
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    xhat = (x - mu) / np.sqrt(var + eps)
    return gamma * xhat + beta, xhat, var


def np_bn_backward(dy, x, gamma, eps):
    """The paper's chain rule, written out term by term (not the fused form the kernels use)."""
    axes = reduce_axes(x.ndim)
    m = x.size // x.shape[1]
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    xhat = (x - mu) / np.sqrt(var + eps)
    dxhat = dy * gamma
    dvar = (dxhat * (x - mu) * -0.5 * (var + eps) ** -1.5).sum(axis=axes, keepdims=True)
    dmu = (dxhat * -1.0 / np.sqrt(var + eps)).sum(axis=axes, keepdims=True) + dvar * (-2.0 * (x - mu)).sum(
        axis=axes, keepdims=True) / m
    dx = dxhat / np.sqrt(var + eps) + dvar * 2.0 * (x - mu) / m + dmu / m
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


shapes = st.one_of(
    st.tuples(st.integers(2, 6), st.integers(1, 4)),
    st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(2, 5)),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(2, 3)),
)


# --------------------------------------------------------------------- state
def test_initial_state(device):
    bn = nn.BatchNorm2d(5, device=device)
    assert np.all(bn.weight.numpy_view() == 1) and np.all(bn.bias.numpy_view() == 0)
    assert np.all(bn.running_mean.numpy_view() == 0) and np.all(bn.running_var.numpy_view() == 1)
    assert bn.num_batches_tracked.dtype == np.int64 and int(bn.num_batches_tracked.item()) == 0
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    plain = nn.BatchNorm1d(3, affine=False, track_running_stats=False, device=device)
    assert plain.weight is None and plain.bias is None and plain.running_mean is None
    assert plain.num_batches_tracked is None and list(plain.state_dict()) == [] and list(plain.parameters()) == []
    assert repr(bn) == "BatchNorm2d(5, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert isinstance(bn, minigrad.norm.BatchNorm2d) and nn.BatchNorm2d is minigrad.norm.BatchNorm2d


@pytest.mark.parametrize("bad", [dict(eps=-1e-5), dict(eps=float("nan")), dict(momentum=1.5), dict(momentum=-0.1),
                                 dict(momentum="0.1")])
def test_constructor_rejects_bad_arguments(bad):
    with pytest.raises(ValueError, match="eps|momentum"):
        nn.BatchNorm1d(3, **bad)


@pytest.mark.parametrize("n", [-2, 2.5, True])
def test_constructor_rejects_bad_num_features(n):
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm2d(n)


def test_zero_channels_give_empty_results(device):
    # As PyTorch: C = 0 is a valid (empty) layer; the output is empty and the (empty) statistics are untouched.
    bn = nn.BatchNorm2d(0, device=device)
    x = minigrad.randn(4, 0, 2, 2, device=device, requires_grad=True)
    y = bn(x)
    assert y.shape == (4, 0, 2, 2)
    y.sum().backward()
    assert x.grad.shape == x.shape and bn.weight.grad.shape == (0,)
    assert bn.eval()(x).shape == x.shape


def test_reset(device, rng):
    bn = make_bn(2, 3, device)
    bn(minigrad.tensor(rng.standard_normal((5, 3)), dtype="float32", device=device))
    with minigrad.no_grad():
        bn.weight.array[...] = 2
    bn.reset_running_stats()
    assert int(bn.num_batches_tracked.item()) == 0 and np.all(bn.running_var.numpy_view() == 1)
    assert np.all(bn.weight.numpy_view() == 2)
    bn.reset_parameters()
    assert np.all(bn.weight.numpy_view() == 1)


# --------------------------------------------------------- train and eval
@HYPO
@given(shape=shapes, momentum=st.floats(0.0, 1.0), steps=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_training_updates_running_statistics(shape, momentum, steps, seed, device):
    rng = np.random.default_rng(seed)
    bn = make_bn(len(shape), shape[1], device, momentum=momentum)
    rm, rv = np.zeros(shape[1]), np.ones(shape[1])
    for step in range(steps):
        xa = rng.standard_normal(shape) * 2 + 1
        y = bn(minigrad.tensor(xa, dtype="float32", device=device))
        x32 = xa.astype(np.float32).astype(np.float64)
        expected, _, _ = np_bn_forward(x32, 1.0, 0.0, bn.eps)
        np.testing.assert_allclose(host(y), expected, rtol=1e-4, atol=1e-4)
        axes = reduce_axes(len(shape))
        m = x32.size // shape[1]
        rm = (1 - momentum) * rm + momentum * x32.mean(axis=axes)
        rv = (1 - momentum) * rv + momentum * x32.var(axis=axes) * m / (m - 1)
        np.testing.assert_allclose(host(bn.running_mean), rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(host(bn.running_var), rv, rtol=1e-5, atol=1e-6)
        assert int(bn.num_batches_tracked.item()) == step + 1


def test_momentum_none_is_a_cumulative_average(device, rng):
    bn = nn.BatchNorm1d(4, momentum=None, device=device, dtype="float64")
    batches = [rng.standard_normal((6, 4)) * (i + 1) + i for i in range(5)]
    for xa in batches:
        bn(minigrad.tensor(xa, device=device))
    np.testing.assert_allclose(host(bn.running_mean), np.mean([b.mean(axis=0) for b in batches], axis=0), rtol=1e-12)
    np.testing.assert_allclose(host(bn.running_var), np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0),
                               rtol=1e-12)
    assert int(bn.num_batches_tracked.item()) == 5


def test_running_statistics_update_under_no_grad_and_get_no_gradient(device, rng):
    bn = nn.BatchNorm2d(3, device=device)
    x = minigrad.tensor(rng.standard_normal((4, 3, 2, 2)) + 3, dtype="float32", device=device, requires_grad=True)
    with minigrad.no_grad():
        bn(x)
    assert int(bn.num_batches_tracked.item()) == 1 and np.all(bn.running_mean.numpy_view() > 0.1)
    before = bn.running_mean.numpy().copy()
    bn(x).sum().backward()
    assert not bn.running_mean.requires_grad and bn.running_mean.grad is None and bn.running_var.grad is None
    assert x.grad is not None and bn.weight.grad is not None
    assert not np.array_equal(before, bn.running_mean.numpy())


@pytest.mark.parametrize("rank", [2, 3, 4])
def test_eval_uses_running_statistics(rank, device, rng, randomize_module):
    shape = (3, 4, 5, 2)[:rank]
    bn = randomize_module(make_bn(rank, 4, device, dtype="float64"), rng)
    bn.eval()
    xa = rng.standard_normal(shape)
    state = {k: v.numpy().copy() for k, v in bn.state_dict().items()}
    y = host(bn(minigrad.tensor(xa, device=device)))
    expected = (xa - bcast(state["running_mean"], rank)) / np.sqrt(bcast(state["running_var"], rank) + bn.eps)
    expected = expected * bcast(state["weight"], rank) + bcast(state["bias"], rank)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k], err_msg=f"eval changed {k}")


def test_without_running_statistics_uses_batch_statistics_in_both_modes(device, rng):
    bn = nn.BatchNorm1d(3, track_running_stats=False, device=device, dtype="float64")
    xa = rng.standard_normal((5, 3)) * 3 + 1
    x = minigrad.tensor(xa, device=device)
    train = host(bn(x))
    bn.eval()
    np.testing.assert_allclose(host(bn(x)), train, rtol=1e-14)
    np.testing.assert_allclose(train, np_bn_forward(xa, 1.0, 0.0, bn.eps)[0], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------ edge cases
@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)])
def test_one_value_per_channel_cannot_train(shape, device):
    bn = make_bn(len(shape), 3, device)
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training, got input size "
                                         + str(shape).replace("(", r"\(").replace(")", r"\)")):
        bn(minigrad.randn(*shape, device=device))
    assert int(bn.num_batches_tracked.item()) == 0
    bn.eval()
    assert bn(minigrad.randn(*shape, device=device)).shape == shape  # eval with N = 1 is fine


def test_one_sample_with_spatial_values_trains(device, rng):
    bn = nn.BatchNorm2d(3, device=device, dtype="float64")
    xa = rng.standard_normal((1, 3, 2, 2))
    np.testing.assert_allclose(host(bn(minigrad.tensor(xa, device=device))), np_bn_forward(xa, 1.0, 0.0, 1e-5)[0],
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 4), (0, 3, 2, 2), (2, 3, 0)])
def test_empty_batch(shape, device):
    bn = make_bn(len(shape), 3, device)
    x = minigrad.zeros(*shape, device=device, requires_grad=True)
    y = bn(x)
    assert y.shape == shape
    assert int(bn.num_batches_tracked.item()) == 0 and np.all(bn.running_var.numpy_view() == 1)
    y.backward(minigrad.zeros(*shape, device=device))
    assert x.grad.shape == shape and np.all(bn.weight.grad.numpy_view() == 0)
    bn.eval()
    assert bn(x).shape == shape


@pytest.mark.parametrize("make, x_shape, match", [
    (lambda: nn.BatchNorm1d(3), (2, 3, 4, 4), r"expected 2D or 3D input \(got 4D"),
    (lambda: nn.BatchNorm1d(3), (3,), r"expected 2D or 3D input \(got 1D"),
    (lambda: nn.BatchNorm2d(3), (2, 3, 4), r"expected 4D input \(got 3D"),
    (lambda: nn.BatchNorm2d(3), (2, 4, 1, 1), r"expected 3 channels .*num_features=3.*\(2, 4, 1, 1\)"),
    (lambda: nn.BatchNorm1d(3), (5, 2), r"expected 3 channels"),
])
def test_shape_errors_name_what_was_expected(make, x_shape, match):
    with pytest.raises(ValueError, match=match):
        make()(minigrad.randn(*x_shape))


def test_dtype_errors():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(TypeError, match="floating point input.*int64"):
        bn(minigrad.ones(4, 3, dtype="int64"))
    with pytest.raises(TypeError, match="floating point input.*bool"):
        bn(minigrad.ones(4, 3, dtype="bool"))
    with pytest.raises(TypeError, match="input dtype float64 does not match the module's dtype float32"):
        bn(minigrad.ones(4, 3, dtype="float64"))
    bn.double()
    assert bn(minigrad.randn(4, 3, dtype="float64")).dtype == np.float64


# ------------------------------------------------------------- gradients
@HYPO
@given(shape=shapes, affine=st.booleans(), train=st.booleans(), track=st.booleans(),
       eps=st.floats(1e-5, 0.5), momentum=st.one_of(st.none(), st.floats(0.0, 1.0)), seed=st.integers(0, 2**31))
def test_gradcheck(shape, affine, train, track, eps, momentum, seed, device, randomize_module):
    """Finite differences of dx, dγ, dβ (float64, random upstream gradient), every rank and mode."""
    rng = np.random.default_rng(seed)
    bn = make_bn(len(shape), shape[1], device, affine=affine, track_running_stats=track, eps=eps,
                 momentum=momentum, dtype="float64")
    randomize_module(bn, rng)
    bn.train(train)
    if (train or not track) and np.prod(shape) // shape[1] == 1:
        return
    x = minigrad.tensor(rng.standard_normal(shape) * 1.5, device=device, requires_grad=True)
    params = [p for p in (bn.weight, bn.bias) if p is not None]
    gradcheck(bn, [x], params=params, seed=seed % 997, atol=1e-6, rtol=1e-4)


@HYPO
@given(shape=shapes, seed=st.integers(0, 2**31), eps=st.sampled_from([1e-5, 1e-2]))
def test_forward_and_backward_match_the_paper(shape, seed, eps, device):
    """Float64 forward and every gradient against Algorithm 1 and its chain rule, in NumPy."""
    rng = np.random.default_rng(seed)
    if np.prod(shape) // shape[1] == 1:
        return
    xa = rng.standard_normal(shape) * 2 - 1
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    dy = rng.standard_normal(shape)
    x = minigrad.tensor(xa, device=device, requires_grad=True)
    w = minigrad.tensor(gamma, device=device, requires_grad=True)
    b = minigrad.tensor(beta, device=device, requires_grad=True)
    y = F.batch_norm(x, None, None, w, b, training=True, eps=eps)
    y.backward(minigrad.tensor(dy, device=device))
    ey, _, _ = np_bn_forward(xa, bcast(gamma, len(shape)), bcast(beta, len(shape)), eps)
    edx, edw, edb = np_bn_backward(dy, xa, bcast(gamma, len(shape)), eps)
    np.testing.assert_allclose(host(y), ey, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(host(x.grad), edx, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(host(w.grad), edw, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(host(b.grad), edb, rtol=1e-10, atol=1e-10)


def test_eval_backward(device, rng, randomize_module):
    bn = randomize_module(nn.BatchNorm2d(3, device=device, dtype="float64"), rng).eval()
    xa, dy = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 3, 2, 2))
    x = minigrad.tensor(xa, device=device, requires_grad=True)
    bn(x).backward(minigrad.tensor(dy, device=device))
    scale = host(bn.weight) / np.sqrt(host(bn.running_var) + bn.eps)
    xhat = (xa - bcast(host(bn.running_mean), 4)) / np.sqrt(bcast(host(bn.running_var), 4) + bn.eps)
    np.testing.assert_allclose(host(x.grad), dy * bcast(scale, 4), rtol=1e-12)
    np.testing.assert_allclose(host(bn.weight.grad), (dy * xhat).sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(host(bn.bias.grad), dy.sum(axis=(0, 2, 3)), rtol=1e-12)


# ------------------------------------------------------------- properties
@HYPO
@given(shape=shapes.filter(lambda s: np.prod(s) // s[1] >= 2), seed=st.integers(0, 2**31))
def test_training_output_has_zero_mean_unit_variance(shape, seed, device):
    rng = np.random.default_rng(seed)
    bn = make_bn(len(shape), shape[1], device, dtype="float64", eps=0.0)
    xa = rng.standard_normal(shape) * rng.uniform(0.5, 5, shape[1]).reshape((1, -1) + (1,) * (len(shape) - 2))
    y = host(bn(minigrad.tensor(xa + 7.0, device=device)))
    axes = reduce_axes(len(shape))
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=axes), 1, rtol=1e-10)


@HYPO
@given(shape=shapes.filter(lambda s: np.prod(s) // s[1] >= 2), seed=st.integers(0, 2**31),
       scale=st.floats(1e-2, 1e2), shift=st.floats(-1e3, 1e3))
def test_training_output_is_invariant_to_per_channel_scale_and_shift(shape, seed, scale, shift, device,
                                                                     randomize_module):
    rng = np.random.default_rng(seed)
    bn = randomize_module(make_bn(len(shape), shape[1], device, dtype="float64", eps=0.0), rng)
    xa = rng.standard_normal(shape)
    a = scale * rng.uniform(0.5, 2.0, shape[1])
    b = shift * rng.uniform(-1, 1, shape[1])
    y0 = host(bn(minigrad.tensor(xa, device=device)))
    y1 = host(bn(minigrad.tensor(xa * bcast(a, len(shape)) + bcast(b, len(shape)), device=device)))
    np.testing.assert_allclose(y1, y0, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_converge_to_the_population(momentum, device):
    rng = np.random.default_rng(7)
    mu, sigma = np.array([3.0, -1.0, 0.0]), np.array([2.0, 0.5, 1.0])
    bn = nn.BatchNorm2d(3, momentum=momentum, device=device, dtype="float64")
    for _ in range(300):
        xa = rng.standard_normal((16, 3, 4, 4)) * sigma[None, :, None, None] + mu[None, :, None, None]
        bn(minigrad.tensor(xa, device=device))
    tol = 0.02 if momentum is None else 0.06
    np.testing.assert_allclose(host(bn.running_mean), mu, atol=tol * sigma.max())
    np.testing.assert_allclose(host(bn.running_var), sigma**2, rtol=3 * tol)


def test_eval_output_of_a_sample_does_not_depend_on_the_batch(device, rng, randomize_module):
    bn = randomize_module(nn.BatchNorm2d(3, device=device, dtype="float64"), rng).eval()
    xa = rng.standard_normal((5, 3, 2, 2))
    full = host(bn(minigrad.tensor(xa, device=device)))
    other = xa.copy()
    other[[0, 1, 3, 4]] = rng.standard_normal((4, 3, 2, 2)) * 10
    np.testing.assert_array_equal(host(bn(minigrad.tensor(other, device=device)))[2], full[2])
    np.testing.assert_allclose(host(bn(minigrad.tensor(xa[2:3], device=device)))[0], full[2], rtol=1e-15)


# ---------------------------------------------------------------- numerics
@pytest.mark.parametrize("rank", [2, 4])
def test_float32_large_mean_small_spread(rank, device):
    """A float32 channel with mean 1e4 and std 1: variance within 1e-3, output still standardized."""
    rng = np.random.default_rng(3)
    shape = (64, 2) if rank == 2 else (8, 2, 6, 6)
    xa = (rng.standard_normal(shape) + 1e4).astype(np.float32)
    bn = make_bn(rank, 2, device, momentum=1.0)
    y = host(bn(minigrad.tensor(xa, device=device)))
    x64 = xa.astype(np.float64)
    axes = reduce_axes(rank)
    np.testing.assert_allclose(host(bn.running_var), x64.var(axis=axes, ddof=1), rtol=1e-3)
    np.testing.assert_allclose(host(bn.running_mean), x64.mean(axis=axes), rtol=1e-6)
    expected = (x64 - x64.mean(axis=axes, keepdims=True)) / np.sqrt(x64.var(axis=axes, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, expected, atol=2e-3)


@pytest.mark.parametrize("rank", [2, 3, 4])
def test_constant_channel_gives_beta_and_finite_gradients(rank, device, rng):
    shape = (4, 3, 5, 2)[:rank]
    bn = make_bn(rank, 3, device)
    with minigrad.no_grad():
        bn.weight.array[...] = bn.weight.backend.asarray([2.0, -1.0, 0.5], dtype="float32")
        bn.bias.array[...] = bn.bias.backend.asarray([0.25, -3.0, 7.0], dtype="float32")
    xa = np.broadcast_to(np.array([5.0, -1e4, 0.0], dtype=np.float32).reshape((1, 3) + (1,) * (rank - 2)), shape)
    x = minigrad.tensor(np.ascontiguousarray(xa), device=device, requires_grad=True)
    y = bn(x)
    np.testing.assert_array_equal(y.detach().numpy(), np.broadcast_to(
        np.array([0.25, -3.0, 7.0], dtype=np.float32).reshape((1, 3) + (1,) * (rank - 2)), shape))
    dy = rng.standard_normal(shape).astype(np.float32)
    y.backward(minigrad.tensor(dy, device=device))
    for t in (x.grad, bn.weight.grad, bn.bias.grad):
        assert np.all(np.isfinite(t.numpy()))
    np.testing.assert_allclose(bn.bias.grad.numpy(), dy.sum(axis=reduce_axes(rank)), rtol=1e-5)


@pytest.mark.parametrize("view", ["channel_slice", "transposed", "batch_stride"])
@pytest.mark.parametrize("rank", [2, 4])
def test_noncontiguous_equals_contiguous(view, rank, device, rng, randomize_module):
    big = rng.standard_normal((6, 8, 5, 4)[:rank]).astype(np.float32)
    if view == "channel_slice":
        x = minigrad.tensor(big, device=device)[:, ::2]
    elif view == "transposed":
        x = minigrad.tensor(np.ascontiguousarray(np.swapaxes(big, 0, 1)), device=device).transpose(0, 1)
    else:
        x = minigrad.tensor(big, device=device)[::2]
    xc = minigrad.tensor(x.numpy().copy(), device=device)
    bn = randomize_module(make_bn(rank, x.shape[1], device), rng)
    for train in (True, False):
        bn.train(train)
        xg = x.detach().requires_grad_()
        xcg = xc.detach().requires_grad_()
        y, yc = bn(xg), bn(xcg)
        np.testing.assert_array_equal(y.detach().numpy(), yc.detach().numpy())
        dy = minigrad.tensor(rng.standard_normal(y.shape).astype(np.float32), device=device)
        y.backward(dy)
        yc.backward(dy)
        np.testing.assert_array_equal(xg.grad.numpy(), xcg.grad.numpy())


# -------------------------------------------------------------- functional
def test_functional_batch_norm(device, rng):
    xa = rng.standard_normal((6, 3, 2))
    x = minigrad.tensor(xa, device=device)
    rm = minigrad.zeros(3, dtype="float64", device=device)
    rv = minigrad.ones(3, dtype="float64", device=device)
    with minigrad.no_grad():
        y = F.batch_norm(x, rm, rv, training=True, momentum=0.5)
    np.testing.assert_allclose(host(y), np_bn_forward(xa, 1.0, 0.0, 1e-5)[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(rm), 0.5 * xa.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(host(rv), 0.5 + 0.5 * xa.var(axis=(0, 2), ddof=1), rtol=1e-12)
    y_eval = F.batch_norm(x, rm, rv)  # training=False by default: running statistics
    np.testing.assert_allclose(host(y_eval), (xa - host(rm)[:, None]) / np.sqrt(host(rv)[:, None] + 1e-5),
                               rtol=1e-12)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(running_mean=None, running_var=None, training=False), ValueError, "running_mean and running_var are "),
    (dict(running_var=None, training=True), ValueError, "both running_mean and running_var"),
    (dict(weight=minigrad.ones(4, dtype="float64")), ValueError, r"weight must have shape \(3,\)"),
    (dict(bias=minigrad.ones(3)), TypeError, "bias has dtype float32 but the input has dtype float64"),
    (dict(eps=-1.0), ValueError, "eps"),
    (dict(training=True, momentum=2.0), ValueError, "momentum"),
])
def test_functional_batch_norm_validation(kwargs, error, match):
    args = dict(running_mean=minigrad.zeros(3, dtype="float64"), running_var=minigrad.ones(3, dtype="float64"))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        F.batch_norm(minigrad.randn(4, 3, dtype="float64"), **args)


def test_functional_rejects_one_value_per_channel():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        F.batch_norm(minigrad.randn(1, 3), None, None, training=True)
