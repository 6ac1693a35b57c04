"""softmax, log_softmax, cross_entropy, nll_loss and mse_loss."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
import minigrad.nn.functional as F
from minigrad.testing import gradcheck
from minigrad.testing.strategies import arrays


def _log_softmax(a, axis):
    m = a.max(axis, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis, keepdims=True))


@given(a=st.tuples(st.integers(1, 4), st.integers(1, 5)).flatmap(arrays), axis=st.sampled_from([0, 1, -1]))
def test_softmax_and_log_softmax(a, axis, device):
    x = mg.tensor(a, device=device, requires_grad=True)
    np.testing.assert_allclose(x.log_softmax(axis).detach().cpu().numpy(), _log_softmax(a, axis), atol=1e-12)
    np.testing.assert_allclose(x.softmax(axis).detach().cpu().numpy(), np.exp(_log_softmax(a, axis)), atol=1e-12)
    assert gradcheck(lambda t: t.log_softmax(axis), [x])
    assert gradcheck(lambda t: t.softmax(axis), [x])


def test_softmax_is_stable_for_huge_logits(device):
    x = mg.tensor([[1000.0, 0.0, -1000.0]], device=device)
    np.testing.assert_allclose(x.softmax().cpu().numpy(), [[1.0, 0.0, 0.0]])
    assert np.isfinite(x.log_softmax().cpu().numpy()).all()


def _ce_reference(a, t, weight, ignore_index, reduction, smoothing):
    logp = _log_softmax(a, 1)
    n, c = a.shape
    w = np.ones(c) if weight is None else weight
    valid = t != ignore_index
    ts = np.where(valid, t, 0)
    per = -(logp[np.arange(n), ts] * w[ts]) * valid
    if smoothing:
        per = (1 - smoothing) * per + smoothing * (-(logp * w).sum(1) / c) * valid
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / (w[ts] * valid).sum()


@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]), weighted=st.booleans(),
       smoothing=st.sampled_from([0.0, 0.1]), ignore=st.booleans())
def test_cross_entropy(data, reduction, weighted, smoothing, ignore, device):
    n, c = data.draw(st.integers(1, 5)), data.draw(st.integers(2, 5))
    a = data.draw(arrays((n, c)))
    t = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    ignore_index = int(t[0]) if ignore and n > 1 else -100
    if ignore_index != -100 and np.all(t == ignore_index) and reduction == "mean":
        t[-1] = (ignore_index + 1) % c
    weight = data.draw(arrays((c,), low=0.5, high=2.0)) if weighted else None
    x = mg.tensor(a, device=device, requires_grad=True)
    target = mg.tensor(t, device=device)
    w = mg.tensor(weight, device=device) if weighted else None

    def f(inp):
        return F.cross_entropy(inp, target, weight=w, ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=smoothing)

    np.testing.assert_allclose(f(x).detach().cpu().numpy(),
                               _ce_reference(a, t, weight, ignore_index, reduction, smoothing), rtol=1e-10)
    assert gradcheck(f, [x])
    if not weighted and not smoothing and reduction != "none":
        expected = F.nll_loss(x.log_softmax(1), target, ignore_index=ignore_index, reduction=reduction)
        np.testing.assert_allclose(expected.detach().cpu().numpy(), f(x).detach().cpu().numpy(), rtol=1e-10)
        assert gradcheck(lambda inp: F.nll_loss(inp.log_softmax(1), target, ignore_index=ignore_index,
                                                reduction=reduction), [x])


def test_cross_entropy_errors(device):
    x = mg.zeros(3, 4, device=device)
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(x, mg.zeros(3, device=device))
    with pytest.raises(ValueError, match="shape \\(3,\\)"):
        F.cross_entropy(x, mg.zeros(2, dtype="int64", device=device))
    with pytest.raises(IndexError, match="out of range for 4 classes"):
        F.cross_entropy(x, mg.tensor([0, 4, 1], device=device))
    with pytest.raises(ValueError, match="\\(N, C\\)"):
        F.cross_entropy(mg.zeros(3, device=device), mg.tensor([0, 1, 2], device=device))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, mg.tensor([0, 1, 2], device=device), reduction="avg")


@given(a=st.tuples(st.integers(1, 4), st.integers(1, 4)).flatmap(arrays), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_mse_loss(a, reduction, device):
    x = mg.tensor(a, device=device, requires_grad=True)
    y = mg.tensor(a[::-1].copy(), device=device)
    per = (a - a[::-1]) ** 2
    expected = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    np.testing.assert_allclose(F.mse_loss(x, y, reduction).detach().cpu().numpy(), expected, rtol=1e-12)
    assert gradcheck(lambda t: F.mse_loss(t, y, reduction), [x])


def test_cross_entropy_matches_torch(device):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 5))
    t = np.array([0, 4, 2, 2, 1, 3])
    w = rng.uniform(0.5, 2.0, 5)
    x = mg.tensor(a, device=device, requires_grad=True)
    loss = F.cross_entropy(x, mg.tensor(t, device=device), weight=mg.tensor(w, device=device), label_smoothing=0.2)
    loss.backward()
    tx = torch.tensor(a, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tx, torch.tensor(t), weight=torch.tensor(w), label_smoothing=0.2)
    tl.backward()
    assert loss.item() == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(x.grad.cpu().numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_cross_entropy_over_no_counted_rows(device):
    # every target ignored: the mean is 0/0 = NaN as in PyTorch, quietly; the sum is 0; gradients are 0
    x = mg.tensor(np.ones((3, 4), np.float32), device=device, requires_grad=True)
    t = mg.tensor(np.full(3, 2, np.int64), device=device)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean = F.cross_entropy(x, t, ignore_index=2)
    assert np.isnan(float(mean.item()))
    total = F.cross_entropy(x, t, ignore_index=2, reduction="sum")
    assert float(total.item()) == 0.0
    total.backward()
    np.testing.assert_array_equal(x.grad.cpu().numpy(), np.zeros((3, 4), np.float32))


@pytest.mark.parametrize("target_dtype", [np.int64, np.int32, np.uint8])
def test_cross_entropy_fused_path_matches_the_general_one(target_dtype, device):
    # weight=None takes the fused kernels; all-ones class weights take the general NumPy path: one answer
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 5)).astype(np.float32)
    t = mg.tensor(rng.integers(0, 5, 6).astype(target_dtype), device=device)
    results = []
    for w in (None, mg.ones(5, device=device)):
        x = mg.tensor(a, device=device, requires_grad=True)
        loss = F.cross_entropy(x, t, weight=w)
        loss.backward()
        results.append((loss.item(), x.grad.cpu().numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-7)
