"""Decision-event stepping: the vLLM scheduler with its choices handed to an agent.

``advance`` runs the engine (``MODE_VLLM`` semantics, see ``schedule``, with the same async
pipeline, prefix caching and admission rules as the fast path in ``step``) until one of its
choices is pending, with the clock frozen:

* **evict** (``K_EVICT``): running request ``running[k]`` needs KV blocks the cache does not
  have. The agent picks the running request to preempt (it may be ``running[k]`` itself,
  which ends the running pass in FCFS mode and skips to the next request in priority mode, as
  in vLLM; one already scheduled this step leaves the batch).
* **swap or recompute** (``K_SWAP``, swap mode only, when the victim fits the host space):
  action 0 recomputes, action 1 swaps.
* **admit** (``K_ADMIT``, only in a step without preemption, while budget and seats are
  left): the agent picks a swapped or waiting request to receive its next share of the
  step's token budget, or the no-op, which closes the batch (with ``D_WORK_CONSERVING`` only
  once nothing more can be admitted). Waiting requests whose output is still in flight (async
  scheduling) are not offered.

With async scheduling each decision is about the batch being formed while the previous one is
still in flight: the observation shows the state the scheduler sees then (tokens scheduled in
flight counted as computed). Candidates fill the ``slots`` array in the order of the engine's
policy: for eviction its victim order (the vLLM victim first), for admission the swapped heap
then the waiting heap, best first. Always choosing slot 0 where it is allowed (the no-op
otherwise; swap where ``should_swap`` says so) reproduces the fast path exactly.

Rewards accumulate in ``df``: ``DF_AREA`` integrates the number of arrived, unfinished
requests over time (an episode sums to the total TTLT); ``DF_MISSES`` counts finishes with
TTLT above ``DF_SLO``.
"""
import numpy as np

from ..jit import allocating, kernel
from .blocks import match_tokens
from .cost import batch_features, step_time
from .heap import before, heap_head, heap_pop, heap_remove
from .kv import blocks_for, extra_blocks, preempt
from .layout import (ARRIVAL, B_NEW, B_REQ, BLOCKS, C_BLOCK_SIZE, C_BUDGET, C_GPU_BLOCKS,
                     C_HOST_BLOCKS, C_MAX_SEQS, C_PREFIX, C_VICTIM, CACHED_TOKENS,
                     CF_SWAP_S_PER_BLOCK, COMPUTED, DONE, ERR_STALL, GENERATED, N_PREEMPT,
                     PROMPT, Q_PREEMPTED, Q_RUNNING, Q_SKIPPED, Q_SWAPPED,
                     Q_WAITING, S_BATCH, S_ERROR, S_FREE_BLOCKS, S_FREE_HOST, S_N_PREEMPTED,
                     S_N_RUNNING, S_N_SWAPPED, S_N_WAITING, S_NEXT_ARRIVAL,
                     S_PREEMPT_RECOMPUTE, S_PREEMPT_SWAP, S_PREEMPTED_NOW, S_Q_OLDEST,
                     S_Q_N0, S_SLOT, S_SWAP_BLOCKS, ST_FINISHED, ST_REJECTED, ST_RUNNING,
                     ST_SWAPPED, ST_WAITING, STALE, STATUS, T_NOW, T_Q_END0, V_LAST)
from .schedule import (add_to_batch, admit, at_max_tokens, drop_from_batch, extend, extension,
                       long_prefill_limit, plan_admission, plan_swap_in, put_back, remove_at,
                       start_running, swap_back, tokens_to_compute)
from .step import (PLAN_AGAIN, PLAN_DONE, PLAN_STOP, after_schedule, begin_step,
                   complete_batch, enqueue_batch, has_requests, tokens_in_flight)

# --- decision kinds (d[D_KIND]) ---
K_NONE = 0
K_ADMIT = 1
K_EVICT = 2
K_SWAP = 3
SWAP_RECOMPUTE = 0  # actions of a K_SWAP decision
SWAP_SWAP = 1

