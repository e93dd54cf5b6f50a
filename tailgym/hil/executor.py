"""One engine step on the device: a batch of requests over the paged KV cache, timed.

The linear layers and MLP run on all new tokens of the step at once. Attention writes the
new K/V into each request's blocks, then reads its whole context back through the block
table: each multi-token chunk (prefill or recompute) on its own, the single-token requests
(decodes) batched in groups of similar context length, padded to the longest of the group
(at most ``DECODE_PAD_RATIO`` times the shortest, which bounds the wasted reads).
Grouped-query heads fold into the query-length axis, so every kernel call is a plain
masked ``scaled_dot_product_attention``, the same code on CPU and CUDA. Token ids are
pseudo-random but content-true: the same within a request on every recompute, and the same
across requests in the blocks their workload ids share (``token_seeds``), so a request that
reads another's cached blocks reads its own tokens' KV.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..hardware import ModelSpec
from .kv_cache import PagedKVCache
from .model import Llama

DECODE_PAD_RATIO = 2.0


KEYED_SEED = 1 << 31  # seeds of keyed tokens lie above every request id


def token_ids(seeds: torch.Tensor, positions: torch.Tensor, vocab: int) -> torch.Tensor:
    """Deterministic pseudo-random token of each (seed, position): an integer hash, so a
    recomputed request sees the same tokens on any device (seeds: ``token_seeds``)."""
    h = seeds * 0x9E3779B1 + positions * 0x85EBCA77 + 0x165667B1
    h = (h ^ (h >> 15)) * 0x2C1B3C6D
    return torch.remainder(h ^ (h >> 13), vocab)


def token_seeds(requests: np.ndarray, positions: np.ndarray, block_size: int,
                block_keys=None) -> np.ndarray:
    """The seed of each token of request ``requests[j]`` at ``positions[j]``: in a block that
    has a workload key (``block_keys = (offsets, keys)``, as ``engine_block_keys`` gives and
    the engine state keeps), 31 bits of that key above ``KEYED_SEED``, so requests sharing a
    prefix (equal keys) have the same tokens in its blocks; elsewhere the request id."""
    seeds = np.array(requests, dtype=np.int64)
    if block_keys is None or not len(block_keys[1]):
        return seeds
    offsets, keys = block_keys
    at = offsets[seeds] + positions // block_size
    keyed = at < offsets[seeds + 1]
    seeds[keyed] = KEYED_SEED | (keys[at[keyed]] & (KEYED_SEED - 1))
    return seeds


class HILExecutor:
    """Runs engine steps of a random-weight :class:`~tailgym.hil.model.Llama` on ``cache``."""

    def __init__(self, spec: ModelSpec, cache: PagedKVCache, *, device="cpu", dtype=torch.float32,
                 seed: int = 0):
        self.device = torch.device(device)
        if cache.device != self.device or cache.k.dtype != dtype:
            raise ValueError(f"cache is {cache.k.dtype} on {cache.device}, executor {dtype} on {self.device}")
        self.spec, self.cache = spec, cache
        self.model = Llama(spec, device=self.device, dtype=dtype, seed=seed)
        self._logits = None
        self._cuda = self.device.type == "cuda"
        if self._cuda:
            self._events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def step(self, reqs: list[tuple[int, int, int, list[int]]], block_keys=None) -> float:
        """Run one step; ``reqs`` are (request_id, computed, n_new, block_table), the tokens
        seeded by ``token_seeds`` with ``block_keys``. Returns seconds."""
        if self._cuda:
            self._events[0].record()
        else:
            start = time.perf_counter()
        with torch.inference_mode():
            ids, positions, last, attention = self._prepare(reqs, block_keys)
            self._logits = self.model(ids, positions, attention, select=last)
        if not self._cuda:
            return time.perf_counter() - start
        self._events[1].record()
        self._events[1].synchronize()
        return self._events[0].elapsed_time(self._events[1]) / 1e3

    def last_logits(self) -> torch.Tensor:
        """Logits [requests, vocab] of each request's last new token in the last step."""
        return self._logits

    def _prepare(self, reqs, block_keys):
        """Token ids, positions and last-token rows of the step, and its attention callback."""
        bs, dev = self.cache.block_size, self.device
        rid, computed, n_new = (np.array([r[i] for r in reqs], dtype=np.int64) for i in range(3))
        if len(reqs) == 0 or (n_new < 1).any():
            raise ValueError("a step needs at least one request, each with n_new >= 1")
        ends = np.cumsum(n_new)
        starts = ends - n_new
        owner = np.repeat(np.arange(len(reqs)), n_new)
        pos = computed[owner] + np.arange(ends[-1]) - starts[owner]
        n_blocks = -(-(computed + n_new) // bs)
        tables = np.zeros((len(reqs), n_blocks.max()), dtype=np.int64)
        for i, (r, n) in enumerate(zip(reqs, n_blocks)):
            if len(r[3]) < n:
                raise ValueError(f"request {r[0]}: {n} blocks needed, block table has {len(r[3])}")
            tables[i, :n] = r[3][:n]
        slots = tables[owner, pos // bs] * bs + pos % bs

        def tensor(a):
            return torch.as_tensor(a, device=dev)

        groups = [(slice(s, e), tensor(tables[i:i + 1, :nb]), tensor(pos[s:e][None]))
                  for i, (s, e, nb) in enumerate(zip(starts, ends, n_blocks)) if e - s > 1]
        single = np.flatnonzero(n_new == 1)
        single = single[np.argsort(n_blocks[single], kind="stable")]
        bucket = np.floor(np.log(n_blocks[single]) / np.log(DECODE_PAD_RATIO))
        for g in np.split(single, np.flatnonzero(np.diff(bucket)) + 1):
            if len(g):
                groups.append((tensor(starts[g]), tensor(tables[g, :n_blocks[g].max()]),
                               tensor(pos[starts[g]][:, None])))
        positions = tensor(pos)
        ids = token_ids(tensor(token_seeds(rid[owner], pos, bs, block_keys)), positions,
                        self.spec.vocab)
        return ids, positions, tensor(ends - 1), self._attention(tensor(slots), groups)

    def _attention(self, slots, groups):
        """The paged attention callback of a step (see the module docstring)."""
        cache, spec = self.cache, self.spec
        kvh, group, d = spec.n_kv_heads, spec.n_heads // spec.n_kv_heads, spec.head_dim
        masks = []
        for _, table, qpos in groups:
            b, n = qpos.shape
            keys = torch.arange(table.shape[1] * cache.block_size, device=self.device)
            mask = (keys <= qpos[..., None])[:, None, :, None, :]
            masks.append(mask.expand(b, 1, n, group, keys.numel()).reshape(b, 1, n * group, -1))

        def attention(layer, q, k, v):
            k_pool, v_pool = cache.k[layer], cache.v[layer]
            k_pool.view(-1, kvh, d).index_copy_(0, slots, k)
            v_pool.view(-1, kvh, d).index_copy_(0, slots, v)
            out = torch.empty(q.shape, device=q.device, dtype=q.dtype)
            for (rows, table, qpos), mask in zip(groups, masks):
                b, n = qpos.shape
                qg = q[rows].reshape(b, n, kvh, group, d).transpose(1, 2).reshape(b, kvh, n * group, d)
                kg, vg = (p[table].view(b, -1, kvh, d).transpose(1, 2) for p in (k_pool, v_pool))
                o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask)
                out[rows] = o.view(b, kvh, n, group, d).transpose(1, 2).reshape(b * n, kvh * group, d)
            return out.view(q.shape[0], -1)

        return attention
