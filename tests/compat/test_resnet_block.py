"""yunjey's / kuangliu's BN ResNet block: ``out += residual`` and ``nn.ReLU(inplace=True)``, against PyTorch."""

import os
import sys

import numpy as np

import minigrad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import torch_and_batch, assert_same_grads, assert_same_state, numpy, same_weights  # noqa: E402


def make_resnet(torch):
    nn = torch.nn

    def conv3x3(in_channels, out_channels, stride=1):
        return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)

    class ResidualBlock(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1, downsample=None):
            super().__init__()
            self.conv1 = conv3x3(in_channels, out_channels, stride)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = conv3x3(out_channels, out_channels)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.downsample = downsample

        def forward(self, x):
            residual = x
            out = self.conv1(x)
            out = self.bn1(out)
            out = self.relu(out)
            out = self.conv2(out)
            out = self.bn2(out)
            if self.downsample:
                residual = self.downsample(x)
            out += residual
            out = self.relu(out)
            return out

    class ResNet(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = conv3x3(3, 4)
            self.bn = nn.BatchNorm2d(4)
            self.relu = nn.ReLU(True)
            down = nn.Sequential(conv3x3(4, 8, stride=2), nn.BatchNorm2d(8))
            self.layer1 = nn.Sequential(ResidualBlock(4, 4), ResidualBlock(4, 8, 2, down))
            self.avg_pool = nn.AvgPool2d(4)
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            out = self.relu(self.bn(self.conv(x)))
            out = self.layer1(out)
            out = self.avg_pool(out)
            out = out.view(out.size(0), -1)
            return self.fc(out)

    return ResNet().double()


def run(torch, model, x, y, steps=3):
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    losses = []
    model.train()
    for _ in range(steps):
        outputs = model(torch.tensor(x))
        loss = criterion(outputs, torch.tensor(y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    _, predicted = torch.max(outputs.data, 1)
    return losses, predicted


def test_resnet_block_matches_pytorch():
    torch, x, y = torch_and_batch((2, 3, 8, 8))  # a batch of exactly 2 (issue 13.3)
    tnet, net = make_resnet(torch), make_resnet(minigrad)
    same_weights(tnet, net)
    theirs, ours = run(torch, tnet, x, y), run(minigrad, net, x, y)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-10)
    assert ours[1].tolist() == theirs[1].tolist() and ours[1].shape == (2,)
    assert_same_grads(tnet, net)
    assert_same_state(tnet, net)
    tnet.eval(), net.eval()
    with torch.no_grad(), minigrad.no_grad():
        np.testing.assert_allclose(numpy(net(minigrad.tensor(x))), numpy(tnet(torch.tensor(x))), rtol=1e-10)


def test_inplace_relu_in_eval_changes_its_input_like_pytorch():
    net = make_resnet(minigrad).eval()
    with minigrad.no_grad():
        out = net(minigrad.randn(1, 3, 8, 8, dtype="float64"))
    assert out.shape == (1, 10)
