"""The GPU block pool: free-block accounting, and vLLM v1's automatic prefix caching.

Without prefix caching (``cfg_i[C_PREFIX] == 0``) only counts matter: ``ri[i, BLOCKS]`` per
request and ``s[S_FREE_BLOCKS]``. With it, blocks have identities, as in vLLM's ``BlockPool``
(``vllm/v1/core/block_pool.py``) and ``KVCacheManager``:

* ``kv = (blk, ht, tables, rows, free, key_off, keys)``. ``blk`` (``B + 2`` rows, ``K_*``
  columns) holds each block's hash key, its reference count (kept for blocks with a key,
  which other requests may share: a keyless block is its one request's, count 0), its place
  in the free queue and its links among the blocks that carry the same key. ``ht`` is an
  open-addressing hash table ``key -> (first, last block with that key)``.
  ``tables[ri[i, ROW]]`` lists the blocks of each request holding GPU blocks; ``rows`` is
  the stack of free table rows.
* The free queue is the ring ``free``, from position ``blk[B, K_POS]`` (its head) to
  ``blk[B + 1, K_POS]`` (past its tail); positions count up from ``RING_START``, slot =
  position mod the ring's size. An entry is a block with a key, or a hole (its block no
  longer sits at that position: a cache hit took it; skipped, and squeezed out when the ring
  fills), or ``dead(b)`` for a keyless block. Popping and pushing walk the ring in order,
  and a keyless block's life (allocated, freed) touches no row of ``blk``: no pointer
  chasing through the pool, whose rows a fleet's replicas rarely find in the CPU cache.
* The key of a request's block ``k`` identifies its token prefix up to the end of that block:
  ``keys[key_off[i] + k]`` (>= 0, from the workload; shared prefixes share keys) for the
  blocks the workload describes, else ``-(i * 2**24 + k) - 1``, unique to the request.
* Block 0 is vLLM's null block: ``num_gpu_blocks`` blocks hold ``num_gpu_blocks - 1``.
* Allocation pops the head of the free queue and drops the key the block still carried
  (evicting it from the cache); a block no request holds any more goes to the tail of the
  queue if it carries a key (reusable until the allocator reaches it: LRU), to the head if
  not; a request's blocks are freed last-first. A full block gets its key once its tokens
  are known and computed or scheduled (``cache_blocks``); a lookup walks a request's keys
  from the first block and stops at the first miss, capped at ``num_tokens - 1`` tokens.
* A key of a request's own can only be looked up by that request, and only after a
  preemption released its blocks. So such a block enters ``ht`` only then (``release`` of a
  request that will run again); while its request runs it carries no key (``own_unindexed``
  says which), and once its request finished it is queued as ``dead(b)``, in the place the
  key held in vLLM's LRU order. Most blocks never touch ``ht``, with the same hits,
  evictions and block ids as indexing every key at once.
"""
import numpy as np

from ..jit import allocating, kernel
from .layout import (BLOCKS, C_BLOCK_SIZE, C_GPU_BLOCKS, C_PREFIX, CACHED_BLOCKS, GENERATED,
                     MATCH_TOKENS, N_PREEMPT, PROMPT, ROW, S_FREE_BLOCKS, ST_FINISHED, STATUS)

K_REF = 0
K_KEY = 1
K_POS = 2     # its position in the free queue (NONE: not in it); rows B, B + 1: head, end
K_HPREV = 3   # blocks with the same key, in insertion order
K_HNEXT = 4
K_COLS = 5
NO_KEY = np.iinfo(np.int64).min
NONE = -1
H_KEY = 0
H_FIRST = 1
H_LAST = 2
IMPLICIT_SHIFT = 1 << 24  # block index bound of the implicit keys
RING_START = 1 << 40      # a multiple of every ring size: the first position maps to slot 0


