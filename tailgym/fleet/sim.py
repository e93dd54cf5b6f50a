"""``tailgym.simulate(..., replicas=N, router=NAME)``: N engine replicas behind a router.

``replicas`` is a count (every replica on the run's ``gpu``) or, for a heterogeneous fleet, a
mapping GPU name -> count (``{"h100-80gb": 4, "a100-80gb": 4}``; replicas numbered group by
group): each group gets the KV capacity, vLLM defaults and roofline step times of its GPU,
the same model and knobs otherwise; a request any group cannot serve is refused for all.
"""
import inspect
import time

import numpy as np
from tqdm import tqdm

from ..admission import admission_check
from ..engine import EngineError
from ..engine import layout as L
from ..engine.blocks import H_KEY, NO_KEY, NONE, new_pool
from ..engine.runner import NO_BATCH_LOG, NO_LOG
from ..load import saturation_rate
from ..metrics import Report
from ..policies import resolve
from ..sim import build_engine, check_rate_choice, prepare
from ..workload import load_workload
from . import core
from .routers import SIG_COLS, get_router

ROUTER_STREAM = 11   # random stream of the router's pre-drawn numbers
PROGRESS_ROWS = 50_000
ENGINE_KNOBS = tuple(p for p in inspect.signature(build_engine).parameters if p not in ("model", "gpu"))


def fleet_groups(replicas, gpu: str) -> list[tuple[str, int]]:
    """``replicas`` (a count, or GPU name -> count) as ``[(gpu, count), ...]``, checked."""
    def count(n, what):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{what} must be an integer >= 1, got {n!r}")
        return int(n)
    if isinstance(replicas, dict):
        if not replicas:
            raise ValueError("replicas must name at least one GPU group")
        return [(str(g), count(n, f"replicas[{g!r}]")) for g, n in replicas.items()]
    return [(gpu, count(replicas, "replicas"))]


class Group:
    """The engine of one GPU group: configuration, step-time coefficients, policy params and
    a fresh block pool (``EngineState``'s, for the run's requests)."""

    def __init__(self, run, gpu: str, count: int, knobs: dict, policy_args):
        self.gpu, self.count = gpu, count
        if gpu == run.info["gpu"]:
            self.config, steps, self.params = run.config, run.steps, run.params
        else:
            self.config, steps = build_engine(run.info["model"], gpu, **knobs)
            self.params = resolve(run.info["policy"], policy_args, steps.coef(),
                                  self.config.max_num_seqs)[2]
        self.coef = steps.coef()
        self.cfg_i, self.cfg_f = self.config.arrays(run.spec, self.params)
        self.cfg_i[L.C_CHECK] = 0  # checked per replica by the fleet (the engine's sums all rows)
        st, c = run.state, self.config
        largest = int(c.blocks_for_request(st.ri[:, L.PROMPT], st.target).max()) if len(st.target) else 1
        self.pool = new_pool(c.num_gpu_blocks, c.max_num_seqs + 1, min(largest, c.num_gpu_blocks),
                             st.key_off, st.keys, c.enable_prefix_caching)[:5]
        self.batches = np.zeros((2, L.B_ROWS, c.max_num_seqs + 1), dtype=np.int64)
        self.s = st.s.copy()
        self.s[L.S_N_ARRIVALS] = 0
        self.s[L.S_FREE_BLOCKS] = c.num_gpu_blocks - 1
        self.s[L.S_FREE_HOST] = c.num_host_blocks


def stack(parts, fill=0) -> np.ndarray:
    """One array per replica, padded with ``fill`` to the largest shape, stacked."""
    shape = tuple(max(p.shape[d] for p in parts) for d in range(parts[0].ndim))
    out = np.full((len(parts), *shape), fill, dtype=parts[0].dtype)
    for r, p in enumerate(parts):
        out[(r, *(slice(0, n) for n in p.shape))] = p
    return out


class Fleet:
    """The replicas of one prepared run, the router's state and the stacked arrays of
    ``core`` (see there); ``simulate`` fills the run's global request table."""

    def __init__(self, run, groups, router: str, router_args, refresh_s: float, knobs: dict,
                 policy_args=None):
        self.run, self.groups = run, [Group(run, g, n, knobs, policy_args) for g, n in groups]
        self.spec = get_router(router)
        self.knobs = self.spec.knobs(router_args)
        self.refresh_s = float(refresh_s)
        per = [g for g in self.groups for _ in range(g.count)]
        self.n = len(per)
        st, n_req = run.state, run.state.n_requests
        cap = min(max(n_req, 1), max(256, 2 * max(g.config.max_num_seqs for g in self.groups)))
        ht = np.full((self.n, max(g.pool[1].shape[0] for g in self.groups), 3), NONE, dtype=np.int64)
        ht[:, :, H_KEY] = NO_KEY  # an empty table (a padded one hashes into its full size)
        self.rep = (np.zeros((self.n, L.Q_ROWS, cap), dtype=np.int64),
                    stack([g.batches for g in per]), stack([g.s for g in per]),
                    np.repeat(st.t[np.newaxis], self.n, axis=0),
                    np.repeat(st.pstate[np.newaxis], self.n, axis=0),
                    stack([g.pool[0] for g in per], NONE), ht, stack([g.pool[2] for g in per]),
                    stack([g.pool[3] for g in per]), stack([g.pool[4] for g in per], NONE))
        self.common = (st.rf, st.ri, st.target, st.hint, stack([g.cfg_i for g in per]),
                       stack([g.cfg_f for g in per]), stack([g.coef for g in per]),
                       stack([g.params for g in per]), st.key_off, st.keys)
        self.replica_of = np.full(n_req, -1, dtype=np.int64)
        self.fleet = (self.replica_of, np.zeros(self.n, dtype=np.int64),
                      np.zeros((self.n, SIG_COLS)), np.full(self.n, np.inf),
                      np.arange(self.n, dtype=np.int64), np.arange(self.n, dtype=np.int64))
        self.snap = np.zeros((self.n, SIG_COLS))
        self.match = np.zeros(self.n)
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
                    self.common, self.rep, self.fleet, self.snap, self.match, self.u,
                    self.fl, self.spec.rid, self.spec.param_array(self.knobs), self.refresh_s,
                    self.t0, self.run.config.check, self.spec.reads_tokens, self.prefix, stop,
                    NO_LOG, NO_BATCH_LOG)
                bar.update(int(self.fl[core.F_NEXT]) - bar.n)
                if status == core.FLEET_DONE:
                    break
                if status == core.FLEET_GROW:
                    self._grow()
                elif status == core.FLEET_ERROR:
                    raise self.error()
        finally:
            bar.close()
        s = self.rep[2]
        routed = self.fleet[1]
        if not np.array_equal(routed, s[:, L.S_N_FINISHED]):
            raise EngineError(f"replicas finished {s[:, L.S_N_FINISHED].tolist()} of the "
                              f"requests routed to them {routed.tolist()}")

    def error(self) -> EngineError:
        """The error of the replica that stopped (``core.FLEET_ERROR``)."""
        r = int(self.fl[core.F_BAD])
        s, t = self.rep[2][r], self.rep[3][r]
        return EngineError(f"engine error {int(s[L.S_ERROR])} in replica {r} at "
                           f"t={t[L.T_NOW]:.6f}s after {int(s[L.S_STEPS])} steps")

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
            "groups": [{"gpu": g.gpu, "replicas": g.count, "num_gpu_blocks": g.config.num_gpu_blocks}
                       for g in self.groups],
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


