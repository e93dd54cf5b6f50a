"""Cache-aware UniBoost (knob ``cached=1``): work counts uncached prompt tokens, as in the
authors' SGLang port; its unit-test cases, then the same effect in the engine."""
import numpy as np
import pytest
from engine_helpers import linear_coef, simulate_arrays

from tailgym.engine import layout as L
from tailgym.policies import get_policy
from tailgym.policies.uniboost import uniboost_priority

T0 = 10000.0
SGLANG = dict(gamma_mode="fixed", gamma=10.0, alpha_p=64e-6, alpha_d=64e-6, cached=1)


def order(requests, variant):
    """Request names sorted by priority, ties by position; ``requests``: (name, prompt
    tokens, arrival, cached prefix tokens)."""
    params = get_policy("uniboost").param_array(dict(SGLANG, variant=variant))
    pstate = get_policy("uniboost").pstate(SGLANG)
    rf = np.zeros((len(requests), L.RF_COLS))
    ri = np.zeros((len(requests), L.RI_COLS), dtype=np.int64)
    for i, (_, prompt, arrival, cached) in enumerate(requests):
        rf[i, L.ARRIVAL], ri[i, L.PROMPT], ri[i, L.MATCH_TOKENS] = arrival, prompt, cached
    phi = [uniboost_priority(params, pstate, rf, ri, i) for i in range(len(requests))]
    return [requests[i][0] for i in np.argsort(phi, kind="stable")]


VARIANTS = ["full", "base", "distboost"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_short_job_jumps_ahead_at_equal_arrival(variant):
    assert order([("long", 20000, T0, 0), ("short", 100, T0, 0)], variant) == ["short", "long"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_equal_work_keeps_fcfs(variant):
    jobs = [("second", 5000, T0 + 0.5, 0), ("first", 5000, T0, 0)]
    assert order(jobs, variant) == ["first", "second"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_much_older_long_job_stays_ahead(variant):
    jobs = [("new_short", 100, T0, 0), ("old_long", 20000, T0 - 1000.0, 0)]
    assert order(jobs, variant) == ["old_long", "new_short"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_mostly_cached_long_prompt_counts_as_short(variant):
    jobs = [("cold", 20000, T0, 0), ("hot", 20000, T0, 19900)]
    assert order(jobs, variant) == ["hot", "cold"]
    params = get_policy("uniboost").param_array(dict(SGLANG, variant=variant, cached=0))
    rf = np.full((2, L.RF_COLS), T0)
    ri = np.zeros((2, L.RI_COLS), dtype=np.int64)
    ri[:, L.PROMPT], ri[1, L.MATCH_TOKENS] = 20000, 19900
    pstate = get_policy("uniboost").pstate(SGLANG)
    assert uniboost_priority(params, pstate, rf, ri, 0) == uniboost_priority(params, pstate,
                                                                            rf, ri, 1)


def _hot_and_cold(cached):
    """W warms the cache with a 4096-token prompt; H repeats it (4080 tokens cached) and
    decodes 50 tokens; C, a cold 1000-token prompt, arrives while H decodes. One seat."""
    warm = list(range(1, 257))
    keys = [warm, warm, list(range(1001, 1063))]
    offsets = np.concatenate(([0], np.cumsum([len(k) for k in keys]))).astype(np.int64)
    state, _ = simulate_arrays(
        [0.0, 1.0, 1.03], [4096, 4096, 1000], [1, 50, 5], linear_coef(const=0.01, prefill=1e-4,
                                                                      decode=1e-3),
        "uniboost", dict(gamma_mode="fixed", gamma=1e-3, variant="base", alpha_p=1e-4,
                         alpha_d=1e-5, reserve=0.0, cached=cached),
        max_num_batched_tokens=8192, max_num_seqs=1, usable_blocks=2000, block_size=16,
        enable_prefix_caching=True, block_keys=(offsets, np.concatenate(keys)))
    assert state.ri[1, L.CACHED_TOKENS] == 4080
    return state


def test_the_engine_keeps_a_cached_request_running():
    plain, cache_aware = _hot_and_cold(0), _hot_and_cold(1)
    assert plain.ri[1, L.N_PREEMPT] >= 1 and plain.rf[2, L.DONE] < plain.rf[1, L.DONE]
    assert cache_aware.ri[1, L.N_PREEMPT] == 0
    assert cache_aware.rf[2, L.FIRST_SCHED] >= cache_aware.rf[1, L.DONE]


def _waiting_order(cached):
    """W warms the cache with a 4096-token prompt and finishes; B holds the only seat for 200
    tokens; meanwhile C (a cold 2000-token prompt) and H (W's prompt again: 4080 tokens
    cached) arrive and wait. Returns the first-scheduled times of C and H."""
    warm = list(range(1, 257))
    keys = [warm, [5000], list(range(1001, 1126)), warm]
    offsets = np.concatenate(([0], np.cumsum([len(k) for k in keys]))).astype(np.int64)
    state, _ = simulate_arrays(
        [0.0, 0.5, 1.0, 1.01], [4096, 16, 2000, 4096], [1, 200, 5, 5],
        linear_coef(const=0.01, prefill=1e-5), "uniboost",
        dict(gamma_mode="fixed", gamma=1e-3, variant="base", alpha_p=1e-4, alpha_d=1e-5,
             reserve=0.0, cached=cached),
        max_num_batched_tokens=8192, max_num_seqs=1, usable_blocks=2000, block_size=16,
        enable_prefix_caching=True, block_keys=(offsets, np.concatenate(keys)))
    assert state.ri[3, L.MATCH_TOKENS] == 4080 and state.ri[2, L.MATCH_TOKENS] == 0
    return state.rf[2, L.FIRST_SCHED], state.rf[3, L.FIRST_SCHED]


def test_a_waiting_request_is_ranked_by_its_match_at_arrival():
    cold, hot = _waiting_order(0)
    assert cold < hot  # 2000 prompt tokens of work before 4096
    cold, hot = _waiting_order(1)
    assert hot < cold  # 16 uncached tokens before 2000
