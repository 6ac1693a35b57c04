"""``minigrad.norm.recompute_statistics``: Algorithm 2, steps 8–11 (population statistics of BN)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad
from minigrad import nn
from minigrad.data import DataLoader, TensorDataset
from minigrad.norm import fold, recompute_statistics


def host(t):
    return t.detach().numpy().astype(np.float64)


def algorithm2(inputs, axes):
    """Steps 8-11 in NumPy: mean of μ_B, and m/(m-1) times the mean of the biased σ²_B."""
    xs = [np.asarray(x, dtype=np.float64) for x in inputs]
    m = xs[0].size // xs[0].shape[1]
    mean = np.mean([x.mean(axis=axes) for x in xs], axis=0)
    var = m / (m - 1) * np.mean([x.var(axis=axes) for x in xs], axis=0)
    return mean, var


def _batches(rng, k, shape, dtype="float32", device="cpu"):
    return [minigrad.tensor(rng.standard_normal(shape) * rng.uniform(0.5, 3) + rng.uniform(-2, 2), dtype=dtype,
                            device=device) for _ in range(k)]


@pytest.mark.parametrize("shape,axes", [((6, 3), (0,)), ((4, 3, 5), (0, 2)), ((3, 3, 2, 4), (0, 2, 3))])
def test_single_layer_matches_steps_8_to_11(device, shape, axes):
    rng = np.random.default_rng(0)
    bn = (nn.BatchNorm2d(3) if len(shape) == 4 else nn.BatchNorm1d(3)).to(device)
    batches = _batches(rng, 5, shape, device=device)
    assert recompute_statistics(bn, batches) == 5
    mean, var = algorithm2([host(b) for b in batches], axes)
    np.testing.assert_allclose(host(bn.running_mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host(bn.running_var), var, rtol=1e-5, atol=1e-6)


@given(n=st.integers(2, 7), c=st.integers(1, 4), k=st.integers(1, 6), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(["float32", "float64"]))
def test_property_deep_network(n, c, k, seed, dtype):
    """Every BN of a stack gets the statistics of its input as the training network computes it."""
    rng = np.random.default_rng(seed)
    minigrad.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, c), nn.BatchNorm1d(c), nn.Sigmoid(), nn.Linear(c, 3), nn.BatchNorm1d(3)).to(
        dtype=dtype)
    with minigrad.no_grad():  # non-trivial γ, β: the second BN's input depends on them
        model[1].weight.array[...] = rng.uniform(0.5, 2, c)
        model[1].bias.array[...] = rng.standard_normal(c)
    batches = _batches(rng, k, (n, 5), dtype=dtype)
    first, second = [], []
    with minigrad.no_grad():
        for b in batches:  # the training network, layer by layer, without touching the statistics
            h = model[0](b)
            first.append(host(h))
            mu, var = first[-1].mean(0), first[-1].var(0)
            xhat = (first[-1] - mu) / np.sqrt(var + model[1].eps)
            h = 1 / (1 + np.exp(-(xhat * host(model[1].weight) + host(model[1].bias))))
            second.append(h @ host(model[3].weight).T + host(model[3].bias))
    recompute_statistics(model, batches)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    for layer, inputs in ((model[1], first), (model[4], second)):
        mean, var = algorithm2(inputs, (0,))
        np.testing.assert_allclose(host(layer.running_mean), mean, **tol)
        np.testing.assert_allclose(host(layer.running_var), var, **tol)


def test_training_state_untouched():
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, momentum=0.3), nn.ReLU(), nn.Linear(6, 6),
                          nn.BatchNorm1d(6, momentum=None), nn.Dropout(0.2))
    for b in _batches(rng, 3, (8, 4)):
        model(b)
    model.eval()
    model[5].train()  # a mix of modes must come back as it was
    params = {k: host(v) for k, v in model.state_dict().items() if "running" not in k}
    modes = [m.training for m in model.modules()]
    recompute_statistics(model, _batches(rng, 4, (8, 4)))
    assert [m.training for m in model.modules()] == modes
    assert model[1].momentum == 0.3 and model[4].momentum is None
    for k, v in model.state_dict().items():
        if "running" not in k:  # weights, biases and num_batches_tracked
            np.testing.assert_array_equal(host(v), params[k], err_msg=k)
    assert all(p.grad is None for p in model.parameters())


def test_population_statistics_differ_from_the_moving_averages():
    """Early in training the running averages still remember their start (0 and 1); Algorithm 2 does not."""
    rng = np.random.default_rng(2)
    bn = nn.BatchNorm1d(3)
    data = rng.standard_normal((600, 3)) * 4 + 10
    batches = [minigrad.tensor(data[i:i + 60], dtype="float32") for i in range(0, 600, 60)]
    for b in batches[:3]:
        bn(b)
    assert np.all(host(bn.running_mean) < 4)  # three steps of momentum 0.1 from 0: far from 10
    recompute_statistics(bn, batches)
    mean, var = algorithm2(data.reshape(10, 60, 3), (0,))
    np.testing.assert_allclose(host(bn.running_mean), mean, rtol=1e-5)
    np.testing.assert_allclose(host(bn.running_var), var, rtol=1e-5)


def test_dataloader_and_max_batches():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((100, 4)).astype(np.float32), rng.integers(0, 2, 100)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    loader = DataLoader(TensorDataset(x, y), batch_size=20, shuffle=False, drop_last=True)
    assert recompute_statistics(model, loader, max_batches=3) == 3
    with minigrad.no_grad():
        h = host(model[0](minigrad.tensor(x[:60])))
    mean, var = algorithm2(h.reshape(3, 20, 3), (0,))
    np.testing.assert_allclose(host(model[1].running_mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host(model[1].running_var), var, rtol=1e-5, atol=1e-6)


def test_fold_after_recompute_equals_eval():
    rng = np.random.default_rng(4)
    minigrad.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5),
                          nn.BatchNorm1d(5))
    batches = _batches(rng, 4, (6, 2, 6, 6))
    recompute_statistics(model, batches)
    model.eval()
    folded = fold(model)
    x = batches[0]
    with minigrad.no_grad():
        expected, got = host(model(x)), host(folded(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_layers_without_running_statistics_and_models_without_bn():
    rng = np.random.default_rng(5)
    bn = nn.BatchNorm1d(3, track_running_stats=False)
    assert recompute_statistics(bn, _batches(rng, 2, (4, 3))) == 0
    assert recompute_statistics(nn.Linear(3, 2), _batches(rng, 2, (4, 3))) == 0


def test_errors_leave_the_statistics_as_they_were():
    rng = np.random.default_rng(6)
    bn = nn.BatchNorm1d(3)
    bn(_batches(rng, 1, (5, 3))[0])
    before = host(bn.running_mean), host(bn.running_var)
    with pytest.raises(ValueError, match=r"batch 1 has shape \(4, 3\) but batch 0 has \(5, 3\).*drop_last=True"):
        recompute_statistics(bn, _batches(rng, 1, (5, 3)) + _batches(rng, 1, (4, 3)))
    with pytest.raises(ValueError, match="no batches"):
        recompute_statistics(bn, [])
    with pytest.raises(ValueError, match="holds no examples"):
        recompute_statistics(bn, [minigrad.zeros(0, 3)])
    with pytest.raises(TypeError, match="batch 0 must be a Tensor or a tuple/list"):
        recompute_statistics(bn, [np.zeros((4, 3))])
    with pytest.raises(ValueError, match="max_batches must be a positive int"):
        recompute_statistics(bn, _batches(rng, 1, (5, 3)), max_batches=0)
    with pytest.raises(ValueError, match="one value per channel|more than 1 value"):
        recompute_statistics(bn, _batches(rng, 1, (1, 3)))
    np.testing.assert_array_equal(host(bn.running_mean), before[0])
    np.testing.assert_array_equal(host(bn.running_var), before[1])
    assert bn.training and bn.momentum == 0.1 and int(bn.num_batches_tracked.item()) == 1


def test_matches_torch_update_bn():
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import update_bn

    rng = np.random.default_rng(7)
    data = [rng.standard_normal((10, 3, 4, 4)).astype(np.float32) * 2 + 1 for _ in range(4)]
    ours = nn.BatchNorm2d(3)
    recompute_statistics(ours, [minigrad.tensor(d) for d in data])
    theirs = torch.nn.BatchNorm2d(3)
    update_bn([torch.from_numpy(d) for d in data], theirs)
    np.testing.assert_allclose(host(ours.running_mean), theirs.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host(ours.running_var), theirs.running_var.numpy(), rtol=1e-5, atol=1e-6)
