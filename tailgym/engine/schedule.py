"""Batch formation for one engine step.

Two schedulers (``cfg_i[C_MODE]``):

* ``MODE_VLLM`` (vLLM 0.33's ``Scheduler.schedule``): running requests first in list order (on
  KV shortage the policy's victim is preempted; a request that preempts itself ends the pass
  in FCFS mode and lets it go on in priority mode), then swapped-out ones (swap-in, as v0), then
  waiting ones in queue order with strict head-of-line blocking, only in a step that preempted
  nobody; a waiting request whose earlier output is still in flight is set aside for the step.
* ``MODE_PREEMPTIVE`` (uniboost spec 3.5-3.6): one priority order over running, swapped and
  waiting requests. A request that cannot get KV blocks or a seat (``max_num_seqs``) may evict
  running requests of lower priority, from the lowest up, if each is worse by more than the
  hysteresis ``delta`` and past its MemGuard guard, and only if together they cover the need;
  otherwise a running request pauses this step (keeping its KV) and a queue's head blocks
  that queue for this step. It always reserves blocks for the whole prompt at admission:
  without, two partly prefilled requests that cannot both finish evict each other forever
  (the stall breaker frees one, the better-ranked other is admitted into its blocks).

Both admit a queued request through ``plan_admission``: a prefix-cache lookup (``blocks``), the
full-prompt reservation (``C_FULL_ISL``), the watermark while something runs. Each pass appends
``(request, new tokens)`` to ``batch``.
"""

from ..jit import kernel
from .blocks import cache_blocks, exclusive_blocks, fills_a_block, grow, lookup, take_hits
from .heap import before, heap_pop, heap_push
from .kv import blocks_for, extra_blocks, preempt, should_swap
from .layout import (B_CONTEXT, B_DECODE, B_NEW, B_REQ, C_BLOCK_SIZE, C_BUDGET, C_CHUNKED,
                     C_FULL_ISL, C_GUARD_K, C_LONG_PREFILL, C_MAX_SEQS, C_MODE, C_PREFIX,
                     C_VICTIM, C_WATERMARK, CACHED_TOKENS, CF_DELTA, COMPUTED,
                     FIRST_SCHED, GENERATED, GUARD, HIT_TOKENS, HOST_BLOCKS, MATCH_TOKENS,
                     MODE_PREEMPTIVE, N_PREEMPT, PLACEHOLDER, PRIO, PROMPT, Q_PREEMPTED,
                     Q_RUNNING, Q_SKIPPED, Q_SWAPPED, Q_WAITING, S_BATCH, S_FREE_BLOCKS,
                     S_FREE_HOST, S_GUARD_OVERRIDES, S_HIT_TOKENS, S_LOOKUP_TOKENS,
                     S_N_PREEMPTED, S_N_RUNNING, S_N_SWAPPED, S_N_WAITING, S_SWAP_BLOCKS,
                     ST_RUNNING, STALE, STATUS, V_LAST)


@kernel
def long_prefill_limit(s, cfg_i):
    """``long_prefill_token_threshold`` for this step: not applied with at most one request
    running or queued (nobody to starve)."""
    if s[S_N_RUNNING] + s[S_N_WAITING] + s[S_N_SWAPPED] > 1:
        return cfg_i[C_LONG_PREFILL]
    return 0


@kernel
def tokens_to_compute(ri, i, limit):
    """Tokens request ``i`` still has to compute (with the token its in-flight step will
    sample), capped by the long-prefill ``limit`` (0 = none)."""
    n = ri[i, PROMPT] + ri[i, GENERATED] + ri[i, PLACEHOLDER] - ri[i, COMPUTED]
    if limit > 0 and n > limit:
        n = limit
    return n


@kernel
def at_max_tokens(ri, target, i):
    """Async scheduling: the step in flight already samples request ``i``'s last token."""
    return (ri[i, PLACEHOLDER] > 0
            and ri[i, COMPUTED] + 2 - ri[i, PLACEHOLDER] >= ri[i, PROMPT] + target[i])


