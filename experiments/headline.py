"""The paper's headline comparison: UniBoost vs SRPT with perfect lengths (and friends).

    python experiments/headline.py [--out experiments/results] [--processes 2] [--quick]

Setup (documented in RESULTS.md): Llama-3-8B on an A100-80GB (tensor parallel 1) with step
times from the profile fitted to vidur's measured per-operator timings, vLLM's A100 defaults
(budget 2048 tokens, 256 sequences, chunked prefill, recompute preemption). Workloads: three
3000-request windows (the seeds) of each Azure 2023 trace (conversation, code), with the
trace's own arrival times rescaled ("trace") or arrivals redrawn from a Gamma process with
CV 3 ("gamma-cv3"), at loads (fractions of the engine's measured saturation throughput) up
to and past FCFS's knee, with the default KV cache and a tight one (3000 blocks).

Then gamma, k and delta of UniBoost are tuned per trace on the tuning windows (seeds 0-2) at
load 1.0 and reported on three held-out windows (seeds 3-5). Writes ``headline.csv``,
``frontier.csv``, ``tuning.csv``, ``heldout.csv``, ``tables.md`` and plots into ``--out``.
"""
import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tailgym
from tailgym.compare import Cell, make_policy, write_csv
from tailgym.compare import run_grid as run_cells
from tailgym.workload import load_workload

MODEL, GPU, PROFILE = "llama3-8b", "a100-80gb", "vidur-llama3-8b-a100-80gb-tp1"
TRACES = ("azure-conv", "azure-code")
WINDOW = 3000
POLICIES = ("fcfs", "sjf-oracle", "srpt-oracle", "srpt-predicted", "las", "uniboost",
            "uniboost-dist", "gamma-boost-oracle")
LOADS = (0.6, 0.8, 0.9, 1.0, 1.1, 1.2)
ARRIVALS = {"trace": "", "gamma-cv3": ",arrival=gamma,cv=3"}
KV = {"default": None, "tight": 3000}
FRONTIER_GAMMAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3)
TUNE_GRID = {"gamma": (0.3, 1.0, 3.0, 10.0, 30.0), "k": (64, 256), "delta": (0.0, 0.05, 0.5)}
METRICS = ("ttft", "tbt", "ttlt")
STATS = ("mean", "p50", "p90", "p95", "p99")


def window_spec(trace: str, seed: int, n_windows: int, arrivals: str, window: int = WINDOW) -> str:
    """Seed ``s`` = the s-th of ``n_windows`` evenly spaced windows of ``window`` requests."""
    total = len(load_workload(trace))
    start = seed * (total - window) // (n_windows - 1)
    return f"{trace}:start={start},n={window}{ARRIVALS[arrivals]}"


