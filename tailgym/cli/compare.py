"""``tailgym compare``: which policy gives the best tail for this workload? A policy x load x
seed grid (``tailgym.compare``), ranked, with CSVs and plots (``tailgym.plots``)."""
import os
import sys
from pathlib import Path

from .. import compare as grid
from . import common

NAME = "compare"
HELP = ("the main job: rank policies by their latency tails over loads and seeds, "
        "write CSVs and plots")
DESCRIPTION = (
    "Rank scheduling policies by their latency tails on one workload and engine: every policy "
    "column at every load and seed, in parallel processes (or Ray tasks: --backend ray). "
    "Prints a table per load, best first, with 95% intervals over seeds, and writes "
    "OUT/results.csv (a row per run), OUT/summary.csv (a row per policy and load), "
    "OUT/ranking.csv (the ranked table with its intervals) and plots. With no options: the "
    "main policies on the offline default workload at loads around the knee, three seeds.")
EPILOG = (
    "Policy syntax: NAME or NAME:KNOB=VALUE:KNOB=VALUE (e.g. uniboost:gamma=10:k=256), "
    "comma-separated; `tailgym policies` lists the knobs. --sweep POLICY.KNOB=V1,V2,... adds "
    "a column per value (a sweep of uniboost's gamma wants uniboost:gamma_mode=fixed, since the "
    "default mode estimates gamma online). Finished runs are kept under --out and skipped when "
    "the command is repeated (keyed on the inputs, not on the code: after changing the "
    "simulator, use a fresh --out).")


def _list(check):
    """An argparse ``type``: comma-separated values, each converted by ``check``."""
    def convert(text: str):
        return [check(token) for token in text.split(",")]
    return convert


