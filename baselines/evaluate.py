"""Evaluate the trained RL agents against the heuristics on held-out trace windows.

    python -m baselines.evaluate [--checkpoints baselines/checkpoints] [--out baselines/RESULTS.md]

Every method serves the same ``len(EVAL_STARTS) x len(EVAL_SEEDS)`` episodes (windows of the
azure-conv test split, Gamma arrivals redrawn per seed; ``baselines/common.py``) on the same
engine: the heuristics through ``tailgym.simulate``, the agents through their environments
(MaskablePPO's actions sampled, see ``agent_act``). ``uniboost (fixed gamma)`` uses the gamma
of ``GAMMAS`` with the lowest mean TTLT on the training window (seeds ``TUNE_SEEDS``), the
objective the agents' reward measures.
Writes ``--out`` (tables, budgets; a ``## Discussion`` section already in it is kept),
``results/comparison.png`` and ``results/learning_curves.png``.
"""
import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # drawn with Agg, no pyplot state
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO

import tailgym
from baselines import length_predictor
from baselines.common import (
    CHECKPOINTS,
    ENGINE,
    ENV_KWARGS,
    EVAL_SEEDS,
    EVAL_STARTS,
    KV_BLOCKS,
    LOAD,
    TRAIN_WORKLOAD,
    WINDOW,
    env_kwargs,
    eval_workload,
    monitor_dir,
    run_episode,
)

WORK_CONSERVING = {"work_conserving": True}
# checkpoint name -> (algorithm, env id, env kwargs of its training run beyond common.py's)
AGENTS = {"maskable_ppo_serve": (MaskablePPO, "tailgym/Serve-v0", {}),
          "maskable_ppo_serve_wc": (MaskablePPO, "tailgym/Serve-v0", WORK_CONSERVING),
          "ppo_serve_gamma": (PPO, "tailgym/ServeGamma-v0", {}),
          "ppo_serve_priority": (PPO, "tailgym/ServePriority-v0", {})}
TRAINERS = {"maskable_ppo_serve_wc": "maskable_ppo_serve --env-kwargs "
                                     "'{\"work_conserving\": true}' --out "
                                     "baselines/checkpoints/maskable_ppo_serve_wc.zip"}
HEURISTICS = ("fcfs", "sjf-oracle", "srpt-oracle", "uniboost")
GAMMAS = tuple(10.0 ** np.arange(-3, 4))
TUNE_SEEDS = tuple(range(5))
COLUMNS = (("ttft", "p50"), ("ttft", "p99"), ("ttlt", "p50"), ("ttlt", "p99"), ("ttlt", "mean"))
HERE = Path(__file__).parent


def agent_label(name: str) -> str:
    """Row name of the trained agent ``name`` (a key of ``AGENTS``)."""
    cls, env_id, overrides = AGENTS[name]
    how = "sampled actions" if cls is MaskablePPO else "mean action"
    mode = ", work-conserving" if overrides.get("work_conserving") else ""
    return f"{cls.__name__} ({env_id.split('/')[1]}{mode}, {how})"


def simulate(workload, policy: str, seed: int, **kwargs) -> tailgym.Report:
    """``tailgym.simulate`` on the evaluation engine."""
    return tailgym.simulate(workload, policy, seed=seed, load=LOAD, kv_blocks=KV_BLOCKS,
                            **ENGINE, **kwargs)


def tune_gamma() -> tuple[float, dict]:
    """The fixed UniBoost gamma with the lowest mean TTLT on the training window, and the
    mean TTLT of every gamma tried."""
    scores = {g: np.mean([simulate(TRAIN_WORKLOAD, "uniboost", s, policy_args={
        "gamma_mode": "fixed", "gamma": g}).summary()["ttlt"]["mean"] for s in TUNE_SEEDS])
        for g in GAMMAS}
    return min(scores, key=scores.get), scores


def agent_act(model, seed: int):
    """A trained SB3 model's actions: for MaskablePPO drawn from its masked policy with a
    generator seeded with ``seed`` (its argmax is degenerate, see RESULTS.md), otherwise the
    mean of its Gaussian policy."""
    if not isinstance(model, MaskablePPO):
        return lambda env, obs: model.predict(obs, deterministic=True)[0]
    rng = np.random.default_rng(seed)

    def act(env, obs):
        with torch.no_grad():
            dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0],
                                                 action_masks=env.action_masks())
        p = dist.distribution.probs[0].double().numpy()
        return int(rng.choice(p.size, p=p / p.sum()))
    return act