def run_grid(cells: list[dict], processes: int, label: str) -> list[dict]:
    """Run ``cells`` (dicts naming the condition, ``workload``, ``policy``, optional ``args``
    and display ``label``) through ``tailgym.compare``'s grid, in a fresh scratch directory
    so no result of an older code version is reused; one row per cell: its condition, then
    the latency statistics and counts."""
    start = time.perf_counter()
    grid = [Cell(c["workload"], make_policy(c["policy"], c.get("args")), c["load"], c["seed"],
                 model=MODEL, gpu=GPU, engine={"profile": PROFILE, "kv_blocks": KV[c["kv"]]})
            for c in cells]
    with tempfile.TemporaryDirectory() as scratch:
        stats = run_cells(grid, scratch, processes)
    rows = []
    for c, s in zip(cells, stats):
        row = {k: v for k, v in c.items() if k not in ("workload", "args", "label")}
        row["policy"] = c.get("label", c["policy"])
        row["args"] = ";".join(f"{k}={v}" for k, v in sorted((c.get("args") or {}).items()))
        row.update({f"{m}_{q}": s[f"{m}_{q}"] for m in METRICS for q in STATS})
        row.update(completed=s["requests_completed"], rejected=s["requests_rejected"],
                   preemptions=s["preemptions"], throughput=s["throughput_rps"])
        rows.append(row)
    print(f"{label}: {len(cells)} runs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return rows


def headline_cells(seeds, loads, policies, args_for=lambda trace, p: None) -> list[dict]:
    cells = []
    for trace, arrivals, kv, load, seed, policy in itertools.product(
            TRACES, ARRIVALS, KV, loads, seeds, policies):
        cells.append(dict(trace=trace, arrivals=arrivals, kv=kv, load=load, seed=seed,
                          policy=policy, workload=window_spec(trace, seed, 6, arrivals),
                          args=args_for(trace, policy)))
    return cells


def relative(rows, policy, baseline, metric, **where):
    """Per condition: relative change of ``policy`` vs ``baseline`` in ``metric``, over seeds."""
    keyed = {}
    for r in rows:
        if all(r[k] == v for k, v in where.items()):
            keyed[(r["trace"], r["arrivals"], r["kv"], r["load"], r["seed"], r["policy"])] = r[metric]
    out = {}
    for (trace, arrivals, kv, load, seed, p), v in keyed.items():
        if p == policy:
            b = keyed[(trace, arrivals, kv, load, seed, baseline)]
            out.setdefault((trace, arrivals, kv, load), []).append((v - b) / b)
    return out


def fmt(changes: list[float]) -> str:
    c = 100 * np.asarray(changes)
    return f"{c.mean():+.0f}% [{c.min():+.0f}, {c.max():+.0f}]"


def tables(rows: list[dict], policy: str, baseline: str) -> str:
    """Markdown: relative change of ``policy`` vs ``baseline`` for P99 TTLT and P99 TTFT."""
    lines = []
    for metric in ("ttlt_p99", "ttft_p99", "ttlt_p50", "ttft_p50"):
        rel = relative(rows, policy, baseline, metric)
        loads = sorted({k[3] for k in rel})
        lines.append(f"\n**{metric.upper().replace('_', ' ')}: {policy} vs {baseline}** "
                     f"(mean over seeds [min, max]; negative = {policy} better)\n")
        lines.append("| trace | arrivals | KV | " + " | ".join(f"load {x:g}" for x in loads) + " |")
        lines.append("|---|---|---|" + "---|" * len(loads))
        for trace, arrivals, kv in itertools.product(TRACES, ARRIVALS, KV):
            cells = [fmt(rel[(trace, arrivals, kv, x)]) if (trace, arrivals, kv, x) in rel else "-"
                     for x in loads]
            lines.append(f"| {trace} | {arrivals} | {kv} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def absolute_table(rows: list[dict], metric: str, trace: str, arrivals: str, kv: str) -> str:
    loads = sorted({r["load"] for r in rows})
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    lines = [f"\n**{metric} (s), {trace}, {arrivals} arrivals, {kv} KV** (mean over seeds)\n",
             "| policy | " + " | ".join(f"{x:g}" for x in loads) + " |",
             "|---|" + "---|" * len(loads)]
    for p in policies:
        vals = []
        for x in loads:
            v = [r[metric] for r in rows if (r["policy"], r["trace"], r["arrivals"], r["kv"],
                                              r["load"]) == (p, trace, arrivals, kv, x)]
            vals.append(f"{np.mean(v):.3g}")
        lines.append(f"| {p} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot_p99_vs_load(rows, path: Path, metric: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 4, figsize=(18, 8), sharex=True)
    for ax, (trace, (kv, arrivals)) in zip(axes.flat, itertools.product(
            TRACES, itertools.product(KV, ARRIVALS))):
        for p in dict.fromkeys(r["policy"] for r in rows):
            pts = sorted({r["load"] for r in rows})
            ys = [[r[metric] for r in rows if (r["policy"], r["trace"], r["kv"], r["arrivals"],
                                                r["load"]) == (p, trace, kv, arrivals, x)]
                  for x in pts]
            mean = [np.mean(y) for y in ys]
            ax.errorbar(pts, mean, yerr=[[m - min(y) for m, y in zip(mean, ys)],
                                         [max(y) - m for m, y in zip(mean, ys)]],
                        marker="o", ms=3, capsize=2, label=p,
                        lw=2.5 if p == "uniboost" else 1.2)
        ax.set_yscale("log")
        ax.set_title(f"{trace}, {arrivals} arrivals, {kv} KV", fontsize=10)
        ax.set_xlabel("load (fraction of FCFS saturation throughput)")
        ax.set_ylabel(f"{metric.replace('_', ' ').upper()} (s)")
        ax.grid(alpha=0.3, which="both")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{metric.replace('_', ' ').upper()} vs load — {MODEL} on {GPU} ({PROFILE}), "
                 f"{WINDOW}-request windows, 3 seeds (bars: min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(rows, refs, path: Path) -> None:
    """P50 vs P99 (TTFT and TTLT) as gamma sweeps, with the other policies as markers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.6))
    panels = list(itertools.product(TRACES, ("ttft", "ttlt")))
    for ax, (trace, m) in zip(axes, panels):
        def mean_of(rs, key):
            return float(np.mean([r[key] for r in rs]))
        pts = []
        for g in FRONTIER_GAMMAS:
            rs = [r for r in rows if r["trace"] == trace and r["args"].startswith(f"gamma={g};")]
            pts.append((mean_of(rs, f"{m}_p50"), mean_of(rs, f"{m}_p99"), g))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color="C5", label="uniboost, gamma sweep")
        for x, y, g in pts:
            ax.annotate(f"{g:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for k, p in enumerate(dict.fromkeys(r["policy"] for r in refs)):
            rs = [r for r in refs if r["trace"] == trace and r["policy"] == p]
            ax.plot(mean_of(rs, f"{m}_p50"), mean_of(rs, f"{m}_p99"), "s", ms=8, color=f"C{k}",
                    label=p)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"P50 {m.upper()} (s)")
        ax.set_ylabel(f"P99 {m.upper()} (s)")
        ax.set_title(f"{trace}, trace arrivals, default KV, load 0.9", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle("The gamma frontier: UniBoost from SJF-like (small gamma, 1/s) to FCFS "
                 "(large gamma); mean of 3 seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="one seed, three loads (smoke)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tailgym.simulate("default:n=50", "uniboost")  # compile once before forking
    seeds, loads = ((0,), (0.9, 1.0, 1.2)) if args.quick else ((0, 1, 2), LOADS)
    rows = run_grid(headline_cells(seeds, loads, POLICIES), args.processes, "headline")
    write_csv(rows, out / "headline.csv")
    plot_p99_vs_load(rows, out / "ttlt_p99_vs_load.png", "ttlt_p99")
    plot_p99_vs_load(rows, out / "ttft_p99_vs_load.png", "ttft_p99")

    frontier_cells = [dict(trace=t, arrivals="trace", kv="default", load=0.9, seed=s,
                           policy="uniboost", workload=window_spec(t, s, 6, "trace"),
                           args={"gamma_mode": "fixed", "gamma": g})
                      for t in TRACES for s in seeds for g in FRONTIER_GAMMAS]
    frontier_rows = run_grid(frontier_cells, args.processes, "frontier")
    write_csv(frontier_rows, out / "frontier.csv")
    refs = [r for r in rows if r["arrivals"] == "trace" and r["kv"] == "default" and r["load"] == 0.9
            and r["policy"] in ("fcfs", "sjf-oracle", "srpt-oracle", "uniboost")]
    plot_frontier(frontier_rows, refs, out / "gamma_frontier.png")

    # tune UniBoost (fixed gamma, k, delta) per trace on the tuning windows, tight KV, load 1.0
    combos = [dict(zip(TUNE_GRID, v), gamma_mode="fixed") for v in itertools.product(*TUNE_GRID.values())]
    tune_cells = [dict(trace=t, arrivals="trace", kv="tight", load=1.0, seed=s, policy="uniboost",
                       workload=window_spec(t, s, 6, "trace"), args=c)
                  for t in TRACES for s in seeds for c in combos]
    tune_rows = run_grid(tune_cells, args.processes, "tuning")
    write_csv(tune_rows, out / "tuning.csv")
    best = {}
    for t in TRACES:
        score = {r["args"]: [] for r in tune_rows if r["trace"] == t}
        for r in tune_rows:
            if r["trace"] == t:
                score[r["args"]].append(r["ttlt_p99"])
        pick = min(score, key=lambda a: np.mean(score[a]))
        best[t] = next(c for c in combos if ";".join(f"{k}={v}" for k, v in sorted(c.items())) == pick)
    held = (3, 4, 5) if not args.quick else (3,)
    held_cells = headline_cells(held, loads, ("srpt-oracle", "uniboost", "fcfs"))
    held_cells += [dict(c, label="uniboost-tuned")
                   for c in headline_cells(held, loads, ("uniboost",), lambda t, p: best[t])]
    held_rows = run_grid(held_cells, args.processes, "held-out")
    write_csv(held_rows, out / "heldout.csv")

    with open(out / "tables.md", "w") as f:
        f.write(f"# Generated by experiments/headline.py in {time.perf_counter() - t0:.0f} s\n")
        f.write(tables(rows, "uniboost", "srpt-oracle"))
        f.write("\n\n## Absolute values\n")
        for trace, kv in itertools.product(TRACES, KV):
            f.write(absolute_table(rows, "ttlt_p99", trace, "trace", kv) + "\n")
            f.write(absolute_table(rows, "ttft_p99", trace, "trace", kv) + "\n")
        f.write("\n\n## uniboost-dist vs uniboost\n")
        f.write(tables(rows, "uniboost-dist", "uniboost"))
        f.write("\n\n## Tuned UniBoost on held-out windows (seeds 3-5)\n")
        f.write("\nPicked on the tuning windows (tight KV, trace arrivals, load 1.0, min mean "
                "P99 TTLT): " + "; ".join(f"{t}: {best[t]}" for t in TRACES) + "\n")
        f.write(tables(held_rows, "uniboost-tuned", "srpt-oracle"))
        f.write("\n")
        f.write(tables(held_rows, "uniboost", "srpt-oracle"))
    print(f"done in {time.perf_counter() - t0:.0f} s; wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
