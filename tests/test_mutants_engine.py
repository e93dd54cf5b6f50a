"""Engine cases that each pin one rule a realistic bug would break (block rounding, the
roofline, batch features, swap-vs-recompute, victims, admissions after a preemption, the
seat cap, the admission reserve, the MemGuard guard). Run on tiny hand-computed workloads with
the vLLM 0.33 features off unless a test says otherwise."""
import numpy as np
import pytest
from engine_helpers import linear_coef, simulate_arrays

from tailgym.engine import EngineConfig, EngineState
from tailgym.engine import layout as L
from tailgym.engine.cost import batch_features, recompute_seconds, step_time
from tailgym.engine.kv import should_swap
from tailgym.engine.schedule import start_running
from tailgym.engine.layout import N_FEATURES
from tailgym.hardware import step_features
from tailgym.policies import get_policy

COEF = linear_coef(const=0.01, prefill=1e-3)
ROOMY = dict(max_num_batched_tokens=512, max_num_seqs=8, usable_blocks=20)


@pytest.mark.parametrize("prompt", [16, 32, 42, 47, 48])
def test_held_blocks_are_the_ceiling_of_computed_tokens(prompt):
    """One request prefilled in chunks of 24 then decoding: after every step it holds exactly
    ceil(computed / 16) blocks (prompts of exactly 1, 2 and 3 blocks included)."""
    _, log = simulate_arrays([0.0], [prompt], [4], COEF, max_num_batched_tokens=24,
                             max_num_seqs=8, usable_blocks=20)
    computed = np.cumsum(log[:, L.L_PREFILL] + log[:, L.L_DECODE])
    np.testing.assert_array_equal(log[:, L.L_HELD], -(-computed // 16))


def test_a_prompt_of_exactly_k_blocks_fits_k_blocks():
    """32 prompt tokens and one output token need 2 blocks: 2 usable blocks suffice."""
    state, log = simulate_arrays([0.0], [32], [1], COEF, max_num_batched_tokens=512,
                                 max_num_seqs=8, usable_blocks=2)
    assert state.ri[0, L.STATUS] == L.ST_FINISHED and log[0, L.L_FREE] == 0


def _roofline(compute, memory):
    coef = np.zeros((2, N_FEATURES))
    coef[0, :4], coef[1, :4] = compute, memory
    return coef


@pytest.mark.parametrize("memory_bound", [True, False])
def test_step_time_is_the_larger_of_compute_and_memory(memory_bound):
    """Compute: 10 ms + 0.1 ms/prefill token; memory: 4 ms + 0.2 ms (or 0.01 ms) per context
    token read. A 100-token prefill and one decode at context 100 (101 tokens read)."""
    per_token = 2e-4 if memory_bound else 1e-5
    coef = _roofline([0.01, 1e-4, 0.0, 0.0], [0.004, 0.0, 0.0, per_token])
    _, log = simulate_arrays([0.0], [100], [2], coef, **ROOMY)
    compute = [0.01 + 0.01, 0.01]
    memory = [0.004 + 100 * per_token, 0.004 + 101 * per_token]
    np.testing.assert_allclose(log[:, L.L_DT], np.maximum(compute, memory))
    assert ((np.asarray(memory) > compute) == memory_bound).all()


def test_batch_features_match_the_reference_features():
    """The engine's in-loop features of a mixed batch (a chunk past context, a fresh prompt,
    two decodes; 2300 tokens, past the 2048-token knee) equal ``hardware.step_features``."""
    context, new, decode = [500, 0, 90, 1000], [1000, 1298, 1, 1], [0, 0, 1, 1]
    batch = np.zeros((L.B_ROWS, 4), dtype=np.int64)
    batch[L.B_NEW], batch[L.B_CONTEXT], batch[L.B_DECODE] = new, context, decode
    x = np.array(batch_features(batch, 4))
    np.testing.assert_allclose(x, step_features(context, new, np.array(decode, bool)))
    assert x[6] == 2300 - 2048 and x[7] == 2 * (2300 - 2048)


def test_recompute_cost_is_a_fresh_prefill_without_the_constant():
    """Recomputing 32 tokens with only prefill (1 ms/token) and attention (1 us/pair) costs:
    32 ms + 512 pairs x 1 us."""
    coef = np.zeros((2, N_FEATURES))
    coef[0, 0], coef[0, 1], coef[0, 4] = 5.0, 1e-3, 1e-6
    assert recompute_seconds(coef, 32) == pytest.approx(0.032 + 0.000512)
    assert step_time(coef, np.eye(N_FEATURES)[0]) == 5.0


def _swap_decision(policy, swap_s, free_host, held=2, computed=32):
    config = EngineConfig(max_num_batched_tokens=512, max_num_seqs=4, num_gpu_blocks=10,
                          preemption_mode="swap", num_host_blocks=8, swap_s_per_block=swap_s)
    cfg_i, cfg_f = config.arrays(get_policy(policy))
    ri = np.zeros((1, L.RI_COLS), dtype=np.int64)
    ri[0, L.BLOCKS], ri[0, L.COMPUTED] = held, computed
    s = np.zeros(L.S_COLS, dtype=np.int64)
    s[L.S_FREE_HOST] = free_host
    return bool(should_swap(ri, 0, s, cfg_i, cfg_f, COEF))


@pytest.mark.parametrize("swap_s, cost_aware_swaps", [(0.007, True), (0.009, False)])
def test_cost_aware_victim_swaps_only_when_cheaper(swap_s, cost_aware_swaps):
    """A victim holding 2 blocks of 32 computed tokens: recomputing costs 32 ms (1 ms/token);
    swapping out and back 2 x 2 x swap_s: 28 ms (swap) or 36 ms (recompute). uniboost is
    cost-aware; FCFS swaps whenever the host has room."""
    assert _swap_decision("uniboost", swap_s, free_host=8) == cost_aware_swaps
    assert _swap_decision("fcfs", swap_s, free_host=8)


def test_swap_needs_host_room_for_every_held_block():
    """2 held blocks swap into exactly 2 free host blocks, not into 1."""
    assert _swap_decision("fcfs", 0.001, free_host=2)
    assert not _swap_decision("fcfs", 0.001, free_host=1)


def test_priority_victim_is_the_lowest_priority_and_nothing_is_admitted_that_step():
    """sjf-oracle, 4 blocks: B (30+5, admitted first) and A (30+20) fill them; at step 4 B
    needs a third block and A, the lowest priority, is preempted. C (1+1) arrived meanwhile
    and would fit the freed block, but a step that preempted admits nobody: C waits a step."""
    state, log, blog = simulate_arrays([0.0, 0.0, 0.001], [30, 30, 1], [20, 5, 1], COEF,
                                       policy="sjf-oracle", max_num_batched_tokens=512,
                                       max_num_seqs=8, usable_blocks=4, record_batches=True)
    step4 = blog[blog[:, L.BL_STEP] == 3]
    assert step4[step4[:, L.BL_KIND] == L.BLK_PREEMPTED][:, L.BL_REQ].tolist() == [0]
    assert step4[step4[:, L.BL_KIND] == L.BLK_SCHEDULED][:, L.BL_REQ].tolist() == [1]
    assert log[3, L.L_FREE] == 1
    assert state.rf[2, L.FIRST_SCHED] == pytest.approx(0.07 + 3 * 0.01)  # step 5


def test_max_num_seqs_is_reached_exactly():
    """Five short requests, three seats: three run together, never four."""
    _, log = simulate_arrays(np.zeros(5), [10] * 5, [4] * 5, COEF, max_num_batched_tokens=512,
                             max_num_seqs=3, usable_blocks=100)
    assert log[:, L.L_RUNNING].max() == 3 and log[:, L.L_BATCH].max() == 3


def test_policy_reserve_joins_the_admission_watermark():
    """uniboost's ``reserve`` share of ``num_gpu_blocks`` (rounded up) adds to the watermark."""
    config = EngineConfig(max_num_batched_tokens=512, max_num_seqs=4, num_gpu_blocks=40,
                          watermark_blocks=1)
    spec = get_policy("uniboost")
    cfg_i, _ = config.arrays(spec, spec.param_array({"reserve": 0.1}))
    assert cfg_i[L.C_WATERMARK] == 1 + 4
    cfg_i, _ = config.arrays(spec, spec.param_array({"reserve": 0.0}))
    assert cfg_i[L.C_WATERMARK] == 1


@pytest.mark.parametrize("reserve", [0.1, 0.0])
def test_reserve_blocks_one_admission(reserve):
    """10 blocks (9 usable), reserve 0.1 = 1 block. A (120 prompt tokens) holds 8, one is
    free; B (16 tokens, 1 block) needs 1 + the reserve: it waits until A has finished.
    Without the reserve it is admitted at once (step 2)."""
    state, _ = simulate_arrays([0.0, 0.001], [120, 16], [12, 2], COEF, policy="uniboost",
                               policy_args=dict(variant="base", gamma_mode="fixed", delta=1e9,
                                                reserve=reserve),
                               max_num_batched_tokens=512, max_num_seqs=8, usable_blocks=9)
    a_done, b_sched = state.rf[0, L.DONE], state.rf[1, L.FIRST_SCHED]
    if reserve:
        assert b_sched == a_done
    else:
        assert b_sched == pytest.approx(0.01 + 0.12)


@pytest.mark.parametrize("generated, guard", [(0, 4), (3, 4), (4, 8), (5, 8), (8, 16)])
def test_memguard_guard_is_the_next_threshold_strictly_above(generated, guard):
    """A (re)dispatched request with ``generated`` tokens is protected up to the next of
    k, 2k, 4k... (k = 4) strictly above what it has generated."""
    config = EngineConfig(max_num_batched_tokens=512, max_num_seqs=4, num_gpu_blocks=10)
    spec = get_policy("las")
    cfg_i, _ = config.arrays(spec, spec.param_array({"k": 4}))
    state = EngineState(np.zeros(1), np.array([10]), np.array([20]), config)
    state.ri[0, L.GENERATED] = generated
    start_running(state.rf, state.ri, state.queues, state.s, cfg_i, 0, 0, 1.5)
    assert state.ri[0, L.GUARD] == guard and state.rf[0, L.FIRST_SCHED] == 1.5


@pytest.mark.parametrize("k, preemptions", [(0, 2), (1000, 0)])
def test_las_guard_protects_a_running_request(k, preemptions):
    """LAS with one seat: B (less attained service) arrives while A decodes. Pure LAS (k=0)
    evicts A for B; with a 1000-token guard A keeps its seat and B waits."""
    state, _ = simulate_arrays([0.0, 0.001], [10, 10], [6, 3], COEF, policy="las",
                               policy_args={"k": k}, max_num_batched_tokens=512,
                               max_num_seqs=1, usable_blocks=9)
    assert state.ri[0, L.N_PREEMPT] == preemptions
    assert (state.ri[:, L.STATUS] == L.ST_FINISHED).all()
