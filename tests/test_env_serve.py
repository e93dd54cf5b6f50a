"""tailgym/Serve-v0: heuristic episodes equal the fast path, masks, rewards, seeding, copies,
vector envs, hidden output lengths, rendering and errors."""
import copy
import pickle

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from workload_helpers import lengthened_pair

import tailgym
from tailgym.engine import decisions as D
from tailgym.engine import layout as L
from tailgym.engine.step import blocks_conserved
from tailgym.envs import ServeEnv

# Loaded enough to queue and preempt, small enough to run in a fraction of a second.
SMALL = {"workload": "default:n=300", "rate": 12.0, "kv_blocks": 1500}


def episode(env, choose, seed):
    """Run one episode with ``choose(env, rng)``; return the step tuples and the last info."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    steps = [(obs, info["action_mask"])]
    while True:
        obs, reward, terminated, truncated, info = env.step(choose(env, rng))
        steps.append((obs, reward, terminated, truncated, info["action_mask"], info["elapsed_s"]))
        if terminated or truncated:
            return steps, info


def heuristic(env, rng):
    return env.heuristic_action()


def random_masked(env, rng):
    return int(rng.choice(np.flatnonzero(env.action_masks())))


def last_legal_slot(env, rng):
    """The last legal slot (the no-op only when no slot is legal)."""
    legal = np.flatnonzero(env.action_masks()[:-1])
    return int(legal[-1]) if legal.size else env.slots


def same(a, b) -> bool:
    return len(a) == len(b) and all(data_equivalence(x, y, exact=True) for x, y in zip(a, b))


@pytest.mark.parametrize("order, kwargs", [
    ("fcfs", {}), ("sjf-oracle", {}), ("ltr", {}),
    ("gamma-boost-oracle", {}), ("uniboost", {"policy_args": {"variant": "distboost"}}),
    ("fcfs", {"preemption_mode": "swap"}), ("sjf-oracle", {"max_num_batched_tokens": 256}),
])
def test_heuristic_episode_equals_the_fast_path(order, kwargs):
    env = ServeEnv(**SMALL, order=order, **kwargs)
    steps, info = episode(env, heuristic, seed=4)
    ref = tailgym.simulate(SMALL["workload"], order, seed=4, rate=SMALL["rate"],
                           kv_blocks=SMALL["kv_blocks"], on_unfit="reject", **kwargs)
    ours = env.report()
    for key, values in ref.requests.items():
        assert np.array_equal(ours.requests[key], values, equal_nan=True), key
    assert (ours.preemptions_recompute, ours.preemptions_swap) == (
        ref.preemptions_recompute, ref.preemptions_swap)
    assert ref.preemptions_recompute + ref.preemptions_swap > 0  # evictions were decided
    assert ours.steps == ref.steps
    total = np.nansum(ref.requests["completion"] - ref.requests["arrival"])
    assert sum(s[1] for s in steps[1:]) == pytest.approx(-total, rel=1e-12)
    assert sum(s[5] for s in steps[1:]) == pytest.approx(ours.simulated_seconds, rel=1e-12)
    assert info["tailgym"]["requests_completed"] == ref.summary()["requests_completed"]


def test_swap_mode_asks_swap_or_recompute_and_both_answers_work():
    env = ServeEnv(**SMALL, preemption_mode="swap")
    env.reset(seed=1)
    answers = []
    while True:
        if env.decision == "swap or recompute":
            assert env.action_masks().tolist() == [True, True] + [False] * (env.slots - 1)
            answers.append(len(answers) % 2)
            action = answers[-1]
        else:
            action = env.heuristic_action()
        *_, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    report = env.report()
    assert 0 in answers and 1 in answers
    assert report.preemptions_swap == answers.count(1)
    assert report.preemptions_recompute == answers.count(0)
    assert report.requests["finished"].all()


def test_random_masked_agent_keeps_the_books_and_finishes_everyone():
    env = ServeEnv(**SMALL, preemption_mode="swap")
    rng = np.random.default_rng(0)
    env.reset(seed=2)
    cfg, kinds = env._config, set()
    while True:
        mask = env.action_masks()
        assert mask.any() and mask.dtype == bool
        kinds.add(env.decision)
        *_, terminated, truncated, info = env.step(random_masked(env, rng))
        st = env._state
        assert blocks_conserved(st.ri, st.s, env._cfg_i, st.kv)
        assert st.ri[:, L.HOST_BLOCKS].sum() + st.s[L.S_FREE_HOST] == cfg.num_host_blocks
        assert not info["illegal_action"]
        if terminated or truncated:
            break
    assert terminated and kinds == {"admit", "evict", "swap or recompute"}
    assert info["tailgym"]["requests_completed"] == 300


def test_the_agent_choice_changes_the_schedule():
    env = ServeEnv(**SMALL)
    episode(env, heuristic, seed=3)
    fcfs = env.report().requests
    episode(env, last_legal_slot, seed=3)
    other = env.report().requests
    assert other["finished"].all()
    assert not np.array_equal(fcfs["first_token"], other["first_token"])


def test_work_conserving_mode_never_offers_the_no_op_with_an_admissible_request():
    env = ServeEnv(**SMALL, work_conserving=True)
    rng = np.random.default_rng(0)
    env.reset(seed=3)
    admissions = 0
    while True:
        mask = env.action_masks()
        if env.decision == "admit":
            admissions += 1
            assert mask[:-1].any() and not mask[-1]
        *_, terminated, truncated, _ = env.step(random_masked(env, rng))
        if terminated or truncated:
            break
    assert admissions >= 300 and env.report().requests["finished"].all()


def test_masks_and_illegal_actions():
    env = ServeEnv(**SMALL)
    assert env.action_masks().all() and env.action_masks().shape == (17,)  # before reset
    obs, info = env.reset(seed=0)
    assert info["action_mask"].dtype == np.int8
    assert np.array_equal(info["action_mask"].astype(bool), env.action_masks())
    assert env.observation_space.contains(obs)
    illegal = int(np.flatnonzero(~env.action_masks())[0])
    expected = env.heuristic_action()
    twin = copy.deepcopy(env)
    a = env.step(illegal)
    b = twin.step(expected)
    assert a[4]["illegal_action"] and not b[4]["illegal_action"]
    assert same([a[0]], [b[0]])
    assert env.report().config["illegal_actions"] == 1
    strict = ServeEnv(**SMALL, illegal_action="raise")
    strict.reset(seed=0)
    with pytest.raises(ValueError, match="not allowed"):
        strict.step(illegal)
    with pytest.raises(ValueError, match="integer"):
        strict.step(99)


def test_same_seed_same_episode_and_different_seeds_differ():
    a, _ = episode(ServeEnv(**SMALL), random_masked, seed=5)
    b, _ = episode(ServeEnv(**SMALL), random_masked, seed=5)
    assert same(a, b)
    env = ServeEnv(workload="default:n=300", kv_blocks=1500, rate=12.0)
    c, _ = episode(env, lambda e, rng: random_masked(e, np.random.default_rng(len(a))), seed=6)
    assert not same(a, c)


def test_pickle_and_deepcopy_mid_episode_continue_identically():
    env = ServeEnv(**SMALL)
    env.reset(seed=1)
    for _ in range(200):
        env.step(env.heuristic_action())
    clones = [pickle.loads(pickle.dumps(env)), copy.deepcopy(env)]
    traces = []
    for e in [env, *clones]:
        rng = np.random.default_rng(9)
        traces.append([e.step(random_masked(e, rng))[:4] for _ in range(300)])
    assert same(traces[0], traces[1]) and same(traces[0], traces[2])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_batch_the_masks(mode):
    envs = gymnasium.make_vec("tailgym/Serve-v0", num_envs=2, vectorization_mode=mode,
                              workload="default:n=20")
    try:
        obs, info = envs.reset(seed=[0, 1])
        nf = len(D.SLOT_FEATURES)
        assert obs["slots"].shape == (2, 16 * nf) and info["action_mask"].shape == (2, 17)
        for _ in range(50):
            actions = [int(np.flatnonzero(m)[0]) for m in info["action_mask"]]
            obs, reward, _, _, info = envs.step(np.array(actions))
        assert reward.dtype == np.float64 and obs["globals"].dtype == np.float32
    finally:
        envs.close()


def test_observation_does_not_reveal_output_lengths(tmp_path):
    """Lengthening one request's output changes no observation before it would have ended:
    before its last token is in flight (then async scheduling, as vLLM, knows it has reached
    its max_tokens and schedules it no more)."""
    paths = lengthened_pair(tmp_path, "default:n=80", 8.0, index=10, extra=400)
    short, long_ = (ServeEnv(workload=p, kv_blocks=800) for p in paths)
    a, _ = short.reset(seed=0)
    b, _ = long_.reset(seed=0)
    for _ in range(20_000):
        assert same([a], [b])
        action = short.heuristic_action()
        assert action == long_.heuristic_action()
        a = short.step(action)[0]
        st = short._state
        if st.ri[10, L.PLACEHOLDER] > 0 and st.ri[10, L.GENERATED] + 1 == st.target[10]:
            return
        b = long_.step(action)[0]
    raise AssertionError("request 10 never finished")


def test_horizon_truncates_with_a_summary():
    env = ServeEnv(**SMALL, horizon_s=5.0)
    steps, info = episode(env, heuristic, seed=0)
    assert steps[-1][3] and not steps[-1][2]
    assert 5.0 <= env._state.t[L.T_NOW] - env._t_start < 6.0
    assert info["tailgym"]["requests_completed"] < 300
    with pytest.raises(RuntimeError, match="ended"):
        env.step(env.slots)


def test_tail_reward_counts_slo_misses():
    env = ServeEnv(**SMALL, reward="tail", slo_s=15.0, reward_scale=2.0)
    steps, _ = episode(env, heuristic, seed=6)
    r = env.report().requests
    misses = int(((r["completion"] - r["arrival"]) > 15.0).sum())
    assert misses > 0 and sum(s[1] for s in steps[1:]) == -2.0 * misses


def test_render_ansi_and_rgb_array():
    env = ServeEnv(**SMALL, render_mode="ansi")
    env.reset(seed=0)
    for _ in range(20):
        env.step(env.heuristic_action())
    text = env.render()
    assert "decision: admit" in text and "legal actions" in text and "KV [" in text
    env = ServeEnv(**SMALL, render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(20):
        env.step(env.heuristic_action())
    image = env.render()
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


@pytest.mark.parametrize("kwargs, match", [
    ({"slots": 0}, "slots"), ({"order": "magic"}, "unknown policy"),
    ({"illegal_action": "ignore"}, "illegal_action"), ({"reward": "mean"}, "reward"),
    ({"render_mode": "human"}, "render_mode"), ({"policy_args": {"speed": 1}}, "no knob"),
])
def test_bad_kwargs_fail_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ServeEnv(**{"workload": "default:n=20", **kwargs})
