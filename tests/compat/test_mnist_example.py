"""pytorch/examples mnist/main.py (a conv net with dropout, Adadelta and StepLR, fed by a DataLoader),
written once and run with ``torch`` being PyTorch and being minigrad."""

import os
import sys

import numpy as np
import pytest

import minigrad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import assert_same_state, same_weights  # noqa: E402


def make_net(torch, p1=0.25, p2=0.5):
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, 1)
            self.conv2 = nn.Conv2d(4, 8, 3, 1)
            self.dropout1 = nn.Dropout(p1)
            self.dropout2 = nn.Dropout(p2)
            self.fc1 = nn.Linear(8 * 4 * 4, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    return Net().double()


def train(torch, model, device, train_loader, optimizer):
    model.train()
    losses = []
    for data, target in train_loader:
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = torch.nn.functional.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def evaluate(torch, model, device, test_loader):
    model.eval()
    test_loss, correct = 0, 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += torch.nn.functional.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    return test_loss / len(test_loader.dataset), correct


def main(torch, x, y, model, epochs=2, shuffle=False):
    device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else "cpu"
    if torch is minigrad:
        device = "cpu"
    dataset = torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y))
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=shuffle)
    test_loader = torch.utils.data.DataLoader(dataset, batch_size=16)
    model = model.to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    history = []
    for _ in range(epochs):
        losses = train(torch, model, device, train_loader, optimizer)
        history.append((losses, *evaluate(torch, model, device, test_loader), scheduler.get_last_lr()[0]))
        scheduler.step()
    return history


def _data(n=32):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n)
    x = rng.standard_normal((n, 1, 12, 12)) * 0.3
    x[np.arange(n), 0, y, y] += 3.0  # a learnable digit: a bright pixel on the diagonal
    return x, y


def test_the_script_runs_with_minigrad_and_learns():
    minigrad.manual_seed(0)
    x, y = _data()
    history = main(minigrad, x, y, make_net(minigrad), epochs=3, shuffle=True)
    first, last = np.mean(history[0][0]), np.mean(history[-1][0])
    assert last < first and all(0 <= h[2] <= len(y) for h in history)
    assert [h[3] for h in history] == pytest.approx([1.0, 0.7, 0.49])


def test_the_script_matches_pytorch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x, y = _data()
    # Dropout's random masks differ between the frameworks; everything else is compared exactly.
    tnet, net = make_net(torch, 0.0, 0.0), make_net(minigrad, 0.0, 0.0)
    same_weights(tnet, net)
    theirs, ours = main(torch, x, y, tnet), main(minigrad, x, y, net)
    for (tl, tloss, tcorrect, tlr), (ol, oloss, ocorrect, olr) in zip(theirs, ours):
        np.testing.assert_allclose(ol, tl, rtol=1e-9)
        assert oloss == pytest.approx(tloss, rel=1e-9) and ocorrect == tcorrect and olr == pytest.approx(tlr)
    assert_same_state(tnet, net, rtol=1e-8, atol=1e-10)
