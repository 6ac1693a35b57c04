"""Ghost Batch Normalization's tests: minigrad's normalizer contract through the public ``NormalizerTestCase``,
and the paper's properties.

Run with ``pytest`` once the package (and ``minigrad-bn[test]``) is installed.
"""

import numpy as np
import pytest

import minigrad
from minigrad.norm import BatchNorm1d, BatchNorm2d
from minigrad.testing import NormalizerTestCase
from minigrad_ghostbn import GhostBatchNorm1d, GhostBatchNorm2d


class TestGhostBatchNorm1d(NormalizerTestCase):
    """The contract on GhostBatchNorm1d; its ghost batches are declared by its ``statistics_view``, so the
    sample-independence check compares whole ghost batches."""

    normalizer = GhostBatchNorm1d


class TestGhostBatchNorm2d(NormalizerTestCase):
    """The contract on GhostBatchNorm2d."""

    normalizer = GhostBatchNorm2d


def test_each_ghost_batch_is_batch_norm_of_its_own():
    """Output and gradients: BatchNorm applied to each ghost batch separately, the parameters shared."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 2, 2)) * 2 + 1
    dy = rng.standard_normal(x.shape)
    ghost = NormalizerTestCase.randomize(GhostBatchNorm2d(3, virtual_batch_size=2, dtype="float64"), rng)
    bn = BatchNorm2d(3, dtype="float64")
    bn.load_state_dict(ghost.state_dict())
    xg = minigrad.tensor(x, requires_grad=True)
    ghost(xg).backward(minigrad.tensor(dy))
    xb = minigrad.tensor(x, requires_grad=True)
    for g in range(3):
        bn(xb[2 * g:2 * g + 2]).backward(minigrad.tensor(dy[2 * g:2 * g + 2]))
    np.testing.assert_allclose(xg.grad.numpy(), xb.grad.numpy(), rtol=1e-10, atol=1e-12)
    for p, q in ((ghost.weight, bn.weight), (ghost.bias, bn.bias)):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_running_statistics_move_once_per_ghost_batch_in_order():
    """Hoffer et al.'s Algorithm 1: μ ← (1 - η)μ + η·μ_g for g = 1..G, BatchNorm's rule (unbiased variance)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 2)) * [1.0, 3.0] + [0.5, -1.0]
    ghost = GhostBatchNorm1d(2, momentum=0.2, virtual_batch_size=2, dtype="float64")
    ghost(minigrad.tensor(x))
    mean, var = np.zeros(2), np.ones(2)
    for g in range(4):
        chunk = x[2 * g:2 * g + 2]
        mean = 0.8 * mean + 0.2 * chunk.mean(axis=0)
        var = 0.8 * var + 0.2 * chunk.var(axis=0, ddof=1)
    np.testing.assert_allclose(ghost.running_mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(ghost.running_var.numpy(), var, rtol=1e-12)
    assert ghost.num_batches_tracked.item() == 4


@pytest.mark.parametrize("size", [None, 8])
def test_one_ghost_batch_is_batch_norm(size):
    rng = np.random.default_rng(2)
    x = minigrad.tensor(rng.standard_normal((8, 3, 5)))
    ghost, bn = GhostBatchNorm1d(3, virtual_batch_size=size, dtype="float64"), BatchNorm1d(3, dtype="float64")
    np.testing.assert_allclose(ghost(x).detach().numpy(), bn(x).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ghost.running_var.numpy(), bn.running_var.numpy(), rtol=1e-12)


def test_the_batch_must_be_a_multiple_of_the_ghost_size():
    ghost = GhostBatchNorm2d(3, virtual_batch_size=4)
    with pytest.raises(ValueError, match=r"batch size \(6\) must be a multiple of virtual_batch_size \(4\)"):
        ghost(minigrad.randn(6, 3, 2, 2))
    ghost.eval()  # inference uses the running statistics: any batch size
    assert ghost(minigrad.randn(6, 3, 2, 2)).shape == (6, 3, 2, 2)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="virtual_batch_size"):
            GhostBatchNorm2d(3, virtual_batch_size=bad)
