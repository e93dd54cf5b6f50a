"""Hand-computed engine timings, preemption, block conservation, determinism."""
import numpy as np
import pytest
from engine_helpers import linear_coef, simulate_arrays

from tailgym.engine import layout as L

COEF = linear_coef(const=0.01, prefill=1e-4)


def test_one_request_chunked_prefill_then_decodes():
    state, log = simulate_arrays([0.0], [1000], [5], COEF, max_num_batched_tokens=512,
                                 max_num_seqs=8, usable_blocks=100)
    # chunks of 512 and 488 tokens: 0.01 + 0.0512, then 0.01 + 0.0488; then 4 decodes of 0.01
    np.testing.assert_allclose(log[:, L.L_DT], [0.0612, 0.0588, 0.01, 0.01, 0.01, 0.01])
    np.testing.assert_allclose(log[:, L.L_PREFILL], [512, 488, 0, 0, 0, 0])
    rf, ri = state.rf[0], state.ri[0]
    assert rf[L.FIRST_SCHED] == 0.0
    assert rf[L.FIRST_TOKEN] == pytest.approx(0.12)
    assert rf[L.DONE] == pytest.approx(0.16)
    assert rf[L.MAX_GAP] == pytest.approx(0.01)
    assert ri[L.GENERATED] == 5 and ri[L.COMPUTED] == 1004 and ri[L.BLOCKS] == 0
    assert state.s[L.S_FREE_BLOCKS] == 100


def test_arrival_while_idle_jumps_clock():
    state, _ = simulate_arrays([2.5], [10], [2], COEF, max_num_batched_tokens=512,
                               max_num_seqs=8, usable_blocks=10)
    assert state.rf[0, L.FIRST_SCHED] == 2.5
    assert state.rf[0, L.FIRST_TOKEN] == pytest.approx(2.5 + 0.01 + 10e-4)


def test_two_requests_share_the_token_budget():
    coef = linear_coef(const=0.01, prefill=1e-4, decode=1e-3)
    state, log = simulate_arrays([0.0, 0.0], [300, 300], [3, 2], coef, max_num_batched_tokens=512,
                                 max_num_seqs=8, usable_blocks=100)
    # step 1: A's 300 prompt tokens + B's first 212 (chunk); step 2: A decodes, B's last 88
    # step 3: both decode
    np.testing.assert_allclose(log[:, L.L_DT], [0.0612, 0.01 + 0.0088 + 0.001, 0.012])
    a, b = state.rf
    assert a[L.FIRST_TOKEN] == pytest.approx(0.0612)
    assert b[L.FIRST_TOKEN] == pytest.approx(0.081)
    assert a[L.DONE] == pytest.approx(0.093) and b[L.DONE] == pytest.approx(0.093)
    assert a[L.MAX_GAP] == pytest.approx(0.0198)


def test_head_of_line_blocking_by_token_budget():
    # a long prompt takes the whole budget each step; the short one behind it waits
    state, _ = simulate_arrays([0.0, 0.001], [2048, 10], [1, 1], COEF, max_num_batched_tokens=512,
                               max_num_seqs=8, usable_blocks=200)
    assert state.rf[1, L.FIRST_SCHED] == pytest.approx(4 * (0.01 + 0.0512))  # 2048 = 4 chunks


def _pressure(mode, host_blocks=0, swap_s=0.0):
    # 4 blocks of 16 tokens; A needs 4 blocks at its largest, B 3: B gets preempted at step 4
    coef = linear_coef(const=0.01, prefill=1e-3)
    return simulate_arrays([0.0, 0.0], [30, 30], [20, 5], coef, max_num_batched_tokens=512,
                           max_num_seqs=8, usable_blocks=4, block_size=16, preemption_mode=mode,
                           num_host_blocks=host_blocks, swap_s_per_block=swap_s)


