"""Paged KV cache accounting: block needs, preemption by recompute or swap."""

from ..jit import kernel
from .cost import recompute_seconds
from .blocks import release
from .heap import heap_push
from .layout import (BLOCKS, C_COST_AWARE, C_PREEMPT_MODE, C_VICTIM, CF_SWAP_S_PER_BLOCK,
                     COMPUTED, HOST_BLOCKS, IN_FLIGHT, N_PREEMPT, N_SWAP, PLACEHOLDER,
                     PM_SWAP, PRIO, Q_SWAPPED, Q_WAITING, RECOMPUTED_TOKENS, S_FREE_HOST,
                     S_N_SWAPPED, S_N_WAITING, S_PREEMPT_RECOMPUTE, S_PREEMPT_SWAP,
                     S_PREEMPTED_NOW, S_SWAP_BLOCKS, ST_SWAPPED, ST_WAITING, STALE, STATUS,
                     SWAPPED_TOKENS, V_LAST)


@kernel
def blocks_for(tokens, block_size):
    return (tokens + block_size - 1) // block_size


@kernel
def extra_blocks(ri, i, n_new, block_size):
    """Blocks request ``i`` must allocate to hold ``n_new`` more computed tokens (no division
    on the hot decode path: only tokens beyond the free slots of its blocks need new ones)."""
    slack = ri[i, BLOCKS] * block_size - ri[i, COMPUTED]
    if n_new <= slack:
        return 0
    return blocks_for(n_new - slack, block_size)


@kernel
def should_swap(ri, i, s, cfg_i, cfg_f, coef):
    """Swap (rather than recompute) when in swap mode with host room; a cost-aware policy
    swaps only when moving the blocks out and back is cheaper than recomputing them."""
    held = ri[i, BLOCKS]
    if cfg_i[C_PREEMPT_MODE] != PM_SWAP or held > s[S_FREE_HOST]:
        return False
    if cfg_i[C_COST_AWARE] == 0:
        return True
    return 2.0 * held * cfg_f[CF_SWAP_S_PER_BLOCK] < recompute_seconds(coef, ri[i, COMPUTED])


@kernel
def preempt(i, rf, ri, queues, s, cfg_i, kv, swap):
    """Evict running request ``i`` by swap (its blocks must fit the free host blocks) or
    recompute. The caller removes ``i`` from the running list. A recomputed request goes to
    the front of vLLM's FCFS deque (a key below its head) or into the priority heap; output
    still in flight for it stays due (``STALE``)."""
    held = ri[i, BLOCKS]
    release(kv, ri, s, cfg_i, i)
    ri[i, N_PREEMPT] += 1
    ri[i, STALE] = ri[i, IN_FLIGHT]
    ri[i, PLACEHOLDER] = 0
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
        if cfg_i[C_VICTIM] == V_LAST and s[S_N_WAITING] > 0:
            rf[i, PRIO] = min(rf[i, PRIO], rf[queues[Q_WAITING, 0], PRIO] - 1.0)
        heap_push(queues[Q_WAITING], s, S_N_WAITING, rf, i)
