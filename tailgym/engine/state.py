"""Engine configuration and the array state the numba core steps."""
from dataclasses import dataclass

import numpy as np

from . import layout as L
from .blocks import new_pool


@dataclass(frozen=True)
class EngineConfig:
    """Knobs of one serving engine (vLLM names; defaults are vLLM 0.33's). ``num_gpu_blocks``
    includes vLLM's null block (``num_gpu_blocks - 1`` hold KV). ``watermark_blocks`` is the
    number of blocks kept free when admitting a waiting or swapped request while some request
    runs; ``swap_s_per_block`` the time to move one KV block over the host link, one way.
    ``async_scheduling``, ``enable_prefix_caching`` and ``scheduler_reserve_full_isl``: see
    ``tailgym.engine.step``, ``blocks`` and ``schedule.plan_admission``."""

    max_num_batched_tokens: int
    max_num_seqs: int
    num_gpu_blocks: int
    block_size: int = 16
    num_host_blocks: int = 0
    preemption_mode: str = "recompute"
    long_prefill_token_threshold: int = 0
    enable_chunked_prefill: bool = True
    watermark_blocks: int = 0
    max_model_len: int = 1 << 62
    swap_s_per_block: float = 0.0
    async_scheduling: bool = True
    enable_prefix_caching: bool = True
    scheduler_reserve_full_isl: bool = True
    check: bool = False

    def __post_init__(self):
        positive = ("max_num_batched_tokens", "max_num_seqs", "block_size", "max_model_len")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.num_gpu_blocks) < 2:
            raise ValueError(f"num_gpu_blocks must be >= 2 (block 0 is reserved), "
                             f"got {self.num_gpu_blocks}")
        for name in ("num_host_blocks", "long_prefill_token_threshold", "watermark_blocks"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.preemption_mode not in ("recompute", "swap"):
            raise ValueError(f"preemption_mode must be 'recompute' or 'swap', "
                             f"got {self.preemption_mode!r}")
        if not self.enable_chunked_prefill and self.max_model_len > self.max_num_batched_tokens:
            raise ValueError(f"without chunked prefill max_num_batched_tokens "
                             f"({self.max_num_batched_tokens}) must be >= max_model_len "
                             f"({self.max_model_len}), as in vLLM")
        if not self.swap_s_per_block >= 0:
            raise ValueError(f"swap_s_per_block must be >= 0, got {self.swap_s_per_block}")

    def arrays(self, policy, params=None) -> tuple[np.ndarray, np.ndarray]:
        """``cfg_i`` and ``cfg_f`` for the numba core, with the policy's engine settings
        (scheduler mode, victim rule, guard, hysteresis...) for knob values ``params``."""
        run = policy.settings(policy.param_array() if params is None else params)
        cfg_i = np.zeros(L.CI_COLS, dtype=np.int64)
        cfg_i[L.C_BUDGET] = self.max_num_batched_tokens
        cfg_i[L.C_MAX_SEQS] = self.max_num_seqs
        cfg_i[L.C_BLOCK_SIZE] = self.block_size
        cfg_i[L.C_GPU_BLOCKS] = self.num_gpu_blocks
        cfg_i[L.C_HOST_BLOCKS] = self.num_host_blocks
        cfg_i[L.C_PREEMPT_MODE] = L.PM_SWAP if self.preemption_mode == "swap" else L.PM_RECOMPUTE
        cfg_i[L.C_LONG_PREFILL] = self.long_prefill_token_threshold
        cfg_i[L.C_CHUNKED] = int(self.enable_chunked_prefill)
        cfg_i[L.C_WATERMARK] = self.watermark_blocks + int(np.ceil(run.reserve * self.num_gpu_blocks))
        cfg_i[L.C_POLICY] = policy.pid
        cfg_i[L.C_CHECK] = int(self.check)
        cfg_i[L.C_VICTIM] = run.victim
        cfg_i[L.C_REPRIORITIZE] = int(run.reprioritize)
        cfg_i[L.C_MODE] = run.mode
        cfg_i[L.C_GUARD_K] = run.guard_k
        cfg_i[L.C_COST_AWARE] = int(run.cost_aware)
        cfg_i[L.C_ASYNC] = int(self.async_scheduling)
        cfg_i[L.C_PREFIX] = int(self.enable_prefix_caching)
        cfg_i[L.C_FULL_ISL] = int(self.scheduler_reserve_full_isl)
        cfg_f = np.zeros(L.CF_COLS, dtype=np.float64)
        cfg_f[L.CF_SWAP_S_PER_BLOCK] = self.swap_s_per_block
        cfg_f[L.CF_DELTA] = run.delta
        cfg_f[L.CF_REFRESH_S] = run.refresh_s
        return cfg_i, cfg_f

    def blocks_for_request(self, prompt, output):
        """GPU blocks a request holds at its largest (its last token's KV is never computed)."""
        return -(-(np.asarray(prompt) + np.asarray(output) - 1) // self.block_size)


def line_aligned_zeros(shape, dtype) -> np.ndarray:
    """Zeros starting on a 64-byte boundary, so rows of 64-byte multiples start cache lines."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = np.zeros(size + 64, dtype=np.uint8)
    start = -buffer.ctypes.data % 64
    return buffer[start:start + size].view(dtype).reshape(shape)


class EngineState:
    """Per-request tables, queues, batch slots, the block pool and scalars of one simulation
    (see ``layout`` and ``blocks``). ``block_keys`` = ``(offsets, keys)``: the prefix keys of
    each request's leading blocks (``tailgym.workload.prefix.engine_block_keys``)."""

    def __init__(self, arrival, prompt, output, config: EngineConfig, rejected=None, hint=None,
                 pstate=None, block_keys=None):
        n = len(arrival)
        self.rf = line_aligned_zeros((n, L.RF_COLS), np.float64)
        self.rf[:, L.ARRIVAL] = arrival
        for col in (L.FIRST_SCHED, L.FIRST_TOKEN, L.LAST_TOKEN, L.DONE):
            self.rf[:, col] = np.nan
        self.ri = line_aligned_zeros((n, L.RI_COLS), np.int64)
        self.ri[:, L.PROMPT] = prompt
        self.ri[:, L.ROW] = -1
        self.target = np.array(output, dtype=np.int64)
        self.hint = np.full(n, np.nan) if hint is None else np.asarray(hint, dtype=np.float64)
        self.pstate = np.zeros(1) if pstate is None else np.asarray(pstate, dtype=np.float64)
        if rejected is not None:
            self.ri[rejected, L.STATUS] = L.ST_REJECTED
        self.queues = np.zeros((L.Q_ROWS, max(n, 1)), dtype=np.int64)
        self.queues[L.Q_ARRIVALS, :n] = np.arange(n)
        self.batches = np.zeros((2, L.B_ROWS, config.max_num_seqs + 1), dtype=np.int64)
        self.s = np.zeros(L.S_COLS, dtype=np.int64)
        self.s[L.S_FREE_BLOCKS] = config.num_gpu_blocks - 1  # block 0: vLLM's null block
        self.s[L.S_FREE_HOST] = config.num_host_blocks
        self.s[L.S_N_ARRIVALS] = n
        self.t = np.zeros(L.T_COLS)
        self.t[L.T_NOW] = arrival[0] if n else 0.0
        if block_keys is None:
            block_keys = (np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))
        largest = int(config.blocks_for_request(prompt, output).max()) if n else 1
        (self.pool_blocks, self.pool_map, self.pool_tables, self.pool_rows, self.pool_free,
         self.key_off, self.keys) = new_pool(config.num_gpu_blocks, config.max_num_seqs + 1,
                               min(largest, config.num_gpu_blocks), *block_keys,
                               config.enable_prefix_caching)

    @property
    def kv(self) -> tuple:
        """The block pool arrays as the numba core takes them (see ``blocks``)."""
        return (self.pool_blocks, self.pool_map, self.pool_tables, self.pool_rows,
                self.pool_free, self.key_off, self.keys)

    @property
    def batch(self) -> np.ndarray:
        """The batch slot being formed (async: the other one may be in flight)."""
        return self.batches[self.s[L.S_SLOT]]

    def copy(self) -> "EngineState":
        new = object.__new__(EngineState)
        new.__dict__ = {k: v.copy() for k, v in self.__dict__.items()}
        return new

    @property
    def n_requests(self) -> int:
        return self.rf.shape[0]

    def status_counts(self) -> dict[str, int]:
        codes = {"future": L.ST_FUTURE, "waiting": L.ST_WAITING, "running": L.ST_RUNNING,
                 "swapped": L.ST_SWAPPED, "finished": L.ST_FINISHED, "rejected": L.ST_REJECTED}
        status = self.ri[:, L.STATUS]
        return {name: int((status == code).sum()) for name, code in codes.items()}
