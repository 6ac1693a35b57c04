"""Turn the JSON of ``bench.py --json`` (one run or several) into the Markdown tables of docs/benchmarks.md.

With several files, every time is the median over the runs (full runs, as
the targets are judged), and the runs' ratios are listed too. A
``sweep.py`` JSON gives its variants table.

    python benchmarks/report.py run-a.json run-b.json run-c.json > tables.md
    python benchmarks/report.py --sweep sweep.json
"""

from __future__ import annotations

import json
import statistics
import sys


def fmt(t):
    """Seconds as a short human unit."""
    if t is None:
        return "–"
    return f"{t * 1e3:.2f} ms" if t >= 1e-3 else f"{t * 1e6:.1f} µs"


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def merge(reports):
    """Rows keyed by (case, setting, load), each time the median over the reports."""
    rows = {}
    for rep in reports:
        for r in rep["results"]:
            key = (r["case"], r.get("setting", "pinned"), r.get("load", "quiet"))
            rows.setdefault(key, []).append(r)
    merged = {}
    for key, rs in rows.items():
        m = {k: _median([r.get(k) for r in rs]) for k in ("minigrad_s", "numpy_s", "torch_s", "bandwidth_fraction")}
        m["ratios"] = [r["ratio_minigrad_torch"] for r in rs if r.get("ratio_minigrad_torch")]
        merged[key] = m
    return merged


def machine_line(reports):
    m = reports[0]["machine"]
    loads = [f"{r['machine'].get('loadavg_start', [None])[0]:.1f}" for r in reports if r["machine"].get("loadavg_start")]
    v = m.get("versions", {})
    mg = v.get("minigrad", {})
    return (f"{len(reports)} full run(s) from {m['date']} on {m['cpu']} ({m['cores']} cores); pinned setting: "
            f"{m['threads']} threads for every library; load average at the start of each run: "
            f"{', '.join(loads) or '?'}; NumPy {mg.get('numpy', '?')}, PyTorch "
            f"{v.get('torch', {}).get('torch', 'not installed')}, minigrad {mg.get('minigrad', '?')} "
            f"(kernels: {mg.get('minigrad_kernels', '?')} build, OpenMP: {mg.get('minigrad_openmp', '?')}).")


def _ratio(a, b):
    return f"{a / b:.2f}" if a and b else "–"


def tables(reports):
    merged = merge(reports)
    out = [machine_line(reports), "", "| case | minigrad | NumPy | PyTorch | minigrad / PyTorch | fraction of copy "
           "bandwidth |", "|---|---:|---:|---:|---:|---:|"]
    for (case, setting, load), m in merged.items():
        if "step" in case:
            continue
        bw = f"{m['bandwidth_fraction']:.0%}" if m["bandwidth_fraction"] is not None else "–"
        out.append(f"| {case} | {fmt(m['minigrad_s'])} | {fmt(m['numpy_s'])} | {fmt(m['torch_s'])} | "
                   f"{_ratio(m['minigrad_s'], m['torch_s'])} | {bw} |")
    out += ["", "| training step | setting | load | minigrad | PyTorch | minigrad / PyTorch (runs) | minigrad "
            "loaded / quiet | PyTorch loaded / quiet |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for (case, setting, load), m in merged.items():
        if "step" not in case:
            continue
        quiet = merged.get((case, setting, "quiet"), {})
        runs = ", ".join(f"{r:.2f}" for r in m["ratios"])
        rel = (_ratio(m["minigrad_s"], quiet.get("minigrad_s")), _ratio(m["torch_s"], quiet.get("torch_s")))
        if load == "quiet":
            rel = ("–", "–")
        out.append(f"| {case} | {setting} | {load} | {fmt(m['minigrad_s'])} | {fmt(m['torch_s'])} | "
                   f"{_ratio(m['minigrad_s'], m['torch_s'])} ({runs}) | {rel[0]} | {rel[1]} |")
    return "\n".join(out)


def sweep_table(report):
    m = report["machine"]
    out = [f"{m['date']} on {m['cpu']} ({m['cores']} cores), {m['threads']} threads, load average "
           f"{m['loadavg_start'][0]:.1f} -> {m.get('loadavg_end', [float('nan')])[0]:.1f}.", ""]
    phases = list(report["phases"])
    cases = list(next(iter(report["phases"][phases[0]].values())))
    head = "| variant | " + " | ".join(f"{c} ({p})" for p in phases for c in cases) + " |"
    out += [head, "|---|" + "---:|" * (len(phases) * len(cases))]
    for variant in report["phases"][phases[0]]:
        cells = [fmt(report["phases"][p][variant][c]) for p in phases for c in cases]
        out.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv):
    if argv and argv[0] == "--sweep":
        with open(argv[1]) as f:
            print(sweep_table(json.load(f)))
        return
    reports = []
    for path in argv:
        with open(path) as f:
            reports.append(json.load(f))
    print(tables(reports))


if __name__ == "__main__":
    main(sys.argv[1:])
