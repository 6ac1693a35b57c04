"""A new backend is one class and one registration (issue 11.2).

A toy NumPy backend (a subclass of the reference ``Backend`` that counts
its kernel calls) is registered as device type "toy"; the public API then
creates tensors, trains a small model and round-trips a checkpoint on it
without any code outside ``minigrad.backends`` knowing about it.
"""

from __future__ import annotations

import sys
import types
from collections import Counter

import numpy as np
import pytest

import minigrad as mg
from minigrad import backends, nn, optim
from minigrad.backends.base import Backend


class ToyBackend(Backend):
    """The reference kernels, counting the fused ones it is asked for."""

    name = "toy"
    calls: Counter = Counter()

    def batch_norm_forward_train(self, *args):
        type(self).calls["batch_norm_forward_train"] += 1
        return super().batch_norm_forward_train(*args)

    def sgd_update(self, *args):
        type(self).calls["sgd_update"] += 1
        return super().sgd_update(*args)


@pytest.fixture
def toy(backend_tables, monkeypatch):
    module = types.ModuleType("minigrad_toy_backend")
    module.ToyBackend = ToyBackend
    monkeypatch.setitem(sys.modules, module.__name__, module)
    ToyBackend.calls.clear()
    backends.register_backend("toy", "minigrad_toy_backend:ToyBackend")
    return "toy"


def test_a_registered_backend_is_a_device(toy):
    assert "toy" in backends.device_types()
    x = mg.zeros(2, device="toy")
    assert isinstance(x.backend, ToyBackend) and x.device == "toy:0" and x.device == "toy"
    assert mg.tensor([1.0, 2.0], device="toy").backend is x.backend
    assert (x + 1).to("cpu").tolist() == [1.0, 1.0]
    host = x.to("cpu")
    host.array[0] = 5  # a copy, though both backends keep NumPy arrays
    assert x.tolist() == [0.0, 0.0]
    assert mg.ones(3).to("toy").backend is x.backend
    with pytest.raises(ValueError, match="unknown device type 'toyz'.*'toy'"):
        mg.zeros(2, device="toyz")


def make_model():
    mg.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).double()


def train(model, device, steps=3):
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    x = mg.tensor(rng.standard_normal((16, 4)), device=device)
    y = mg.tensor(rng.integers(0, 3, 16), device=device)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return loss


def test_a_training_step_on_a_registered_backend(toy, tmp_path):
    reference = make_model()
    train(reference, "cpu")
    model = make_model().to(toy)
    loss = train(model, toy)
    assert loss.device == toy
    assert ToyBackend.calls["batch_norm_forward_train"] == 3 and ToyBackend.calls["sgd_update"] > 0
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert a.device == toy, name
        np.testing.assert_allclose(a.cpu().numpy(), b.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    mg.save(model.state_dict(), tmp_path / "toy.npz")
    state = mg.load(tmp_path / "toy.npz", device=toy)
    assert all(t.device == toy for t in state.values())
    fresh = make_model().to(toy)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh[1].running_var.cpu().numpy(), model[1].running_var.cpu().numpy())


def test_register_backend_checks_its_arguments(backend_tables):
    with pytest.raises(ValueError, match="lower-case identifier"):
        backends.register_backend("my:dev", "a.b:C")
    with pytest.raises(ValueError, match="'package.module:Class'"):
        backends.register_backend("mydev", "a.b.C")
    backends.register_backend("notabackend", "builtins:dict")
    with pytest.raises(TypeError, match="not a minigrad Backend subclass"):
        mg.zeros(1, device="notabackend")


def test_arrays_know_their_backend():
    assert backends.backend_of(np.ones(2)) is backends.get_backend("cpu")
    assert backends.backend_of([1.0]) is None
    np.testing.assert_array_equal(backends.to_host(mg.ones(2).array), [1, 1])
