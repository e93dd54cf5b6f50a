"""Batch formation for one engine step.

Two schedulers (``cfg_i[C_MODE]``):

* ``MODE_VLLM`` (vLLM v1): running requests first in list order (on KV shortage the policy's
  victim is preempted), then swapped-out ones (swap-in, as v0), then waiting ones in priority
  order with strict head-of-line blocking.
* ``MODE_PREEMPTIVE`` (uniboost spec 3.5-3.6): one priority order over running, swapped and
  waiting requests. A request that cannot get KV blocks or a seat (``max_num_seqs``) may evict
  running requests of lower priority, from the lowest up, if each is worse by more than the
  hysteresis ``delta`` and past its MemGuard guard, and only if together they cover the need;
  otherwise a running request pauses this step (keeping its KV) and a queue's head blocks
  that queue for this step.

Each pass appends ``(request, new tokens)`` to ``batch``.
"""
from numba import njit

from .heap import before, heap_pop
from .kv import blocks_for, extra_blocks, preempt, should_swap
from .layout import (B_CONTEXT, B_DECODE, B_NEW, B_REQ, BLOCKS, C_BLOCK_SIZE, C_BUDGET, C_CHUNKED, C_GUARD_K, C_LONG_PREFILL,
                     C_MAX_SEQS, C_VICTIM, C_WATERMARK, CF_DELTA, COMPUTED, FIRST_SCHED,
                     GENERATED, GUARD, HOST_BLOCKS, PRIO, PROMPT, Q_RUNNING, Q_SWAPPED,
                     Q_WAITING, S_BATCH, S_FREE_BLOCKS, S_FREE_HOST, S_GUARD_OVERRIDES,
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
    """Position in the running list of the request to evict (vLLM mode)."""
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


@njit(cache=True, inline="always")
def add_to_batch(batch, s, ri, i, n):
    b = s[S_BATCH]
    c = ri[i, COMPUTED]
    batch[B_REQ, b] = i
    batch[B_NEW, b] = n
    batch[B_CONTEXT, b] = c
    batch[B_DECODE, b] = 1 if n == 1 and ri[i, GENERATED] > 0 and c + 1 == ri[i, PROMPT] + ri[i, GENERATED] else 0
    s[S_BATCH] = b + 1


@njit(cache=True)
def drop_from_batch(batch, s, i):
    """Remove request ``i`` from this step's batch; return the tokens it had been given."""
    nb = s[S_BATCH]
    for b in range(nb):
        if batch[B_REQ, b] == i:
            n = batch[B_NEW, b]
            for c in range(b, nb - 1):
                batch[:, c] = batch[:, c + 1]
            s[S_BATCH] = nb - 1
            return n
    return 0


@njit(cache=True)
def evict_at(pos, rf, ri, queues, s, cfg_i, cfg_f, coef):
    running = queues[Q_RUNNING]
    victim = running[pos]
    remove_at(running, s[S_N_RUNNING], pos)
    s[S_N_RUNNING] -= 1
    preempt(victim, rf, ri, queues, s, should_swap(ri, victim, s, cfg_i, cfg_f, coef))
    return victim


@njit(cache=True, inline="always")
def start_running(rf, ri, queues, s, cfg_i, i, pos, now):
    """Insert ``i`` at ``pos`` of the running list; set its first-scheduled time and its
    MemGuard guard (the next threshold k, 2k, 4k, ... strictly above its generated tokens)."""
    running = queues[Q_RUNNING]
    for p in range(s[S_N_RUNNING], pos, -1):
        running[p] = running[p - 1]
    running[pos] = i
    s[S_N_RUNNING] += 1
    ri[i, STATUS] = ST_RUNNING
    if rf[i, FIRST_SCHED] != rf[i, FIRST_SCHED]:  # nan: first time scheduled
        rf[i, FIRST_SCHED] = now
    guard = cfg_i[C_GUARD_K]
    if guard > 0:
        while guard <= ri[i, GENERATED]:
            guard *= 2
    ri[i, GUARD] = guard


@njit(cache=True, inline="always")
def take_blocks(ri, s, i, blocks):
    ri[i, BLOCKS] += blocks
    s[S_FREE_BLOCKS] -= blocks


@njit(cache=True)
def swap_back(ri, s, i):
    """Release ``i``'s host blocks (they travel back over the link this step)."""
    s[S_SWAP_BLOCKS] += ri[i, HOST_BLOCKS]
    s[S_FREE_HOST] += ri[i, HOST_BLOCKS]
    ri[i, HOST_BLOCKS] = 0


# ----------------------------------------------------------------------------- vLLM mode

@njit(cache=True, inline="always")
def schedule_running(rf, ri, queues, batch, s, cfg_i, cfg_f, coef, budget):
    """Give each running request its next tokens; on KV shortage preempt victims until the
    allocation fits or the request itself is the victim (then stop the pass)."""
    k = 0
    while k < s[S_N_RUNNING] and budget > 0:
        i = queues[Q_RUNNING, k]
        n = min(tokens_to_compute(ri, i, cfg_i), budget)
        need = extra_blocks(ri, i, n, cfg_i[C_BLOCK_SIZE])
        evicted_self = False
        while need > s[S_FREE_BLOCKS]:
            pos = victim_position(rf, queues[Q_RUNNING], s[S_N_RUNNING], cfg_i[C_VICTIM])
            if pos < k:
                k -= 1
                budget += drop_from_batch(batch, s, queues[Q_RUNNING, pos])
            if evict_at(pos, rf, ri, queues, s, cfg_i, cfg_f, coef) == i:
                evicted_self = True
                break
        if evicted_self:
            break
        take_blocks(ri, s, i, need)
        add_to_batch(batch, s, ri, i, n)
        budget -= n
        k += 1
    return budget


@njit(cache=True, inline="always")
def schedule_swapped(rf, ri, queues, batch, s, cfg_i, budget, now):
    """Swap requests back in (priority order) before any new admission, as vLLM v0."""
    while s[S_N_SWAPPED] > 0 and budget > 0 and s[S_N_RUNNING] < cfg_i[C_MAX_SEQS]:
        i = queues[Q_SWAPPED, 0]
        n = min(tokens_to_compute(ri, i, cfg_i), budget)
        need = blocks_for(ri[i, COMPUTED] + n, cfg_i[C_BLOCK_SIZE])
        if need + cfg_i[C_WATERMARK] > s[S_FREE_BLOCKS]:
            break
        heap_pop(queues[Q_SWAPPED], s, S_N_SWAPPED, rf)
        swap_back(ri, s, i)
        take_blocks(ri, s, i, need)
        start_running(rf, ri, queues, s, cfg_i, i, s[S_N_RUNNING], now)
        add_to_batch(batch, s, ri, i, n)
        budget -= n
    return budget


@njit(cache=True, inline="always")
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
        take_blocks(ri, s, i, need)
        start_running(rf, ri, queues, s, cfg_i, i, s[S_N_RUNNING], now)
        add_to_batch(batch, s, ri, i, n)
        budget -= n
    return budget


# ----------------------------------------------------------------------- preemptive mode

@njit(cache=True)
def sort_running(rf, running, n):
    for a in range(1, n):
        i = running[a]
        b = a - 1
        while b >= 0 and before(rf, i, running[b]):
            running[b + 1] = running[b]
            b -= 1
        running[b + 1] = i


@njit(cache=True, inline="always")
def evictable(rf, ri, v, limit):
    """``v`` may be evicted for a request of priority ``limit - delta``: worse by more than
    the hysteresis margin and past its MemGuard guard."""
    return rf[v, PRIO] > limit and ri[v, GENERATED] >= ri[v, GUARD]


@njit(cache=True)
def _evict_lowest(rf, ri, queues, s, cfg_i, cfg_f, coef, first, limit, blocks, seats, apply):
    """Walk the running list up from its lowest priority to ``first``, counting (and, if
    ``apply``, evicting) evictable requests until ``blocks`` and ``seats`` are covered.
    True if they are."""
    freed = 0
    count = 0
    p = s[S_N_RUNNING] - 1
    while p >= first and (freed < blocks or count < seats):
        v = queues[Q_RUNNING, p]
        if evictable(rf, ri, v, limit):
            freed += ri[v, BLOCKS]
            count += 1
            if apply:
                evict_at(p, rf, ri, queues, s, cfg_i, cfg_f, coef)
        p -= 1
    return freed >= blocks and count >= seats


@njit(cache=True)
def make_room(rf, ri, queues, s, cfg_i, cfg_f, coef, first, r, blocks, seats):
    """Evict running requests at positions >= ``first`` (lowest priority first) to free
    ``blocks`` blocks and ``seats`` seats for ``r``; all or nothing. True on success."""
    limit = rf[r, PRIO] + cfg_f[CF_DELTA]
    if not _evict_lowest(rf, ri, queues, s, cfg_i, cfg_f, coef, first, limit, blocks, seats, False):
        return False
    return _evict_lowest(rf, ri, queues, s, cfg_i, cfg_f, coef, first, limit, blocks, seats, True)


@njit(cache=True, inline="always")
def next_queued(rf, queues, s, waiting_open, swapped_open):
    """The better head of the swapped and waiting heaps (-1 if none), and its queue."""
    best, queue = -1, -1
    if swapped_open and s[S_N_SWAPPED] > 0:
        best, queue = queues[Q_SWAPPED, 0], Q_SWAPPED
    if waiting_open and s[S_N_WAITING] > 0:
        w = queues[Q_WAITING, 0]
        if best < 0 or before(rf, w, best):
            best, queue = w, Q_WAITING
    return best, queue


@njit(cache=True)
def schedule_preemptive(rf, ri, queues, batch, s, cfg_i, cfg_f, coef, now):
    running = queues[Q_RUNNING]
    sort_running(rf, running, s[S_N_RUNNING])
    bs = cfg_i[C_BLOCK_SIZE]
    budget = cfg_i[C_BUDGET]
    waiting_open = True
    swapped_open = True
    k = 0
    stale = True  # the queue heads change only by admissions, closed queues and evictions
    while budget > 0:
        if stale:
            cand, queue = next_queued(rf, queues, s, waiting_open, swapped_open)
            stale = False
        if k < s[S_N_RUNNING] and (cand < 0 or before(rf, running[k], cand)):
            i = running[k]
            n = min(tokens_to_compute(ri, i, cfg_i), budget)
            need = extra_blocks(ri, i, n, bs)
            if need > s[S_FREE_BLOCKS]:
                stale = make_room(rf, ri, queues, s, cfg_i, cfg_f, coef, k + 1, i,
                                  need - s[S_FREE_BLOCKS], 0)
            if need <= s[S_FREE_BLOCKS]:
                take_blocks(ri, s, i, need)
                add_to_batch(batch, s, ri, i, n)
                budget -= n
            k += 1
            continue
        if cand < 0:
            break
        stale = True
        n = tokens_to_compute(ri, cand, cfg_i)
        if n > budget and cfg_i[C_CHUNKED] == 0:
            n = 0
        n = min(n, budget)
        need = blocks_for(ri[cand, COMPUTED] + n, bs) - ri[cand, BLOCKS]
        short = need + cfg_i[C_WATERMARK] - s[S_FREE_BLOCKS]
        seats = 1 if s[S_N_RUNNING] >= cfg_i[C_MAX_SEQS] else 0
        if n == 0 or ((short > 0 or seats > 0) and not make_room(
                rf, ri, queues, s, cfg_i, cfg_f, coef, k, cand, max(short, 0), seats)):
            if queue == Q_WAITING:
                waiting_open = False
            else:
                swapped_open = False
            continue
        heap_pop(queues[queue], s, S_N_WAITING if queue == Q_WAITING else S_N_SWAPPED, rf)
        if queue == Q_SWAPPED:
            swap_back(ri, s, cand)
        take_blocks(ri, s, cand, need)
        start_running(rf, ri, queues, s, cfg_i, cand, k, now)
        add_to_batch(batch, s, ri, cand, n)
        budget -= n
        k += 1


@njit(cache=True)
def break_stall(rf, ri, queues, s, cfg_i, cfg_f, coef):
    """Nothing could run although requests hold KV: evict the lowest-priority running
    request regardless of its guard (counted in ``S_GUARD_OVERRIDES``)."""
    evict_at(s[S_N_RUNNING] - 1, rf, ri, queues, s, cfg_i, cfg_f, coef)
    s[S_GUARD_OVERRIDES] += 1
