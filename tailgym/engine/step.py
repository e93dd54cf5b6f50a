"""The engine loop: schedule a batch, time it, process its output; sync or async.

One iteration follows vLLM 0.33's engine core (``EngineCore.step`` when synchronous,
``step_with_batch_queue`` with a batch queue of 2 and the ``AsyncScheduler`` when
``C_ASYNC``), with the clock ``t[T_NOW]`` at the last processed output:

1. ``begin_step``: requests that arrived by now join the waiting queue; the policy refreshes;
   an idle engine (no request, no batch in flight) jumps to the next arrival.
2. If the scheduler has requests, ``form_batch`` schedules a batch (``schedule.py``), then
   advances each scheduled request's computed tokens at once (``after_schedule``): async
   scheduling counts the token the batch will sample as a placeholder, so the next batch can be
   formed before this one's output is back. ``enqueue_batch`` hands it to the GPU: it starts
   when the GPU is free and runs ``dt`` seconds (a batch that scheduled nothing takes none).
   Synchronous engines, and async ones whose queue is not full while something can still be
   scheduled, go back to 1 at once (async) or go on to 3 (sync).
3. ``complete_batch``: the oldest queued batch's output is processed when it ends: the clock
   moves to its end, sampled tokens are appended, finished requests free their blocks.

So with async scheduling arrivals, freed blocks and freed seats take effect one batch later.
"""

from ..jit import kernel
from ..policies import dispatch
from .blocks import cache_blocks, fills_a_block, match_tokens, pool_consistent, release
from .cost import batch_features, step_time
from .heap import heap_push, heap_remove, heapify
from .layout import (ARRIVAL, B_NEW, B_REQ, B_SAMPLE, BL_KIND, BL_REQ, BL_STEP,
                     BL_TOKENS, BLK_PREEMPTED, BLK_SCHEDULED, BLOCKS, C_ASYNC, C_BLOCK_SIZE, C_BUDGET, C_CHECK,
                     C_HOST_BLOCKS, C_MAX_SEQS, C_MODE, C_POLICY, C_PREFIX, C_REPRIORITIZE, CF_REFRESH_S,
                     CF_SWAP_S_PER_BLOCK, COMPUTED, DONE, ERR_BLOCKS, ERR_STALL, FIRST_TOKEN,
                     GENERATED, HOST_BLOCKS, IN_FLIGHT, L_BATCH, L_CONTEXT, L_DECODE, L_DT,
                     L_END, L_FREE, L_HELD, L_PREFILL, L_RUNNING, L_START, L_SWAP, L_WAITING,
                     LAST_TOKEN, MATCH_TOKENS, MAX_GAP, MODE_PREEMPTIVE, NEXT_PRIO, PLACEHOLDER, PRIO,
                     PRIO_CHANGES, PROMPT, Q_ARRIVALS, Q_PREEMPTED, Q_RUNNING, Q_SWAPPED, Q_WAITING,
                     S_BATCH, S_BLOG, S_EMPTY_BATCHES, S_EMPTY_RUN, S_ERROR, S_FREE_BLOCKS, S_FREE_HOST, S_N_FINISHED,
                     S_N_ARRIVALS, S_N_PREEMPTED, S_N_RUNNING, S_N_SWAPPED, S_N_WAITING, S_NEXT_ARRIVAL,
                     S_PREEMPTED_NOW, S_Q_N0, S_Q_OLDEST, S_QUEUED, S_SLOT, S_STEPS,
                     S_SWAP_BLOCKS, ST_FINISHED, ST_FUTURE, ST_RUNNING, ST_SWAPPED, ST_WAITING, STALE,
                     STATUS, SUM_GAP, T_BUSY, T_GPU_FREE, T_NEXT_REFRESH, T_NOW, T_Q_END0,
                     T_Q_START0)
from .schedule import (break_stall, long_prefill_limit, schedule_preemptive, schedule_running,
                       schedule_swapped, schedule_waiting)


