"""LayerNorm, GroupNorm and InstanceNorm specifics, and the functional API's validation."""

from __future__ import annotations

import numpy as np
import pytest

import minigrad
from minigrad import nn
from minigrad.nn import functional as F


def host(t):
    return t.detach().numpy().astype(np.float64)


def test_nn_functional_wraps_norm_functional(device, rng):
    xa = rng.standard_normal((2, 4, 3))
    x = minigrad.tensor(xa, device=device)
    np.testing.assert_array_equal(F.layer_norm(x, 3).numpy(), minigrad.norm.functional.layer_norm(x, 3).numpy())
    np.testing.assert_array_equal(F.group_norm(x, 2).numpy(), minigrad.norm.functional.group_norm(x, 2).numpy())
    np.testing.assert_array_equal(F.instance_norm(x).numpy(), minigrad.norm.functional.instance_norm(x).numpy())


def test_layer_norm_reference(device, rng):
    xa = rng.standard_normal((3, 2, 5)) * 4 + 2
    w, b = rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    y = F.layer_norm(minigrad.tensor(xa, device=device), (2, 5), minigrad.tensor(w, device=device),
                     minigrad.tensor(b, device=device), eps=1e-3)
    mu = xa.mean(axis=(1, 2), keepdims=True)
    var = xa.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(host(y), (xa - mu) / np.sqrt(var + 1e-3) * w + b, rtol=1e-12, atol=1e-12)


def test_group_norm_reference(device, rng):
    xa = rng.standard_normal((2, 6, 3, 2)) - 1
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    y = F.group_norm(minigrad.tensor(xa, device=device), 3, minigrad.tensor(w, device=device),
                     minigrad.tensor(b, device=device))
    g = xa.reshape(2, 3, -1)
    xhat = ((g - g.mean(axis=2, keepdims=True)) / np.sqrt(g.var(axis=2, keepdims=True) + 1e-5)).reshape(xa.shape)
    np.testing.assert_allclose(host(y), xhat * w[None, :, None, None] + b[None, :, None, None], rtol=1e-12,
                               atol=1e-12)


def test_instance_norm_running_statistics(device, rng):
    xa = rng.standard_normal((4, 3, 6)) * 2 + 1
    rm, rv = minigrad.zeros(3, dtype="float64", device=device), minigrad.ones(3, dtype="float64", device=device)
    with minigrad.no_grad():
        F.instance_norm(minigrad.tensor(xa, device=device), rm, rv, momentum=0.25)
    np.testing.assert_allclose(host(rm), 0.25 * xa.mean(axis=2).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(host(rv), 0.75 + 0.25 * xa.var(axis=2, ddof=1).mean(axis=0), rtol=1e-10)
    y = F.instance_norm(minigrad.tensor(xa, device=device), rm, rv, use_input_stats=False)
    np.testing.assert_allclose(host(y), (xa - host(rm)[:, None]) / np.sqrt(host(rv)[:, None] + 1e-5), rtol=1e-12)


def test_instance_norm_unbatched_input(device, rng):
    layer = nn.InstanceNorm1d(3, affine=True, device=device, dtype="float64")
    xa = rng.standard_normal((3, 5))
    y = layer(minigrad.tensor(xa, device=device))
    assert y.shape == (3, 5)
    np.testing.assert_allclose(host(y), host(layer(minigrad.tensor(xa[None], device=device)))[0], rtol=1e-15)


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.layer_norm(minigrad.randn(2, 3), (4,)), ValueError, r"last 1 dimension\(s\) are \(4,\)"),
    (lambda: F.layer_norm(minigrad.randn(2, 3), ()), ValueError, "non-empty"),
    (lambda: F.layer_norm(minigrad.randn(2, 3), 3, minigrad.ones(2)), ValueError, r"weight must have shape \(3,\)"),
    (lambda: F.layer_norm(minigrad.ones(2, 3, dtype="int64"), 3), TypeError, "floating"),
    (lambda: F.group_norm(minigrad.randn(2, 6, 2), 4), ValueError, "divisible by num_groups"),
    (lambda: F.group_norm(minigrad.randn(2, 6, 2), 0), ValueError, "num_groups must be a positive int"),
    (lambda: F.group_norm(minigrad.randn(2, 6), 3, eps=-1), ValueError, "eps"),
    (lambda: F.instance_norm(minigrad.randn(2, 3)), ValueError, "at least 3 dimensions"),
    (lambda: F.instance_norm(minigrad.randn(2, 3, 1)), ValueError, "more than 1 spatial element"),
    (lambda: F.instance_norm(minigrad.randn(2, 3, 4), use_input_stats=False), ValueError, "required"),
    (lambda: nn.GroupNorm(4, 6), ValueError, "divisible"),
    (lambda: nn.InstanceNorm2d(3)(minigrad.randn(2, 3, 1, 1)), ValueError, "more than 1 spatial element"),
    (lambda: nn.LayerNorm(4)(minigrad.randn(4, 3)), ValueError, r"last 1 dimension\(s\) are \(4,\)"),
    (lambda: nn.GroupNorm(2, 4)(minigrad.randn(4)), ValueError, r"2D or higher-dimensional input \(got 1D"),
])
def test_validation(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_layer_norm_without_bias_and_repr():
    ln = nn.LayerNorm((2, 3), bias=False)
    assert ln.bias is None and [n for n, _ in ln.named_parameters()] == ["weight"]
    assert repr(ln) == "LayerNorm((2, 3), eps=1e-05, elementwise_affine=True)"
    assert repr(nn.GroupNorm(2, 4)) == "GroupNorm(2, 4, eps=1e-05, affine=True)"
    assert nn.InstanceNorm2d(3).weight is None and nn.InstanceNorm2d(3).running_mean is None