@kernel
def victim_position(rf, running, n_running, rule):
    """Position in the running list of the request to evict (vLLM mode)."""
    if rule == V_LAST:
        return n_running - 1
    worst = 0  # V_LOWEST_PRIORITY: served last under the (priority, arrival, index) order
    for p in range(1, n_running):
        if before(rf, running[worst], running[p]):
            worst = p
    return worst


@kernel
def remove_at(arr, n, pos):
    for p in range(pos, n - 1):
        arr[p] = arr[p + 1]


@kernel
def add_to_batch(batch, s, ri, i, n):
    b = s[S_BATCH]
    c = ri[i, COMPUTED]
    batch[B_REQ, b] = i
    batch[B_NEW, b] = n
    batch[B_CONTEXT, b] = c
    known = ri[i, PROMPT] + ri[i, GENERATED] + ri[i, PLACEHOLDER]
    batch[B_DECODE, b] = 1 if n == 1 and known > ri[i, PROMPT] and c + 1 == known else 0
    s[S_BATCH] = b + 1


@kernel
def drop_from_batch(batch, s, i):
    """Remove request ``i`` from this step's batch; return the tokens it had been given."""
    nb = s[S_BATCH]
    for b in range(nb):
        if batch[B_REQ, b] == i:
            n = batch[B_NEW, b]
            for c in range(b, nb - 1):
                for r in range(batch.shape[0]):
                    batch[r, c] = batch[r, c + 1]
            s[S_BATCH] = nb - 1
            return n
    return 0


@kernel
def evict_at(pos, rf, ri, queues, s, cfg_i, cfg_f, coef, kv):
    running = queues[Q_RUNNING]
    victim = running[pos]
    remove_at(running, s[S_N_RUNNING], pos)
    s[S_N_RUNNING] -= 1
    preempt(victim, rf, ri, queues, s, cfg_i, kv, should_swap(ri, victim, s, cfg_i, cfg_f, coef))
    queues[Q_PREEMPTED, s[S_N_PREEMPTED]] = victim
    s[S_N_PREEMPTED] += 1
    return victim


@kernel
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


@kernel
def extension(ri, cfg_i, i, n):
    """What running request ``i`` needs for ``n`` more tokens: new blocks, and whether full
    blocks become registrable in the prefix cache (most decode steps need neither, so
    ``extend`` is called only when one holds)."""
    need = extra_blocks(ri, i, n, cfg_i[C_BLOCK_SIZE])
    known = min(ri[i, COMPUTED] + n, ri[i, PROMPT] + ri[i, GENERATED])
    register = fills_a_block(ri, cfg_i, i, known)
    return need, register


@kernel
def extend(kv, ri, s, cfg_i, i, n, need):
    """Allocate the ``need`` blocks running request ``i`` lacks for ``n`` more tokens and
    register the full blocks whose tokens are known (vLLM caches them at allocation)."""
    grow(kv, ri, s, cfg_i, i, need)
    cache_blocks(kv, ri, cfg_i, i, min(ri[i, COMPUTED] + n, ri[i, PROMPT] + ri[i, GENERATED]))


@kernel
def swap_back(ri, s, i):
    """Release ``i``'s host blocks (they travel back over the link this step)."""
    s[S_SWAP_BLOCKS] += ri[i, HOST_BLOCKS]
    s[S_FREE_HOST] += ri[i, HOST_BLOCKS]
    ri[i, HOST_BLOCKS] = 0


@kernel
def plan_admission(kv, ri, s, cfg_i, i, budget, limit):
    """Admitting waiting request ``i`` now: its new tokens (0 if it may not be chunked to the
    budget), prefix-cache hit blocks, and the free blocks it lacks (0 if it fits): blocks for
    this chunk, and with ``C_FULL_ISL`` (always in preemptive mode) for its whole known
    sequence, plus the watermark while something runs; hit blocks taken from the free queue
    count against free space."""
    bs = cfg_i[C_BLOCK_SIZE]
    num_tokens = ri[i, PROMPT] + ri[i, GENERATED]
    hits, evictable = 0, 0
    if cfg_i[C_PREFIX] == 1 and ri[i, COMPUTED] == 0:
        hits, evictable = lookup(kv, ri, i, num_tokens, bs)
    computed = ri[i, COMPUTED] + hits * bs
    n = num_tokens - computed
    if limit > 0 and n > limit:
        n = limit
    if n > budget:
        if cfg_i[C_CHUNKED] == 0:
            return 0, hits, 0
        n = budget
    reserve = cfg_i[C_WATERMARK] if s[S_N_RUNNING] > 0 else 0
    need = blocks_for(computed + n, bs) - hits
    if cfg_i[C_FULL_ISL] == 1 or cfg_i[C_MODE] == MODE_PREEMPTIVE:
        need = max(need, blocks_for(num_tokens, bs) - hits)
    return n, hits, max(need + evictable + reserve - s[S_FREE_BLOCKS], 0)