@kernel
def admit_arrivals(rf, ri, hint, queues, s, cfg_i, params, pstate, kv, now):
    """Move every request of the arrival row that has arrived by ``now`` into the waiting heap
    (with its prefix cache match, which a cache-aware priority reads)."""
    n = s[S_N_ARRIVALS]
    p = s[S_NEXT_ARRIVAL]
    pid = cfg_i[C_POLICY]
    while p < n and rf[queues[Q_ARRIVALS, p], ARRIVAL] <= now:
        k = queues[Q_ARRIVALS, p]
        if ri[k, STATUS] == ST_FUTURE:
            ri[k, STATUS] = ST_WAITING
            if cfg_i[C_PREFIX] == 1:
                ri[k, MATCH_TOKENS] = match_tokens(kv, ri, k, cfg_i[C_BLOCK_SIZE])
            dispatch.on_arrival(pid, params, pstate, rf[k, ARRIVAL])
            rf[k, PRIO] = dispatch.priority(pid, params, pstate, hint, rf, ri, k, now)
            heap_push(queues[Q_WAITING], s, S_N_WAITING, rf, k)
        p += 1
    s[S_NEXT_ARRIVAL] = p


@kernel
def reprioritize_all(rf, ri, hint, queues, s, cfg_i, params, pstate, kv, now):
    """Recompute every queued and running priority (a waiting request's prefix cache match
    first) and restore the heaps."""
    pid = cfg_i[C_POLICY]
    for q, slot in ((Q_WAITING, S_N_WAITING), (Q_SWAPPED, S_N_SWAPPED), (Q_RUNNING, S_N_RUNNING)):
        for p in range(s[slot]):
            i = queues[q, p]
            if q == Q_WAITING and cfg_i[C_PREFIX] == 1:  # waiting: it holds no blocks
                ri[i, MATCH_TOKENS] = match_tokens(kv, ri, i, cfg_i[C_BLOCK_SIZE])
            rf[i, PRIO] = dispatch.priority(pid, params, pstate, hint, rf, ri, i, now)
            ri[i, NEXT_PRIO] = 0  # the knobs behind the threshold may have changed
    heapify(queues[Q_WAITING], s[S_N_WAITING], rf)
    heapify(queues[Q_SWAPPED], s[S_N_SWAPPED], rf)


@kernel
def has_requests(s):
    return s[S_N_WAITING] + s[S_N_SWAPPED] + s[S_N_RUNNING] > 0


@kernel
def tokens_in_flight(s):
    """True if a queued batch scheduled any token (its output will change the state)."""
    q = s[S_QUEUED]
    old = s[S_Q_OLDEST]
    return (q >= 1 and s[S_Q_N0 + old] > 0) or (q == 2 and s[S_Q_N0 + 1 - old] > 0)


@kernel
def after_schedule(ri, batch, s, cfg_i):
    """Advance the computed tokens of every scheduled request (vLLM does it right after
    scheduling); flag the entries that sample a token; async: count it as a placeholder."""
    async_ = cfg_i[C_ASYNC] == 1
    for b in range(s[S_BATCH]):
        i = batch[B_REQ, b]
        n = batch[B_NEW, b]
        ri[i, COMPUTED] += n
        ri[i, IN_FLIGHT] += n
        sample = ri[i, COMPUTED] >= ri[i, PROMPT] + ri[i, GENERATED] + ri[i, PLACEHOLDER]
        batch[B_SAMPLE, b] = 1 if sample else 0
        if sample and async_:
            ri[i, PLACEHOLDER] += 1


