"""What the RL baselines share: the training and evaluation settings, the training-env and
checkpoint plumbing, and one function that plays an episode and returns its ``Report``.

Setting (chosen so that policies differ: on the evaluation windows SRPT with true lengths
has 20% lower mean TTLT than FCFS and 1.6x its P99 TTLT; with the default KV cache all
policies tie): Llama-3-8B on an H100-80GB (roofline step times), a KV cache cut to
``KV_BLOCKS`` blocks (memory pressure, preemptions) and arrivals at ``LOAD`` x the engine's measured saturation throughput. Workloads are
300-request windows of the ``azure-conv`` trace with Gamma (CV 2) arrivals redrawn per seed:

* training: requests 0..299 (inside the first 70% of the trace, the length predictor's
  training split); each training episode draws a fresh arrival seed;
* evaluation: ``EVAL_STARTS`` x ``EVAL_SEEDS``, windows inside the last 30% of the trace
  (never seen by the agents nor by ``baselines.length_predictor``).

``SPLITS`` extends this to azure-code and servegen-r1 (the evaluation of
``baselines.evaluate`` and the scoring agent's training windows).
"""
import argparse
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import tailgym  # registers the tailgym/... ids in this process

CHECKPOINTS = Path(__file__).parent / "checkpoints"
ENGINE = {"model": "llama3-8b", "gpu": "h100-80gb"}
LOAD, KV_BLOCKS, WINDOW = 1.0, 1200, 300
TRAIN_WORKLOAD = f"azure-conv:start=0,n={WINDOW},arrival=gamma,cv=2"
EVAL_STARTS = (13600, 14700, 15800, 16900, 18000)
EVAL_SEEDS = (0, 1)
# per env: interval and a reward scale that keeps returns around -10..-100
ENV_KWARGS = {"tailgym/Serve-v0": {"reward_scale": 0.01},
              "tailgym/ServeGamma-v0": {"interval_s": 2.0, "reward_scale": 0.01},
              "tailgym/ServePriority-v0": {"interval_s": 1.0, "reward_scale": 0.02}}


@dataclass(frozen=True)
class Split:
    """A workload's windows: ``spec`` with ``{start}`` and ``{n}``; training windows start in
    ``train`` = [lo, hi) (so a ``WINDOW``-request one ends before every held-out window
    begins), held-out ones at ``eval_starts``; the KV cache (blocks) it is served with."""

    spec: str
    train: tuple[float, float]
    eval_starts: tuple
    kv_blocks: int = KV_BLOCKS

    def window(self, start, n: int = WINDOW) -> str:
        return self.spec.format(start=start, n=n)

    def train_start(self, rng):
        """A training window start drawn from ``rng``."""
        lo, hi = self.train
        return int(rng.integers(lo, hi)) if isinstance(lo, int) else round(rng.uniform(lo, hi), 3)


# Azure traces: the first 70% of the requests train (as the length predictor's split), windows
# of the last 30% are held out. servegen-r1 (reasoning, outputs up to ~20k tokens, hence the
# larger KV cache): training windows in hour 1-2 of the data's day, held-out ones in 12-17.
SPLITS = {
    "azure-conv": Split("azure-conv:start={start},n={n},arrival=gamma,cv=2",
                        (0, 13_556 - WINDOW), EVAL_STARTS),
    "azure-code": Split("azure-code:start={start},n={n},arrival=gamma,cv=2",
                        (0, 6_173 - WINDOW), (6300, 6800, 7300, 7800, 8300)),
    "servegen-r1": Split("servegen-r1:start_h={start},hours=0.05,n={n},arrival=gamma,cv=2",
                         (1.0, 1.95), (12.0, 13.0, 14.0, 15.0, 16.0), kv_blocks=5000),
}


def env_kwargs(env_id: str, workload: str, overrides: dict | None = None) -> dict:
    """Full constructor kwargs of ``env_id`` on ``workload`` (engine, load, KV, env knobs)."""
    return {"workload": workload, **ENGINE, "load": LOAD, "kv_blocks": KV_BLOCKS,
            **ENV_KWARGS[env_id], **(overrides or {})}


@functools.cache
def env_rate(workload: str, kv_blocks: int) -> float:
    """The arrival rate (req/s) of every episode of ``workload`` in the environments: ``LOAD``
    x the saturation rate of its seed-0 draw (``tailgym.envs.base.ServingEnv``)."""
    info = tailgym.sim.prepare(workload, seed=0, load=LOAD, kv_blocks=kv_blocks, **ENGINE).info
    return info["load"] * info["saturation_rps"]