def random_masked_act(seed: int):
    """Uniformly random legal actions, drawn from a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return lambda env, obs: int(rng.choice(np.flatnonzero(env.action_masks())))


def methods(checkpoints: Path = CHECKPOINTS, gamma: float = 1.0) -> dict:
    """Method name -> ``f(workload, seed) -> Report``, every one on the evaluation engine."""
    predictor = length_predictor.load_predictor()
    agents = {name: cls.load(checkpoints / f"{name}.zip", device="cpu")
              for name, (cls, _, _) in AGENTS.items()}

    def srpt_learned(workload, seed):
        wl = tailgym.load_workload(workload, seed=seed)
        return simulate(wl, "srpt-predicted", seed,
                        hint=length_predictor.predict(predictor, wl))

    def env_method(env_id, make_act, overrides=None):
        return lambda workload, seed: run_episode(
            env_id, env_kwargs(env_id, workload, overrides), seed, make_act(seed))

    table = {h: (lambda workload, seed, h=h: simulate(workload, h, seed)) for h in HEURISTICS}
    table |= {
        f"uniboost (fixed gamma {gamma:g}/s)": lambda workload, seed: simulate(
            workload, "uniboost", seed, policy_args={"gamma_mode": "fixed", "gamma": gamma}),
        "srpt-learned (MLP length predictor)": srpt_learned,
        "random masked agent (Serve-v0)": env_method("tailgym/Serve-v0", random_masked_act),
        "random masked agent (Serve-v0, work-conserving)": env_method(
            "tailgym/Serve-v0", random_masked_act, WORK_CONSERVING),
        "constant scores (ServePriority-v0)": env_method(
            "tailgym/ServePriority-v0",
            lambda seed: lambda env, obs: np.zeros(env.action_space.shape, np.float32))}
    for name, (_, env_id, overrides) in AGENTS.items():
        table[agent_label(name)] = env_method(
            env_id, lambda seed, model=agents[name]: agent_act(model, seed), overrides)
    return table


def evaluate(table: dict) -> dict[str, list[dict]]:
    """Summaries of every method on every evaluation episode."""
    return {name: [run(eval_workload(start), seed).summary()
                   for start in EVAL_STARTS for seed in EVAL_SEEDS]
            for name, run in table.items()}


def results_table(results: dict) -> str:
    """Markdown: per method the mean over episodes of each statistic (s)."""
    ref = np.mean([s["ttlt"]["mean"] for s in results["fcfs"]])
    lines = [("| method | episodes | P50 TTFT | P99 TTFT | P50 TTLT | P99 TTLT | mean TTLT "
              "| mean TTLT vs fcfs |"), "|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        cells = [np.mean([s[m][q] for s in runs]) for m, q in COLUMNS]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(f"{v:.2f}" for v in cells)
                     + f" | {100 * (cells[-1] / ref - 1):+.1f}% |")
    return "\n".join(lines)


def plot_comparison(results: dict, path: Path) -> None:
    names = list(results)
    learned = {agent_label(a) for a in AGENTS}
    colors = ["C1" if n in learned else "0.6" if n.startswith("random") else "C0" for n in names]
    fig = Figure(figsize=(15, 0.45 * len(names) + 1.5))
    axes = fig.subplots(1, 3, sharey=True)
    for ax, (metric, q) in zip(axes, (("ttlt", "mean"), ("ttlt", "p99"), ("ttft", "p99"))):
        per_ep = np.array([[s[metric][q] for s in results[n]] for n in names])
        y = np.arange(len(names))
        ax.barh(y, per_ep.mean(1), color=colors)
        ax.errorbar(per_ep.mean(1), y, xerr=[per_ep.mean(1) - per_ep.min(1),
                                             per_ep.max(1) - per_ep.mean(1)],
                    fmt="none", ecolor="k", capsize=2, lw=0.8)
        ax.set_title(f"{q.upper() if q != 'mean' else 'mean'} {metric.upper()} (s)")
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Held-out azure-conv windows ({len(EVAL_STARTS)} windows x "
                 f"{len(EVAL_SEEDS)} arrival seeds); bars: mean, whiskers: min..max; "
                 f"orange: trained agents", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def learning_curve(monitor: Path) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative env steps, episode return) of all Monitor CSVs in ``monitor``, in the
    order the episodes ended."""
    rows = np.concatenate([np.atleast_1d(np.genfromtxt(f, delimiter=",", names=True,
                                                       skip_header=1))
                           for f in sorted(monitor.glob("*.monitor.csv"))])
    rows = rows[np.argsort(rows["t"], kind="stable")]
    return np.cumsum(rows["l"]), rows["r"]


