"""``tailgym hil run`` (replay a workload on the real PyTorch engine) and ``tailgym hil
profile`` (time batch shapes for ``tailgym calibrate``); both need torch (the ``hil`` extra)."""
import json

from . import common

NAME = "hil"
HELP = "hardware in the loop: replay on a real PyTorch engine, or profile it (needs torch)"
DEVICE_HELP = ("torch device, e.g. cpu or cuda (default: cpu; without a GPU, use the tiny "
               "model: --device cpu --model tiny)")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="hil_command", required=True, metavar="{run,profile}")
    run_p = sub.add_parser("run", help="replay the first requests of a workload on the real engine")
    common.add_workload_arguments(run_p, columns=False)
    common.add_policy_arguments(run_p)
    run_p.add_argument("--limit", type=common.positive_int, metavar="N",
                       help="replay only the first N requests (default: all)")
    common.add_rate_arguments(run_p)
    common.add_seed_argument(run_p)
    run_p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    common.add_engine_arguments(run_p, model="tiny", any_model=True)
    run_p.set_defaults(kv_blocks=512, handler=run_replay, parser=run_p)
    prof = sub.add_parser("profile", help="time batch shapes on the engine, write a profile CSV")
    prof.add_argument("--model", default="tiny",
                      help="tiny, a model shape (llama3-8b, ...) or one scaled down "
                           "(llama3-8b:layers=2) (default: tiny)")
    prof.add_argument("--gpu", default="h100-80gb", help="GPU name written into the CSV "
                                                         "(default: h100-80gb)")
    prof.add_argument("-o", "--output", required=True, metavar="CSV")
    prof.add_argument("--repeats", type=common.positive_int, default=3,
                      help="timed runs of each shape (default: 3)")
    prof.add_argument("--kv-blocks", type=common.positive_int, default=512,
                      help="KV cache blocks on the device (default: 512)")
    prof.set_defaults(handler=run_profile, parser=prof)
    for q in (run_p, prof):
        q.add_argument("--device", default="cpu", help=DEVICE_HELP)
        q.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                       help="weights and KV cache dtype (default: float32)")


def torch_device(args):
    """The torch dtype of ``--dtype``, after checking that torch and ``--device`` are here."""
    try:
        import torch
    except ImportError:
        raise common.CLIError("tailgym hil needs PyTorch: pip install 'tailgym[hil]' "
                              "(or an existing torch build)") from None
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise common.CLIError(f"--device {args.device!r} is not a torch device; use cpu or "
                              f"cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise common.CLIError(f"--device {args.device}: this torch ({torch.__version__}) sees no "
                              f"CUDA GPU; run on the CPU with --device cpu --model tiny")
    return getattr(torch, args.dtype)


def run(args) -> int:
    return args.handler(args)


def run_replay(args) -> int:
    dtype = torch_device(args)
    from ..hil.driver import run_hil
    report, _ = run_hil(args.workload, args.policy, model=args.model, device=args.device,
                        dtype=dtype, limit=args.limit, seed=args.seed, gpu=args.gpu,
                        rate=args.rate, rate_scale=args.rate_scale, load=args.load,
                        policy_args=common.key_values(args.policy_arg, "--policy-arg",
                                                      numbers=False),
                        **common.engine_knobs(args))
    print(f"hil: {args.workload} (first {args.limit or 'all'} requests), policy {args.policy}, "
          f"model {args.model} on {args.device}, {args.kv_blocks} KV blocks")
    print(report.table())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.summary(), f, indent=2)
        print(f"wrote {args.json}")
    return 0


def run_profile(args) -> int:
    dtype = torch_device(args)
    from ..hil.executor import HILExecutor
    from ..hil.kv_cache import PagedKVCache
    from ..hil.model import model_spec
    from ..hil.profiler import profile, write_profile_csv
    spec = model_spec(args.model)
    cache = PagedKVCache(spec, args.kv_blocks, device=args.device, dtype=dtype)
    executor = HILExecutor(spec, cache, device=args.device, dtype=dtype)
    rows = profile(executor, cache, repeats=args.repeats)
    write_profile_csv(args.output, rows, model=spec.name, gpu=args.gpu, tp=1)
    print(f"measured {len(rows)} steps of {spec.name} on {args.device}; wrote {args.output} "
          f"(fit it with: tailgym calibrate {args.output} --format tailgym --model {spec.name} "
          f"--gpu {args.gpu} --tp 1 -o profile.json)")
    return 0
