"""Hardware in the loop: tailgym's scheduler drives the real PyTorch engine step by step.

The numba core plans each step exactly as in a simulation (same policies, same block
accounting); ``BlockTables`` turns the engine's per-request block counts into physical block
ids of the paged KV pool (and host slots for swapped requests), the executor runs the batch on
the device, and the measured time (step plus KV swap copies) advances the clock.
"""
import time

import numpy as np

from ..engine import layout as L
from ..engine.cost import batch_features
from ..engine.step import PLAN_AGAIN, PLAN_DONE, PLAN_READY, finish_step, plan_step
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

    def sync(self, ri: np.ndarray, cache: PagedKVCache) -> None:
        """Apply what the engine did since the last sync. An eviction releases all of a
        request's blocks (swap-outs first copy them to host slots); growth takes new blocks
        (a swap-in copies the host slots back into them). A request may be evicted and
        re-admitted within one plan, so both halves can apply to it."""
        blocks, swaps = ri[:, L.BLOCKS], ri[:, L.N_SWAP]
        changed = np.flatnonzero((blocks != self.blocks) | (swaps != self.swaps))
        for i in changed:
            held = self.gpu.get(i, [])
            if swaps[i] > self.swaps[i]:                       # swapped out
                self.host[i] = self._take(self.free_host, len(held))
                cache.swap_out(held, self.host[i])
            if swaps[i] > self.swaps[i] or blocks[i] < self.blocks[i]:
                self.free.extend(reversed(self.gpu.pop(i, [])))
        for i in changed:
            table = self.gpu.setdefault(i, [])
            table.extend(self._take(self.free, int(blocks[i]) - len(table)))
            if i in self.host and ri[i, L.HOST_BLOCKS] == 0:   # swapped back in
                cache.swap_in(self.host[i], table[:len(self.host[i])])
                self.free_host.extend(self.host.pop(i))
            if not table:
                del self.gpu[i]
        self.blocks[:] = blocks
        self.swaps[:] = swaps


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
        """Apply the plan's evictions and swaps to the KV pool, run the batch; seconds taken
        (the step plus the KV swap copies)."""
        nb = int(st.s[L.S_BATCH])
        t0 = time.perf_counter()
        self.tables.sync(st.ri, self.cache)
        if len(self.tables.free) != st.s[L.S_FREE_BLOCKS]:
            raise RuntimeError("KV block tables out of step with the engine's accounting")
        swap_s = 0.0
        if st.s[L.S_SWAP_BLOCKS]:
            _synchronize(self.device)
            swap_s = time.perf_counter() - t0
        reqs = [(int(i), int(st.ri[i, L.COMPUTED]), int(n), self.tables.gpu[i])
                for i, n in zip(st.batch[0, :nb], st.batch[1, :nb])]
        return self.executor.step(reqs) + swap_s

    def release(self, st) -> None:
        """Free the blocks of requests that finished in the last step."""
        self.tables.sync(st.ri, self.cache)


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
    x = np.zeros(L.N_FEATURES)
    log = []
    start = time.perf_counter()
    while True:
        status = plan_step(st.rf, st.ri, st.hint, st.queues, st.batch, st.s, st.t, cfg_i, cfg_f,
                           coef, run.params, st.pstate, np.inf)
        if status == PLAN_AGAIN:
            continue
        if status == PLAN_DONE:
            break
        if status != PLAN_READY:
            raise RuntimeError(f"engine error {st.s[L.S_ERROR]} at t={st.t[L.T_NOW]:.3f}s")
        batch_features(st.batch, int(st.s[L.S_BATCH]), x)
        dt = engine.execute(st)
        finish_step(st.rf, st.ri, st.target, st.hint, st.queues, st.batch, st.s, st.t, cfg_i,
                    run.params, st.pstate, dt)
        log.append((*x, dt))
    engine.release(st)
    report = run.report(time.perf_counter() - start)
    report.config.update(device=device, hil_model=spec.name)
    return report, np.array(log).reshape(-1, L.N_FEATURES + 1)
