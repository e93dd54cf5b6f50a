"""The vLLM reference driver itself, on scenarios small enough to work out by hand.

Step time 0.5 s + 1/64 s per token (exact in binary): a 1-token decode takes 0.515625 s,
16 tokens 0.75 s, 32 tokens 1.0 s. Block size 16; block 0 is vLLM's null block.
"""
import pytest

from reference import VllmDriverError, run_vllm, run_vllm_many, scenario, workload_scenario

CLOCK = {"step_time": {"const": 0.5, "per_token": 1 / 64}}
SYNC = {"async_scheduling": False}
CLASSIC = {"enable_prefix_caching": False, "scheduler_reserve_full_isl": False}


def req(arrival, prompt, output, **kw):
    return {"arrival": arrival, "prompt_tokens": prompt, "output_tokens": output, **kw}


ONE = [req(0.0, 40, 3)]
TWO = [req(0.0, 32, 4), req(0.9, 32, 2)]
TIGHT = [req(0.0, 24, 20), req(0.0, 24, 20)]
PAIR = [req(0.0, 40, 2), req(0.0, 40, 2)]
SHARE = [req(0.0, 40, 2, block_keys=[11, 12]), req(10.0, 40, 2, block_keys=[11, 12]),
         req(20.0, 32, 2, block_keys=[11, 12]),
         req(30.0, 20, 20, block_keys=[21, 22]), req(60.0, 48, 2, block_keys=[21, 22, 23])]
PRIO = [req(0.0, 16, 4, priority=0), req(0.1, 16, 2, priority=5), req(0.2, 16, 2, priority=1)]

CASES = {
    "one_sync": (ONE, {**SYNC, "max_num_batched_tokens": 16, "max_num_seqs": 16}),
    "one_async": (ONE, {"max_num_batched_tokens": 16, "max_num_seqs": 16}),
    "two_sync": (TWO, SYNC),
    "two_async": (TWO, {}),
    "tight_sync": (TIGHT, {**SYNC, **CLASSIC, "num_gpu_blocks": 5}),
    "tight_async": (TIGHT, {**CLASSIC, "num_gpu_blocks": 5}),
    "tight_sync_cached": (TIGHT, {**SYNC, "num_gpu_blocks": 5}),
    "tight_async_cached": (TIGHT, {"num_gpu_blocks": 5}),
    "pair_unreserved": (PAIR, {**SYNC, "scheduler_reserve_full_isl": False, "num_gpu_blocks": 6,
                               "max_num_batched_tokens": 48, "max_num_seqs": 16}),
    "pair_reserved": (PAIR, {**SYNC, "num_gpu_blocks": 6, "max_num_batched_tokens": 48,
                             "max_num_seqs": 16}),
    "share_sync": (SHARE, SYNC),
    "share_async": (SHARE, {}),
    "prio_priority": (PRIO, {**SYNC, "policy": "priority", "max_num_seqs": 1}),
    "prio_fcfs": (PRIO, {**SYNC, "max_num_seqs": 1}),
    "prio_fcfs_again": (PRIO, {**SYNC, "max_num_seqs": 1}),
}


@pytest.fixture(scope="module")
def out():
    """All hand-checked scenarios in one driver process (vLLM is imported once)."""
    names = list(CASES)
    reports = run_vllm_many([scenario(reqs, **CLOCK, **kw) for reqs, kw in CASES.values()])
    return dict(zip(names, reports))


def batches(report):
    return [s["batch"] for s in report["steps"]]


def test_one_request_chunks_then_decodes(out):
    # prompt 40 in chunks of the 16-token budget: 16, 16, 8; the last chunk samples token 1,
    # then 2 decodes: steps = 3 chunks + 3 outputs - 1
    r = out["one_sync"]
    assert batches(r) == [[[0, 16]], [[0, 16]], [[0, 8]], [[0, 1]], [[0, 1]]]
    ends = [0.75, 1.5, 2.125, 2.640625, 3.15625]
    assert [s["t_end"] for s in r["steps"]] == ends
    assert [s["t_start"] for s in r["steps"]] == [0.0] + ends[:-1]  # back to back
    assert r["requests"] == [{"first_token_step": 2, "finish_step": 4, "first_token_time": 2.125,
                              "finish_time": 3.15625, "num_preemptions": 0,
                              "num_cached_tokens": 0}]
    # sync: one empty schedule() flushes the finished request
    assert r["empty_batches"] == 1
    # async: the same GPU timeline; one more empty batch, the step the max_tokens guard skips
    assert out["one_async"]["steps"] == r["steps"]
    assert out["one_async"]["requests"] == r["requests"]
    assert out["one_async"]["empty_batches"] == 2


def test_async_admits_an_arrival_one_step_later(out):
    # B arrives at 0.9 during step 0 (0 -> 1.0). Sync admits it in step 1, scheduled at 1.0.
    # Async scheduled step 1 at t=0 (before B arrived), so B joins step 2, which starts when
    # step 1 ends (1.515625).
    s, a = out["two_sync"], out["two_async"]
    assert batches(s) == [[[0, 32]], [[0, 1], [1, 32]], [[0, 1], [1, 1]], [[0, 1]]]
    assert batches(a) == [[[0, 32]], [[0, 1]], [[0, 1], [1, 32]], [[0, 1], [1, 1]]]
    assert [x["t_end"] for x in s["steps"]] == [1.0, 2.015625, 2.546875, 3.0625]
    assert [x["t_end"] for x in a["steps"]] == [1.0, 1.515625, 2.53125, 3.0625]
    assert [(q["first_token_step"], q["finish_step"]) for q in s["requests"]] == [(0, 3), (1, 2)]
    assert [(q["first_token_step"], q["finish_step"]) for q in a["requests"]] == [(0, 3), (2, 3)]
    assert s["requests"][1]["first_token_time"] == 2.015625
    assert a["requests"][1]["first_token_time"] == 2.53125


