"""Simulator fidelity against the real engine: profile, calibrate, replay, compare.

    python experiments/hil_validate.py --model llama3-8b --device cuda --limit 600 --load 0.9
    python experiments/hil_validate.py --model tiny --device cpu --limit 120     # CPU smoke run

1. Profile the PyTorch engine (random weights, real shapes) over batch shapes on the device
   and write our profile CSV.
2. Fit the step-time profile from it (``tailgym.calibrate``), with its leave-one-out error.
3. Replay the first ``--limit`` requests of the trace on the real engine, the scheduler
   deciding every step, at ``--load`` of the fitted engine's saturation throughput.
4. Simulate the same requests with the fitted profile (same policy, engine knobs, arrivals).
5. Write the sim-vs-real error of P50/P99 TTFT and TTLT and the per-step time error of the
   profile on the replay's real steps to ``--out`` (``hil_validate.md`` and ``.json``).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import tailgym
from tailgym.calibrate.fit import calibrate
from tailgym.calibrate.readers import read_tailgym_csv
from tailgym.hil.driver import run_hil
from tailgym.hil.executor import HILExecutor
from tailgym.hil.kv_cache import PagedKVCache
from tailgym.hil.model import model_spec
from tailgym.hil.profiler import default_shapes, profile, write_profile_csv
from tailgym.workload import load_workload


def fidelity(real: dict, sim: dict) -> dict:
    """Relative error (sim / real - 1) of the latency percentiles."""
    return {f"{m}_{q}": sim[m][q] / real[m][q] - 1
            for m in ("ttft", "ttlt") for q in ("p50", "p90", "p99")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpu", default="h100-80gb", help="GPU name recorded in the profile")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--workload", default="azure-conv")
    parser.add_argument("--limit", type=int, default=120)
    parser.add_argument("--load", type=float, default=0.9)
    parser.add_argument("--policy", default="fcfs")
    parser.add_argument("--kv-blocks", type=int, default=2000)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--profile-max-tokens", type=int, default=1024)
    parser.add_argument("--profile-max-batch", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "hil"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spec = model_spec(args.model)
    dtype = getattr(torch, args.dtype)
    cache = PagedKVCache(spec, args.kv_blocks, device=args.device, dtype=dtype)
    executor = HILExecutor(spec, cache, device=args.device, dtype=dtype)
    shapes = default_shapes(args.profile_max_tokens, args.profile_max_batch,
                            max_context=min(4 * args.profile_max_tokens, 16 * (args.kv_blocks // 8)))
    rows = profile(executor, cache, shapes=shapes)
    csv_path = write_profile_csv(out / "profile.csv", rows, model=spec.name, gpu=args.gpu, tp=1)
    del executor, cache
    fitted = calibrate(read_tailgym_csv(csv_path, spec.name, args.gpu, 1), model=spec.name,
                       gpu=args.gpu, tp=1, name=f"hil-{spec.name}-{args.device}",
                       source=f"tailgym hil profile on {args.device}")
    profile_json = fitted.to_json(out / "profile.json")
    t_profile = time.perf_counter() - t0

    wl = load_workload(args.workload).head(args.limit)
    knobs = dict(kv_blocks=args.kv_blocks, max_num_batched_tokens=args.max_num_batched_tokens,
                 max_num_seqs=args.max_num_seqs, profile=str(profile_json), gpu=args.gpu,
                 load=args.load, on_unfit="reject")
    real, log = run_hil(wl, args.policy, model=args.model, device=args.device, dtype=dtype,
                        **knobs)
    sim = tailgym.simulate(wl, args.policy, model=spec, **knobs)
    predicted = fitted.predict(log[:, :-1])
    step_err = predicted / log[:, -1] - 1
    r, s = real.summary(), sim.summary()
    result = {
        "model": spec.name, "device": args.device, "workload": f"{args.workload} first {args.limit}",
        "load": args.load, "policy": args.policy, "requests": r["requests_in"],
        "completed_real": r["requests_completed"], "completed_sim": s["requests_completed"],
        "profile_steps": len(rows), "fit": fitted.fit,
        "step_time_mape": float(np.mean(np.abs(step_err))),
        "step_time_p90_abs_err": float(np.percentile(np.abs(step_err), 90)),
        "real_steps": int(len(log)), "sim_steps": s["steps"],
        "real": {m: r[m] for m in ("ttft", "ttlt")}, "sim": {m: s[m] for m in ("ttft", "ttlt")},
        "error": fidelity(r, s), "profile_seconds": t_profile,
        "total_seconds": time.perf_counter() - t0,
    }
    (out / "hil_validate.json").write_text(json.dumps(result, indent=2))
    lines = [f"# HIL fidelity: {spec.name} on {args.device}, {result['workload']}, "
             f"{args.policy}, load {args.load}\n",
             f"Profile: {len(rows)} measured steps, LOO MAPE prefill "
             f"{100 * fitted.fit['loo_mape_prompt']:.1f}% / decode "
             f"{100 * fitted.fit['loo_mape_token']:.1f}%. Replay: {len(log)} real steps; the "
             f"profile's step-time MAPE on them is {100 * result['step_time_mape']:.1f}%.\n",
             "| metric | real (s) | simulated (s) | error |", "|---|---|---|---|"]
    for m in ("ttft", "ttlt"):
        for q in ("p50", "p90", "p99"):
            lines.append(f"| {m.upper()} {q.upper()} | {r[m][q]:.4g} | {s[m][q]:.4g} | "
                         f"{100 * result['error'][f'{m}_{q}']:+.1f}% |")
    (out / "hil_validate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"total {result['total_seconds']:.0f} s (profiling {t_profile:.0f} s); wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
