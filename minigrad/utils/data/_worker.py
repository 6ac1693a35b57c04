"""The worker process of a ``DataLoader`` (module level and picklable, so it runs under ``spawn``)."""

from __future__ import annotations

import random
import sys
import traceback
import numpy as np

_worker_info = None


class WorkerInfo:
    """What a worker process knows about itself (see ``get_worker_info``): ``id``, ``num_workers``,
    ``seed`` and its copy of the ``dataset``."""

    __slots__ = ("id", "num_workers", "seed", "dataset")

    def __init__(self, id, num_workers, seed, dataset):
        self.id, self.num_workers, self.seed, self.dataset = id, num_workers, seed, dataset

    def __repr__(self) -> str:
        return f"WorkerInfo(id={self.id}, num_workers={self.num_workers}, seed={self.seed})"


def get_worker_info():
    """In a ``DataLoader`` worker process: its ``WorkerInfo`` (``id``, ``num_workers``, ``seed``,
    ``dataset``); None in the main process.

    An ``IterableDataset`` uses it to give each worker its share of the stream.
    """
    return _worker_info


class ExceptionWrapper:
    """An exception raised in a worker, carried to the main process with its traceback as text."""

    def __init__(self, where: str):
        exc_type, exc, _ = sys.exc_info()
        self.exc_type = exc_type
        self.message = f"Caught {exc_type.__name__} {where}.\nOriginal {traceback.format_exc()}"

    def reraise(self):
        """Raise the exception again in this process (as a RuntimeError if its type cannot take a message)."""
        try:
            exc = self.exc_type(self.message)
        except Exception:
            exc = RuntimeError(self.message)
        raise exc


class IterableEnd:
    """Sent by a worker whose copy of an ``IterableDataset`` is exhausted."""

    def __init__(self, worker_id):
        self.worker_id = worker_id


RESET = "reset"  # a persistent worker of an IterableDataset starts its iteration again


def fetch(dataset, indices, collate_fn, auto_collation, iterator, drop_last=False):
    """One batch: the samples at ``indices`` (map-style) or the next ones of ``iterator``, collated.

    For a stream, ``indices`` is the batch size; StopIteration ends it.
    """
    from .collate import default_collate, tensor_dataset_batch
    from .dataset import TensorDataset

    if iterator is not None:
        if not auto_collation:
            return collate_fn(next(iterator))
        samples = []
        for _ in range(indices):
            try:
                samples.append(next(iterator))
            except StopIteration:
                break
        if not samples or (drop_last and len(samples) < indices):
            raise StopIteration
        return collate_fn(samples)
    if not auto_collation:
        return collate_fn(dataset[indices])
    if collate_fn is default_collate and type(dataset) is TensorDataset:
        return tensor_dataset_batch(dataset, indices)
    return collate_fn([dataset[i] for i in indices])


def worker_loop(dataset, index_queue, result_queue, collate_fn, auto_collation, drop_last, seed,
                worker_id, num_workers, worker_init_fn):
    """Serve ``(task, indices)`` requests from ``index_queue`` until it sends None."""
    global _worker_info
    import minigrad

    minigrad.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
    iterator = None
    from .dataset import IterableDataset

    try:
        if worker_init_fn is not None:
            worker_init_fn(worker_id)
        if isinstance(dataset, IterableDataset):
            iterator = iter(dataset)
        init_error = None
    except Exception:
        init_error = ExceptionWrapper(f"in DataLoader worker process {worker_id}")
    exhausted = False
    while True:
        task = index_queue.get()
        if task is None:
            break
        if task == RESET:
            iterator, exhausted = iter(dataset), False
            continue
        idx, indices = task
        if init_error is not None:
            data = init_error
        elif exhausted:
            data = IterableEnd(worker_id)
        else:
            try:
                data = fetch(dataset, indices, collate_fn, auto_collation, iterator, drop_last)
            except StopIteration:
                exhausted, data = True, IterableEnd(worker_id)
            except Exception:
                data = ExceptionWrapper(f"in DataLoader worker process {worker_id}")
        result_queue.put((idx, data))
    result_queue.close()
    result_queue.join_thread()
