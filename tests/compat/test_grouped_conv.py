"""A grouped-convolution net (kuangliu's MobileNet/ShuffleNet blocks need ``Conv2d(groups=...)``)."""

import inspect
import os
import sys

import pytest

import minigrad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import torch_and_batch, assert_same_grads, same_weights  # noqa: E402

pytestmark = pytest.mark.skipif(
    "groups" not in inspect.signature(minigrad.nn.Conv2d).parameters,
    reason="nn.Conv2d does not accept groups yet (issue 13.4, the threads branch); this runs once it does",
)


def make_net(torch):
    nn = torch.nn

    class Block(nn.Module):
        """Depthwise conv + pointwise conv, as in MobileNet."""

        def __init__(self, in_planes, out_planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, in_planes, 3, stride, 1, groups=in_planes, bias=False)
            self.bn1 = nn.BatchNorm2d(in_planes)
            self.conv2 = nn.Conv2d(in_planes, out_planes, 1, 1, 0, groups=2, bias=False)
            self.bn2 = nn.BatchNorm2d(out_planes)

        def forward(self, x):
            out = torch.nn.functional.relu(self.bn1(self.conv1(x)))
            return torch.nn.functional.relu(self.bn2(self.conv2(out)))

    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Block(4, 8, 2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).double()


def test_grouped_conv_net_matches_pytorch():
    torch, x, y = torch_and_batch((2, 3, 8, 8))
    tnet, net = make_net(torch), make_net(minigrad)
    same_weights(tnet, net)
    tl = torch.nn.functional.cross_entropy(tnet(torch.tensor(x)), torch.tensor(y))
    ml = minigrad.nn.functional.cross_entropy(net(minigrad.tensor(x)), minigrad.tensor(y))
    tl.backward(), ml.backward()
    assert ml.item() == pytest.approx(tl.item(), rel=1e-10)
    assert_same_grads(tnet, net)
