"""Santurkar et al. (2018), Figure 2: "noisy" BN trains as well as BN, so covariate shift is not why BN helps.

Santurkar, Tsipras, Ilyas and Mądry, "How does batch normalization help
optimization?" (NeurIPS 2018) inject random noise after each BN layer:
for each activation, noise "sampled from a non-zero mean and non-unit
variance distribution", drawn anew at every training step. The
activations' distributions then shift from step to step, more than without
BN at all, yet the network trains about as well as with plain BN and
better than without BN: reducing "internal covariate shift" is not what
makes BN work.

Here three copies of the Figure 1 network (784-100-100-100-10, sigmoid,
SGD, batch 60), same initial weights, same mini-batches:

* Standard: no BN;
* BN: Linear → BatchNorm1d → Sigmoid;
* Noisy BN: Linear → BatchNorm1d → ``NoisyShift`` → Sigmoid, where in
  training ``NoisyShift`` maps each unit j of example i to
  ``y'_ij = s_tj·y_ij + μ_tj + σ·ε_ij``: at step t each unit draws a scale
  ``s_tj ~ U(1/scale, scale)`` and a shift ``μ_tj ~ U(−shift, shift)``, and
  each example i.i.d. noise ``ε_ij ~ N(0, 1)``. In eval mode it is the
  identity.

It records test accuracy and the 15/50/85th percentiles of the input to a
sigmoid in each hidden layer on a fixed batch of training images, in
training mode (so with the noise, as during training; Santurkar et al.'s
Figure 2 shows such training-time activation distributions).

Outputs in ``--out``: ``noisy_bn.png``, ``history.csv``, ``summary.json``.

Run from a source checkout::

    python -m examples.noisy_bn
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import minigrad
from minigrad import nn, optim

if __package__ in (None, ""):  # run as a file: make the sibling helper importable
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import (
        HIDDEN, accuracy_and_loss, build_mlp, decorate, endless_batches, flat, make_parser, plot_accuracy, progress,
        pyplot, require_positive, restore, run_info, save_figure, snapshot, start, train_step_each, write_json,
        write_rows)
else:
    from ._common import (
        HIDDEN, accuracy_and_loss, build_mlp, decorate, endless_batches, flat, make_parser, plot_accuracy, progress,
        pyplot, require_positive, restore, run_info, save_figure, snapshot, start, train_step_each, write_json,
        write_rows)

PERCENTILES = (15, 50, 85)
NAMES = {"standard": "Standard (no BN)", "bn": "BN", "noisy": "Noisy BN"}
COLORS = {"standard": "tab:gray", "bn": "tab:blue", "noisy": "tab:red"}


class NoisyShift(nn.Module):
    """Santurkar et al.'s noise after BN: ``y'_ij = s_j·y_ij + μ_j + σ·ε_ij`` in training, the identity in eval.

    Input (N, C). At every training forward pass (one per step) each
    channel j draws ``s_j ~ U(1/scale, scale)`` and ``μ_j ~ U(−shift,
    shift)``: a distribution with non-zero mean and non-unit variance that
    changes every step; ``ε_ij ~ N(0, 1)`` i.i.d. per example. Random
    numbers come from minigrad's generator (``minigrad.manual_seed``).

    Example::

        noise = NoisyShift(100, shift=1.0, scale=2.0, sigma=0.3)
        y = noise(minigrad.randn(60, 100))
    """

    def __init__(self, num_features, shift=1.0, scale=2.0, sigma=0.3):
        super().__init__()
        if scale < 1 or shift < 0 or sigma < 0:
            raise ValueError(f"NoisyShift: need scale >= 1, shift >= 0, sigma >= 0; got {scale}, {shift}, {sigma}")
        self.num_features, self.shift, self.scale, self.sigma = num_features, shift, scale, sigma

    def forward(self, x):
        if not self.training:
            return x
        c = self.num_features
        dev, dt = x.device, x.dtype
        lo = 1.0 / self.scale
        s = minigrad.rand(1, c, device=dev, dtype=dt) * (self.scale - lo) + lo
        mu = (minigrad.rand(1, c, device=dev, dtype=dt) * 2 - 1) * self.shift
        return x * s + mu + minigrad.randn(*x.shape, device=dev, dtype=dt) * self.sigma


@minigrad.no_grad()
def activation_percentiles(model, x):
    """15/50/85th percentiles of the input to every sigmoid, (layers, 3, units), in training mode.

    The forward pass draws noise and uses batch statistics as in
    training; the BN running statistics it would update are put back.
    """
    saved = snapshot(model, only_buffers=True)
    model.train()
    out, h = [], x
    for m in model:
        if isinstance(m, nn.Sigmoid):
            out.append(np.percentile(h.numpy(), PERCENTILES, axis=0))
        h = m(h)
    restore(model, saved)
    return np.stack(out)


def run(args, data):
    device = args.device
    x_train = flat(data.x_train)
    x_test = minigrad.tensor(flat(data.x_test), device=device)
    y_test = minigrad.tensor(data.y_test, device=device)
    rng = np.random.default_rng(args.seed)
    x_probe = minigrad.tensor(x_train[rng.choice(len(x_train), args.probe_images, replace=False)], device=device)

    def noise():
        return NoisyShift(HIDDEN[0], args.shift, args.scale, args.sigma)

    nets = {"standard": build_mlp(False, "gaussian", args.seed, x_train.shape[1], data.num_classes),
            "bn": build_mlp(True, "gaussian", args.seed, x_train.shape[1], data.num_classes),
            "noisy": build_mlp(True, "gaussian", args.seed, x_train.shape[1], data.num_classes, after_norm=noise)}
    nets = {k: m.to(device) for k, m in nets.items()}
    opts = {k: optim.SGD(m.parameters(), lr=args.lr) for k, m in nets.items()}
    stream = endless_batches(x_train, data.y_train, args.batch_size, args.seed, device)
    hist = {"step": []}
    pct = {k: [] for k in nets}
    loss_sum, step_time = {k: 0.0 for k in nets}, {k: 0.0 for k in nets}
    n = 0

    def record(step):
        nonlocal n
        hist["step"].append(step)
        for k, m in nets.items():
            acc, loss = accuracy_and_loss(m, x_test, y_test)
            hist.setdefault(f"acc_{k}", []).append(acc)
            hist.setdefault(f"train_loss_{k}", []).append(loss_sum[k] / n if n else float("nan"))
            loss_sum[k] = 0.0
            pct[k].append(activation_percentiles(m, x_probe))
        n = 0

    t0 = time.perf_counter()
    # The noise draws from minigrad's generator; seed it once so the whole run is reproducible.
    minigrad.manual_seed(args.seed)
    record(0)
    bar = progress(range(1, args.steps + 1), args.steps, "Noisy BN: training Standard, BN and Noisy BN nets",
                   args.no_progress)
    for step in bar:
        xb, yb = next(stream)
        train_step_each(nets, opts, xb, yb, loss_sum, step_time)
        n += 1
        if step % args.eval_every == 0 or step == args.steps:
            record(step)
            bar.set_postfix(**{f"test_acc_{k}": f"{hist[f'acc_{k}'][-1]:.3f}" for k in nets})
    timing = {"total_s": time.perf_counter() - t0, **{f"ms_per_step_{k}": 1e3 * v / args.steps
                                                      for k, v in step_time.items()}}
    return hist, {k: np.asarray(v) for k, v in pct.items()}, timing


def plot(path, hist, pct, args, title):
    plt = pyplot()
    steps = np.asarray(hist["step"])
    layers = pct["bn"].shape[1]
    fig, axes = plt.subplots(1, 1 + layers, figsize=(5 + 4 * layers, 4.2), layout="constrained")
    plot_accuracy(axes[0], steps, [(hist[f"acc_{k}"], "-", COLORS[k], NAMES[k]) for k in NAMES],
                  ylabel="test accuracy (eval mode)")
    axes[0].set_title("(a) test accuracy", fontsize=10)
    for layer in range(layers):
        ax = axes[1 + layer]
        for k in NAMES:
            p = pct[k][:, layer, :, args.unit]
            ax.fill_between(steps, p[:, 0], p[:, 2], color=COLORS[k], alpha=0.2)
            ax.plot(steps, p[:, 1], color=COLORS[k], lw=1, label=f"{NAMES[k]}: median, 15-85% band")
        ax.set(xlabel="training steps", ylabel=f"sigmoid input, unit {args.unit}")
        decorate(ax, f"({chr(98 + layer)}) hidden layer {layer + 1}, training mode",
                 "upper left" if layer == layers - 1 else None)
    save_figure(fig, path, title)


def shift_per_step(pct):
    """Mean |change| of the percentiles between successive evaluations, per layer (averaged over units, percentiles)."""
    return np.abs(np.diff(pct, axis=0)).mean(axis=(0, 2, 3))


def parse_args(argv=None):
    p = make_parser(__doc__, os.path.join("runs", "noisy_bn"), steps=5000, lr=1.0,
                    lr_help="SGD learning rate (Figure 1's)")
    p.add_argument("--shift", type=float, default=1.0, help="noise: per-step shift μ ~ U(−shift, shift)")
    p.add_argument("--scale", type=float, default=2.0, help="noise: per-step scale s ~ U(1/scale, scale)")
    p.add_argument("--sigma", type=float, default=0.3, help="noise: standard deviation of the per-example part")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps (without it: steps/100)")
    p.add_argument("--probe-images", type=int, default=1000, help="training images the percentiles are taken over")
    p.add_argument("--unit", type=int, default=0, help="which unit's percentiles to plot")
    args = p.parse_args(argv)
    require_positive(p, args, "steps", "batch_size", "probe_images")
    if args.scale < 1 or args.shift < 0 or args.sigma < 0:
        p.error("--scale must be at least 1, --shift and --sigma at least 0")
    if not 0 <= args.unit < HIDDEN[-1]:
        p.error(f"--unit must be in [0, {HIDDEN[-1]})")
    if args.eval_every is None:
        args.eval_every = max(1, args.steps // 100)
    return args


def main(argv=None):
    args = parse_args(argv)
    data = start(args)
    args.probe_images = min(args.probe_images, len(data.y_train))
    hist, pct, timing = run(args, data)
    rows = [{c: hist[c][i] for c in hist} for i in range(len(hist["step"]))]
    write_rows(os.path.join(args.out, "history.csv"), rows)
    tail = max(1, len(hist["step"]) // 10)
    summary = run_info(args, data, ("steps", "batch_size", "lr", "shift", "scale", "sigma", "eval_every",
                                    "probe_images", "unit", "seed", "device", "data", "subset", "threads"))
    summary.update({
        "final_accuracy": {k: hist[f"acc_{k}"][-1] for k in NAMES},
        "mean_accuracy_last_10pct": {k: float(np.mean(hist[f"acc_{k}"][-tail:])) for k in NAMES},
        "percentile_change_per_evaluation": {k: shift_per_step(pct[k]).tolist() for k in NAMES},
        "percentile_change_definition": "mean over units and the 15/50/85th percentiles of |p(t+1) - p(t)| "
                                        "between successive evaluations, per hidden layer, training mode",
        "timing": timing, "history": hist,
        "percentiles_unit": {k: pct[k][:, :, :, args.unit] for k in NAMES},
    })
    write_json(os.path.join(args.out, "summary.json"), summary)
    if not args.no_plot:
        plot(os.path.join(args.out, "noisy_bn.png"), hist, pct, args,
             f"{data.name}: Figure 1's sigmoid MLP, SGD lr {args.lr}, batch {args.batch_size}, seed {args.seed}; "
             f"noise: shift U(±{args.shift}), scale U({1 / args.scale:g}, {args.scale:g}), sigma {args.sigma}")
    print()
    print(f"Noisy BN (Santurkar et al. 2018, Figure 2): {args.steps} steps; data: {data.description}")
    for k in NAMES:
        change = ", ".join(f"{v:.3f}" for v in summary["percentile_change_per_evaluation"][k])
        print(f"{NAMES[k]:<17} final test accuracy {summary['final_accuracy'][k]:.4f}   mean of the last 10% "
              f"{summary['mean_accuracy_last_10pct'][k]:.4f}   percentile change per evaluation (layers 1-3): "
              f"{change}")
    print(f"total time {timing['total_s']:.1f} s; outputs written to {os.path.abspath(args.out)}")
    return summary


if __name__ == "__main__":
    main()