def new_pool(num_gpu_blocks: int, rows: int, max_blocks: int, key_off, keys, prefix: bool):
    """The pool arrays ``kv`` for ``num_gpu_blocks`` blocks and ``rows`` block tables of
    ``max_blocks`` entries (tiny placeholders when prefix caching is off). The free queue
    holds blocks 1 .. B - 1 in order, as ``dead`` entries (at slots 0 .., whatever the ring's
    size, so a fleet may pad the ring with ``NONE``)."""
    if not prefix:
        num_gpu_blocks, rows, max_blocks = 1, 1, 1
    b = num_gpu_blocks
    blk = np.full((b + 2, K_COLS), NONE, dtype=np.int64)
    blk[:, K_REF] = 0
    blk[:, K_KEY] = NO_KEY
    blk[b, K_POS] = RING_START
    blk[b + 1, K_POS] = RING_START + b - 1
    free = np.full(1 << max(4, int(2 * b).bit_length()), NONE, dtype=np.int64)
    free[:b - 1] = -np.arange(1, b) - 2  # dead(b): keyless, never hit
    capacity = 1 << max(4, int(2 * b - 1).bit_length())
    ht = np.full((capacity, 3), NONE, dtype=np.int64)
    ht[:, H_KEY] = NO_KEY
    stack = np.zeros(rows + 1, dtype=np.int64)
    stack[0] = rows
    stack[1:] = np.arange(rows)[::-1]
    tables = np.zeros((rows, max(max_blocks, 1)), dtype=np.int32)
    return (blk, ht, tables, stack, free, np.ascontiguousarray(key_off, dtype=np.int64),
            np.ascontiguousarray(keys, dtype=np.int64))


@kernel
def _n_keys(kv, i):
    """Leading blocks of request ``i`` that the workload gives keys."""
    return kv[5][i + 1] - kv[5][i]


