"""Prefix caching on hand-traced block pools: LRU eviction order, keys unique to a request,
hit blocks in the free queue counted against free space, shared blocks, chained content keys."""
import numpy as np
import pytest
from engine_helpers import FEATURES_OFF, linear_coef, simulate_arrays
from test_engine_vllm033 import keys_for

from tailgym.engine import layout as L
from tailgym.engine.blocks import (K_POS, cache_blocks, dead, grow, lookup, pool_consistent,
                                   release, take_hits)
from tailgym.engine.state import EngineConfig, EngineState
from tailgym.workload import Workload, engine_block_keys

COEF = linear_coef(const=0.01, prefill=1e-3)
PREFIX = dict(enable_prefix_caching=True, max_num_batched_tokens=512, max_num_seqs=8)


@pytest.mark.parametrize("usable, b_cached", [(3, 16), (4, 32)])
def test_freed_blocks_are_evicted_in_lru_order(usable, b_cached):
    """A (40 tokens, keys 7, 8) finishes; its blocks are freed last-first: the partial third
    block to the head of the free queue, then key 8, then key 7 to the tail. D (17 tokens, no
    shared keys) takes 2 blocks from the head; B (A's prefix) arrives last.

    3 usable blocks: queue [3, 2:k8, 1:k7], D takes 3 and 2 (evicting key 8): B hits 16.
    4 usable blocks: queue [3, 4, 2:k8, 1:k7], D takes 3 and 4: B hits both, 32 tokens."""
    state, _ = simulate_arrays([0.0, 1.0, 2.0], [40, 17, 40], [1, 1, 1], COEF,
                               usable_blocks=usable, block_keys=keys_for([7, 8], [], [7, 8]),
                               **PREFIX)
    assert state.ri[:, L.CACHED_TOKENS].tolist() == [0, 0, b_cached]


def test_requests_without_keys_never_share_blocks():
    """Two identical-length prompts without prefix content: the second one hits nothing."""
    state, _ = simulate_arrays([0.0, 1.0], [32, 32], [1, 1], COEF, usable_blocks=10, **PREFIX)
    assert state.ri[:, L.CACHED_TOKENS].tolist() == [0, 0]


def test_cached_free_blocks_count_against_free_space():
    """4 usable blocks. A (32 tokens, keys 7, 8) finishes at once, leaving its 2 blocks cached
    in the free queue; C (16 + 30) keeps running. B (48 tokens, keys 7, 8) would hit both
    and need 1 new block: 1 new + 2 taken from the free queue = 3 > 2 free, so it waits until C
    has finished (C's growth evicted key 8 by then: B hits 16)."""
    state, _ = simulate_arrays([0.0, 0.0, 0.05], [32, 16, 48], [1, 30, 1], COEF, usable_blocks=4,
                               block_keys=keys_for([7, 8], [], [7, 8]), **PREFIX)
    assert state.rf[2, L.FIRST_SCHED] == state.rf[1, L.DONE] == pytest.approx(0.058 + 29 * 0.01)
    assert state.ri[2, L.CACHED_TOKENS] == 16


def test_running_requests_share_prefix_blocks():
    """B (A's 40-token prompt) arrives while A runs: it shares A's 2 full blocks, computes 8
    tokens, and the pool holds 3 + 1 blocks, not 6. Reference counts stay consistent as A,
    then B, free them (the engine checks the pool after every step)."""
    state, log = simulate_arrays([0.0, 0.001], [40, 40], [10, 3], COEF, usable_blocks=10,
                                 block_keys=keys_for([7, 8], [7, 8]), **PREFIX)
    assert state.ri[1, L.CACHED_TOKENS] == 32 and log[1, L.L_PREFILL] == 8
    assert log[1, L.L_FREE] == 10 - 4
    assert state.s[L.S_FREE_BLOCKS] == 10


def test_content_keys_are_chained():
    """Requests with content ids [1, 2] and [3, 2] share no block: the second block's key
    names the whole prefix, not its own id. [1, 2] and [1, 5] share the first 512 tokens."""
    w = Workload(arrival_s=[0.0, 1.0, 2.0], prompt_tokens=[1024] * 3, output_tokens=[1] * 3,
                 hash_ids=[1, 2, 3, 2, 1, 5], hash_offsets=[0, 2, 4, 6], hash_block_tokens=512,
                 hashed_tokens=[1024] * 3)
    offsets, keys = engine_block_keys(w, 512)
    a, b, c = (keys[offsets[i]:offsets[i + 1]].tolist() for i in range(3))
    assert not set(a) & set(b)
    assert a[0] == c[0] and a[1] != c[1]


