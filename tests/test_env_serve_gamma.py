"""tailgym/ServeGamma-v0: Gymnasium API, seeding, copies, vector envs, equivalence to
``simulate``, reward definitions, rendering, and errors for bad kwargs."""
import copy
import pickle
import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from workload_helpers import lengthened_pair

import tailgym
from tailgym.envs import ServeGammaEnv, register_envs
from tailgym.envs.serve_gamma import knob_value

ENV_ID = "tailgym/ServeGamma-v0"
# Loaded enough to queue and preempt, small enough to run in a fraction of a second.
SMALL = {"workload": "default:n=300", "rate": 12.0, "kv_blocks": 1500, "interval_s": 2.0}


def rollout(env, actions, seed):
    """Observations, rewards and flags of an episode driven by ``actions(step)``."""
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for i in range(10_000):
        obs, reward, terminated, truncated, info = env.step(actions(i))
        trace.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            return trace, info
    raise AssertionError("episode did not end")


def constant(*a):
    return lambda i: np.array(a, dtype=np.float32)


def random_actions(env, seed):
    space = copy.deepcopy(env.action_space)
    space.seed(seed)
    actions = [space.sample() for _ in range(10_000)]
    return lambda i: actions[i]


def same_trace(a, b) -> bool:
    return len(a) == len(b) and all(gymnasium.utils.env_checker.data_equivalence(x, y, exact=True)
                                    for x, y in zip(a, b))


