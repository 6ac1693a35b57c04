"""Turn the JSON of ``bench.py --json`` into the Markdown table of docs/benchmarks.md.

    python benchmarks/report.py results.json > table.md
"""

from __future__ import annotations

import json
import sys


def fmt(t):
    """Seconds as a short human unit."""
    if t is None:
        return "–"
    return f"{t * 1e3:.2f} ms" if t >= 1e-3 else f"{t * 1e6:.1f} µs"


def table(report: dict) -> str:
    """The results as a Markdown table, with the machine line above it."""
    m = report["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), {m['threads']} threads for every library; "
        f"Python {m['python']}, NumPy {m['numpy']}, PyTorch {m['torch'] or 'not installed'}, minigrad "
        f"{m['minigrad']} (OpenMP: {m['minigrad_openmp']}, {m.get('omp_wait', '?')}, malloc tuned: "
        f"{m.get('malloc_tuned')}).",
        "",
        "| case | minigrad | NumPy | PyTorch | minigrad / PyTorch | fraction of copy bandwidth |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        ratio = f"{r['ratio_minigrad_torch']:.2f}" if r["ratio_minigrad_torch"] else "–"
        bw = f"{r['bandwidth_fraction']:.0%}" if r.get("bandwidth_fraction") is not None else "–"
        lines.append(f"| {r['case']} | {fmt(r['minigrad_s'])} | {fmt(r['numpy_s'])} | {fmt(r['torch_s'])} | "
                     f"{ratio} | {bw} |")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(table(json.load(f)))
