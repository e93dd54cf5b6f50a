"""vLLM 0.33's defaults, each on a hand-computed case: the null block, full-prompt reservation,
async scheduling, prefix caching, priority-mode self-preemption, the long-prefill and
watermark rules."""
import numpy as np
import pytest
from engine_helpers import linear_coef, simulate_arrays

from tailgym.engine import layout as L

COEF = linear_coef(const=0.01, prefill=1e-4)
SMALL = dict(max_num_seqs=8, block_size=16)


def test_block_zero_is_reserved():
    state, _ = simulate_arrays([0.0], [60], [5], COEF, max_num_batched_tokens=512,
                               num_gpu_blocks=5, **SMALL)
    assert state.s[L.S_FREE_BLOCKS] == 4  # 5 blocks, 4 hold KV: exactly this request's need


def _two_long_prompts(reserve_full):
    # usable 6 blocks; A and B have 64-token prompts (4 blocks each), budget 48
    return simulate_arrays([0.0, 0.0], [64, 64], [3, 3], COEF, max_num_batched_tokens=48,
                           usable_blocks=6, scheduler_reserve_full_isl=reserve_full,
                           record_batches=True, **SMALL)


def test_full_prompt_reservation_admits_only_what_fits_whole():
    # without it: step 2 admits B's first 32 tokens into the last 2 blocks; A's first decode
    # needs a 5th block at step 3 and preempts B
    off, _, blog_off = _two_long_prompts(False)
    assert off.ri[:, L.N_PREEMPT].tolist() == [0, 1]
    # with it: B waits until its whole prompt (4 blocks) fits, i.e. until A has finished
    on, log, _ = _two_long_prompts(True)
    assert on.ri[:, L.N_PREEMPT].tolist() == [0, 0]
    # steps: A 48 (0.0148), A 16 (0.0116), A decode, A decode (0.01 each); then B
    assert on.rf[1, L.FIRST_SCHED] == pytest.approx(0.0148 + 0.0116 + 0.01 + 0.01)


def _async_pair(async_scheduling):
    return simulate_arrays([0.0, 0.005], [10, 10], [4, 2], COEF, max_num_batched_tokens=512,
                           usable_blocks=100, async_scheduling=async_scheduling, **SMALL)


def test_async_scheduling_admits_an_arrival_one_step_later():
    sync, _ = _async_pair(False)
    asy, log = _async_pair(True)
    # B arrives during step 1 [0, 0.011]. Sync: admitted into step 2 with A's decode, first
    # token at 0.011 + 0.011. Async: step 2 (A's decode, 0.01 s) was scheduled at t=0, so B
    # joins step 3, scheduled at 0.011 and run after step 2: first token at 0.021 + 0.011
    assert sync.rf[1, L.FIRST_TOKEN] == pytest.approx(0.022)
    assert asy.rf[1, L.FIRST_TOKEN] == pytest.approx(0.032)
    assert asy.rf[0, L.FIRST_TOKEN] == pytest.approx(0.011)
    # the max_tokens guard: no step beyond the last token (A: 1 prefill + 3 decodes; B: 2)
    assert asy.rf[0, L.DONE] == pytest.approx(0.042) and asy.rf[1, L.DONE] == pytest.approx(0.042)
    np.testing.assert_allclose(log[:, L.L_START], [0.0, 0.011, 0.021, 0.032])
    assert asy.s[L.S_EMPTY_BATCHES] == 1  # scheduled at 0.032: everyone's last token in flight


def keys_for(*per_request):
    """``block_keys`` arrays from one list of prefix keys per request."""
    offsets = np.concatenate(([0], np.cumsum([len(k) for k in per_request])))
    return offsets.astype(np.int64), np.array([k for ks in per_request for k in ks], np.int64)


def test_prefix_cache_hit_serves_full_shared_blocks():
    # A and B share their first two 16-token blocks; B arrives after A has finished
    state, log = simulate_arrays([0.0, 1.0], [40, 40], [2, 2], COEF, max_num_batched_tokens=512,
                                 usable_blocks=20, enable_prefix_caching=True,
                                 block_keys=keys_for([7, 8], [7, 8]), **SMALL)
    assert state.ri[:, L.CACHED_TOKENS].tolist() == [0, 32]
    assert log[2, L.L_PREFILL] == 8  # B computes only its last 8 prompt tokens
    assert log[2, L.L_DT] == pytest.approx(0.01 + 8e-4)


