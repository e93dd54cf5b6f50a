"""PPO for a per-request scoring policy on ``tailgym/Serve-v0``, with the input-driven
baseline. CleanRL style: one file, read it top to bottom.

    python -m baselines.ppo_scoring [--iterations 110] [--reward exp-tail --theta 0.5]
        [--order uniboost --order-args '{"gamma_mode": "fixed", "gamma": 1.0}']
        [--inputs 3] [--rollouts 6] [--out baselines/checkpoints/ppo_scoring.pt]

* **Policy** (Decima-style): one small MLP scores every candidate slot from its own features
  (``SLOT_FEATURES`` and whether it is admissible now), those features minus their mean over
  the candidates, and the global features, with the same weights for every slot; a softmax
  over the candidates picks one. The policy is permutation-equivariant and sees any number of
  candidates. **Admissions are a priority order** (``slot_candidates``): every waiting or swapped
  request in view is a candidate, admissible or not; picking one that does not fit now holds
  the line for it (the no-op, as vLLM blocks at the head of its queue), or, with an empty
  batch, admits the first admissible one. **Evictions**: a softmax over the legal victims.
  Decisions with one candidate are taken without the network. The env's ``--order`` policy
  (default: UniBoost with gamma fixed at 1/s) picks which ``--slots`` candidates are in view
  and is the warm start's teacher.
* **Reward**: ``--reward`` of Serve-v0; ``exp-tail`` (default) with ``theta`` = ``--theta`` /
  (FCFS's mean TTLT on the same input), so the tail weight is alike across workloads whose
  TTLTs differ tenfold.
* **Input-driven baseline** (Mao et al., ICLR 2019): each iteration draws ``--inputs``
  arrival sequences (workload, training window, seed) and plays ``--rollouts`` episodes on
  each. A decision's advantage is the mean cost-to-go of the *other* episodes on the same
  input at the same simulated time (linear in time between their decisions) minus its own;
  advantages are divided by their standard deviation per input, so workloads of different
  scales weigh alike. No value network.
* **PPO**: clipped ratio, ``--epochs`` passes over minibatches of the iteration's decisions,
  undiscounted (one step is one decision, not a unit of time).
* **Curriculum** over episode length (requests per window, ``--n-start`` growing linearly to
  ``--n-end`` over the first half of the run) and an entropy bonus annealed linearly from
  ``--ent-start`` to 0.
* **Warm start**: ``--init`` continues a checkpoint; otherwise ``--bc-episodes`` episodes of
  the env's ``heuristic_action()`` (the ``--order`` policy's own choice) fit by cross-entropy
  first, so PPO starts near that heuristic instead of from a random order.

Training windows: ``baselines.common.SPLITS`` (never overlapping the held-out ones), every
workload of ``--workloads`` in turn. Writes the checkpoint (``state_dict`` and feature
normalisation) and a JSON of the run with its learning curve (per iteration, the training
episodes' mean and P99 TTLT relative to FCFS on the same inputs).
"""
import argparse
import json
import time
from pathlib import Path
from typing import Callable, NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from baselines.common import CHECKPOINTS, ENGINE, LOAD, SPLITS, simulate
from tailgym.engine.decisions import GLOBAL_FEATURES, SLOT_FEATURES

ENV_ID = "tailgym/Serve-v0"
NF, NG = len(SLOT_FEATURES) + 1, len(GLOBAL_FEATURES)  # + 1: admissible now


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=",".join(SPLITS), help="comma-separated SPLITS keys")
    p.add_argument("--reward", default="exp-tail", help="Serve-v0 reward option")
    p.add_argument("--theta", type=float, default=0.5,
                   help="exp-tail rate, in units of 1 / (FCFS's mean TTLT on the same input)")
    p.add_argument("--slots", type=int, default=16)
    p.add_argument("--order", default="uniboost",
                   help="the env's order policy: candidates in view, warm-start teacher")
    p.add_argument("--order-args", type=json.loads, default={"gamma_mode": "fixed", "gamma": 1.0},
                   help="JSON object of the order policy's knobs")
    p.add_argument("--work-conserving", action="store_true",
                   help="Serve-v0's work_conserving: never hold the line for a request")
    p = ppo_options(p, 300, 300, CHECKPOINTS / "ppo_scoring.pt")
    # a warm start near its teacher: a long clone, then small, low-entropy PPO steps
    p.set_defaults(bc_episodes=24, bc_epochs=40, iterations=110, inputs=3, rollouts=6,
                   lr=3e-4, ent_start=0.001, max_minutes=30.0)
    return p.parse_args(argv)


