"""Whole models on the GPU agree with the CPU, through the public API only.

Each test runs on two accelerators: the emulated GPU (``CUDABackend`` with
the g++-emulated kernels registered as device "cuda" for the test) and a
real GPU (skipped without one). The models, optimizers and checkpoints are
the unchanged minigrad.nn / optim / serialization code; only the device
string differs. Agreement: float64 to 1e-10 and float32 to 1e-5 (relative,
in norm), for outputs, gradients, parameters after optimizer steps and
BatchNorm running statistics.
"""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn, optim
from minigrad.device import Device

RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


@pytest.fixture(params=["emulated", pytest.param("gpu", marks=pytest.mark.cuda)])
def accel(request, monkeypatch):
    """The device string "cuda", backed by the emulated GPU or by a real one."""
    if request.param == "gpu":
        request.getfixturevalue("gpu")
        return "cuda"
    be = request.getfixturevalue("emu_factory")(threads=64)
    from minigrad import backends

    for name in ("cuda", "cuda:0"):
        monkeypatch.setitem(backends._BY_NAME, name, be)
    monkeypatch.setitem(backends._INSTANCES, Device("cuda:0"), be)
    return "cuda"


def batch_norm_layers():
    try:
        return nn.BatchNorm1d, nn.BatchNorm2d
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"minigrad.nn.BatchNorm1d/2d are not in this build ({type(exc).__name__}: {exc})")


def agree(a, b, dtype, what):
    a = np.asarray(a.numpy_view() if hasattr(a, "numpy_view") else a, dtype=np.float64)
    b = np.asarray(b.numpy_view() if hasattr(b, "numpy_view") else b, dtype=np.float64)
    assert a.shape == b.shape, what
    # Relative error, plus an absolute floor at the dtype's rounding level: a
    # gradient that is zero in exact arithmetic (the bias of a layer followed
    # by BatchNorm) is rounding noise on both devices.
    rtol = RTOL[np.dtype(dtype)]
    atol = 1e-12 if np.dtype(dtype) == np.float64 else 1e-6
    diff, ref_norm = np.linalg.norm(a - b), np.linalg.norm(b)
    assert diff <= rtol * ref_norm + atol * np.sqrt(a.size), (
        f"{what}: |a-b| = {diff:.3g}, relative error {diff / max(ref_norm, 1e-300):.3g}"
    )


def twin(build, dtype, device):
    """The same model (same initial values) on the CPU and on ``device``."""
    mg.manual_seed(0)
    cpu = build().to(dtype=dtype)
    other = build().to(dtype=dtype)
    other.load_state_dict(cpu.state_dict())
    return cpu, other.to(device)


def run_steps(model, opt, x, y, steps, device):
    x, y = x.to(device), y.to(device)
    outs = []
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        outs.append(out.detach().cpu())
        opt.step()
    return outs


def compare_models(cpu, dev, dtype, what):
    for (name, a), (_, b) in zip(cpu.state_dict().items(), dev.state_dict().items()):
        agree(b.cpu(), a, dtype, f"{what}: {name}")


def mlp(bn=None):
    layers = [nn.Linear(12, 16)]
    if bn is not None:
        layers.append(bn(16))
    layers += [nn.Sigmoid(), nn.Linear(16, 5)]
    return nn.Sequential(*layers)


