"""Folding eval-mode normalizers for inference (``minigrad.norm.fold``)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import minigrad
from minigrad import nn
from minigrad.norm import ChannelAffine, Folded, FoldError, fold


def host(t):
    return t.detach().numpy().astype(np.float64)


def trained(model, x_shape, device, dtype, rng, steps=3):
    """Run a few training batches (non-trivial running statistics), randomize γ/β, switch to eval."""
    for _ in range(steps):
        model(minigrad.tensor(rng.standard_normal(x_shape) * 2 + 1, dtype=dtype, device=device))
    with minigrad.no_grad():
        for m in model.modules():
            if isinstance(m, minigrad.norm.Normalizer) and m.weight is not None:
                m.weight.array[...] = m.weight.backend.asarray(rng.uniform(0.5, 2, m.weight.shape), dtype=dtype)
                m.bias.array[...] = m.bias.backend.asarray(rng.standard_normal(m.bias.shape), dtype=dtype)
    return model.eval()


def assert_same_outputs(model, folded, x, dtype):
    with minigrad.no_grad():
        expected, got = host(model(x)), host(folded(x))
    if dtype == "float64":
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11)
    else:
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


def state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linear_and_conv_followed_by_batchnorm(dtype, device, rng):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, device=device, dtype=dtype), nn.BatchNorm2d(4, device=device, dtype=dtype),
        nn.ReLU(),
        nn.Conv2d(4, 2, 3, bias=False, device=device, dtype=dtype), nn.BatchNorm2d(2, device=device, dtype=dtype),
        nn.Flatten(),
        nn.Linear(2 * 3 * 3, 6, device=device, dtype=dtype), nn.BatchNorm1d(6, device=device, dtype=dtype),
        nn.Tanh(),
        nn.Linear(6, 5, bias=False, device=device, dtype=dtype), nn.BatchNorm1d(5, device=device, dtype=dtype),
    )
    trained(model, (8, 3, 5, 5), device, dtype, rng)
    before = state(model)
    folded = fold(model)
    kinds = [type(m).__name__ for m in folded]
    # After a Linear the merge holds for 2-D data only: its marker checks the rank (Folded is an Identity).
    assert kinds == ["Conv2d", "Identity", "ReLU", "Conv2d", "Identity", "Flatten", "Linear", "Folded", "Tanh",
                     "Linear", "Folded"]
    assert folded[3].bias is not None and folded[9].bias is not None  # a bias was created where there was none
    assert_same_outputs(model, folded, minigrad.tensor(rng.standard_normal((4, 3, 5, 5)), dtype=dtype,
                                                       device=device), dtype)
    after = state(model)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=f"fold modified the original's {k}")
    assert [type(m).__name__ for m in model][1] == "BatchNorm2d"


def test_nested_sequentials_fold_in_execution_order(device, rng):
    model = nn.Sequential(
        nn.Sequential(nn.Linear(4, 3, device=device, dtype="float64")),  # the Linear ends the inner chain ...
        nn.Sequential(nn.BatchNorm1d(3, device=device, dtype="float64"), nn.ReLU()),  # ... its BN starts the next
        nn.Sequential(OrderedDict(fc=nn.Linear(3, 2, device=device, dtype="float64"),
                                  bn=nn.BatchNorm1d(2, device=device, dtype="float64"))),
    )
    trained(model, (10, 4), device, "float64", rng)
    folded = fold(model)
    assert isinstance(folded[1][0], nn.Identity) and isinstance(folded[2].bn, nn.Identity)
    assert_same_outputs(model, folded, minigrad.tensor(rng.standard_normal((5, 4)), device=device), "float64")


def test_standalone_batchnorm_becomes_a_channel_affine(device, rng):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn_in = nn.BatchNorm2d(3, device=device, dtype="float64")
            self.conv = nn.Conv2d(3, 2, 1, device=device, dtype="float64")
            self.bn = nn.BatchNorm2d(2, device=device, dtype="float64")  # not in a Sequential: order unknown

        def forward(self, x):
            return self.bn(self.conv(self.bn_in(x)).relu())

    model = trained(Net(), (6, 3, 4, 4), device, "float64", rng)
    folded = fold(model)
    assert isinstance(folded.bn_in, ChannelAffine) and isinstance(folded.bn, ChannelAffine)
    assert isinstance(folded.conv, nn.Conv2d)
    assert_same_outputs(model, folded, minigrad.tensor(rng.standard_normal((3, 3, 4, 4)), device=device), "float64")
    assert list(folded.bn.state_dict()) == ["scale", "shift"] and list(folded.bn.parameters()) == []


def test_a_batchnorm_model_folds_to_its_multiply_add(device, rng):
    bn = trained(nn.BatchNorm1d(3, device=device, dtype="float64"), (7, 3, 2), device, "float64", rng)
    folded = fold(bn)
    assert isinstance(folded, ChannelAffine)
    assert_same_outputs(bn, folded, minigrad.tensor(rng.standard_normal((2, 3, 2)), device=device), "float64")


def test_batchnorm_after_a_nonlinearity_or_first_is_not_merged(device, rng):
    model = nn.Sequential(nn.BatchNorm1d(4, device=device), nn.Linear(4, 4, device=device), nn.ReLU(),
                          nn.BatchNorm1d(4, device=device))
    trained(model, (9, 4), device, "float32", rng)
    folded = fold(model)
    assert [type(m).__name__ for m in folded] == ["ChannelAffine", "Linear", "ReLU", "ChannelAffine"]
    assert_same_outputs(model, folded, minigrad.tensor(rng.standard_normal((3, 4)), dtype="float32", device=device),
                        "float32")


def test_shared_layer_is_not_modified(device, rng):
    shared = nn.Linear(3, 3, device=device, dtype="float64")
    model = nn.Sequential(shared, nn.BatchNorm1d(3, device=device, dtype="float64"), shared)
    trained(model, (8, 3), device, "float64", rng)
    folded = fold(model)
    assert isinstance(folded[1], ChannelAffine) and folded[0] is folded[2]
    assert_same_outputs(model, folded, minigrad.tensor(rng.standard_normal((4, 3)), device=device), "float64")


def test_other_normalizers_are_kept(device, rng):
    model = nn.Sequential(nn.Linear(4, 6, device=device, dtype="float64"), nn.LayerNorm(6, device=device,
                          dtype="float64"), nn.Linear(6, 6, device=device, dtype="float64"),
                          nn.BatchNorm1d(6, device=device, dtype="float64"))
    trained(model, (5, 4), device, "float64", rng)
    folded = fold(model)
    assert [type(m).__name__ for m in folded] == ["Linear", "LayerNorm", "Linear", "Folded"]
    assert_same_outputs(model, folded, minigrad.tensor(rng.standard_normal((3, 4)), device=device), "float64")


def test_instance_norm_with_running_statistics_folds_too(device, rng):
    model = nn.Sequential(nn.Conv2d(2, 3, 1, device=device, dtype="float64"),
                          nn.InstanceNorm2d(3, affine=True, track_running_stats=True, device=device, dtype="float64"))
    trained(model, (4, 2, 3, 3), device, "float64", rng)
    folded = fold(model)
    assert isinstance(folded[1], nn.Identity)
    assert_same_outputs(model, folded, minigrad.tensor(rng.standard_normal((2, 2, 3, 3)), device=device), "float64")


def test_linear_then_batchnorm1d_on_3d_input_is_refused_not_wrong(device, rng):
    # (N, C, L) data: the Linear acts on L, BatchNorm1d on C; merging scaled L (max error 1.32 before).
    model = nn.Sequential(nn.Linear(4, 3, device=device, dtype="float64"),
                          nn.BatchNorm1d(3, device=device, dtype="float64"))
    trained(model, (6, 3, 4), device, "float64", rng)
    folded = fold(model)
    assert isinstance(folded[1], Folded) and isinstance(folded[1], nn.Identity)
    x2, x3 = (minigrad.tensor(rng.standard_normal(s), device=device) for s in ((5, 4), (5, 3, 4)))
    with minigrad.no_grad():
        expected = model(x3)
    with pytest.raises(FoldError, match=r"BatchNorm1d into Linear.*only for 2D input.*got 3D input of shape "
                                        r"\(5, 3, 3\)"):
        folded(x3)
    assert host(expected).shape == (5, 3, 3)
    # ... while the 2-D data it was merged for still gives the model's numbers
    trained(model.train(), (6, 4), device, "float64", rng)
    assert_same_outputs(model, fold(model), x2, "float64")


@pytest.mark.parametrize("norm, x_shape", [
    (lambda d: nn.BatchNorm2d(3, device=d, dtype="float64"), (2, 3, 5, 4)),
    (lambda d: nn.InstanceNorm1d(3, affine=True, track_running_stats=True, device=d, dtype="float64"), (2, 3, 4)),
    (lambda d: nn.InstanceNorm2d(3, affine=True, track_running_stats=True, device=d, dtype="float64"), (3, 5, 4)),
], ids=["Linear+BatchNorm2d", "Linear+InstanceNorm1d", "Linear+InstanceNorm2d-unbatched"])
def test_a_normalizer_on_another_axis_than_the_linear_features_is_not_merged(norm, x_shape, device, rng):
    # The Linear's 3 features are on the last axis; these normalizers scale axis 1 (axis 0 unbatched), which
    # also has length 3 here, so a merge would run and be wrong.
    model = nn.Sequential(nn.Linear(4, 3, device=device, dtype="float64"), norm(device))
    trained(model, x_shape, device, "float64", rng)
    folded = fold(model)
    assert isinstance(folded[1], ChannelAffine), type(folded[1]).__name__
    assert_same_outputs(model, folded, minigrad.tensor(rng.standard_normal(x_shape), device=device), "float64")


def test_refuses_a_model_in_training_mode(device):
    model = nn.Sequential(nn.Linear(2, 2, device=device), nn.BatchNorm1d(2, device=device)).eval()
    model[1].train()
    with pytest.raises(FoldError, match=r"eval mode.*'1' \(BatchNorm1d\) is in training mode.*model.eval\(\)"):
        fold(model)
    with pytest.raises(FoldError, match="training mode"):
        fold(model.train())


def test_refuses_batchnorm_without_running_statistics(device):
    model = nn.Sequential(nn.Linear(2, 2, device=device), nn.BatchNorm1d(2, track_running_stats=False,
                                                                         device=device)).eval()
    with pytest.raises(FoldError, match="no running statistics.*track_running_stats=False"):
        fold(model)


def test_rejects_non_modules():
    with pytest.raises(TypeError, match="Module"):
        fold(lambda x: x)


def test_folded_model_is_differentiable_and_saveable(device, rng, tmp_path):
    model = nn.Sequential(nn.Linear(3, 4, device=device), nn.BatchNorm1d(4, device=device))
    trained(model, (6, 3), device, "float32", rng)
    folded = fold(model)
    x = minigrad.tensor(rng.standard_normal((2, 3)), dtype="float32", device=device, requires_grad=True)
    folded(x).sum().backward()
    assert x.grad is not None and folded[0].weight.grad is not None
    path = tmp_path / "folded.mg"
    minigrad.save(folded.state_dict(), path)
    again = fold(model)
    again.load_state_dict(minigrad.load(path))
    assert_same_outputs(folded, again, x.detach(), "float32")
