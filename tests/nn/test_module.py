"""Module: registration, traversal, modes, state dicts, device/dtype moves, repr."""

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.body = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
        self.scale = nn.Parameter(mg.ones(1))
        self.register_buffer("steps", mg.zeros(1, dtype="int64"))
        self.register_buffer("cache", mg.zeros(2), persistent=False)
        self.note = "plain attribute"

    def forward(self, x):
        return self.body(self.fc1(x)) * self.scale


def test_registration_and_traversal():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "fc1.weight", "fc1.bias", "body.0.weight", "body.0.bias"]
    assert [n for n, _ in net.named_buffers()] == ["steps", "cache"]
    assert [n for n, _ in net.named_modules()] == ["", "fc1", "body", "body.0", "body.1"]
    assert len(list(net.children())) == 2
    assert net.note == "plain attribute"
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        net.missing


def test_shared_parameters_are_listed_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, lin)
    assert len(list(seq.parameters())) == 2


def test_assignment_rules():
    net = Net()
    with pytest.raises(TypeError, match="parameter 'scale'"):
        net.scale = mg.ones(1)
    net.scale = None
    assert "scale" not in [n for n, _ in net.named_parameters()]
    with pytest.raises(TypeError, match="buffer"):
        net.steps = 3

    class Early(nn.Module):
        def __init__(self):
            self.x = 1

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Early()


def test_train_eval_is_per_module_and_recursive():
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.body.train()
    assert net.body[0].training and not net.fc1.training and not net.training


def test_state_dict_round_trip_and_checks():
    net, other = Net(), Net()
    sd = net.state_dict()
    assert list(sd) == ["scale", "steps", "fc1.weight", "fc1.bias", "body.0.weight", "body.0.bias"]
    assert "cache" not in sd  # non-persistent buffer
    other.load_state_dict(sd)
    for (n1, p1), (n2, p2) in zip(net.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(p1.detach().numpy(), p2.detach().numpy())
    bad = dict(sd)
    bad["fc1.weight"] = mg.zeros(2, 2)
    with pytest.raises(ValueError, match="size mismatch for 'fc1.weight'"):
        other.load_state_dict(bad)
    partial = {k: v for k, v in sd.items() if k != "scale"}
    partial["extra"] = mg.zeros(1)
    with pytest.raises(KeyError, match="missing keys: \\['scale'\\].*unexpected keys: \\['extra'\\]"):
        other.load_state_dict(partial)
    missing, unexpected = other.load_state_dict(partial, strict=False)
    assert missing == ["scale"] and unexpected == ["extra"]


def test_failed_load_changes_nothing():
    net = Net()
    before = net.fc1.weight.numpy_view().copy()
    sd = {k: mg.zeros_like(v) for k, v in net.state_dict().items()}
    sd["body.0.bias"] = mg.zeros(7)
    with pytest.raises(ValueError):
        net.load_state_dict(sd)
    np.testing.assert_array_equal(net.fc1.weight.numpy_view(), before)


def test_dtype_moves_keep_parameter_identity():
    net = Net()
    w = net.fc1.weight
    net(mg.ones(2, 4)).sum().backward()
    net.double()
    assert net.fc1.weight is w and w.dtype == np.float64 and w.grad.dtype == np.float64
    assert net.steps.dtype == np.int64  # integer buffers are not cast
    assert net(mg.ones(2, 4, dtype="float64")).dtype == np.float64


def test_zero_grad():
    net = Net()
    net(mg.ones(2, 4)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(float(np.abs(p.grad.numpy()).sum()) == 0 for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_repr_is_readable():
    text = repr(Net())
    assert "(fc1): Linear(in_features=4, out_features=3, bias=True)" in text
    assert "(body): Sequential(\n    (0): Linear" in text


def test_sequential_indexing_and_apply():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert isinstance(seq[1], nn.ReLU) and len(seq) == 3 and len(seq[:2]) == 2
    seen = []
    seq.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "ReLU", "Linear", "Sequential"]
    with pytest.raises(TypeError, match="Sequential takes Modules"):
        nn.Sequential(nn.ReLU(), 3)
