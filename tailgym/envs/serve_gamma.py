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

**Reward** (times ``reward_scale``): ``integral``: minus the request-seconds spent in the
system during the interval (the integral of the number of arrived, unfinished requests), so an
episode's return is minus the total TTLT; ``tail``: minus the number of requests finishing in
the interval with TTLT above ``slo_s``.

**Episode**: ``reset(seed=s)`` draws the workload with seed ``s`` (synthetic specs, arrival
redraws; ``info["workload_seed"]``), so the episode equals
``tailgym.simulate(workload, "uniboost", seed=s, ...)`` with the same knobs. It terminates
when every request has finished (or was rejected) and is truncated once ``horizon_s`` of
simulated time has passed. The last step's ``info["tailgym"]`` is the run's
``Report.summary()``; ``report()`` gives the full ``Report``.
"""
import math
import time
from dataclasses import asdict

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..engine import EngineState, run
from ..engine import layout as L
from ..engine.step import reprioritize_all
from ..metrics import Report
from ..policies import online, resolve
from ..policies import uniboost as U
from ..sim import admission_check, apply_rate, build_engine, request_table
from ..workload import load_workload

# knob -> (scale, low, high) of the value an action coordinate maps onto (exponents for logs)
KNOBS = {"gamma": ("log10", -3.0, 3.0), "k": ("log2", 4.0, 10.0), "delta": ("linear", 0.0, 1.0)}
KNOB_PARAM = {"gamma": U.GAMMA, "k": U.K, "delta": U.DELTA}
GLOBALS = ("kv_util", "waiting", "running", "swapped", "arrival_rate", "completions",
           "ttlt_p50", "ttlt_p90", "ttlt_p99", "ttft_p50", "ttft_p90", "ttft_p99",
           "preemptions", "oldest_age")
GLOBALS_HIGH = np.r_[1.0, np.full(len(GLOBALS) - 1, np.log1p(np.finfo(np.float32).max))]
REWARDS = ("integral", "tail")
QUANTILES = np.array([0.5, 0.9, 0.99])


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


def quantiles(x: np.ndarray) -> np.ndarray:
    """``QUANTILES`` of ``x`` (linear interpolation, numpy's default), zeros if empty."""
    if x.size == 0:
        return np.zeros(QUANTILES.size)
    x = np.sort(x)
    pos = QUANTILES * (x.size - 1)
    lo = pos.astype(np.int64)
    hi = np.minimum(lo + 1, x.size - 1)
    return x[lo] + (x[hi] - x[lo]) * (pos - lo)


class ServeGammaEnv(gym.Env):
    """UniBoost knob tuning on one simulated serving engine (see the module docstring).

    ``workload`` is a workload spec (``tailgym.load_workload``); ``model``, ``gpu``,
    ``profile``, ``kv_blocks``, ``max_num_batched_tokens``, ``max_num_seqs`` and
    ``preemption_mode`` configure the engine (``tailgym.sim.build_engine``). At most one of
    ``rate`` (req/s), ``rate_scale`` or ``load`` sets the arrival rate; ``load`` is turned into
    a rate once, on the seed-0 draw, so every episode has the same mean rate. ``policy_args``
    are further UniBoost knobs (any but ``gamma_mode``, which is ``fixed``); ``on_unfit`` as in
    ``simulate`` (default ``reject``: requests that never fit the KV cache are left out).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, workload: str = "default:n=2000", model: str = "llama3-8b",
                 gpu: str = "h100-80gb", profile: str | None = None, load: float | None = None,
                 rate: float | None = None, rate_scale: float | None = None,
                 kv_blocks: int | None = None, max_num_batched_tokens: int | None = None,
                 max_num_seqs: int | None = None, preemption_mode: str = "recompute",
                 policy_args: dict | None = None, interval_s: float = 5.0, tune: str = "gamma",
                 reward: str = "integral", reward_scale: float = 1.0, slo_s: float = 10.0,
                 horizon_s: float | None = None, on_unfit: str = "reject",
                 render_mode: str | None = None):
        if not isinstance(workload, str):
            raise TypeError(f"workload must be a spec string (JSON-serialisable), "
                            f"got {type(workload).__name__}")
        self.tune = tuple(name.strip() for name in tune.split(","))
        if not self.tune or len(set(self.tune)) != len(self.tune) or set(self.tune) - set(KNOBS):
            raise ValueError(f"tune must name distinct knobs of {', '.join(KNOBS)} "
                             f"separated by commas, got {tune!r}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
        for name, value in (("interval_s", interval_s), ("slo_s", slo_s), ("horizon_s", horizon_s)):
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        if not np.isfinite(reward_scale):
            raise ValueError(f"reward_scale must be finite, got {reward_scale}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of "
                             f"{', '.join(self.metadata['render_modes'])}, got {render_mode!r}")
        policy_args = dict(policy_args or {})
        if "gamma_mode" in policy_args:
            raise ValueError("policy_args may not set gamma_mode: the agent sets gamma "
                             "(mode fixed)")

        self.workload, self.model, self.gpu = workload, model, gpu
        self.interval_s, self.horizon_s, self.slo_s = float(interval_s), horizon_s, float(slo_s)
        self.reward, self.reward_scale, self.render_mode = reward, float(reward_scale), render_mode
        self._on_unfit = on_unfit
        self._config, steps = build_engine(
            model, gpu, profile=profile, kv_blocks=kv_blocks, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, preemption_mode=preemption_mode)
        self._coef, self._step_model = steps.coef(), steps.name
        self._spec, self._knobs, self._base_params = resolve(
            "uniboost", {**policy_args, "gamma_mode": "fixed"}, self._coef,
            self._config.max_num_seqs)
        for name in self.tune:
            low, high = knob_value(name, -1.0), knob_value(name, 1.0)
            if not low <= self._knobs[name] <= high:
                raise ValueError(f"policy_args {name}={self._knobs[name]} is outside the range "
                                 f"the action maps onto ({low:g}..{high:g})")

        base = load_workload(workload, seed=0)
        same = base.fingerprint() == load_workload(workload, seed=1).fingerprint()
        self._fixed_workload = base if same else None  # seed-independent: load it once
        _, rate_info = apply_rate(base, self._config, self._coef, rate=rate,
                                  rate_scale=rate_scale, load=load)
        self._rate = rate_info["load"] * rate_info["saturation_rps"] if load is not None else rate
        self._rate_scale = rate_scale
        self._load_info = {k: rate_info[k] for k in ("load", "saturation_rps") if k in rate_info}
        admission_check(base, self._config, on_unfit)  # bad on_unfit or unfit rows fail here

        self.action_space = spaces.Box(-1.0, 1.0, (len(self.tune),), np.float32)
        self.observation_space = spaces.Dict({
            "globals": spaces.Box(0.0, GLOBALS_HIGH, (len(GLOBALS),), np.float32),
            "knobs": spaces.Box(-1.0, 1.0, (len(KNOBS),), np.float32)})
        self.workload_seed = None
        self._state = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.workload_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31))
        wl = self._fixed_workload or load_workload(self.workload, seed=self.workload_seed)
        wl, self._rate_info = apply_rate(wl, self._config, self._coef, rate=self._rate,
                                         rate_scale=self._rate_scale)
        refused, self._rejected = admission_check(wl, self._config, self._on_unfit)
        # uniboost is prediction-free: no hint, no policy randomness
        self._state = EngineState(wl.arrival_s, wl.prompt_tokens, wl.output_tokens, self._config,
                                  refused, pstate=self._spec.pstate(self._knobs))
        self._params = self._base_params.copy()
        self._workload_name = wl.name
        self._t_start = float(self._state.t[L.T_NOW])
        self._lo = 0            # every request before this index has finished or was rejected
        self._arrived = 0       # requests arrived so far (rejected ones included)
        self._preemptions = 0
        self._wall = 0.0
        self._history = []      # (t, waiting, running, swapped, kv_util) per decision
        obs, _ = self._observe(self._t_start)
        return obs, {"workload_seed": self.workload_seed, "t": self._t_start,
                     "requests": self._state.n_requests, "rejected": len(self._rejected),
                     **self._rate_info}

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
        run(st, self._config, self._coef, self._spec, self._params, until=t0 + self.interval_s)
        self._wall += time.perf_counter() - start
        obs, info = self._observe(t0)
        terminated = int(st.s[L.S_N_FINISHED]) + len(self._rejected) == st.n_requests
        truncated = (not terminated and self.horizon_s is not None
                     and info["t"] - self._t_start >= self.horizon_s)
        penalty = info["in_system_s"] if self.reward == "integral" else info["slo_violations"]
        if terminated or truncated:
            info["tailgym"] = self.report().summary()
        return obs, -self.reward_scale * float(penalty), terminated, truncated, info

    def _set_knobs(self, values: dict[str, float]) -> None:
        """Write knob values into the params; re-prioritise everyone if the priorities change."""
        p, st = self._params, self._state
        before = p[U.GAMMA], p[U.K]
        for name, value in values.items():
            p[KNOB_PARAM[name]] = value
        if (p[U.GAMMA], p[U.K]) != before:
            st.pstate[online.G_GAMMA] = p[U.GAMMA]
            cfg_i, _ = self._config.arrays(self._spec, p)
            reprioritize_all(st.rf, st.ri, st.hint, st.queues, st.s, cfg_i, p, st.pstate,
                             st.t[L.T_NOW])

    def _observe(self, t0: float):
        """Observation and per-interval counts for the interval from ``t0`` to now."""
        st, rf, ri, s = self._state, self._state.rf, self._state.ri, self._state.s
        t1 = float(st.t[L.T_NOW])
        arrival = rf[:, L.ARRIVAL]
        k = int(np.searchsorted(arrival, t1, side="right"))
        rows = slice(self._lo, k)  # requests that may have been in the system since t0
        status, done, arr = ri[rows, L.STATUS], rf[rows, L.DONE], arrival[rows]
        overlap = np.fmin(done, t1) - np.maximum(arr, t0)  # nan done (unfinished) -> until t1
        in_system_s = float(overlap[(status != L.ST_REJECTED) & (overlap > 0)].sum())
        fin = (status == L.ST_FINISHED) & (done > t0)
        ttlt = done[fin] - arr[fin]
        ttft = rf[rows, L.FIRST_TOKEN][fin] - arr[fin]
        still_open = np.flatnonzero((status != L.ST_FINISHED) & (status != L.ST_REJECTED))
        self._lo += int(still_open[0]) if still_open.size else k - self._lo
        oldest_age = t1 - arrival[self._lo] if self._lo < k else 0.0
        arrivals, self._arrived = k - self._arrived, k
        preempted = int(s[L.S_PREEMPT_RECOMPUTE] + s[L.S_PREEMPT_SWAP])
        preemptions, self._preemptions = preempted - self._preemptions, preempted
        kv_util = 1.0 - s[L.S_FREE_BLOCKS] / self._config.num_gpu_blocks
        counts = [s[L.S_N_WAITING], s[L.S_N_RUNNING], s[L.S_N_SWAPPED]]
        rate = arrivals / (t1 - t0) if t1 > t0 else 0.0
        logged = np.concatenate([counts, [rate, fin.sum()], quantiles(ttlt), quantiles(ttft),
                                 [preemptions, oldest_age]])
        values = np.concatenate([[kv_util], np.log1p(logged)])
        knobs = [knob_action(name, self._params[KNOB_PARAM[name]]) for name in KNOBS]
        self._history.append((t1 - self._t_start, *counts, kv_util))
        obs = {"globals": values.astype(np.float32), "knobs": np.array(knobs, dtype=np.float32)}
        info = {"t": t1, "arrivals": arrivals, "completions": int(fin.sum()),
                "preemptions": preemptions, "slo_violations": int((ttlt > self.slo_s).sum()),
                "in_system_s": in_system_s,
                **{name: float(self._params[KNOB_PARAM[name]]) for name in KNOBS}}
        return obs, info

    def report(self) -> Report:
        """The episode so far as a ``Report`` (per-request arrays and summary statistics)."""
        st = self._state
        if st is None:
            raise RuntimeError("call reset() before report()")
        return Report(
            requests=request_table(st),
            rejected=self._rejected,
            config={"workload": self._workload_name, "policy": "uniboost",
                    "policy_args": self._knobs, "tune": ",".join(self.tune),
                    "interval_s": self.interval_s, "model": self.model, "gpu": self.gpu,
                    "seed": self.workload_seed, "step_model": self._step_model,
                    **self._load_info, **self._rate_info, **asdict(self._config)},
            steps=int(st.s[L.S_STEPS]),
            simulated_seconds=float(st.t[L.T_NOW]) - self._t_start,
            busy_seconds=float(st.t[L.T_BUSY]),
            wall_seconds=self._wall,
            preemptions_recompute=int(st.s[L.S_PREEMPT_RECOMPUTE]),
            preemptions_swap=int(st.s[L.S_PREEMPT_SWAP]),
            slo={"ttlt": self.slo_s},
        )

    def render(self):
        if self.render_mode is None or self._state is None:
            return None
        return self._render_ansi() if self.render_mode == "ansi" else self._render_rgb()

    def _render_ansi(self, max_rows: int = 10) -> str:
        """Knobs, queue counts, a KV-occupancy bar and the best-priority requests in the system."""
        st, rf, ri, s = self._state, self._state.rf, self._state.ri, self._state.s
        t, waiting, running, swapped, kv_util = self._history[-1]
        p = self._params
        bar = "#" * round(20 * kv_util) + "." * (20 - round(20 * kv_util))
        lines = [f"t={t:.1f}s  gamma={p[U.GAMMA]:.4g}/s  k={p[U.K]:g}  delta={p[U.DELTA]:.3g}s",
                 (f"waiting {waiting}  running {running}  swapped {swapped}  "
                  f"finished {s[L.S_N_FINISHED]}/{st.n_requests}"),
                 f"KV [{bar}] {100 * kv_util:.0f}% of {self._config.num_gpu_blocks} blocks",
                 (f"{'req':>6} {'status':>8} {'age_s':>8} {'prompt':>7} {'gen':>6} "
                  f"{'blocks':>6} {'prio':>10}")]
        names = {L.ST_WAITING: "waiting", L.ST_RUNNING: "running", L.ST_SWAPPED: "swapped"}
        queued = np.flatnonzero(np.isin(ri[:, L.STATUS], list(names)))
        for i in queued[np.argsort(rf[queued, L.PRIO], kind="stable")][:max_rows]:
            age = st.t[L.T_NOW] - rf[i, L.ARRIVAL]
            lines.append(f"{i:>6} {names[ri[i, L.STATUS]]:>8} {age:>8.2f} {ri[i, L.PROMPT]:>7} "
                         f"{ri[i, L.GENERATED]:>6} {ri[i, L.BLOCKS]:>6} {rf[i, L.PRIO]:>10.4g}")
        return "\n".join(lines)

    def _render_rgb(self) -> np.ndarray:
        """Queue lengths and KV occupancy over the episode, as an (H, W, 3) uint8 picture."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        h = np.array(self._history, dtype=np.float64)
        fig = Figure(figsize=(4, 3), dpi=80)
        canvas = FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True)
        for col, label in ((1, "waiting"), (2, "running"), (3, "swapped")):
            top.step(h[:, 0], h[:, col], where="post", label=label)
        top.set_ylabel("requests")
        top.legend(fontsize=6, loc="upper left")
        bottom.fill_between(h[:, 0], h[:, 4], step="post", alpha=0.6)
        bottom.set_ylim(0, 1)
        bottom.set_ylabel("KV used")
        bottom.set_xlabel("simulated s")
        fig.tight_layout()
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()
