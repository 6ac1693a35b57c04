"""Layers: shapes, PyTorch's initialisation, gradients, train/eval behaviour."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from minigrad import nn
from minigrad.testing import gradcheck
from minigrad.testing.strategies import arrays


def test_linear_init_bounds_follow_pytorch():
    lin = nn.Linear(400, 50)
    bound = 1 / math.sqrt(400)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(b).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound


def test_conv_init_uses_fan_in():
    conv = nn.Conv2d(3, 8, 5)
    bound = 1 / math.sqrt(3 * 25)
    assert np.abs(conv.weight.detach().numpy()).max() <= bound


@given(data=st.data(), bias=st.booleans())
def test_linear_and_conv_layers_gradcheck(data, bias, device):
    lin = nn.Linear(3, 2, bias=bias).double().to(device)
    x = mg.tensor(data.draw(arrays((4, 3))), device=device, requires_grad=True)
    assert gradcheck(lin, [x], params=list(lin.parameters()))
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=bias).double().to(device)
    xi = mg.tensor(data.draw(arrays((1, 2, 5, 4))), device=device, requires_grad=True)
    assert conv(xi).shape == (1, 3, 3, 2)
    assert gradcheck(conv, [xi], params=list(conv.parameters()))


def test_small_cnn_shapes(device):
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))
    net.to(device)
    out = net(mg.randn(2, 1, 28, 28, device=device))
    assert out.shape == (2, 10)
    nn.functional.cross_entropy(out, mg.tensor([1, 2], device=device)).backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())


def test_activations_and_pools_match_functional(device):
    x = mg.randn(2, 3, 4, 4, device=device)
    np.testing.assert_array_equal(nn.ReLU()(x).numpy_view(), x.relu().numpy_view())
    np.testing.assert_array_equal(nn.Sigmoid()(x).numpy_view(), x.sigmoid().numpy_view())
    np.testing.assert_array_equal(nn.Tanh()(x).numpy_view(), x.tanh().numpy_view())
    assert nn.AvgPool2d(2)(x).shape == (2, 3, 2, 2)
    assert nn.MaxPool2d(3, stride=1, padding=1)(x).shape == (2, 3, 4, 4)
    assert nn.Flatten()(x).shape == (2, 48)
    np.testing.assert_allclose(nn.Softmax(1)(x).numpy_view().sum(1), 1, rtol=1e-6)


def test_dropout_module_respects_mode(device):
    drop = nn.Dropout(0.5)
    x = mg.ones(1000, device=device)
    assert (drop(x).numpy_view() == 0).any()
    drop.eval()
    assert drop(x) is x


def test_losses(device):
    logits = mg.randn(4, 3, device=device)
    target = mg.tensor([0, 1, 2, 1], device=device)
    np.testing.assert_allclose(nn.CrossEntropyLoss()(logits, target).item(),
                               nn.functional.cross_entropy(logits, target).item())
    assert nn.CrossEntropyLoss(reduction="none")(logits, target).shape == (4,)
    np.testing.assert_allclose(nn.NLLLoss()(logits.log_softmax(1), target).item(),
                               nn.functional.cross_entropy(logits, target).item(), rtol=1e-6)
    assert nn.MSELoss()(logits, logits).item() == 0.0
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)
    with pytest.raises(TypeError, match="kernel_size"):
        nn.Conv2d(1, 2, (3,))
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(2.0)


def test_init_functions():
    w = mg.empty(200, 100)
    nn.init.xavier_uniform_(w)
    assert np.abs(w.numpy()).max() <= math.sqrt(6 / 300)
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    assert abs(w.numpy().std() - math.sqrt(2 / 100)) < 0.01
    nn.init.constant_(w, 0.5)
    assert (w.numpy() == 0.5).all()
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.init.calculate_gain("swish")


def test_mlp_training_reduces_loss(device):
    mg.manual_seed(0)
    x = mg.randn(64, 5, device=device)
    y = (x[:, 0] > 0).long()
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2)).to(device)
    opt = mg.optim.SGD(net.parameters(), lr=0.5)
    first = None
    for _ in range(50):
        loss = nn.functional.cross_entropy(net(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
