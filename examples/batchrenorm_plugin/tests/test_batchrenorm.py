"""Batch Renormalization's tests: minigrad's normalizer contract through the public ``NormalizerTestCase``,
with its declared capabilities, and the paper's properties.

Run with ``pytest`` once the package (and ``minigrad-bn[test]``) is installed.
"""

import numpy as np
import pytest

import minigrad
from minigrad.norm import BatchNorm1d, BatchNorm2d
from minigrad.testing import NormalizerTestCase, gradcheck
from minigrad_batchrenorm import PAPER_D_MAX, PAPER_R_MAX, BatchRenorm1d, BatchRenorm2d, Ramp


class _Contract(NormalizerTestCase):
    # r and d are constants in backward although they depend on the batch: in training the gradient is the
    # paper's surrogate, which finite differences do not see (test_clipped_corrections_have_exact_gradients
    # checks it where r and d are truly constant).
    skip_backward_test = ("train",)
    # r and d come from the running statistics, which every training forward moves.
    stateful_forward = True


class TestBatchRenorm1d(_Contract):
    """The contract on BatchRenorm1d."""

    normalizer = BatchRenorm1d


class TestBatchRenorm2d(_Contract):
    """The contract on BatchRenorm2d."""

    normalizer = BatchRenorm2d


def _running(bn, mean, var):
    with minigrad.no_grad():
        bn.running_mean.copy_(minigrad.tensor(mean, dtype=bn.running_mean.dtype))
        bn.running_var.copy_(minigrad.tensor(var, dtype=bn.running_var.dtype))


def test_the_paper_schedules():
    """r_max = 1 and d_max = 0 (BatchNorm) for 5k steps, then relaxed to 3 at 40k and to 5 at 25k."""
    assert [PAPER_R_MAX(s) for s in (0, 5000, 22500, 40000, 10**6)] == [1.0, 1.0, 2.0, 3.0, 3.0]
    assert [PAPER_D_MAX(s) for s in (0, 5000, 15000, 25000, 10**6)] == [0.0, 0.0, 2.5, 5.0, 5.0]
    bn = BatchRenorm1d(3, r_max=Ramp(1.0, 3.0, 0, 2), d_max=0.0)
    assert bn.limits() == (1.0, 0.0)
    bn(minigrad.randn(4, 3))
    assert bn.limits() == (2.0, 0.0), "the step is num_batches_tracked"


def test_without_room_to_correct_it_is_batch_norm():
    """At the start of the paper's schedule (r_max = 1, d_max = 0) output, gradients and running mean are
    BatchNorm's."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 2, 2))
    renorm, bn = BatchRenorm2d(3, momentum=0.1, dtype="float64"), BatchNorm2d(3, dtype="float64")
    _running(renorm, [0.5, -1.0, 2.0], [2.0, 0.5, 1.0])
    _running(bn, [0.5, -1.0, 2.0], [2.0, 0.5, 1.0])
    outputs = []
    for layer in (renorm, bn):
        xt = minigrad.tensor(x, requires_grad=True)
        y = layer(xt)
        (y * y).sum().backward()
        outputs.append((y.detach().numpy(), xt.grad.numpy(), layer.weight.grad.numpy()))
    for a, b in zip(*outputs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(renorm.running_mean.numpy(), bn.running_mean.numpy(), rtol=1e-12)


def test_clipped_corrections_have_exact_gradients():
    """With the running statistics far from the batch's, r and d sit at their limits, constant near x:
    there the surrogate gradient is the true one, and finite differences confirm it."""
    rng = np.random.default_rng(1)
    bn = BatchRenorm1d(3, momentum=0.0, r_max=2.0, d_max=0.5, dtype="float64")  # momentum 0: the buffers stay
    _running(bn, [100.0, -100.0, 100.0], [1e4, 1e-4, 1e4])
    x = minigrad.tensor(rng.standard_normal((5, 3, 2)), requires_grad=True)
    with minigrad.no_grad():
        _, mean, var = minigrad.norm.functional.batch_norm_train(x.detach())
        r, d = bn.corrections(mean, var)
    np.testing.assert_array_equal(r.numpy(), [0.5, 2.0, 0.5])
    np.testing.assert_array_equal(d.numpy(), [-0.5, 0.5, -0.5])
    gradcheck(bn, [x], params=[bn.weight, bn.bias], atol=1e-6, rtol=1e-4)


def test_corrections_and_running_statistics_follow_the_paper():
    """x̂·r + d with the clipped r and d, then μ ← μ + α(μ_B - μ), σ ← σ + α(σ_B - σ)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 2)) * [3.0, 0.2] + [1.0, -2.0]
    bn = BatchRenorm1d(2, eps=1e-3, momentum=0.25, affine=False, r_max=1.5, d_max=1.0, dtype="float64")
    mu, var0 = np.array([0.5, -1.0]), np.array([4.0, 0.5])
    _running(bn, mu, var0)
    y = bn(minigrad.tensor(x)).numpy()
    mean_b, sigma_b = x.mean(axis=0), np.sqrt(x.var(axis=0) + 1e-3)
    sigma = np.sqrt(var0 + 1e-3)
    r = np.clip(sigma_b / sigma, 1 / 1.5, 1.5)
    d = np.clip((mean_b - mu) / sigma, -1.0, 1.0)
    np.testing.assert_allclose(y, (x - mean_b) / sigma_b * r + d, rtol=1e-12)
    np.testing.assert_allclose(bn.running_mean.numpy(), mu + 0.25 * (mean_b - mu), rtol=1e-12)
    new_sigma = sigma + 0.25 * (sigma_b - sigma)
    np.testing.assert_allclose(np.sqrt(bn.running_var.numpy() + 1e-3), new_sigma, rtol=1e-12)
    assert bn.num_batches_tracked.item() == 1


def test_eval_is_batch_norm_eval_and_folds():
    rng = np.random.default_rng(3)
    renorm = NormalizerTestCase.randomize(BatchRenorm1d(4, dtype="float64"), rng).eval()
    bn = BatchNorm1d(4, dtype="float64")
    bn.load_state_dict(renorm.state_dict())
    bn.eval()
    x = minigrad.tensor(rng.standard_normal((3, 4)))
    np.testing.assert_allclose(renorm(x).detach().numpy(), bn(x).detach().numpy(), rtol=1e-12)
    model = minigrad.nn.Sequential(minigrad.nn.Linear(2, 4, dtype="float64"), renorm).eval()
    folded = minigrad.norm.fold(model)
    assert isinstance(folded[1], minigrad.nn.Identity)
    z = minigrad.tensor(rng.standard_normal((5, 2)))
    np.testing.assert_allclose(folded(z).detach().numpy(), model(z).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("bad", [dict(r_max=0.5), dict(d_max=-1.0), dict(r_max=float("inf")), dict(d_max="5")])
def test_bad_limits_are_rejected(bad):
    with pytest.raises(ValueError, match="r_max|d_max"):
        BatchRenorm1d(3, **bad)
    bn = BatchRenorm1d(3, **{k: (lambda step, v=v: v) for k, v in bad.items()})
    with pytest.raises(ValueError, match="r_max|d_max"):
        bn(minigrad.randn(4, 3))