def test_check_env_passes_with_render_modes():
    env = gymnasium.make(ENV_ID, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        check_env(env.unwrapped, skip_render_check=False)
    env.spec.to_json()  # kwargs are JSON-serialisable


def test_register_envs_is_idempotent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_envs()
        register_envs()
    assert gymnasium.spec(ENV_ID).entry_point == "tailgym.envs.serve_gamma:ServeGammaEnv"


@pytest.mark.parametrize("env_id", [
    f"tailgym.envs.registration:{ENV_ID}",
    f"tailgym:{ENV_ID}",
])
def test_make_with_module_prefix_in_a_fresh_process(env_id):
    code = (f"import gymnasium; env = gymnasium.make({env_id!r}, workload='default:n=20'); "
            "env.reset(seed=0); env.step(env.action_space.sample())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_same_seed_same_episode_and_different_seeds_differ():
    env = ServeGammaEnv(**SMALL, tune="gamma,k,delta")
    actions = random_actions(env, 0)
    a, info_a = rollout(env, actions, seed=3)
    b, info_b = rollout(ServeGammaEnv(**SMALL, tune="gamma,k,delta"), actions, seed=3)
    assert same_trace(a, b)
    assert info_a["tailgym"]["ttlt"] == info_b["tailgym"]["ttlt"]
    c, _ = rollout(env, actions, seed=4)
    assert not same_trace(a, c)


def test_pickle_and_deepcopy_mid_episode_continue_identically():
    env = ServeGammaEnv(**SMALL)
    env.reset(seed=1)
    for _ in range(4):
        env.step(np.array([-0.5], dtype=np.float32))
    clones = [pickle.loads(pickle.dumps(env)), copy.deepcopy(env)]
    traces = []
    for e in [env, *clones]:
        trace = []
        for i in range(8):
            step = e.step(np.array([0.1 * i - 0.3], dtype=np.float32))
            trace.append(step[:4])
        traces.append(trace)
    assert same_trace(traces[0], traces[1]) and same_trace(traces[0], traces[2])
    for clone in clones:
        assert np.array_equal(clone.report().requests["completion"],
                              env.report().requests["completion"], equal_nan=True)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_step_through_an_autoreset(mode):
    envs = gymnasium.make_vec(ENV_ID, num_envs=2, vectorization_mode=mode,
                              workload="default:n=30", interval_s=5.0)
    try:
        obs, _ = envs.reset(seed=[0, 1])
        assert obs["globals"].shape == (2, 14)
        ended = 0
        for _ in range(30):
            obs, reward, terminated, _, _ = envs.step(envs.action_space.sample())
            ended += int(terminated.sum())
        assert ended >= 2 and reward.dtype == np.float64
    finally:
        envs.close()


@pytest.mark.parametrize("tune, action", [("gamma", (0.0,)), ("gamma", (-1.0,)),
                                          ("gamma,k,delta", (0.4, -0.5, 0.2))])
def test_fixed_action_episode_equals_simulate(tune, action):
    env = ServeGammaEnv(**SMALL, tune=tune)
    _, info = rollout(env, constant(*action), seed=5)
    knobs = {name: info[name] for name in ("gamma", "k", "delta")}
    assert knobs["gamma"] == knob_value("gamma", np.float32(action[0]))
    report = tailgym.simulate(SMALL["workload"], "uniboost", seed=5, rate=SMALL["rate"],
                              kv_blocks=SMALL["kv_blocks"],
                              policy_args={"gamma_mode": "fixed", **knobs})
    ours = env.report().requests
    for key, values in report.requests.items():
        assert np.array_equal(ours[key], values, equal_nan=True), key
    assert report.preemptions_recompute > 0  # the workload exercises eviction


def test_gamma_changes_the_schedule():
    env = ServeGammaEnv(**SMALL)
    rollout(env, constant(1.0), seed=2)
    first = env.report().requests["completion"]
    rollout(env, constant(-1.0), seed=2)
    assert not np.array_equal(first, env.report().requests["completion"])


def test_integral_reward_sums_to_minus_total_time_in_system():
    env = ServeGammaEnv(**SMALL)
    trace, info = rollout(env, random_actions(env, 1), seed=6)
    r = env.report().requests
    total = float((r["completion"] - r["arrival"])[r["finished"]].sum())
    assert r["finished"].all() and info["tailgym"]["requests_completed"] == 300
    assert sum(step[1] for step in trace[1:]) == pytest.approx(-total, rel=1e-12)


def test_tail_reward_counts_slo_misses_when_they_finish():
    env = ServeGammaEnv(**SMALL, reward="tail", slo_s=20.0, reward_scale=0.5)
    trace, info = rollout(env, constant(0.0), seed=6)
    r = env.report().requests
    misses = int(((r["completion"] - r["arrival"]) > 20.0).sum())
    assert misses > 0
    assert sum(step[1] for step in trace[1:]) == -0.5 * misses
    assert info["tailgym"]["slo_attainment"]["ttlt<=20"] == pytest.approx(1 - misses / 300)


def test_horizon_truncates_with_a_summary():
    env = ServeGammaEnv(**SMALL, horizon_s=9.0)
    trace, info = rollout(env, constant(0.0), seed=0)
    assert trace[-1][3] and not trace[-1][2]
    assert 9.0 <= info["t"] < 9.0 + 2 * SMALL["interval_s"]
    assert info["tailgym"]["requests_completed"] < 300


def test_observation_does_not_reveal_output_lengths(tmp_path):
    """Lengthening one request's output changes no observation before it would have ended."""
    paths = lengthened_pair(tmp_path, "default:n=60", 6.0, index=10, extra=400)
    short, long_ = (ServeGammaEnv(workload=p, interval_s=0.5) for p in paths)
    short.reset(seed=0)
    long_.reset(seed=0)
    for _ in range(400):
        a = short.step(np.array([0.0], np.float32))[0]
        if short.report().requests["finished"][10]:
            break
        b = long_.step(np.array([0.0], np.float32))[0]
        assert same_trace([a], [b])
    else:
        raise AssertionError("request 10 never finished")


def test_render_ansi_and_rgb_array():
    env = ServeGammaEnv(**SMALL, render_mode="ansi")
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.array([0.0], np.float32))
    text = env.render()
    assert isinstance(text, str) and "KV [" in text and "waiting" in text
    env = ServeGammaEnv(**SMALL, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(np.array([0.0], np.float32))
    image = env.render()
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


@pytest.mark.parametrize("kwargs, match", [
    ({"tune": "gamma,speed"}, "tune"), ({"tune": "gamma,gamma"}, "tune"),
    ({"reward": "mean"}, "reward"), ({"interval_s": 0.0}, "interval_s"),
    ({"horizon_s": -1.0}, "horizon_s"), ({"render_mode": "human"}, "render_mode"),
    ({"policy_args": {"gamma_mode": "auto"}}, "gamma_mode"),
    ({"policy_args": {"gamma": 1e4}}, "outside"), ({"policy_args": {"speed": 1}}, "no knob"),
    ({"rate": 2.0, "load": 0.5}, "at most one"), ({"gpu": "tpu"}, "tpu"),
])
def test_bad_kwargs_fail_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ServeGammaEnv(**{"workload": "default:n=20", **kwargs})


def test_bad_action_fails_clearly():
    env = ServeGammaEnv(workload="default:n=20")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([np.nan], np.float32))
