"""``tailgym/ServeGamma-v0``: learn to tune the UniBoost heuristic online.

Every ``interval_s`` of simulated time the agent sets UniBoost's knobs (gamma, and optionally
MemGuard's ``k`` and the hysteresis ``delta``); in between, the numba engine serves the
workload with the reference policy (``uniboost``, ``gamma_mode=fixed``).

**Action**: ``Box(-1, 1, (d,), float32)``, one coordinate per knob named in ``tune`` (in that
order), clipped to [-1, 1] and mapped linearly onto:

=========  ==================================  ===================================
knob       range                               mapping of ``a`` in [-1, 1]
=========  ==================================  ===================================
``gamma``  1e-3 .. 1e3 per s (log scale)       ``10 ** (-3 + 3 (a + 1))``
``k``      16 .. 1024 tokens (log scale, int)  ``round(2 ** (4 + 3 (a + 1)))``
``delta``  0 .. 1 s                            ``(a + 1) / 2``
=========  ==================================  ===================================

Knobs not tuned keep their ``policy_args`` (or UniBoost default) values. When gamma or k
changes, every queued and running request is re-prioritised at once.

**Observation**: ``Dict(globals=Box(0, GLOBALS_HIGH, (14,)), knobs=Box(-1, 1, (3,)))``, float32.
``globals`` (names in ``GLOBALS``): KV-cache utilisation; then as ``log1p``: waiting,
running and swapped requests, arrivals per second over the last interval, completions in
it, P50/P90/P99 TTLT and TTFT (s) of those completions (0 if none), preemptions in it, and
the age (s) of the oldest request in the system (the ``log1p`` features are bounded by
``log1p`` of the float32 maximum, about 88.7). ``knobs``: the current gamma, k and delta
in action coordinates. Nothing reveals the output length of an unfinished request.

**Reward** (times ``reward_scale``): minus the interval's cost under ``reward`` (see
``ServingEnv``): ``response`` (default) the request-seconds spent in the system (an episode's
return is minus the total TTLT), ``exp-tail`` the integral of ``theta`` x sum of
exp(``theta`` x age) over the requests in the system (sums to sum (exp(``theta`` TTLT) - 1)),
``slo-excess`` the seconds requests spent older than ``slo_s`` (sums to sum (TTLT -
``slo_s``)+), ``tail`` the requests finishing in the interval with TTLT above ``slo_s``.

**Episode**: ``reset(seed=s)`` draws the workload with seed ``s`` (synthetic specs, arrival
redraws; ``info["workload_seed"]``), so the episode equals
``tailgym.simulate(workload, "uniboost", seed=s, ...)`` with the same knobs. It terminates
when every request has finished (or was rejected) and is truncated once ``horizon_s`` of
simulated time has passed. The last step's ``info["tailgym"]`` is the run's
``Report.summary()``; ``report()`` gives the full ``Report``.
"""
import math
import time

import numpy as np
from gymnasium import spaces

from ..engine.runner import run_steps
from ..engine import layout as L
from ..engine.step import reprioritize_all
from ..policies import online
from ..policies import uniboost as U
from .base import LOG_HIGH, ServingEnv

# knob -> (scale, low, high) of the value an action coordinate maps onto (exponents for logs)
KNOBS = {"gamma": ("log10", -3.0, 3.0), "k": ("log2", 4.0, 10.0), "delta": ("linear", 0.0, 1.0)}
KNOB_PARAM = {"gamma": U.GAMMA, "k": U.K, "delta": U.DELTA}
GLOBALS = ("kv_util", "waiting", "running", "swapped", "arrival_rate", "completions",
           "ttlt_p50", "ttlt_p90", "ttlt_p99", "ttft_p50", "ttft_p90", "ttft_p99",
           "preemptions", "oldest_age")
GLOBALS_HIGH = np.r_[1.0, np.full(len(GLOBALS) - 1, LOG_HIGH)]


def knob_value(name: str, a: float) -> float:
    """The knob value that action coordinate ``a`` (clipped to [-1, 1]) selects."""
    scale, lo, hi = KNOBS[name]
    x = lo + (min(max(float(a), -1.0), 1.0) + 1.0) * 0.5 * (hi - lo)
    if scale == "log10":
        return 10.0 ** x
    if scale == "log2":
        return float(round(2.0 ** x))
    return x


def knob_action(name: str, value: float) -> float:
    """The action coordinate of a knob value (clipped to [-1, 1])."""
    scale, lo, hi = KNOBS[name]
    x = {"log10": math.log10, "log2": math.log2}.get(scale, float)(value)
    return min(max(2.0 * (x - lo) / (hi - lo) - 1.0, -1.0), 1.0)


