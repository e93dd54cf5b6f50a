"""``tailgym.simulate(..., replicas=N, router=NAME)``: N engine replicas behind a router."""
import time

import numpy as np
from tqdm import tqdm

from ..engine import EngineError
from ..engine import layout as L
from ..engine.runner import NO_BATCH_LOG, NO_LOG
from ..metrics import Report
from ..sim import prepare
from . import core
from .routers import SIG_COLS, get_router

ROUTER_STREAM = 11   # random stream of the router's pre-drawn numbers
PROGRESS_ROWS = 50_000


class Fleet:
    """``replicas`` copies of one prepared run's engine, the router's state and the stacked
    arrays of ``core`` (see there); ``run`` fills the run's global request table."""

    def __init__(self, run, replicas: int, router: str, router_args, refresh_s: float):
        self.run, self.n = run, int(replicas)
        self.spec = get_router(router)
        self.knobs = self.spec.knobs(router_args)
        self.refresh_s = float(refresh_s)
        st, n_req = run.state, run.state.n_requests
        cfg_i, self.cfg_f = run.config.arrays(run.spec, run.params)
        cfg_i[L.C_CHECK] = 0  # checked per replica here (the engine's check sums all requests)
        self.cfg_i = cfg_i
        tile = lambda a: np.repeat(a[np.newaxis], self.n, axis=0)  # noqa: E731
        s = st.s.copy()
        s[L.S_N_ARRIVALS] = 0
        cap = min(max(n_req, 1), max(256, 2 * run.config.max_num_seqs))
        self.rep = (np.zeros((self.n, L.Q_ROWS, cap), dtype=np.int64), tile(st.batches), tile(s),
                    tile(st.t), tile(st.pstate), tile(st.pool_blocks), tile(st.pool_map),
                    tile(st.pool_tables), tile(st.pool_rows))
        self.common = (st.rf, st.ri, st.target, st.hint, cfg_i, self.cfg_f,
                       np.ascontiguousarray(run.steps.coef(), dtype=np.float64), run.params,
                       st.key_off, st.keys)
        self.replica_of = np.full(n_req, -1, dtype=np.int64)
        self.fleet = (self.replica_of, np.zeros(self.n, dtype=np.int64),
                      np.zeros((self.n, SIG_COLS)), np.full(self.n, np.inf),
                      np.arange(self.n, dtype=np.int64), np.arange(self.n, dtype=np.int64))
        self.snap = np.zeros((self.n, SIG_COLS))
        self.u = np.random.default_rng([run.info["seed"], ROUTER_STREAM]).random((n_req, 2))
        self.fl = np.zeros(core.F_COLS, dtype=np.int64)
        self.t0 = float(st.t[L.T_NOW])
        self.prefix = self.spec.reads_prefix and run.config.enable_prefix_caching

    def _grow(self) -> None:
        q = self.rep[0]
        bigger = np.zeros((*q.shape[:2], 2 * q.shape[2]), dtype=np.int64)
        bigger[:, :, :q.shape[2]] = q
        self.rep = (bigger, *self.rep[1:])

    def simulate(self, progress: bool = False) -> None:
        """Route every request and run every replica to the end."""
        n_req = self.run.state.n_requests
        bar = tqdm(total=n_req, unit="req", desc="routing", disable=not progress, delay=0.5,
                   leave=False)
        try:
            while True:
                stop = min(int(self.fl[core.F_NEXT]) + PROGRESS_ROWS, n_req) if progress else n_req
                status = core.run_fleet(
                    self.common, self.rep, self.fleet, self.snap, np.zeros(self.n), self.u,
                    self.fl, self.spec.rid, self.spec.param_array(self.knobs), self.refresh_s,
                    self.t0, self.run.config.check, self.spec.reads_tokens, self.prefix, stop,
                    NO_LOG, NO_BATCH_LOG)
                bar.update(int(self.fl[core.F_NEXT]) - bar.n)
                if status == core.FLEET_DONE:
                    break
                if status == core.FLEET_GROW:
                    self._grow()
                elif status == core.FLEET_ERROR:
                    r = int(self.fl[core.F_BAD])
                    s, t = self.rep[2][r], self.rep[3][r]
                    raise EngineError(f"engine error {int(s[L.S_ERROR])} in replica {r} at "
                                      f"t={t[L.T_NOW]:.6f}s after {int(s[L.S_STEPS])} steps")
        finally:
            bar.close()
        s = self.rep[2]
        routed = self.fleet[1]
        if not np.array_equal(routed, s[:, L.S_N_FINISHED]):
            raise EngineError(f"replicas finished {s[:, L.S_N_FINISHED].tolist()} of the "
                              f"requests routed to them {routed.tolist()}")

    def report(self, wall_seconds: float, **kwargs) -> Report:
        """The single-engine report over all requests (scalars summed over replicas, the clock
        of the last), with each request's ``replica`` and the per-replica figures."""
        s, t, st = self.rep[2], self.rep[3], self.run.state
        st.s = s.sum(axis=0)
        st.t = t.max(axis=0)
        st.t[L.T_BUSY] = t[:, L.T_BUSY].sum()
        span = float(st.t[L.T_NOW] - self.t0)
        busy = t[:, L.T_BUSY] / span if span > 0 else np.zeros(self.n)
        routed = self.fleet[1]
        fleet = {
            "replicas": self.n, "router": self.spec.name, "router_args": self.knobs,
            "router_refresh_s": self.refresh_s,
            "requests": routed.tolist(), "steps": s[:, L.S_STEPS].tolist(),
            "busy_share": busy.tolist(),
            "preemptions": (s[:, L.S_PREEMPT_RECOMPUTE] + s[:, L.S_PREEMPT_SWAP]).tolist(),
            "imbalance": {"requests": _imbalance(routed), "busy": _imbalance(busy)},
        }
        report = self.run.report(wall_seconds, fleet=fleet, **kwargs)
        report.requests["replica"] = self.replica_of.copy()
        return report