@kernel
def plan_swap_in(ri, s, cfg_i, i, budget, limit):
    """Swapping request ``i`` back in now: its new tokens, the blocks it needs for them, and
    the free blocks it lacks (0 if it fits; the watermark counts only while something runs)."""
    n = min(tokens_to_compute(ri, i, limit), budget)
    need = blocks_for(ri[i, COMPUTED] + n, cfg_i[C_BLOCK_SIZE])
    reserve = cfg_i[C_WATERMARK] if s[S_N_RUNNING] > 0 else 0
    return n, need, max(need + reserve - s[S_FREE_BLOCKS], 0)


@kernel
def admit(kv, rf, ri, queues, batch, s, cfg_i, i, n, hits, pos, now):
    """Admit planned waiting request ``i`` at running position ``pos`` with ``n`` new tokens
    after its ``hits`` cached blocks."""
    hit_tokens = hits * cfg_i[C_BLOCK_SIZE]
    if cfg_i[C_PREFIX] == 1 and ri[i, COMPUTED] == 0:
        take_hits(kv, ri, s, i, hits)
        ri[i, COMPUTED] = hit_tokens
        ri[i, HIT_TOKENS] += hit_tokens
        ri[i, MATCH_TOKENS] = hit_tokens
        if ri[i, N_PREEMPT] == 0:
            ri[i, CACHED_TOKENS] = hit_tokens
        s[S_HIT_TOKENS] += hit_tokens
        s[S_LOOKUP_TOKENS] += ri[i, PROMPT] + ri[i, GENERATED]
    start_running(rf, ri, queues, s, cfg_i, i, pos, now)
    extend(kv, ri, s, cfg_i, i, n, extra_blocks(ri, i, n, cfg_i[C_BLOCK_SIZE]))
    add_to_batch(batch, s, ri, i, n)


@kernel
def put_back(rf, queues, s, skipped):
    for p in range(skipped):
        heap_push(queues[Q_WAITING], s, S_N_WAITING, rf, queues[Q_SKIPPED, p])


# ----------------------------------------------------------------------------- vLLM mode

@kernel
def schedule_running(rf, ri, target, queues, batch, s, cfg_i, cfg_f, coef, kv, budget, limit):
    """Give each running request its next tokens; on KV shortage preempt victims until the
    allocation fits or the request itself is the victim. Async scheduling skips a request
    whose in-flight step samples its last token."""
    k = 0
    fcfs = cfg_i[C_VICTIM] == V_LAST
    while k < s[S_N_RUNNING] and budget > 0:
        i = queues[Q_RUNNING, k]
        if at_max_tokens(ri, target, i):
            k += 1
            continue
        n = min(tokens_to_compute(ri, i, limit), budget)
        need = extra_blocks(ri, i, n, cfg_i[C_BLOCK_SIZE])
        evicted_self = False
        while need > s[S_FREE_BLOCKS]:
            pos = victim_position(rf, queues[Q_RUNNING], s[S_N_RUNNING], cfg_i[C_VICTIM])
            if pos < k:
                k -= 1
                budget += drop_from_batch(batch, s, queues[Q_RUNNING, pos])
            if evict_at(pos, rf, ri, queues, s, cfg_i, cfg_f, coef, kv) == i:
                evicted_self = True
                break
        if evicted_self:
            if fcfs:
                break
            continue  # priority mode: the requests after it may still fit
        need, register = extension(ri, cfg_i, i, n)
        if need > 0 or register:
            extend(kv, ri, s, cfg_i, i, n, need)
        add_to_batch(batch, s, ri, i, n)
        budget -= n
        k += 1
    return budget


