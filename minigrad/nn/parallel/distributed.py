"""``DistributedDataParallel``: data-parallel training over a process group (PyTorch's DDP).

Every rank holds a replica of the model and trains on its own share of
each batch; DDP keeps the replicas identical by averaging the gradients
over the ranks during ``backward()``.

How the averaging overlaps the backward walk (the ``_Reducer``): the
parameters are laid out, in reverse registration order (roughly the order
backward produces their gradients), into **buckets** of about
``bucket_cap_mb`` MiB (the first one 1 MiB, so communication starts
early), each bucket one flat array per device and dtype. When a
parameter's gradient is ready its values are copied into its bucket; when
a bucket is complete its all-reduce is started non-blocking (MPI
``Iallreduce``; NCCL on the current stream), buckets strictly in index
order so every rank issues the collectives in the same order. Each
"gradient ready" event also tests the reductions in flight, which drives
MPI's progress while backward goes on. When the last gradient is ready,
DDP waits for the buckets, divides by the world size and writes the
averages back into ``.grad``.

"Gradient ready" is the autograd engine's post-accumulate-grad hook
(``Tensor.register_post_accumulate_grad_hook``), which runs once per
backward for each parameter, after the gradients of all its uses have
been summed into ``.grad``.

A parameter that gets no gradient never hangs the job: DDP walks the
graph of the forward's outputs; a parameter outside it raises an error
naming it, or, with ``find_unused_parameters=True``, is reduced with a
zero contribution (its ``.grad`` stays None if no rank used it).
"""

from __future__ import annotations

import contextlib
import functools
import weakref

from ... import distributed as dist
from ..._ext._engine import Function, TensorBase, make_tensor
from ...autograd import is_grad_enabled
from ...distributed.process_group import _group
from ..module import Module

__all__ = ["DistributedDataParallel"]

