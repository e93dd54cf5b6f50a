"""``tailgym run``: replay one workload through one engine (or ``--replicas N`` of them behind
``--router``) and policy; a latency table."""
import json
import sys

from . import common

NAME = "run"
HELP = ("one simulation: replay a workload through one engine (or a fleet of them) and policy, "
        "print its tails")


def add_arguments(p) -> None:
    common.add_workload_arguments(p)
    common.add_policy_arguments(p)
    common.add_rate_arguments(p)
    common.add_engine_arguments(p)
    common.add_fleet_arguments(p)
    common.add_seed_argument(p)
    common.add_report_arguments(p)
    p.add_argument("--slo", action="append", default=[], metavar="METRIC=SECONDS",
                   help="SLO threshold, e.g. ttft=1 or ttlt=30 (repeatable)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")


def header(summary: dict, args) -> str:
    cfg = summary["config"]
    rate = f", {cfg['rate_rps']:.3f} req/s" if "rate_rps" in cfg else ""
    load = (f", load {cfg['load']:g} of {cfg['saturation_rps']:.3f} req/s saturation"
            if "load" in cfg else "")
    fleet, gpu = "", args.gpu
    if "fleet" in summary:
        f = summary["fleet"]
        fleet = f", {f['replicas']} replicas behind {f['router']}"
        gpu = ",".join(f"{g['gpu']}={g['replicas']}" for g in f["groups"])
    return (f"workload {cfg['workload']} ({summary['requests_in']} requests{rate}{load}{fleet}), "
            f"policy {args.policy}, {args.model} on {gpu} x{args.tp}, "
            f"{cfg['num_gpu_blocks']} KV blocks, budget {cfg['max_num_batched_tokens']} tokens, "
            f"max {cfg['max_num_seqs']} seqs, step model {cfg['step_model']}")


def run(args) -> int:
    from ..sim import simulate
    from ..workload import parse_columns
    common.check_columns(args.workload, args.columns)
    common.check_profile(args)
    if args.load is not None:
        common.check_loads([args.load])
    fleet = common.fleet_options(args)
    gpu = {} if isinstance(fleet.get("replicas"), dict) else {"gpu": args.gpu}  # groups: theirs
    common.ensure_compiled(args.quiet, fleet=bool(fleet))
    report = simulate(
        args.workload, args.policy, model=args.model, **gpu, seed=args.seed, rate=args.rate,
        rate_scale=args.rate_scale, load=args.load,
        policy_args=common.key_values(args.policy_arg, "--policy-arg", numbers=False),
        warmup_s=args.warmup_s, slo=common.key_values(args.slo, "--slo"), on_unfit=args.on_unfit,
        progress=not args.quiet, columns=parse_columns(args.columns) if args.columns else None,
        **fleet, **common.engine_knobs(args))
    if report.rejected:
        first = "; ".join(("request {index}" if r["row"] is None else "row {row}").format(**r)
                          + f": {r['reason']}" for r in report.rejected[:3])
        print(common.in_flag_words(
            f"tailgym: {len(report.rejected)} of {len(report.requests['arrival'])} requests "
            f"rejected, not in the figures below (e.g. {first})", args.parser),
            file=sys.stderr, flush=True)
    summary = report.summary()
    print(header(summary, args))
    print(report.table())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
        print(f"wrote {args.json}")
    return 0
