"""Evaluate the learned router (``baselines.ppo_routing``) against every router on held-out
windows of its fleet.

    python -m baselines.evaluate_routing [--json OUT] [--quick] [--checkpoint PATH]
        [--out baselines/results/routing.md]

Every method serves the same episodes: azure-conv's held-out windows
(``SPLITS["azure-conv"].eval_starts``, ``ppo_routing.WINDOW`` requests, Gamma CV-2 arrivals
redrawn per seed of ``SEEDS``) on ``ppo_routing.FLEET`` at ``ppo_routing.LOAD``; the routers
through ``tailgym.simulate``, the learned router (greedy) and a uniformly random one through
``ServeRoute-v0``. The *best router* is the one with the lowest mean TTLT on training windows
(``TUNE_STARTS`` x ``SEEDS``), chosen before the held-out episodes are run. ``--json`` writes
``baselines.evaluate``'s document (per method the episode means and the 95% intervals of the
paired relative differences, negative = better) against the best router and
``least-outstanding``, plus ``best_router``. Without ``--quick`` it also writes ``--out``
(tables) and ``routing.png`` beside it.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from baselines import evaluate, ppo_routing, ppo_scoring
from baselines.common import CHECKPOINTS, run_episode
from baselines.ppo_routing import simulate
from tailgym.fleet import ROUTERS

SEEDS = tuple(range(6))
TUNE_STARTS = (2000, 6000, 10000)
LEARNED = "PPO scoring router (ServeRoute-v0, greedy)"
RANDOM = "random choice (ServeRoute-v0)"
QUICK_N = 40
HERE = Path(__file__).parent


def env_method(make_act):
    kwargs = {**ppo_routing.FLEET, "load": ppo_routing.LOAD}
    return lambda workload, seed: run_episode(ppo_routing.ENV_ID, {"workload": workload,
                                                                   **kwargs},
                                              seed, make_act(seed))


def best_router(quick: bool = False) -> tuple[str, dict]:
    """The router with the lowest mean TTLT over the training windows, and every router's."""
    split, n = ppo_routing.SPLIT, QUICK_N if quick else ppo_routing.WINDOW
    scores = {r: np.mean([simulate(split.window(start, n), r, seed).summary()["ttlt"]["mean"]
                          for start in TUNE_STARTS[:1 if quick else None]
                          for seed in SEEDS[:1 if quick else None]]) for r in ROUTERS}
    return min(scores, key=scores.get), scores


def methods(checkpoint: Path) -> dict:
    """Method name -> ``f(workload, seed) -> Report``."""
    model = ppo_scoring.load(checkpoint)
    table = {r: (lambda workload, seed, r=r: simulate(workload, r, seed)) for r in ROUTERS}
    table[RANDOM] = env_method(evaluate.random_masked_act)
    table[LEARNED] = env_method(lambda seed: ppo_scoring.act(model, ppo_routing.REPLICA_VIEW))
    return table


def evaluate_all(table: dict, quick: bool = False) -> dict:
    """``{"azure-conv": {method: [summary per held-out episode]}}`` (same episodes, same
    order for every method)."""
    split = ppo_routing.SPLIT
    out = {}
    for start in split.eval_starts[:1 if quick else None]:
        for seed in SEEDS[:1 if quick else None]:
            workload = split.window(start, QUICK_N if quick else ppo_routing.WINDOW)
            for method, run in table.items():
                out.setdefault(method, []).append(run(workload, seed).summary())
    return {"azure-conv": out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=CHECKPOINTS / "ppo_routing.pt")
    p.add_argument("--json", type=Path, help="write the summary document here")
    p.add_argument("--quick", action="store_true",
                   help=f"one window of {QUICK_N} requests and one seed (a smoke test)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "routing.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    best, scores = best_router(args.quick)
    results = evaluate_all(methods(args.checkpoint), args.quick)
    refs = {"vs_best_router": best, "vs_least_outstanding": "least-outstanding"}
    doc = evaluate.summary_json(results, refs, {LEARNED}) | {"best_router": best}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    pooled = evaluate.interval_table(doc, refs)
    print(f"best router on the training windows: {best}\n{pooled}")
    if args.quick:
        return 0
    n = len(results["azure-conv"][best])
    evaluate.plot_comparison(doc, args.out.with_suffix(".png"),
                             f"ServeRoute-v0 fleet, {n} held-out azure-conv episodes",
                             "vs_best_router", f"best router ({best})", {LEARNED})
    meta = json.loads(args.checkpoint.with_suffix(".json").read_text())
    fleet = ", ".join(f"{k}={v}" for k, v in ppo_routing.FLEET.items())
    tuning = ", ".join(f"{r}: {v:.2f}" for r, v in scores.items())
    args.out.write_text(
        f"# Learned router vs the routers (ServeRoute-v0)\n\n"
        f"Generated by `python -m baselines.evaluate_routing --json "
        f"baselines/results/routing.json` ({time.perf_counter() - start:.0f} s) from "
        f"`{args.checkpoint.name}` (trained by `python -m baselines.ppo_routing` in "
        f"{len(meta['stages'])} stage(s), the arguments of each in "
        f"`{args.checkpoint.with_suffix('.json').name}`: {len(meta['curve'])} iterations, "
        f"{meta['wall_s']:.0f} s, warm start accuracy {meta['bc_accuracy']:.3f}).\n\n"
        f"Fleet: {fleet}, load {ppo_routing.LOAD} x its measured saturation throughput; "
        f"held-out azure-conv windows of {ppo_routing.WINDOW} requests starting at "
        f"{list(ppo_routing.SPLIT.eval_starts)} x arrival seeds {list(SEEDS)} ({n} paired "
        f"episodes). Best router = lowest mean TTLT on the training windows starting at "
        f"{list(TUNE_STARTS)} (mean TTLT s: {tuning}).\n\n"
        f"Episode means (s) and 95% intervals (%) of the paired relative difference "
        f"(per-episode log ratios, Student t; negative = better; bold: excludes 0):\n\n"
        f"{pooled}\n\n![routing]({args.out.with_suffix('.png').name})\n")
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