@kernel
def form_batch(rf, ri, target, queues, batch, s, cfg_i, cfg_f, coef, kv, now):
    """Schedule one batch into ``batch`` (possibly empty). Sets ``ERR_STALL`` if nothing can
    ever run: an empty batch with no preemption and no token in flight, or more empty batches
    in a row than preemptions could explain (a livelock)."""
    s[S_BATCH] = 0
    s[S_PREEMPTED_NOW] = 0
    s[S_N_PREEMPTED] = 0
    limit = long_prefill_limit(s, cfg_i)
    if cfg_i[C_MODE] == MODE_PREEMPTIVE:
        schedule_preemptive(rf, ri, target, queues, batch, s, cfg_i, cfg_f, coef, kv, limit, now)
        if s[S_BATCH] == 0 and s[S_N_RUNNING] > 0 and not tokens_in_flight(s):
            break_stall(rf, ri, queues, s, cfg_i, cfg_f, coef, kv)
    else:
        budget = schedule_running(rf, ri, target, queues, batch, s, cfg_i, cfg_f, coef, kv,
                                  cfg_i[C_BUDGET], limit)
        if s[S_PREEMPTED_NOW] == 0:
            if s[S_N_SWAPPED] > 0:
                budget = schedule_swapped(rf, ri, queues, batch, s, cfg_i, kv, budget, limit,
                                          now)
            if s[S_N_SWAPPED] == 0 and s[S_N_WAITING] > 0:
                schedule_waiting(rf, ri, queues, batch, s, cfg_i, kv, budget, limit, now)
    stuck = s[S_BATCH] == 0 and s[S_N_PREEMPTED] == 0 and not tokens_in_flight(s)
    s[S_EMPTY_RUN] = s[S_EMPTY_RUN] + 1 if s[S_BATCH] == 0 else 0
    if stuck or s[S_EMPTY_RUN] > cfg_i[C_MAX_SEQS] + 4:
        s[S_ERROR] = ERR_STALL
    after_schedule(ri, batch, s, cfg_i)


@kernel
def enqueue_batch(s, t, cfg_i, dt):
    """Hand the formed batch to the GPU; True if the engine must now wait for the oldest
    queued batch (always when synchronous)."""
    slot = s[S_SLOT]
    nb = s[S_BATCH]
    s[S_Q_N0 + slot] = nb
    start = max(t[T_NOW], t[T_GPU_FREE])
    end = start
    if nb > 0:
        end = start + dt
        t[T_GPU_FREE] = end
        t[T_BUSY] += dt
        s[S_STEPS] += 1
    else:
        s[S_EMPTY_BATCHES] += 1
    t[T_Q_START0 + slot] = start
    t[T_Q_END0 + slot] = end
    if s[S_QUEUED] == 0:
        s[S_Q_OLDEST] = slot
    s[S_QUEUED] += 1
    s[S_SLOT] = 1 - slot
    s[S_SWAP_BLOCKS] = 0
    if cfg_i[C_ASYNC] == 0:
        return True
    return not (s[S_QUEUED] < 2 and (nb > 0 or has_requests(s)))


@kernel
def _remove_queued(rf, ri, queues, s, i):
    """Take preempted request ``i`` (finished by output still in flight) out of its heap."""
    q, slot = (Q_SWAPPED, S_N_SWAPPED) if ri[i, STATUS] == ST_SWAPPED else (Q_WAITING, S_N_WAITING)
    for p in range(s[slot]):
        if queues[q, p] == i:
            heap_remove(queues[q], s, slot, rf, p)
            break
    s[S_FREE_HOST] += ri[i, HOST_BLOCKS]
    ri[i, HOST_BLOCKS] = 0


@kernel
def is_finished(ri, i):
    """Request ``i`` has finished. Reads ``STATUS`` only when it holds no blocks (a finished
    request released them all), so a decode step stays on the row's first cache line."""
    return ri[i, BLOCKS] == 0 and ri[i, STATUS] == ST_FINISHED


