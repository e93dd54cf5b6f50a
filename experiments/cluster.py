"""The paper's cluster claim, measured: schedulers under routers on fleets of 32 to 512 replicas.

    python experiments/cluster.py [--out experiments/results/cluster] [--processes 2] [--quick]

FCFS, SRPT-oracle, UniBoost and gittins-tail (the policy issue's new policy), each on every
replica, under each of the eight routers, on fleets of 32, 128 and 512 replicas and the single
engine (1 replica, the reference ordering), at per-replica loads 0.8-1.1 (arrivals at the load
times the fleet's summed saturation rate), on azure-conv and mooncake-conv (prefix sharing),
three seeds (``GRIDS``).

Workloads: one trace window is too few requests for a fleet (19,366 azure-conv requests are 38
per replica at 512), so the fleet serves ``copies`` independent tenants of the trace
(``Workload.superpose``: each copy a seeded phase shift of the whole trace, its prefix ids
apart), the first ``PER_REPLICA[w] x replicas`` requests: every fleet size sees the same
requests per replica, so the same per-replica horizon. The seed draws the phases.

Same engine as ``headline.py`` (Llama-3-8B on an A100-80GB, the vidur profile, vLLM 0.33's
defaults). Rows are appended to ``rows.jsonl`` as they finish and reused on a rerun (delete the
file after changing the code); writes ``cluster.csv``, ``cluster.md`` and plots into ``--out``.
"""
import argparse
import functools
import itertools
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
from headline import GPU, MODEL, PROFILE, fmt, interval_bars, latency_panel

import tailgym
from tailgym.compare import write_csv
from tailgym.fleet.routers import ROUTERS as ALL_ROUTERS
from tailgym.stats import mean_interval, paired_ratio
from tailgym.workload import load_workload

PER_REPLICA = {"azure-conv": 500, "mooncake-conv": 100}  # requests per replica (horizon)
POLICIES = ("fcfs", "srpt-oracle", "uniboost", "gittins-tail")
ROUTERS = tuple(ALL_ROUTERS)
LOADS = (0.8, 0.9, 1.0, 1.1)
SEEDS = (0, 1, 2)
# (replicas, policies, routers, loads); one replica is the single engine (the reference ordering)
GRIDS = ((1, POLICIES, ROUTERS[:1], LOADS),
         *((n, POLICIES, ROUTERS, LOADS) for n in (32, 128, 512)))
QUICK = dict(per_replica=40, seeds=(0, 1),
             grids=((1, ("fcfs", "uniboost"), ("round-robin",), (1.0,)),
                    (4, ("fcfs", "uniboost"), ("round-robin", "prefix-aware"), (1.0,))))
PAIRS = (("uniboost", "fcfs"), ("uniboost", "srpt-oracle"), ("gittins-tail", "uniboost"))
METRICS = ("ttft", "tbt", "ttlt")
STATS = ("mean", "p50", "p90", "p99")
KEY = ("workload", "replicas", "seed", "load", "policy", "router")


@functools.lru_cache(maxsize=4)
def fleet_workload(workload: str, replicas: int, seed: int, per_replica: int):
    """The first ``per_replica x replicas`` requests of enough superposed trace copies."""
    base = load_workload(workload)
    n = per_replica * replicas
    return base.superpose(math.ceil(n / len(base)), seed).head(n)


def run_cell(task: dict) -> dict:
    """One fleet simulation; its row: the condition, latency statistics and counts."""
    wl = fleet_workload(task["workload"], task["replicas"], task["seed"], task["per_replica"])
    r = tailgym.simulate(wl, task["policy"], replicas=task["replicas"], router=task["router"],
                         load=task["load"], model=MODEL, gpu=GPU, profile=PROFILE)
    s = r.summary()
    if s["requests_completed"] + s["requests_rejected"] != len(wl):
        raise RuntimeError(f"{task}: {len(wl)} requests in, {s['requests_completed']} completed, "
                           f"{s['requests_rejected']} rejected")
    row = {k: task[k] for k in KEY}
    row.update({f"{m}_{q}": s[m][q] for m in METRICS for q in STATS})
    row.update(requests=len(wl), completed=s["requests_completed"], rejected=s["requests_rejected"],
               preemptions=s["preemptions"], cache_hit=s["prefix_cache_hit_rate"],
               imbalance=r.fleet["imbalance"]["requests"], busy_imbalance=r.fleet["imbalance"]["busy"],
               rate_rps=s["config"]["rate_rps"], saturation_rps=s["config"]["saturation_rps"],
               steps=r.steps, simulated_s=r.simulated_seconds, wall_s=r.wall_seconds)
    return row


