"""SyncBatchNorm across ranks equals one BatchNorm over the concatenated batch (run across MPI ranks).

Every rank draws the same global batch and upstream gradient, runs
SyncBatchNorm on its own (uneven, possibly empty) slice, and compares
with a plain BatchNorm it runs on the whole batch: outputs, input
gradients, the γ/β gradients summed over ranks, and the running
statistics, step after step; then eval mode.
"""

import numpy as np
import pytest

import minigrad
import minigrad.distributed as dist
from minigrad import nn

# Per-rank batch sizes for each world size: uneven, with an empty rank.
SPLITS = {1: [(6,)], 2: [(5, 0), (2, 5)], 3: [(3, 0, 5), (1, 4, 2)]}
# (reference class, per-sample shape): (N, C), (N, C, L), (N, C, H, W).
CASES = [(nn.BatchNorm1d, (3,)), (nn.BatchNorm1d, (3, 4)), (nn.BatchNorm2d, (3, 2, 3))]
TOL = {"float64": dict(rtol=1e-10, atol=1e-10), "float32": dict(rtol=2e-4, atol=2e-5),
       "float16": dict(rtol=2e-3, atol=2e-3)}  # float16 input, float32 module: an ulp or two of float16


class CountingGroup(dist.ProcessGroup):
    """The default group, counting the collectives it is asked for."""

    def __init__(self, inner):
        self.inner, self.rank, self.size, self.backend = inner, inner.rank, inner.size, inner.backend
        self.calls = []

    def allreduce(self, *args, **kwargs):
        self.calls.append("allreduce")
        return self.inner.allreduce(*args, **kwargs)

    def allgather(self, *args, **kwargs):
        self.calls.append("allgather")
        return self.inner.allgather(*args, **kwargs)

    def broadcast(self, *args, **kwargs):
        self.calls.append("broadcast")
        return self.inner.broadcast(*args, **kwargs)


def host(t):
    return t.detach().numpy().astype(np.float64)


def randomize(*modules, seed=0):
    rng = np.random.default_rng(seed)
    w, b = rng.uniform(0.5, 1.5, modules[0].num_features), rng.standard_normal(modules[0].num_features)
    for m in modules:
        if m.affine:
            m.weight.array[...] = w
            m.bias.array[...] = b


def compare_training(ctx, ref_cls, sample_shape, split, dtype, momentum=0.1, steps=3, input_dtype=None):
    """``input_dtype``: the inputs' dtype when it is not the modules' (float16 into float32 modules)."""
    c = sample_shape[0]
    kwargs = dict(momentum=momentum, device=ctx.device, dtype=dtype)
    ref = ref_cls(c, **kwargs)
    sync = nn.SyncBatchNorm(c, **kwargs)
    randomize(ref, sync)
    start, total = sum(split[:ctx.rank]), sum(split)
    stop = start + split[ctx.rank]
    tol = TOL[input_dtype or dtype]
    dtype = input_dtype or dtype
    for step in range(steps):
        rng = np.random.default_rng(10 + step)
        xa = rng.standard_normal((total,) + sample_shape) * 2.0 + 0.5
        dya = rng.standard_normal(xa.shape)
        x = minigrad.tensor(xa, dtype=dtype, device=ctx.device, requires_grad=True)
        y = ref(x)
        y.backward(minigrad.tensor(dya, dtype=dtype, device=ctx.device))
        xl = minigrad.tensor(xa[start:stop], dtype=dtype, device=ctx.device, requires_grad=True)
        yl = sync(xl)
        assert yl.shape == xl.shape and yl.dtype == xl.dtype
        yl.backward(minigrad.tensor(dya[start:stop], dtype=dtype, device=ctx.device))
        where = f"{ref_cls.__name__}{sample_shape} split {split} {dtype} step {step}"
        ctx.expect_close(host(yl), host(y)[start:stop], **tol, err_msg=f"output, {where}")
        ctx.expect_close(host(xl.grad), host(x.grad)[start:stop], **tol, err_msg=f"dx, {where}")
        for name in ("weight", "bias"):
            local = getattr(sync, name).grad.detach().clone()
            dist.all_reduce(local)  # each rank holds its share of dγ, dβ; their sum is the global one
            ctx.expect_close(host(local), host(getattr(ref, name).grad), **tol, err_msg=f"d{name}, {where}")
        for name in ("running_mean", "running_var"):
            ctx.expect_close(host(getattr(sync, name)), host(getattr(ref, name)), **tol, err_msg=f"{name}, {where}")
        ctx.expect(sync.num_batches_tracked.item() == ref.num_batches_tracked.item() == step + 1,
                   f"num_batches_tracked {sync.num_batches_tracked.item()}, expected {step + 1}, {where}")
        for m in (ref, sync):
            m.zero_grad()
    ref.eval()
    sync.eval()
    xe = minigrad.tensor(np.random.default_rng(99).standard_normal((4,) + sample_shape), dtype=dtype,
                         device=ctx.device)
    ctx.expect_close(host(sync(xe)), host(ref(xe)), **tol, err_msg=f"eval, {ref_cls.__name__}{sample_shape} {dtype}")


