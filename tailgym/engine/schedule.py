"""Batch formation for one engine step, as vLLM's scheduler: running requests first (in list
order), then swapped-out requests (swap-in), then waiting ones (strict head-of-line order),
within the token budget, ``max_num_seqs`` and the free KV blocks.

Each pass appends ``(request, new tokens)`` to ``batch`` and returns the token budget left.
"""
from numba import njit

from .heap import before, heap_pop
from .kv import blocks_for, extra_blocks, preempt
from .layout import (BLOCKS, C_BLOCK_SIZE, C_CHUNKED, C_LONG_PREFILL, C_MAX_SEQS, C_VICTIM,
                     C_WATERMARK, COMPUTED, FIRST_SCHED, GENERATED, HOST_BLOCKS, PROMPT,
                     Q_RUNNING, Q_SWAPPED, Q_WAITING, S_BATCH, S_FREE_BLOCKS, S_FREE_HOST,
                     S_N_RUNNING, S_N_SWAPPED, S_N_WAITING, S_SWAP_BLOCKS, ST_RUNNING, STATUS,
                     V_LAST)


@njit(cache=True, inline="always")
def tokens_to_compute(ri, i, cfg_i):
    """Tokens request ``i`` still has to compute, capped by ``long_prefill_token_threshold``."""
    n = ri[i, PROMPT] + ri[i, GENERATED] - ri[i, COMPUTED]
    limit = cfg_i[C_LONG_PREFILL]
    if limit > 0 and n > limit:
        n = limit
    return n


@njit(cache=True)
def victim_position(rf, running, n_running, rule):
    """Position in the running list of the request to evict."""
    if rule == V_LAST:
        return n_running - 1
    worst = 0  # V_LOWEST_PRIORITY: served last under the (priority, arrival, index) order
    for p in range(1, n_running):
        if before(rf, running[worst], running[p]):
            worst = p
    return worst


@njit(cache=True)
def remove_at(arr, n, pos):
    for p in range(pos, n - 1):
        arr[p] = arr[p + 1]


@njit(cache=True)
def add_to_batch(batch, s, i, n):
    b = s[S_BATCH]
    batch[0, b] = i
    batch[1, b] = n
    s[S_BATCH] = b + 1


@njit(cache=True)
def drop_from_batch(batch, s, i):
    """Remove request ``i`` from this step's batch; return the tokens it had been given."""
    nb = s[S_BATCH]
    for b in range(nb):
        if batch[0, b] == i:
            n = batch[1, b]
            for c in range(b, nb - 1):
                batch[0, c] = batch[0, c + 1]
                batch[1, c] = batch[1, c + 1]
            s[S_BATCH] = nb - 1
            return n
    return 0


@njit(cache=True)
def schedule_running(rf, ri, queues, batch, s, cfg_i, budget):
    """Give each running request its next tokens; on KV shortage preempt victims until the
    allocation fits or the request itself is the victim (then stop the pass)."""
    running = queues[Q_RUNNING]
    k = 0
    while k < s[S_N_RUNNING] and budget > 0:
        i = running[k]
        n = min(tokens_to_compute(ri, i, cfg_i), budget)
        need = extra_blocks(ri, i, n, cfg_i[C_BLOCK_SIZE])
        evicted_self = False
        while need > s[S_FREE_BLOCKS]:
            pos = victim_position(rf, running, s[S_N_RUNNING], cfg_i[C_VICTIM])
            victim = running[pos]
            remove_at(running, s[S_N_RUNNING], pos)
            s[S_N_RUNNING] -= 1
            if pos < k:
                k -= 1
                budget += drop_from_batch(batch, s, victim)
            preempt(victim, rf, ri, queues, s, cfg_i)
            if victim == i:
                evicted_self = True
                break
        if evicted_self:
            break
        ri[i, BLOCKS] += need
        s[S_FREE_BLOCKS] -= need
        add_to_batch(batch, s, i, n)
        budget -= n
        k += 1
    return budget


@njit(cache=True)
def _start_running(rf, ri, queues, s, i, now):
    queues[Q_RUNNING, s[S_N_RUNNING]] = i
    s[S_N_RUNNING] += 1
    ri[i, STATUS] = ST_RUNNING
    if rf[i, FIRST_SCHED] != rf[i, FIRST_SCHED]:  # nan: first time scheduled
        rf[i, FIRST_SCHED] = now


@njit(cache=True)
def schedule_swapped(rf, ri, queues, batch, s, cfg_i, budget, now):
    """Swap requests back in (priority order) before any new admission, as vLLM v0."""
    while s[S_N_SWAPPED] > 0 and budget > 0 and s[S_N_RUNNING] < cfg_i[C_MAX_SEQS]:
        i = queues[Q_SWAPPED, 0]
        n = min(tokens_to_compute(ri, i, cfg_i), budget)
        need = blocks_for(ri[i, COMPUTED] + n, cfg_i[C_BLOCK_SIZE])
        if need + cfg_i[C_WATERMARK] > s[S_FREE_BLOCKS]:
            break
        heap_pop(queues[Q_SWAPPED], s, S_N_SWAPPED, rf)
        s[S_SWAP_BLOCKS] += ri[i, HOST_BLOCKS]
        s[S_FREE_HOST] += ri[i, HOST_BLOCKS]
        ri[i, HOST_BLOCKS] = 0
        ri[i, BLOCKS] = need
        s[S_FREE_BLOCKS] -= need
        _start_running(rf, ri, queues, s, i, now)
        add_to_batch(batch, s, i, n)
        budget -= n
    return budget


@njit(cache=True)
def schedule_waiting(rf, ri, queues, batch, s, cfg_i, budget, now):
    """Admit waiting requests in priority order with strict head-of-line blocking."""
    while s[S_N_WAITING] > 0 and budget > 0 and s[S_N_RUNNING] < cfg_i[C_MAX_SEQS]:
        i = queues[Q_WAITING, 0]
        n = tokens_to_compute(ri, i, cfg_i)
        if n > budget:
            if cfg_i[C_CHUNKED] == 0:
                break
            n = budget
        need = extra_blocks(ri, i, n, cfg_i[C_BLOCK_SIZE])
        if need + cfg_i[C_WATERMARK] > s[S_FREE_BLOCKS]:
            break
        heap_pop(queues[Q_WAITING], s, S_N_WAITING, rf)
        ri[i, BLOCKS] += need
        s[S_FREE_BLOCKS] -= need
        _start_running(rf, ri, queues, s, i, now)
        add_to_batch(batch, s, i, n)
        budget -= n
    return budget