_MIB = 1 << 20
#: Buckets of a few MiB (PyTorch's default is 25, tuned for NCCL on large models): enough of them to overlap
#: the averaging with backward on mid-sized models; the first bucket 1 MiB (PyTorch's), so it starts early.
DEFAULT_BUCKET_CAP_MB = 4
FIRST_BUCKET_BYTES = 1 * _MIB


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training: identical replicas, gradients averaged over ranks.

    ``DistributedDataParallel(module, device_ids=None, output_device=None,
    dim=0, broadcast_buffers=True, process_group=None, bucket_cap_mb=None,
    find_unused_parameters=False)``. When wrapped, rank 0's parameters and
    buffers are copied to every rank (after checking that all ranks hold
    the same parameter names, dtypes and shapes). Calling it runs
    ``module``; the following ``backward()`` leaves in each parameter's
    ``.grad`` the average over the ranks of their local gradients, so
    with each rank's loss a mean over its share of the batch, every rank
    steps as one process would on the whole batch. In training mode the
    buffers (e.g. BN running statistics) are re-broadcast from rank 0 at
    each forward when ``broadcast_buffers``. ``no_sync()`` skips the
    averaging (gradient accumulation); ``module`` is the wrapped model;
    ``state_dict()`` is the wrapped model's (it loads into the unwrapped
    model, and ``load_state_dict`` accepts keys with or without PyTorch's
    ``"module."`` prefix). ``device_ids``/``output_device`` may name the
    model's own device (PyTorch code passes them); ``bucket_cap_mb``
    defaults to 4.

    Example::

        dist.init_process_group()
        model = DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(net))
        opt = optim.SGD(model.parameters(), lr=0.1)
        loss = F.cross_entropy(model(x_local), y_local)
        opt.zero_grad(); loss.backward(); opt.step()      # same parameters on every rank
    """

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=None, find_unused_parameters=False):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a minigrad Module, got {type(module).__name__}")
        if not dist.is_initialized() and process_group is None:
            raise dist.DistributedError("DistributedDataParallel needs a process group: call "
                                        "minigrad.distributed.init_process_group() first")
        if dim != 0:
            raise ValueError(f"DistributedDataParallel: only dim=0 (the batch axis) is supported, got {dim!r}")
        if bucket_cap_mb is None:
            bucket_cap_mb = DEFAULT_BUCKET_CAP_MB
        if not isinstance(bucket_cap_mb, (int, float)) or isinstance(bucket_cap_mb, bool) or bucket_cap_mb < 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be a number >= 0, got {bucket_cap_mb!r}")
        self.module = module
        self.process_group = _group(process_group)
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.require_backward_grad_sync = True
        self.bucket_bytes_cap = int(bucket_cap_mb * _MIB)
        _check_devices(module, device_ids, output_device)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        group = self.process_group
        _verify_same_model(module, group)
        _broadcast_coalesced([p for p in module.parameters()] + list(module.buffers()), group)
        self._reducer = _Reducer(named, group, self.bucket_bytes_cap, self.find_unused_parameters)

    def forward(self, *inputs, **kwargs):
        """Run the wrapped module; with grad enabled (and outside ``no_sync``) prepare the gradient averaging."""
        reducer = self._reducer
        reducer.check_finished()
        if self.training and self.broadcast_buffers:
            _broadcast_coalesced(list(self.module.buffers()), self.process_group)
        out = self.module(*inputs, **kwargs)
        if is_grad_enabled() and self.require_backward_grad_sync:
            reducer.prepare_for_backward(out)
        return out

    @contextlib.contextmanager
    def no_sync(self):
        """A context in which backward accumulates local gradients without averaging them.

        The first backward after the block averages the accumulated
        gradients (those of every micro-batch), so k micro-batches with
        ``no_sync`` for all but the last equal one step on all of them.

        Example::

            with ddp.no_sync():
                for xb, yb in micro_batches[:-1]:
                    F.cross_entropy(ddp(xb), yb).backward()
            F.cross_entropy(ddp(x_last), y_last).backward()   # averages everything
            opt.step()
        """
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    def state_dict(self, prefix: str = ""):
        """The wrapped module's state dict (no ``"module."`` prefix: it loads into the unwrapped model)."""
        return self.module.state_dict(prefix)

    def load_state_dict(self, state_dict, strict: bool = True):
        """Load into the wrapped module; keys may carry PyTorch's ``"module."`` prefix."""
        if hasattr(state_dict, "items") and state_dict and all(k.startswith("module.") for k in state_dict):
            state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
        return self.module.load_state_dict(state_dict, strict)

    def extra_repr(self) -> str:
        return (f"world_size={self.process_group.size}, buckets={len(self._reducer.buckets)}, "
                f"find_unused_parameters={self.find_unused_parameters}")


# ------------------------------------------------------------------ checks
def _check_devices(module, device_ids, output_device):
    """``device_ids``/``output_device`` may only name the device the module is on (one device per rank)."""
    from ...device import Device

    devices = {p.device for p in module.parameters()}
    if len(devices) > 1:
        raise ValueError(f"DistributedDataParallel: the module's parameters are on several devices "
                         f"({sorted(map(str, devices))}); put the replica on one device per rank")
    for what, given in (("device_ids", device_ids), ("output_device", output_device)):
        if given is None:
            continue
        items = list(given) if what == "device_ids" and isinstance(given, (list, tuple)) else [given]
        wanted = [Device(f"cuda:{d}" if isinstance(d, int) else d) for d in items]
        if len(wanted) != 1 or (devices and wanted[0] not in devices):
            raise ValueError(f"DistributedDataParallel: {what}={given!r} must name the module's device "
                             f"({', '.join(map(str, devices)) or 'none'}); move the model with .to(device) first")


def _verify_same_model(module, group):
    """Every rank must wrap the same parameters and buffers (names, dtypes, shapes); else all ranks raise."""
    mine = [(n, t.dtype.name, tuple(t.shape)) for n, t in list(module.named_parameters()) + list(module.named_buffers())]
    every = group.allgather_object(mine)
    for r, theirs in enumerate(every):
        if theirs != every[0]:
            diff = next((a, b) for a, b in zip(every[0] + [None], theirs + [None]) if a != b)
            raise dist.DistributedError(
                f"DistributedDataParallel: rank {r}'s model differs from rank 0's: rank 0 has {diff[0]}, rank {r} has "
                f"{diff[1]} (name, dtype, shape); every rank must wrap the same model"
            )


