"""save/load: round trips, atomic writes, and clear errors for damaged files."""

import json
import os
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# ------------------------------------------------ 0-d values (10.3)
def test_zero_dimensional_values_keep_their_shape(tmp_path):
    obj = {"t": mg.tensor(3.5), "i": mg.tensor(7), "a": np.array(2.0), "s": np.float32(1.5)}
    mg.save(obj, tmp_path / "z.npz")
    back = mg.load(tmp_path / "z.npz")
    assert back["t"].shape == () and back["t"].item() == 3.5
    assert back["i"].shape == () and back["i"].dtype == np.int64
    assert back["a"].shape == () and back["s"] == np.float32(1.5)


def test_batchnorm_checkpoint_restores_into_a_fresh_model(tmp_path):
    bn = nn.BatchNorm1d(3)
    bn(mg.randn(4, 3))
    mg.save(bn.state_dict(), tmp_path / "c.npz")
    fresh = nn.BatchNorm1d(3)
    fresh.load_state_dict(mg.load(tmp_path / "c.npz"))  # "size mismatch for 'num_batches_tracked'" before
    assert fresh.num_batches_tracked.shape == () and int(fresh.num_batches_tracked) == 1
    np.testing.assert_array_equal(fresh.running_mean.numpy(), bn.running_mean.numpy())


# ------------------------------------------------ the file, as a normal write would leave it (10.15)
@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_to(value):
        os.umask(value)

    yield set_to
    os.umask(old)


def test_a_new_file_honours_the_umask_and_a_replaced_file_keeps_its_mode(tmp_path, umask):
    path = tmp_path / "ck.npz"
    umask(0o027)
    mg.save({"v": mg.ones(2)}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0600 whatever the umask before
    path.chmod(0o664)
    mg.save({"v": mg.zeros(2)}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664 and mg.load(path)["v"].tolist() == [0, 0]


def test_a_symlink_is_written_through_to_its_target(tmp_path):
    target = tmp_path / "real" / "ck.npz"
    target.parent.mkdir()
    mg.save({"v": mg.ones(2)}, target)
    link = tmp_path / "latest.npz"
    link.symlink_to(os.path.relpath(target, tmp_path))
    mg.save({"v": mg.zeros(2)}, link)
    assert link.is_symlink() and mg.load(target)["v"].tolist() == [0, 0]
    dangling = tmp_path / "next.npz"
    dangling.symlink_to(tmp_path / "real" / "new.npz")
    mg.save({"v": mg.ones(1)}, dangling)
    assert dangling.is_symlink() and mg.load(tmp_path / "real" / "new.npz")["v"].tolist() == [1]


KILLED_SAVE = """
import os, sys, time
import minigrad as mg
os.replace = lambda *a: (print("writing", flush=True), time.sleep(60))  # hold the temporary, then get killed
mg.save({"v": mg.ones(1000)}, sys.argv[1])
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fcntl locks")
def test_temporaries_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "ck.npz"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=root))
    try:
        assert proc.stdout.readline().strip() == "writing"
        temporaries = [p.name for p in tmp_path.iterdir()]
        assert len(temporaries) == 1 and temporaries[0].startswith(".ck.npz.tmp-")
        mg.save({"v": mg.zeros(2)}, path)  # the writer is alive and holds its temporary: it stays
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(temporaries + ["ck.npz"])
    finally:
        proc.kill()  # kill -9: no cleanup runs in the writer
        proc.wait()
    (tmp_path / ".other.npz.tmp-0123456789abcdef").write_bytes(b"another target's")
    mg.save({"v": mg.ones(2)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npz.tmp-0123456789abcdef", "ck.npz"]
    assert mg.load(path)["v"].tolist() == [1, 1]


# ------------------------------------------------ every damaged file is a CheckpointError (10.14)
def _checkpoint(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model(mg.randn(5, 3))
    obj = {"model": model.state_dict(), "step": 3, "extra": [np.arange(3), (1.5, "x", None)], "by": {2: mg.tensor(1)}}
    path = tmp_path / "ck.npz"
    mg.save(obj, path)
    return path, path.read_bytes()


def _same(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "numpy_view") or isinstance(a, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    return a == b and type(a) is type(b)


def _damaged_loads(path, data, versions):
    """Each damaged version loads the original data or raises CheckpointError; returns how many raised."""
    original = mg.load(path)
    raised = 0
    for damaged in versions:
        path.write_bytes(damaged)
        try:
            back = mg.load(path)
        except mg.CheckpointError:
            raised += 1
            continue
        assert _same(back, original), "a damaged checkpoint loaded different data"
    return raised


THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


def test_every_byte_flip_is_detected_or_harmless(tmp_path):
    path, data = _checkpoint(tmp_path)
    positions = range(0, len(data), 1 if THOROUGH else 5)
    flips = [0xFF, 0x01, 0x80] if THOROUGH else [0xFF]

    def versions():
        for i in positions:
            for x in flips:
                damaged = bytearray(data)
                damaged[i] ^= x
                yield bytes(damaged)

    assert _damaged_loads(path, data, versions()) > len(positions) // 2  # most bytes matter


def test_every_truncation_is_detected(tmp_path):
    path, data = _checkpoint(tmp_path)
    lengths = range(0, len(data), 1 if THOROUGH else 3)
    assert _damaged_loads(path, data, (data[:n] for n in lengths)) == len(lengths)


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=8))
def test_random_damage_is_detected_or_harmless(tmp_path_factory, edits):
    path, data = _checkpoint(tmp_path_factory.mktemp("fuzz"))
    damaged = bytearray(data)
    for i, x in edits:
        damaged[i % len(data)] ^= x
    _damaged_loads(path, data, [bytes(damaged)])


def _rewrite_header(path, edit):
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    header = json.loads(members["__minigrad__.json"])
    edit(header)
    members["__minigrad__.json"] = json.dumps(header).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(header):
        node = header
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit", [
    _set("arrays", None), _set("arrays", 0, "dtype", 5), _set("arrays", 0, "shape", "3"),
    _set("arrays", 0, "shape", [10**12]), _set("arrays", 0, "dtype", "|O"), _set("arrays", 0, "sha256", None),
    _set("tree", "__dict__", 0, None), _set("tree", "__dict__", 0, 0, 5), _set("tree", {"__tensor__": "0"}),
    _set("tree", {"__array__": 99}), _set("tree", {"__intdict__": [["a", 1]]}), _set("tree", {"__list__": 5}),
    _set("tree", {"__scalar__": "x", "dtype": "<f8"}), _set("tree", {"__scalar__": 1, "dtype": "bogus"}),
    _set("tree", {"__scalar__": 1, "dtype": "|O"}), _set("tree", {"__what__": 1}), _set("tree", [1.5, {"a": 1}]),
    _set("version", "1"), lambda h: h.pop("tree"), lambda h: h["arrays"].pop(),
], ids=lambda e: "edit")
def test_hand_edited_headers_raise_checkpoint_errors(tmp_path, edit):
    path, _ = _checkpoint(tmp_path)
    _rewrite_header(path, edit)
    with pytest.raises(mg.CheckpointError):
        mg.load(path)


def test_a_compressed_member_is_refused(tmp_path):
    path, _ = _checkpoint(tmp_path)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    with pytest.raises(mg.CheckpointError, match="compressed or encrypted"):
        mg.load(path)
