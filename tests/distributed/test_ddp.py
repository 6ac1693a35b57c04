"""DistributedDataParallel across ranks equals one process on the whole batches (run across MPI ranks).

Each rank trains the DDP-wrapped model on its share of every batch and,
beside it, a plain copy on the whole batch (what one process would do);
after the steps the parameters must agree (float64, 1e-9) and be
identical on every rank.
"""

import os

import numpy as np
import pytest

import minigrad
import minigrad.distributed as dist
from minigrad import nn, optim
from minigrad.nn import functional as F
from minigrad.nn.parallel import DistributedDataParallel as DDP

TOL = dict(rtol=1e-9, atol=1e-9)


def paper_mlp(seed=0, batch_norm=True, hidden=(100, 100, 100)):
    """Ioffe & Szegedy's MNIST network: 784 → 100 → 100 → 100 → 10, sigmoid units, BN before each sigmoid."""
    minigrad.manual_seed(seed)
    layers, d = [], 784
    for width in hidden:
        layers += [nn.Linear(d, width)] + ([nn.BatchNorm1d(width)] if batch_norm else []) + [nn.Sigmoid()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, 10)).double()


def batches(steps, size=60, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield rng.standard_normal((size, 784)), rng.integers(0, 10, size)


def on(ctx, a):
    """A host array as a tensor on the check's device."""
    return minigrad.tensor(a, device=ctx.device)


def shard(ctx, a):
    n = len(a) // ctx.size
    return a[ctx.rank * n:(ctx.rank + 1) * n]


def step(model, opt, x, y, device):
    loss = F.cross_entropy(model(minigrad.tensor(x, device=device)), minigrad.tensor(y, device=device))
    opt.zero_grad()
    loss.backward()
    opt.step()


def flat_parameters(model):
    return np.concatenate([p.detach().numpy().reshape(-1) for p in model.parameters()])


def expect_same_everywhere(ctx, model, what):
    """The parameters are bitwise identical on every rank."""
    mine = on(ctx, flat_parameters(model))
    every = [minigrad.zeros_like(mine) for _ in range(ctx.size)]
    dist.all_gather(every, mine)
    ctx.expect(all(np.array_equal(e.numpy(), mine.numpy()) for e in every), f"{what}: ranks disagree")


def train_and_compare(ctx, make_opt, steps=20, **ddp_kwargs):
    ref = paper_mlp().to(ctx.device)
    ddp = DDP(nn.SyncBatchNorm.convert_sync_batchnorm(paper_mlp().to(ctx.device)), **ddp_kwargs)
    ref_opt, ddp_opt = make_opt(ref.parameters()), make_opt(ddp.parameters())
    for x, y in batches(steps):
        step(ref, ref_opt, x, y, ctx.device)
        step(ddp, ddp_opt, shard(ctx, x), shard(ctx, y), ctx.device)
    ctx.expect_close(flat_parameters(ddp.module), flat_parameters(ref), **TOL, err_msg="parameters after training")
    for (name, a), (_, b) in zip(ddp.module.named_buffers(), ref.named_buffers()):
        ctx.expect_close(a.numpy(), b.numpy(), **TOL, err_msg=name)
    expect_same_everywhere(ctx, ddp.module, "parameters")
    return ddp


def check_sgd_with_syncbatchnorm_matches_one_process(ctx):
    ddp = train_and_compare(ctx, lambda ps: optim.SGD(ps, lr=0.5, momentum=0.9))
    # 0.7 MiB of float64 parameters: one bucket (the first bucket closes at 1 MiB)
    ctx.expect(len(ddp._reducer.buckets) == 1, f"{len(ddp._reducer.buckets)} buckets")


def check_adam_matches_one_process(ctx):
    train_and_compare(ctx, lambda ps: optim.Adam(ps, lr=1e-3))


def check_small_buckets_overlap_and_give_the_same_result(ctx):
    ddp = train_and_compare(ctx, lambda ps: optim.SGD(ps, lr=0.5), steps=5, bucket_cap_mb=0.05)
    ctx.expect(len(ddp._reducer.buckets) == 3, f"{len(ddp._reducer.buckets)} buckets")  # one per Linear+BN pair


def check_no_sync_accumulation_equals_one_big_step(ctx):
    ref, ddp = paper_mlp().to(ctx.device), DDP(nn.SyncBatchNorm.convert_sync_batchnorm(paper_mlp().to(ctx.device)))
    ref_opt, ddp_opt = optim.SGD(ref.parameters(), lr=0.5), optim.SGD(ddp.parameters(), lr=0.5)
    micro = list(batches(3, size=20, seed=5))
    ref_opt.zero_grad()
    sum(F.cross_entropy(ref(on(ctx, x)), on(ctx, y)) for x, y in micro).backward()
    ref_opt.step()
    ddp_opt.zero_grad()
    with ddp.no_sync():
        for x, y in micro[:-1]:
            F.cross_entropy(ddp(on(ctx, shard(ctx, x))), on(ctx, shard(ctx, y))).backward()
    local = flat_grads(ddp.module)
    x, y = micro[-1]
    F.cross_entropy(ddp(on(ctx, shard(ctx, x))), on(ctx, shard(ctx, y))).backward()
    ddp_opt.step()
    ctx.expect_close(flat_parameters(ddp.module), flat_parameters(ref), **TOL, err_msg="after the accumulated step")
    expect_same_everywhere(ctx, ddp.module, "after no_sync")
    mine = on(ctx, local)
    every = [minigrad.zeros_like(mine) for _ in range(ctx.size)]
    dist.all_gather(every, mine)
    ctx.expect(ctx.size == 1 or not np.array_equal(every[0].numpy(), every[1].numpy()),
               "inside no_sync the gradients must stay local")


def flat_grads(model):
    return np.concatenate([p.grad.numpy().reshape(-1) for p in model.parameters()])


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.used, self.spare = nn.Linear(4, 6), nn.Linear(6, 2), nn.Linear(6, 2)

    def forward(self, x, head="used"):
        return getattr(self, head)(self.body(x).sigmoid())


def check_unused_parameter_raises_naming_it(ctx):
    minigrad.manual_seed(3)
    ddp = DDP(TwoHeads().double().to(ctx.device))
    with pytest.raises(RuntimeError, match=r"spare\.weight.*find_unused_parameters=True"):
        ddp(minigrad.randn(3, 4, dtype="float64", device=ctx.device))
    with minigrad.no_grad():  # without a backward to come nothing is checked
        ddp(minigrad.randn(3, 4, dtype="float64", device=ctx.device))


def check_find_unused_parameters(ctx):
    minigrad.manual_seed(3)
    model = TwoHeads().double().to(ctx.device)
    ddp = DDP(model, find_unused_parameters=True)
    ref = TwoHeads().double().to(ctx.device)
    ref.load_state_dict(model.state_dict())
    x = minigrad.tensor(np.random.default_rng(1).standard_normal((4 * ctx.size, 4)), device=ctx.device)
    # Rank 0 uses the spare head, the others do not: its gradient is rank 0's divided by the world size.
    head = "spare" if ctx.rank == 0 else "used"
    ddp(on(ctx, shard(ctx, x.numpy())), head=head).sum().backward()
    ctx.expect(model.spare.weight.grad is not None, "spare head: no gradient")
    xs0 = on(ctx, x.numpy()[:4])
    ref(xs0, head="spare").sum().backward()
    ctx.expect_close(model.spare.weight.grad.numpy(), ref.spare.weight.grad.numpy() / ctx.size, **TOL,
                     err_msg="spare head")
    # Used by no rank: .grad stays None.
    model.zero_grad()
    ddp(on(ctx, shard(ctx, x.numpy()))).sum().backward()
    ctx.expect(model.spare.weight.grad is None, "a parameter no rank used got a gradient")
    ctx.expect(model.used.weight.grad is not None, "the used head got no gradient")


def check_parameters_are_broadcast_from_rank_0_and_checkpoints(ctx):
    model = paper_mlp(seed=ctx.rank, hidden=(8,))  # a different initialisation on every rank
    ddp = DDP(model)
    expect_same_everywhere(ctx, model, "after wrapping")
    ctx.expect_close(flat_parameters(model), flat_parameters(paper_mlp(seed=0, hidden=(8,))), rtol=0, atol=0,
                     err_msg="rank 0's initialisation")
    path = os.path.join(ctx.tmp, "ddp.mg")
    if ctx.rank == 0:  # one writer; minigrad.save is atomic (a temporary file renamed)
        minigrad.save(ddp.state_dict(), path)
    dist.barrier()
    plain = paper_mlp(seed=7, hidden=(8,))
    plain.load_state_dict(minigrad.load(path))  # the DDP state dict loads into the unwrapped model
    ctx.expect_close(flat_parameters(plain), flat_parameters(model), rtol=0, atol=0, err_msg="checkpoint")
    prefixed = {f"module.{k}": v for k, v in plain.state_dict().items()}  # PyTorch's DDP keys load too
    ddp.load_state_dict(prefixed)
    assert set(ddp.state_dict()) == set(model.state_dict())


def check_models_that_differ_between_ranks_raise(ctx):
    if ctx.size == 1:
        pytest.skip("one rank cannot disagree with itself")
    model = paper_mlp(hidden=(8 + ctx.rank,))
    with pytest.raises(dist.DistributedError, match=r"rank 1's model differs from rank 0's.*0\.weight"):
        DDP(model)


def check_batchnorm_buffers_follow_rank_0(ctx):
    ddp = DDP(paper_mlp(hidden=(8,)).to(ctx.device))  # plain BatchNorm: each rank updates its own running statistics
    bn = ddp.module[1]
    bn.momentum = 0.0  # forward leaves them as they are: what remains is DDP's broadcast
    bn.running_mean.array[...] = ctx.rank
    ddp.eval()
    ddp(minigrad.randn(6, 784, dtype="float64", device=ctx.device))
    ctx.expect_close(bn.running_mean.numpy(), float(ctx.rank), rtol=0, atol=0, err_msg="eval: no broadcast")
    ddp.train()
    ddp(minigrad.randn(6, 784, dtype="float64", device=ctx.device))
    ctx.expect_close(bn.running_mean.numpy(), 0.0, rtol=0, atol=0, err_msg="training forward: rank 0's buffers")


class Shift(nn.Module):
    def __init__(self):
        super().__init__()
        self.shift = nn.Parameter(minigrad.zeros(3, 4, dtype="float64"))

    def forward(self, x):
        # The add hands one gradient array (made by the product, not the caller's) to x's branch and to shift.
        return (x * 2.0 + self.shift) * 3.0


def check_input_gradients_are_not_disturbed(ctx):
    """Writing the averaged gradient must not touch an array the backward walk still uses elsewhere."""
    ddp = DDP(Shift().to(ctx.device))
    x = minigrad.ones(3, 4, dtype="float64", device=ctx.device, requires_grad=True)
    dy = np.full((3, 4), float(ctx.rank + 1))
    ddp(x).backward(minigrad.tensor(dy, device=ctx.device))
    ctx.expect_close(x.grad.numpy(), 6 * dy, rtol=0, atol=0, err_msg="input gradient")
    ctx.expect_close(ddp.module.shift.grad.numpy(), 3 * (ctx.size + 1) / 2, rtol=1e-15, atol=0, err_msg="shift")


def check_arguments_are_validated(ctx):
    model = paper_mlp(hidden=(8,)).to(ctx.device)
    with pytest.raises(TypeError, match="wraps a minigrad Module"):
        DDP(lambda x: x)
    with pytest.raises(ValueError, match="device_ids"):
        DDP(model, device_ids=["cuda:3"])
    with pytest.raises(ValueError, match="dim=0"):
        DDP(model, dim=1)
    DDP(model, device_ids=[model[0].weight.device], output_device=str(model[0].weight.device))


WORLD_SIZES = (1, 2)


def test_on_ranks(mpi_case, mpi_run):
    mpi_run(__file__, *mpi_case)


def test_needs_a_process_group():
    assert not dist.is_initialized()
    with pytest.raises(dist.DistributedError, match="init_process_group"):
        DDP(nn.Linear(2, 2))
