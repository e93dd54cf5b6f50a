"""Paged KV cache accounting: block needs, allocation, preemption by recompute or swap."""
from numba import njit

from .cost import recompute_seconds
from .heap import heap_push
from .layout import (BLOCKS, C_COST_AWARE, C_PREEMPT_MODE, CF_SWAP_S_PER_BLOCK,
                     COMPUTED, HOST_BLOCKS, N_PREEMPT, N_SWAP, PM_SWAP, Q_SWAPPED, Q_WAITING,
                     RECOMPUTED_TOKENS, S_FREE_BLOCKS, S_FREE_HOST, S_N_SWAPPED, S_N_WAITING,
                     S_PREEMPT_RECOMPUTE, S_PREEMPT_SWAP, S_PREEMPTED_NOW, S_SWAP_BLOCKS,
                     ST_SWAPPED, ST_WAITING, STATUS, SWAPPED_TOKENS)


@njit(cache=True, inline="always")
def blocks_for(tokens, block_size):
    return (tokens + block_size - 1) // block_size


@njit(cache=True, inline="always")
def extra_blocks(ri, i, n_new, block_size):
    """Blocks request ``i`` must allocate to hold ``n_new`` more computed tokens (no division
    on the hot decode path: only tokens beyond the free slots of its blocks need new ones)."""
    slack = ri[i, BLOCKS] * block_size - ri[i, COMPUTED]
    if n_new <= slack:
        return 0
    return blocks_for(n_new - slack, block_size)


@njit(cache=True)
def should_swap(ri, i, s, cfg_i, cfg_f, coef):
    """Swap (rather than recompute) when in swap mode with host room; a cost-aware policy
    swaps only when moving the blocks out and back is cheaper than recomputing them."""
    held = ri[i, BLOCKS]
    if cfg_i[C_PREEMPT_MODE] != PM_SWAP or held > s[S_FREE_HOST]:
        return False
    if cfg_i[C_COST_AWARE] == 0:
        return True
    return 2.0 * held * cfg_f[CF_SWAP_S_PER_BLOCK] < recompute_seconds(coef, ri[i, COMPUTED])


@njit(cache=True)
def preempt(i, rf, ri, queues, s, swap):
    """Evict running request ``i`` by swap (its blocks must fit the free host blocks) or
    recompute. The caller removes ``i`` from the running list."""
    held = ri[i, BLOCKS]
    s[S_FREE_BLOCKS] += held
    ri[i, BLOCKS] = 0
    ri[i, N_PREEMPT] += 1
    s[S_PREEMPTED_NOW] = 1
    if swap:
        s[S_FREE_HOST] -= held
        ri[i, HOST_BLOCKS] = held
        ri[i, N_SWAP] += 1
        ri[i, SWAPPED_TOKENS] += ri[i, COMPUTED]
        ri[i, STATUS] = ST_SWAPPED
        s[S_SWAP_BLOCKS] += held
        s[S_PREEMPT_SWAP] += 1
        heap_push(queues[Q_SWAPPED], s, S_N_SWAPPED, rf, i)
    else:
        ri[i, RECOMPUTED_TOKENS] += ri[i, COMPUTED]
        ri[i, COMPUTED] = 0
        ri[i, STATUS] = ST_WAITING
        s[S_PREEMPT_RECOMPUTE] += 1
        heap_push(queues[Q_WAITING], s, S_N_WAITING, rf, i)