def test_a_block_is_cached_only_once_full():
    """A (40 prompt tokens, keys 7, 8, 9: its third block ends 8 tokens into its output)
    decodes; B (60 tokens with A's keys: a next turn) arrives when A has 42 tokens computed.
    A's third block is still partial, so B hits only the first two (32 tokens)."""
    state, _ = simulate_arrays([0.0, 0.07], [40, 60], [20, 2], COEF, usable_blocks=20,
                               block_keys=keys_for([7, 8, 9], [7, 8, 9]), **PREFIX)
    assert state.ri[1, L.CACHED_TOKENS] == 32


@pytest.mark.parametrize("n, usable, hits", [(2, 6, [0, 16]), (2, 8, [0, 48]), (3, 9, [0, 64, 0])])
def test_a_preempted_request_hits_its_own_blocks_again(n, usable, hits):
    """``n`` requests: 40-token prompts without workload keys, 30 output tokens (5 blocks
    each). Two in 6 usable blocks: both hold 3; A's growth at 48 tokens preempts B (computed
    47: 2 full blocks, under keys of B's own), freed last-first: queue [partial, B1, B0]. A
    takes the partial, at 64 tokens B1 (LRU); when A has finished, B hits B0 alone: 16
    tokens. In 8 blocks both grow to 4; A's growth at 64 preempts B (computed 63: 3 full
    blocks); A takes only B's partial block, and B hits all three: 48 tokens. Three in 9
    blocks: C, preempted first, loses its cached blocks to A's and B's growth; B, preempted
    later, hits 64 tokens, and C none: B's keys are B's alone."""
    state, _ = simulate_arrays(0.001 * np.arange(n), [40] * n, [30] * n, COEF,
                               usable_blocks=usable, **PREFIX)
    assert state.ri[:, L.N_PREEMPT].tolist() == [0] + [1] * (n - 1)
    assert state.ri[:, L.HIT_TOKENS].tolist() == hits


def _queue(kv, cfg_i):
    """The free queue as block ids, head first (a dead entry as its block)."""
    blk, ring = kv[0], kv[4]
    head = cfg_i[L.C_GPU_BLOCKS]
    out = []
    for p in range(blk[head, K_POS], blk[head + 1, K_POS]):
        e = int(ring[p % len(ring)])
        if e < 0 or blk[e, K_POS] == p:
            out.append(dead(e) if e < 0 else e)
    return out


def test_the_free_queue_ring_squeezes_out_the_holes_of_hits():
    """A request (32 tokens, keys 7, 8) takes its 2 cached blocks from the free queue and
    frees them again, 40 times: each round leaves 2 holes in the ring (16 slots for 5
    blocks), which fills and is compacted; the queue keeps its LRU order throughout."""
    cfg = EngineConfig(**{**FEATURES_OFF, **PREFIX, "num_gpu_blocks": 6})
    st = EngineState(np.array([0.0]), np.array([32]), np.array([1]), cfg,
                     block_keys=keys_for([7, 8]))
    ri, s, kv = st.ri, st.s, st.kv
    cfg_i = np.zeros(L.CI_COLS, dtype=np.int64)
    cfg_i[[L.C_PREFIX, L.C_GPU_BLOCKS, L.C_BLOCK_SIZE]] = 1, 6, 16
    grow(kv, ri, s, cfg_i, 0, 2)
    cache_blocks(kv, ri, cfg_i, 0, 32)
    release(kv, ri, s, cfg_i, 0)  # waiting again (not finished): its keys stay in the table
    assert _queue(kv, cfg_i) == [3, 4, 5, 2, 1]
    for _ in range(40):
        ri[0, L.MATCH_TOKENS] = 32
        take_hits(kv, ri, s, 0, lookup(kv, ri, 0, 33, 16)[0])
        assert s[L.S_FREE_BLOCKS] == 3 and pool_consistent(kv, ri, s, cfg_i)
        release(kv, ri, s, cfg_i, 0)
        assert _queue(kv, cfg_i) == [3, 4, 5, 2, 1] and pool_consistent(kv, ri, s, cfg_i)
    head = cfg_i[L.C_GPU_BLOCKS]
    assert kv[0][head + 1, K_POS] - kv[0][head, K_POS] <= len(kv[4])