def ppo_options(p: argparse.ArgumentParser, n_start: int, n_end: int, out: Path):
    """The options of ``train`` (defaults: the curriculum ``n_start`` -> ``n_end``, the
    checkpoint ``out``) added to ``p``."""
    p.add_argument("--slo-s", type=float, default=10.0, help="slo-excess threshold (s)")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--inputs", type=int, default=4, help="arrival sequences per iteration")
    p.add_argument("--rollouts", type=int, default=4, help="episodes per arrival sequence")
    p.add_argument("--n-start", type=int, default=n_start, help="requests per window at first")
    p.add_argument("--n-end", type=int, default=n_end, help="... from half-way on")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--minibatch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=0.2)
    p.add_argument("--ent-start", type=float, default=0.01)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--init", type=Path, help="start from this checkpoint (no warm start)")
    p.add_argument("--bc-episodes", type=int, default=12)
    p.add_argument("--bc-epochs", type=int, default=30)
    p.add_argument("--bc-lr", type=float, default=1e-3, help="learning rate of the warm start")
    p.add_argument("--max-minutes", type=float, default=14.0, help="stop after this wall time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=out)
    return p


class Scorer(nn.Module):
    """Shared-weight candidate scorer; ``forward`` gives logits over the slots (``nf``
    features each, ``ng`` shared ones), masked to the candidates ``cand``."""

    def __init__(self, hidden: int = 32, nf: int = NF, ng: int = NG):
        super().__init__()
        self.nf, self.ng = nf, ng
        self.net = nn.Sequential(nn.Linear(2 * nf + ng, hidden), nn.Tanh(),
                                 nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.register_buffer("mu", torch.zeros(2 * nf + ng))
        self.register_buffer("sd", torch.ones(2 * nf + ng))

    def features(self, slots, glob, cand):
        """(B, K, 2 NF + NG): each slot's features, minus their mean over the candidates, and
        the shared ones."""
        w = cand.unsqueeze(-1).float()
        mean = (slots * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1.0)
        return torch.cat([slots, slots - mean, glob.unsqueeze(1).expand(-1, slots.shape[1], -1)],
                         -1)

    def forward(self, slots, glob, cand):
        x = (self.features(slots, glob, cand) - self.mu) / self.sd
        return self.net(x).squeeze(-1).masked_fill(~cand, -torch.inf)


class View(NamedTuple):
    """How an agent sees an env: ``observe(env, obs)`` gives (candidate features (K, F),
    shared features, candidates (K,) bool), or None when there is no choice (the first legal
    action is then taken); ``action(env, k)`` is the env action of candidate ``k``."""

    observe: Callable
    action: Callable


def slot_candidates(env, obs):
    """``Serve-v0``'s candidates: for an admission every request in view (admissible or not:
    a priority order), for an eviction the legal victims; their features with the admissible
    flag appended. None with fewer than two candidates."""
    if env.decision not in ("admit", "evict"):
        raise RuntimeError(f"no scorer for a {env.decision!r} decision: use recompute preemption")
    legal = np.asarray(env.action_masks()[:env.slots], dtype=bool)
    cand = obs["slot_valid"] > 0 if env.decision == "admit" else legal
    if cand.sum() < 2:
        return None
    feats = np.concatenate([obs["slots"].reshape(env.slots, NF - 1),
                            legal[:, None].astype(np.float32)], axis=1)
    return feats, obs["globals"], cand


def slot_action(env, k: int) -> int:
    """Admit or evict candidate ``k`` if that is legal; else hold the line for it (the no-op)
    where the no-op is legal, else take the first legal action."""
    mask = env.action_masks()
    if mask[k]:
        return k
    return env.slots if mask[env.slots] else int(np.flatnonzero(mask)[0])


SLOT_VIEW = View(slot_candidates, slot_action)


def serve_kwargs(args) -> dict:
    """The ``Serve-v0`` kwargs beyond workload and engine that the scorer is trained (and
    evaluated) with."""
    return {"slots": args.slots, "order": args.order, "policy_args": args.order_args,
            "work_conserving": args.work_conserving}


def make_env(workload: str, split, args, theta: float = 0.1) -> gym.Env:
    return gym.make(ENV_ID, workload=workload, **ENGINE, load=LOAD, kv_blocks=split.kv_blocks,
                    **serve_kwargs(args), reward=args.reward, theta=theta,
                    slo_s=args.slo_s).unwrapped


def teacher(env):
    """``choose`` for ``play``: the candidate of the env's ``heuristic_action()`` (a slot; its
    no-op holds the line for its best request, slot 0)."""
    def choose(s, g, cand):
        a = env.heuristic_action()
        return (a if a < env.slots else 0), 0.0
    return choose


def play(env, seed: int, choose, view: View = SLOT_VIEW):
    """One episode from ``reset(seed=seed)``; ``choose(features, shared, candidates)`` picks
    a candidate where ``view`` offers a choice. Returns the choices as (candidate features,
    shared features, candidates, candidate picked, log-prob, cost-to-go index), the decision
    times and cumulative costs (one per step, from 0) and the ``Report``."""
    obs, info = env.reset(seed=seed)
    t, cost = info["t"], 0.0
    times, costs, picks = [t], [0.0], []
    done = False
    while not done:
        choice = view.observe(env, obs)
        if choice is not None:
            k, logp = choose(*choice)
            picks.append((*choice, k, logp, len(times) - 1))
            a = view.action(env, k)
        else:
            a = int(np.flatnonzero(env.action_masks())[0])
        obs, r, terminated, truncated, info = env.step(a)
        t += info["elapsed_s"]
        cost -= r
        times.append(t)
        costs.append(cost)
        done = terminated or truncated
    return picks, np.array(times), np.array(costs), env.report()


def sampler(model, rng):
    """Sample from the policy with ``rng`` (numpy: deterministic given the seed)."""
    def choose(s, g, cand):
        with torch.no_grad():
            logits = model(torch.from_numpy(s)[None], torch.from_numpy(g)[None],
                           torch.from_numpy(cand)[None])[0].double().numpy()
        p = np.exp(logits - logits.max())
        p /= p.sum()
        a = int(rng.choice(p.size, p=p))
        return a, float(np.log(p[a]))
    return choose


def greedy(model):
    """The policy's most likely candidate (what evaluation plays)."""
    def choose(s, g, cand):
        with torch.no_grad():
            logits = model(torch.from_numpy(s)[None], torch.from_numpy(g)[None],
                           torch.from_numpy(cand)[None])[0]
        return int(torch.argmax(logits)), 0.0
    return choose


def input_driven_advantages(episodes):
    """Per episode on one input: for each choice, the mean over the other episodes of their
    cost-to-go at its time, minus its own cost-to-go (positive = better than the others)."""
    togo = [(times, costs[-1] - costs) for _, times, costs, _ in episodes]
    out = []
    for e, (picks, times, costs, _) in enumerate(episodes):
        at = times[[p[5] for p in picks]]
        own = costs[-1] - costs[[p[5] for p in picks]]
        others = np.mean([np.interp(at, tt, cg) for f, (tt, cg) in enumerate(togo) if f != e],
                         axis=0)
        out.append(others - own)
    adv = np.concatenate(out) if out else np.zeros(0)
    return adv / (adv.std() + 1e-8)


def stack(picks):
    """Tensors of a list of choices."""
    s, g, cand, a, logp, _ = zip(*picks)
    return (torch.from_numpy(np.stack(s)), torch.from_numpy(np.stack(g)),
            torch.from_numpy(np.stack(cand)), torch.tensor(a), torch.tensor(logp))


def entropy(logits):
    p = torch.softmax(logits, -1)
    return -(p * torch.where(p > 0, torch.log_softmax(logits, -1), 0.0)).sum(-1)


def warm_start(model, args, rng, opt) -> float:
    """Behaviour cloning (``clone``) of episodes of the env's ``--order`` heuristic."""
    picks = []
    names = args.workloads.split(",")
    for i in range(args.bc_episodes):
        split = SPLITS[names[i % len(names)]]
        env = make_env(split.window(split.train_start(rng), args.n_end), split, args)
        picks += play(env, int(rng.integers(2**31)), teacher(env))[0]
        env.close()
    return clone(model, picks, args, rng, opt)


def clone(model, picks, args, rng, opt) -> float:
    """Fit the feature normalisation on a heuristic's choices ``picks`` (as ``play``'s), then
    the scorer to them by cross-entropy; returns the final training accuracy."""
    if not picks:
        return float("nan")
    s, g, cand, a, _ = stack(picks)
    x = model.features(s, g, cand)[cand]
    model.mu.copy_(x.mean(0))
    model.sd.copy_(x.std(0).clamp(min=1e-3))
    for _ in range(args.bc_epochs):
        for idx in torch.randperm(len(a), generator=torch.Generator().manual_seed(
                int(rng.integers(2**31)))).split(args.minibatch):
            loss = nn.functional.cross_entropy(model(s[idx], g[idx], cand[idx]), a[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((model(s, g, cand).argmax(-1) == a).float().mean())


def ppo_update(model, opt, picks, adv, ent_coef, args, rng) -> dict:
    """``args.epochs`` passes of clipped PPO over the iteration's choices."""
    s, g, cand, a, old_logp = stack(picks)
    adv = torch.from_numpy(adv).float()
    stats = []
    for _ in range(args.epochs):
        for idx in torch.randperm(len(a), generator=torch.Generator().manual_seed(
                int(rng.integers(2**31)))).split(args.minibatch):
            logits = model(s[idx], g[idx], cand[idx])
            logp = torch.log_softmax(logits, -1).gather(1, a[idx, None])[:, 0]
            ratio = torch.exp(logp - old_logp[idx].float())
            pg = -torch.min(ratio * adv[idx],
                            ratio.clamp(1 - args.clip, 1 + args.clip) * adv[idx]).mean()
            ent = entropy(logits).mean()
            loss = pg - ent_coef * ent
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            stats.append((pg.item(), ent.item(),
                          ((ratio - 1).abs() > args.clip).float().mean().item()))
    pg, ent, clipped = np.mean(stats, axis=0)
    return {"pg_loss": pg, "entropy": ent, "clip_frac": clipped}


def fcfs_summary(workload: str, split, seed: int) -> dict:
    return simulate(workload, "fcfs", seed, split.kv_blocks).summary()


def main(argv=None) -> Path:
    args = parse_args(argv)
    names = args.workloads.split(",")

    def inputs(it: int, n: int, rng) -> list:
        out = []
        for j in range(args.inputs):
            split = SPLITS[names[(it * args.inputs + j) % len(names)]]
            workload, seed = split.window(split.train_start(rng), n), int(rng.integers(2**31))
            ref = fcfs_summary(workload, split, seed)
            out.append((make_env(workload, split, args, args.theta / ref["ttlt"]["mean"]),
                        seed, ref))
        return out
    return train(args, lambda: Scorer(args.hidden), warm_start, inputs, "fcfs", ENV_ID,
                 {"env_kwargs": serve_kwargs(args)})


def train(args, new_model, warm, inputs, ref: str, env_id: str, extra: dict,
          view: View = SLOT_VIEW) -> Path:
    """The training run: the model (``new_model()``, or ``--init``'s), ``warm(model, args,
    rng, opt)`` unless continuing, then ``args.iterations`` PPO iterations (``iteration``) on
    ``inputs(it, n, rng)`` (env, seed, summary of ``ref``) with the episode-length curriculum
    and the annealed entropy bonus, until ``--max-minutes``; ``save`` at the end."""
    if args.rollouts < 2:
        raise SystemExit("--rollouts must be >= 2 (the baseline is the other episodes' mean)")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = load(args.init).train() if args.init else new_model()
    opt = torch.optim.Adam(model.parameters(), lr=args.bc_lr)
    start = time.perf_counter()
    # a continued run's JSON carries on its predecessor's: stages, wall time, curve
    prev = (json.loads(args.init.with_suffix(".json").read_text()) if args.init else
            {"stages": [], "wall_s": 0.0, "curve": [], "bc_accuracy": None})
    bc_acc = prev["bc_accuracy"]
    if not args.init:
        bc_acc = warm(model, args, rng, opt)
        print(f"warm start: {args.bc_episodes} heuristic episodes, accuracy {bc_acc:.3f}",
              flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)  # fresh moments for PPO
    curve = prev["curve"]
    for it in range(args.iterations):
        if time.perf_counter() - start > 60 * args.max_minutes:
            break
        frac = it / max(args.iterations - 1, 1)
        n = round(args.n_start + (args.n_end - args.n_start) * min(1.0, 2 * frac))
        ent_coef = args.ent_start * (1 - frac)
        curve.append({"iteration": len(curve), "n": n,
                      **iteration(model, opt, inputs(it, n, rng), ent_coef, args, rng, it, ref,
                                  view),
                      "wall_s": round(prev["wall_s"] + time.perf_counter() - start, 1)})
        report_progress(curve[-1], ref)
    return save(model, args, prev, bc_acc, curve, start, env_id, extra)


def iteration(model, opt, inputs, ent_coef, args, rng, it, ref: str,
              view: View = SLOT_VIEW) -> dict:
    """One PPO iteration: ``args.rollouts`` sampled episodes on each input (env, seed,
    summary of the reference ``ref`` on it), input-driven advantages, ``ppo_update``; the
    curve entry (the episodes' mean and P99 TTLT relative to the reference's, the update's
    statistics)."""
    picks, adv, rel = [], [], []
    for j, (env, seed, base) in enumerate(inputs):
        choose = sampler(model, np.random.default_rng([args.seed, it, j]))
        episodes = [play(env, seed, choose, view) for _ in range(args.rollouts)]
        env.close()
        picks += [p for ep in episodes for p in ep[0]]
        adv.append(input_driven_advantages(episodes))
        for ep in episodes:
            got = ep[3].summary()["ttlt"]
            rel.append([got["mean"] / base["ttlt"]["mean"] - 1,
                        got["p99"] / base["ttlt"]["p99"] - 1])
    stats = ppo_update(model, opt, picks, np.concatenate(adv), ent_coef, args, rng) if picks else {}
    rel = np.mean(rel, axis=0)
    return {"decisions": len(picks), f"ttlt_mean_vs_{ref}": float(rel[0]),
            f"ttlt_p99_vs_{ref}": float(rel[1]), **{k: float(v) for k, v in stats.items()}}


def report_progress(entry: dict, ref: str) -> None:
    print(f"it {entry['iteration']:4d} n={entry['n']} decisions={entry['decisions']:5d} mean "
          f"{100 * entry[f'ttlt_mean_vs_{ref}']:+6.1f}% "
          f"p99 {100 * entry[f'ttlt_p99_vs_{ref}']:+6.1f}% vs {ref}  "
          f"ent {entry.get('entropy', 0):.3f}", flush=True)


def save(model, args, prev, bc_acc, curve, start, env_id: str, extra: dict) -> Path:
    """Write the checkpoint (weights, sizes, ``extra``) and the run's JSON (arguments of
    every stage, warm-start accuracy, wall time, learning curve) to ``args.out``."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hidden": model.net[0].out_features,
                "nf": model.nf, "ng": model.ng, **extra}, args.out)
    stage = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    meta = {"env_id": env_id, "args": stage, "stages": prev["stages"] + [stage],
            "bc_accuracy": bc_acc,
            "wall_s": round(prev["wall_s"] + time.perf_counter() - start, 1), "curve": curve}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out} ({meta['wall_s']:.0f} s)")
    return args.out


def load(path: Path = CHECKPOINTS / "ppo_scoring.pt") -> Scorer:
    """The trained scorer of ``path`` (eval mode)."""
    ckpt = torch.load(path, map_location="cpu")
    model = Scorer(ckpt["hidden"], ckpt.get("nf", NF), ckpt.get("ng", NG))
    model.load_state_dict(ckpt["state_dict"])
    model.env_kwargs = ckpt.get("env_kwargs")  # Serve-v0's (see serve_kwargs); None for a router
    return model.eval()


def act(model, view: View = SLOT_VIEW):
    """``act(env, obs)`` for ``baselines.common.run_episode``: the greedy choice."""
    choose = greedy(model)

    def act_(env, obs):
        choice = view.observe(env, obs)
        if choice is None:
            return int(np.flatnonzero(env.action_masks())[0])
        return view.action(env, choose(*choice)[0])
    return act_


if __name__ == "__main__":
    main()
