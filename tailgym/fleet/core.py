"""The fleet loop (numba): route each request in arrival order, stepping replicas lazily.

One global per-request table (``rf``, ``ri``, ``target``, ``hint``) serves every replica; each
replica ``r`` owns its slice of the stacked arrays ``rep = (queues, batches, s, t, pstate, blk,
ht, tables, rows, free)`` and of ``cfg_i, cfg_f, coef, params`` in ``common`` (leading axis: replica;
padded to the largest replica's shapes), and the block keys ``key_off, keys`` are shared.
A request is routed when its arrival is next: replicas whose clock is before it are first
stepped up to it (each runs the engine iterations that begin before the arrival, so its state
may include the output of a batch still running at the arrival), in the order of a min-heap of
their wake-up times; an idle replica sleeps until a request is routed to it. So the work is
the engine steps plus a heap operation per step, plus the router's scan per request. With a
refresh period the router reads a snapshot of the signals taken at multiples of it (replicas
are then stepped only to those instants), and prefix matches read the caches as of then.
"""
import numpy as np

from ..engine.blocks import match_tokens
from ..engine.layout import (ARRIVAL, C_BLOCK_SIZE, C_GPU_BLOCKS, ERR_BLOCKS, GENERATED,
                             PROMPT, Q_ARRIVALS, Q_RUNNING, Q_SWAPPED, Q_WAITING, S_ERROR,
                             S_FREE_BLOCKS, S_N_ARRIVALS, S_N_FINISHED, S_N_RUNNING,
                             S_N_SWAPPED, S_N_WAITING, S_NEXT_ARRIVAL, S_QUEUED, ST_REJECTED,
                             STATUS, T_NOW)
from ..engine.step import blocks_conserved, run_engine
from ..jit import allocating, inlined, kernel
from .routers import SIG_KV, SIG_OUTSTANDING, SIG_QUEUED, SIG_TOKENS, route

# fleet int scalars (fl)
F_NEXT = 0        # next request row to route
F_SEQ = 1         # requests routed so far
F_BAD = 2         # replica that stopped with an engine error
F_REFRESH = 3     # index j of the next snapshot, taken at t0 + j * refresh_s
F_COLS = 4

# results of run_fleet
FLEET_DONE = 0    # every request routed and every replica finished
FLEET_GROW = 1    # a replica's queues are full: grow them and call again
FLEET_PAUSE = 2   # reached the requested stop row (progress)
FLEET_ERROR = 3   # replica fl[F_BAD] stopped with an engine error (s[r, S_ERROR])
ROUTE_READY = 4   # next_request: request fl[F_NEXT] is ready to route; commit: routed

UNLIMITED = np.iinfo(np.int64).max


@inlined
def _kv(rep, key_off, keys, r):
    return rep[5][r], rep[6][r], rep[7][r], rep[8][r], rep[9][r], key_off, keys


@kernel
def _less(key, a, b):
    return key[a] < key[b] or (key[a] == key[b] and a < b)


@kernel
def sift(heap, pos, key, p):
    """Restore the min-heap of replicas ``heap`` (by ``key``, then index) around slot ``p``."""
    n = heap.shape[0]
    while p > 0 and _less(key, heap[p], heap[(p - 1) >> 1]):
        q = (p - 1) >> 1
        heap[p], heap[q] = heap[q], heap[p]
        pos[heap[p]], pos[heap[q]] = p, q
        p = q
    while True:
        c = 2 * p + 1
        if c >= n:
            break
        if c + 1 < n and _less(key, heap[c + 1], heap[c]):
            c += 1
        if not _less(key, heap[c], heap[p]):
            break
        heap[p], heap[c] = heap[c], heap[p]
        pos[heap[p]], pos[heap[c]] = p, c
        p = c


@kernel
def busy(s):
    """A replica with requests, pending arrivals or a batch in flight."""
    return (s[S_N_WAITING] + s[S_N_SWAPPED] + s[S_N_RUNNING] > 0 or s[S_QUEUED] > 0
            or s[S_NEXT_ARRIVAL] < s[S_N_ARRIVALS])