class ServeGammaEnv(ServingEnv):
    """UniBoost knob tuning on one simulated serving engine (see the module docstring).

    Engine, workload, rate, reward and episode kwargs as ``ServingEnv``; ``policy_args`` are
    further UniBoost knobs (any but ``gamma_mode``, which is ``fixed``).
    """

    def __init__(self, workload: str = "default:n=2000", model: str = "llama3-8b",
                 gpu: str = "h100-80gb", profile: str | None = None, load: float | None = None,
                 rate: float | None = None, rate_scale: float | None = None,
                 kv_blocks: int | None = None, max_num_batched_tokens: int | None = None,
                 max_num_seqs: int | None = None, preemption_mode: str = "recompute",
                 policy_args: dict | None = None, interval_s: float = 5.0, tune: str = "gamma",
                 reward: str = "response", reward_scale: float = 1.0, slo_s: float = 10.0,
                 theta: float = 0.1, horizon_s: float | None = None,
                 on_unfit: str = "reject",
                 render_mode: str | None = None):
        self.tune = tuple(name.strip() for name in tune.split(","))
        if not self.tune or len(set(self.tune)) != len(self.tune) or set(self.tune) - set(KNOBS):
            raise ValueError(f"tune must name distinct knobs of {', '.join(KNOBS)} "
                             f"separated by commas, got {tune!r}")
        if not (np.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be finite and > 0, got {interval_s}")
        policy_args = dict(policy_args or {})
        if "gamma_mode" in policy_args:
            raise ValueError("policy_args may not set gamma_mode: the agent sets gamma "
                             "(mode fixed)")
        super().__init__(workload, model, gpu, profile, load, rate, rate_scale, kv_blocks,
                         max_num_batched_tokens, max_num_seqs, preemption_mode, reward,
                         reward_scale, slo_s, horizon_s, on_unfit, render_mode,
                         theta)
        self.interval_s = float(interval_s)
        self._set_policy("uniboost", {**policy_args, "gamma_mode": "fixed"})
        self._base_params = self._params.copy()
        for name in self.tune:
            low, high = knob_value(name, -1.0), knob_value(name, 1.0)
            if not low <= self._knobs[name] <= high:
                raise ValueError(f"policy_args {name}={self._knobs[name]} is outside the range "
                                 f"the action maps onto ({low:g}..{high:g})")
        self.action_space = spaces.Box(-1.0, 1.0, (len(self.tune),), np.float32)
        self.observation_space = spaces.Dict({
            "globals": spaces.Box(0.0, GLOBALS_HIGH, (len(GLOBALS),), np.float32),
            "knobs": spaces.Box(-1.0, 1.0, (len(KNOBS),), np.float32)})

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        info = self._new_episode(seed)  # uniboost is prediction-free: no policy randomness
        self._params = self._base_params.copy()
        self._cfg = self._config.arrays(self._spec, self._params)
        self._preemptions = 0
        obs, _ = self._observe(self._t_start)
        return obs, info

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape or not np.isfinite(a).all():
            raise ValueError(f"action must be {self.action_space.shape[0]} finite numbers, "
                             f"got {action!r}")
        self._set_knobs({name: knob_value(name, x) for name, x in zip(self.tune, a)})
        st = self._state
        t0 = float(st.t[L.T_NOW])
        start = time.perf_counter()
        run_steps(st, *self._cfg, self._coef, self._params, t0 + self.interval_s)
        self._wall += time.perf_counter() - start
        obs, info = self._observe(t0)
        terminated = self._all_done()
        truncated = self._truncated(terminated)
        penalty = self._penalty(info)
        if terminated or truncated:
            info["tailgym"] = self.report().summary()
        return obs, -self.reward_scale * float(penalty), terminated, truncated, info

    def _set_knobs(self, values: dict[str, float]) -> None:
        """Write knob values into the params; re-prioritise everyone if the priorities change."""
        p, st = self._params, self._state
        before = p.copy()
        for name, value in values.items():
            p[KNOB_PARAM[name]] = value
        if (p[U.K], p[U.DELTA]) != (before[U.K], before[U.DELTA]):
            self._cfg = self._config.arrays(self._spec, p)  # MemGuard k and delta live there
        if (p[U.GAMMA], p[U.K]) != (before[U.GAMMA], before[U.K]):
            st.pstate[online.G_GAMMA] = p[U.GAMMA]
            reprioritize_all(st.rf, st.ri, st.hint, st.queues, st.s, self._cfg[0], p,
                             st.pstate, st.kv, st.t[L.T_NOW])

    def _observe(self, t0: float):
        """Observation and per-interval counts for the interval from ``t0`` to now."""
        s, t1 = self._state.s, float(self._state.t[L.T_NOW])
        iv = self._interval(t0)
        preempted = int(s[L.S_PREEMPT_RECOMPUTE] + s[L.S_PREEMPT_SWAP])
        preemptions, self._preemptions = preempted - self._preemptions, preempted
        kv_util = 1.0 - s[L.S_FREE_BLOCKS] / self._config.num_gpu_blocks
        counts = [s[L.S_N_WAITING], s[L.S_N_RUNNING], s[L.S_N_SWAPPED]]
        rate = iv["arrivals"] / (t1 - t0) if t1 > t0 else 0.0
        logged = np.concatenate([counts, [rate, iv["completions"]], iv["quantiles"],
                                 [preemptions, iv["oldest_age"]]])
        values = np.concatenate([[kv_util], np.log1p(logged)])
        knobs = [knob_action(name, self._params[KNOB_PARAM[name]]) for name in KNOBS]
        if self.render_mode is not None:
            self._record()
        obs = {"globals": values.astype(np.float32), "knobs": np.array(knobs, dtype=np.float32)}
        info = {"t": t1, "arrivals": iv["arrivals"], "completions": iv["completions"],
                "preemptions": preemptions, "slo_violations": iv["slo_violations"],
                **{key: iv[key] for key in ("in_system_s", "exp_tail", "slo_excess")},
                **{name: float(self._params[KNOB_PARAM[name]]) for name in KNOBS}}
        return obs, info

    def _config_info(self) -> dict:
        return {**super()._config_info(), "tune": ",".join(self.tune),
                "interval_s": self.interval_s}

    def _header(self) -> str:
        p = self._params
        return (f"{super()._header()}  gamma={p[U.GAMMA]:.4g}/s  k={p[U.K]:g}  "
                f"delta={p[U.DELTA]:.3g}s")