def simulate(workload, policy: str, seed: int, kv_blocks: int = KV_BLOCKS,
             **kwargs) -> tailgym.Report:
    """``tailgym.simulate`` on the evaluation engine, at the environments' arrival rate
    (``env_rate``), so a heuristic and an agent serve the same arrivals even where a
    workload's lengths, and so its saturation rate, depend on the seed (servegen-r1)."""
    return tailgym.simulate(workload, policy, seed=seed, rate=env_rate(workload, kv_blocks),
                            kv_blocks=kv_blocks, **ENGINE, **kwargs)


def train_parser(doc: str, name: str, timesteps: int,
                 vec_env: str = "subproc") -> argparse.ArgumentParser:
    """The command-line options every training script takes (defaults: ``timesteps``,
    ``vec_env``; ``dummy`` wins where an env step costs less than the IPC of a subprocess)."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-kwargs", type=json.loads, default={},
                   help="JSON object overriding the training env kwargs (see common.py)")
    p.add_argument("--timesteps", type=int, default=timesteps)
    p.add_argument("--n-envs", type=int, default=2)
    p.add_argument("--vec-env", choices=("subproc", "dummy"), default=vec_env)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=CHECKPOINTS / f"{name}.zip",
                   help="checkpoint; monitor CSVs go to <out stem>_monitor/, metadata to .json")
    return p


def monitor_dir(checkpoint: Path) -> Path:
    """Where the training run of ``checkpoint`` wrote its Monitor CSVs (one per env)."""
    return checkpoint.with_name(checkpoint.stem + "_monitor")


def make_train_env(env_id: str, args: argparse.Namespace):
    """``args.n_envs`` monitored training envs on ``TRAIN_WORKLOAD``, seeded from
    ``args.seed`` (env ``i`` first resets with ``seed + i``, later episodes draw their
    own workload seeds from the env's generator)."""
    kwargs = env_kwargs(env_id, TRAIN_WORKLOAD, args.env_kwargs)
    cls = SubprocVecEnv if args.vec_env == "subproc" else DummyVecEnv
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return make_vec_env(f"tailgym:{env_id}", n_envs=args.n_envs, seed=args.seed,
                        env_kwargs=kwargs, vec_env_cls=cls,
                        monitor_dir=str(monitor_dir(args.out)))


def learn_and_save(model, env_id: str, args: argparse.Namespace, hyperparams: dict) -> Path:
    """Train ``model`` for ``args.timesteps``, save the checkpoint and a JSON of the run
    (env kwargs, hyperparameters, timesteps, wall time) next to it."""
    start = time.perf_counter()
    model.learn(total_timesteps=args.timesteps)
    wall = time.perf_counter() - start
    model.get_env().close()
    model.save(args.out)
    meta = {"env_id": env_id, "env_kwargs": env_kwargs(env_id, TRAIN_WORKLOAD, args.env_kwargs),
            "algo": type(model).__name__, "timesteps": model.num_timesteps,
            "n_envs": args.n_envs, "seed": args.seed, "wall_s": round(wall, 1),
            "hyperparams": hyperparams}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{meta['algo']} on {env_id}: {model.num_timesteps} steps in {wall:.0f} s "
          f"-> {args.out}")
    return args.out


def run_episode(env_id: str, kwargs: dict, seed: int, act) -> tailgym.Report:
    """Play one episode of ``env_id`` from ``reset(seed=seed)``, choosing each action with
    ``act(env, obs)`` (``env`` unwrapped); the episode's ``Report``."""
    env = gym.make(env_id, **kwargs)
    obs, _ = env.reset(seed=seed)
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(act(env.unwrapped, obs))
        done = terminated or truncated
    report = env.unwrapped.report()
    env.close()
    return report


def train(algo, env_id: str, name: str, doc: str, hyperparams: dict, timesteps: int,
          argv=None, vec_env: str = "subproc") -> Path:
    """A training script's whole run: parse its command line (``train_parser``), train
    ``algo``'s ``MultiInputPolicy`` on ``env_id`` with ``hyperparams`` on one torch thread,
    and save the checkpoint (``learn_and_save``); returns its path."""
    args = train_parser(doc, name, timesteps, vec_env).parse_args(argv)
    torch.set_num_threads(1)
    env = make_train_env(env_id, args)
    model = algo("MultiInputPolicy", env, seed=args.seed, device="cpu", verbose=0,
                 **hyperparams)
    return learn_and_save(model, env_id, args, hyperparams)