@kernel
def _tokens(ri, row, lo, hi):
    total = 0
    for p in range(lo, hi):
        i = row[p]
        total += ri[i, PROMPT] + ri[i, GENERATED]
    return total


@kernel
def signals(ri, queues, s, n_routed, cfg_i, sig, r, tokens):
    """Recompute replica ``r``'s router signals (its tokens only if ``tokens``)."""
    sr = s[r]
    sig[r, SIG_OUTSTANDING] = n_routed[r] - sr[S_N_FINISHED]
    sig[r, SIG_QUEUED] = sr[S_N_WAITING] + sr[S_N_SWAPPED] + sr[S_N_ARRIVALS] - sr[S_NEXT_ARRIVAL]
    sig[r, SIG_KV] = 1.0 - sr[S_FREE_BLOCKS] / (cfg_i[r, C_GPU_BLOCKS] - 1)
    if tokens:
        q = queues[r]
        total = (_tokens(ri, q[Q_WAITING], 0, sr[S_N_WAITING])
                 + _tokens(ri, q[Q_SWAPPED], 0, sr[S_N_SWAPPED])
                 + _tokens(ri, q[Q_RUNNING], 0, sr[S_N_RUNNING])
                 + _tokens(ri, q[Q_ARRIVALS], sr[S_NEXT_ARRIVAL], sr[S_N_ARRIVALS]))
        sig[r, SIG_TOKENS] = total


@allocating
def replica_conserved(ri, replica_of, s, cfg_i, kv, r):
    """The engine's block conservation check over replica ``r``'s requests only."""
    mine = np.nonzero(replica_of == r)[0]
    return blocks_conserved(ri[mine], s, cfg_i, kv)


@kernel
def advance(common, rep, fleet, fl, until, check, tokens, log, blog):
    """Step every replica whose clock is before ``until`` up to it; False when one stopped
    with an error (``ERR_BLOCKS`` when ``check`` finds blocks not conserved), named in
    ``fl[F_BAD]``."""
    rf, ri, target, hint, cfg_i, cfg_f, coef, params, key_off, keys = common
    queues, batches, s, t, pstate = rep[0], rep[1], rep[2], rep[3], rep[4]
    replica_of, n_routed, sig, wake, heap, pos = fleet
    max_steps = 1 if check else UNLIMITED
    while wake[heap[0]] < until:
        r = heap[0]
        kv = _kv(rep, key_off, keys, r)
        run_engine(rf, ri, target, hint, queues[r], batches[r], s[r], t[r], cfg_i[r], cfg_f[r],
                   coef[r], params[r], pstate[r], kv, log, blog, max_steps, until)
        if s[r, S_ERROR] == 0 and check and not replica_conserved(ri, replica_of, s[r],
                                                                  cfg_i[r], kv, r):
            s[r, S_ERROR] = ERR_BLOCKS
        if s[r, S_ERROR] != 0:
            fl[F_BAD] = r
            return False
        wake[r] = t[r, T_NOW] if busy(s[r]) else np.inf
        sift(heap, pos, wake, 0)
        signals(ri, queues, s, n_routed, cfg_i, sig, r, tokens)
    return True


@kernel
def assign(ri, queues, s, t, fleet, k, r, tokens):
    """Append request ``k`` to replica ``r``'s arrival row (compacting it when full) and
    count it in ``r``'s signals; an idle replica wakes at its clock."""
    replica_of, n_routed, sig, wake, heap, pos = fleet
    row = queues[r, Q_ARRIVALS]
    n = s[r, S_N_ARRIVALS]
    if n == row.shape[0]:
        nxt = s[r, S_NEXT_ARRIVAL]
        for p in range(nxt, n):
            row[p - nxt] = row[p]
        n -= nxt
        s[r, S_NEXT_ARRIVAL] = 0
    row[n] = k
    s[r, S_N_ARRIVALS] = n + 1
    replica_of[k] = r
    n_routed[r] += 1
    sig[r, SIG_OUTSTANDING] += 1
    sig[r, SIG_QUEUED] += 1
    if tokens:
        sig[r, SIG_TOKENS] += ri[k, PROMPT]
    if wake[r] > t[r, T_NOW]:
        wake[r] = t[r, T_NOW]
        sift(heap, pos, wake, pos[r])


