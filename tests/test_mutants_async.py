"""Async scheduling around a preemption: a request preempted while its last scheduled token
is still in flight is not scheduled again until that output is back (vLLM's AsyncScheduler
skips it), in the preemptive scheduler too."""
from engine_helpers import linear_coef, simulate_arrays

from tailgym.engine import layout as L

COEF = linear_coef(const=0.01, prefill=1e-4, decode=1e-3, context=1e-6)


def test_preempted_requests_sit_out_the_next_batch():
    """srpt-oracle, swap mode, 13 blocks of 4 tokens, async (batches counted from 0). A
    (36 + 11) decodes; B (7 + 18) joins in batch 5; C (41 + 5, the least remaining work)
    arrives and while forming batch 6 evicts both, whose batch-5 tokens are in flight. Batch 7
    does not schedule A (treating its in-flight output as fresh readmits it at once, and it
    evicts C in turn)."""
    _, _, blog = simulate_arrays([0.0288, 0.0748, 0.0781], [36, 7, 41], [11, 18, 5], COEF,
                                 "srpt-oracle", max_num_batched_tokens=92, max_num_seqs=3,
                                 block_size=4, usable_blocks=13, async_scheduling=True,
                                 preemption_mode="swap", num_host_blocks=9,
                                 enable_prefix_caching=False, scheduler_reserve_full_isl=False,
                                 swap_s_per_block=0.0, record_batches=True)
    def batch(step, kind):
        rows = blog[(blog[:, L.BL_STEP] == step) & (blog[:, L.BL_KIND] == kind)]
        return sorted(rows[:, L.BL_REQ].tolist())
    assert batch(5, L.BLK_SCHEDULED) == [0, 1]
    assert batch(6, L.BLK_PREEMPTED) == [0, 1] and batch(6, L.BLK_SCHEDULED) == [2]
    assert 0 not in batch(7, L.BLK_SCHEDULED)
    assert batch(7, L.BLK_PREEMPTED) == []


# async scheduling alone, one-token blocks, the batch log kept
ASYNC_ONLY = dict(block_size=1, async_scheduling=True, enable_prefix_caching=False,
                  scheduler_reserve_full_isl=False, record_batches=True)


def _at_step(blog, step, kind):
    """Batch-log rows of ``step`` of one kind (``BLK_SCHEDULED`` or ``BLK_PREEMPTED``)."""
    rows = blog[blog[:, L.BL_STEP] == step]
    return rows[rows[:, L.BL_KIND] == kind]


def test_a_request_evicted_in_a_pass_is_not_readmitted_in_it():
    """srpt-oracle, async, 53 one-token blocks, budget 43. A (15 + 14) decodes; B (42 + 9, less
    work left) arrives and, to fit its 42-token prompt, evicts A while A's last token is in
    flight. The same pass must not readmit A (it would be rescheduled from scratch at once)."""
    _, _, blog = simulate_arrays([0.0114, 0.0408], [15, 42], [14, 9], COEF, "srpt-oracle",
                                 max_num_batched_tokens=43, max_num_seqs=3, usable_blocks=53,
                                 **ASYNC_ONLY)
    assert _at_step(blog, 4, L.BLK_PREEMPTED)[:, L.BL_REQ].tolist() == [0]
    assert _at_step(blog, 4, L.BLK_SCHEDULED)[:, L.BL_REQ].tolist() == [1]


def test_a_request_evicted_in_a_pass_does_not_close_the_waiting_queue():
    """uniboost (base), async, 45 one-token blocks, 3 seats; found by comparing random cases
    with the mutant. At step 11 request 1 (preempted at step 10) waits and 2 is evicted while
    its token is in flight. Evicted in this pass, 2 is set aside (not a candidate that fails
    to fit and closes the waiting queue), so 1 is readmitted beside 0."""
    _, _, blog = simulate_arrays([0.0156, 0.0356, 0.0512], [19, 10, 25], [9, 8, 10],
                                 linear_coef(const=0.01, prefill=1e-4, decode=1e-3), "uniboost",
                                 {"variant": "base", "reserve": 0.0},
                                 max_num_batched_tokens=59, max_num_seqs=3, usable_blocks=45,
                                 **ASYNC_ONLY)
    assert _at_step(blog, 11, L.BLK_PREEMPTED)[:, L.BL_REQ].tolist() == [2]
    scheduled = _at_step(blog, 11, L.BLK_SCHEDULED)
    assert scheduled[:, [L.BL_REQ, L.BL_TOKENS]].tolist() == [[0, 24], [1, 17]]
