"""``tailgym hil run`` (replay a trace slice on the real engine) and ``tailgym hil profile``."""
import argparse
import json
import sys


def _dtype(name: str):
    import torch
    return getattr(torch, name)


def cmd_run(args) -> int:
    from ..cli import _key_values, engine_knobs
    from .driver import run_hil
    knobs = engine_knobs(args)
    knobs["kv_blocks"] = args.kv_blocks
    report, _ = run_hil(args.workload, args.policy, model=args.model, device=args.device,
                        dtype=_dtype(args.dtype), limit=args.limit, seed=args.seed, gpu=args.gpu,
                        rate=args.rate,
                        rate_scale=args.rate_scale, load=args.load,
                        policy_args=_key_values(args.policy_arg, "--policy-arg", numbers=False),
                        **knobs)
    print(f"hil: {args.workload} (first {args.limit or 'all'} requests), policy {args.policy}, "
          f"model {args.model} on {args.device}, {args.kv_blocks} KV blocks")
    print(report.table())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.summary(), f, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_profile(args) -> int:
    from .executor import HILExecutor
    from .kv_cache import PagedKVCache
    from .model import model_spec
    from .profiler import profile, write_profile_csv
    spec = model_spec(args.model)
    dtype = _dtype(args.dtype)
    cache = PagedKVCache(spec, args.kv_blocks, device=args.device, dtype=dtype)
    executor = HILExecutor(spec, cache, device=args.device, dtype=dtype)
    rows = profile(executor, cache, repeats=args.repeats)
    write_profile_csv(args.output, rows, model=spec.name, gpu=args.gpu, tp=1)
    print(f"measured {len(rows)} steps of {spec.name} on {args.device}; wrote {args.output} "
          f"(fit it with: tailgym calibrate {args.output} --format tailgym --model {spec.name} "
          f"--gpu {args.gpu} --tp 1 -o profile.json)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ..cli import add_engine_arguments
    parser = argparse.ArgumentParser(prog="tailgym hil", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="replay a trace slice on the real engine")
    run.add_argument("--workload", default="default")
    run.add_argument("--policy", default="fcfs")
    run.add_argument("--policy-arg", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--limit", type=int, help="replay only the first LIMIT requests")
    rate = run.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=float)
    rate.add_argument("--rate-scale", type=float)
    rate.add_argument("--load", type=float)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--json", help="write the report as JSON")
    add_engine_arguments(run)
    run.set_defaults(func=cmd_run)
    prof = sub.add_parser("profile", help="sweep batch shapes and write a profile CSV")
    prof.add_argument("--model", default="tiny")
    prof.add_argument("--gpu", default="h100-80gb", help="GPU name recorded in the CSV")
    prof.add_argument("-o", "--output", required=True)
    prof.add_argument("--repeats", type=int, default=3)
    prof.set_defaults(func=cmd_profile)
    for p in (run, prof):
        p.add_argument("--device", default="cpu", help="cpu or cuda")
        p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    run.set_defaults(model="tiny", kv_blocks=512)
    prof.add_argument("--kv-blocks", type=int, default=512)
    return parser


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.func(args)
