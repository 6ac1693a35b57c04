"""Every built-in layer with state survives a checkpoint file into a fresh model, on every backend (10.3).

The table below names each built-in layer with state; a new layer fails
``test_every_builtin_layer_is_in_the_table`` until it gets a row (or is
listed as stateless), so the round trip is never skipped for it.
"""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn, norm

def _indices(rng, device):
    return mg.tensor(rng.integers(0, 5, (2, 3)), device=device)


# name -> (a constructor, an input it accepts: a shape of normal samples, or a function of (rng, device))
STATEFUL = {
    "Embedding": (lambda: nn.Embedding(5, 3, padding_idx=0), _indices),
    "LazyLinear": (lambda: nn.LazyLinear(4), (2, 3)),
    "LazyConv2d": (lambda: nn.LazyConv2d(3, 3, padding=1), (2, 2, 4, 4)),
    "LazyBatchNorm1d": (lambda: nn.LazyBatchNorm1d(), (4, 3)),
    "LazyBatchNorm2d": (lambda: nn.LazyBatchNorm2d(), (2, 3, 2, 2)),
    "Linear": (lambda: nn.Linear(3, 4), (2, 3)),
    "Conv2d": (lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 2, 4, 4)),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(3), (4, 3)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3, momentum=None), (2, 3, 2, 2)),
    "SyncBatchNorm": (lambda: nn.SyncBatchNorm(3), (2, 3, 2, 2)),  # BatchNorm without a process group
    "LayerNorm": (lambda: nn.LayerNorm((2, 3)), (4, 2, 3)),
    "GroupNorm": (lambda: nn.GroupNorm(2, 4), (2, 4, 3)),
    "InstanceNorm1d": (lambda: nn.InstanceNorm1d(3, affine=True, track_running_stats=True), (2, 3, 4)),
    "InstanceNorm2d": (lambda: nn.InstanceNorm2d(3, affine=True, track_running_stats=True), (2, 3, 2, 2)),
    "ChannelAffine": (lambda: norm.ChannelAffine(mg.ones(3) * 2, mg.zeros(3) + 0.5), (2, 3, 4)),
}
STATELESS = {
    "AvgPool2d": lambda: nn.AvgPool2d(2), "MaxPool2d": lambda: nn.MaxPool2d(2), "Dropout": lambda: nn.Dropout(),
    "AdaptiveAvgPool2d": lambda: nn.AdaptiveAvgPool2d(1),
    "Flatten": lambda: nn.Flatten(), "Identity": lambda: nn.Identity(), "ReLU": lambda: nn.ReLU(),
    "Sigmoid": lambda: nn.Sigmoid(), "Tanh": lambda: nn.Tanh(), "Softmax": lambda: nn.Softmax(-1),
    "LogSoftmax": lambda: nn.LogSoftmax(-1), "CrossEntropyLoss": lambda: nn.CrossEntropyLoss(),
    "NLLLoss": lambda: nn.NLLLoss(), "MSELoss": lambda: nn.MSELoss(), "Sequential": lambda: nn.Sequential(),
    "ModuleList": lambda: nn.ModuleList(), "Folded": lambda: norm.Folded("BatchNorm1d into Linear", (2,)),
    "ModuleDict": lambda: nn.ModuleDict(), "Dropout2d": lambda: nn.Dropout2d(), "LeakyReLU": lambda: nn.LeakyReLU(),
    "GELU": lambda: nn.GELU(), "Softplus": lambda: nn.Softplus(), "BCELoss": lambda: nn.BCELoss(),
    "BCEWithLogitsLoss": lambda: nn.BCEWithLogitsLoss(),
}
ABSTRACT = {"Module", "Normalizer"}
# Needs a process group to be built; its state dict is the wrapped module's (tests/distributed/test_ddp.py).
ABSTRACT |= {"DistributedDataParallel"}


def builtin_layers():
    names = set()
    for package in (nn, norm):
        for name in package.__all__:
            obj = getattr(package, name)
            if isinstance(obj, type) and issubclass(obj, nn.Module) and name not in ABSTRACT:
                names.add(name)
    return names


def test_every_builtin_layer_is_in_the_table():
    missing = builtin_layers() - set(STATEFUL) - set(STATELESS)
    assert not missing, f"add these layers to STATEFUL (with a constructor and an input) or STATELESS: {missing}"
    for name, make in STATELESS.items():
        assert make().state_dict() == {}, f"{name} has state: move it to STATEFUL"


def _randomize(module, rng):
    """Values unlike a fresh module's: floats in [0.5, 1.5) (a valid variance), counters 7."""
    for t in module.state_dict().values():
        values = rng.uniform(0.5, 1.5, t.shape) if t.dtype.kind == "f" else np.full(t.shape, 7)
        t.array[...] = mg.tensor(values, dtype=t.dtype, device=t.device).array


def _input(spec, rng, device):
    if callable(spec):
        return spec(rng, device)
    return mg.tensor(rng.standard_normal(spec), dtype=mg.get_default_dtype(), device=device)


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_state_round_trips_through_a_file_into_a_fresh_model(name, backend_device, tmp_path):
    make, spec = STATEFUL[name]
    rng = np.random.default_rng(0)
    model = make().to(backend_device)
    model(_input(spec, rng, backend_device))
    _randomize(model, rng)
    mg.save(model.state_dict(), tmp_path / "ck.npz")
    fresh = make().to(backend_device)
    fresh(_input(spec, rng, backend_device))  # a lazy layer takes its shapes from a first input, as in PyTorch
    fresh.load_state_dict(mg.load(tmp_path / "ck.npz", device=backend_device))
    state, back = model.state_dict(), fresh.state_dict()
    assert list(back) == list(state) and state
    for key, value in state.items():
        got = back[key]
        assert (got.shape, got.dtype, got.device) == (value.shape, value.dtype, value.device), key
        np.testing.assert_array_equal(got.cpu().numpy(), value.cpu().numpy(), err_msg=key)
    x = _input(spec, rng, backend_device)
    with mg.no_grad():
        np.testing.assert_array_equal(fresh.eval()(x).cpu().numpy(), model.eval()(x).cpu().numpy())


class _Scaled(nn.Module):
    """A scalar Parameter and a 0-d buffer."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(mg.tensor(1.0))
        self.register_buffer("calls", mg.tensor(0))

    def forward(self, x):
        return x * self.scale


def test_zero_dimensional_parameters_and_buffers_round_trip(backend_device, tmp_path):
    model = _Scaled().to(backend_device)
    model.scale.array[...] = 2.5
    model.calls.array[...] = 4
    mg.save(model.state_dict(), tmp_path / "s.npz")
    fresh = _Scaled().to(backend_device)
    fresh.load_state_dict(mg.load(tmp_path / "s.npz", device=backend_device))
    assert fresh.scale.shape == () and fresh.scale.item() == 2.5 and fresh.calls.item() == 4


@pytest.mark.parametrize("make", [lambda: nn.LazyLinear(4), lambda: nn.LazyBatchNorm1d()], ids=["LazyLinear",
                                                                                                 "LazyBatchNorm1d"])
def test_a_lazy_layer_moved_or_cast_before_its_first_input_stays_there(make, backend_device):
    # Found by the round trip above: the first input built the parameters on the CPU, in float32.
    model = make().to(backend_device, "float64")
    model(mg.randn(4, 3, dtype="float64", device=backend_device))
    for name, t in model.state_dict().items():
        assert t.device == backend_device and (t.dtype == np.float64 or t.dtype.kind == "i"), name
