"""DistributedSampler: the ranks together visit the dataset once per epoch (one process, explicit ranks)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad
from minigrad.data import DataLoader, DistributedSampler, TensorDataset


def dataset(n):
    return TensorDataset(np.arange(n, dtype=np.float32).reshape(n, 1), np.arange(n))


@given(n=st.integers(1, 60), replicas=st.integers(1, 5), shuffle=st.booleans(), drop_last=st.booleans(),
       seed=st.integers(0, 2**31), epoch=st.integers(0, 3))
def test_ranks_cover_the_dataset_once_per_epoch(n, replicas, shuffle, drop_last, seed, epoch):
    samplers = [DistributedSampler(dataset(n), replicas, r, shuffle=shuffle, seed=seed, drop_last=drop_last)
                for r in range(replicas)]
    for s in samplers:
        s.set_epoch(epoch)
    parts = [list(s) for s in samplers]
    lengths = {len(p) for p in parts} | {len(s) for s in samplers}
    assert len(lengths) == 1, "every rank gets the same number of samples (DDP steps in lockstep)"
    everything = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    counts = np.bincount(everything, minlength=n)
    if n % replicas == 0:
        assert np.all(counts == 1), "divisible: each sample exactly once"
    elif drop_last:
        assert counts.max() <= 1 and counts.sum() == n - n % replicas
    else:
        # padded with the first indices of the order: each sample once, the padding at most once more
        assert np.all(counts >= 1) and counts.sum() == len(everything) == replicas * -(-n // replicas)
    if shuffle:
        order = np.random.default_rng(seed + epoch).permutation(n)
    else:
        order = np.arange(n)
    # rank r holds positions r, r + replicas, ... of the order (padded cyclically, or cut with drop_last)
    interleaved = np.stack([np.asarray(p, dtype=np.int64) for p in parts], axis=1).reshape(-1)
    assert np.array_equal(interleaved, np.resize(order, len(everything)))


def test_epochs_reshuffle_and_the_seed_is_shared():
    ds = dataset(40)
    a, b = DistributedSampler(ds, 2, 0, seed=3), DistributedSampler(ds, 2, 1, seed=3)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert not set(a) & set(b)
    assert list(DistributedSampler(ds, 2, 0, shuffle=False)) == list(range(0, 40, 2))


def test_with_the_data_loader():
    ds = dataset(10)
    sampler = DistributedSampler(ds, num_replicas=3, rank=1, shuffle=False)
    loader = DataLoader(ds, batch_size=2, sampler=sampler)
    assert len(loader) == 2
    seen = [int(v) for _, yb in loader for v in yb.numpy()]
    assert seen == [1, 4, 7, 0]  # positions 1, 4, 7, 10 of the order padded with its start
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(ds, batch_size=2, sampler=sampler, shuffle=True)


def test_arguments():
    ds = dataset(5)
    assert not minigrad.distributed.is_initialized()
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(ds)
    with pytest.raises(ValueError, match="rank should be in the interval"):
        DistributedSampler(ds, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas"):
        DistributedSampler(ds, num_replicas=0, rank=0)
    with pytest.raises(ValueError, match="epoch"):
        DistributedSampler(ds, 1, 0).set_epoch(-1)
    assert "num_replicas=1" in repr(DistributedSampler(ds, 1, 0))
