"""The pieces of examples/bn_mnist.py that compute the reported numbers."""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # the examples live in the checkout, not in the installed package
    sys.path.insert(0, ROOT)

bn_mnist = pytest.importorskip("examples.bn_mnist", reason="the examples need their extras")


def test_steps_to_reach():
    steps, acc = [0, 10, 20, 30], [0.1, 0.5, 0.91, 0.89]
    assert bn_mnist.steps_to_reach(steps, acc, 0.9) == 20
    assert bn_mnist.steps_to_reach(steps, acc, 0.5) == 10
    assert bn_mnist.steps_to_reach(steps, acc, 0.95) is None


def test_stability_separates_drift_from_jitter():
    steps = np.arange(0, 1001, 10)
    t = len(steps)
    trend = np.linspace(0.0, 2.0, t)[:, None, None] * np.ones((1, 3, 4))
    noise = np.random.default_rng(0).normal(0, 0.5, (t, 3, 4))
    drifting = bn_mnist.stability(trend, steps, 0.1)
    noisy = bn_mnist.stability(noise, steps, 0.1)
    # A straight ramp from 0 to 2 over 101 evaluations: the windows are evaluations 10-19 (after the
    # 10% skip) and 91-100, whose means are 2·14.5/100 and 2·95.5/100 apart by 1.62; no jitter.
    np.testing.assert_allclose(drifting["drift"], 1.62, rtol=1e-6)
    np.testing.assert_allclose(drifting["jitter"], 0.0, atol=1e-12)
    # Pure noise: small drift, jitter ≈ its standard deviation, a large range.
    assert noisy["drift"].mean() < 0.3
    np.testing.assert_allclose(noisy["jitter"], 0.5, rtol=0.2)
    assert np.all(noisy["range"] > 4 * noisy["drift"])


def test_both_networks_start_from_the_same_weights():
    plain = bn_mnist.build_mlp(False, "gaussian", seed=3)
    bn = bn_mnist.build_mlp(True, "gaussian", seed=3)
    for a, b in zip(bn_mnist.linear_weights(plain), bn_mnist.linear_weights(bn)):
        np.testing.assert_array_equal(a, b)
    other = bn_mnist.build_mlp(False, "gaussian", seed=4)
    assert not np.array_equal(bn_mnist.linear_weights(plain)[0], bn_mnist.linear_weights(other)[0])
    assert [type(m).__name__ for m in bn][:3] == ["Linear", "BatchNorm1d", "Sigmoid"]
    assert sum(type(m).__name__ == "Sigmoid" for m in plain) == 3


def test_gaussian_init_scale():
    w = bn_mnist.linear_weights(bn_mnist.build_mlp(False, "gaussian", seed=0))[0]
    assert w.shape == (100, 784)
    np.testing.assert_allclose(w.std(), 1 / np.sqrt(784), rtol=0.05)
