"""``tailgym/ServeRoute-v0``: route each arriving request to a replica of a fleet.

The fleet is ``tailgym.simulate(..., replicas=N, router=...)``'s: N replicas of the engine
(or GPU groups, ``replicas={"h100-80gb": 4, "a100-80gb": 4}``), each running ``policy`` on
vLLM 0.33's scheduler with its defaults. The episode stops at each arriving request (rejected
ones are skipped), with the replicas stepped up to its arrival; with ``router_refresh_s`` > 0
only up to the last snapshot instant before it, which is what the routers see then.

**Action**: ``Discrete(N)``, the replica. ``action_masks()`` (bool) and
``info["action_mask"]`` (int8) are all ones: every replica can take every request (one that
some GPU group cannot hold is rejected for all), kept for MaskablePPO's interface.

**Observation**: ``Dict`` of float32 Boxes: ``request`` (``REQUEST_FEATURES``: its prompt
tokens and the seconds since the previous arrival) and ``replicas`` (``N x
REPLICA_FEATURES``, flat, replica-major: requests routed there and not finished, of those
not running, share of KV blocks in use, their prompt + generated tokens, the prompt tokens
its prefix cache holds for this request (0 with prefix caching off), and the TTFT and TTLT
of its latest first token and latest completion). Counts, tokens and times are ``log1p``'d.
The load, queue, KV and token signals are the routers' (with a refresh period, the
snapshot), so nothing reveals an output length.

**Reward**: minus the cost of ``reward`` (as ``ServingEnv``'s: ``response``, ``exp-tail``,
``slo-excess``, ``tail``) over the simulated time since the previous decision, up to the
instant the replicas have been stepped to (the arrival, or the snapshot instant); the last
step adds the fleet running to the end, so a finished episode sums to the stated objective
over all requests. ``info["elapsed_s"]`` is that time.

``heuristic_action()`` is the ``router``'s choice; always taking it reproduces
``tailgym.simulate(workload, policy, replicas=N, router=router, ...)`` bit for bit. An
episode terminates when every request has finished (or was rejected) and is truncated at the
first arrival ``horizon_s`` or more after the start. ``report()`` is the fleet's report.
"""
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..engine import layout as L
from ..engine.runner import NO_BATCH_LOG, NO_LOG
from ..fleet import core
from ..fleet.routers import SIG_KV, SIG_OUTSTANDING, SIG_QUEUED, SIG_TOKENS, route
from ..fleet.sim import ENGINE_KNOBS, build_fleet
from ..jit import kernel
from ..metrics import Report
from .base import (IV_COLS, IV_LO, LOG_HIGH, REWARDS, check_options, interval_costs,
                   interval_stats, kv_picture)

REQUEST_FEATURES = ("prompt_tokens", "gap_s")
REPLICA_FEATURES = ("outstanding", "queued", "kv_use", "tokens", "cached_prefix", "ttft_s",
                    "ttlt_s")
LAT_FIRST, LAT_TTFT, LAT_DONE, LAT_TTLT = range(4)  # columns of the latency table


@kernel
def latest_latencies(rf, replica_of, lo, k, lat):
    """Update each replica's latest first token and completion (``LAT_*``) from requests
    ``lo``..``k`` - 1."""
    for i in range(lo, k):
        r = replica_of[i]
        if r < 0:
            continue
        first, done = rf[i, L.FIRST_TOKEN], rf[i, L.DONE]
        if first == first and first > lat[r, LAT_FIRST]:
            lat[r, LAT_FIRST] = first
            lat[r, LAT_TTFT] = first - rf[i, L.ARRIVAL]
        if done == done and done > lat[r, LAT_DONE]:
            lat[r, LAT_DONE] = done
            lat[r, LAT_TTLT] = done - rf[i, L.ARRIVAL]