def grid(quick: bool) -> list[dict]:
    """Every task, the smaller fleets first (the core results come first)."""
    seeds, grids = (QUICK["seeds"], QUICK["grids"]) if quick else (SEEDS, GRIDS)
    return [dict(workload=w, replicas=n, seed=seed, load=load, policy=policy, router=router,
                 per_replica=QUICK["per_replica"] if quick else PER_REPLICA[w])
            for n, policies, routers, loads in grids
            for w, seed, load, policy, router in itertools.product(
                PER_REPLICA, seeds, loads, policies, routers)]


def run_all(tasks: list[dict], store: Path, processes: int) -> list[dict]:
    """Run the tasks not yet in ``store`` (JSON lines), appending each row as it finishes."""
    def key(d):
        return tuple(d[k] for k in KEY)
    done = {}
    if store.exists():
        for line in store.read_text().splitlines():
            row = json.loads(line)
            done[key(row)] = row
    todo = [t for t in tasks if key(t) not in done]
    print(f"cluster: {len(tasks)} simulations, {len(tasks) - len(todo)} stored", file=sys.stderr)
    start = time.perf_counter()
    with store.open("a") as f, multiprocessing.get_context("fork").Pool(processes) as pool:
        for i, row in enumerate(pool.imap_unordered(run_cell, todo), 1):
            done[key(row)] = row
            f.write(json.dumps(row) + "\n")
            f.flush()
            if i % 50 == 0 or i == len(todo):
                print(f"  {i}/{len(todo)} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return [done[key(t)] for t in tasks]


def by_seed(rows, metric) -> dict:
    """``{(workload, replicas, load, policy, router): {seed: value}}``."""
    out = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in KEY if k != "seed"), {})[r["seed"]] = r[metric]
    return out


def paired(data, a, b):
    """Paired ratio interval of condition ``a`` to ``b`` over their common seeds."""
    seeds = sorted(set(data[a]) & set(data[b]))
    return paired_ratio([data[a][s] for s in seeds], [data[b][s] for s in seeds])


def verdict(iv) -> str:
    return "tie" if not iv.real else ("better" if iv.estimate < 0 else "worse")


def conditions(rows):
    """``(workload, replicas, load)`` of the fleet rows, and the routers run there."""
    out = {}
    for r in rows:
        if r["replicas"] > 1:
            out.setdefault((r["workload"], r["replicas"], r["load"]), {})[r["router"]] = None
    return {k: list(v) for k, v in out.items()}


