"""ServeRoute-v0: one routing decision per arriving request over a simulated fleet."""
import gymnasium
import numpy as np
import pytest

import tailgym  # noqa: F401  (registers the ids)
from tailgym.engine import layout as L
from tailgym.envs.serve_route import REPLICA_FEATURES
from tailgym.sim import simulate

KNOBS = dict(max_num_seqs=32, max_num_batched_tokens=2048)
ENV_KNOBS = dict(model="llama2-7b", engine_args={"max_model_len": 16384}, **KNOBS)
SIM_KNOBS = dict(model="llama2-7b", max_model_len=16384, **KNOBS)
CACHED = REPLICA_FEATURES.index("cached_prefix")


def _episode(env, policy=None, seed=0):
    """Run an episode with ``policy(env)`` (default: the router's own choice); the return."""
    env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        action = env.heuristic_action() if policy is None else policy(env)
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        done = terminated or truncated
    return total, terminated, info


@pytest.mark.parametrize("workload, policy, router, kw", [
    ("azure-conv:n=300", "fcfs", "least-outstanding", dict(replicas=3, load=1.0)),
    ("azure-conv:n=300", "uniboost", "power-of-two",
     dict(replicas=4, load=1.1, kv_blocks=400, on_unfit="reject")),
    ("chat-prefix:n=300", "fcfs", "prefix-aware", dict(replicas=3, load=0.9)),
    ("chat-prefix:n=300", "srpt-oracle", "weighted",
     dict(replicas=3, load=1.0, router_refresh_s=0.5)),
    ("azure-code:n=200", "fcfs", "least-tokens",
     dict(replicas={"h100-80gb": 2, "a100-80gb": 1}, rate_scale=3.0)),
])
def test_heuristic_episode_is_simulate_bit_for_bit(workload, policy, router, kw):
    env = gymnasium.make("tailgym/ServeRoute-v0", workload=workload, policy=policy,
                         router=router, **ENV_KNOBS, **kw).unwrapped
    total, terminated, info = _episode(env, seed=2)
    assert terminated
    got = env.report()
    want = simulate(workload, policy, router=router, seed=2, **SIM_KNOBS,
                    **{"on_unfit": "reject", **kw})
    for key, column in want.requests.items():
        assert column.tobytes() == got.requests[key].tobytes(), key
    assert got.fleet["requests"] == want.fleet["requests"]
    r = got.requests
    done = r["finished"]
    assert done.sum() + len(got.rejected) == len(done)
    assert total == pytest.approx(-(r["completion"] - r["arrival"])[done].sum(), rel=1e-9)
    assert info["tailgym"]["requests_completed"] == done.sum()


def test_observation_shows_load_and_the_prefix_cache_of_each_replica():
    env = gymnasium.make("tailgym/ServeRoute-v0", workload="chat-prefix:n=200", replicas=3,
                         router="prefix-aware", load=1.0, **ENV_KNOBS).unwrapped
    obs, info = env.reset(seed=0)
    assert obs["replicas"].shape == (3 * len(REPLICA_FEATURES),)
    assert info["action_mask"].tolist() == [1, 1, 1]
    cached = []
    for _ in range(150):
        obs, *_ = env.step(env.heuristic_action())
        per = obs["replicas"].reshape(3, -1)
        cached.append(per[:, CACHED].max())
        f = env.unwrapped._fleet
        outstanding = f.fleet[1] - f.rep[2][:, L.S_N_FINISHED]  # routed there, not finished
        np.testing.assert_allclose(np.expm1(per[:, 0]), outstanding, rtol=1e-5)
        assert env.observation_space.contains(obs)
    assert max(cached) > 0  # a later turn of a conversation finds its prefix somewhere
    assert np.expm1(per[:, 0]).sum() > 0  # outstanding requests are counted


def test_horizon_truncates_and_bad_actions_fail_clearly():
    env = gymnasium.make("tailgym/ServeRoute-v0", workload="azure-conv:n=300", replicas=2,
                         load=1.0, horizon_s=20.0, **ENV_KNOBS).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="0..1"):
        env.step(2)
    _, terminated, info = _episode(env, policy=lambda e: 0)
    assert not terminated and "tailgym" in info
    assert not env.report().requests["finished"].all()
    with pytest.raises(RuntimeError, match="ended"):
        env.step(0)


def test_bad_router_options_name_the_problem():
    with pytest.raises(ValueError, match="unknown router 'fastest'"):
        gymnasium.make("tailgym/ServeRoute-v0", router="fastest")
    with pytest.raises(ValueError, match="replicas must be an integer >= 1"):
        gymnasium.make("tailgym/ServeRoute-v0", replicas=0)