@kernel
def schedule_swapped(rf, ri, queues, batch, s, cfg_i, kv, budget, limit, now):
    """Swap requests back in (priority order) before any new admission, as vLLM v0."""
    while s[S_N_SWAPPED] > 0 and budget > 0 and s[S_N_RUNNING] < cfg_i[C_MAX_SEQS]:
        i = queues[Q_SWAPPED, 0]
        n, need, short = plan_swap_in(ri, s, cfg_i, i, budget, limit)
        if short > 0:
            break
        heap_pop(queues[Q_SWAPPED], s, S_N_SWAPPED, rf)
        swap_back(ri, s, i)
        start_running(rf, ri, queues, s, cfg_i, i, s[S_N_RUNNING], now)
        extend(kv, ri, s, cfg_i, i, n, need)
        add_to_batch(batch, s, ri, i, n)
        budget -= n
    return budget


@kernel
def schedule_waiting(rf, ri, queues, batch, s, cfg_i, kv, budget, limit, now):
    """Admit waiting requests in queue order with strict head-of-line blocking; a request
    with output still in flight is set aside for this step and put back in front."""
    skipped = 0
    while s[S_N_WAITING] > 0 and budget > 0 and s[S_N_RUNNING] < cfg_i[C_MAX_SEQS]:
        i = queues[Q_WAITING, 0]
        if ri[i, STALE] > 0:
            queues[Q_SKIPPED, skipped] = heap_pop(queues[Q_WAITING], s, S_N_WAITING, rf)
            skipped += 1
            continue
        n, hits, short = plan_admission(kv, ri, s, cfg_i, i, budget, limit)
        if n == 0 or short > 0:
            break
        heap_pop(queues[Q_WAITING], s, S_N_WAITING, rf)
        admit(kv, rf, ri, queues, batch, s, cfg_i, i, n, hits, s[S_N_RUNNING], now)
        budget -= n
    put_back(rf, queues, s, skipped)
    return budget


# ----------------------------------------------------------------------- preemptive mode

@kernel
def sort_running(rf, running, n):
    for a in range(1, n):
        i = running[a]
        b = a - 1
        while b >= 0 and before(rf, i, running[b]):
            running[b + 1] = running[b]
            b -= 1
        running[b + 1] = i


@kernel
def evictable(rf, ri, v, limit):
    """``v`` may be evicted for a request of priority ``limit - delta``: worse by more than
    the hysteresis margin and past its MemGuard guard."""
    return rf[v, PRIO] > limit and ri[v, GENERATED] >= ri[v, GUARD]


@kernel
def _evict_lowest(rf, ri, queues, s, cfg_i, cfg_f, coef, kv, first, limit, blocks, seats,
                  apply):
    """Walk the running list up from its lowest priority to ``first``, counting (and, if
    ``apply``, evicting) evictable requests until ``blocks`` and ``seats`` are covered.
    True if they are."""
    freed = 0
    count = 0
    p = s[S_N_RUNNING] - 1
    while p >= first and (freed < blocks or count < seats):
        v = queues[Q_RUNNING, p]
        if evictable(rf, ri, v, limit):
            freed += exclusive_blocks(kv, ri, cfg_i, v)
            count += 1
            if apply:
                evict_at(p, rf, ri, queues, s, cfg_i, cfg_f, coef, kv)
        p -= 1
    return freed >= blocks and count >= seats


@kernel
def make_room(rf, ri, queues, s, cfg_i, cfg_f, coef, kv, first, r, blocks):
    """Evict running requests at positions >= ``first`` (lowest priority first) to free
    ``blocks`` blocks for ``r``, and a seat if ``r`` is queued and every seat is taken; all
    or nothing (a counting pass first). True on success."""
    limit = rf[r, PRIO] + cfg_f[CF_DELTA]
    seats = 1 if ri[r, STATUS] != ST_RUNNING and s[S_N_RUNNING] >= cfg_i[C_MAX_SEQS] else 0
    for apply in (False, True):  # a loop, not two calls: numba would compile each literal
        if not _evict_lowest(rf, ri, queues, s, cfg_i, cfg_f, coef, kv, first, limit, blocks,
                             seats, apply):
            return False
    return True