def test_forced_preemption_by_recompute():
    state, log = _pressure("recompute")
    a, b = state.rf
    assert a[L.FIRST_TOKEN] == pytest.approx(0.07)  # 60 prefill tokens
    assert a[L.DONE] == pytest.approx(0.07 + 19 * 0.01)
    # B: tokens at 0.07, 0.08, 0.09, evicted (32 tokens of KV dropped), re-prefills 33 tokens
    # once A finishes: 0.26 + 0.01 + 0.033, then one decode
    assert b[L.DONE] == pytest.approx(0.26 + 0.043 + 0.01)
    assert b[L.MAX_GAP] == pytest.approx(0.303 - 0.09)
    rb = state.ri[1]
    assert rb[L.N_PREEMPT] == 1 and rb[L.RECOMPUTED_TOKENS] == 32 and rb[L.N_SWAP] == 0
    assert state.s[L.S_PREEMPT_RECOMPUTE] == 1 and state.s[L.S_PREEMPT_SWAP] == 0
    assert (log[:, L.L_FREE] + log[:, L.L_HELD] == 4).all()


def test_forced_preemption_by_swap_costs_link_time():
    state, log = _pressure("swap", host_blocks=8, swap_s=0.005)
    a, b = state.rf
    # step 4 carries the swap-out of B's 2 blocks (+0.01 s)
    assert a[L.DONE] == pytest.approx(0.07 + 19 * 0.01 + 0.01)
    # B swaps back in (2 blocks, +0.01 s) and decodes right away: no recompute
    assert b[L.DONE] == pytest.approx(0.27 + 0.02 + 0.01)
    rb = state.ri[1]
    assert rb[L.N_SWAP] == 1 and rb[L.SWAPPED_TOKENS] == 32 and rb[L.RECOMPUTED_TOKENS] == 0
    assert log[:, L.L_SWAP].sum() == 4
    assert state.s[L.S_FREE_HOST] == 8


def test_swap_falls_back_to_recompute_without_host_space():
    state, _ = _pressure("swap", host_blocks=1, swap_s=0.005)
    assert state.ri[1, L.N_SWAP] == 0 and state.ri[1, L.RECOMPUTED_TOKENS] == 32


def test_max_num_seqs_caps_running():
    state, log = simulate_arrays(np.zeros(5), [10] * 5, [3] * 5, COEF, max_num_batched_tokens=512,
                                 max_num_seqs=2, usable_blocks=100)
    assert log[:, L.L_RUNNING].max() <= 2
    assert (state.ri[:, L.STATUS] == L.ST_FINISHED).all()


def test_no_chunked_prefill_waits_for_a_full_budget():
    state, log = simulate_arrays([0.0, 0.0], [300, 300], [1, 1], COEF, max_num_batched_tokens=512,
                                 max_num_seqs=8, usable_blocks=100, enable_chunked_prefill=False,
                                 max_model_len=512)
    np.testing.assert_allclose(log[:, L.L_PREFILL], [300, 300])


def test_run_until_stops_at_the_clock_and_resumes_identically():
    from tailgym.engine import EngineConfig, EngineState, run
    from tailgym.policies import get_policy
    arrival, prompt, output = np.linspace(0, 2, 30), np.full(30, 200), np.full(30, 40)
    cfg = EngineConfig(max_num_batched_tokens=512, max_num_seqs=4, num_gpu_blocks=200, check=True)
    fcfs = get_policy("fcfs")
    whole = EngineState(arrival, prompt, output, cfg)
    run(whole, cfg, COEF, fcfs, fcfs.param_array())
    parts = EngineState(arrival, prompt, output, cfg)
    for until in (0.5, 0.5, 1.7, 5.0):
        run(parts, cfg, COEF, fcfs, fcfs.param_array(), until=until)
        assert parts.t[L.T_NOW] >= until or (parts.ri[:, L.STATUS] == L.ST_FINISHED).all()
    run(parts, cfg, COEF, fcfs, fcfs.param_array())
    assert parts.rf.tobytes() == whole.rf.tobytes()