def check_matches_batchnorm_over_the_global_batch_float64(ctx):
    for split in SPLITS[ctx.size]:
        for ref_cls, sample_shape in CASES:
            compare_training(ctx, ref_cls, sample_shape, split, "float64")


def check_matches_batchnorm_over_the_global_batch_float32(ctx):
    for split in SPLITS[ctx.size]:
        for ref_cls, sample_shape in CASES:
            compare_training(ctx, ref_cls, sample_shape, split, "float32")


def check_float16_input_float32_module(ctx):
    """Mixed precision as in BatchNorm: float16 inputs, float32 parameters and running statistics."""
    for ref_cls, sample_shape in CASES[1:]:
        compare_training(ctx, ref_cls, sample_shape, SPLITS[ctx.size][-1], "float32", input_dtype="float16")


def check_cumulative_average_momentum_none(ctx):
    compare_training(ctx, nn.BatchNorm2d, (2, 3, 2), SPLITS[ctx.size][-1], "float64", momentum=None)


def check_one_collective_in_forward_and_one_in_backward(ctx):
    group = CountingGroup(dist.process_group.default_group())
    bn = nn.SyncBatchNorm(4, process_group=group, device=ctx.device, dtype="float64")
    x = minigrad.randn(3, 4, 5, dtype="float64", device=ctx.device, requires_grad=True)
    y = bn(x)
    assert group.calls == ["allgather"]
    y.sum().backward()
    assert group.calls == ["allgather", "allreduce"]
    bn.eval()
    bn(x)
    assert group.calls == ["allgather", "allreduce"], "eval mode is BatchNorm: no communication"


def check_every_rank_empty_updates_nothing(ctx):
    bn = nn.SyncBatchNorm(3, device=ctx.device, dtype="float64")
    y = bn(minigrad.zeros(0, 3, dtype="float64", device=ctx.device))
    assert y.shape == (0, 3)
    assert bn.num_batches_tracked.item() == 0
    np.testing.assert_array_equal(host(bn.running_mean), 0)
    np.testing.assert_array_equal(host(bn.running_var), 1)


def check_one_value_per_channel_over_all_ranks_raises_everywhere(ctx):
    bn = nn.SyncBatchNorm(3, device=ctx.device)
    x = minigrad.randn(1 if ctx.rank == 0 else 0, 3, device=ctx.device)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(x)
    assert bn.num_batches_tracked.item() == 0


def check_convert_sync_batchnorm_keeps_parameters_and_folds(ctx):
    minigrad.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5),
                          nn.BatchNorm1d(5, momentum=None), nn.Sigmoid()).to(ctx.device).double()
    bn2, bn1 = model[1], model[5]
    kept = {id(t) for m in (bn2, bn1) for t in list(m.parameters()) + list(m.buffers())}
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert converted is model
    assert type(model[1]) is nn.SyncBatchNorm and type(model[5]) is nn.SyncBatchNorm
    assert {id(t) for m in (model[1], model[5]) for t in list(m.parameters()) + list(m.buffers())} == kept
    assert model[5].momentum is None and model[1].training
    single = nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(2).eval())
    assert type(single) is nn.SyncBatchNorm and not single.training
    x = minigrad.randn(6, 1, 6, 6, dtype="float64", device=ctx.device)
    model(x)  # one training step over the global batch: the running statistics become the global ones
    model.eval()
    folded = minigrad.norm.fold(model)
    np.testing.assert_allclose(host(folded(x)), host(model(x)), rtol=1e-10, atol=1e-12)


def check_no_process_group_argument_means_the_default_group(ctx):
    bn = nn.SyncBatchNorm(2, device=ctx.device, dtype="float64")
    assert bn.process_group is None
    x = minigrad.tensor(np.full((2, 2), float(ctx.rank)), device=ctx.device)
    bn(x)
    expected_mean = (ctx.size - 1) / 2  # every rank's values, not just this rank's
    np.testing.assert_allclose(host(bn.running_mean), 0.1 * expected_mean, rtol=1e-12)


WORLD_SIZES = (1, 2, 3)


def test_on_ranks(mpi_case, mpi_run):
    mpi_run(__file__, *mpi_case)


def test_without_a_process_group_it_is_batchnorm():
    """No init_process_group: training mode normalizes with the local batch, like BatchNorm."""
    assert not dist.is_initialized()
    x = minigrad.tensor(np.random.default_rng(0).standard_normal((5, 3, 2)))
    ref, sync = nn.BatchNorm1d(3, dtype="float64"), nn.SyncBatchNorm(3, dtype="float64")
    np.testing.assert_array_equal(host(sync(x)), host(ref(x)))
    np.testing.assert_array_equal(host(sync.running_var), host(ref.running_var))
    assert "SyncBatchNorm" in minigrad.norm.available() and minigrad.norm.is_builtin("SyncBatchNorm")