def cnn(bn1d, bn2d):
    """The seed CNN: Conv2d → BN2d → ReLU → MaxPool2d → Flatten → Linear → BN1d → ReLU → Linear."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), bn2d(6), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 20), bn1d(20), nn.ReLU(), nn.Linear(20, 5),
    )


def cnn_without_bn():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, stride=1, padding=1),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, 5),
    )


def data(shape, dtype, n_classes=5, seed=1):
    rng = np.random.default_rng(seed)
    x = mg.tensor(rng.standard_normal(shape).astype(dtype))
    y = mg.tensor(rng.integers(0, n_classes, size=shape[0]))
    return x, y


DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]


@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_sgd(accel, dtype):
    cpu, dev = twin(mlp, dtype, accel)
    x, y = data((10, 12), dtype)
    outs_c = run_steps(cpu, optim.SGD(cpu.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3), x, y, 3, "cpu")
    outs_d = run_steps(dev, optim.SGD(dev.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3), x, y, 3, accel)
    for i, (a, b) in enumerate(zip(outs_c, outs_d)):
        agree(b, a, dtype, f"output of step {i}")
    compare_models(cpu, dev, dtype, "parameters after 3 SGD steps")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cnn_adam(accel, dtype):
    cpu, dev = twin(cnn_without_bn, dtype, accel)
    x, y = data((4, 3, 8, 8), dtype)
    outs_c = run_steps(cpu, optim.Adam(cpu.parameters(), lr=1e-2), x, y, 2, "cpu")
    outs_d = run_steps(dev, optim.Adam(dev.parameters(), lr=1e-2), x, y, 2, accel)
    for a, b in zip(outs_c, outs_d):
        agree(b, a, dtype, "CNN output")
    compare_models(cpu, dev, dtype, "CNN parameters after 2 Adam steps")


@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_with_batchnorm1d(accel, dtype):
    bn1d, _ = batch_norm_layers()
    cpu, dev = twin(lambda: mlp(bn1d), dtype, accel)
    x, y = data((16, 12), dtype)
    outs_c = run_steps(cpu, optim.SGD(cpu.parameters(), lr=0.1, momentum=0.9), x, y, 3, "cpu")
    outs_d = run_steps(dev, optim.SGD(dev.parameters(), lr=0.1, momentum=0.9), x, y, 3, accel)
    for a, b in zip(outs_c, outs_d):
        agree(b, a, dtype, "MLP+BN1d output")
    compare_models(cpu, dev, dtype, "MLP+BN1d parameters and running statistics")
    cpu.eval(), dev.eval()
    agree(dev(x.to(accel)).cpu(), cpu(x), dtype, "MLP+BN1d eval output")


@pytest.mark.parametrize("dtype", DTYPES)
def test_seed_cnn_gradients_and_running_stats(accel, dtype):
    bn1d, bn2d = batch_norm_layers()
    cpu, dev = twin(lambda: cnn(bn1d, bn2d), dtype, accel)
    x, y = data((8, 3, 8, 8), dtype)
    for model, device in ((cpu, "cpu"), (dev, accel)):
        loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        loss.backward()
    for (name, a), (_, b) in zip(cpu.named_parameters(), dev.named_parameters()):
        agree(b.grad.cpu(), a.grad, dtype, f"gradient of {name}")
    compare_models(cpu, dev, dtype, "seed CNN running statistics")
    cpu.eval(), dev.eval()
    agree(dev(x.to(accel)).cpu(), cpu(x), dtype, "seed CNN eval output")


def test_checkpoints_move_between_devices(accel, tmp_path):
    cpu, dev = twin(mlp, np.float32, accel)
    opt = optim.Adam(dev.parameters(), lr=1e-2)
    run_steps(dev, opt, *data((6, 12), np.float32), 2, accel)
    mg.save({"model": dev.state_dict(), "optim": opt.state_dict()}, tmp_path / "ckpt.npz")
    ckpt = mg.load(tmp_path / "ckpt.npz")  # onto the CPU
    assert all(t.device == "cpu" for t in ckpt["model"].values())
    cpu.load_state_dict(ckpt["model"])
    compare_models(dev, cpu, np.float32, "CPU model loaded from a GPU checkpoint")
    opt_cpu = optim.Adam(cpu.parameters(), lr=1e-2)
    opt_cpu.load_state_dict(ckpt["optim"])
    # Both continue identically.
    x, y = data((6, 12), np.float32, seed=2)
    run_steps(dev, opt, x, y, 1, accel)
    run_steps(cpu, opt_cpu, x, y, 1, "cpu")
    compare_models(cpu, dev, np.float32, "one more step after the round trip")
    # And a GPU model loads a checkpoint placed directly on the GPU.
    on_dev = mg.load(tmp_path / "ckpt.npz", device=accel)
    assert all(t.device == "cuda:0" for t in on_dev["model"].values())
    _, dev2 = twin(mlp, np.float32, accel)
    dev2.load_state_dict(on_dev["model"])
    opt2 = optim.Adam(dev2.parameters(), lr=1e-2)
    opt2.load_state_dict(ckpt["optim"])


def test_optimizer_state_follows_a_moved_model(accel):
    model = mlp()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = data((6, 12), np.float32)
    run_steps(model, opt, x, y, 1, "cpu")
    model.to(accel)
    run_steps(model, opt, x, y, 1, accel)  # momentum buffers created on the CPU
    for p in model.parameters():
        buf = opt.state[p]["momentum_buffer"]
        assert type(buf) is type(p.array) and buf.dtype == p.dtype
    model.double()
    run_steps(model, opt, x.double(), y, 1, accel)
    assert all(opt.state[p]["momentum_buffer"].dtype == np.float64 for p in model.parameters())


def test_mixing_devices_raises(accel):
    a = mg.ones(3)
    b = mg.ones(3, device=accel)
    with pytest.raises(RuntimeError, match="same device"):
        a + b
    with mg.device(accel):
        c = mg.zeros(2)
    assert c.device == "cuda:0"
    assert (b.to("cpu") + a).tolist() == [2.0, 2.0, 2.0]


def test_default_device_and_factories(accel):
    mg.set_default_device(accel)
    try:
        t = mg.randn(4, 3)
        assert t.device == "cuda:0" and t.dtype == np.float32
        assert mg.tensor([1.0, 2.0]).device == "cuda:0"
        assert mg.arange(3).device == "cuda:0"
    finally:
        mg.set_default_device("cpu")
    x = mg.randn(3, 4, requires_grad=True)
    xd = x.to(accel)
    (xd * xd).sum().backward()  # the gradient flows back across the transfer
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy(), rtol=1e-6)



def test_zero_dim_buffers_load_into_a_model_on_the_device(accel):
    """BatchNorm's num_batches_tracked (a 0-d int64 buffer): loaded into a model already on the device
    (the fake CuPy applies CuPy's assignment rules), then counted there."""
    bn1d, _ = batch_norm_layers()
    mg.manual_seed(0)
    cpu, dev = mlp(bn1d), mlp(bn1d).to(accel)
    x, y = data((8, 12), np.float32)
    run_steps(cpu, optim.SGD(cpu.parameters(), lr=0.1), x, y, 3, "cpu")
    dev.load_state_dict(cpu.state_dict())
    counter = dev.state_dict()["1.num_batches_tracked"]
    assert counter.device == "cuda:0" and counter.shape == () and counter.item() == 3
    compare_models(cpu, dev, np.float32, "model on the device after load_state_dict")
    run_steps(dev, optim.SGD(dev.parameters(), lr=0.1), x, y, 1, accel)
    assert dev.state_dict()["1.num_batches_tracked"].item() == 4


def test_zero_dim_buffers_survive_a_checkpoint_onto_the_device(accel, tmp_path):
    bn1d, _ = batch_norm_layers()
    cpu, dev = twin(lambda: mlp(bn1d), np.float32, accel)
    run_steps(dev, optim.SGD(dev.parameters(), lr=0.1), *data((8, 12), np.float32), 2, accel)
    mg.save(dev.state_dict(), tmp_path / "bn.npz")
    for device, model in (("cpu", cpu), (accel, dev)):
        loaded = mg.load(tmp_path / "bn.npz", device=device)
        assert loaded["1.num_batches_tracked"].shape == () and loaded["1.num_batches_tracked"].item() == 2
        model.load_state_dict(loaded)
    compare_models(cpu, dev, np.float32, "BN model after a checkpoint round trip")
