"""Smoke tests of the RL baselines: each training script writes a loadable checkpoint, and
every evaluated method serves every request of a held-out window on the same engine."""
import json

import numpy as np
import pytest
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO

from baselines import evaluate, maskable_ppo_serve, ppo_serve_gamma, ppo_serve_priority
from baselines.common import env_kwargs, monitor_dir, run_episode

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
    return folder


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
        report = run(SMALL, 1)
        assert len(report.requests["arrival"]) == 40, name
        assert report.summary()["requests_completed"] == 40, name
        assert report.config["num_gpu_blocks"] == evaluate.KV_BLOCKS, name


def test_heuristic_actions_through_serve_env_equal_simulate():
    env_id = "tailgym/Serve-v0"
    via_env = run_episode(env_id, env_kwargs(env_id, SMALL), 1,
                          lambda env, obs: env.heuristic_action())
    direct = evaluate.simulate(SMALL, "fcfs", 1)
    np.testing.assert_array_equal(via_env.requests["completion"], direct.requests["completion"])
