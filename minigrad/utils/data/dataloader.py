"""``DataLoader``: PyTorch's loader (samplers, collation, worker processes), batches as minigrad Tensors."""

from __future__ import annotations

import itertools
import numbers
import queue
import time

import numpy as np

from ... import random as _random
from ..._ext._engine import TensorBase
from . import _worker
from .collate import default_collate, default_convert
from .dataset import IterableDataset
from .sampler import BatchSampler, RandomSampler, SequentialSampler

__all__ = ["DataLoader"]

# How often the main process looks whether its workers are still alive while it waits.
_POLL_SECONDS = 1.0


def _non_negative_int(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _to_device(batch, device):
    """Move every Tensor of a (nested) batch to ``device`` (the default device when None)."""
    from ...device import get_default_device

    target = get_default_device() if device is None else device
    if isinstance(batch, TensorBase):
        return batch if batch.device == target else batch.to(target)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class DataLoader:
    """Iterate over a dataset in batches, as ``torch.utils.data.DataLoader``.

    Args:
        dataset: a map-style ``Dataset`` (anything with ``__len__`` and
            ``__getitem__``) or an ``IterableDataset``.
        batch_size: samples per batch; None turns batching off (each sample
            is converted by ``default_convert``).
        shuffle: a new random order every epoch (draws from ``generator``).
        sampler: the order of the indices (excludes ``shuffle``).
        batch_sampler: yields whole lists of indices (excludes
            ``batch_size``, ``shuffle``, ``sampler`` and ``drop_last``).
        num_workers: worker processes loading batches in parallel (0: load
            in the main process). Workers start with ``multiprocessing_context``
            (default: the platform's), so the dataset, ``collate_fn`` and
            ``worker_init_fn`` must be picklable under ``spawn``.
        collate_fn: turns a list of samples into a batch (``default_collate``).
        pin_memory: accepted for compatibility; batches are moved to
            ``device`` by the main process.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        timeout: seconds to wait for a batch from the workers (0: forever);
            past it a RuntimeError is raised.
        worker_init_fn: called as ``worker_init_fn(worker_id)`` in each
            worker after seeding it.
        multiprocessing_context: a start method ("spawn", "fork",
            "forkserver") or a context.
        generator: a ``numpy.random.Generator`` for the shuffling.
        prefetch_factor: batches loaded in advance per worker (default 2).
        persistent_workers: keep the workers between epochs.
        in_order: hand batches out in sampler order (else as they arrive).
        seed: minigrad's shorthand for ``generator=numpy.random.default_rng(seed)``;
            with neither, the seed is ``minigrad.initial_seed()``, so a program
            that calls ``minigrad.manual_seed`` is reproducible.
        device: where batches go (default: the default device, the CPU unless
            changed).

    Each ``iter(loader)`` is one epoch; successive epochs draw successive
    permutations from the same generator, with the same result for any
    ``num_workers``. Worker ``i`` is seeded with ``base_seed + i`` (minigrad,
    NumPy's global and ``random``), a new ``base_seed`` every epoch.

    Example::

        loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, num_workers=2)
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
    """

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0, worker_init_fn=None,
                 multiprocessing_context=None, generator=None, *, prefetch_factor=None, persistent_workers=False,
                 pin_memory_device="", in_order=True, seed=None, device=None):
        iterable = isinstance(dataset, IterableDataset)
        if not iterable and (not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader needs a Dataset (with __len__ and __getitem__), got {type(dataset).__name__}")
        self.dataset = dataset
        self.num_workers = _non_negative_int(num_workers, "num_workers")
        if not (isinstance(timeout, numbers.Real) and timeout >= 0):
            raise ValueError(f"timeout option should be non-negative, got {timeout!r}")
        self.timeout = timeout
        if prefetch_factor is not None and self.num_workers == 0:
            raise ValueError("prefetch_factor option could only be specified in multiprocessing; "
                             "let num_workers > 0 to enable multiprocessing")
        self.prefetch_factor = 2 if prefetch_factor is None else _non_negative_int(prefetch_factor, "prefetch_factor")
        if persistent_workers and self.num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        self.persistent_workers = bool(persistent_workers)
        self.pin_memory, self.pin_memory_device = bool(pin_memory), pin_memory_device
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.in_order = bool(in_order)
        self.device = device
        if seed is not None and generator is not None:
            raise ValueError("DataLoader: give either seed or generator, not both")
        if generator is not None:
            if not isinstance(generator, np.random.Generator):
                raise TypeError(f"generator must be a numpy.random.Generator, got {type(generator).__name__}")
            self.generator = generator
            seed = getattr(getattr(generator.bit_generator, "seed_seq", None), "entropy", None) or 0
        else:
            if seed is None:
                seed = _random.initial_seed()
            elif not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
                raise ValueError(f"seed must be a non-negative int, got {seed!r}")
            self.generator = np.random.default_rng(int(seed))
        # Worker seeds come from their own stream, so the batches do not depend on num_workers.
        self._worker_seeds = np.random.SeedSequence([int(seed) % 2**63, 0x6D696E69])

        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, "
                                 "and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is not None:
            if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size <= 0:
                raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
            batch_size = int(batch_size)
        elif drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")
        if iterable:
            if shuffle:
                raise ValueError(f"DataLoader with IterableDataset: expected unspecified shuffle option, but got "
                                 f"shuffle={shuffle}")
            if sampler is not None or batch_sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified sampler and batch_sampler")
        elif sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        self.shuffle = bool(shuffle)
        self.batch_size, self.drop_last = batch_size, bool(drop_last)
        if not iterable and sampler is None:
            sampler = RandomSampler(dataset, generator=self.generator) if shuffle else SequentialSampler(dataset)
        if not iterable and batch_sampler is None and batch_size is not None:
            batch_sampler = BatchSampler(sampler, batch_size, self.drop_last)
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.collate_fn = collate_fn if collate_fn is not None else (
            default_collate if self._auto_collation else default_convert)
        self._iterator = None

    @property
    def _auto_collation(self) -> bool:
        return self.batch_sampler is not None or (isinstance(self.dataset, IterableDataset)
                                                  and self.batch_size is not None)

    def __len__(self) -> int:
        """Number of batches per epoch (for an IterableDataset, from its ``__len__``)."""
        if isinstance(self.dataset, IterableDataset):
            n = len(self.dataset)
            if self.batch_size is None:
                return n
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return len(self.batch_sampler if self.batch_sampler is not None else self.sampler)

    def _index_stream(self):
        """What each batch request carries: lists of indices, single indices, or (for a stream) the batch size."""
        if isinstance(self.dataset, IterableDataset):
            return itertools.repeat(self.batch_size)
        if isinstance(self.batch_sampler, BatchSampler):
            return self.batch_sampler._index_batches()
        return iter(self.batch_sampler if self.batch_sampler is not None else self.sampler)

    def __iter__(self):
        if self.num_workers == 0:
            return self._single_process()
        if self.persistent_workers:
            if self._iterator is None:
                self._iterator = _WorkerPool(self)
            else:
                self._iterator.reset()
            return self._iterator.epoch(self)
        pool = _WorkerPool(self)
        return pool.epoch(self, close_after=True)

    def _single_process(self):
        iterable = isinstance(self.dataset, IterableDataset)
        iterator = iter(self.dataset) if iterable else None
        for indices in self._index_stream():
            try:
                batch = _worker.fetch(self.dataset, indices, self.collate_fn, self._auto_collation, iterator,
                                      self.drop_last)
            except StopIteration:
                return
            yield _to_device(batch, self.device)

    def __repr__(self) -> str:
        size = len(self.dataset) if hasattr(self.dataset, "__len__") else "?"
        return (f"DataLoader({type(self.dataset).__name__} of {size}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, num_workers={self.num_workers}, "
                f"device={self.device!r})")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_iterator"] = None  # worker processes do not travel
        return state


class _WorkerPool:
    """The worker processes of one loader, one index queue each and a shared result queue."""

    def __init__(self, loader):
        import multiprocessing  # only loaders with workers pay for importing it

        ctx = loader.multiprocessing_context
        if ctx is None or isinstance(ctx, str):
            ctx = multiprocessing.get_context(ctx)
        self.num_workers = loader.num_workers
        self.timeout = loader.timeout
        self.result_queue = ctx.Queue()
        self.index_queues, self.workers = [], []
        base_seed = int(loader._worker_seeds.spawn(1)[0].generate_state(1, np.uint64)[0] >> 2)
        for wid in range(self.num_workers):
            q = ctx.Queue()
            w = ctx.Process(
                target=_worker.worker_loop,
                args=(loader.dataset, q, self.result_queue, loader.collate_fn, loader._auto_collation,
                      loader.drop_last, base_seed + wid, wid, self.num_workers, loader.worker_init_fn),
                daemon=True,
            )
            w.start()
            self.index_queues.append(q)
            self.workers.append(w)
        self.closed = False
        self.epochs = 0
        self.iterable = isinstance(loader.dataset, IterableDataset)

    def reset(self):
        """Start a new epoch on persistent workers (a stream starts its iteration again)."""
        if self.iterable:
            for q in self.index_queues:
                q.put(_worker.RESET)

    def _get(self):
        start = time.monotonic()
        while True:
            wait = _POLL_SECONDS if not self.timeout else min(_POLL_SECONDS, self.timeout)
            try:
                return self.result_queue.get(timeout=wait)
            except queue.Empty:
                dead = [w for w in self.workers if not w.is_alive()]
                if dead:
                    self.close()
                    pids = ", ".join(f"pid {w.pid}, exit code {w.exitcode}" for w in dead)
                    raise RuntimeError(f"DataLoader worker ({pids}) exited unexpectedly") from None
                if self.timeout and time.monotonic() - start >= self.timeout:
                    self.close()
                    raise RuntimeError(f"DataLoader timed out after {self.timeout} seconds") from None

    def epoch(self, loader, close_after=False):
        """Yield the batches of one epoch, ``prefetch_factor`` requests ahead per worker."""
        self.epochs += 1
        epoch = self.epochs
        requests = loader._index_stream()
        outstanding, buffered = set(), {}
        sent = handed = 0
        active = list(range(self.num_workers))
        ahead = max(1, loader.prefetch_factor) * self.num_workers

        def send():
            nonlocal sent
            while active and len(outstanding) < ahead:
                try:
                    indices = next(requests)
                except StopIteration:
                    return
                self.index_queues[active[sent % len(active)]].put(((epoch, sent), indices))
                outstanding.add(sent)
                sent += 1

        try:
            send()
            while outstanding or buffered:
                key = handed if loader.in_order else next(iter(buffered), None)
                if key in buffered:
                    data = buffered.pop(key)
                    handed += 1
                    if isinstance(data, _worker.ExceptionWrapper):
                        self.close()
                        data.reraise()
                    if not isinstance(data, _worker.IterableEnd):
                        yield _to_device(data, loader.device)
                    continue
                (result_epoch, idx), data = self._get()
                if result_epoch != epoch:  # left over from an epoch that was abandoned
                    continue
                outstanding.discard(idx)
                buffered[idx] = data
                if isinstance(data, _worker.IterableEnd) and data.worker_id in active:
                    active.remove(data.worker_id)
                send()
        finally:
            if close_after:
                self.close()

    def close(self):
        """Stop the workers (asking first, then terminating those that do not stop)."""
        if self.closed:
            return
        self.closed = True
        for q in self.index_queues:
            try:
                q.put(None)
            except (OSError, ValueError):
                pass
        for w in self.workers:
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()
                w.join(timeout=5)
        for q in self.index_queues + [self.result_queue]:
            q.cancel_join_thread()
            q.close()

    def __del__(self):
        self.close()
