"""Data-parallel MNIST on several processes: per-process BatchNorm against SyncBatchNorm.

Every process (MPI rank) holds a replica of the model and trains on its
share of each batch (``DistributedSampler``); ``DistributedDataParallel``
averages the gradients during backward, so the replicas stay identical.
With a small batch per process (2-8 samples), BatchNorm's statistics on
each process are noisy; ``SyncBatchNorm`` normalizes with the statistics
of the batch of all processes together. The script trains both variants
side by side from the same initial weights on the same batches:

* ``bn``: the model as built, BatchNorm on each process's own samples;
* ``syncbn``: ``SyncBatchNorm.convert_sync_batchnorm(model)``.

Models (``--model``): the paper's network, 784 → 100 → 100 → 100 → 10 with
BN before each sigmoid (examples/bn_mnist.py), or the seed CNN
(examples/cnn.py). Test accuracy (eval mode, running statistics) is
computed with the test set split over the ranks and the counts summed
with ``all_reduce``. At the end rank 0 writes one checkpoint (atomically)
and every rank loads it back; rank 0 writes ``summary.json`` to ``--out``.

Run from a source checkout (after ``python setup.py build_ext --inplace``),
with the launcher of the ``distributed`` extra::

    mpiexec -n 4 python examples/ddp_mnist.py                  # 4 processes, 4 samples each
    mpiexec -n 4 python -m mpi4py examples/ddp_mnist.py --model cnn --batch-size 8
    make ddp NP=4 ARGS="--steps 3000"

An exception on any rank aborts the whole job (``init_process_group``
installs the hook; ``python -m mpi4py`` does the same for the interpreter).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time

import numpy as np

import minigrad
import minigrad.distributed as dist
from minigrad import nn, optim
from minigrad.data import DataLoader, DistributedSampler, TensorDataset
from minigrad.nn.parallel import DistributedDataParallel

if __package__ in (None, ""):  # run as a file: make the sibling helpers importable
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import add_common_args, environment, load_data, progress, sync, train_step_each, write_json
    from bn_mnist import build_mlp
    from cnn import build_cnn
else:
    from ._common import add_common_args, environment, load_data, progress, sync, train_step_each, write_json
    from .bn_mnist import build_mlp
    from .cnn import build_cnn

VARIANTS = ("bn", "syncbn")


def build(args, variant, data):
    """The model of ``--model`` (same weights for every variant and rank), SyncBN-converted for "syncbn"."""
    if args.model == "mlp":
        model = build_mlp(True, args.init, args.seed, 784, data.num_classes)
    else:
        model = build_cnn(True, args.seed, data.num_classes, data.x_train.shape[-1])
    if variant == "syncbn":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(args.device)


def images(args, x):
    """(N, 784) for the MLP, (N, 1, H, W) for the CNN."""
    return x.reshape(len(x), -1) if args.model == "mlp" else x[:, None]


@minigrad.no_grad()
def accuracy(model, x, y, device, batch_size=1000):
    """Test accuracy over all ranks: each rank scores its slice of the test set, the counts are summed.

    With per-process BatchNorm each rank's running statistics are its own
    batches'; DDP takes rank 0's as the model's (it broadcasts them at the
    next training forward), so they are broadcast first here too.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
    mine = np.array_split(np.arange(len(y)), world)[rank]
    model.eval()
    correct = 0
    for start in range(0, len(mine), batch_size):
        idx = mine[start:start + batch_size]
        logits = model(minigrad.tensor(x[idx], device=device))
        correct += int((logits.argmax(axis=1).numpy() == y[idx]).sum())
    model.train()
    total = minigrad.tensor([correct], dtype="int64", device=device)
    dist.all_reduce(total)
    return total.item() / len(y)


def train(args, data):
    rank, world = dist.get_rank(), dist.get_world_size()
    x_train, x_test = images(args, data.x_train), images(args, data.x_test)
    models = {v: DistributedDataParallel(build(args, v, data)) for v in args.variants}
    opts = {v: optim.SGD(m.parameters(), lr=args.lr, momentum=args.momentum) for v, m in models.items()}
    train_set = TensorDataset(x_train, data.y_train)
    sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True, device=args.device)
    if len(loader) == 0:
        raise SystemExit(f"--batch-size {args.batch_size} x {world} ranks is larger than the training set")
    hist = {"step": [], **{f"acc_{v}": [] for v in models}, **{f"loss_{v}": [] for v in models}}
    loss_sum = dict.fromkeys(models, 0.0)
    step_time = dict.fromkeys(models, 0.0)
    step, epoch, since = 0, 0, 0
    bar = progress(range(args.steps), args.steps, f"training on {world} ranks", args.no_progress or rank != 0)
    bar_iter = iter(bar)
    while step < args.steps:
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            train_step_each(models, opts, xb, yb, loss_sum, step_time)
            step, since = step + 1, since + 1
            next(bar_iter, None)
            if step % args.eval_every == 0 or step == args.steps:
                hist["step"].append(step)
                for v, model in models.items():
                    hist[f"acc_{v}"].append(accuracy(model.module, x_test, data.y_test, args.device))
                    hist[f"loss_{v}"].append(loss_sum[v] / since)
                    loss_sum[v] = 0.0
                since = 0
            if step == args.steps:
                break
        epoch += 1
    sync(args.device)
    timing = {f"ms_per_step_{v}": 1e3 * t / args.steps for v, t in step_time.items()}
    return models, hist, timing