def add_arguments(p) -> None:
    p.description, p.epilog = DESCRIPTION, EPILOG
    common.add_workload_arguments(p)
    main = ",".join(grid.MAIN_POLICIES)
    p.add_argument("--policies", default=main, metavar="P[:KNOB=V...],...",
                   help=f"policy columns (default: {main})")
    p.add_argument("--sweep", action="append", default=[], metavar="POLICY.KNOB=V1,V2,...",
                   help="one column per value (repeatable), e.g. uniboost.gamma=0.1,1,10")
    loads = ",".join(f"{x:g}" for x in grid.KNEE_LOADS)
    p.add_argument("--loads", type=_list(common.positive), default=list(grid.KNEE_LOADS),
                   metavar="L1,L2,...",
                   help=f"arrival rates as fractions of the engine's saturation throughput "
                        f"(default: {loads})")
    p.add_argument("--seeds", type=_list(common.nonneg_int), default=list(grid.SEEDS),
                   metavar="S1,S2,...",
                   help=f"seeds: each redraws a synthetic workload or redrawn arrivals "
                        f"(default: {','.join(map(str, grid.SEEDS))})")
    common.add_engine_arguments(p)
    common.add_report_arguments(p)
    p.add_argument("--processes", type=common.positive_int, default=os.cpu_count() or 1,
                   help="worker processes (default: CPU count; 1 = in this process); with "
                        "--backend ray, the CPUs of the local Ray")
    p.add_argument("--backend", choices=grid.BACKENDS, default="process",
                   help="process: worker processes on this machine; ray: one Ray task per "
                        "run, on a local Ray or the cluster at --ray-address, results stored "
                        "under --out here (needs pip install 'tailgym[ray]'; default: process)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="the Ray cluster of --backend ray: auto (the cluster `ray start` began "
                        "on this machine, or $RAY_ADDRESS), HOST:6379, or ray://HOST:10001 "
                        "(Ray Client) (default: a local Ray of --processes CPUs)")
    p.add_argument("--out", default="tailgym-compare",
                   help="output folder, reused to resume (default: tailgym-compare)")
    p.add_argument("--metric", action="append", choices=grid.METRICS,
                   help=f"metric of the tables and plots (repeatable; default: "
                        f"{', '.join(grid.TABLE_METRICS)})")
    p.add_argument("--rank-by", default=grid.RANK_BY, metavar="METRIC_STAT",
                   choices=[f"{m}_{s}" for m in grid.METRICS for s in grid.STATS],
                   help=f"the statistic that orders the table, e.g. ttft_p99 or ttlt_p50 "
                        f"(default: {grid.RANK_BY})")
    p.add_argument("--vs", metavar="POLICY[:KNOB=V...]",
                   help="compare each column with this one (a policy column's label) instead "
                        "of each load's leader")
    p.add_argument("--table", choices=("ranked", "full"), default="ranked",
                   help="ranked: P50/P99 per load, best first; full: mean/P50/P90/P95/P99 of "
                        "every metric (default: ranked)")
    p.add_argument("--plot-load", type=common.positive,
                   help="load of the CDF and frontier plots (default: the highest load not "
                        "past saturation, 1, or else the lowest)")
    p.add_argument("--no-plots", action="store_true", help="write the CSVs only")


def plot_load(loads: list[float], chosen: float | None) -> float:
    if chosen is not None:
        if chosen not in loads:
            raise common.CLIError(f"--plot-load {chosen:g} is not one of --loads "
                                  f"{','.join(f'{x:g}' for x in loads)}")
        return chosen
    below = [x for x in loads if x <= 1.0]
    return max(below) if below else min(loads)


def title(args) -> str:
    parts = [args.workload, f"{args.model} on {args.gpu}" + (f" x{args.tp}" if args.tp > 1 else "")]
    if args.kv_blocks:
        parts.append(f"{args.kv_blocks} KV blocks")
    if args.profile:
        parts.append(f"profile {args.profile}")
    return " | ".join(parts)


def _notes(rows: list[dict], summary: list[dict]) -> None:
    seeds = {r["seed"] for r in rows}
    if len(seeds) > 1 and all(not r[f"{k}_min"] < r[f"{k}_max"] for r in summary
                              for k in grid.STAT_KEYS):
        print("tailgym: note: all seeds gave identical results (nothing random in this workload "
              "or these policies); e.g. azure-conv:n=2000,arrival=gamma,cv=3 redraws arrivals "
              "per seed", file=sys.stderr)
    for r in summary:
        if r["requests_rejected"]:
            print(f"tailgym: note: {grid.policy_label(r)} at load {r['load']:g}: "
                  f"{r['requests_rejected']} requests rejected over {r['seeds']} seeds (not in "
                  f"the latency figures)", file=sys.stderr)


def run(args) -> int:
    if args.backend == "ray":
        grid.import_ray()  # a missing Ray is said now, not after the compile
    elif args.ray_address:
        raise common.CLIError("--ray-address needs --backend ray")
    metrics = tuple(dict.fromkeys(args.metric or grid.TABLE_METRICS))
    out = Path(args.out)
    common.check_columns(args.workload, args.columns)
    common.check_profile(args)
    common.check_loads(args.loads, "--loads")
    at = plot_load(args.loads, args.plot_load)
    sweeps = [grid.parse_sweep(s) for s in args.sweep]
    columns = grid.expand_sweeps(grid.parse_policies(args.policies), sweeps)
    if args.vs:  # the column's label as the table writes it (knobs in registry order)
        args.vs = grid.parse_policy(args.vs).label
        if args.vs not in {c.label for c in columns}:
            raise common.CLIError(f"--vs {args.vs!r} is not one of the policy columns "
                                  f"({', '.join(c.label for c in columns)})")
    cells = grid.make_grid(args.workload, columns, args.loads, args.seeds, model=args.model,
                           gpu=args.gpu, engine=common.engine_knobs(args),
                           warmup_s=args.warmup_s, on_unfit=args.on_unfit,
                           columns=args.columns or "")
    common.ensure_compiled(args.quiet)
    rows = grid.run_grid(cells, out, args.processes, progress=not args.quiet,
                         backend=args.backend, ray_address=args.ray_address)
    summary = grid.aggregate(rows)
    ranked = grid.ranking(rows, summary, args.rank_by, args.vs)
    written = [grid.write_csv(rows, out / "results.csv"),
               grid.write_csv(summary, out / "summary.csv"),
               grid.write_csv(grid.ranking_rows(ranked, args.rank_by), out / "ranking.csv")]
    if not args.no_plots:
        from ..plots import draw_plots
        written += draw_plots(out, cells, summary, sweeps, metrics, at, title(args))
    seeds = sorted({r["seed"] for r in rows})
    _notes(rows, summary)
    print(f"{title(args)} | seeds {','.join(map(str, seeds))}")
    over = f"{len(seeds)} seeds" if len(seeds) > 1 else "1 seed"
    if args.table == "full":
        print(f"mean over {over}\n")
        print(grid.format_table(summary, metrics))
    else:
        print(f"ranked by {args.rank_by} (mean over {over}), best first\n")
        print(grid.format_ranking(ranked, metrics, args.rank_by))
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0
