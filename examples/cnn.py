"""A small CNN with and without Batch Normalization, then BN folded away for inference.

The network (the seed's CNN)::

    Conv2d(1, 32, 3) → BatchNorm2d(32) → ReLU → MaxPool2d(2) → Flatten
    → Linear(32·13·13, 64) → BatchNorm1d(64) → ReLU → Linear(64, 10)

is trained with and without its two BN layers (same initial weights, same
mini-batches) and evaluated in eval mode, where BN uses its running
statistics. Then ``minigrad.norm.fold(model)`` returns an inference copy in
which each BN is folded into the Conv2d/Linear before it
(``W' = W·γ/√(Var+ε)``, ``b' = (b − E)·γ/√(Var+ε) + β``) and replaced by
``nn.Identity``; the script checks that the folded model gives the same
logits and predictions, and times inference before and after folding.

Outputs in ``--out``: ``history.csv``, ``summary.json``, ``training.png``.

Run from a source checkout::

    python -m examples.cnn                       # CPU, the default data (the full MNIST)
    python -m examples.cnn --device cuda
"""

from __future__ import annotations

import csv
import os
import sys
import time

import numpy as np

import minigrad
from minigrad import nn, optim

if __package__ in (None, ""):  # run as a file: make the sibling helper importable
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import (
        endless_batches, environment, make_parser, progress, require_positive, start, sync, train_step_each,
        write_json)
else:
    from ._common import (
        endless_batches, environment, make_parser, progress, require_positive, start, sync, train_step_each,
        write_json)


