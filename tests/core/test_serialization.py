"""save/load: round trips, atomic writes, and clear errors for damaged files."""

import json
import os
import zipfile

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn


def test_round_trip_of_nested_structures(tmp_path):
    obj = {
        "weights": mg.randn(3, 2),
        "ints": mg.arange(4),
        "trainable": mg.ones(2, requires_grad=True),
        "list": [1, 2.5, "text", None, (True, np.float32(1.5))],
        "by_index": {0: np.arange(3.0), 5: {"x": mg.zeros(1, dtype="float64")}},
    }
    mg.save(obj, tmp_path / "a.npz")
    back = mg.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(back["weights"].numpy(), obj["weights"].numpy())
    assert back["ints"].dtype == np.int64 and back["trainable"].requires_grad
    assert back["list"] == [1, 2.5, "text", None, (True, np.float32(1.5))]
    assert isinstance(back["list"][4], tuple)
    np.testing.assert_array_equal(back["by_index"][0], np.arange(3.0))
    assert back["by_index"][5]["x"].dtype == np.float64


def test_model_checkpoint(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    mg.save(net.state_dict(), tmp_path / "m.npz")
    other = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    other.load_state_dict(mg.load(tmp_path / "m.npz"))
    x = mg.randn(2, 3)
    np.testing.assert_array_equal(net(x).detach().numpy(), other(x).detach().numpy())


def test_crash_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    mg.save({"v": mg.ones(2)}, path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        mg.save({"v": mg.zeros(2)}, path)
    monkeypatch.undo()
    assert mg.load(path)["v"].tolist() == [1, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary left behind


def test_truncated_file_raises(tmp_path):
    path = tmp_path / "ck.npz"
    mg.save({"v": mg.randn(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(mg.CheckpointError, match="truncated|not a minigrad checkpoint"):
        mg.load(path)


def test_corrupted_bytes_raise(tmp_path):
    path = tmp_path / "ck.npz"
    mg.save({"v": mg.zeros(1000)}, path)
    data = bytearray(path.read_bytes())
    i = data.index(b"\x93NUMPY") + 300  # inside the first array's payload
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(mg.CheckpointError, match="corrupted|checksum"):
        mg.load(path)


def test_foreign_and_future_files_raise(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.ones(2))
    with pytest.raises(mg.CheckpointError, match="not a minigrad checkpoint"):
        mg.load(tmp_path / "plain.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(mg.CheckpointError):
        mg.load(tmp_path / "text.npz")
    with zipfile.ZipFile(tmp_path / "future.npz", "w") as zf:
        zf.writestr("__minigrad__.json", json.dumps({"magic": "minigrad-checkpoint", "version": 99}))
    with pytest.raises(mg.CheckpointError, match="version 99"):
        mg.load(tmp_path / "future.npz")
    with pytest.raises(FileNotFoundError):
        mg.load(tmp_path / "missing.npz")


def test_unsupported_objects_raise(tmp_path):
    with pytest.raises(TypeError, match="cannot store"):
        mg.save({"f": lambda: 1}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="dict keys"):
        mg.save({1.5: 2}, tmp_path / "x.npz")
