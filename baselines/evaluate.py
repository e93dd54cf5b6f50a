"""Evaluate the trained agents against the heuristics on held-out windows of several workloads.

    python -m baselines.evaluate [--json OUT] [--quick] [--checkpoints baselines/checkpoints]
        [--out baselines/RESULTS.md]

Every method serves the same episodes: for each workload of ``baselines.common.SPLITS``
(azure-conv, azure-code, servegen-r1) its held-out windows (never overlapping a training
window) x ``EVAL_SEEDS`` (Gamma arrivals redrawn per seed), on the same engine: the heuristics
through ``tailgym.simulate``, the agents through their environments (MaskablePPO's actions
sampled, see ``agent_act``; the scoring agent greedy). ``uniboost (fixed gamma)`` uses the
gamma of ``GAMMAS`` with the lowest mean TTLT on the azure-conv training window (seeds
``TUNE_SEEDS``). ``--json`` writes, per method, the mean over the episodes of each episode's
TTLT mean/P50/P99 and TTFT P50/P99 (s), and the 95% intervals of the paired relative
differences against ``fcfs``, ``uniboost`` and (``vs_uniboost_fixed``) UniBoost at the tuned
fixed gamma (``tailgym.stats.paired_ratio``: per-episode log ratios, so the estimate is the
geometric mean of (method / reference) - 1; negative = better).
``--quick`` (one window of 40 requests, one seed per workload) is for smoke tests. Without
``--quick`` it also writes ``--out`` (tables, budgets; a ``## Discussion`` section already in it
is kept), ``results/comparison.png`` and ``results/learning_curves.png``.
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
from baselines import length_predictor, ppo_scoring
from baselines.common import (
    CHECKPOINTS,
    ENGINE,
    ENV_KWARGS,
    EVAL_SEEDS,
    LOAD,
    SPLITS,
    TRAIN_WORKLOAD,
    WINDOW,
    env_kwargs,
    monitor_dir,
    run_episode,
    simulate,
)
from tailgym.stats import paired_ratio, real

WORK_CONSERVING = {"work_conserving": True}
# checkpoint name -> (algorithm, env id, env kwargs of its training run beyond common.py's)
AGENTS = {"maskable_ppo_serve": (MaskablePPO, "tailgym/Serve-v0", {}),
          "maskable_ppo_serve_wc": (MaskablePPO, "tailgym/Serve-v0", WORK_CONSERVING),
          "ppo_serve_gamma": (PPO, "tailgym/ServeGamma-v0", {}),
          "ppo_serve_priority": (PPO, "tailgym/ServePriority-v0", {})}
TRAINERS = {"maskable_ppo_serve_wc": "maskable_ppo_serve --env-kwargs "
                                     "'{\"work_conserving\": true}' --out "
                                     "baselines/checkpoints/maskable_ppo_serve_wc.zip"}
SCORING = "PPO scoring policy (Serve-v0, greedy)"
CLONE = "scoring policy, warm start only (Serve-v0, greedy)"  # the same run before its PPO
CLONE_COMMAND = "ppo_scoring --iterations 0 --out baselines/checkpoints/ppo_scoring_clone.pt"
HEURISTICS = ("fcfs", "sjf-oracle", "srpt-oracle", "uniboost")
REFERENCES = {"vs_fcfs": "fcfs", "vs_uniboost": "uniboost"}
FIXED = "vs_uniboost_fixed"  # a third reference: UniBoost at the tuned fixed gamma (fixed_label)
# JSON key -> (metric, statistic) of an episode's summary
STATS = {"ttlt_mean": ("ttlt", "mean"), "ttlt_p50": ("ttlt", "p50"), "ttlt_p99": ("ttlt", "p99"),
         "ttft_p50": ("ttft", "p50"), "ttft_p99": ("ttft", "p99")}
VERSUS = ("ttlt_mean", "ttlt_p99", "ttft_p99")
QUICK_N = 40
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
    """Method name -> ``f(workload, seed, kv_blocks) -> Report``, all on the evaluation
    engine (``kv_blocks``: the workload's KV cache)."""
    predictor = length_predictor.load_predictor()
    agents = {name: cls.load(checkpoints / f"{name}.zip", device="cpu")
              for name, (cls, _, _) in AGENTS.items()}
    scorers = {SCORING: ppo_scoring.load(checkpoints / "ppo_scoring.pt"),
               CLONE: ppo_scoring.load(checkpoints / "ppo_scoring_clone.pt")}

    def srpt_learned(workload, seed, kv_blocks):
        wl = tailgym.load_workload(workload, seed=seed)
        trace = None if wl.name.split(":")[0] in length_predictor.TRACES else "azure-conv"
        return simulate(workload, "srpt-predicted", seed, kv_blocks,
                        hint=length_predictor.predict(predictor, wl, trace))

    def env_method(env_id, make_act, overrides=None):
        return lambda workload, seed, kv_blocks: run_episode(
            env_id, env_kwargs(env_id, workload, {**(overrides or {}), "kv_blocks": kv_blocks}),
            seed, make_act(seed))

    table = {h: (lambda workload, seed, kv_blocks, h=h: simulate(workload, h, seed, kv_blocks))
             for h in HEURISTICS}
    table |= {
        fixed_label(gamma): lambda workload, seed, kv_blocks: simulate(
            workload, "uniboost", seed, kv_blocks,
            policy_args={"gamma_mode": "fixed", "gamma": gamma}),
        "srpt-learned (MLP length predictor)": srpt_learned,
        "random masked agent (Serve-v0)": env_method("tailgym/Serve-v0", random_masked_act),
        "random masked agent (Serve-v0, work-conserving)": env_method(
            "tailgym/Serve-v0", random_masked_act, WORK_CONSERVING),
        "constant scores (ServePriority-v0)": env_method(
            "tailgym/ServePriority-v0",
            lambda seed: lambda env, obs: np.zeros(env.action_space.shape, np.float32))}
    for name, scorer in scorers.items():
        table[name] = env_method("tailgym/Serve-v0", lambda seed, m=scorer: ppo_scoring.act(m),
                                 scorer.env_kwargs)
    for name, (_, env_id, overrides) in AGENTS.items():
        table[agent_label(name)] = env_method(
            env_id, lambda seed, model=agents[name]: agent_act(model, seed), overrides)
    return table


def fixed_label(gamma: float) -> str:
    """Row name of UniBoost with its gamma fixed at ``gamma`` (the scoring agent's teacher)."""
    return f"uniboost (fixed gamma {gamma:g}/s)"


def learned_methods() -> set[str]:
    """Names of the methods with trained parts."""
    return {agent_label(a) for a in AGENTS} | {SCORING, CLONE,
                                                "srpt-learned (MLP length predictor)"}


def episodes(quick: bool = False) -> list[tuple[str, str, int, int]]:
    """The held-out episodes: (workload name, window spec, seed, KV blocks); ``quick``: the
    first window of each workload, ``QUICK_N`` requests, seed ``EVAL_SEEDS[0]``."""
    return [(name, split.window(start, QUICK_N if quick else WINDOW), seed, split.kv_blocks)
            for name, split in SPLITS.items()
            for start in (split.eval_starts[:1] if quick else split.eval_starts)
            for seed in (EVAL_SEEDS[:1] if quick else EVAL_SEEDS)]


def evaluate(table: dict, quick: bool = False) -> dict[str, dict[str, list[dict]]]:
    """Workload name -> method -> the summaries of its held-out episodes (same order for
    every method)."""
    out = {}
    for name, workload, seed, kv_blocks in episodes(quick):
        for method, run in table.items():
            out.setdefault(name, {}).setdefault(method, []).append(
                run(workload, seed, kv_blocks).summary())
    return out


def per_episode(results: dict, method: str, key: str) -> np.ndarray:
    """``STATS[key]`` of ``method`` on every held-out episode, workloads in turn."""
    metric, q = STATS[key]
    return np.array([s[metric][q] for runs in results.values() for s in runs[method]])


def summary_json(results: dict, references: dict = REFERENCES, learned=None) -> dict:
    """The ``--json`` document: per method the episode means of ``STATS`` and the paired
    relative-difference intervals against each of ``references`` (label -> method)."""
    learned = learned_methods() if learned is None else learned
    out = {}
    for method in next(iter(results.values())):
        row = {"learned": method in learned}
        row |= {key: float(per_episode(results, method, key).mean()) for key in STATS}
        for label, ref in references.items():
            row[label] = {}
            for key in VERSUS:
                iv = paired_ratio(per_episode(results, method, key), per_episode(results, ref, key))
                row[label][key] = [iv.lo, iv.hi]
        out[method] = row
    return {"methods": out}


def results_table(results: dict) -> str:
    """Markdown: per method the mean over the workload's episodes of each statistic (s)."""
    ref = np.mean([s["ttlt"]["mean"] for s in results["fcfs"]])
    lines = [("| method | episodes | P50 TTFT | P99 TTFT | P50 TTLT | P99 TTLT | mean TTLT "
              "| mean TTLT vs fcfs |"), "|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        cells = [np.mean([s[m][q] for s in runs]) for m, q in COLUMNS]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(f"{v:.2f}" for v in cells)
                     + f" | {100 * (cells[-1] / ref - 1):+.1f}% |")
    return "\n".join(lines)


def interval_table(doc: dict, references: dict = REFERENCES) -> str:
    """Markdown of the ``--json`` document: the pooled statistics and the intervals (%)."""
    def cell(iv):
        text = f"[{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]"
        return f"**{text}**" if real(*iv) else text
    head = [f"{key} vs {ref}" for ref in references.values() for key in
            ("mean TTLT", "P99 TTLT", "P99 TTFT")]
    lines = ["| method | learned | mean TTLT | P99 TTLT | P99 TTFT | " + " | ".join(head) + " |",
             "|---" * (5 + len(head)) + "|"]
    for name, row in doc["methods"].items():
        ivs = [row[label][key] for label in references for key in VERSUS]
        lines.append(f"| {name} | {'yes' if row['learned'] else ''} | {row['ttlt_mean']:.2f} | "
                     f"{row['ttlt_p99']:.2f} | {row['ttft_p99']:.2f} | "
                     + " | ".join(cell(iv) for iv in ivs) + " |")
    return "\n".join(lines)


def plot_comparison(doc: dict, path: Path, title: str, versus: str = "vs_fcfs",
                    ref: str = "FCFS", learned=None) -> None:
    """Per method the paired relative difference against the reference ``ref`` (its label
    ``versus`` in the document; geometric mean over the held-out episodes, bar) and its 95%
    interval (whiskers), for three statistics."""
    names = list(doc["methods"])
    learned = learned_methods() if learned is None else learned
    colors = ["C1" if n in learned else "0.6" if n.startswith("random") else "C0" for n in names]
    fig = Figure(figsize=(15, 0.45 * len(names) + 1.5))
    axes = fig.subplots(1, 3, sharey=True)
    for ax, key in zip(axes, VERSUS):
        iv = 100 * np.array([doc["methods"][n][versus][key] for n in names])
        mid = iv.mean(1)  # the interval is symmetric on the log scale; its middle is close
        y = np.arange(len(names))
        ax.barh(y, mid, color=colors)
        ax.errorbar(mid, y, xerr=[mid - iv[:, 0], iv[:, 1] - mid], fmt="none", ecolor="k",
                    capsize=2, lw=0.8)
        ax.axvline(0, color="k", lw=0.8)
        metric, q = STATS[key]
        ax.set_title(f"{'mean' if q == 'mean' else q.upper()} {metric.upper()} vs {ref} (%)")
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title + "; bars: middle of the 95% interval of the paired relative "
                 "difference (negative = better); orange: learned", fontsize=9)
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
    """Mean TTLT implied by each SB3 training episode's return (the return is minus
    ``reward_scale`` x the total TTLT), with heuristics on the training window for scale; and
    the scoring agent's training episodes against FCFS on the same inputs."""
    fig = Figure(figsize=(15, 7.2))
    axes = fig.subplots(2, 3).ravel()
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
    ax = axes[len(AGENTS)]
    curve = json.loads((checkpoints / "ppo_scoring.json").read_text())["curve"]
    it = np.array([c["iteration"] for c in curve])
    for key, color in (("ttlt_mean_vs_fcfs", "C0"), ("ttlt_p99_vs_fcfs", "C1")):
        y = 100 * np.array([c[key] for c in curve])
        k = max(1, len(y) // 10)
        ax.plot(it, y, ".", ms=3, alpha=0.4, color=color)
        ax.plot(it[k - 1:], np.convolve(y, np.ones(k) / k, "valid"), color=color,
                label=f"{key.split('_')[1]} TTLT (running mean of {k})")
    ax.axhline(0, color="C3", ls="--", lw=1, label="fcfs")
    ax.set_title(SCORING + " (training: sampled actions)", fontsize=8)
    ax.set_xlabel("PPO iteration (all stages of the run, see ppo_scoring.json)")
    ax.set_ylabel("training episodes vs FCFS, same inputs (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for unused in axes[len(AGENTS) + 1:]:
        unused.set_visible(False)
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
    m = json.loads((checkpoints / "ppo_scoring.json").read_text())
    decisions = sum(c["decisions"] for c in m["curve"])
    lines.append(f"| PPO scoring policy (`ppo_scoring.pt`) | {m['env_id']} | "
                 f"{decisions} choices, {len(m['curve'])} iterations | 1 | {m['wall_s']:.0f} | "
                 f"{decisions / m['wall_s']:.0f} | `{json.dumps(m['args'])}` |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=Path, default=CHECKPOINTS)
    p.add_argument("--json", type=Path, help="write the summary document (see above) here")
    p.add_argument("--quick", action="store_true",
                   help=f"one window of {QUICK_N} requests and one seed per workload, gamma 1, "
                        f"no RESULTS.md or figures (a smoke test)")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--figures", type=Path, default=HERE / "results")
    return p.parse_args(argv)


def setting_text(n_episodes: int) -> str:
    """The Setting section of RESULTS.md."""
    splits = "\n".join(
        f"- `{name}`: held-out `{split.window(split.eval_starts[0])}` for start in "
        f"{list(split.eval_starts)}; training windows start in [{split.train[0]}, "
        f"{split.train[1]}); {split.kv_blocks} KV blocks" for name, split in SPLITS.items())
    return (f"Engine: {ENGINE['model']} on {ENGINE['gpu']} (roofline), vLLM defaults, KV cache "
            f"cut to the blocks (16 tokens) below, load {LOAD} x measured saturation. "
            f"Held-out windows ({WINDOW} requests) x arrival seeds {list(EVAL_SEEDS)}, "
            f"{n_episodes} episodes per method, identical for all methods:\n\n{splits}\n\n"
            f"The Azure training windows lie in the first 70% of each trace (the length "
            f"predictor's training split), the held-out ones in the last 30%; servegen-r1 "
            f"trains in hour 1-2 of the data's day and is held out in hours 12-17. The SB3 "
            f"agents trained on `{TRAIN_WORKLOAD}` only (arrivals redrawn per episode), the "
            f"length predictor on the Azure training splits, the scoring agent on training "
            f"windows of all three workloads. Env kwargs: {json.dumps(ENV_KWARGS)}.")


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    gamma, gamma_scores = (1.0, {}) if args.quick else tune_gamma()
    results = evaluate(methods(args.checkpoints, gamma), args.quick)
    refs = {**REFERENCES, FIXED: fixed_label(gamma)}
    doc = summary_json(results, refs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    pooled = interval_table(doc, refs)
    print(pooled)
    if args.quick:
        return 0
    n_episodes = len(episodes())
    args.figures.mkdir(parents=True, exist_ok=True)
    plot_comparison(doc, args.figures / "comparison.png",
                    f"Held-out windows of {', '.join(SPLITS)} ({n_episodes} paired episodes)")
    refs = {p: np.mean([simulate(TRAIN_WORKLOAD, p, s).summary()["ttlt"]["mean"]
                        for s in TUNE_SEEDS]) for p in ("fcfs", "uniboost", "srpt-oracle")}
    plot_learning_curves(args.checkpoints, {f"{p} (train window)": v for p, v in refs.items()},
                         args.figures / "learning_curves.png")
    tables = "\n\n".join(f"### {name}\n\n{results_table(runs)}" for name, runs in results.items())
    old = args.out.read_text() if args.out.exists() else ""
    discussion = old[old.index("\n## Discussion"):] if "\n## Discussion" in old else ""
    gammas = ", ".join(f"{g:g}: {v:.2f}" for g, v in gamma_scores.items())
    args.out.write_text(
        f"# RL baselines vs heuristics\n\n"
        f"Generated by `python -m baselines.evaluate --json baselines/results/evaluate.json` "
        f"({time.perf_counter() - start:.0f} s) from the checkpoints in "
        f"`{os.path.relpath(args.checkpoints, HERE.parent)}`; every row was measured by that "
        f"run on the code of its commit. The Discussion section is written by hand.\n\n"
        f"## Setting\n\n{setting_text(n_episodes)}\n\n"
        f"## Results over all held-out episodes\n\n"
        f"Means over the {n_episodes} episodes of each episode's statistic (s; dominated by "
        f"servegen-r1's long requests), and the 95% intervals (%) of the paired relative "
        f"difference against FCFS, UniBoost and UniBoost at the fixed gamma (the scoring "
        f"agent's teacher; per-episode log ratios, Student t; negative = better; bold: "
        f"excludes 0).\n\n{pooled}\n\n"
        f"![comparison](results/comparison.png)\n\n"
        f"## Per workload (s; mean over the workload's held-out episodes)\n\n{tables}\n\n"
        f"`uniboost` is the reference policy with its online gamma; the fixed gamma was "
        f"picked on the azure-conv training window by mean TTLT over seeds {list(TUNE_SEEDS)} "
        f"(gamma: mean TTLT s = {gammas}). The PPO agents play the mean of their Gaussian "
        f"policy; MaskablePPO samples from its masked policy (seeded per episode); the scoring "
        f"policy plays its most likely candidate.\n\n"
        f"## Training\n\n{budget_table(args.checkpoints)}\n\n"
        f"![learning curves](results/learning_curves.png)\n\n"
        f"Commands (from the repository root, `TAILGYM_DATA_DIR` set):\n\n```bash\n"
        + "".join(f"python -m baselines.{TRAINERS.get(name, name)}\n" for name in AGENTS)
        + f"python -m baselines.ppo_scoring\npython -m baselines.{CLONE_COMMAND}\n"
        + "python -m baselines.evaluate --json baselines/results/evaluate.json\n```\n"
        + discussion)
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