def build_cnn(batch_norm: bool, seed: int, num_classes: int = 10, image_size: int = 28):
    """The CNN, with or without its BN layers; the same ``seed`` gives the same conv/linear weights."""
    minigrad.manual_seed(seed)
    side = (image_size - 2) // 2  # 3x3 conv without padding, then 2x2 pooling: 28 → 26 → 13
    layers = [nn.Conv2d(1, 32, 3)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(32))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * side * side, 64)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(64))
    layers += [nn.ReLU(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


@minigrad.no_grad()
def logits(model, x, batch_size=1000):
    """Logits of ``x`` in eval mode, on the host (N, classes)."""
    model.eval()
    out = [model(x[i:i + batch_size]).cpu().numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


@minigrad.no_grad()
def time_inference(model, x, device, repeats):
    """Median seconds for one eval-mode forward pass over ``x`` (after one warm-up pass)."""
    model.eval()
    model(x)
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def train(args, data):
    """Train both CNNs on identical batches; return them, the history and the step times."""
    device = args.device
    x_train = data.x_train[:, None]  # (N, 1, 28, 28)
    x_test = minigrad.tensor(data.x_test[:, None], device=device)
    y_test = data.y_test
    nets = {k: build_cnn(bn, args.seed, data.num_classes, data.x_train.shape[-1]).to(device)
            for k, bn in (("plain", False), ("bn", True))}
    opts = {k: optim.SGD(m.parameters(), lr=args.lr, momentum=args.momentum) for k, m in nets.items()}
    hist = {"step": [], "loss_plain": [], "loss_bn": [], "acc_plain": [], "acc_bn": []}
    loss_sum = {"plain": 0.0, "bn": 0.0}
    step_time = {"plain": 0.0, "bn": 0.0}
    stream = endless_batches(x_train, data.y_train, args.batch_size, args.seed, device)
    t_start = time.perf_counter()
    bar = progress(range(1, args.steps + 1), args.steps, "CNN: training the nets without and with BN", args.no_progress)
    for step in bar:
        xb, yb = next(stream)
        train_step_each(nets, opts, xb, yb, loss_sum, step_time)
        if step % args.eval_every == 0 or step == args.steps:
            n = step - (hist["step"][-1] if hist["step"] else 0)
            hist["step"].append(step)
            for k, m in nets.items():
                hist[f"loss_{k}"].append(loss_sum[k] / n)
                loss_sum[k] = 0.0
                hist[f"acc_{k}"].append(float((logits(m, x_test).argmax(1) == y_test).mean()))
                m.train()
    total = time.perf_counter() - t_start
    timing = {"total_s": total, "ms_per_step_plain": 1e3 * step_time["plain"] / args.steps,
              "ms_per_step_bn": 1e3 * step_time["bn"] / args.steps}
    return nets, hist, timing, x_test


def fold_and_compare(model, x_test, device, repeats):
    """Fold BN away and compare the folded copy with the original, in eval mode."""
    from minigrad.norm import fold

    model.eval()  # fold is for inference: it folds the running statistics of eval-mode BN
    folded = fold(model)
    kinds = [type(m).__name__ for m in folded.modules()]
    if "BatchNorm1d" in kinds or "BatchNorm2d" in kinds:
        raise RuntimeError(f"minigrad.norm.fold left a BatchNorm layer in the model: {kinds}")
    a, b = logits(model, x_test), logits(folded, x_test)
    before = time_inference(model, x_test, device, repeats)
    after = time_inference(folded, x_test, device, repeats)
    return folded, {
        "max_abs_logit_diff": float(np.abs(a - b).max()),
        "max_abs_logit": float(np.abs(a).max()),
        "prediction_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
        "identity_layers": sum(isinstance(m, nn.Identity) for m in folded.modules()),  # Folded is one too
        "inference_batch": len(x_test),
        "inference_ms_before": 1e3 * before,
        "inference_ms_after": 1e3 * after,
        "speedup": before / after if after > 0 else float("nan"),
    }


def write_outputs(out, hist, summary, plot):
    with open(os.path.join(out, "history.csv"), "w", newline="") as f:
        w = csv.writer(f)
        cols = list(hist)
        w.writerow(cols)
        for i in range(len(hist["step"])):
            w.writerow([hist[c][i] for c in cols])
    write_json(os.path.join(out, "summary.json"), summary)
    if not plot:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for k, style, label in (("plain", "--", "without BN"), ("bn", "-", "with BN")):
        ax1.plot(hist["step"], hist[f"loss_{k}"], style, label=label)
        ax2.plot(hist["step"], hist[f"acc_{k}"], style, label=label)
    ax1.set(xlabel="training steps", ylabel="mean training loss", yscale="log")
    ax2.set(xlabel="training steps", ylabel="test accuracy (eval mode)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"CNN on {summary['data']['name']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "training.png"), dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = make_parser(__doc__, os.path.join("runs", "cnn"), steps=600, lr=0.05, batch_size=64,
                    lr_help="SGD learning rate (both networks)", plot="skip training.png")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps (without it: steps/10)")
    p.add_argument("--repeats", type=int, default=10, help="timed inference passes before/after folding")
    args = p.parse_args(argv)
    require_positive(p, args, "steps", "batch_size", "repeats")
    if args.eval_every is None:
        args.eval_every = max(1, args.steps // 10)
    return args


def main(argv=None):
    args = parse_args(argv)
    data = start(args)
    nets, hist, timing, x_test = train(args, data)
    _, folding = fold_and_compare(nets["bn"], x_test, args.device, args.repeats)
    summary = {
        "config": {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "momentum", "seed", "device",
                                                 "data", "subset", "threads")},
        "data": {"name": data.name, "description": data.description, "train_images": len(data.y_train),
                 "test_images": len(data.y_test)},
        "test_accuracy": {"plain": hist["acc_plain"][-1], "bn": hist["acc_bn"][-1]},
        "folding": folding,
        "timing": timing,
        "environment": environment(args.device),
    }
    write_outputs(args.out, hist, summary, not args.no_plot)
    f = folding
    print()
    print(f"CNN, {args.steps} steps of SGD (lr {args.lr}, momentum {args.momentum}, batch {args.batch_size}) "
          f"on {args.device}")
    print(f"data: {data.description}")
    print(f"test accuracy (eval mode):  without BN {hist['acc_plain'][-1]:.4f}   with BN {hist['acc_bn'][-1]:.4f}")
    print(f"time per training step:     without BN {timing['ms_per_step_plain']:.2f} ms   "
          f"with BN {timing['ms_per_step_bn']:.2f} ms")
    print(f"BN folded into the preceding layers ({f['identity_layers']} BN layers now nn.Identity):")
    print(f"  max |logit difference| {f['max_abs_logit_diff']:.2e} (logits up to {f['max_abs_logit']:.1f}), "
          f"predictions agree on {f['prediction_agreement']:.2%} of {f['inference_batch']} test images")
    print(f"  inference on {f['inference_batch']} images: {f['inference_ms_before']:.2f} ms before folding, "
          f"{f['inference_ms_after']:.2f} ms after ({f['speedup']:.2f}x)")
    print(f"outputs written to {os.path.abspath(args.out)}")
    return summary


if __name__ == "__main__":
    main()
