"""Weights come and go (issue 13.8): PyTorch .pt files read without PyTorch, safetensors both ways,
and models trained in either framework give the same outputs in the other."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn
from minigrad.utils.weights import WeightsError, file_format, load_pt, load_safetensors, save_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TINY = os.path.join(HERE, "files", "tiny_state_dict.pt")  # written by torch.save (PyTorch 2.13)
EVIL = os.path.join(HERE, "files", "malicious.pt")  # its pickle calls os.system


def _check_tiny(sd):
    assert list(sd) == ["weight", "bias", "count", "half", "strided"]
    assert sd["weight"].tolist() == [[0, 1, 2], [3, 4, 5]] and sd["weight"].dtype == np.float32
    assert sd["bias"].tolist() == [0.5, -0.5] and sd["count"].item() == 7 and sd["count"].shape == ()
    assert sd["half"].dtype == np.float16 and sd["strided"].tolist() == [[0, 3], [1, 4], [2, 5]]


def test_a_pt_file_loads_without_pytorch():
    """In a process where ``import torch`` fails, the committed file still loads."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any import of torch now raises ImportError
        import minigrad as mg
        sd = mg.load({TINY!r})
        print(sorted(sd), sd["weight"].shape, "torch" in sys.modules and sys.modules["torch"] is not None)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "['bias', 'count', 'half', 'strided', 'weight'] (2, 3) False"


def test_load_pt_and_minigrad_load_read_the_same():
    assert file_format(TINY) == "pt"
    _check_tiny(load_pt(TINY))
    _check_tiny(mg.load(TINY))


def test_a_pickle_that_would_run_code_is_refused(capfd):
    with pytest.raises(WeightsError, match="refusing to load posix.system|refusing to load os.system"):
        load_pt(EVIL)
    assert "pwned" not in capfd.readouterr().out


@pytest.mark.parametrize("damage", ["truncate", "not-a-zip", "missing-storage"])
def test_broken_pt_files_raise_weights_error(damage, tmp_path):
    import zipfile

    path = tmp_path / "broken.pt"
    raw = open(TINY, "rb").read()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "not-a-zip":
        path.write_bytes(b"\x80\x02not a zip at all")
    else:
        with zipfile.ZipFile(TINY) as src, zipfile.ZipFile(path, "w") as dst:
            for item in src.infolist():
                if not item.filename.endswith("data/0"):
                    dst.writestr(item, src.read(item))
    with pytest.raises(WeightsError):
        load_pt(path)


def test_safetensors_round_trip(tmp_path):
    sd = {"w": mg.randn(3, 4), "i": mg.arange(5), "s": mg.tensor(2.5, dtype="float64")}
    path = tmp_path / "m.safetensors"
    save_safetensors(sd, path, metadata={"framework": "minigrad"})
    assert file_format(path) == "safetensors"
    back = load_safetensors(path)
    for k in sd:
        assert back[k].dtype == sd[k].dtype and back[k].shape == sd[k].shape
        np.testing.assert_array_equal(back[k].numpy(), sd[k].numpy())
    assert set(mg.load(path)) == set(sd)
    with pytest.raises(TypeError, match="dict"):
        save_safetensors([1, 2], path)


class _Net(nn.Module):
    """The same architecture in both frameworks (``lib`` is minigrad.nn or torch.nn)."""

    def __init__(self, lib):
        super().__init__()
        self.conv = lib.Conv2d(2, 3, 3, padding=1)
        self.bn = lib.BatchNorm2d(3)
        self.fc = lib.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        x = self.bn(self.conv(x)).relu()
        return self.fc(x.reshape(x.shape[0], -1))


def _torch_net(torch):
    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(3)
            self.fc = torch.nn.Linear(3 * 4 * 4, 5)

        def forward(self, x):
            x = self.bn(self.conv(x)).relu()
            return self.fc(x.reshape(x.shape[0], -1))

    return TorchNet().double()


def _train_torch(torch, net, x):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
    return net.eval()


def test_a_pytorch_model_loads_into_minigrad_with_the_same_outputs(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((4, 2, 4, 4))
    tnet = _train_torch(torch, _torch_net(torch), torch.tensor(x))
    torch.save(tnet.state_dict(), tmp_path / "model.pth")
    net = _Net(nn).double()
    net.load_state_dict(mg.load(tmp_path / "model.pth"))
    net.eval()
    with torch.no_grad():
        expected = tnet(torch.tensor(x)).numpy()
    np.testing.assert_allclose(net(mg.tensor(x)).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    assert int(net.bn.num_batches_tracked.item()) == 3


def test_a_minigrad_model_loads_into_pytorch_with_the_same_outputs(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    mg.manual_seed(0)
    x = np.random.default_rng(1).standard_normal((4, 2, 4, 4))
    net = _Net(nn).double()
    opt = mg.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(mg.tensor(x)).pow(2).mean().backward()
        opt.step()
    net.eval()
    save_safetensors(net.state_dict(), tmp_path / "model.safetensors")
    tnet = _torch_net(torch)
    tnet.load_state_dict(load_file(tmp_path / "model.safetensors"))
    tnet.eval()
    with torch.no_grad():
        got = tnet(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, net(mg.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12)
