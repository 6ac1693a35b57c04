"""minigrad.utils.data: PyTorch's samplers, collation, random_split and a DataLoader with worker processes."""

import os
import pickle
import sys

import numpy as np
import pytest

import minigrad as mg
from minigrad.utils import data as D

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # spawned workers inherit sys.path
import loader_datasets as LD  # noqa: E402


def _ds(n=10):
    return D.TensorDataset(np.arange(2 * n, dtype=np.float32).reshape(n, 2), np.arange(n))


def test_minigrad_data_reexports_the_one_implementation():
    assert mg.data.DataLoader is D.DataLoader and mg.data.TensorDataset is D.TensorDataset
    assert mg.data.Dataset is D.Dataset


def test_tensor_dataset_samples_are_tensors():
    x, y = _ds()[3]
    assert isinstance(x, mg.Tensor) and x.tolist() == [6.0, 7.0] and y.item() == 3
    assert [t.shape for t in _ds().tensors] == [(10, 2), (10,)]


def test_default_collate_follows_pytorch():
    batch = D.default_collate([({"a": 1.5, "b": "x"}, np.zeros(2, np.float32), 1),
                               ({"a": 2.5, "b": "y"}, np.ones(2, np.float32), 2)])
    assert isinstance(batch, list) and len(batch) == 3  # a tuple sample collates to a list, as in PyTorch
    assert batch[0]["a"].dtype == np.float64 and batch[0]["b"] == ["x", "y"]
    assert batch[1].shape == (2, 2) and batch[2].dtype == np.int64
    with pytest.raises(TypeError, match="default_collate"):
        D.default_collate([object(), object()])


def test_samplers():
    assert list(D.SequentialSampler(range(4))) == [0, 1, 2, 3]
    rs = D.RandomSampler(range(6), generator=np.random.default_rng(0))
    a, b = list(rs), list(rs)
    assert sorted(a) == list(range(6)) and a != b  # a new order each epoch
    assert len(list(D.RandomSampler(range(3), num_samples=7))) == 7
    assert sorted(set(D.RandomSampler(range(3), replacement=True, num_samples=50))) == [0, 1, 2]
    assert sorted(D.SubsetRandomSampler([5, 7, 9])) == [5, 7, 9]
    w = list(D.WeightedRandomSampler([0.0, 1.0, 0.0], 5))
    assert w == [1] * 5
    assert list(D.BatchSampler(range(5), 2, drop_last=True)) == [[0, 1], [2, 3]]
    assert len(D.BatchSampler(range(5), 2, drop_last=False)) == 3
    with pytest.raises(ValueError, match="batch_size"):
        D.BatchSampler(range(5), 0, False)


def test_unseeded_random_sampler_follows_manual_seed():
    mg.manual_seed(3)
    a = list(D.RandomSampler(range(20)))
    mg.manual_seed(3)
    assert list(D.RandomSampler(range(20))) == a


def test_random_split_and_subset():
    parts = D.random_split(range(10), [0.5, 0.3, 0.2], generator=np.random.default_rng(0))
    assert [len(p) for p in parts] == [5, 3, 2]
    assert sorted(i for p in parts for i in (p[j] for j in range(len(p)))) == list(range(10))
    assert [len(p) for p in D.random_split(range(5), [0.5, 0.5])] == [3, 2]
    with pytest.raises(ValueError, match="add up"):
        D.random_split(range(5), [2, 2])
    cat = D.ConcatDataset([range(3), range(10, 12)])
    assert [cat[i] for i in range(len(cat))] == [0, 1, 2, 10, 11] and cat[-1] == 11


def test_loader_options_like_pytorch():
    ds = _ds(10)
    sampler = D.SubsetRandomSampler([0, 2, 4])
    assert sorted(t for _, yb in D.DataLoader(ds, batch_size=2, sampler=sampler) for t in yb.tolist()) == [0, 2, 4]
    batches = list(D.DataLoader(ds, batch_sampler=[[0, 1, 2], [9]]))
    assert [yb.tolist() for _, yb in batches] == [[0, 1, 2], [9]]
    single = list(D.DataLoader(LD.Squares(3), batch_size=None))
    assert single[1][1] == 1 and single[1][0].shape == (2,)
    with pytest.raises(ValueError, match="mutually exclusive"):
        D.DataLoader(ds, sampler=sampler, shuffle=True)
    with pytest.raises(ValueError, match="mutually exclusive"):
        D.DataLoader(ds, batch_sampler=[[0]], batch_size=4)
    with pytest.raises(ValueError, match="num_workers"):
        D.DataLoader(ds, num_workers=-1)
    assert len(D.DataLoader(ds, batch_size=4, pin_memory=True)) == 3


@pytest.mark.parametrize("context", ["spawn", None])
def test_workers_give_the_same_batches_as_the_main_process(context):
    ds = LD.Squares(23)
    main = D.DataLoader(ds, batch_size=4, shuffle=True, seed=5)
    workers = D.DataLoader(ds, batch_size=4, shuffle=True, seed=5, num_workers=2, multiprocessing_context=context)
    for _ in range(2):  # two epochs: new orders, identical in both
        a = [(x.tolist(), y.tolist()) for x, y in main]
        b = [(x.tolist(), y.tolist()) for x, y in workers]
        assert a == b and len(a) == 6


def test_workers_really_are_other_processes():
    pids = [int(p) for batch in D.DataLoader(_PidDataset(), batch_size=2, num_workers=2) for p in batch.tolist()]
    assert os.getpid() not in pids and len(set(pids)) == 2


class _PidDataset(D.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return os.getpid()


def test_a_worker_exception_reaches_the_main_process():
    with pytest.raises(KeyError, match="sample 3 is broken"):
        list(D.DataLoader(LD.Failing(8), batch_size=2, num_workers=2))


def test_workers_are_seeded_differently_and_reproducibly():
    a = [v for b in D.DataLoader(LD.WorkerSeed(), batch_size=4, num_workers=2, seed=1) for v in b.tolist()]
    b = [v for b in D.DataLoader(LD.WorkerSeed(), batch_size=4, num_workers=2, seed=1) for v in b.tolist()]
    assert a == b and a[:4] != a[4:]


def test_worker_init_fn_and_worker_info():
    ids = [int(i) for b in D.DataLoader(LD.WorkerIds(), batch_size=3, num_workers=2,
                                        worker_init_fn=LD.record_worker_id) for i in b.tolist()]
    assert ids == [0, 0, 0, 1, 1, 1]
    assert D.get_worker_info() is None


def test_iterable_dataset_split_between_workers():
    got = sorted(v for b in D.DataLoader(LD.Stream(11), batch_size=3, num_workers=2) for v in b.tolist())
    assert got == list(range(11))
    assert [b.tolist() for b in D.DataLoader(LD.Stream(5), batch_size=2, drop_last=True)] == [[0, 1], [2, 3]]


def test_persistent_workers_serve_several_epochs():
    loader = D.DataLoader(LD.Squares(9), batch_size=4, shuffle=True, seed=2, num_workers=2, persistent_workers=True)
    first = [y.tolist() for _, y in loader]
    second = [y.tolist() for _, y in loader]
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == list(range(9)) and first != second
    loader._iterator.close()


def test_loader_pickles_without_its_workers():
    loader = D.DataLoader(_ds(), batch_size=3, num_workers=1, persistent_workers=True)
    next(iter(loader))
    clone = pickle.loads(pickle.dumps(loader))
    assert clone._iterator is None and len(list(clone)) == 4
    loader._iterator.close()
