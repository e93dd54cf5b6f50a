"""Why UniBoost beats SRPT-oracle at P99: which of its parts matter.

    python experiments/ablation.py [--processes 2] [--window 3000] [--seeds 0 1 2] [--out FILE]

Runs UniBoost with one part changed at a time (and FCFS / SRPT-oracle for reference) on
windows 0-2 of the headline setup (``headline.py``) in three conditions, and writes the
mean over windows to ``results/ablation.md``.
"""
import argparse
import os
from pathlib import Path

import numpy as np
from headline import WINDOW, run_grid, window_spec

CONDITIONS = (("azure-conv", "tight", 1.1), ("azure-conv", "default", 1.0),
              ("azure-code", "default", 1.0))
VARIANTS = {
    "fcfs": ("fcfs", None), "srpt-oracle": ("srpt-oracle", None),
    "uniboost (defaults)": ("uniboost", None),
    "uniboost variant=base (no MemGuard)": ("uniboost", {"variant": "base"}),
    "uniboost variant=distboost": ("uniboost", {"variant": "distboost"}),
    "uniboost gamma=1e9 fixed (FCFS order)": ("uniboost", {"gamma_mode": "fixed", "gamma": 1e9}),
    "uniboost gamma=0.3 fixed": ("uniboost", {"gamma_mode": "fixed", "gamma": 0.3}),
    "uniboost gamma_mode=ada": ("uniboost", {"gamma_mode": "ada"}),
    "uniboost k=0": ("uniboost", {"k": 0}),
    "uniboost delta=0": ("uniboost", {"delta": 0.0}),
    "uniboost reserve=0": ("uniboost", {"reserve": 0.0}),
}
COLUMNS = ("ttlt_p99", "ttft_p99", "ttlt_p50", "ttft_p50", "preemptions")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--window", type=int, default=WINDOW, help="requests per window")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="windows")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ablation.md"))
    args = parser.parse_args(argv)
    cells = [dict(trace=t, arrivals="trace", kv=kv, load=load, seed=s, policy=policy, args=knobs,
                  label=label, workload=window_spec(t, s, 6, "trace", args.window))
             for t, kv, load in CONDITIONS for label, (policy, knobs) in VARIANTS.items()
             for s in args.seeds]
    rows = run_grid(cells, args.processes, "ablation")
    lines = []
    for t, kv, load in CONDITIONS:
        lines += [f"\n{t}, trace arrivals, {kv} KV, load {load} (mean of windows {', '.join(map(str, args.seeds))})\n",
                  "| config | P99 TTLT (s) | P99 TTFT (s) | P50 TTLT (s) | P50 TTFT (s) | preemptions |",
                  "|---|---|---|---|---|---|"]
        for label in VARIANTS:
            sel = [r for r in rows if (r["trace"], r["kv"], r["load"], r["policy"]) == (t, kv, load, label)]
            lines.append(f"| {label} | " + " | ".join(f"{np.mean([r[c] for r in sel]):.3g}"
                                                      for c in COLUMNS) + " |")
    out = Path(args.out)
    out.write_text("\n".join(lines).strip() + "\n")
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
