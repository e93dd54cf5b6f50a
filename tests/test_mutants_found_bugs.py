"""Engine bugs found by the mutation work's tests (since fixed), each as its smallest
reproducer asserting the correct behaviour: LAS under KV pressure, where two requests mid-prefill
evicted each other forever (the preemptive scheduler now reserves whole prompts at admission,
and LAS counts prefill dropped by a preemption as attained),
and a swapped-out request needing every block but the watermark's, never swapped back into an
idle engine (the watermark now counts only while something runs, as for admissions). (vLLM 0.33
features off, as in ``engine_helpers``.)"""
import pytest
from engine_helpers import linear_coef, simulate_arrays

from tailgym.engine import layout as L

COEF = linear_coef(const=0.01, prefill=1e-3)


@pytest.mark.parametrize("k", [0, 4, 256])
def test_las_two_long_prompts_in_three_blocks_finish(k):
    """Two 48-token prompts (3 blocks each) in 3 blocks, 16-token chunks: FCFS would run one
    then the other (about 8 steps); LAS ping-ponged preemptions and never finished either."""
    state, log = simulate_arrays([0.0, 0.0], [48, 48], [1, 1], COEF, "las", {"k": k},
                                 max_num_batched_tokens=32, max_num_seqs=2, usable_blocks=3,
                                 long_prefill_token_threshold=16, max_steps=500)
    assert (state.ri[:, L.STATUS] == L.ST_FINISHED).all(), f"{len(log)} steps, unfinished"


def test_pure_las_three_tiny_prompts_finish():
    """The fuzz's shrunk case: prompts 1, 3, 3 (one output token each), 1-token blocks, 3
    blocks, budget 2, 2 seats, 1-token prefill chunks: 10 tokens in all, were stuck after
    500 steps."""
    state, log = simulate_arrays([0.0, 0.0, 0.0], [1, 3, 3], [1, 1, 1], COEF, "las", {"k": 0},
                                 max_num_batched_tokens=2, max_num_seqs=2, usable_blocks=3,
                                 block_size=1, long_prefill_token_threshold=1, max_steps=500)
    assert (state.ri[:, L.STATUS] == L.ST_FINISHED).all(), f"{len(log)} steps, unfinished"


def test_pure_las_counts_prefill_dropped_by_a_preemption_as_attained():
    """The fuzz's case after the gittins-tail entry moved its draws: prompts 5 and 4 (with
    three 1-token ones) in 6 one-token blocks, budget 2, 1-token chunks. Each eviction reset the
    victim's attained prefill to 0, so it evicted the other at once: 499 preemptions each in
    2,000 steps. Counting the dropped prefill as served, it finishes in 14 steps."""
    state, log = simulate_arrays([0.0] * 5, [1, 1, 1, 5, 4], [1, 1, 1, 2, 1], COEF, "las",
                                 {"k": 0}, max_num_batched_tokens=2, max_num_seqs=2,
                                 usable_blocks=6, block_size=1, long_prefill_token_threshold=1,
                                 max_steps=500)
    assert (state.ri[:, L.STATUS] == L.ST_FINISHED).all(), f"{len(log)} steps, unfinished"
    assert state.ri[:, L.N_PREEMPT].sum() <= 4


def test_fcfs_swapped_request_is_swapped_back_into_an_idle_engine():
    """4 blocks, watermark 1, swap mode, 16-token prefill chunks. A (1 + 10 tokens) and B (64
    + 1) start together; at step 4 B (48 tokens in 3 blocks) needs a 4th block and, the latest
    admitted, swaps itself out. A finishes at step 10; B then needs 4 blocks and the engine is
    idle, so the watermark (kept free only while something runs) must not hold it back.
    With recompute instead of swap the same case finishes."""
    state, _ = simulate_arrays([0.0, 0.0], [1, 64], [10, 1], COEF, max_num_batched_tokens=512,
                               max_num_seqs=8, usable_blocks=4, watermark_blocks=1,
                               long_prefill_token_threshold=16, preemption_mode="swap",
                               num_host_blocks=8)
    assert state.ri[1, L.N_SWAP] == 1 and (state.ri[:, L.STATUS] == L.ST_FINISHED).all()


def test_uniboost_default_reserve_does_not_strand_a_swapped_request():
    """The same stall without any watermark: uniboost's default reserve (2% of 3 blocks,
    rounded up: 1) kept a swapped-out request that needs both usable blocks out forever.
    The fuzz's shrunk case: four 1-token prompts, outputs 1, 4, 18, 1, budget 1, one seat."""
    coef = linear_coef(const=0.01, prefill=1e-4, decode=1e-3, context=1e-6)
    state, _ = simulate_arrays([0.0, 0.0, 0.0, 0.25], [1, 1, 1, 1], [1, 4, 18, 1], coef,
                               "uniboost", {"variant": "base"}, max_num_batched_tokens=1,
                               max_num_seqs=1, usable_blocks=2, preemption_mode="swap",
                               num_host_blocks=2, swap_s_per_block=1e-4)
    assert (state.ri[:, L.STATUS] == L.ST_FINISHED).all()


def test_preemptive_scheduler_reserves_the_whole_prompt_with_the_flag_off():
    """A (16-token prompt, 20 outputs) runs, guarded from eviction by LAS's minimum run; B's
    48-token prompt needs all 3 blocks. With full-prompt reservation off in vLLM's flag, the
    preemptive scheduler still reserves whole prompts: B waits for A instead of taking A's
    free blocks with a partial prefill."""
    state, _ = simulate_arrays([0.0, 0.05], [16, 48], [20, 1], COEF, "las", {"k": 256},
                               max_num_batched_tokens=64, max_num_seqs=2, usable_blocks=3,
                               long_prefill_token_threshold=16)
    assert (state.ri[:, L.STATUS] == L.ST_FINISHED).all()
    assert state.rf[1, L.FIRST_SCHED] >= state.rf[0, L.DONE]