@kernel
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


@kernel
def _plan_queued(kv, ri, s, cfg_i, cand, queue, budget, limit):
    """New tokens, hit blocks and blocks short of admitting queue head ``cand`` now."""
    if queue == Q_WAITING:
        return plan_admission(kv, ri, s, cfg_i, cand, budget, limit)
    n, _, short = plan_swap_in(ri, s, cfg_i, cand, budget, limit)
    return n, 0, short


@kernel
def schedule_preemptive(rf, ri, target, queues, batch, s, cfg_i, cfg_f, coef, kv, limit, now):
    running = queues[Q_RUNNING]
    sort_running(rf, running, s[S_N_RUNNING])
    bs = cfg_i[C_BLOCK_SIZE]
    budget = cfg_i[C_BUDGET]
    waiting_open = True
    swapped_open = True
    skipped = 0
    k = 0
    stale = True  # the queue heads change only by admissions, closed queues and evictions
    while budget > 0:
        if stale:
            cand, queue = next_queued(rf, queues, s, waiting_open, swapped_open)
            stale = False
        if k < s[S_N_RUNNING] and (cand < 0 or before(rf, running[k], cand)):
            i = running[k]
            k += 1
            if at_max_tokens(ri, target, i):
                continue
            n = min(tokens_to_compute(ri, i, limit), budget)
            need = extra_blocks(ri, i, n, bs)
            if need > s[S_FREE_BLOCKS]:
                stale = make_room(rf, ri, queues, s, cfg_i, cfg_f, coef, kv, k, i,
                                  need - s[S_FREE_BLOCKS])
            if need <= s[S_FREE_BLOCKS]:
                need, register = extension(ri, cfg_i, i, n)
                if need > 0 or register:
                    extend(kv, ri, s, cfg_i, i, n, need)
                add_to_batch(batch, s, ri, i, n)
                budget -= n
            continue
        if cand < 0:
            break
        stale = True
        if queue == Q_WAITING and ri[cand, STALE] > 0:
            queues[Q_SKIPPED, skipped] = heap_pop(queues[Q_WAITING], s, S_N_WAITING, rf)
            skipped += 1
            continue
        n, hits, short = _plan_queued(kv, ri, s, cfg_i, cand, queue, budget, limit)
        seats = 1 if s[S_N_RUNNING] >= cfg_i[C_MAX_SEQS] else 0
        if n > 0 and (short > 0 or seats > 0) and make_room(
                rf, ri, queues, s, cfg_i, cfg_f, coef, kv, k, cand, short):
            n, hits, short = _plan_queued(kv, ri, s, cfg_i, cand, queue, budget, limit)
            seats = 0
        if n == 0 or short > 0 or seats > 0:
            if queue == Q_WAITING:
                waiting_open = False
            else:
                swapped_open = False
            continue
        if queue == Q_WAITING:
            heap_pop(queues[Q_WAITING], s, S_N_WAITING, rf)
            admit(kv, rf, ri, queues, batch, s, cfg_i, cand, n, hits, k, now)
        else:
            heap_pop(queues[Q_SWAPPED], s, S_N_SWAPPED, rf)
            swap_back(ri, s, cand)
            start_running(rf, ri, queues, s, cfg_i, cand, k, now)
            extend(kv, ri, s, cfg_i, cand, n, blocks_for(ri[cand, COMPUTED] + n, bs))
            add_to_batch(batch, s, ri, cand, n)
        budget -= n
        k += 1
    put_back(rf, queues, s, skipped)


@kernel
def break_stall(rf, ri, queues, s, cfg_i, cfg_f, coef, kv):
    """Nothing could run although requests hold KV: evict the lowest-priority running
    request regardless of its guard (counted in ``S_GUARD_OVERRIDES``)."""
    evict_at(s[S_N_RUNNING] - 1, rf, ri, queues, s, cfg_i, cfg_f, coef, kv)
    s[S_GUARD_OVERRIDES] += 1

