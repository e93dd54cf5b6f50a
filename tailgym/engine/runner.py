"""Drive the numba step loop from Python: chunks of steps, a progress bar, step and batch logs."""
import numpy as np
from tqdm import tqdm

from . import layout as L
from .state import EngineConfig, EngineState
from .step import run_engine

CHUNK_STEPS = 200_000
BATCH_LOG_ROWS = 1 << 16
NO_LOG = np.zeros((0, L.L_COLS))
NO_BATCH_LOG = np.zeros((0, L.BL_COLS), dtype=np.int64)
UNLIMITED = np.iinfo(np.int64).max


class EngineError(RuntimeError):
    """The engine stopped in an impossible state (a bug, never a workload property)."""


def run(state: EngineState, config: EngineConfig, coef: np.ndarray, policy, params: np.ndarray,
        *, progress: bool = False, record_steps: bool = False, record_batches: bool = False,
        max_steps: int | None = None, until: float = np.inf):
    """Step ``state`` until every request is finished or rejected, ``max_steps`` batches ran,
    or the clock reached ``until`` (simulated seconds; checked between steps).

    Returns ``(step_log, batch_log)``: the step log (``(steps, L_COLS)`` array, see
    ``layout.L_*``) if ``record_steps``, and the batch log (``(rows, BL_COLS)``: every
    scheduled ``(request, tokens)`` and every preemption, by step) if ``record_batches``;
    None where not asked for.
    """
    cfg_i, cfg_f = config.arrays(policy, params)
    coef = np.ascontiguousarray(coef, dtype=np.float64)
    logs, blogs = [], []
    n_done_target = state.n_requests - int((state.ri[:, L.STATUS] == L.ST_REJECTED).sum())
    bar = tqdm(total=n_done_target, unit="req", desc="simulating", disable=not progress,
               delay=0.5, leave=False)
    steps_left = max_steps if max_steps is not None else UNLIMITED
    blog = np.zeros((BATCH_LOG_ROWS + 2 * config.max_num_seqs + 2, L.BL_COLS), dtype=np.int64) \
        if record_batches else NO_BATCH_LOG
    try:
        while steps_left > 0:
            chunk = int(min(CHUNK_STEPS, steps_left))
            log = np.zeros((chunk if record_steps else 0, L.L_COLS))
            done = run_steps(state, cfg_i, cfg_f, coef, params, until, chunk, log, blog)
            steps_left -= done
            if record_steps:
                logs.append(log[:done])
            log_full = record_batches and state.s[L.S_BLOG] + 2 * config.max_num_seqs + 2 > len(blog)
            if record_batches:
                blogs.append(blog[:state.s[L.S_BLOG]].copy())
                state.s[L.S_BLOG] = 0
            bar.update(int(state.s[L.S_N_FINISHED]) - bar.n)
            if (done < chunk and not log_full) or state.t[L.T_NOW] >= until:
                break
    finally:
        bar.close()
    return (np.concatenate(logs) if record_steps else None,
            np.concatenate(blogs) if record_batches else None)


def run_steps(state: EngineState, cfg_i: np.ndarray, cfg_f: np.ndarray, coef: np.ndarray,
              params: np.ndarray, until: float, max_steps: int = UNLIMITED, log=NO_LOG,
              blog=NO_BATCH_LOG) -> int:
    """At most ``max_steps`` steps of ``run`` with prepared config arrays (no progress bar);
    returns the steps run. Raises ``EngineError`` if the engine reports an error."""
    done = run_engine(state.rf, state.ri, state.target, state.hint, state.queues, state.batches,
                      state.s, state.t, cfg_i, cfg_f, coef, params, state.pstate, state.kv, log,
                      blog, max_steps, float(until))
    err = int(state.s[L.S_ERROR])
    if err:
        raise EngineError(f"engine error {err} at t={state.t[L.T_NOW]:.6f}s after "
                          f"{state.s[L.S_STEPS]} steps: {state.status_counts()}")
    return done
