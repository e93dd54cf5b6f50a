"""Every tailgym id against the Gymnasium and SB3 checkers, SB3 vector envs and a
MaskablePPO smoke run (the ids and their kwargs as users write them)."""
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from sb3_contrib import MaskablePPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from tailgym.envs import ENVS

KWARGS = {
    "tailgym/Serve-v0": {"workload": "default:n=40", "rate": 8.0, "kv_blocks": 600},
    "tailgym/ServeGamma-v0": {"workload": "default:n=40", "rate": 8.0, "interval_s": 2.0},
    "tailgym/ServePriority-v0": {"workload": "default:n=40", "rate": 8.0},
    "tailgym/ServeHIL-v0": {"workload": "default:n=6", "rate": 20.0, "kv_blocks": 256},
    "tailgym/ServeRoute-v0": {"workload": "default:n=40", "rate": 8.0, "kv_blocks": 600,
                              "replicas": 3},
}


def test_every_id_is_covered():
    assert set(KWARGS) == set(ENVS)


@pytest.mark.parametrize("env_id", sorted(KWARGS))
def test_gymnasium_and_sb3_checkers_pass(env_id):
    env = gymnasium.make(env_id, **KWARGS[env_id])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(env.unwrapped, warn=True)
    env.spec.to_json()  # kwargs are JSON-serialisable
    assert env.spec.nondeterministic == (env_id == "tailgym/ServeHIL-v0")


def test_hil_env_runs_the_real_engine_to_the_end():
    env = gymnasium.make("tailgym/ServeHIL-v0", **KWARGS["tailgym/ServeHIL-v0"])
    env.reset(seed=0)
    while True:
        *_, terminated, truncated, _ = env.step(env.unwrapped.heuristic_action())
        if terminated or truncated:
            break
    report = env.unwrapped.report()
    assert terminated and report.requests["finished"].all()
    assert report.config["device"] == "cpu" and report.busy_seconds > 0
    assert env.unwrapped._engine.tables.blocks.sum() == 0  # every block went back


@pytest.mark.parametrize("env_id", ["tailgym/Serve-v0", "tailgym/ServePriority-v0",
                                    "tailgym/ServeRoute-v0"])
def test_sb3_subproc_vec_env_with_the_module_prefix(env_id):
    venv = make_vec_env(f"tailgym:{env_id}", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                        env_kwargs=KWARGS[env_id])
    try:
        obs = venv.reset()
        assert all(v.shape[0] == 2 for v in obs.values())  # a batch of 2 of each key
        for _ in range(20):
            if env_id.endswith(("Serve-v0", "Route-v0")):
                masks = np.stack(venv.env_method("action_masks"))
                actions = masks.argmax(axis=1)
            else:
                actions = np.zeros((2, 16), np.float32)
            obs, reward, *_ = venv.step(actions)
        assert reward.shape == (2,)
    finally:
        venv.close()


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
def test_maskable_ppo_smoke_training_on_serve(vec_env_cls):
    import torch
    torch.set_num_threads(1)
    venv = make_vec_env("tailgym:tailgym/Serve-v0", n_envs=2, seed=0, vec_env_cls=vec_env_cls,
                        env_kwargs={**KWARGS["tailgym/Serve-v0"], "illegal_action": "raise"})
    try:
        model = MaskablePPO("MultiInputPolicy", venv, n_steps=64, batch_size=64, n_epochs=1,
                            policy_kwargs={"net_arch": [32]}, seed=0, verbose=0)
        model.learn(256)
        assert model.num_timesteps >= 256
        obs = venv.reset()
        masks = np.stack(venv.env_method("action_masks"))
        actions, _ = model.predict(obs, action_masks=masks, deterministic=True)
        assert masks[np.arange(2), actions].all()  # never an illegal action
    finally:
        venv.close()


# reward -> the episode cost it sums to, from the finished requests' TTLTs T
OBJECTIVES = {"response": lambda T, slo, theta: T.sum(),
              "exp-tail": lambda T, slo, theta: np.expm1(theta * T).sum(),
              "slo-excess": lambda T, slo, theta: np.maximum(T - slo, 0.0).sum(),
              "tail": lambda T, slo, theta: float((T > slo).sum())}
TAIL_ENVS = ("tailgym/Serve-v0", "tailgym/ServeGamma-v0", "tailgym/ServePriority-v0",
             "tailgym/ServeRoute-v0")


@pytest.mark.parametrize("reward", sorted(OBJECTIVES))
@pytest.mark.parametrize("env_id", TAIL_ENVS)
def test_episode_return_is_minus_the_stated_objective(env_id, reward):
    """Random legal actions on a loaded engine: the undiscounted return is minus
    ``reward_scale`` x the reward's objective over the requests' TTLTs."""
    slo, theta, scale = 3.0, 0.15, 0.5
    env = gymnasium.make(env_id, **{**KWARGS[env_id], "rate": 12.0, "kv_blocks": 600},
                         reward=reward, slo_s=slo, theta=theta, reward_scale=scale).unwrapped
    env.action_space.seed(4)
    _, info = env.reset(seed=4)
    total, done = 0.0, False
    while not done:
        mask = info.get("action_mask")
        action = env.action_space.sample(mask=mask) if mask is not None else \
            env.action_space.sample()
        _, reward_, terminated, truncated, info = env.step(action)
        total += reward_
        done = terminated or truncated
    r = env.report().requests
    assert terminated and r["finished"].all()
    T = r["completion"] - r["arrival"]
    objective = OBJECTIVES[reward](T, slo, theta)
    assert objective > 0 and T.max() > slo  # the tail terms are not trivially zero
    assert total == pytest.approx(-scale * objective, rel=1e-9)


@pytest.mark.parametrize("env_id", TAIL_ENVS)
@pytest.mark.parametrize("kwargs, match", [
    ({"reward": "p99"}, "reward must be one of response, exp-tail, slo-excess, tail"),
    ({"reward": "exp-tail", "theta": 0.0}, "theta"), ({"theta": float("inf")}, "theta"),
    ({"reward": "slo-excess", "slo_s": -1.0}, "slo_s")])
def test_bad_reward_options_fail_clearly(env_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gymnasium.make(env_id, **KWARGS[env_id], **kwargs)


def test_integral_is_the_old_name_of_the_response_reward():
    env = gymnasium.make("tailgym/Serve-v0", **KWARGS["tailgym/Serve-v0"], reward="integral")
    assert env.unwrapped.reward == "response"