def plot_learning_curves(checkpoints: Path, refs: dict, path: Path) -> None:
    """Mean TTLT implied by each training episode's return (the return is minus
    ``reward_scale`` x the total TTLT), with heuristics on the training window for scale."""
    fig = Figure(figsize=(10, 7.2))
    axes = fig.subplots(2, (len(AGENTS) + 1) // 2).ravel()
    for ax, (name, (cls, env_id, _)) in zip(axes, AGENTS.items()):
        steps, ret = learning_curve(monitor_dir(checkpoints / f"{name}.zip"))
        ttlt = -ret / (ENV_KWARGS[env_id]["reward_scale"] * WINDOW)
        ax.plot(steps, ttlt, ".", ms=3, alpha=0.4, color="C0", label="episode")
        k = max(1, len(ttlt) // 10)
        ax.plot(steps[k - 1:], np.convolve(ttlt, np.ones(k) / k, "valid"), color="C0",
                label=f"running mean ({k} episodes)")
        for (ref, value), color in zip(refs.items(), ("C3", "C2", "C4")):
            ax.axhline(value, color=color, ls="--", lw=1, label=ref)
        ax.set_title(agent_label(name), fontsize=8)
        ax.set_xlabel("env steps")
        ax.set_ylabel("training-episode mean TTLT (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def budget_table(checkpoints: Path) -> str:
    lines = ["| agent | env | timesteps | envs | wall (s) | steps/s | hyperparameters |",
             "|---|---|---|---|---|---|---|"]
    for name in AGENTS:
        m = json.loads((checkpoints / f"{name}.json").read_text())
        lines.append(f"| {m['algo']} (`{name}.zip`) | {m['env_id']} | {m['timesteps']} | "
                     f"{m['n_envs']} | {m['wall_s']:.0f} | {m['timesteps'] / m['wall_s']:.0f} | "
                     f"`{json.dumps(m['hyperparams'])}` |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=Path, default=CHECKPOINTS)
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--figures", type=Path, default=HERE / "results")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    gamma, gamma_scores = tune_gamma()
    results = evaluate(methods(args.checkpoints, gamma))
    refs = {p: np.mean([simulate(TRAIN_WORKLOAD, p, s).summary()["ttlt"]["mean"]
                        for s in TUNE_SEEDS]) for p in ("fcfs", "uniboost", "srpt-oracle")}
    args.figures.mkdir(parents=True, exist_ok=True)
    plot_comparison(results, args.figures / "comparison.png")
    plot_learning_curves(args.checkpoints, {f"{p} (train window)": v for p, v in refs.items()},
                         args.figures / "learning_curves.png")
    table = results_table(results)
    print(table)
    old = args.out.read_text() if args.out.exists() else ""
    discussion = old[old.index("\n## Discussion"):] if "\n## Discussion" in old else ""
    gammas = ", ".join(f"{g:g}: {v:.2f}" for g, v in gamma_scores.items())
    args.out.write_text(
        f"# RL baselines vs heuristics\n\n"
        f"Generated by `python -m baselines.evaluate` ({time.perf_counter() - start:.0f} s) "
        f"from the checkpoints in `{os.path.relpath(args.checkpoints, HERE.parent)}`; the "
        f"Discussion section is written by hand.\n\n"
        f"## Setting\n\n"
        f"Engine: {ENGINE['model']} on {ENGINE['gpu']} (roofline), vLLM defaults, KV cache "
        f"cut to {KV_BLOCKS} blocks of 16 tokens, load {LOAD} x measured saturation.\n"
        f"Training: `{TRAIN_WORKLOAD}` (trace requests 0..{WINDOW - 1}; arrivals redrawn "
        f"each episode). Evaluation: windows `{eval_workload(EVAL_STARTS[0])}` for start in "
        f"{list(EVAL_STARTS)} (all in the last 30% of the trace, which neither the agents nor "
        f"the length predictor saw) x arrival seeds {list(EVAL_SEEDS)} = "
        f"{len(EVAL_STARTS) * len(EVAL_SEEDS)} episodes per method, identical for all "
        f"methods. Env kwargs: {json.dumps(ENV_KWARGS)}.\n\n"
        f"## Results (s; mean over the held-out episodes)\n\n{table}\n\n"
        f"`uniboost` is the reference policy with its online gamma; the fixed gamma was "
        f"picked on the training window by mean TTLT over seeds {list(TUNE_SEEDS)} "
        f"(gamma: mean TTLT s = {gammas}). The PPO agents play the mean of their Gaussian "
        f"policy; MaskablePPO samples from its masked policy (seeded per episode). "
        f"![comparison](results/comparison.png)\n\n"
        f"## Training\n\n{budget_table(args.checkpoints)}\n\n"
        f"![learning curves](results/learning_curves.png)\n\n"
        f"Commands (from the repository root, `TAILGYM_DATA_DIR` set):\n\n```bash\n"
        + "".join(f"python -m baselines.{TRAINERS.get(name, name)}\n" for name in AGENTS)
        + f"python -m baselines.evaluate\n```\n{discussion}")
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
