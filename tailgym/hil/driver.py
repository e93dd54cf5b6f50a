"""Hardware in the loop: tailgym's scheduler drives the real PyTorch engine step by step.

The numba core plans each step exactly as in a simulation (same policies, same block
accounting, same sync or async pipeline); ``BlockTables`` turns the engine's blocks into
physical block ids of the paged KV pool (and host slots for swapped requests): with prefix
caching the engine's own block ids, so requests with a shared prefix read the same physical
blocks and only uncached tokens are computed; without it, ids handed out for the engine's block
counts. The executor runs each batch on the device as it is formed, with the tokens the engine's
block keys give (the same tokens where prefixes are shared), and the measured time (step plus
KV swap copies) is its duration.
"""
import time

import numpy as np

from ..engine import layout as L
from ..engine.cost import batch_features
from ..engine.step import (PLAN_AGAIN, PLAN_DONE, begin_step, complete_batch, enqueue_batch,
                           form_batch, has_requests)
from ..sim import prepare
from ..workload import load_workload
from .executor import HILExecutor
from .kv_cache import PagedKVCache
from .model import model_spec


class BlockTables:
    """Physical block ids of each request, kept in step with the engine's block counts."""

    def __init__(self, num_blocks: int, host_blocks: int, n_requests: int):
        self.free = list(range(num_blocks - 1, -1, -1))
        self.free_host = list(range(host_blocks - 1, -1, -1))
        self.gpu: dict[int, list[int]] = {}
        self.host: dict[int, list[int]] = {}
        self.blocks = np.zeros(n_requests, dtype=np.int64)
        self.swaps = np.zeros(n_requests, dtype=np.int64)

    @staticmethod
    def _take(pool: list[int], n: int) -> list[int]:
        return [pool.pop() for _ in range(n)]

    def sync(self, ri: np.ndarray, cache: PagedKVCache, engine_tables=None) -> None:
        """Apply what the engine did since the last sync, in an order right for any order of
        the plan's evictions and admissions: host copies leaving the host (swapped back in, or
        finished while swapped out) are staged on the device and their host slots freed;
        swap-outs copy the blocks they held to host slots (another pass stages those swapped
        back in within the same plan); the tables follow the engine's; the staged copies land
        in the swapped-in requests' new blocks. ``engine_tables`` (prefix caching): the
        engine's block tables, whose ids are used as they are; without them an eviction
        releases all of a request's blocks and growth takes new ones."""
        staged = self._leave_host(ri, cache)
        swapped = ri[:, L.N_SWAP] > self.swaps
        for i in np.flatnonzero(swapped):
            if i not in self.host:  # else swapped back in and out again: its host copy stands
                held = self.gpu.get(i, [])
                self.host[i] = self._take(self.free_host, len(held))
                cache.swap_out(held, self.host[i])
        staged.update(self._leave_host(ri, cache))
        if engine_tables is None:
            self._follow_counts(ri[:, L.BLOCKS], swapped)
        else:
            self.gpu = {int(i): engine_tables[ri[i, L.ROW], :ri[i, L.BLOCKS]].tolist()
                        for i in np.flatnonzero(ri[:, L.ROW] >= 0)}
        for i, blocks in staged.items():
            cache.store(self.gpu[i][:len(blocks)], blocks)
        self.swaps[:] = ri[:, L.N_SWAP]

    def _leave_host(self, ri, cache) -> dict:
        """Free the host slots of requests the engine no longer keeps on the host; the staged
        copies of those that hold GPU blocks again."""
        staged = {}
        for i in [i for i in self.host if ri[i, L.HOST_BLOCKS] == 0]:
            slots = self.host.pop(i)
            if ri[i, L.BLOCKS] > 0:
                staged[i] = cache.fetch(slots)
            self.free_host.extend(slots)
        return staged

    def _follow_counts(self, blocks, swapped) -> None:
        """Block ids for the engine's block counts: evicted requests free theirs (a request
        may be evicted and re-admitted within one plan, so both halves can apply to it)."""
        changed = np.flatnonzero((blocks != self.blocks) | swapped)
        for i in changed:
            if swapped[i] or blocks[i] < self.blocks[i]:
                self.free.extend(reversed(self.gpu.pop(i, [])))
        for i in changed:
            table = self.gpu.setdefault(i, [])
            table.extend(self._take(self.free, int(blocks[i]) - len(table)))
            if not table:
                del self.gpu[i]
        self.blocks[:] = blocks


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