def refuse_everywhere(run, groups, on_unfit: str) -> None:
    """Reject (or, with ``on_unfit='error'``, stop at) requests some other group cannot hold."""
    for g in groups:
        if g.config is run.config:
            continue
        refused, rejected = admission_check(run.workload, g.config, on_unfit)
        new = refused & (run.state.ri[:, L.STATUS] != L.ST_REJECTED)
        run.state.ri[new, L.STATUS] = L.ST_REJECTED
        known = {r["index"] for r in run.rejected}
        run.rejected.extend({**r, "reason": f"{r['reason']} (on {g.gpu})"}
                            for r in rejected if r["index"] not in known)
        run.rejected.sort(key=lambda r: r["index"])


def build_fleet(workload, policy: str = "fcfs", *, replicas, router: str = "round-robin",
                router_args: dict | None = None, router_refresh_s: float = 0.0, load=None,
                **kwargs) -> Fleet:
    """The ready fleet of ``simulate(..., replicas=...)`` (arguments as there; ``load`` is
    per replica: arrivals at ``load`` x the sum of the replicas' saturation rates)."""
    if isinstance(replicas, dict) and ("gpu" in kwargs or kwargs.get("profile") is not None):
        raise ValueError("with GPU groups in replicas, give no gpu or profile (each group "
                         "takes its GPU's roofline step times)")
    groups = fleet_groups(replicas, kwargs.pop("gpu", "h100-80gb"))
    if isinstance(router_refresh_s, bool) or not (isinstance(router_refresh_s, (int, float))
                                                  and np.isfinite(router_refresh_s)
                                                  and router_refresh_s >= 0):
        raise ValueError(f"router_refresh_s must be a finite number >= 0, got {router_refresh_s!r}")
    get_router(router).knobs(router_args)  # bad names and knobs fail before loading anything
    knobs = {k: v for k, v in kwargs.items() if k in ENGINE_KNOBS}
    model = kwargs.pop("model", "llama3-8b")
    sat = None
    if load is not None:
        check_rate_choice(kwargs.get("rate"), kwargs.get("rate_scale"), load)
        wl = load_workload(workload, data_dir=kwargs.get("data_dir"), seed=kwargs.get("seed", 0),
                           columns=kwargs.get("columns"))
        sat = [saturation_rate(wl, *_engine(model, g, knobs)) for g, _ in groups]
        total = sum(n * rate for (_, n), rate in zip(groups, sat))
        workload, kwargs["rate"] = wl, float(load) * total
    run = prepare(workload, policy, model=model, gpu=groups[0][0], **kwargs)
    if sat is not None:
        run.info.update(saturation_rps=total / sum(n for _, n in groups), load=float(load))
    fleet = Fleet(run, groups, router, router_args, router_refresh_s, knobs,
                  kwargs.get("policy_args"))
    refuse_everywhere(run, fleet.groups, kwargs.get("on_unfit", "error"))
    run.info.update(replicas=fleet.n, router=router, router_args=fleet.knobs,
                    router_refresh_s=fleet.refresh_s)
    return fleet


def simulate_fleet(workload, policy: str = "fcfs", *, warmup_s: float = 0.0, slo=None,
                   progress: bool = False, record_steps: bool = False,
                   record_batches: bool = False, **kwargs) -> Report:
    """``tailgym.simulate`` with ``replicas`` (see there, ``build_fleet`` and the module
    docstring)."""
    for name, value in (("record_steps", record_steps), ("record_batches", record_batches)):
        if value:
            raise ValueError(f"{name} is not available with replicas (one log per engine)")
    fleet = build_fleet(workload, policy, **kwargs)
    start = time.perf_counter()
    fleet.simulate(progress)
    return fleet.report(time.perf_counter() - start, warmup_s=warmup_s, slo=slo)


def _engine(model, gpu, knobs):
    config, steps = build_engine(model, gpu, **knobs)
    return config, steps.coef()