@kernel
def complete_batch(rf, ri, target, hint, queues, batches, s, t, cfg_i, params, pstate, kv):
    """Process the output of the oldest queued batch at its end: append each sampled token,
    finish requests that reached their output length and free their blocks. Output of a
    request preempted since it was scheduled is still delivered (vLLM's stale output)."""
    slot = s[S_Q_OLDEST]
    batch = batches[slot]
    end = max(t[T_NOW], t[T_Q_END0 + slot])
    t[T_NOW] = end
    s[S_QUEUED] -= 1
    s[S_Q_OLDEST] = 1 - slot
    pid = cfg_i[C_POLICY]
    reprioritize = cfg_i[C_REPRIORITIZE] == 1
    finished = 0
    for b in range(s[S_Q_N0 + slot]):
        i = batch[B_REQ, b]
        ri[i, IN_FLIGHT] -= batch[B_NEW, b]
        stale = ri[i, STALE] > 0
        if stale:
            ri[i, STALE] -= batch[B_NEW, b]
        if is_finished(ri, i):
            continue
        if batch[B_SAMPLE, b] == 1:
            g = ri[i, GENERATED] + 1
            ri[i, GENERATED] = g
            if g == 1:
                rf[i, FIRST_TOKEN] = end
            else:
                gap = end - rf[i, LAST_TOKEN]
                rf[i, SUM_GAP] += gap
                if gap > rf[i, MAX_GAP]:
                    rf[i, MAX_GAP] = gap
            rf[i, LAST_TOKEN] = end
            if not stale and ri[i, PLACEHOLDER] > 0:
                ri[i, PLACEHOLDER] -= 1
                done = min(ri[i, COMPUTED] - ri[i, IN_FLIGHT], ri[i, PROMPT] + g)
                if fills_a_block(ri, cfg_i, i, done):
                    cache_blocks(kv, ri, cfg_i, i, done)
            if g == target[i]:
                if ri[i, STATUS] == ST_RUNNING:
                    finished += 1
                else:
                    _remove_queued(rf, ri, queues, s, i)
                ri[i, STATUS] = ST_FINISHED
                rf[i, DONE] = end
                release(kv, ri, s, cfg_i, i)
                s[S_N_FINISHED] += 1
                dispatch.on_finish(pid, params, pstate, rf, ri, i, g, end)
                continue
        if reprioritize and not stale and ri[i, GENERATED] >= ri[i, NEXT_PRIO]:
            new = dispatch.priority(pid, params, pstate, hint, rf, ri, i, end)
            ri[i, NEXT_PRIO] = dispatch.next_change(pid, params, ri, i)
            if new != rf[i, PRIO]:
                rf[i, PRIO] = new
                ri[i, PRIO_CHANGES] += 1
    if finished == 0:
        return
    running = queues[Q_RUNNING]
    kept = 0
    for k in range(s[S_N_RUNNING]):
        i = running[k]
        if not is_finished(ri, i):
            running[kept] = i
            kept += 1
    s[S_N_RUNNING] = kept


@kernel
def blocks_conserved(ri, s, cfg_i, kv):
    return (pool_consistent(kv, ri, s, cfg_i)
            and ri[:, HOST_BLOCKS].sum() + s[S_FREE_HOST] == cfg_i[C_HOST_BLOCKS]
            and s[S_FREE_HOST] >= 0)


@kernel
def log_step(log, row, t, ri, queues, s, x, dt, swap_blocks, start):
    log[row, L_START] = start
    log[row, L_END] = start + dt
    log[row, L_DT] = dt
    log[row, L_PREFILL] = x[1]
    log[row, L_DECODE] = x[2]
    log[row, L_CONTEXT] = x[3]
    log[row, L_BATCH] = s[S_BATCH]
    log[row, L_FREE] = s[S_FREE_BLOCKS]
    held = 0
    for k in range(s[S_N_RUNNING]):
        held += ri[queues[Q_RUNNING, k], BLOCKS]
    log[row, L_HELD] = held
    log[row, L_WAITING] = s[S_N_WAITING]
    log[row, L_RUNNING] = s[S_N_RUNNING]
    log[row, L_SWAP] = swap_blocks


@kernel
def log_batch(blog, batch, queues, s):
    """Append the formed batch's entries and its preemptions to the batch log."""
    step = s[S_STEPS]
    r = s[S_BLOG]
    for b in range(s[S_BATCH]):
        blog[r, BL_STEP] = step
        blog[r, BL_KIND] = BLK_SCHEDULED
        blog[r, BL_REQ] = batch[B_REQ, b]
        blog[r, BL_TOKENS] = batch[B_NEW, b]
        r += 1
    for p in range(s[S_N_PREEMPTED]):
        blog[r, BL_STEP] = step
        blog[r, BL_KIND] = BLK_PREEMPTED
        blog[r, BL_REQ] = queues[Q_PREEMPTED, p]
        blog[r, BL_TOKENS] = 0
        r += 1
    s[S_BLOG] = r


