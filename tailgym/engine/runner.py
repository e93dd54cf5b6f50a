"""Drive the numba step loop from Python: chunks of steps, a progress bar, a step log."""
import numpy as np
from tqdm import tqdm

from . import layout as L
from .state import EngineConfig, EngineState
from .step import run_engine

CHUNK_STEPS = 200_000
NO_LOG = np.zeros((0, L.L_COLS))
UNLIMITED = np.iinfo(np.int64).max


class EngineError(RuntimeError):
    """The engine stopped in an impossible state (a bug, never a workload property)."""


def run(state: EngineState, config: EngineConfig, coef: np.ndarray, policy, params: np.ndarray,
        *, progress: bool = False, record_steps: bool = False, max_steps: int | None = None,
        until: float = np.inf):
    """Step ``state`` until every request is finished or rejected, ``max_steps`` ran, or the
    clock reached ``until`` (simulated seconds; checked between steps).

    Returns the step log (``(steps, L_COLS)`` array, see ``layout.L_*``) if ``record_steps``.
    """
    cfg_i, cfg_f = config.arrays(policy, params)
    coef = np.ascontiguousarray(coef, dtype=np.float64)
    logs = []
    n_done_target = state.n_requests - int((state.ri[:, L.STATUS] == L.ST_REJECTED).sum())
    bar = tqdm(total=n_done_target, unit="req", desc="simulating", disable=not progress,
               delay=0.5, leave=False)
    steps_left = max_steps if max_steps is not None else UNLIMITED
    try:
        while steps_left > 0:
            chunk = int(min(CHUNK_STEPS, steps_left))
            log = np.zeros((chunk if record_steps else 0, L.L_COLS))
            done = run_steps(state, cfg_i, cfg_f, coef, params, until, chunk, log)
            steps_left -= done
            if record_steps:
                logs.append(log[:done])
            bar.update(int(state.s[L.S_N_FINISHED]) - bar.n)
            if done < chunk or state.t[L.T_NOW] >= until:
                break
    finally:
        bar.close()
    return np.concatenate(logs) if record_steps else None


def run_steps(state: EngineState, cfg_i: np.ndarray, cfg_f: np.ndarray, coef: np.ndarray,
              params: np.ndarray, until: float, max_steps: int = UNLIMITED, log=NO_LOG) -> int:
    """At most ``max_steps`` steps of ``run`` with prepared config arrays (no progress bar);
    returns the steps run. Raises ``EngineError`` if the engine reports an error."""
    done = run_engine(state.rf, state.ri, state.target, state.hint, state.queues, state.batch,
                      state.s, state.t, cfg_i, cfg_f, coef, params, state.pstate, log,
                      max_steps, float(until))
    err = int(state.s[L.S_ERROR])
    if err:
        raise EngineError(f"engine error {err} at t={state.t[L.T_NOW]:.6f}s after "
                          f"{state.s[L.S_STEPS]} steps: {state.status_counts()}")
    return done