# --- advance() results ---
ADV_DECISION = 0   # a decision is pending (d[D_KIND])
ADV_READY = 1      # untimed mode: the batch is formed; time it, then call ``enqueue``
ADV_DONE = 2       # every request finished or was rejected
ADV_STOP = 3       # the clock reached ``until``
ADV_ERROR = 4      # s[S_ERROR]

# --- scheduler phases (d[D_PHASE]) ---
PH_BEGIN = 0
PH_RUNNING = 1
PH_ADMIT = 2
PH_EXEC = 3
PH_COMPLETE = 4

# --- int state d ---
D_KIND = 0
D_PHASE = 1
D_K = 2            # position in the running pass
D_BUDGET = 3       # token budget left in this step
D_CURRENT = 4      # running request waiting for room (-1 if none)
D_N = 5            # its new tokens, fixed when it first asked
D_VICTIM = 6       # victim of a pending K_SWAP decision
D_NSLOTS = 7       # valid slots
D_RECENT = 8       # completions recorded in the ``recent`` ring
D_WORK_CONSERVING = 9  # 1: no no-op while a request can be admitted
D_LIMIT = 10       # long-prefill limit of this step
D_SKIPPED = 11     # waiting requests set aside for this step (output still in flight)
D_COLS = 12

# --- float state df ---
DF_AREA = 0        # request-seconds in the system since the caller last reset it
DF_MISSES = 1      # finishes with TTLT above DF_SLO since the caller last reset it
DF_SLO = 2
DF_COLS = 3

# --- observation layout ---
SLOT_FEATURES = ("age_s", "prompt_tokens", "generated_tokens", "tokens_to_compute",
                 "decoding", "kv_blocks", "preemptions", "swapped", "running",
                 "scheduled_tokens", "blocks_needed", "cached_prefix_tokens")
GLOBAL_FEATURES = ("decision_admit", "decision_evict", "decision_swap", "kv_util",
                   "host_util", "budget_left", "seats_left", "waiting", "swapped", "running",
                   "hidden", "batch", "arrival_rate", "recent_output_p50",
                   "recent_output_p90", "recent_output_p99", "preemptions")
RECENT = 64        # completed output lengths kept for the quantile features
RATE_WINDOW = 64   # arrivals behind the arrival-rate estimate


def new_decision_state(slots: int, n_requests: int, slo_s: float, work_conserving=False):
    """``d``, ``df``, slots, mask (int8, K+1), recent ring and scratch for ``advance``."""
    d = np.zeros(D_COLS, dtype=np.int64)
    d[D_CURRENT] = -1
    d[D_WORK_CONSERVING] = int(work_conserving)
    df = np.zeros(DF_COLS)
    df[DF_SLO] = slo_s
    return (d, df, np.full(slots, -1, dtype=np.int64), np.zeros(slots + 1, dtype=np.int8),
            np.zeros(RECENT), np.zeros(max(n_requests, slots + 1), dtype=np.int64))


@kernel
def _admission(kv, ri, i, s, cfg_i, d):
    """New tokens and prefix hit blocks if queued request ``i`` were admitted now; 0 tokens
    if it may not be (no chunking and too long for the budget, or not enough free blocks)."""
    budget = d[D_BUDGET]
    if ri[i, STATUS] == ST_SWAPPED:
        n, _, short = plan_swap_in(ri, s, cfg_i, i, budget, d[D_LIMIT])
        return (n, 0) if short == 0 else (0, 0)
    n, hits, short = plan_admission(kv, ri, s, cfg_i, i, budget, d[D_LIMIT])
    return (n, hits) if short == 0 else (0, 0)