def _broadcast_coalesced(tensors, group, src=0):
    """Overwrite ``tensors`` with rank ``src``'s values: one broadcast per (device, dtype), flattened."""
    for (backend, _), members in _by_device_and_dtype(tensors).items():
        xp = backend.xp
        flat = xp.concatenate([t.array.reshape(-1) for t in members])
        group.broadcast(flat, src, backend, async_op=False)
        offset = 0
        for t in members:
            t.array[...] = flat[offset:offset + t.array.size].reshape(t.shape)
            offset += t.array.size


def _by_device_and_dtype(tensors):
    groups = {}
    for t in tensors:
        if t is not None and t.array.size:
            groups.setdefault((t.backend, t.dtype), []).append(t)
    return groups


def _graph_leaves(outputs) -> set:
    """The ids of the leaf tensors the graph of ``outputs`` (nested tuples/lists/dicts of Tensors) depends on."""
    stack, leaves, seen = [outputs], set(), set()
    while stack:
        item = stack.pop()
        if isinstance(item, TensorBase):
            node = item.grad_fn
            if node is None:
                leaves.add(id(item))
            elif id(node) not in seen:
                seen.add(id(node))
                stack.extend(p for p in node.parents or () if p is not None)
        elif isinstance(item, Function):
            if id(item) not in seen:
                seen.add(id(item))
                stack.extend(p for p in item.parents or () if p is not None)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return leaves


# ----------------------------------------------------------------- reducer
class _Bucket:
    """Parameters whose gradients are averaged by one collective: a flat buffer of their gradients,
    then one "used" flag per parameter (summed over ranks: how many ranks had a gradient)."""

    __slots__ = ("params", "names", "offsets", "numel", "backend", "buffer", "ready", "pending", "work")

    def __init__(self, named):
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.offsets, offset = [], 0
        for p in self.params:
            self.offsets.append(offset)
            offset += p.array.size
        self.numel = offset
        self.backend = self.params[0].backend
        self.buffer = self.backend.xp.zeros(offset + len(self.params), dtype=self.params[0].dtype)
        self.ready = [False] * len(self.params)
        self.pending = 0
        self.work = None

    def reset(self):
        self.ready = [False] * len(self.params)
        self.pending = len(self.params)
        self.work = None