PLAN_READY = 0   # schedule a batch if the scheduler has requests, else complete the oldest
PLAN_AGAIN = 1   # the clock jumped to the next arrival: begin again
PLAN_DONE = 2    # every request has finished or was rejected
PLAN_STOP = 3    # the clock reached ``until``
PLAN_ERROR = 4   # see ``s[S_ERROR]``


@kernel
def begin_step(rf, ri, hint, queues, s, t, cfg_i, cfg_f, params, pstate, kv, until):
    """Admit arrivals and refresh the policy before an iteration. ``PLAN_READY`` when one may
    run now, else ``PLAN_STOP``, ``PLAN_DONE`` or ``PLAN_AGAIN`` (an idle engine jumped its
    clock to the next arrival)."""
    now = t[T_NOW]
    if now >= until:
        return PLAN_STOP
    n_req = s[S_N_ARRIVALS]
    nxt = s[S_NEXT_ARRIVAL]
    if nxt < n_req and rf[queues[Q_ARRIVALS, nxt], ARRIVAL] <= now:
        admit_arrivals(rf, ri, hint, queues, s, cfg_i, params, pstate, kv, now)
    if not has_requests(s) and s[S_QUEUED] == 0:
        if s[S_NEXT_ARRIVAL] >= n_req:
            return PLAN_DONE
        first = queues[Q_ARRIVALS, s[S_NEXT_ARRIVAL]]
        t[T_NOW] = min(rf[first, ARRIVAL], until)  # idle: jump ahead
        return PLAN_AGAIN
    if cfg_f[CF_REFRESH_S] > 0.0 and now >= t[T_NEXT_REFRESH]:
        t[T_NEXT_REFRESH] = now + cfg_f[CF_REFRESH_S]
        if dispatch.refresh(cfg_i[C_POLICY], params, pstate):
            reprioritize_all(rf, ri, hint, queues, s, cfg_i, params, pstate, kv, now)
    return PLAN_READY


@kernel
def run_engine(rf, ri, target, hint, queues, batches, s, t, cfg_i, cfg_f, coef, params, pstate,
               kv, log, blog, max_steps, until):
    """Run engine iterations until ``max_steps`` batches were formed, every request is done,
    an error, the clock reached ``until`` (checked between iterations; an idle engine stops at
    ``until``), or the batch log is nearly full. Batches are timed with the step-time model.
    Returns the number of batches formed; fills ``log`` rows when it has any."""
    steps = 0
    room = 2 * cfg_i[C_MAX_SEQS] + 2
    while steps < max_steps:
        status = begin_step(rf, ri, hint, queues, s, t, cfg_i, cfg_f, params, pstate, kv, until)
        if status == PLAN_AGAIN:
            continue
        if status != PLAN_READY:
            break
        if has_requests(s):
            if blog.shape[0] > 0 and s[S_BLOG] + room > blog.shape[0]:
                break
            batch = batches[s[S_SLOT]]
            form_batch(rf, ri, target, queues, batch, s, cfg_i, cfg_f, coef, kv, t[T_NOW])
            if s[S_ERROR] != 0:
                break
            nb = s[S_BATCH]
            x = batch_features(batch, nb)
            swap_blocks = s[S_SWAP_BLOCKS]
            dt = step_time(coef, x) + swap_blocks * cfg_f[CF_SWAP_S_PER_BLOCK] if nb > 0 else 0.0
            if blog.shape[0] > 0:
                log_batch(blog, batch, queues, s)
            if nb > 0 and log.shape[0] > steps:
                log_step(log, steps, t, ri, queues, s, x, dt, swap_blocks,
                         max(t[T_NOW], t[T_GPU_FREE]))
            block = enqueue_batch(s, t, cfg_i, dt)
            if nb > 0:
                steps += 1
            if not block:
                continue
        complete_batch(rf, ri, target, hint, queues, batches, s, t, cfg_i, params, pstate, kv)
        if cfg_i[C_CHECK] == 1 and not blocks_conserved(ri, s, cfg_i, kv):
            s[S_ERROR] = ERR_BLOCKS
            break
    return steps