@kernel
def next_request(common, rep, fleet, snap, match, fl, refresh_s, t0, check, tokens, prefix,
                 stop, log, blog):
    """Make request ``fl[F_NEXT]`` (rejected rows skipped) ready to route: step the replicas
    up to its arrival (or, when ``refresh_s`` > 0, to the last snapshot instant before it,
    refreshing ``snap``) and fill ``match`` (when ``prefix``). ``ROUTE_READY``, or
    ``FLEET_PAUSE`` at row ``stop``, ``FLEET_DONE`` when no request is left (the replicas
    still to finish), ``FLEET_ERROR``."""
    rf, ri, cfg_i, key_off, keys = common[0], common[1], common[4], common[8], common[9]
    n = rf.shape[0]
    k = fl[F_NEXT]
    while k < n and ri[k, STATUS] == ST_REJECTED:
        k += 1
    fl[F_NEXT] = k
    if k == n:
        return FLEET_DONE
    if k >= stop:
        return FLEET_PAUSE
    a = rf[k, ARRIVAL]
    if refresh_s > 0:
        j = int(np.floor((a - t0) / refresh_s))
        if j >= fl[F_REFRESH]:
            if not advance(common, rep, fleet, fl, t0 + j * refresh_s, check, tokens, log, blog):
                return FLEET_ERROR
            sig = fleet[2]
            for r in range(sig.shape[0]):
                for c in range(sig.shape[1]):
                    snap[r, c] = sig[r, c]
            fl[F_REFRESH] = j + 1
    elif not advance(common, rep, fleet, fl, a, check, tokens, log, blog):
        return FLEET_ERROR
    if prefix:
        if key_off[k] == key_off[k + 1]:  # keys of its own only: cached nowhere before it runs
            match[:] = 0.0
        else:
            for r in range(match.shape[0]):
                match[r] = match_tokens(_kv(rep, key_off, keys, r), ri, k, cfg_i[r, C_BLOCK_SIZE])
    return ROUTE_READY


@kernel
def commit(common, rep, fleet, fl, r, tokens):
    """Send the ready request ``fl[F_NEXT]`` to replica ``r``: ``ROUTE_READY`` when done,
    ``FLEET_GROW`` (nothing changed) when ``r``'s queues are full."""
    ri, queues, s, t = common[1], rep[0], rep[2], rep[3]
    n_routed = fleet[1]
    if n_routed[r] - s[r, S_N_FINISHED] + 1 > queues.shape[2]:
        return FLEET_GROW
    assign(ri, queues, s, t, fleet, fl[F_NEXT], r, tokens)
    fl[F_SEQ] += 1
    fl[F_NEXT] += 1
    return ROUTE_READY


@kernel
def run_fleet(common, rep, fleet, snap, match, u, fl, rid, rargs, refresh_s, t0, check,
              tokens, prefix, stop, log, blog):
    """Route requests ``fl[F_NEXT]`` .. ``stop`` - 1 (``FLEET_PAUSE`` there unless it is the
    last), then finish every replica (``FLEET_DONE``); see ``FLEET_*`` for the other results.
    ``snap``: the signals the router reads when ``refresh_s`` > 0; ``match``: scratch for
    the prefix matches (read when ``prefix``)."""
    ri = common[1]
    view = snap if refresh_s > 0 else fleet[2]
    while True:
        status = next_request(common, rep, fleet, snap, match, fl, refresh_s, t0, check,
                              tokens, prefix, stop, log, blog)
        if status != ROUTE_READY:
            break
        k = fl[F_NEXT]
        r = route(rid, view, match, ri[k, PROMPT], u[k, 0], u[k, 1], fl[F_SEQ], rargs)
        if commit(common, rep, fleet, fl, r, tokens) == FLEET_GROW:
            return FLEET_GROW
    if status != FLEET_DONE:
        return status
    if not advance(common, rep, fleet, fl, np.inf, check, tokens, log, blog):
        return FLEET_ERROR
    return FLEET_DONE
