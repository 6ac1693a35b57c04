"""Dataset, TensorDataset and DataLoader: batching, shuffling, drop_last, determinism, devices."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad
from minigrad.data import DataLoader, Dataset, TensorDataset


def _data(n=10):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int64)
    return x, y


def _labels(loader):
    return [yb.numpy().tolist() for _, yb in loader]


@given(n=st.integers(1, 40), batch=st.integers(1, 12), drop_last=st.booleans(), shuffle=st.booleans())
def test_batches_cover_the_data(n, batch, drop_last, shuffle):
    x, y = _data(n)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=shuffle, drop_last=drop_last, seed=3)
    batches = list(loader)
    assert len(batches) == len(loader)
    sizes = [len(yb) for _, yb in batches]
    full, rest = divmod(n, batch)
    assert sizes == [batch] * full + ([rest] if rest and not drop_last else [])
    seen = np.concatenate([yb.numpy() for _, yb in batches]) if batches else np.array([], np.int64)
    if drop_last:
        assert len(set(seen.tolist())) == len(seen) == full * batch
    else:
        assert sorted(seen.tolist()) == list(range(n))
    for xb, yb in batches:  # rows stay paired with their labels
        np.testing.assert_array_equal(xb.numpy(), x[yb.numpy()])


def test_batches_are_tensors_with_the_data_dtypes():
    x, y = _data()
    xb, yb = next(iter(DataLoader(TensorDataset(x, y), batch_size=4)))
    assert isinstance(xb, minigrad.Tensor) and isinstance(yb, minigrad.Tensor)
    assert xb.dtype == np.float32 and yb.dtype == np.int64
    assert xb.shape == (4, 3) and not xb.requires_grad


def test_no_shuffle_keeps_order():
    x, y = _data(7)
    assert _labels(DataLoader(TensorDataset(x, y), batch_size=3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert _labels(DataLoader(TensorDataset(x, y), batch_size=3, drop_last=True)) == [[0, 1, 2], [3, 4, 5]]


def test_shuffle_is_seeded_and_changes_every_epoch():
    x, y = _data(50)
    a = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True, seed=7)
    b = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True, seed=7)
    c = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True, seed=8)
    ea1, ea2 = _labels(a), _labels(a)
    assert ea1 == _labels(b) and ea2 == _labels(b)  # same seed: same epochs, in order
    assert ea1 != ea2  # a new order every epoch
    assert ea1 != _labels(c)
    assert ea1 != [list(range(i, i + 10)) for i in range(0, 50, 10)]


def test_generator_argument():
    x, y = _data(30)
    a = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True, generator=np.random.default_rng(11))
    b = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True, seed=11)
    assert _labels(a) == _labels(b)


def test_default_seed_follows_manual_seed():
    x, y = _data(30)
    minigrad.manual_seed(5)
    a = _labels(DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True))
    minigrad.manual_seed(5)
    b = _labels(DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True))
    minigrad.manual_seed(6)
    c = _labels(DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True))
    assert a == b != c


class Squares(Dataset):
    """A map-style dataset returning (array, int) tuples."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return np.full(2, i * i, dtype=np.float64), i


class Plain(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return np.array([i, -i], dtype=np.float32)


def test_generic_dataset_is_collated():
    (xb, yb), (xb2, yb2) = DataLoader(Squares(), batch_size=3)
    np.testing.assert_array_equal(xb.numpy(), [[0, 0], [1, 1], [4, 4]])
    assert yb.numpy().tolist() == [0, 1, 2] and yb.dtype == np.int64
    assert yb2.numpy().tolist() == [3, 4]


def test_non_tuple_samples_give_a_tensor():
    batches = list(DataLoader(Plain(), batch_size=2))
    assert isinstance(batches[0], minigrad.Tensor)
    np.testing.assert_array_equal(batches[1].numpy(), [[2, -2], [3, -3]])


def test_batches_on_device(device):
    x, y = _data()
    xb, yb = next(iter(DataLoader(TensorDataset(x, y), batch_size=4, device=device)))
    assert xb.device == device and yb.device == device
    np.testing.assert_array_equal(xb.cpu().numpy(), x[:4])


def test_tensor_dataset_accepts_tensors():
    x, y = _data(4)
    ds = TensorDataset(minigrad.tensor(x), y)
    assert len(ds) == 4
    np.testing.assert_array_equal(ds[2][0], x[2])
    assert ds[2][1] == 2


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: TensorDataset(), ValueError, "at least one array"),
        (lambda: TensorDataset(np.zeros(3), np.zeros(4)), ValueError, "array 0 has 3 and array 1 has 4"),
        (lambda: TensorDataset(np.float32(1)), ValueError, "scalar"),
        (lambda: DataLoader(TensorDataset(np.zeros(3)), batch_size=0), ValueError, "batch_size must be a positive int"),
        (lambda: DataLoader(TensorDataset(np.zeros(3)), batch_size=2.5), ValueError, "batch_size"),
        (lambda: DataLoader([1, 2], batch_size=1, seed=1, generator=np.random.default_rng()), ValueError,
         "either seed or generator"),
        (lambda: DataLoader(TensorDataset(np.zeros(3)), seed=-1), ValueError, "non-negative int"),
        (lambda: DataLoader(TensorDataset(np.zeros(3)), generator=5), TypeError, "numpy.random.Generator"),
        (lambda: DataLoader(42), TypeError, "needs a Dataset"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_len_and_repr():
    ds = TensorDataset(*_data(10))
    assert len(DataLoader(ds, batch_size=3)) == 4
    assert len(DataLoader(ds, batch_size=3, drop_last=True)) == 3
    assert "batch_size=3" in repr(DataLoader(ds, batch_size=3))


def test_base_dataset_is_abstract():
    with pytest.raises(NotImplementedError):
        len(Dataset())
    with pytest.raises(NotImplementedError):
        Dataset()[0]