def ordering_table(rows, metric: str) -> str:
    """Does the single engine's verdict on each policy pair hold at fleet scale? Per
    condition: the single-engine interval, then per fleet size how many routers give the same
    verdict (better / worse / tie)."""
    data = by_seed(rows, metric)
    conds = conditions(rows)
    sizes = sorted({c[1] for c in conds})
    lines = [f"\n**{metric.upper().replace('_', ' ')}: does the single-engine verdict hold?** "
             f"(1 replica: paired change, [95% t interval], * = excludes 0; fleets: routers "
             f"whose verdict (better, worse or tie) is the same, of those run)\n",
             "| workload | pair | load | 1 replica | " + " | ".join(f"{n} replicas" for n in sizes) + " |",
             "|---|---|---|---|" + "---|" * len(sizes)]
    for w, (a, b) in itertools.product(PER_REPLICA, PAIRS):
        for load in sorted({c[2] for c in conds if c[0] == w}):
            one = [k for k in data if k[:3] == (w, 1, load) and k[3] == a]
            if not one or (w, 1, load, b, one[0][4]) not in data:
                continue
            base = paired(data, one[0], (w, 1, load, b, one[0][4]))
            cells = []
            for n in sizes:
                routers = conds.get((w, n, load), [])
                ok = [r for r in routers if (w, n, load, a, r) in data and (w, n, load, b, r) in data]
                same = sum(verdict(paired(data, (w, n, load, a, r), (w, n, load, b, r)))
                           == verdict(base) for r in ok)
                cells.append(f"{same}/{len(ok)}" if ok else "-")
            lines.append(f"| {w} | {a} vs {b} | {load:g} | {fmt(base)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread(data, keys):
    """Paired interval of the worst of ``keys`` vs the best (by mean)."""
    keys = [k for k in keys if k in data]
    mean = {k: np.mean(list(data[k].values())) for k in keys}
    return paired(data, max(keys, key=mean.get), min(keys, key=mean.get))


def spread_table(rows, metric: str) -> str:
    """Router spread (worst vs best router, each policy fixed) against scheduler spread (worst
    vs best policy, each router fixed), per condition: the median and the largest of each,
    and how many are real."""
    data = by_seed(rows, metric)
    lines = [f"\n**{metric.upper().replace('_', ' ')}: which matters more, router or scheduler?** "
             f"(worst vs best by mean, paired over seeds; router spread with the policy fixed, "
             f"over the policies run; scheduler spread with the router fixed, over the routers "
             f"run; median, largest [its 95% interval], real = interval excludes 0)\n",
             "| workload | replicas | load | router spread: median | largest | real | "
             "scheduler spread: median | largest | real |", "|---|---|---|---|---|---|---|---|---|"]
    for (w, n, load), routers in conditions(rows).items():
        policies = [p for p in POLICIES if (w, n, load, p, routers[0]) in data]
        cells = []
        for fixed, varied, make in ((policies, routers, lambda p, r: (w, n, load, p, r)),
                                    (routers, policies, lambda r, p: (w, n, load, p, r))):
            ivs = [spread(data, [make(f, v) for v in varied]) for f in fixed]
            top = max(ivs, key=lambda iv: iv.estimate)
            cells += [f"{100 * np.median([iv.estimate for iv in ivs]):+.0f}%", fmt(top),
                      f"{sum(iv.real for iv in ivs)}/{len(ivs)}"]
        lines.append(f"| {w} | {n} | {load:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def router_table(rows, metric: str, policy: str = "uniboost") -> str:
    """Each router against round-robin under ``policy``, per condition."""
    data = by_seed(rows, metric)
    conds = conditions(rows)
    routers = [r for r in ROUTERS if r != "round-robin" and any(r in v for v in conds.values())]
    lines = [f"\n**{metric.upper().replace('_', ' ')} under {policy}: each router vs round-robin** "
             f"(paired change, [95% t interval], * = excludes 0; negative = better)\n",
             "| workload | replicas | load | " + " | ".join(routers) + " |",
             "|---|---|---|" + "---|" * len(routers)]
    for (w, n, load), here in conds.items():
        ref = (w, n, load, policy, "round-robin")
        cells = [fmt(paired(data, (w, n, load, policy, r), ref))
                 if r in here and ref in data and (w, n, load, policy, r) in data else "-"
                 for r in routers]
        lines.append(f"| {w} | {n} | {load:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_table(rows, column: str, what: str) -> str:
    """Mean of ``column`` per router and fleet size, over policies, loads and seeds."""
    conds = conditions(rows)
    sizes = sorted({c[1] for c in conds})
    lines = [f"\n**{what}** (mean over policies, loads and seeds)\n",
             "| workload | router | " + " | ".join(f"{n} replicas" for n in sizes) + " |",
             "|---|---|" + "---|" * len(sizes)]
    for w, router in itertools.product(PER_REPLICA, ROUTERS):
        cells = []
        for n in sizes:
            v = [r[column] for r in rows if (r["workload"], r["replicas"], r["router"]) == (w, n, router)]
            cells.append(f"{np.mean(v):.3f}" if v else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {w} | {router} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, path: Path, metric: str, lines_of: str, fixed: str) -> None:
    """``metric`` vs load; a panel per workload (rows) and fleet size (columns); a line per
    router (``lines_of="router"``, policy ``fixed``) or per policy (router ``fixed``); the
    single engine dashed (of policy ``fixed`` in black, or of each policy in its colour)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data = by_seed(rows, metric)
    sizes = sorted({r["replicas"] for r in rows if r["replicas"] > 1})
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(len(workloads), len(sizes), figsize=(4.6 * len(sizes), 3.8 * len(workloads)),
                             squeeze=False)
    names = ROUTERS if lines_of == "router" else POLICIES

    def curve(w, n, policy, router):
        pts = sorted((load, mean_interval(list(v.values()))) for (w_, n_, load, p, r), v in data.items()
                     if (w_, n_, p) == (w, n, policy) and (n == 1 or r == router))
        return [x for x, _ in pts], np.array([iv.estimate for _, iv in pts]), np.array(
            [iv.hi - iv.estimate if iv.has_interval else 0.0 for _, iv in pts])

    for (i, w), (j, n) in itertools.product(enumerate(workloads), enumerate(sizes)):
        ax = axes[i, j]
        for k, name in enumerate(names):
            policy, router = (fixed, name) if lines_of == "router" else (name, fixed)
            x, est, half = curve(w, n, policy, router)
            if x:
                interval_bars(ax, x, est, half, color=f"C{k}", label=name)
            if lines_of == "policy" or k == 0:  # the single engine: dashed
                x, est, _ = curve(w, 1, policy, router)
                if x:
                    ax.plot(x, est, "--x", lw=1, ms=4, color="k" if lines_of == "router" else f"C{k}",
                            label=f"1 replica, {policy}" if k == 0 else None)
        latency_panel(ax, f"{w}, {n} replicas", "per-replica load", metric)
    axes[0, 0].legend(fontsize=7)
    what = f"routers under {fixed}" if lines_of == "router" else f"policies under {fixed}"
    fig.suptitle(f"{metric.replace('_', ' ').upper()} vs load, {what} — {MODEL} on {GPU} replicas "
                 f"(bars: 95% t interval of the mean over 3 seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(rows, out: Path, seconds: float) -> None:
    with open(out / "cluster.md", "w") as f:
        f.write(f"# Generated by experiments/cluster.py ({len(rows)} simulations; this run "
                f"{seconds:.0f} s)\n\nRequests per replica: "
                + ", ".join(f"{w} {n}" for w, n in dict.fromkeys(
                    (r["workload"], r["requests"] // r["replicas"]) for r in rows)) + ".\n")
        f.write("\n## Does the single-engine ordering of policies hold at fleet scale?\n")
        for metric in ("ttlt_p99", "ttft_p99"):
            f.write(ordering_table(rows, metric) + "\n")
        f.write("\n## Router or scheduler?\n")
        for metric in ("ttlt_p99", "ttft_p99"):
            f.write(spread_table(rows, metric) + "\n")
        f.write("\n## Routers against round-robin\n")
        for metric in ("ttlt_p99", "ttft_p99", "ttlt_mean"):
            f.write(router_table(rows, metric) + "\n")
        f.write("\n## Cache and balance\n")
        f.write(mean_table(rows, "cache_hit", "Share of prompt tokens served from the prefix cache") + "\n")
        f.write(mean_table(rows, "imbalance", "Request imbalance (max / mean requests per replica)") + "\n")
        f.write(mean_table(rows, "preemptions", "Preemptions per simulation") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cluster"))
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="a few small fleets (smoke)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tailgym.simulate("default:n=50", "uniboost", replicas=2, router="weighted")  # compile before forking
    rows = run_all(grid(args.quick), out / "rows.jsonl", args.processes)
    write_csv(rows, out / "cluster.csv")
    report(rows, out, time.perf_counter() - t0)
    plot(rows, out / "ttlt_p99_routers.png", "ttlt_p99", "router", "uniboost")
    plot(rows, out / "ttft_p99_routers.png", "ttft_p99", "router", "uniboost")
    plot(rows, out / "ttlt_p99_policies.png", "ttlt_p99", "policy", "least-outstanding")
    print(f"done in {time.perf_counter() - t0:.0f} s; wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