class ServeRouteEnv(gym.Env):
    """Routing environment (see the module docstring). ``replicas``, ``router``,
    ``router_args``, ``router_refresh_s``, ``policy`` and ``policy_args`` as in
    ``tailgym.simulate``; ``load`` is per replica; engine knobs, ``reward``, ``slo_s``,
    ``theta``, ``horizon_s`` and ``on_unfit`` as in ``ServingEnv``; ``gpu`` only with a
    replica count (groups name their GPUs); ``engine_args``: any other knob of
    ``tailgym.sim.build_engine`` by name (``max_model_len``, ``enable_prefix_caching``...)."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, workload: str = "default:n=2000", replicas=4, policy: str = "fcfs",
                 policy_args: dict | None = None, router: str = "least-outstanding",
                 router_args: dict | None = None, router_refresh_s: float = 0.0,
                 model: str = "llama3-8b", gpu: str | None = None, profile: str | None = None,
                 load: float | None = None, rate: float | None = None,
                 rate_scale: float | None = None, kv_blocks: int | None = None,
                 max_num_batched_tokens: int | None = None, max_num_seqs: int | None = None,
                 preemption_mode: str = "recompute", reward: str = "response",
                 reward_scale: float = 1.0, slo_s: float = 10.0, theta: float = 0.1,
                 horizon_s: float | None = None, on_unfit: str = "reject",
                 engine_args: dict | None = None, render_mode: str | None = None):
        self.reward = check_options(self, workload, reward, reward_scale, slo_s, horizon_s,
                                    theta, render_mode)
        self.workload, self.policy, self.router = workload, policy, router
        self.reward_scale, self.slo_s, self.theta = float(reward_scale), float(slo_s), float(theta)
        self.horizon_s, self.render_mode = horizon_s, render_mode
        self._kwargs = {"replicas": replicas, "router": router, "router_args": router_args,
                        "router_refresh_s": router_refresh_s, "policy_args": policy_args,
                        "model": model, "profile": profile, "load": load, "rate": rate,
                        "rate_scale": rate_scale, "kv_blocks": kv_blocks,
                        "max_num_batched_tokens": max_num_batched_tokens,
                        "max_num_seqs": max_num_seqs, "preemption_mode": preemption_mode,
                        "on_unfit": on_unfit}
        unknown = sorted(set(engine_args or {}) - set(ENGINE_KNOBS) - set(self._kwargs))
        if unknown:
            raise ValueError(f"engine_args has no knob {', '.join(map(repr, unknown))} "
                             f"(knobs: {', '.join(ENGINE_KNOBS)})")
        self._kwargs.update(engine_args or {})
        if gpu is not None:
            self._kwargs["gpu"] = gpu
        fleet = build_fleet(workload, policy, seed=0, **self._kwargs)  # bad options fail here
        self.n_replicas = fleet.n
        self.action_space = spaces.Discrete(self.n_replicas)
        self.observation_space = spaces.Dict({
            "request": spaces.Box(0.0, LOG_HIGH, (len(REQUEST_FEATURES),), np.float32),
            "replicas": spaces.Box(0.0, LOG_HIGH, (self.n_replicas * len(REPLICA_FEATURES),),
                                   np.float32)})
        self._mask = np.ones(self.n_replicas, dtype=np.int8)
        self._fleet = None
        self.workload_seed = None

    def action_masks(self) -> np.ndarray:
        """Legal actions (bool): every replica."""
        return self._mask.astype(bool)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.workload_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31))
        f = self._fleet = build_fleet(self.workload, self.policy, seed=self.workload_seed,
                                      **self._kwargs)
        st = f.run.state
        self._caching = bool(f.run.config.enable_prefix_caching)
        self._rargs = f.spec.param_array(f.knobs)
        self._lat = np.zeros((f.n, 4))
        self._iv_buf, self._iv_out = np.zeros((3, st.n_requests)), np.zeros(IV_COLS)
        self._lo, self._t = 0, f.t0
        self._prev_arrival = f.t0
        self._wall = 0.0
        self._status = self._next()
        self._take_interval()
        info = {"workload_seed": self.workload_seed, "t": f.t0, "requests": st.n_requests,
                "rejected": len(f.run.rejected), "replicas": f.n, "action_mask": self._mask.copy(),
                **{k: f.run.info[k] for k in ("rate_rps", "load", "saturation_rps")
                   if k in f.run.info}}
        return self._observe(), info

    def step(self, action):
        if self._fleet is None:
            raise RuntimeError("call reset() before step()")
        a = int(action)
        if a != action or not 0 <= a < self.n_replicas:
            raise ValueError(f"action must be an integer in 0..{self.n_replicas - 1}, "
                             f"got {action!r}")
        if self._status != core.ROUTE_READY:
            raise RuntimeError("the episode has ended: call reset()")
        f, start, t0 = self._fleet, time.perf_counter(), self._t
        self._prev_arrival = float(f.run.state.rf[f.fl[core.F_NEXT], L.ARRIVAL])
        while core.commit(f.common, f.rep, f.fleet, f.fl, a, True) == core.FLEET_GROW:
            f._grow()
        self._status = self._next()
        self._wall += time.perf_counter() - start
        costs = self._take_interval()
        terminated = self._status == core.FLEET_DONE
        truncated = self._status == core.FLEET_PAUSE
        info = {"action_mask": self._mask.copy(), "elapsed_s": self._t - t0}
        if terminated or truncated:
            info["tailgym"] = self.report().summary()
        return (self._observe(), -self.reward_scale * float(costs[REWARDS[self.reward]]),
                terminated, truncated, info)

    def heuristic_action(self) -> int:
        """The replica ``router`` picks for the pending request."""
        f = self._fleet
        k = int(f.fl[core.F_NEXT])
        return int(route(f.spec.rid, self._view(), f.match, f.run.state.ri[k, L.PROMPT],
                         f.u[k, 0], f.u[k, 1], f.fl[core.F_SEQ], self._rargs))

    def report(self) -> Report:
        """The episode so far as the fleet's ``Report`` (with ``requests["replica"]``)."""
        if self._fleet is None:
            raise RuntimeError("call reset() before report()")
        return self._fleet.report(self._wall, slo={"ttlt": self.slo_s},
                                  partial=self._status != core.FLEET_DONE)

    def _view(self) -> np.ndarray:
        f = self._fleet
        return f.snap if f.refresh_s > 0 else f.fleet[2]

    def _next(self) -> int:
        """Step the fleet to the next request to route (``ROUTE_READY``), to the horizon
        (``FLEET_PAUSE``) or, when none is left, to the end (``FLEET_DONE``)."""
        f = self._fleet
        while True:
            status = core.next_request(f.common, f.rep, f.fleet, f.snap, f.match, f.fl,
                                       f.refresh_s, f.t0, f.run.config.check, True,
                                       self._caching, f.run.state.n_requests, NO_LOG, NO_BATCH_LOG)
            if status == core.FLEET_DONE and not core.advance(
                    f.common, f.rep, f.fleet, f.fl, np.inf, f.run.config.check, True, NO_LOG,
                    NO_BATCH_LOG):
                status = core.FLEET_ERROR
            if status == core.FLEET_ERROR:
                raise f.error()
            if status == core.ROUTE_READY and self.horizon_s is not None:
                arrival = f.run.state.rf[f.fl[core.F_NEXT], L.ARRIVAL]
                if arrival - f.t0 >= self.horizon_s:
                    return core.FLEET_PAUSE
            return status

    def _known_until(self) -> float:
        """The instant up to which every replica has been stepped."""
        f = self._fleet
        if self._status == core.FLEET_DONE:
            return float(f.rep[3][:, L.T_NOW].max())
        if f.refresh_s > 0:
            return f.t0 + (int(f.fl[core.F_REFRESH]) - 1) * f.refresh_s
        return float(f.run.state.rf[f.fl[core.F_NEXT], L.ARRIVAL])

    def _take_interval(self) -> dict:
        """The costs from the last decision's instant to now (``interval_costs``); updates
        the latency table."""
        rf, ri = self._fleet.run.state.rf, self._fleet.run.state.ri
        t0, self._t = self._t, max(self._t, self._known_until())
        k = int(np.searchsorted(rf[:, L.ARRIVAL], self._t, side="right"))
        latest_latencies(rf, self._fleet.replica_of, self._lo, k, self._lat)
        interval_stats(rf, ri, self._lo, k, t0, self._t, self.slo_s, self.theta, self._iv_buf,
                       self._iv_out)
        self._lo = int(self._iv_out[IV_LO])
        return interval_costs(self._iv_out)

    def _observe(self) -> dict:
        f = self._fleet
        rf, ri = f.run.state.rf, f.run.state.ri
        k = int(f.fl[core.F_NEXT])
        request = np.zeros(len(REQUEST_FEATURES), np.float32)
        replicas = np.zeros((f.n, len(REPLICA_FEATURES)), np.float32)
        if self._status == core.ROUTE_READY:
            request[:] = np.log1p([ri[k, L.PROMPT], rf[k, L.ARRIVAL] - self._prev_arrival])
        sig = self._view()
        replicas[:, 0] = np.log1p(sig[:, SIG_OUTSTANDING])
        replicas[:, 1] = np.log1p(sig[:, SIG_QUEUED])
        replicas[:, 2] = np.clip(sig[:, SIG_KV], 0.0, 1.0)
        replicas[:, 3] = np.log1p(sig[:, SIG_TOKENS])
        replicas[:, 4] = np.log1p(f.match) if self._status == core.ROUTE_READY else 0.0
        replicas[:, 5] = np.log1p(self._lat[:, LAT_TTFT])
        replicas[:, 6] = np.log1p(self._lat[:, LAT_TTLT])
        return {"request": request, "replicas": replicas.ravel()}

    def render(self):
        if self.render_mode is None or self._fleet is None:
            return None
        return self._render_ansi() if self.render_mode == "ansi" else self._render_rgb()

    def _render_ansi(self) -> str:
        """The pending request and a line per replica."""
        f = self._fleet
        sig = self._view()
        lines = [f"t={self._t - f.t0:.2f}s  routed {int(f.fl[core.F_SEQ])}/"
                 f"{f.run.state.n_requests}  router {self.router}: replica "
                 f"{self.heuristic_action() if self._status == core.ROUTE_READY else '-'}",
                 f"{'replica':>7} {'outst':>6} {'queued':>6} {'kv%':>5} {'tokens':>8} {'cached':>7}"]
        for r in range(f.n):
            lines.append(f"{r:>7} {sig[r, SIG_OUTSTANDING]:>6.0f} {sig[r, SIG_QUEUED]:>6.0f} "
                         f"{100 * sig[r, SIG_KV]:>5.0f} {sig[r, SIG_TOKENS]:>8.0f} "
                         f"{f.match[r]:>7.0f}")
        return "\n".join(lines)

    def _render_rgb(self) -> np.ndarray:
        """Outstanding requests and KV use per replica, as an (H, W, 3) uint8 picture."""
        sig, x = self._view(), np.arange(self.n_replicas)

        def draw(top, bottom):
            top.bar(x, sig[:, SIG_OUTSTANDING])
            top.set_ylabel("outstanding")
            bottom.bar(x, sig[:, SIG_KV])
            bottom.set_xlabel("replica")
        return kv_picture(draw)
