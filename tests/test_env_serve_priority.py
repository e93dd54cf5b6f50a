"""tailgym/ServePriority-v0: scores order service, rewards, seeding, copies, errors."""
import copy
import pickle

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from workload_helpers import write_workload_csv

from tailgym.engine import layout as L
from tailgym.envs import ServePriorityEnv

SMALL = {"workload": "default:n=200", "rate": 12.0, "kv_blocks": 1500}


def rollout(env, actions, seed):
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for i in range(100_000):
        obs, reward, terminated, truncated, info = env.step(actions(i))
        trace.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            return trace, info
    raise AssertionError("episode did not end")


def random_actions(seed, slots=16):
    rng = np.random.default_rng(seed)
    table = rng.uniform(-1, 1, (100_000, slots)).astype(np.float32)
    return lambda i: table[i]


def same(a, b) -> bool:
    return len(a) == len(b) and all(data_equivalence(x, y, exact=True) for x, y in zip(a, b))


def test_higher_scores_are_served_first(tmp_path):
    """Six equal requests at t=0, one prefill per step: scores rising with slot index
    (younger requests higher) serve them youngest first."""
    path = write_workload_csv(tmp_path / "w.csv", np.zeros(6), [512] * 6, [3] * 6)
    env = ServePriorityEnv(workload=path, max_num_batched_tokens=512, slots=6,
                           interval_s=1e-4)
    rollout(env, lambda i: np.linspace(-1, 1, 6, dtype=np.float32), seed=0)
    # (first tokens: async scheduling forms the first two batches both at t=0)
    assert np.all(np.diff(env.report().requests["first_token"]) < 0)
    rollout(env, lambda i: np.zeros(6, np.float32), seed=0)
    assert np.all(np.diff(env.report().requests["first_token"]) > 0)  # ties: FCFS


def test_integral_reward_sums_to_minus_total_ttlt_and_everyone_finishes():
    env = ServePriorityEnv(**SMALL)
    trace, info = rollout(env, random_actions(0), seed=3)
    r = env.report().requests
    assert r["finished"].all() and info["tailgym"]["requests_completed"] == 200
    total = float((r["completion"] - r["arrival"]).sum())
    assert sum(step[1] for step in trace[1:]) == pytest.approx(-total, rel=1e-12)
    assert env.report().preemptions_recompute > 0  # scores reshuffle running requests


def test_observation_lists_the_oldest_requests_in_the_system():
    env = ServePriorityEnv(**SMALL, slots=4)
    env.reset(seed=1)
    for _ in range(10):
        obs, *_ = env.step(np.zeros(4, np.float32))
    st = env._state
    arrived = st.rf[:, L.ARRIVAL] <= st.t[L.T_NOW]
    live = np.flatnonzero(arrived & ~np.isin(st.ri[:, L.STATUS], [L.ST_FINISHED, L.ST_REJECTED]))
    assert np.array_equal(env._slot_ids[:min(4, live.size)], live[:4])
    assert obs["slot_valid"].sum() == min(4, live.size)


def test_same_seed_same_episode_and_copies_continue_identically():
    a, _ = rollout(ServePriorityEnv(**SMALL), random_actions(1), seed=5)
    b, _ = rollout(ServePriorityEnv(**SMALL), random_actions(1), seed=5)
    assert same(a, b)
    env = ServePriorityEnv(**SMALL)
    env.reset(seed=2)
    for _ in range(5):
        env.step(np.zeros(16, np.float32))
    clones = [pickle.loads(pickle.dumps(env)), copy.deepcopy(env)]
    actions = random_actions(2)
    traces = [[e.step(actions(i))[:4] for i in range(10)] for e in [env, *clones]]
    assert same(traces[0], traces[1]) and same(traces[0], traces[2])


@pytest.mark.parametrize("kwargs, match", [
    ({"slots": 0}, "slots"), ({"interval_s": 0.0}, "interval_s"), ({"delta": -1.0}, "delta"),
    ({"reward": "mean"}, "reward"),
])
def test_bad_kwargs_fail_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ServePriorityEnv(**{"workload": "default:n=20", **kwargs})


def test_bad_action_fails_clearly():
    env = ServePriorityEnv(workload="default:n=20")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(16, np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="16 finite"):
        env.step(np.zeros(3, np.float32))
