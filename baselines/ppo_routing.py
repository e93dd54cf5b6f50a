"""PPO for a per-replica scoring router on ``tailgym/ServeRoute-v0``, with the input-driven
baseline: ``baselines.ppo_scoring``'s method applied to routing.

    python -m baselines.ppo_routing [--iterations 200] [--reward exp-tail --theta 0.5]
        [--out baselines/checkpoints/ppo_routing.pt]

* **Fleet** (``FLEET``): four replicas of Llama-3-8B, two on H100s and two on A100s (each
  with its GPU's KV cache and roofline step times), FCFS on each, arrivals at ``LOAD`` x the
  fleet's measured saturation throughput; azure-conv windows with Gamma (CV 2) arrivals
  (``baselines.common.SPLITS``: training windows never overlap the held-out ones).
* **Policy**: ``ppo_scoring.Scorer``: one small MLP scores every replica from its features
  (load, queue, KV use, tokens, cached prefix, latest TTFT/TTLT), those minus their mean over
  the replicas, and the request's features; a softmax over the replicas picks one. It is
  permutation-equivariant, so it serves fleets of any size; nothing tells it a replica's GPU,
  which it must infer from the signals.
* **Warm start**: behaviour cloning of ``--bc-router``'s choices; then PPO iterations as in
  ``ppo_scoring`` (``--inputs`` arrival sequences x ``--rollouts`` episodes, advantages from
  the other episodes' cost-to-go at the same time, episode-length curriculum, annealed
  entropy). The learning curve is relative to ``--bc-router`` on the same inputs.
"""
import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np

import tailgym
from baselines import ppo_scoring
from baselines.common import CHECKPOINTS, SPLITS
from tailgym.envs.serve_route import REPLICA_FEATURES, REQUEST_FEATURES

ENV_ID = "tailgym/ServeRoute-v0"
FLEET = {"replicas": {"h100-80gb": 2, "a100-80gb": 2}, "model": "llama3-8b", "policy": "fcfs"}
LOAD = 1.0
SPLIT = SPLITS["azure-conv"]
WINDOW = 600  # requests per episode once the curriculum is done: 150 per replica


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reward", default="exp-tail", help="ServeRoute-v0 reward option")
    p.add_argument("--theta", type=float, default=0.5,
                   help="exp-tail rate, in units of 1 / (the bc router's mean TTLT on the input)")
    p.add_argument("--bc-router", default="weighted", help="router cloned at the start")
    return ppo_scoring.ppo_options(p, 200, WINDOW, CHECKPOINTS / "ppo_routing.pt").parse_args(argv)


def make_env(workload: str, router: str, args, theta: float = 0.1) -> gym.Env:
    return gym.make(ENV_ID, workload=workload, **FLEET, load=LOAD, router=router,
                    reward=args.reward, theta=theta, slo_s=args.slo_s).unwrapped


def replicas(env, obs):
    """(replica features (N, F), request features, every replica a candidate)."""
    n = env.n_replicas
    return (obs["replicas"].reshape(n, len(REPLICA_FEATURES)), obs["request"],
            np.ones(n, dtype=bool))


REPLICA_VIEW = ppo_scoring.View(replicas, lambda env, k: k)


def simulate(workload: str, router: str, seed: int) -> tailgym.Report:
    """``tailgym.simulate`` of the fleet with ``router``."""
    return tailgym.simulate(workload, router=router, seed=seed, load=LOAD, **FLEET)


def main(argv=None) -> Path:
    args = parse_args(argv)

    def warm(model, args, rng, opt) -> float:
        picks = []
        for _ in range(args.bc_episodes):
            env = make_env(SPLIT.window(SPLIT.train_start(rng), args.n_end), args.bc_router, args)
            picks += ppo_scoring.play(env, int(rng.integers(2**31)),
                                      lambda s, g, legal: (env.heuristic_action(), 0.0),
                                      REPLICA_VIEW)[0]
            env.close()
        return ppo_scoring.clone(model, picks, args, rng, opt)

    def inputs(it: int, n: int, rng) -> list:
        out = []
        for _ in range(args.inputs):
            workload, seed = SPLIT.window(SPLIT.train_start(rng), n), int(rng.integers(2**31))
            ref = simulate(workload, args.bc_router, seed).summary()
            out.append((make_env(workload, args.bc_router, args,
                                 args.theta / ref["ttlt"]["mean"]), seed, ref))
        return out
    return ppo_scoring.train(
        args, lambda: ppo_scoring.Scorer(args.hidden, len(REPLICA_FEATURES),
                                         len(REQUEST_FEATURES)),
        warm, inputs, args.bc_router, ENV_ID, {}, REPLICA_VIEW)


if __name__ == "__main__":
    main()