def checkpoint(models, path, device):
    """Rank 0 writes one checkpoint (minigrad.save is atomic); every rank loads it and finds its replica."""
    if dist.get_rank() == 0:
        minigrad.save({v: m.state_dict() for v, m in models.items()}, path)
    dist.barrier()
    state = minigrad.load(path, device=device)
    for v, m in models.items():
        for key, value in m.state_dict().items():
            if not np.array_equal(value.numpy(), state[v][key].numpy()):
                raise RuntimeError(f"rank {dist.get_rank()}: {v}.{key} differs from rank 0's checkpoint")


def summarize(args, data, hist, timing):
    world = dist.get_world_size()
    tail = max(1, len(hist["step"]) // 5)
    return {
        "config": {k: getattr(args, k) for k in ("model", "steps", "batch_size", "lr", "momentum", "seed", "init",
                                                 "device", "eval_every", "data", "subset", "threads", "backend")},
        "world_size": world,
        "global_batch": world * args.batch_size,
        "data": {"name": data.name, "description": data.description, "train_images": len(data.y_train),
                 "test_images": len(data.y_test)},
        "final_accuracy": {v: hist[f"acc_{v}"][-1] for v in args.variants},
        "mean_accuracy_last_20pct": {v: float(np.mean(hist[f"acc_{v}"][-tail:])) for v in args.variants},
        "timing": timing,
        "history": hist,
        "environment": environment(args.device),
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p, default_out=os.path.join("runs", "ddp_mnist"))
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="mlp: the paper's 784-100-100-100-10 sigmoid network; cnn: the seed CNN")
    p.add_argument("--norm", choices=("both",) + VARIANTS, default="both",
                   help="bn: BatchNorm on each process's samples; syncbn: SyncBatchNorm; both: side by side")
    p.add_argument("--steps", type=int, default=2000, help="training steps")
    p.add_argument("--batch-size", type=int, default=4, help="samples per process and step")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--init", choices=("gaussian", "default"), default="gaussian", help="MLP initialisation")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps (default: steps/20)")
    p.add_argument("--backend", choices=("mpi", "nccl"), default=None,
                   help="process group backend (default: nccl on CUDA devices, else mpi)")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be at least 1")
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.eval_every is None:
        args.eval_every = max(1, args.steps // 20)
    args.variants = VARIANTS if args.norm == "both" else (args.norm,)
    if args.backend is None:
        args.backend = "nccl" if str(args.device).startswith("cuda") else "mpi"
    return args


def main(argv=None):
    args = parse_args(argv)
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank, local_size = dist.process_group.local_rank_and_size()
    if args.threads is None:  # share this machine's cores between its ranks
        args.threads = max(1, (os.cpu_count() or 1) // local_size)
    minigrad.set_num_threads(args.threads)
    if str(args.device) == "cuda" and args.backend == "nccl":
        args.device = f"cuda:{dist.process_group.default_group().device_index}"
    with contextlib.redirect_stdout(sys.stdout if rank == 0 else io.StringIO()):
        data = load_data(args)
    t0 = time.perf_counter()
    models, hist, timing = train(args, data)
    timing["total_s"] = time.perf_counter() - t0
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
    dist.barrier()
    checkpoint(models, os.path.join(args.out, "checkpoint.mg"), args.device)
    summary = summarize(args, data, hist, timing)
    if rank == 0:
        write_json(os.path.join(args.out, "summary.json"), summary)
        print(f"\n{world} processes x {args.batch_size} samples (global batch {world * args.batch_size}), "
              f"{args.model}, {args.steps} steps, SGD lr {args.lr} momentum {args.momentum}")
        for v in args.variants:
            print(f"  {v:<7} final test accuracy {summary['final_accuracy'][v]:.4f}   mean of the last 20% of "
                  f"evaluations {summary['mean_accuracy_last_20pct'][v]:.4f}   {timing[f'ms_per_step_{v}']:.2f} ms/step")
        print(f"checkpoint and summary.json in {os.path.abspath(args.out)}")
    dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    main()
