"""Smoke tests of the RL baselines: each training script writes a loadable checkpoint, and
every evaluated method serves every request of a held-out window on the same engine."""
import json

import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO

from baselines import (evaluate, maskable_ppo_serve, ppo_scoring, ppo_serve_gamma,
                       ppo_serve_priority)
from baselines.common import KV_BLOCKS, SPLITS, env_kwargs, monitor_dir, run_episode

SCRIPTS = {"maskable_ppo_serve": (maskable_ppo_serve, MaskablePPO),
           "ppo_serve_gamma": (ppo_serve_gamma, PPO),
           "ppo_serve_priority": (ppo_serve_priority, PPO)}
SMALL = "azure-conv:start=13600,n=40,arrival=gamma,cv=2"  # a short held-out window


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Each script trained for a tiny budget (1 env, DummyVecEnv) into one folder."""
    folder = tmp_path_factory.mktemp("checkpoints")
    tiny = ["--timesteps", "256", "--n-envs", "1", "--vec-env", "dummy", "--seed", "3"]
    for name, (script, _) in SCRIPTS.items():
        script.main([*tiny, "--out", str(folder / f"{name}.zip")])
    maskable_ppo_serve.main([*tiny, "--env-kwargs", json.dumps(evaluate.WORK_CONSERVING),
                             "--out", str(folder / "maskable_ppo_serve_wc.zip")])
    ppo_scoring.main(TINY_SCORING + ["--out", str(folder / "ppo_scoring.pt")])
    ppo_scoring.main(TINY_SCORING[2:] + ["--iterations", "0",
                                         "--out", str(folder / "ppo_scoring_clone.pt")])
    return folder


TINY_SCORING = ["--iterations", "2", "--inputs", "3", "--rollouts", "2", "--n-start", "20",
                "--n-end", "30", "--bc-episodes", "2", "--bc-epochs", "2", "--seed", "3"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_training_writes_a_loadable_checkpoint(checkpoints, name):
    script, cls = SCRIPTS[name]
    path = checkpoints / f"{name}.zip"
    model = cls.load(path, device="cpu")
    assert model.observation_space == model.policy.observation_space
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["env_id"] == script.ENV_ID and meta["seed"] == 3
    assert meta["timesteps"] >= 256 and meta["hyperparams"] == json.loads(
        json.dumps(script.HYPERPARAMS))
    assert (monitor_dir(path) / "0.monitor.csv").read_text().startswith("#{")
    assert path.stat().st_size < 1_000_000


def test_every_method_serves_the_whole_window(checkpoints):
    table = evaluate.methods(checkpoints, gamma=1.0)
    assert {evaluate.agent_label(a) for a in evaluate.AGENTS} <= set(table)
    for name, run in table.items():
        report = run(SMALL, 1, KV_BLOCKS)
        assert len(report.requests["arrival"]) == 40, name
        assert report.summary()["requests_completed"] == 40, name
        assert report.config["num_gpu_blocks"] == KV_BLOCKS, name


@pytest.mark.parametrize("split", ["azure-conv", "servegen-r1"])
def test_heuristic_actions_through_serve_env_equal_simulate(split):
    """Heuristics and agents serve the same arrivals, also where the saturation rate depends on
    the seed (servegen-r1 draws its lengths per seed)."""
    env_id, split = "tailgym/Serve-v0", SPLITS[split]
    workload = split.window(split.eval_starts[0], 40)
    via_env = run_episode(env_id, env_kwargs(env_id, workload, {"kv_blocks": split.kv_blocks}), 1,
                          lambda env, obs: env.heuristic_action())
    direct = evaluate.simulate(workload, "fcfs", 1, split.kv_blocks)
    np.testing.assert_array_equal(via_env.requests["arrival"], direct.requests["arrival"])
    np.testing.assert_array_equal(via_env.requests["completion"], direct.requests["completion"])


def test_scoring_training_writes_a_small_checkpoint_and_its_curve(checkpoints):
    path = checkpoints / "ppo_scoring.pt"
    model = ppo_scoring.load(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["env_id"] == ppo_scoring.ENV_ID and meta["args"]["seed"] == 3
    assert [c["iteration"] for c in meta["curve"]] == [0, 1]
    assert [c["n"] for c in meta["curve"]] == [20, 30]  # the curriculum reached n-end
    assert all(c["decisions"] > 0 and np.isfinite(c["ttlt_p99_vs_fcfs"]) for c in meta["curve"])
    assert path.stat().st_size < 50_000 and model.env_kwargs["slots"] == 16
    assert torch.all(model.sd > 0)  # the warm start fitted the normalisation


def test_scoring_training_is_deterministic(tmp_path, checkpoints):
    ppo_scoring.main(TINY_SCORING + ["--out", str(tmp_path / "again.pt")])
    again, first = (torch.load(p)["state_dict"]
                    for p in (tmp_path / "again.pt", checkpoints / "ppo_scoring.pt"))
    assert all(torch.equal(again[k], first[k]) for k in first)


def test_scoring_training_continues_a_checkpoint(tmp_path, checkpoints):
    first = checkpoints / "ppo_scoring.pt"
    ppo_scoring.main(TINY_SCORING[:1] + ["1"] + TINY_SCORING[2:]
                     + ["--init", str(first), "--out", str(tmp_path / "more.pt")])
    before, after = (json.loads(p.with_suffix(".json").read_text())
                     for p in (first, tmp_path / "more.pt"))
    assert after["curve"][:2] == before["curve"] and after["curve"][2]["iteration"] == 2
    assert len(after["stages"]) == 2 and after["stages"][1]["init"] == str(first)
    assert after["bc_accuracy"] == before["bc_accuracy"] and after["wall_s"] > before["wall_s"]


def test_scorer_is_permutation_equivariant_and_masks_illegal_slots():
    torch.manual_seed(0)
    model = ppo_scoring.Scorer(8)
    s, g = torch.rand(1, 6, ppo_scoring.NF), torch.rand(1, ppo_scoring.NG)
    legal = torch.tensor([[True, True, False, True, True, False]])
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    logits = model(s, g, legal)
    assert torch.isinf(logits[legal.logical_not()]).all() and torch.isfinite(logits[legal]).all()
    torch.testing.assert_close(model(s[:, perm], g, legal[:, perm]), logits[:, perm])


def test_the_teacher_played_through_the_slot_view_is_the_heuristic_episode():
    """Admissions are a priority order over every request in view: the teacher's label is
    its best request even where that one does not fit (the env's no-op holds the line for
    it), and mapping the labels back to env actions replays ``heuristic_action()`` exactly."""
    args = ppo_scoring.parse_args([])
    split = SPLITS["azure-conv"]
    workload = split.window(0, 120)
    env = ppo_scoring.make_env(workload, split, args)
    picks, _, _, report = ppo_scoring.play(env, 2, ppo_scoring.teacher(env))
    kwargs = env_kwargs(ppo_scoring.ENV_ID, workload,
                        {"kv_blocks": split.kv_blocks, **ppo_scoring.serve_kwargs(args)})
    direct = run_episode(ppo_scoring.ENV_ID, kwargs, 2, lambda env, obs: env.heuristic_action())
    np.testing.assert_array_equal(report.requests["completion"], direct.requests["completion"])
    held = [p for p in picks if p[0][p[3], -1] == 0]  # labels that do not fit now
    assert held and all(p[2].sum() >= 2 for p in picks)


def test_input_driven_baseline_compares_episodes_at_the_same_time():
    """Two episodes on one input: the cheaper one's choices get the positive advantage, and
    the baseline reads the other episode's cost-to-go at the choice's time."""
    def episode(costs, times, at):
        picks = [(None, None, None, 0, 0.0, i) for i in at]
        return picks, np.array(times, float), np.array(costs, float), None
    cheap = episode([0, 1, 2], [0, 1, 2], at=[0, 1])     # cost-to-go 2, 1 at t = 0, 1
    dear = episode([0, 2, 4, 6], [0, 1, 1.5, 2], at=[1])  # cost-to-go 4 at t = 1
    adv = ppo_scoring.input_driven_advantages([cheap, dear])
    raw = np.array([6 - 2, 4 - 1, 1 - 4])  # the other's cost-to-go minus its own
    np.testing.assert_allclose(adv, raw / raw.std())


def test_evaluate_quick_json_schema(tmp_path, checkpoints):
    out = tmp_path / "eval.json"
    assert evaluate.main(["--quick", "--json", str(out), "--checkpoints", str(checkpoints),
                          "--out", str(tmp_path / "RESULTS.md")]) == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"methods"} and not (tmp_path / "RESULTS.md").exists()
    methods = doc["methods"]
    assert {"fcfs", "uniboost", evaluate.SCORING} <= set(methods)
    assert {n for n, row in methods.items() if row["learned"]} == evaluate.learned_methods()
    for name, row in methods.items():
        assert set(row) == {"learned", "ttlt_mean", "ttlt_p50", "ttlt_p99", "ttft_p50",
                            "ttft_p99", "vs_fcfs", "vs_uniboost", evaluate.FIXED}, name
        assert 0 < row["ttft_p50"] <= row["ttft_p99"] and 0 < row["ttlt_p50"] <= row["ttlt_p99"]
        for ref in ("vs_fcfs", "vs_uniboost", evaluate.FIXED):
            assert set(row[ref]) == {"ttlt_mean", "ttlt_p99", "ttft_p99"}
            for lo, hi in row[ref].values():
                assert -1 < lo <= hi, (name, ref)
    assert methods["fcfs"]["vs_fcfs"]["ttlt_mean"] == [0.0, 0.0]
    # the pooled statistics are means over one episode per workload
    fcfs = [evaluate.simulate(SPLITS[w].window(SPLITS[w].eval_starts[0], evaluate.QUICK_N),
                              "fcfs", evaluate.EVAL_SEEDS[0], SPLITS[w].kv_blocks)
            .summary()["ttlt"]["p99"] for w in SPLITS]
    assert methods["fcfs"]["ttlt_p99"] == pytest.approx(np.mean(fcfs), rel=1e-12)


def test_held_out_windows_never_overlap_training_windows():
    rng = np.random.default_rng(0)
    for name, split in SPLITS.items():
        lo, hi = split.train
        assert all(lo <= split.train_start(rng) < hi for _ in range(100))
        if name.startswith("azure"):  # requests start .. start + n - 1
            assert hi - 1 + evaluate.WINDOW <= min(split.eval_starts)
        else:  # hours start_h .. start_h + 0.05 of the data's day
            assert hi + 0.05 <= min(split.eval_starts)


TINY_ROUTING = ["--iterations", "2", "--inputs", "2", "--rollouts", "2", "--n-start", "20",
                "--n-end", "30", "--bc-episodes", "2", "--bc-epochs", "2", "--seed", "3"]


def test_routing_training_and_its_quick_evaluation(tmp_path):
    from baselines import evaluate_routing, ppo_routing
    from tailgym.envs.serve_route import REPLICA_FEATURES
    path = ppo_routing.main(TINY_ROUTING + ["--out", str(tmp_path / "router.pt")])
    model = ppo_scoring.load(path)
    assert (model.nf, model.env_kwargs) == (len(REPLICA_FEATURES), None)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["env_id"] == ppo_routing.ENV_ID and [c["n"] for c in meta["curve"]] == [20, 30]
    assert all(np.isfinite(c["ttlt_p99_vs_weighted"]) for c in meta["curve"])
    out = tmp_path / "routing.json"
    assert evaluate_routing.main(["--quick", "--json", str(out), "--checkpoint", str(path),
                                  "--out", str(tmp_path / "routing.md")]) == 0
    doc = json.loads(out.read_text())
    assert doc["best_router"] in doc["methods"] and not (tmp_path / "routing.md").exists()
    assert {n for n, row in doc["methods"].items() if row["learned"]} == {evaluate_routing.LEARNED}
    for row in doc["methods"].values():
        assert set(row) >= {"vs_best_router", "vs_least_outstanding", "ttlt_p99"}
        assert 0 < row["ttlt_p50"] <= row["ttlt_p99"]
