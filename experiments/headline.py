"""The policy comparison: UniBoost, the beyond-UniBoost gittins-tail, SRPT with perfect
lengths and the other baselines, with 95% intervals.

    python experiments/headline.py [--out experiments/results] [--processes 2] [--quick]

Setup (documented in RESULTS.md): Llama-3-8B on an A100-80GB (tensor parallel 1) with step
times from the profile fitted to vidur's measured per-operator timings, vLLM 0.33's defaults
(budget 2048 tokens, 256 sequences, chunked prefill, prefix caching, async scheduling,
full-prompt reservation, recompute preemption). Five workloads (``WORKLOADS``): 3000-request
windows (the seeds: the first three of eight evenly spaced windows) of the Azure 2023
conversation trace (its own arrival times rescaled, and arrivals redrawn from a Gamma process
with CV 3), the Azure code trace and the Mooncake conversation trace (prefix sharing), and
3000 requests drawn from the ServeGen DeepSeek-R1 model with the seed; at loads (fractions of
the engine's measured saturation throughput) through FCFS's knee and past it, with the default
KV cache and a tight one. Every comparison is paired by window, with its 95% t interval.

Then gamma, k and delta of UniBoost are tuned per Azure trace on the tuning windows at load
1.0 and reported on three held-out windows (3-5). Writes ``headline.csv``, ``frontier.csv``,
``tuning.csv``, ``heldout.csv``, ``tables.md`` and plots into ``--out``.
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
from tailgym.stats import Interval, mean_interval, paired_ratio
from tailgym.workload import load_workload

MODEL, GPU, PROFILE = "llama3-8b", "a100-80gb", "vidur-llama3-8b-a100-80gb-tp1"
WINDOW, N_WINDOWS = 3000, 8
# label: (data set, spec options after the window, blocks of the tight KV cache)
WORKLOADS = {
    "azure-conv": ("azure-conv", "", 3000),
    "azure-conv gamma-cv3": ("azure-conv", ",arrival=gamma,cv=3", 3000),
    "azure-code": ("azure-code", "", 3000),
    "mooncake-conv": ("mooncake-conv", "", 10000),  # prompts up to 126k tokens (7,900 blocks)
    "servegen-r1": ("servegen-r1", "", 3000),
}
TRACES = ("azure-conv", "azure-code")  # gamma frontier and tuning
POLICIES = {  # label: (policy, knobs)
    "fcfs": ("fcfs", None), "sjf-oracle": ("sjf-oracle", None),
    "srpt-oracle": ("srpt-oracle", None), "srpt-predicted": ("srpt-predicted", None),
    "las": ("las", None), "mlfq": ("mlfq", None),
    "mlfq-protected": ("mlfq", {"k": 256, "starve_s": 120}),
    "uniboost": ("uniboost", None), "uniboost-dist": ("uniboost-dist", None),
    "gittins-tail": ("gittins-tail", None), "gamma-boost-oracle": ("gamma-boost-oracle", None),
}
REFERENCES = ("fcfs", "srpt-oracle", "uniboost")  # the bar of the beyond-UniBoost target
LOADS = (0.9, 1.0, 1.1)
KV = ("default", "tight")
FRONTIER_GAMMAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3)
TUNE_GRID = {"gamma": (0.3, 1.0, 3.0, 10.0, 30.0), "k": (64, 256), "delta": (0.0, 0.05, 0.5)}
METRICS = ("ttft", "tbt", "ttlt")
STATS = ("mean", "p50", "p90", "p95", "p99")


def window_spec(workload: str, seed: int, n_windows: int = N_WINDOWS, window: int = WINDOW) -> str:
    """Seed ``s``: for a trace, the s-th of ``n_windows`` evenly spaced windows of ``window``
    requests; for the generated servegen-r1, ``window`` requests drawn with seed ``s``."""
    data, options, _ = WORKLOADS[workload]
    if data == "servegen-r1":
        return f"{data}:n={window},seed={seed}{options}"
    total = len(load_workload(data))
    start = seed * (total - window) // (n_windows - 1)
    return f"{data}:start={start},n={window}{options}"


def run_grid(cells: list[dict], processes: int, label: str) -> list[dict]:
    """Run ``cells`` (dicts naming the condition: ``workload`` label, ``kv``, ``load``,
    ``seed``, ``policy`` and optional ``args`` and display ``label``; ``spec`` overrides the
    window) through ``tailgym.compare``'s grid, in a fresh scratch directory so no result of an
    older code version is reused; one row per cell: its condition, then the latency statistics
    and counts."""
    start = time.perf_counter()
    grid = []
    for c in cells:
        tight = WORKLOADS[c["workload"]][2]
        grid.append(Cell(c.get("spec") or window_spec(c["workload"], c["seed"]),
                         make_policy(c["policy"], c.get("args")), c["load"], c["seed"],
                         model=MODEL, gpu=GPU,
                         engine={"profile": PROFILE, "kv_blocks": tight if c["kv"] == "tight" else None}))
    with tempfile.TemporaryDirectory() as scratch:
        stats = run_cells(grid, scratch, processes)
    rows = []
    for c, s in zip(cells, stats):
        row = {k: v for k, v in c.items() if k not in ("spec", "args", "label")}
        row["policy"] = c.get("label", c["policy"])
        row["args"] = ";".join(f"{k}={v}" for k, v in sorted((c.get("args") or {}).items()))
        row.update({f"{m}_{q}": s[f"{m}_{q}"] for m in METRICS for q in STATS})
        row.update(completed=s["requests_completed"], rejected=s["requests_rejected"],
                   preemptions=s["preemptions"], throughput=s["throughput_rps"])
        rows.append(row)
    print(f"{label}: {len(cells)} runs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return rows


def grid_cells(seeds, loads, policies: dict, workloads=tuple(WORKLOADS)) -> list[dict]:
    """Every workload x KV x load x seed x policy (``policies``: label -> (name, knobs))."""
    return [dict(workload=w, kv=kv, load=load, seed=seed, policy=name, args=knobs, label=label)
            for w, kv, load, seed, (label, (name, knobs)) in itertools.product(
                workloads, KV, loads, seeds, policies.items())]


def by_condition(rows, metric):
    """``{(workload, kv, load): {policy: {seed: value}}}``."""
    out = {}
    for r in rows:
        cond = out.setdefault((r["workload"], r["kv"], r["load"]), {})
        cond.setdefault(r["policy"], {})[r["seed"]] = r[metric]
    return out


def ratio(values: dict, policy: str, reference: str) -> Interval:
    """Paired (by window) relative difference of ``policy`` from ``reference``."""
    seeds = sorted(values[policy])
    return paired_ratio([values[policy][s] for s in seeds], [values[reference][s] for s in seeds])


def fmt(iv: Interval) -> str:
    """``+12% [+3, +20] *``: estimate, 95% interval, a star where it excludes 0."""
    if not np.isfinite(iv.estimate):
        return "-"
    if not iv.has_interval:
        return f"{100 * iv.estimate:+.0f}%"
    return (f"{100 * iv.estimate:+.0f}% [{100 * iv.lo:+.0f}, {100 * iv.hi:+.0f}]"
            + (" *" if iv.real else ""))


def tables(rows: list[dict], policy: str, baseline: str,
           metrics=("ttlt_p99", "ttft_p99", "ttlt_p50", "ttft_p50")) -> str:
    """Markdown: paired relative change of ``policy`` vs ``baseline`` per condition."""
    lines = []
    for metric in metrics:
        data = by_condition(rows, metric)
        loads = sorted({k[2] for k in data})
        lines.append(f"\n**{metric.upper().replace('_', ' ')}: {policy} vs {baseline}** "
                     f"(geometric mean over windows of the ratio - 1, [95% paired t interval], "
                     f"* = excludes 0; negative = {policy} better)\n")
        lines.append("| workload | KV | " + " | ".join(f"load {x:g}" for x in loads) + " |")
        lines.append("|---|---|" + "---|" * len(loads))
        for w, kv in dict.fromkeys((k[0], k[1]) for k in data):
            cells = []
            for x in loads:
                values = data.get((w, kv, x), {})
                ok = policy in values and baseline in values
                cells.append(fmt(ratio(values, policy, baseline)) if ok else "-")
            lines.append(f"| {w} | {kv} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def absolute_table(rows: list[dict], metric: str, workload: str, kv: str) -> str:
    """Markdown: ``metric`` per policy and load, mean over windows."""
    data = {k[2]: v for k, v in by_condition(rows, metric).items() if k[:2] == (workload, kv)}
    loads = sorted(data)
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    unit = "" if metric == "preemptions" else " (s)"
    lines = [f"\n**{metric}{unit}, {workload}, {kv} KV** (mean over windows)\n",
             "| policy | " + " | ".join(f"{x:g}" for x in loads) + " |",
             "|---|" + "---|" * len(loads)]
    for p in policies:
        lines.append(f"| {p} | " + " | ".join(f"{np.mean(list(data[x][p].values())):.3g}"
                                              for x in loads) + " |")
    return "\n".join(lines)


def target_table(rows: list[dict], policy: str, loads=(0.9, 1.0)) -> str:
    """Markdown: does ``policy`` meet the beyond-UniBoost target per workload, KV and load?
    P99 TTLT and P99 TTFT at or below the best of ``REFERENCES`` (paired interval vs that
    best), P50 TTLT within 1.2x of SRPT-oracle's."""
    lines = [f"\n**Target check: {policy}** (P99: ratio to the best reference by mean, with "
             f"its paired interval; 'yes' = mean at or below it; P50 TTLT: ratio to srpt-oracle, "
             f"'yes' = at most 1.2)\n",
             "| workload | KV | load | P99 TTLT vs best | P99 TTFT vs best | P50 TTLT / SRPT-oracle |",
             "|---|---|---|---|---|---|"]
    p99 = {m: by_condition(rows, m) for m in ("ttlt_p99", "ttft_p99", "ttlt_p50")}
    for (w, kv, load), _ in p99["ttlt_p99"].items():
        if load not in loads:
            continue
        cells = []
        for m in ("ttlt_p99", "ttft_p99"):
            values = p99[m][(w, kv, load)]
            best = min(REFERENCES, key=lambda p: np.mean(list(values[p].values())))
            iv = ratio(values, policy, best)
            cells.append(f"{'yes' if iv.estimate <= 0 else 'no'}: {fmt(iv)} vs {best}")
        values = p99["ttlt_p50"][(w, kv, load)]
        iv = ratio(values, policy, "srpt-oracle")
        cells.append(f"{'yes' if iv.estimate <= 0.2 else 'no'}: {1 + iv.estimate:.2f}x")
        lines.append(f"| {w} | {kv} | {load:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def interval_bars(ax, x, mean, half, **style) -> None:
    """Means with their interval half-widths as error bars, each bar kept above 0 (a log
    axis cannot draw it below)."""
    ax.errorbar(x, mean, yerr=np.minimum(half, 0.95 * mean), marker="o", ms=3, capsize=2,
                **style)


def latency_panel(ax, title: str, xlabel: str, metric: str) -> None:
    """A latency-vs-load panel: log scale, the metric's name in seconds, a light grid."""
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric.replace('_', ' ').upper()} (s)")
    ax.grid(alpha=0.3, which="both")