def test_tight_kv_preempts_the_last_running_request(out):
    # 5 blocks = 4 usable. Both prompts (24) take 2 blocks each; at step 9 A needs a 3rd block
    # for its 33rd token, so B (last in running) is preempted. B holds 24 + 9 = 33 tokens and
    # needs 3 blocks: it waits until A finishes (step 19), recomputes 33 tokens at step 20,
    # then decodes its last 10 tokens (steps 21-30).
    r = out["tight_sync"]
    assert len(r["steps"]) == 31
    assert batches(r)[0] == [[0, 24], [1, 24]]
    assert batches(r)[8] == [[0, 1], [1, 1]]
    assert r["steps"][9] == {"t_start": 5.5, "t_end": 6.015625, "batch": [[0, 1]],
                             "preempted": [1]}
    assert batches(r)[20] == [[1, 33]]
    assert [s["preempted"] for s in r["steps"]].count([]) == 30
    assert r["preemptions"] == 1
    assert [q["num_preemptions"] for q in r["requests"]] == [0, 1]
    assert [q["finish_step"] for q in r["requests"]] == [19, 30]
    # 1.25 + 8 * 0.53125 + 11 * 0.515625 + 1.015625 + 10 * 0.515625
    assert r["requests"][1]["finish_time"] == 17.34375
    # async: B's output of step 8, in flight when it was preempted, is still delivered; with
    # no idle gap the GPU timeline is the same
    assert out["tight_async"]["steps"] == r["steps"]


def test_preempted_request_hits_its_own_freed_block(out):
    # With prefix caching, of B's two freed full blocks A's new block evicts one; B's resume
    # hits the other (16 tokens) and computes 33 - 16 = 17, 16/64 s sooner.
    for name in ("tight_sync_cached", "tight_async_cached"):
        r = out[name]
        assert batches(r)[20] == [[1, 17]], name
        assert r["requests"][1]["finish_time"] == 17.09375, name
        assert r["prefix_cache"] == {"queries": 48, "hits": 0, "preempted_queries": 33,
                                     "preempted_hits": 16}, name


def test_full_prompt_reservation_blocks_a_partial_admission(out):
    # 6 blocks = 5 usable, budget 48. A's prompt of 40 takes 3 blocks. Without reservation B
    # gets an 8-token chunk (1 block), then needs 2 more blocks for its next 32 with 1 free:
    # B preempts itself. With reservation B waits for blocks for its whole prompt.
    free = out["pair_unreserved"]
    assert batches(free) == [[[0, 40], [1, 8]], [[0, 1]], [[1, 40]], [[1, 1]]]
    assert [s["preempted"] for s in free["steps"]] == [[], [1], [], []]
    held = out["pair_reserved"]
    assert batches(held) == [[[0, 40]], [[0, 1]], [[1, 40]], [[1, 1]]]
    assert held["preemptions"] == 0


def test_prefix_sharing_counts_full_blocks_below_the_last_token(out):
    # B shares A's two keyed blocks: 32 cached. C's prompt is exactly those 32 tokens: the hit
    # is capped at 31 tokens, i.e. 1 full block. E's prompt starts with D's prompt (20) and
    # D's first 12 outputs: the fake model's samples follow the keyed sequence, so E hits 32.
    for name in ("share_sync", "share_async"):
        r = out[name]
        assert [q["num_cached_tokens"] for q in r["requests"]] == [0, 32, 16, 0, 32], name
        assert batches(r)[2] == [[1, 8]] and batches(r)[4] == [[2, 16]], name
        assert batches(r)[-2] == [[4, 16]], name
        assert r["prefix_cache"] == {"queries": 180, "hits": 80, "preempted_queries": 0,
                                     "preempted_hits": 0}, name


def test_priority_mode_admits_the_lowest_priority_value_first(out):
    # One seat: A runs steps 0-3; then priority mode takes C (priority 1) before B (5),
    # FCFS takes B (earlier arrival) first.
    p, f = out["prio_priority"], out["prio_fcfs"]
    assert [q["first_token_step"] for q in p["requests"]] == [0, 6, 4]
    assert [q["first_token_step"] for q in f["requests"]] == [0, 4, 6]
    assert batches(p)[4] == [[2, 16]] and batches(f)[4] == [[1, 16]]


def test_same_scenario_same_report(out):
    assert out["prio_fcfs_again"] == out["prio_fcfs"]


def test_bad_scenario_is_one_line_naming_the_key():
    bad = scenario([req(0.0, 10, 0)])
    with pytest.raises(VllmDriverError, match=r"requests\[0\]\.output_tokens=0: must be >= 1"):
        run_vllm(bad)


def test_a_request_that_can_never_run_fails_loudly():
    # 3 blocks = 2 usable = 32 tokens < a 40-token prompt (full-prompt reservation)
    with pytest.raises(VllmDriverError, match="deadlock"):
        run_vllm(scenario([req(0.0, 40, 2)], num_gpu_blocks=3))


def test_workload_scenario_takes_a_tailgym_workload():
    sc = workload_scenario("azure-conv:n=3", num_gpu_blocks=1000)
    assert [r["arrival"] for r in sc["requests"]][0] == 0.0
    assert [(r["prompt_tokens"], r["output_tokens"]) for r in sc["requests"]] == [
        (374, 44), (396, 109), (879, 55)]
    assert sc["num_gpu_blocks"] == 1000 and sc["async_scheduling"] is True