class _Reducer:
    """Buckets, "gradient ready" bookkeeping, in-order non-blocking launches and the final write-back."""

    def __init__(self, named, group, cap_bytes, find_unused):
        self.group = group
        self.find_unused = find_unused
        self.buckets = _assign_buckets(named[::-1], cap_bytes)
        self.slot = {id(p): (b, i) for b in self.buckets for i, p in enumerate(b.params)}
        self.open = False        # a forward prepared a reduction that has not finished
        self.hooked = False      # a gradient arrived in this round (so an unfinished round is an error)
        self.next_launch = 0
        # The hooks hold only a weak reference: a discarded DDP (and its buffers) is not kept alive by its model.
        ref = weakref.ref(self)
        self.handles = [p.register_post_accumulate_grad_hook(functools.partial(_notify, ref)) for _, p in named]

    def __del__(self):
        for handle in getattr(self, "handles", ()):
            handle.remove()

    # ---------------------------------------------------- "gradient ready"
    def _on_accumulated(self, param):
        """The engine's post-accumulate-grad hook: ``param.grad`` is complete for this backward."""
        if self.open:
            self.grad_ready(param, param.grad.array)

    # -------------------------------------------------------------- rounds
    def check_finished(self):
        """Raise if the last backward reported some gradients but not all (PyTorch's check)."""
        if self.open and self.hooked:
            missing = [n for b in self.buckets for n, r in zip(b.names, b.ready) if not r]
            raise RuntimeError(
                "DistributedDataParallel: the previous backward did not produce gradients for these parameters, "
                f"so their averaging never finished: {missing}. Make every parameter take part in the loss, or "
                "wrap the model with find_unused_parameters=True"
            )

    def prepare_for_backward(self, outputs):
        """Start a round: every parameter expects a gradient, except those outside the outputs' graph."""
        for b in self.buckets:
            b.reset()
        self.open, self.hooked, self.next_launch = True, False, 0
        reached = _graph_leaves(outputs)
        unused = [(b.names[i], p) for b in self.buckets for i, p in enumerate(b.params) if id(p) not in reached]
        if not unused:
            return
        if not self.find_unused:
            self.open = False
            raise RuntimeError(
                "DistributedDataParallel: these parameters were not used to compute the forward's output, so they "
                f"would never receive a gradient: {[n for n, _ in unused]}. Wrap the model with "
                "find_unused_parameters=True to average them as zeros, or set requires_grad=False on them"
            )
        for _, p in unused:  # a zero contribution, or what no_sync accumulated
            self._store(p, None if p.grad is None else p.grad.array)

    def grad_ready(self, param, grad):
        """``param``'s complete local gradient ``grad`` is ready: bucket it, launch what is complete."""
        self.hooked = True
        self._store(param, grad)
        self._launch_ready()
        for b in self.buckets[:self.next_launch]:
            b.work.is_completed()  # lets MPI progress the reductions in flight
        if self.next_launch == len(self.buckets):
            self._finish()

    def _store(self, param, grad):
        b, i = self.slot[id(param)]
        if b.ready[i]:
            raise RuntimeError(f"DistributedDataParallel: parameter {b.names[i]!r} received a gradient twice in one "
                               f"round (a second backward through the same forward?)")
        b.ready[i] = True
        b.pending -= 1
        start, n = b.offsets[i], param.array.size
        if grad is None:
            b.buffer[start:start + n] = 0
            b.buffer[b.numel + i] = 0
        else:
            b.buffer[start:start + n] = grad.reshape(-1)
            b.buffer[b.numel + i] = 1

    def _launch_ready(self):
        while self.next_launch < len(self.buckets) and self.buckets[self.next_launch].pending == 0:
            b = self.buckets[self.next_launch]
            b.work = self.group.allreduce(b.buffer, dist.ReduceOp.SUM, b.backend, async_op=True)
            self.next_launch += 1

    def _finish(self):
        """Wait for every bucket; write the averages into ``.grad`` (untouched where no rank had a gradient)."""
        self.open = False
        size = self.group.size
        for b in self.buckets:
            b.work.wait()
            grads = b.buffer[:b.numel]
            grads /= size
            used = b.backend.to_numpy(b.buffer[b.numel:])
            for i, p in enumerate(b.params):
                if not used[i]:
                    continue
                start = b.offsets[i]
                # A new array, never an in-place write: during backward the old .grad array may also be a
                # gradient still on its way to another node.
                p.grad = make_tensor(grads[start:start + p.array.size].reshape(p.shape).copy(), p.backend)


def _notify(reducer_ref, param):
    reducer = reducer_ref()
    if reducer is not None:
        reducer._on_accumulated(param)


def _assign_buckets(named, cap_bytes):
    """Split ``named`` (in reduction order) into buckets of one device and dtype, each closed once it
    reaches the cap (the first bucket's cap is 1 MiB, or the cap if smaller)."""
    open_buckets, buckets = {}, []
    for name, p in named:
        key = (p.backend, p.dtype)
        members = open_buckets.setdefault(key, [])
        members.append((name, p))
        cap = min(cap_bytes, FIRST_BUCKET_BYTES) if not buckets else cap_bytes
        if sum(q.array.nbytes for _, q in members) >= cap:
            buckets.append(_Bucket(members))
            del open_buckets[key]
    buckets.extend(_Bucket(m) for m in open_buckets.values())
    return buckets