@kernel
def _offer_admission(rf, ri, queues, batch, s, cfg_i, kv, d, slots, mask, scratch):
    """Fill the slots with queued requests (swapped heap, then waiting heap, without those
    whose output is still in flight); True if any may be admitted now."""
    k = slots.shape[0]
    mask[:] = 0
    if d[D_BUDGET] <= 0 or s[S_N_RUNNING] >= cfg_i[C_MAX_SEQS]:
        return False
    while s[S_N_WAITING] > 0 and ri[queues[Q_WAITING, 0], STALE] > 0:
        queues[Q_SKIPPED, d[D_SKIPPED]] = heap_pop(queues[Q_WAITING], s, S_N_WAITING, rf)
        d[D_SKIPPED] += 1
    n = heap_head(queues[Q_SWAPPED], s[S_N_SWAPPED], rf, slots, k, scratch)
    n += heap_head(queues[Q_WAITING], s[S_N_WAITING], rf, slots[n:], k - n, scratch)
    kept = 0
    for j in range(n):
        if ri[slots[j], STALE] == 0:
            slots[kept] = slots[j]
            kept += 1
    slots[kept:] = -1
    d[D_NSLOTS] = kept
    any_ok = False
    for j in range(kept):
        if _admission(kv, ri, slots[j], s, cfg_i, d)[0] > 0:
            mask[j] = 1
            any_ok = True
    mask[k] = 1 if s[S_BATCH] > 0 and d[D_WORK_CONSERVING] == 0 else 0
    return any_ok


@kernel
def _offer_eviction(rf, ri, queues, s, cfg_i, d, slots, mask, scratch):
    """Fill the slots with running requests, the policy's victim first."""
    n = s[S_N_RUNNING]
    running = queues[Q_RUNNING]
    order = scratch[:n]
    for p in range(n):
        order[p] = running[n - 1 - p]  # most recently admitted first (V_LAST)
    if cfg_i[C_VICTIM] != V_LAST:      # lowest priority first
        for a in range(1, n):
            i = order[a]
            b = a - 1
            while b >= 0 and before(rf, order[b], i):
                order[b + 1] = order[b]
                b -= 1
            order[b + 1] = i
    k = min(n, slots.shape[0])
    for p in range(k):
        slots[p] = order[p]
    slots[k:] = -1
    d[D_NSLOTS] = k
    mask[:] = 0
    mask[:k] = 1


@kernel
def _running_pass(ri, target, queues, batch, s, cfg_i, kv, d):
    """Continue the running pass; True when ``running[k]`` waits for an eviction."""
    running = queues[Q_RUNNING]
    bs = cfg_i[C_BLOCK_SIZE]
    while d[D_K] < s[S_N_RUNNING] and d[D_BUDGET] > 0:
        i = running[d[D_K]]
        if d[D_CURRENT] != i and at_max_tokens(ri, target, i):
            d[D_K] += 1
            continue
        if d[D_CURRENT] == i:
            n = d[D_N]
        else:
            n = min(tokens_to_compute(ri, i, d[D_LIMIT]), d[D_BUDGET])
        need = extra_blocks(ri, i, n, bs)
        if need > s[S_FREE_BLOCKS]:
            d[D_CURRENT] = i
            d[D_N] = n
            return True
        d[D_CURRENT] = -1
        need, register = extension(ri, cfg_i, i, n)
        if need > 0 or register:
            extend(kv, ri, s, cfg_i, i, n, need)
        add_to_batch(batch, s, ri, i, n)
        d[D_BUDGET] -= n
        d[D_K] += 1
    return False


@kernel
def _evict(v, swap, rf, ri, queues, batch, s, cfg_i, kv, d):
    """Preempt running request ``v``; evicting the request that asked for room ends the
    running pass in FCFS mode, and moves on to the next request in priority mode."""
    running = queues[Q_RUNNING]
    pos = 0
    while running[pos] != v:
        pos += 1
    if pos < d[D_K]:
        d[D_K] -= 1
        d[D_BUDGET] += drop_from_batch(batch, s, v)
    remove_at(running, s[S_N_RUNNING], pos)
    s[S_N_RUNNING] -= 1
    preempt(v, rf, ri, queues, s, cfg_i, kv, swap)
    queues[Q_PREEMPTED, s[S_N_PREEMPTED]] = v
    s[S_N_PREEMPTED] += 1
    if v == d[D_CURRENT]:
        d[D_CURRENT] = -1
        if cfg_i[C_VICTIM] == V_LAST:
            d[D_PHASE] = PH_EXEC


