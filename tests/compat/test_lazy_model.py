"""d2l's batch-normalised LeNet, built from Lazy modules, against PyTorch."""

import os
import sys

import numpy as np

import minigrad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import torch_and_batch, assert_same_state, numpy, same_weights  # noqa: E402


def make_lenet(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.LazyConv2d(6, kernel_size=5, padding=2), nn.LazyBatchNorm2d(), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.LazyConv2d(16, kernel_size=5), nn.LazyBatchNorm2d(), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.LazyLinear(24), nn.LazyBatchNorm1d(), nn.Sigmoid(),
        nn.LazyLinear(10),
    )


def test_lazy_lenet_matches_pytorch():
    torch, x, y = torch_and_batch((4, 1, 16, 16))
    tnet, net = make_lenet(torch), make_lenet(minigrad)
    tnet(torch.zeros(2, 1, 16, 16))  # d2l's dry run fixes the shapes
    net(minigrad.zeros(2, 1, 16, 16))
    tnet.double(), net.double()
    same_weights(tnet, net)
    topt = torch.optim.SGD(tnet.parameters(), lr=0.5)
    opt = minigrad.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        for lib, model, o in ((torch, tnet, topt), (minigrad, net, opt)):
            o.zero_grad()
            lib.nn.functional.cross_entropy(model(lib.tensor(x)), lib.tensor(y)).backward()
            o.step()
    assert_same_state(tnet, net)
    tnet.eval(), net.eval()
    np.testing.assert_allclose(numpy(net(minigrad.tensor(x))), numpy(tnet(torch.tensor(x))), rtol=1e-10)


def test_lazy_lenet_shapes_without_pytorch():
    net = make_lenet(minigrad)
    assert net(minigrad.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert net[9].weight.shape == (24, 16 * 5 * 5)
