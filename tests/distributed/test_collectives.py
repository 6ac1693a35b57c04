"""The collectives against NumPy, on every op and dtype, and their errors (run across MPI ranks).

Each ``check_*`` runs on every rank of one ``mpiexec`` job per world size
(see conftest.py); every rank can regenerate every other rank's input, so
each one compares its result with the NumPy reduction of all inputs.
"""

import numpy as np
import pytest

import minigrad
import minigrad.distributed as dist

DTYPES = ("float32", "float64", "int32", "int64")
OPS = {
    dist.ReduceOp.SUM: lambda a: a.sum(axis=0),
    dist.ReduceOp.AVG: lambda a: a.sum(axis=0) / a.shape[0],
    dist.ReduceOp.PRODUCT: lambda a: a.prod(axis=0),
    dist.ReduceOp.MAX: lambda a: a.max(axis=0),
    dist.ReduceOp.MIN: lambda a: a.min(axis=0),
}


def rank_input(rank, dtype, shape=(3, 5)):
    rng = np.random.default_rng(100 + rank)
    if dtype.startswith("int"):
        return rng.integers(-4, 5, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def assert_close(got, expected, dtype):
    if dtype.startswith("int"):
        np.testing.assert_array_equal(got, expected)
    else:
        tol = 1e-6 if dtype == "float32" else 1e-13
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def check_rank_and_world_size(ctx):
    assert dist.is_initialized()
    assert dist.get_rank() == ctx.rank and dist.get_world_size() == ctx.size
    assert dist.get_backend() == ctx.backend
    seen = minigrad.tensor([float(ctx.rank)], dtype="float64", device=ctx.device)
    dist.all_reduce(seen)
    assert seen.item() == ctx.size * (ctx.size - 1) / 2


def check_all_reduce_every_op_and_dtype(ctx):
    for dtype in DTYPES:
        inputs = np.stack([rank_input(r, dtype) for r in range(ctx.size)])
        for op, reduce in OPS.items():
            if op is dist.ReduceOp.AVG and dtype.startswith("int"):
                continue
            t = minigrad.tensor(inputs[ctx.rank], dtype=dtype, device=ctx.device)
            version = t._version
            assert dist.all_reduce(t, op=op) is None
            assert t._version == version + 1  # an in-place write
            assert t.dtype == np.dtype(dtype)
            assert_close(t.numpy(), reduce(inputs).astype(dtype), dtype)


def check_all_reduce_async_returns_work(ctx):
    inputs = np.stack([rank_input(r, "float64") for r in range(ctx.size)])
    tensors = [minigrad.tensor(inputs[ctx.rank], device=ctx.device) for _ in range(3)]
    works = [dist.all_reduce(t, op=dist.ReduceOp.AVG, async_op=True) for t in tensors]
    assert all(isinstance(w, dist.Work) for w in works)
    for w, t in zip(works, tensors):
        assert w.wait() is True and w.is_completed()
        assert_close(t.numpy(), inputs.mean(axis=0), "float64")


def check_all_reduce_noncontiguous_view(ctx):
    inputs = np.stack([rank_input(r, "float64", (4, 6)) for r in range(ctx.size)])
    base = minigrad.tensor(inputs[ctx.rank].T.copy(), device=ctx.device)
    view = base.transpose(0, 1)  # (4, 6), not contiguous
    dist.all_reduce(view)
    assert_close(view.numpy(), inputs.sum(axis=0), "float64")
    assert_close(base.numpy(), inputs.sum(axis=0).T, "float64")  # written through the view
    view = minigrad.tensor(inputs[ctx.rank].T.copy(), device=ctx.device).transpose(0, 1)
    work = dist.broadcast(view, src=ctx.size - 1, async_op=True)
    work.wait()
    assert_close(view.numpy(), inputs[ctx.size - 1], "float64")


def check_broadcast_from_every_source(ctx):
    for dtype in DTYPES:
        for src in range(ctx.size):
            t = minigrad.tensor(rank_input(ctx.rank, dtype), dtype=dtype, device=ctx.device)
            dist.broadcast(t, src=src)
            np.testing.assert_array_equal(t.numpy(), rank_input(src, dtype))


def check_all_gather(ctx):
    for dtype in DTYPES:
        parts = [minigrad.zeros(3, 5, dtype=dtype, device=ctx.device) for _ in range(ctx.size)]
        dist.all_gather(parts, minigrad.tensor(rank_input(ctx.rank, dtype), dtype=dtype, device=ctx.device))
        for r, p in enumerate(parts):
            np.testing.assert_array_equal(p.numpy(), rank_input(r, dtype))
    parts = [minigrad.zeros(2, device=ctx.device) for _ in range(ctx.size)]
    work = dist.all_gather(parts, minigrad.full((2,), float(ctx.rank), device=ctx.device), async_op=True)
    work.wait()
    assert [p.numpy()[0] for p in parts] == list(range(ctx.size))


def check_barrier(ctx):
    dist.barrier()
    dist.barrier()


def check_ranks_with_different_shapes_all_raise(ctx):
    t = minigrad.zeros(2 + ctx.rank, device=ctx.device)
    if ctx.size == 1:
        pytest.skip("one rank cannot disagree with itself")
    with pytest.raises(dist.DistributedError, match=r"rank 0: float32 \(2,\).*rank 1: float32 \(3,\)"):
        dist.all_reduce(t)
    d = minigrad.zeros(3, dtype="float32" if ctx.rank else "float64", device=ctx.device)
    with pytest.raises(dist.DistributedError, match="different tensors"):
        dist.broadcast(d, src=0)
    with pytest.raises(dist.DistributedError, match="different tensors"):
        dist.all_gather([minigrad.zeros(2 + ctx.rank, device=ctx.device) for _ in range(ctx.size)], t)
    dist.all_reduce(minigrad.zeros(4, device=ctx.device))  # the group still works afterwards


def check_bad_arguments_raise_before_any_communication(ctx):
    t = minigrad.zeros(3, device=ctx.device)
    with pytest.raises(TypeError, match="ReduceOp"):
        dist.all_reduce(t, op="sum")
    with pytest.raises(TypeError, match="AVG needs a floating"):
        dist.all_reduce(minigrad.zeros(3, dtype="int64", device=ctx.device), op=dist.ReduceOp.AVG)
    with pytest.raises(TypeError, match="collectives support"):
        dist.all_reduce(minigrad.zeros(3, dtype="bool", device=ctx.device))
    with pytest.raises(TypeError, match="minigrad Tensor"):
        dist.all_reduce(np.zeros(3))
    with pytest.raises(ValueError, match="src must be a rank"):
        dist.broadcast(t, src=ctx.size)
    with pytest.raises(ValueError, match="world_size"):
        dist.all_gather([t], t) if ctx.size > 1 else dist.all_gather([t, t], t)
    with pytest.raises(ValueError, match="must match"):
        dist.all_gather([minigrad.zeros(4, device=ctx.device) for _ in range(ctx.size)], t)
    with pytest.raises(dist.DistributedError, match="already initialized"):
        dist.init_process_group()


def check_distributed_sampler_takes_rank_and_size_from_the_group(ctx):
    from minigrad.data import DistributedSampler, TensorDataset

    sampler = DistributedSampler(TensorDataset(np.arange(10)), seed=4)
    assert (sampler.rank, sampler.num_replicas) == (ctx.rank, ctx.size)
    mine = minigrad.tensor(np.asarray(list(sampler)), device=ctx.device)
    every = [minigrad.zeros_like(mine) for _ in range(ctx.size)]
    dist.all_gather(every, mine)
    counts = np.bincount(np.concatenate([e.numpy() for e in every]), minlength=10)
    assert counts.min() == 1 and counts.sum() == ctx.size * -(-10 // ctx.size)


def check_destroy_and_initialize_again(ctx):
    first = dist.process_group.default_group()
    dist.destroy_process_group()
    assert not dist.is_initialized()
    with pytest.raises(dist.DistributedError, match="not initialized"):
        dist.get_rank()
    again = dist.init_process_group(ctx.backend, abort_on_exception=False)
    assert again is not first and dist.get_world_size() == ctx.size
    t = minigrad.ones(2, device=ctx.device)
    dist.all_reduce(t)
    assert t.numpy().tolist() == [ctx.size] * 2


WORLD_SIZES = (3,)


def test_on_ranks(mpi_case, mpi_run):
    mpi_run(__file__, *mpi_case)