def test_prefix_hit_is_capped_below_the_whole_prompt():
    # a 32-token prompt fully cached still recomputes its last block (hit <= 31 tokens)
    state, _ = simulate_arrays([0.0, 1.0], [32, 32], [2, 2], COEF, max_num_batched_tokens=512,
                               usable_blocks=20, enable_prefix_caching=True,
                               block_keys=keys_for([7, 8], [7, 8]), **SMALL)
    assert state.ri[1, L.CACHED_TOKENS] == 16


def test_a_preempted_request_hits_its_own_blocks_on_resume():
    # the full-reservation-off case above with prefix caching: B is preempted at step 3 with
    # 2 cached blocks; A's new block evicts the one freed last-first (B's second), so B
    # resumes with its first block from the cache
    state, _ = simulate_arrays([0.0, 0.0], [64, 64], [3, 3], COEF, max_num_batched_tokens=48,
                               usable_blocks=6, enable_prefix_caching=True, **SMALL)
    assert state.ri[:, L.N_PREEMPT].tolist() == [0, 1]
    assert state.ri[1, L.HIT_TOKENS] == 16 and state.ri[1, L.CACHED_TOKENS] == 0


def test_priority_mode_goes_on_after_a_request_preempts_itself():
    # sjf-oracle: X (15 tokens to go) was admitted before Y (10). At step 3 X needs a third
    # block, none is free, and X is the lowest priority: it preempts itself, and Y, later in
    # the running list, is still scheduled (FCFS mode would stop the pass)
    state, _, blog = simulate_arrays([0.0, 0.005], [31, 16], [15, 10], COEF, policy="sjf-oracle",
                                     max_num_batched_tokens=512, usable_blocks=3,
                                     record_batches=True, **SMALL)
    step3 = blog[blog[:, L.BL_STEP] == 2]
    scheduled = step3[step3[:, L.BL_KIND] == L.BLK_SCHEDULED][:, L.BL_REQ].tolist()
    preempted = step3[step3[:, L.BL_KIND] == L.BLK_PREEMPTED][:, L.BL_REQ].tolist()
    assert preempted == [0] and scheduled == [1]


def test_long_prefill_threshold_applies_only_with_company():
    alone, log = simulate_arrays([0.0], [100], [2], COEF, max_num_batched_tokens=512,
                                 usable_blocks=20, long_prefill_token_threshold=30, **SMALL)
    assert log[0, L.L_PREFILL] == 100
    pair, log = simulate_arrays([0.0, 0.0], [100, 100], [2, 2], COEF,
                                max_num_batched_tokens=512, usable_blocks=20,
                                long_prefill_token_threshold=30, **SMALL)
    assert log[0, L.L_PREFILL] == 60


def test_watermark_applies_only_while_something_runs():
    # 4 usable blocks, watermark 2: a request needing all 4 is admitted into an idle engine
    state, _ = simulate_arrays([0.0], [60], [4], COEF, max_num_batched_tokens=512,
                               usable_blocks=4, watermark_blocks=2, **SMALL)
    assert state.ri[0, L.STATUS] == L.ST_FINISHED
    # while A runs (2 blocks held, growing to 4), B needs 1 block plus the watermark free
    def first_sched_of_b(watermark):
        state, _ = simulate_arrays([0.0, 0.001], [20, 10], [30, 2], COEF,
                                   max_num_batched_tokens=512, usable_blocks=4,
                                   watermark_blocks=watermark, **SMALL)
        return state.rf[1, L.FIRST_SCHED], state.rf[0, L.DONE]
    sched, a_done = first_sched_of_b(0)
    assert sched < 0.02 < a_done          # 1 <= 2 free blocks: admitted at step 2
    sched, a_done = first_sched_of_b(2)
    assert sched == a_done                # 1 + 2 > 2: waits until A has finished