def plot_p99_vs_load(rows, path: Path, metric: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(WORKLOADS), figsize=(4.2 * len(WORKLOADS), 8), sharex=True)
    data = by_condition(rows, metric)
    for col, w in enumerate(WORKLOADS):
        for row, kv in enumerate(KV):
            ax = axes[row, col]
            loads = sorted(k[2] for k in data if k[:2] == (w, kv))
            for p in dict.fromkeys(r["policy"] for r in rows):
                ivs = [mean_interval(list(data[(w, kv, x)][p].values())) for x in loads]
                mean = np.array([iv.estimate for iv in ivs])
                half = np.array([iv.hi - iv.estimate for iv in ivs])
                interval_bars(ax, loads, mean, half, label=p,
                              lw=2.5 if p in ("uniboost", "gittins-tail") else 1.0)
            latency_panel(ax, f"{w}, {kv} KV", "load (fraction of FCFS saturation throughput)",
                          metric)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{metric.replace('_', ' ').upper()} vs load — {MODEL} on {GPU} ({PROFILE}), "
                 f"{WINDOW}-request windows (bars: 95% t interval of the mean over windows)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
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
            rs = [r for r in rows if r["workload"] == trace and r["args"].startswith(f"gamma={g};")]
            pts.append((mean_of(rs, f"{m}_p50"), mean_of(rs, f"{m}_p99"), g))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color="C5", label="uniboost, gamma sweep")
        for x, y, g in pts:
            ax.annotate(f"{g:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for k, p in enumerate(dict.fromkeys(r["policy"] for r in refs)):
            rs = [r for r in refs if r["workload"] == trace and r["policy"] == p]
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
                 "(large gamma); mean over windows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="two windows, two loads (smoke)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tailgym.simulate("default:n=50", "uniboost")  # compile once before forking
    seeds, loads = ((0, 1), (0.9, 1.0)) if args.quick else ((0, 1, 2), LOADS)
    rows = run_grid(grid_cells(seeds, loads, POLICIES), args.processes, "headline")
    write_csv(rows, out / "headline.csv")
    plot_p99_vs_load(rows, out / "ttlt_p99_vs_load.png", "ttlt_p99")
    plot_p99_vs_load(rows, out / "ttft_p99_vs_load.png", "ttft_p99")

    frontier_cells = [dict(workload=t, kv="default", load=0.9, seed=s, policy="uniboost",
                           args={"gamma_mode": "fixed", "gamma": g})
                      for t in TRACES for s in seeds for g in FRONTIER_GAMMAS]
    frontier_rows = run_grid(frontier_cells, args.processes, "frontier")
    write_csv(frontier_rows, out / "frontier.csv")
    refs = [r for r in rows if r["workload"] in TRACES and r["kv"] == "default"
            and r["load"] == 0.9 and r["policy"] in ("fcfs", "sjf-oracle", "srpt-oracle",
                                                     "uniboost", "gittins-tail")]
    plot_frontier(frontier_rows, refs, out / "gamma_frontier.png")

    # tune UniBoost (fixed gamma, k, delta) per trace on the tuning windows, tight KV, load 1.0
    combos = [dict(zip(TUNE_GRID, v), gamma_mode="fixed") for v in itertools.product(*TUNE_GRID.values())]
    tune_cells = [dict(workload=t, kv="tight", load=1.0, seed=s, policy="uniboost", args=c)
                  for t in TRACES for s in seeds for c in combos]
    tune_rows = run_grid(tune_cells, args.processes, "tuning")
    write_csv(tune_rows, out / "tuning.csv")
    best = {}
    for t in TRACES:
        score = {}
        for r in tune_rows:
            if r["workload"] == t:
                score.setdefault(r["args"], []).append(r["ttlt_p99"])
        pick = min(score, key=lambda a: np.mean(score[a]))
        best[t] = next(c for c in combos if ";".join(f"{k}={v}" for k, v in sorted(c.items())) == pick)
    held = tuple(s + len(seeds) for s in seeds)
    held_cells = [dict(c, label="uniboost-tuned", args=best[c["workload"]])
                  for c in grid_cells(held, loads, {"uniboost": ("uniboost", None)}, TRACES)]
    held_cells += grid_cells(held, loads, {p: POLICIES[p] for p in ("srpt-oracle", "uniboost", "fcfs")},
                             TRACES)
    held_rows = run_grid(held_cells, args.processes, "held-out")
    write_csv(held_rows, out / "heldout.csv")

    with open(out / "tables.md", "w") as f:
        f.write(f"# Generated by experiments/headline.py in {time.perf_counter() - t0:.0f} s\n")
        f.write("\n## Beyond UniBoost: gittins-tail against the target\n")
        f.write(target_table(rows, "gittins-tail"))
        for ref in REFERENCES:
            f.write(f"\n\n## gittins-tail vs {ref}\n")
            f.write(tables(rows, "gittins-tail", ref))
        f.write("\n\n## UniBoost vs SRPT-oracle (the paper's headline)\n")
        f.write(tables(rows, "uniboost", "srpt-oracle"))
        f.write("\n\n## uniboost vs fcfs\n")
        f.write(tables(rows, "uniboost", "fcfs"))
        f.write("\n\n## MLFQ with FastServe's protections vs plain MLFQ\n")
        f.write(tables(rows, "mlfq-protected", "mlfq"))
        f.write("\n\n## uniboost-dist vs uniboost\n")
        f.write(tables(rows, "uniboost-dist", "uniboost"))
        f.write("\n\n## Absolute values\n")
        for w, kv in itertools.product(WORKLOADS, KV):
            for metric in ("ttlt_p99", "ttft_p99", "ttlt_p50", "preemptions"):
                f.write(absolute_table(rows, metric, w, kv) + "\n")
        f.write(f"\n\n## Tuned UniBoost on held-out windows (seeds {', '.join(map(str, held))})\n")
        f.write("\nPicked on the tuning windows (tight KV, trace arrivals, load 1.0, min mean "
                "P99 TTLT): " + "; ".join(f"{t}: {best[t]}" for t in TRACES) + "\n")
        f.write(tables(held_rows, "uniboost-tuned", "srpt-oracle"))
        f.write("\n")
        f.write(tables(held_rows, "uniboost-tuned", "uniboost"))
    print(f"done in {time.perf_counter() - t0:.0f} s; wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
