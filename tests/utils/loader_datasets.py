"""Datasets for the DataLoader tests, in an importable module so worker processes started with
``spawn`` can unpickle them (a class defined in a test file could not be imported by name)."""

import numpy as np

from minigrad.utils.data import Dataset, IterableDataset, get_worker_info


class Squares(Dataset):
    """``(array([i, i²]), i)`` for i in range(n)."""

    def __init__(self, n=10):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.array([i, i * i], dtype=np.float32), i


class Failing(Squares):
    """Raises on one index, to test that a worker's exception reaches the main process."""

    def __getitem__(self, i):
        if i == 3:
            raise KeyError("sample 3 is broken")
        return super().__getitem__(i)


class Stream(IterableDataset):
    """0..n-1, split between workers with get_worker_info (PyTorch's documented pattern)."""

    def __init__(self, n=10):
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))

    def __len__(self):
        return self.n


class WorkerSeed(Dataset):
    """Returns a draw of minigrad's generator: tells whether workers are seeded differently."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        import minigrad

        return float(minigrad.rand(1).item())


def record_worker_id(worker_id):
    """A worker_init_fn: remembers its id in the process (read back through WorkerIds)."""
    global WORKER_ID
    WORKER_ID = worker_id


WORKER_ID = None


class WorkerIds(Dataset):
    """Returns the id recorded by ``record_worker_id`` in the process that loads the sample."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return WORKER_ID
