"""The ``tailgym`` command: ``run`` a simulation, ``calibrate`` a profile, ``data``, ``bench``."""
import argparse
import json
import sys

from . import __version__


def _key_values(items: list[str], what: str, numbers: bool = True) -> dict:
    """``key=value`` options; values are numbers, or (``numbers=False``) numbers where they
    parse and words otherwise (e.g. ``gamma_mode=ada``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"tailgym: {what} must look like key=value, got {item!r}")
        try:
            out[key] = float(value)
        except ValueError:
            if numbers:
                raise SystemExit(f"tailgym: {what} {key!r} needs a number, got {value!r}") from None
            out[key] = value
    return out


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that builds an engine."""
    p.add_argument("--model", default="llama3-8b", help="model shape (default: llama3-8b)")
    p.add_argument("--gpu", default="h100-80gb", help="GPU (default: h100-80gb)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree")
    p.add_argument("--profile", help="step-time profile JSON or shipped profile name "
                                     "(default: roofline model of model+GPU)")
    p.add_argument("--kv-blocks", type=int, help="override the KV cache size in blocks")
    p.add_argument("--max-num-batched-tokens", type=int, help="token budget per step")
    p.add_argument("--max-num-seqs", type=int, help="cap on running requests")
    p.add_argument("--max-model-len", type=int, help="reject longer requests (default: model context)")
    p.add_argument("--preemption-mode", choices=("recompute", "swap"), default="recompute")
    p.add_argument("--swap-space-gib", type=float, default=4.0, help="host swap space (swap mode)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--long-prefill-token-threshold", type=int, default=0)
    p.add_argument("--no-chunked-prefill", dest="enable_chunked_prefill", action="store_false")
    p.add_argument("--watermark", type=float, default=0.0,
                   help="share of KV blocks kept free when admitting")


def engine_knobs(args) -> dict:
    return {"tp": args.tp, "profile": args.profile, "kv_blocks": args.kv_blocks,
            "max_num_batched_tokens": args.max_num_batched_tokens,
            "max_num_seqs": args.max_num_seqs, "max_model_len": args.max_model_len,
            "preemption_mode": args.preemption_mode, "swap_space_gib": args.swap_space_gib,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "long_prefill_token_threshold": args.long_prefill_token_threshold,
            "enable_chunked_prefill": args.enable_chunked_prefill, "watermark": args.watermark}


def cmd_run(args) -> int:
    from .sim import simulate
    from .workload import parse_columns
    report = simulate(
        args.workload, args.policy, model=args.model, gpu=args.gpu, seed=args.seed,
        rate=args.rate, rate_scale=args.rate_scale, load=args.load,
        policy_args=_key_values(args.policy_arg, "--policy-arg", numbers=False),
        warmup_s=args.warmup, slo=_key_values(args.slo, "--slo"), on_unfit=args.on_unfit,
        progress=not args.quiet, columns=parse_columns(args.columns) if args.columns else None,
        **engine_knobs(args))
    summary = report.summary()
    cfg = summary["config"]
    print(f"workload {cfg['workload']} ({summary['requests_in']} requests"
          + (f", {cfg['rate_rps']:.3f} req/s" if "rate_rps" in cfg else "")
          + (f", load {cfg['load']:g} of {cfg['saturation_rps']:.3f} req/s saturation" if "load" in cfg else "")
          + f"), policy {args.policy}, {args.model} on {args.gpu} x{args.tp}, "
          f"{cfg['num_gpu_blocks']} KV blocks, budget {cfg['max_num_batched_tokens']} tokens, "
          f"max {cfg['max_num_seqs']} seqs, step model {cfg['step_model']}")
    print(report.table())
    if report.rejected:
        first = "; ".join(f"row {r['row']}: {r['reason']}" for r in report.rejected[:3])
        print(f"rejected {len(report.rejected)} requests (e.g. {first})", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_data(args) -> int:
    from .data import DATASETS, data_path
    if args.action == "list":
        for name, ds in DATASETS.items():
            print(f"{name:<28} {ds.url}\n{'':<28} {ds.attribution}")
        return 0
    for name in args.names:
        print(data_path(name))
    return 0


def cmd_policies(args) -> int:
    from .policies import POLICIES
    for name, spec in POLICIES.items():
        if args.names and name not in args.names:
            continue
        print(f"{name}  (reads: {', '.join(spec.signals)}; output lengths: {spec.knowledge})")
        for knob, default in spec.params.items():
            shown = "auto" if isinstance(default, float) and default != default else default
            print(f"    {knob} = {shown}: {spec.knob_docs.get(knob, '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tailgym", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tailgym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="replay a workload through one engine and report tails")
    run.add_argument("--workload", default="default",
                     help="data set name (azure-conv, azure-code), synthetic preset or spec "
                          "(default, chat, reasoning, bursty-chat, synthetic:...), or a CSV path")
    run.add_argument("--columns", help="CSV column mapping, e.g. "
                                       "arrival=TIMESTAMP,prompt=ContextTokens,output=GeneratedTokens")
    run.add_argument("--policy", default="fcfs")
    run.add_argument("--policy-arg", action="append", default=[], metavar="KEY=VALUE")
    rate = run.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=float, help="mean arrival rate, requests/s")
    rate.add_argument("--rate-scale", type=float, help="multiply the workload's arrival rate")
    rate.add_argument("--load", type=float, help="rate as a fraction of saturation throughput")
    add_engine_arguments(run)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--warmup", type=float, default=0.0, help="exclude requests arriving in "
                                                               "the first WARMUP seconds")
    run.add_argument("--slo", action="append", default=[], metavar="METRIC=SECONDS",
                     help="SLO threshold, e.g. ttft=1 or ttlt=30 (repeatable)")
    run.add_argument("--on-unfit", choices=("error", "reject"), default="error",
                     help="requests that can never fit the KV cache: error, or list as rejected")
    run.add_argument("--json", help="write the report as JSON")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    data = sub.add_parser("data", help="list named data sets or fetch them")
    data.add_argument("action", choices=("list", "fetch"))
    data.add_argument("names", nargs="*")
    data.set_defaults(func=cmd_data)

    pol = sub.add_parser("policies", help="list policies, the signals they read and their knobs")
    pol.add_argument("names", nargs="*")
    pol.set_defaults(func=cmd_policies)

    sub.add_parser("calibrate", help="fit a step-time profile from GPU timings "
                                     "(see tailgym calibrate --help)", add_help=False)
    sub.add_parser("compare", help="run a policy x load x seed grid, tables and plots "
                                   "(see tailgym compare --help)", add_help=False)
    sub.add_parser("hil", help="hardware in the loop: replay on a real PyTorch engine, or "
                               "profile it (see tailgym hil --help; needs the [hil] extra)",
                   add_help=False)
    sub.add_parser("bench", help="speed benchmark (same as python -m tailgym.bench)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "calibrate":
        from .calibrate import cli
        return cli(argv[1:])
    if argv and argv[0] == "hil":
        from .hil.cli import cli
        return cli(argv[1:])
    if argv and argv[0] == "compare":
        from .compare import cli
        return cli(argv[1:])
    if argv and argv[0] == "bench":
        from .bench import main as bench_main
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    from .data import DataError
    from .workload import WorkloadError
    try:
        return args.func(args)
    except (WorkloadError, DataError, ValueError) as err:
        print(f"tailgym: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