@kernel
def _admit(i, rf, ri, queues, batch, s, cfg_i, kv, d, now):
    n, hits = _admission(kv, ri, i, s, cfg_i, d)
    q = Q_SWAPPED if ri[i, STATUS] == ST_SWAPPED else Q_WAITING
    slot = S_N_SWAPPED if q == Q_SWAPPED else S_N_WAITING
    heap = queues[q]
    pos = 0
    while heap[pos] != i:
        pos += 1
    heap_remove(heap, s, slot, rf, pos)
    if q == Q_SWAPPED:
        swap_back(ri, s, i)
        start_running(rf, ri, queues, s, cfg_i, i, s[S_N_RUNNING], now)
        extend(kv, ri, s, cfg_i, i, n, blocks_for(ri[i, COMPUTED] + n, cfg_i[C_BLOCK_SIZE]))
        add_to_batch(batch, s, ri, i, n)
    else:
        admit(kv, rf, ri, queues, batch, s, cfg_i, i, n, hits, s[S_N_RUNNING], now)
    d[D_BUDGET] -= n


@kernel
def _apply(action, rf, ri, queues, batch, s, t, cfg_i, kv, d, slots, mask):
    """Carry out ``action`` (already checked against ``mask``); True if it opens a
    follow-up decision (swap or recompute)."""
    kind = d[D_KIND]
    d[D_KIND] = K_NONE
    if kind == K_ADMIT:
        if action == slots.shape[0]:
            d[D_PHASE] = PH_EXEC
        else:
            _admit(slots[action], rf, ri, queues, batch, s, cfg_i, kv, d, t[T_NOW])
        return False
    if kind == K_EVICT:
        v = slots[action]
        if cfg_i[C_HOST_BLOCKS] > 0 and ri[v, BLOCKS] <= s[S_FREE_HOST]:
            d[D_VICTIM] = v
            d[D_KIND] = K_SWAP
            mask[:] = 0
            mask[SWAP_RECOMPUTE] = 1
            mask[SWAP_SWAP] = 1
            return True
        swap = False
    else:  # K_SWAP
        v, swap = d[D_VICTIM], action == SWAP_SWAP
    _evict(v, swap, rf, ri, queues, batch, s, cfg_i, kv, d)  # one call: numba compiles each literal
    return False


@kernel
def enqueue(s, t, cfg_i, d, dt):
    """Hand the formed batch to the GPU for ``dt`` seconds (see ``step.enqueue_batch``)."""
    d[D_PHASE] = PH_COMPLETE if enqueue_batch(s, t, cfg_i, dt) else PH_BEGIN


@kernel
def _complete(rf, ri, target, hint, queues, batches, s, t, cfg_i, params, pstate, kv, d, df,
              recent):
    """Process the oldest queued batch's output, accounting the rewards."""
    slot = s[S_Q_OLDEST]
    df[DF_AREA] += ((s[S_N_WAITING] + s[S_N_SWAPPED] + s[S_N_RUNNING])
                    * max(t[T_Q_END0 + slot] - t[T_NOW], 0.0))
    complete_batch(rf, ri, target, hint, queues, batches, s, t, cfg_i, params, pstate, kv)
    batch = batches[slot]
    for b in range(s[S_Q_N0 + slot]):
        i = batch[B_REQ, b]
        if ri[i, STATUS] == ST_FINISHED and rf[i, DONE] == t[T_NOW]:
            if rf[i, DONE] - rf[i, ARRIVAL] > df[DF_SLO]:
                df[DF_MISSES] += 1.0
            recent[d[D_RECENT] % recent.shape[0]] = ri[i, GENERATED]
            d[D_RECENT] += 1
    d[D_PHASE] = PH_BEGIN


