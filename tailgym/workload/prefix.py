"""Prefix content: engine block keys from a workload's content ids, and the cache-hit ceiling.

A request's content ids (``Workload.hash_ids``) describe its token sequence in blocks
of ``hash_block_tokens`` (H) tokens. The engine caches blocks of ``block_size`` (bs)
tokens, so the ids are re-cut into engine blocks: the chain ``c_j = mix(c_{j-1}, id_j)``
names content blocks 0..j, and engine block k (tokens ``[0, (k+1) bs)``) gets the key
``mix(c_j, e)`` with j the content block holding its last token and ``e = (k+1) bs - j H``
the tokens of block j it includes. Two requests get equal keys exactly when their ids
agree up to block j, i.e. (by the Workload convention) when their token prefixes of that
length are equal. ``mix(a, b) = splitmix64(splitmix64(a) xor b)``; keys keep 63 bits
(>= 0), so two different prefixes collide with probability about 2^-63 per pair.
"""

from __future__ import annotations

import numpy as np

from ..jit import allocating, kernel
from .core import Workload, WorkloadError, is_count

_ROOT = np.uint64(0x243F6A8885A308D3)  # the chain value before block 0
_MASK63 = np.uint64((1 << 63) - 1)


@kernel
def _splitmix(x):
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@kernel
def _mix(parent, value):
    """A 64-bit digest of the pair; for a fixed ``parent`` a bijection of ``value``."""
    return _splitmix(_splitmix(parent) ^ value)


@allocating
def _chain(ids, offsets, root):
    out = np.empty(ids.shape[0], dtype=np.uint64)
    for i in range(offsets.shape[0] - 1):
        c = root
        for p in range(offsets[i], offsets[i + 1]):
            c = _mix(c, ids[p])
            out[p] = c
    return out


@allocating
def _keys(chain, id_offsets, hashed, hash_block, block_size, offsets, mask):
    keys = np.empty(offsets[-1], dtype=np.uint64)
    for i in range(hashed.shape[0]):
        last, parent = -1, np.uint64(0)
        for k in range(offsets[i + 1] - offsets[i]):
            end = (k + 1) * block_size
            j = (end - 1) // hash_block  # content block holding the engine block's last token
            if j != last:  # _mix(chain[j], e) with splitmix(chain[j]) computed once per block
                last, parent = j, _splitmix(chain[id_offsets[i] + j])
            keys[offsets[i] + k] = _splitmix(parent ^ np.uint64(end - j * hash_block)) & mask
    return keys


def content_chain(w: Workload) -> np.ndarray:
    """uint64 chain value of every content id (aligned with ``w.hash_ids``): equal values
    mean equal id sequences from block 0 to that block."""
    return _chain(w.hash_ids.view(np.uint64), w.hash_offsets, _ROOT)


def _check_block_size(block_size: int) -> None:
    if not is_count(block_size):
        raise WorkloadError(f"block_size must be an integer >= 1, got {block_size!r}")


def engine_block_keys(w: Workload, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, keys)``, int64: request i's engine block keys are
    ``keys[offsets[i]:offsets[i + 1]]``, one per full block of ``block_size`` tokens
    within its first ``hashed_tokens[i]`` tokens; equal keys <=> equal token prefixes.
    A workload without prefix content gets no keys."""
    _check_block_size(block_size)
    offsets = np.zeros(len(w) + 1, dtype=np.int64)
    if not w.has_prefix:
        return offsets, np.empty(0, dtype=np.int64)
    np.cumsum(w.hashed_tokens // block_size, out=offsets[1:])
    keys = _keys(content_chain(w), w.hash_offsets, w.hashed_tokens, w.hash_block_tokens, int(block_size),
                 offsets, _MASK63)
    return offsets, keys.view(np.int64)


def hit_ceiling(w: Workload, block_size: int) -> float:
    """Share of all prompt tokens an infinite prefix cache could serve: each request hits
    the full blocks it shares with any earlier request (prompt or output blocks that the
    ids describe), at most ``floor((prompt - 1) / block_size)`` blocks as vLLM caps the
    hit at ``prompt - 1`` tokens. 0 without prefix content.

    Computed per content block, not per engine key: request i shares tokens
    ``[0, min(R, (j+1) H))`` of content block j, where R is the largest keyed reach
    ``floor(hashed / bs) * bs`` of an earlier request with the same chain value there.
    """
    _check_block_size(block_size)
    if not w.has_prefix or not len(w.hash_ids):
        return 0.0
    lens = np.diff(w.hash_offsets)
    req = np.repeat(np.arange(len(w)), lens)
    reach = w.hashed_tokens // block_size * block_size
    chain = content_chain(w)
    order = np.lexsort((req, chain))  # equal chain values together, earlier requests first
    c, r = chain[order], reach[req[order]]
    group = np.concatenate(([0], np.cumsum(c[1:] != c[:-1])))
    span = int(reach.max()) + 1
    best = np.maximum.accumulate(group * span + r) - group * span  # running max within a group
    earlier = np.zeros(len(c), dtype=np.int64)  # max reach of an earlier request, 0 if none
    same = group[1:] == group[:-1]
    earlier[1:][same] = best[:-1][same]
    shared = np.empty(len(c), dtype=np.int64)
    end = (np.arange(len(c)) - w.hash_offsets[req] + 1) * w.hash_block_tokens  # block end, file order
    shared[order] = earlier
    shared = np.minimum(np.minimum(shared, end), reach[req])
    hit = np.zeros(len(w), dtype=np.int64)
    np.maximum.at(hit, req, shared)
    hit = np.minimum(hit // block_size, (w.prompt_tokens - 1) // block_size)
    return float(hit.sum() * block_size / w.prompt_tokens.sum())