class HILEngine:
    """The real engine behind one ``EngineState``: the paged KV pool, its block tables and
    the executor. ``execute`` runs the batch the numba scheduler just formed."""

    def __init__(self, spec, config, n_requests: int, *, device: str = "cpu", dtype=None,
                 seed: int = 0):
        extra = {"dtype": dtype} if dtype else {}
        self.device = device
        self.cache = PagedKVCache(spec, config.num_gpu_blocks, config.block_size, device=device,
                                  host_blocks=config.num_host_blocks, **extra)
        self.executor = HILExecutor(spec, self.cache, device=device, seed=seed, **extra)
        self.config = config
        self.new_episode(n_requests)

    def new_episode(self, n_requests: int) -> None:
        """Empty block tables for a new run (the weights and the pool stay)."""
        self.tables = BlockTables(self.config.num_gpu_blocks, self.config.num_host_blocks,
                                  n_requests)

    def execute(self, st) -> float:
        """Apply the plan's evictions and swaps to the KV pool, run the batch just formed;
        seconds taken (the step plus the KV swap copies)."""
        nb = int(st.s[L.S_BATCH])
        t0 = time.perf_counter()
        self.sync(st)
        if not self.config.enable_prefix_caching and len(self.tables.free) != st.s[L.S_FREE_BLOCKS] + 1:
            raise RuntimeError("KV block tables out of step with the engine's accounting")
        swap_s = 0.0
        if st.s[L.S_SWAP_BLOCKS]:
            _synchronize(self.device)
            swap_s = time.perf_counter() - t0
        b = st.batch
        reqs = [(int(i), int(c), int(n), self.tables.gpu[int(i)])
                for i, n, c in zip(b[L.B_REQ, :nb], b[L.B_NEW, :nb], b[L.B_CONTEXT, :nb])]
        return self.executor.step(reqs, (st.key_off, st.keys)) + swap_s if nb else 0.0

    def sync(self, st) -> None:
        """Bring the block tables in step with the engine (e.g. after the last step)."""
        self.tables.sync(st.ri, self.cache,
                         st.pool_tables if self.config.enable_prefix_caching else None)

    release = sync


def run_hil(workload, policy: str = "fcfs", *, model: str = "tiny", device: str = "cpu",
            limit: int | None = None, kv_blocks: int = 512, dtype=None, seed: int = 0,
            data_dir=None, **kwargs):
    """Replay the first ``limit`` requests of ``workload`` on the real engine.

    Returns the ``Report`` (the same as ``tailgym.simulate``'s, with measured step times) and
    the step log: one row per step, the five step-time features then the measured seconds.
    ``kwargs`` are ``prepare``'s (``gpu`` names the GPU for the default step-time model that
    policies use for their work units, ``profile`` a fitted one, engine knobs...).
    """
    spec = model_spec(model)
    wl = load_workload(workload, data_dir=data_dir, seed=seed)
    if limit is not None:
        wl = wl.head(limit)
    run = prepare(wl, policy, model=spec, seed=seed, kv_blocks=kv_blocks, **kwargs)
    st = run.state
    engine = HILEngine(spec, run.config, st.n_requests, device=device, dtype=dtype, seed=seed)
    cfg_i, cfg_f = run.config.arrays(run.spec, run.params)
    coef = run.steps.coef()
    log = []
    start = time.perf_counter()
    while True:
        status = begin_step(st.rf, st.ri, st.hint, st.queues, st.s, st.t, cfg_i, cfg_f,
                            run.params, st.pstate, st.kv, np.inf)
        if status == PLAN_AGAIN:
            continue
        if status == PLAN_DONE:
            break
        if has_requests(st.s):
            form_batch(st.rf, st.ri, st.target, st.queues, st.batch, st.s, cfg_i, cfg_f, coef,
                       st.kv, st.t[L.T_NOW])
            if st.s[L.S_ERROR]:
                raise RuntimeError(f"engine error {st.s[L.S_ERROR]} at t={st.t[L.T_NOW]:.3f}s")
            nb = int(st.s[L.S_BATCH])
            x = batch_features(st.batch, nb)
            dt = engine.execute(st)
            if nb:
                log.append((*x, dt))
            if not enqueue_batch(st.s, st.t, cfg_i, dt):
                continue
        complete_batch(st.rf, st.ri, st.target, st.hint, st.queues, st.batches, st.s, st.t,
                       cfg_i, run.params, st.pstate, st.kv)
    engine.release(st)
    report = run.report(time.perf_counter() - start)
    report.config.update(device=device, hil_model=spec.name)
    return report, np.array(log).reshape(-1, L.N_FEATURES + 1)