@kernel
def advance(rf, ri, target, hint, queues, batches, s, t, cfg_i, cfg_f, coef, params, pstate,
            kv, d, df, slots, mask, recent, scratch, action, timed, until):
    """Apply ``action`` to the pending decision (if any), then run the engine to the next
    decision (``ADV_*`` result). ``timed`` = 0 stops at each formed batch (``ADV_READY``)
    for an outside clock (the hardware-in-the-loop engine), which then calls ``enqueue``."""
    batch = batches[s[S_SLOT]]
    if d[D_KIND] != K_NONE and _apply(action, rf, ri, queues, batch, s, t, cfg_i, kv, d,
                                      slots, mask):
        return ADV_DECISION
    while True:
        phase = d[D_PHASE]
        batch = batches[s[S_SLOT]]
        if phase == PH_BEGIN:
            first = s[S_NEXT_ARRIVAL]
            status = begin_step(rf, ri, hint, queues, s, t, cfg_i, cfg_f, params, pstate, kv, until)
            for i in range(first, s[S_NEXT_ARRIVAL]):  # in the system since arrival
                if ri[i, STATUS] != ST_REJECTED:
                    df[DF_AREA] += t[T_NOW] - rf[i, ARRIVAL]
            if status == PLAN_AGAIN:
                continue
            if status == PLAN_DONE:
                return ADV_DONE
            if status == PLAN_STOP:
                return ADV_STOP
            if not has_requests(s):
                d[D_PHASE] = PH_COMPLETE
                continue
            s[S_BATCH] = 0
            s[S_PREEMPTED_NOW] = 0
            s[S_N_PREEMPTED] = 0
            d[D_K] = 0
            d[D_CURRENT] = -1
            d[D_BUDGET] = cfg_i[C_BUDGET]
            d[D_LIMIT] = long_prefill_limit(s, cfg_i)
            d[D_SKIPPED] = 0
            d[D_PHASE] = PH_RUNNING
        elif phase == PH_RUNNING:
            if _running_pass(ri, target, queues, batch, s, cfg_i, kv, d):
                _offer_eviction(rf, ri, queues, s, cfg_i, d, slots, mask, scratch)
                d[D_KIND] = K_EVICT
                return ADV_DECISION
            d[D_PHASE] = PH_EXEC if s[S_PREEMPTED_NOW] == 1 else PH_ADMIT
        elif phase == PH_ADMIT:
            if _offer_admission(rf, ri, queues, batch, s, cfg_i, kv, d, slots, mask, scratch):
                d[D_KIND] = K_ADMIT
                return ADV_DECISION
            d[D_PHASE] = PH_EXEC
        elif phase == PH_EXEC:
            put_back(rf, queues, s, d[D_SKIPPED])
            d[D_SKIPPED] = 0
            if s[S_BATCH] == 0 and s[S_N_PREEMPTED] == 0 and not tokens_in_flight(s):
                s[S_ERROR] = ERR_STALL
                return ADV_ERROR
            after_schedule(ri, batch, s, cfg_i)
            if timed == 0:
                return ADV_READY
            x = batch_features(batch, s[S_BATCH])
            dt = (step_time(coef, x) + s[S_SWAP_BLOCKS] * cfg_f[CF_SWAP_S_PER_BLOCK]
                  if s[S_BATCH] > 0 else 0.0)
            enqueue(s, t, cfg_i, d, dt)
        else:  # PH_COMPLETE
            _complete(rf, ri, target, hint, queues, batches, s, t, cfg_i, params, pstate, kv,
                      d, df, recent)
            if s[S_ERROR] != 0:
                return ADV_ERROR


@kernel
def _log1p(x):
    return np.log1p(max(float(x), 0.0))


@kernel
def sorted_quantile(sorted_x, n, q):
    """The ``q`` quantile of the sorted ``sorted_x[:n]`` (n >= 1), interpolated linearly
    between its closest ranks as numpy's default."""
    pos = q * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    return sorted_x[lo] + (sorted_x[hi] - sorted_x[lo]) * (pos - lo)


@kernel
def _prefix_tokens(kv, ri, i, cfg_i):
    """Prompt tokens the prefix cache serves request ``i``: at its admission if it runs, or
    if it were admitted now."""
    if cfg_i[C_PREFIX] == 0:
        return 0
    if ri[i, STATUS] == ST_WAITING and ri[i, COMPUTED] == 0:
        return match_tokens(kv, ri, i, cfg_i[C_BLOCK_SIZE])
    return ri[i, CACHED_TOKENS]