def _imbalance(values) -> float:
    """max / mean (1 = balanced; nan when all are 0)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.max() / v.mean()) if v.size and v.mean() > 0 else float("nan")


def simulate_fleet(workload, policy: str = "fcfs", *, replicas: int, router: str = "round-robin",
                   router_args: dict | None = None, router_refresh_s: float = 0.0,
                   warmup_s: float = 0.0, slo=None, progress: bool = False,
                   record_steps: bool = False, record_batches: bool = False, load=None,
                   **kwargs) -> Report:
    """``tailgym.simulate`` with ``replicas`` (see there); ``load`` is per replica."""
    for name, value in (("record_steps", record_steps), ("record_batches", record_batches)):
        if value:
            raise ValueError(f"{name} is not available with replicas (one log per engine)")
    if isinstance(replicas, bool) or not isinstance(replicas, (int, np.integer)) or replicas < 1:
        raise ValueError(f"replicas must be an integer >= 1, got {replicas!r}")
    if isinstance(router_refresh_s, bool) or not (isinstance(router_refresh_s, (int, float))
                                                  and np.isfinite(router_refresh_s)
                                                  and router_refresh_s >= 0):
        raise ValueError(f"router_refresh_s must be a finite number >= 0, got {router_refresh_s!r}")
    get_router(router).knobs(router_args)  # bad names and knobs fail before loading anything
    run = prepare(workload, policy, load=None if load is None else float(load) * int(replicas),
                  **kwargs)
    if load is not None:
        run.info["load"] = float(load)  # per replica; rate_rps is the fleet's
    fleet = Fleet(run, replicas, router, router_args, router_refresh_s)
    run.info.update(replicas=fleet.n, router=router, router_args=fleet.knobs,
                    router_refresh_s=fleet.refresh_s)
    start = time.perf_counter()
    fleet.simulate(progress)
    return fleet.report(time.perf_counter() - start, warmup_s=warmup_s, slo=slo)