@kernel
def own_unindexed(kv, ri, cfg_i, i):
    """First block of request ``i`` holding GPU blocks from which its cached blocks carry its
    own keys, in no table yet: those past the workload's keys and past the hits it took at
    its admission (``MATCH_TOKENS``)."""
    return max(_n_keys(kv, i), ri[i, MATCH_TOKENS] // cfg_i[C_BLOCK_SIZE])


@kernel
def key_of(kv, i, k):
    key_off, keys = kv[5], kv[6]
    j = key_off[i] + k
    if j < key_off[i + 1]:
        return keys[j]
    return -(i * IMPLICIT_SHIFT + k) - 1


@kernel
def _slot(ht, key):
    x = key ^ (key >> 31)
    x *= -7046029254386353131
    x ^= x >> 29
    return x & (ht.shape[0] - 1)


@kernel
def ht_find(ht, key):
    """Table slot of ``key``, or -1."""
    mask = ht.shape[0] - 1
    p = _slot(ht, key)
    while ht[p, H_KEY] != NO_KEY:
        if ht[p, H_KEY] == key:
            return p
        p = (p + 1) & mask
    return NONE


@kernel
def _ht_delete(ht, p):
    """Remove slot ``p`` (linear probing, backward-shift deletion)."""
    mask = ht.shape[0] - 1
    q = p
    while True:
        q = (q + 1) & mask
        if ht[q, H_KEY] == NO_KEY:
            break
        home = _slot(ht, ht[q, H_KEY])
        if (q - home) & mask >= (q - p) & mask:  # q may move into the hole at p
            for c in range(3):
                ht[p, c] = ht[q, c]
            p = q
    ht[p, H_KEY] = NO_KEY
    ht[p, H_FIRST] = NONE
    ht[p, H_LAST] = NONE


@kernel
def give_key(kv, b, key):
    """Register block ``b`` under ``key`` (after the blocks already there)."""
    blk, ht = kv[0], kv[1]
    blk[b, K_KEY] = key
    p = ht_find(ht, key)
    if p < 0:
        mask = ht.shape[0] - 1
        p = _slot(ht, key)
        while ht[p, H_KEY] != NO_KEY:
            p = (p + 1) & mask
        ht[p, H_KEY] = key
        ht[p, H_FIRST] = b
        ht[p, H_LAST] = b
        blk[b, K_HPREV] = NONE
        blk[b, K_HNEXT] = NONE
        return
    last = ht[p, H_LAST]
    blk[last, K_HNEXT] = b
    blk[b, K_HPREV] = last
    blk[b, K_HNEXT] = NONE
    ht[p, H_LAST] = b


@kernel
def drop_key(kv, b):
    """Evict block ``b`` from the cache (it keeps no key)."""
    blk, ht = kv[0], kv[1]
    key = blk[b, K_KEY]
    blk[b, K_KEY] = NO_KEY
    if key == NO_KEY:
        return
    p = ht_find(ht, key)
    prev, nxt = blk[b, K_HPREV], blk[b, K_HNEXT]
    if prev >= 0:
        blk[prev, K_HNEXT] = nxt
    else:
        ht[p, H_FIRST] = nxt
    if nxt >= 0:
        blk[nxt, K_HPREV] = prev
    else:
        ht[p, H_LAST] = prev
    if ht[p, H_FIRST] < 0:
        _ht_delete(ht, p)


@kernel
def ring_slot(free, position):
    """The slot of a free-queue position in the ring ``free`` (its size is a power of 2)."""
    return position & (free.shape[0] - 1)


@kernel
def _pop(blk, free, head):
    """The entry at the head of the free queue, taken (the caller knows a block is free)."""
    p = blk[head, K_POS]
    while True:
        e = free[ring_slot(free, p)]
        if e < 0:
            break
        if blk[e, K_POS] == p:
            blk[e, K_POS] = NONE
            break
        p += 1  # a hole
    blk[head, K_POS] = p + 1
    return e


@kernel
def _room(blk, free, head, n):
    """Make room for ``n`` more entries in the ring, squeezing out its holes if it is full."""
    lo, hi = blk[head, K_POS], blk[head + 1, K_POS]
    if hi - lo + n <= free.shape[0]:
        return
    w = lo
    for p in range(lo, hi):
        e = free[ring_slot(free, p)]
        if e < 0 or blk[e, K_POS] == p:
            free[ring_slot(free, w)] = e
            if e > 0:
                blk[e, K_POS] = w
            w += 1
    blk[head + 1, K_POS] = w


@kernel
def dead(b):
    """The queue entry of a free block ``b`` that no lookup can hit: keyless, or its key was
    its finished request's own. Never a hole, and its allocation drops no key and touches
    no row of ``blk``. Its own inverse: ``dead(entry)`` is the block."""
    return -b - 2


@kernel
def _push_tail(blk, free, head, e):
    """Queue entry ``e`` (a block, or ``dead(b)``) at the tail."""
    _room(blk, free, head, 1)
    p = blk[head + 1, K_POS]
    free[ring_slot(free, p)] = e
    if e > 0:
        blk[e, K_POS] = p
    blk[head + 1, K_POS] = p + 1


@kernel
def _row(kv, ri, i):
    if ri[i, ROW] < 0:
        rows = kv[3]
        rows[0] -= 1
        ri[i, ROW] = rows[rows[0] + 1]
    return ri[i, ROW]


@kernel
def lookup(kv, ri, i, num_tokens, bs):
    """Longest cached prefix of request ``i`` (at most ``num_tokens - 1`` tokens): the hit
    blocks and how many of them sit in the free queue (taking them shrinks the free pool)."""
    blk, ht = kv[0], kv[1]
    hits = 0
    evictable = 0
    limit = (num_tokens - 1) // bs
    never_preempted = ri[i, N_PREEMPT] == 0  # its own keys: indexed only at a preemption
    while hits < limit:
        key = key_of(kv, i, hits)
        if key < 0 and never_preempted:
            break
        p = ht_find(ht, key)
        if p < 0:
            break
        if blk[ht[p, H_FIRST], K_REF] == 0:
            evictable += 1
        hits += 1
    return hits, evictable


@kernel
def match_tokens(kv, ri, i, bs):
    """Prompt tokens the prefix cache would serve request ``i`` (holding no blocks) now."""
    return lookup(kv, ri, i, ri[i, PROMPT] + ri[i, GENERATED], bs)[0] * bs


@kernel
def take_hits(kv, ri, s, i, hits):
    """Give request ``i`` (holding no blocks) its first ``hits`` cached blocks."""
    blk, ht, tables = kv[0], kv[1], kv[2]
    row = _row(kv, ri, i)
    for k in range(hits):
        b = ht[ht_find(ht, key_of(kv, i, k)), H_FIRST]
        if blk[b, K_REF] == 0:
            blk[b, K_POS] = NONE  # leaves a hole in the ring
            s[S_FREE_BLOCKS] -= 1
        blk[b, K_REF] += 1
        tables[row, k] = b
    ri[i, BLOCKS] = hits
    ri[i, CACHED_BLOCKS] = hits


@kernel
def grow(kv, ri, s, cfg_i, i, count):
    """Give request ``i`` ``count`` more blocks from the head of the free queue."""
    if count <= 0:
        return
    if cfg_i[C_PREFIX] == 0:
        ri[i, BLOCKS] += count
        s[S_FREE_BLOCKS] -= count
        return
    blk, tables, free = kv[0], kv[2], kv[4]
    head = cfg_i[C_GPU_BLOCKS]
    row = _row(kv, ri, i)
    for c in range(count):
        b = _pop(blk, free, head)
        if b < 0:
            b = dead(b)
        else:
            drop_key(kv, b)
        tables[row, ri[i, BLOCKS]] = b
        ri[i, BLOCKS] += 1
    s[S_FREE_BLOCKS] -= count


@kernel
def fills_a_block(ri, cfg_i, i, tokens):
    """With prefix caching, whether the first ``tokens`` tokens of request ``i`` fill a block
    past its registered ones (``cache_blocks`` has work): a multiplication, as a division
    per request and step is slow."""
    return cfg_i[C_PREFIX] == 1 and tokens >= (ri[i, CACHED_BLOCKS] + 1) * cfg_i[C_BLOCK_SIZE]


@kernel
def cache_blocks(kv, ri, cfg_i, i, tokens):
    """Register the full blocks of request ``i`` within its first ``tokens`` tokens."""
    if cfg_i[C_PREFIX] == 0:
        return
    full = tokens // cfg_i[C_BLOCK_SIZE]
    k = ri[i, CACHED_BLOCKS]
    if k >= full:
        return
    tables = kv[2]
    row = ri[i, ROW]
    blk = kv[0]
    for k in range(k, min(full, _n_keys(kv, i))):  # (its own keys wait for a release)
        b = tables[row, k]
        blk[b, K_REF] = 1
        give_key(kv, b, key_of(kv, i, k))
    ri[i, CACHED_BLOCKS] = full


@kernel
def release(kv, ri, s, cfg_i, i):
    """Free all GPU blocks of request ``i``, its last block first; unless it finished, index
    the keys of its own it may look up when it runs again."""
    held = ri[i, BLOCKS]
    ri[i, BLOCKS] = 0
    if cfg_i[C_PREFIX] == 0:
        s[S_FREE_BLOCKS] += held
        return
    if ri[i, ROW] < 0:
        return
    blk, tables, rows, free = kv[0], kv[2], kv[3], kv[4]
    head = cfg_i[C_GPU_BLOCKS]
    row = ri[i, ROW]
    cached = ri[i, CACHED_BLOCKS]
    if held > cached:  # no key, never hit again: reused first, in the order freed
        _room(blk, free, head, held - cached)
        p = blk[head, K_POS] - (held - cached)
        blk[head, K_POS] = p
        for k in range(held - 1, cached - 1, -1):
            free[ring_slot(free, p)] = dead(tables[row, k])
            p += 1
        s[S_FREE_BLOCKS] += held - cached
    first_own = own_unindexed(kv, ri, cfg_i, i)
    again = ri[i, STATUS] != ST_FINISHED
    for k in range(cached - 1, -1, -1):
        b = tables[row, k]
        if k >= first_own or blk[b, K_KEY] == NO_KEY:  # its own key, in no table
            s[S_FREE_BLOCKS] += 1
            if again:
                give_key(kv, b, key_of(kv, i, k))
                _push_tail(blk, free, head, b)
            else:
                _push_tail(blk, free, head, dead(b))
        else:
            blk[b, K_REF] -= 1
            if blk[b, K_REF] == 0:
                s[S_FREE_BLOCKS] += 1
                _push_tail(blk, free, head, b)
    rows[rows[0] + 1] = row
    rows[0] += 1
    ri[i, ROW] = NONE
    ri[i, CACHED_BLOCKS] = 0


@kernel
def exclusive_blocks(kv, ri, cfg_i, i):
    """Blocks that evicting request ``i`` would return to the free pool."""
    if cfg_i[C_PREFIX] == 0 or ri[i, ROW] < 0:
        return ri[i, BLOCKS]
    blk, tables = kv[0], kv[2]
    row = ri[i, ROW]
    n = 0
    for k in range(ri[i, BLOCKS]):
        if blk[tables[row, k], K_REF] <= 1:  # (0: keyless, its request's alone)
            n += 1
    return n


@allocating
def pool_consistent(kv, ri, s, cfg_i):
    """Every keyed block's reference count equals the tables that hold it (a keyless one's
    is 0, held by at most one); the free queue holds exactly the unheld blocks,
    ``s[S_FREE_BLOCKS]`` of them, once each, keyless ones as ``dead`` entries; keys and map
    agree both ways."""
    b_total = cfg_i[C_GPU_BLOCKS]
    if cfg_i[C_PREFIX] == 0:
        return ri[:, BLOCKS].sum() + s[S_FREE_BLOCKS] == b_total - 1 and s[S_FREE_BLOCKS] >= 0
    blk, ht, tables = kv[0], kv[1], kv[2]
    refs = np.zeros(b_total, dtype=np.int64)
    for i in range(ri.shape[0]):
        if ri[i, ROW] >= 0:
            for k in range(ri[i, BLOCKS]):
                refs[tables[ri[i, ROW], k]] += 1
        elif ri[i, BLOCKS] != 0:
            return False
    if refs[0] != 0:
        return False
    ring = kv[4]
    queued = np.zeros(b_total, dtype=np.int64)   # times in the queue
    for p in range(blk[b_total, K_POS], blk[b_total + 1, K_POS]):
        e = ring[ring_slot(ring, p)]
        if e == NONE:
            return False
        if e < 0:
            queued[dead(e)] += 1
            if blk[dead(e), K_KEY] != NO_KEY:
                return False
        elif blk[e, K_POS] == p:
            queued[e] += 1
            if blk[e, K_KEY] == NO_KEY:
                return False
    if queued[0] != 0 or (queued > 1).any() or queued.sum() != s[S_FREE_BLOCKS]:
        return False
    for b in range(1, b_total):
        key = blk[b, K_KEY]
        if (queued[b] == 1) == (refs[b] > 0):
            return False
        if key == NO_KEY:
            if blk[b, K_REF] != 0 or refs[b] > 1:
                return False
        elif blk[b, K_REF] != refs[b] or ht_find(ht, key) < 0:
            return False
    for p in range(ht.shape[0]):  # each entry lists exactly the blocks that carry its key
        key = ht[p, H_KEY]
        if key == NO_KEY:
            continue
        prev, b = NONE, ht[p, H_FIRST]
        while b != NONE:
            if blk[b, K_KEY] != key or blk[b, K_HPREV] != prev:
                return False
            prev, b = b, blk[b, K_HNEXT]
        if prev != ht[p, H_LAST]:
            return False
    return True