@allocating
def observe(rf, ri, batch, s, t, cfg_i, kv, d, recent, slots, out_slots, out_valid,
            out_globals):
    """Fill the observation arrays (float32): per-slot features (``SLOT_FEATURES``, flat,
    slot-major), slot validity and ``GLOBAL_FEATURES``. Counts and times are ``log1p``'d."""
    now = t[T_NOW]
    nf = len(SLOT_FEATURES)
    k = slots.shape[0]
    nb = s[S_BATCH]
    bs = cfg_i[C_BLOCK_SIZE]
    out_slots[:] = 0.0
    out_valid[:] = 0.0
    for j in range(k):
        i = slots[j]
        if i < 0:
            continue
        out_valid[j] = 1.0
        o = j * nf
        todo = tokens_to_compute(ri, i, 0)
        out_slots[o] = _log1p(now - rf[i, ARRIVAL])
        out_slots[o + 1] = _log1p(ri[i, PROMPT])
        out_slots[o + 2] = _log1p(ri[i, GENERATED])
        out_slots[o + 3] = _log1p(todo)
        out_slots[o + 4] = 1.0 if ri[i, GENERATED] > 0 and todo <= 1 else 0.0  # phase
        out_slots[o + 5] = _log1p(ri[i, BLOCKS])
        out_slots[o + 6] = _log1p(ri[i, N_PREEMPT])
        out_slots[o + 7] = 1.0 if ri[i, STATUS] == ST_SWAPPED else 0.0
        running = ri[i, STATUS] == ST_RUNNING
        out_slots[o + 8] = 1.0 if running else 0.0
        scheduled = 0
        if running:
            for b in range(nb):
                if batch[B_REQ, b] == i:
                    scheduled = batch[B_NEW, b]
        out_slots[o + 9] = _log1p(scheduled)
        out_slots[o + 10] = _log1p(extra_blocks(ri, i, max(todo, 1), bs))
        out_slots[o + 11] = _log1p(_prefix_tokens(kv, ri, i, cfg_i))
    kind = d[D_KIND]
    g = out_globals
    g[0] = 1.0 if kind == K_ADMIT else 0.0
    g[1] = 1.0 if kind == K_EVICT else 0.0
    g[2] = 1.0 if kind == K_SWAP else 0.0
    g[3] = 1.0 - s[S_FREE_BLOCKS] / cfg_i[C_GPU_BLOCKS]
    host = cfg_i[C_HOST_BLOCKS]
    g[4] = 1.0 - s[S_FREE_HOST] / host if host > 0 else 0.0
    g[5] = max(d[D_BUDGET], 0) / cfg_i[C_BUDGET]
    g[6] = max(cfg_i[C_MAX_SEQS] - s[S_N_RUNNING], 0) / cfg_i[C_MAX_SEQS]
    g[7] = _log1p(s[S_N_WAITING])
    g[8] = _log1p(s[S_N_SWAPPED])
    g[9] = _log1p(s[S_N_RUNNING])
    pool = s[S_N_WAITING] + s[S_N_SWAPPED] + s[S_N_RUNNING]  # candidates of the decision
    if kind == K_EVICT:
        pool = s[S_N_RUNNING]
    elif kind != K_NONE:
        pool -= s[S_N_RUNNING]
    g[10] = _log1p(pool - d[D_NSLOTS])
    g[11] = _log1p(nb)
    a = s[S_NEXT_ARRIVAL]
    first = max(a - RATE_WINDOW, 0)
    span = now - rf[first, ARRIVAL] if a > 0 else 0.0
    g[12] = _log1p((a - 1 - first) / span) if span > 0 else 0.0
    n = min(d[D_RECENT], recent.shape[0])
    if n > 0:
        x = np.sort(recent[:n])
        g[13] = _log1p(sorted_quantile(x, n, 0.5))
        g[14] = _log1p(sorted_quantile(x, n, 0.9))
        g[15] = _log1p(sorted_quantile(x, n, 0.99))
    else:
        g[13] = g[14] = g[15] = 0.0
    g[16] = _log1p(s[S_PREEMPT_RECOMPUTE] + s[S_PREEMPT_SWAP])
