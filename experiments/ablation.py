"""Which of UniBoost's parts matter, on every headline workload.

    python experiments/ablation.py [--processes 2] [--window 3000] [--seeds 0 1 2] [--out FILE]

Runs UniBoost with one part changed at a time (and FCFS / SRPT-oracle / gittins-tail for
reference) on the headline windows (``headline.py``) in each condition of ``CONDITIONS``, and
writes, per condition, the mean over windows and the paired change of P99 TTLT and P99 TTFT
against UniBoost's defaults (95% t interval over windows, * where it excludes 0) to
``results/ablation.md``.
"""
import argparse
import os
from pathlib import Path

import numpy as np
from headline import WINDOW, WORKLOADS, by_condition, fmt, ratio, run_grid, window_spec

CONDITIONS = tuple((w, "tight", 1.0) for w in WORKLOADS) + (
    ("azure-conv", "default", 1.0), ("azure-code", "default", 1.0))
VARIANTS = {
    "uniboost (defaults)": ("uniboost", None),
    "fcfs": ("fcfs", None), "srpt-oracle": ("srpt-oracle", None),
    "gittins-tail": ("gittins-tail", None),
    "uniboost variant=base (no MemGuard)": ("uniboost", {"variant": "base"}),
    "uniboost variant=distboost": ("uniboost", {"variant": "distboost"}),
    "uniboost memguard=work": ("uniboost", {"memguard": "work"}),
    "uniboost cached=1": ("uniboost", {"cached": 1}),
    "uniboost gamma=1e9 fixed (FCFS order)": ("uniboost", {"gamma_mode": "fixed", "gamma": 1e9}),
    "uniboost gamma=0.3 fixed": ("uniboost", {"gamma_mode": "fixed", "gamma": 0.3}),
    "uniboost gamma_mode=ada": ("uniboost", {"gamma_mode": "ada"}),
    "uniboost k=0": ("uniboost", {"k": 0}),
    "uniboost delta=0": ("uniboost", {"delta": 0.0}),
    "uniboost reserve=0": ("uniboost", {"reserve": 0.0}),
}
REFERENCE = "uniboost (defaults)"
COLUMNS = ("ttlt_p99", "ttft_p99", "ttlt_p50", "ttft_p50", "preemptions")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--window", type=int, default=WINDOW, help="requests per window")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="windows")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ablation.md"))
    args = parser.parse_args(argv)
    cells = [dict(workload=w, kv=kv, load=load, seed=s, policy=policy, args=knobs, label=label,
                  spec=window_spec(w, s, window=args.window))
             for w, kv, load in CONDITIONS for label, (policy, knobs) in VARIANTS.items()
             for s in args.seeds]
    rows = run_grid(cells, args.processes, "ablation")
    data = {c: by_condition(rows, c) for c in COLUMNS}
    lines = []
    for cond in CONDITIONS:
        w, kv, load = cond
        lines += [f"\n{w}, {kv} KV, load {load} (mean of windows {', '.join(map(str, args.seeds))};"
                  f" change vs {REFERENCE}: geometric mean [95% paired t interval], * = excludes 0)\n",
                  "| config | P99 TTLT (s) | P99 TTFT (s) | P50 TTLT (s) | P50 TTFT (s) | preemptions "
                  "| P99 TTLT change | P99 TTFT change |",
                  "|---|---|---|---|---|---|---|---|"]
        for label in VARIANTS:
            means = [np.mean(list(data[c][cond][label].values())) for c in COLUMNS]
            changes = [fmt(ratio(data[c][cond], label, REFERENCE)) if label != REFERENCE else ""
                       for c in ("ttlt_p99", "ttft_p99")]
            lines.append(f"| {label} | " + " | ".join(f"{m:.3g}" for m in means) + " | "
                         + " | ".join(changes) + " |")
    out = Path(args.out)
    out.write_text("\n".join(lines).strip() + "\n")
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
