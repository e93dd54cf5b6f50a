"""What every tailgym environment shares: engine and workload set-up from JSON-serialisable
kwargs, seeded episodes, reward options, the final report and the renderers."""
from dataclasses import asdict

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..engine import decisions as D
from ..engine import layout as L
from ..engine.layout import (ARRIVAL, DONE, FIRST_TOKEN, GENERATED, ST_FINISHED, ST_REJECTED,
                             STATUS)
from ..admission import admission_check
from ..jit import allocating, kernel
from ..metrics import Report
from ..policies import resolve
from ..sim import (POLICY_STREAM, apply_rate, build_engine, new_state,
                   request_table)
from ..workload import load_workload

# reward name -> the ``_interval`` entry it is minus (times ``reward_scale``)
REWARDS = {"response": "in_system_s", "exp-tail": "exp_tail", "slo-excess": "slo_excess",
           "tail": "slo_violations"}
REWARD_ALIASES = {"integral": "response"}  # the name ``response`` had before the tail rewards
LOG_HIGH = np.log1p(np.finfo(np.float32).max)  # float32 bound of the log1p features
STATUS_NAMES = {L.ST_FUTURE: "arrived", L.ST_WAITING: "waiting", L.ST_RUNNING: "running",
                L.ST_SWAPPED: "swapped"}


IV_IN_SYSTEM, IV_EXP, IV_EXCESS, IV_FINISHED, IV_MISSES, IV_LO, IV_QUANTILES = range(7)
QUANTILES = (0.5, 0.9, 0.99)
IV_COLS = IV_QUANTILES + 2 * len(QUANTILES)


@allocating
def _quantiles(x, out, at):
    """``QUANTILES`` of ``x`` (linear interpolation, numpy's default) into ``out[at:]``;
    zeros if ``x`` is empty. (Sorts ``x`` in place: numba's sort needs reference counting.)"""
    n = x.size
    x.sort()
    for j, q in enumerate(QUANTILES):
        out[at + j] = D.sorted_quantile(x, n, q) if n > 0 else 0.0


@kernel
def interval_stats(rf, ri, lo, k, t0, t1, slo, theta, buf, out):
    """Scan requests ``lo..k-1`` (arrived by ``t1``) for the interval ``[t0, t1]``: into
    ``out`` (``IV_*``) the request-seconds spent in the system (rejected ones excluded), the
    integral over them of ``theta exp(theta age)`` and the seconds spent older than ``slo``,
    requests finished in it and their SLO misses, the first request still open at ``t1``
    (or ``k``),
    and the TTLT and TTFT quantiles of the finished; ``buf`` rows 0-2 get their TTLT, TTFT
    and output tokens."""
    in_system = 0.0
    exp_tail = 0.0
    excess = 0.0
    n = 0
    misses = 0
    first_open = -1
    for i in range(lo, k):
        status = ri[i, STATUS]
        if status == ST_REJECTED:
            continue
        arrival, done = rf[i, ARRIVAL], rf[i, DONE]
        end = t1 if done != done else min(done, t1)  # nan: still in the system
        start = max(arrival, t0)
        if end > start:
            in_system += end - start
            # exp(theta (end - arrival)) - exp(theta (start - arrival)), without cancellation
            exp_tail += np.exp(theta * (start - arrival)) * np.expm1(theta * (end - start))
            late = end - max(arrival + slo, start)
            if late > 0:
                excess += late
        if status != ST_FINISHED or done > t1:  # a fleet's replica may have run past t1
            if first_open < 0:
                first_open = i
        elif done > t0:
            buf[0, n] = done - arrival
            buf[1, n] = rf[i, FIRST_TOKEN] - arrival
            buf[2, n] = ri[i, GENERATED]
            misses += buf[0, n] > slo
            n += 1
    out[IV_IN_SYSTEM] = in_system
    out[IV_EXP] = exp_tail
    out[IV_EXCESS] = excess
    out[IV_FINISHED] = n
    out[IV_MISSES] = misses
    out[IV_LO] = first_open if first_open >= 0 else k
    _quantiles(buf[0, :n], out, IV_QUANTILES)
    _quantiles(buf[1, :n], out, IV_QUANTILES + len(QUANTILES))


def check_options(env: gym.Env, workload, reward: str, reward_scale: float, slo_s: float,
                  horizon_s: float | None, theta: float, render_mode: str | None) -> str:
    """Check the options every env shares; returns the reward's name (aliases resolved)."""
    if not isinstance(workload, str):
        raise TypeError(f"workload must be a spec string (JSON-serialisable), "
                        f"got {type(workload).__name__}")
    reward = REWARD_ALIASES.get(reward, reward)
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    for name, value in (("slo_s", slo_s), ("horizon_s", horizon_s), ("theta", theta)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0, got {value}")
    if not np.isfinite(reward_scale):
        raise ValueError(f"reward_scale must be finite, got {reward_scale}")
    modes = env.metadata["render_modes"]
    if render_mode is not None and render_mode not in modes:
        raise ValueError(f"render_mode must be None or one of {', '.join(modes)}, "
                         f"got {render_mode!r}")
    return reward


def interval_costs(out: np.ndarray) -> dict:
    """The costs in an ``interval_stats`` result, by the names ``REWARDS`` maps to."""
    return {"in_system_s": float(out[IV_IN_SYSTEM]), "exp_tail": float(out[IV_EXP]),
            "slo_excess": float(out[IV_EXCESS]), "slo_violations": int(out[IV_MISSES])}


def kv_picture(draw) -> np.ndarray:
    """A small two-panel figure, ``draw(top, bottom)`` filling it (the bottom panel shows
    KV use, 0 to 1), as an (H, W, 3) uint8 picture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3), dpi=80)
    canvas = FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    draw(top, bottom)
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("KV used")
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class ServingEnv(gym.Env):
    """Base of the serving environments: one simulated engine serving a workload.

    ``workload`` is a workload spec (``tailgym.load_workload``); ``model``, ``gpu``,
    ``profile``, ``kv_blocks``, ``max_num_batched_tokens``, ``max_num_seqs`` and
    ``preemption_mode`` configure the engine (``tailgym.sim.build_engine``). At most one of
    ``rate`` (req/s), ``rate_scale`` or ``load`` sets the arrival rate; ``load`` is turned into
    a rate once, on the seed-0 draw, so every episode has the same mean rate. ``on_unfit`` as
    in ``simulate`` (default ``reject``: requests that never fit the KV cache are left out).

    Rewards (``reward``; each step's is minus its cost since the last step, times
    ``reward_scale``; sums over a finished episode, T = each request's TTLT):

    * ``response`` (default; ``integral`` is its old name): the request-seconds spent in the
      system (the integral of the number of arrived, unfinished requests): sums to sum T;
    * ``exp-tail``: the integral of ``theta`` x sum over the requests in the system of
      exp(``theta`` x age): sums to sum (exp(``theta`` T) - 1), a tail-weighted cost
      (``theta`` in 1/s, default 0.1; choose it below the TTLT tail's decay rate, or the sum
      is dominated by one request and may overflow);
    * ``slo-excess``: the seconds requests spent in the system older than ``slo_s``: sums to
      sum max(T - ``slo_s``, 0);
    * ``tail``: the number of requests finishing with T above ``slo_s``.

    Rejected requests count in none. ``reset(seed=s)`` draws the
    workload (and a policy's pre-drawn numbers) with seed ``s``, exactly as
    ``tailgym.simulate(..., seed=s)``; an episode terminates when every request has finished
    (or was rejected) and is truncated once ``horizon_s`` of simulated time has passed. The
    last step's ``info["tailgym"]`` is the run's ``Report.summary()``.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, workload: str, model: str, gpu: str, profile: str | None,
                 load: float | None, rate: float | None, rate_scale: float | None,
                 kv_blocks: int | None, max_num_batched_tokens: int | None,
                 max_num_seqs: int | None, preemption_mode: str, reward: str,
                 reward_scale: float, slo_s: float, horizon_s: float | None, on_unfit: str,
                 render_mode: str | None, theta: float = 0.1):
        reward = check_options(self, workload, reward, reward_scale, slo_s, horizon_s, theta,
                               render_mode)
        self.workload, self.model, self.gpu = workload, getattr(model, "name", model), gpu
        self.horizon_s, self.slo_s, self.theta = horizon_s, float(slo_s), float(theta)
        self.reward, self.reward_scale, self.render_mode = reward, float(reward_scale), render_mode
        self._on_unfit = on_unfit
        self._config, steps = build_engine(
            model, gpu, profile=profile, kv_blocks=kv_blocks, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, preemption_mode=preemption_mode)
        self._coef, self._step_model = steps.coef(), steps.name
        base = load_workload(workload, seed=0)
        same = base.fingerprint() == load_workload(workload, seed=1).fingerprint()
        self._fixed_workload = base if same else None  # seed-independent: load it once
        _, rate_info = apply_rate(base, self._config, self._coef, rate=rate,
                                  rate_scale=rate_scale, load=load)
        self._rate = rate_info["load"] * rate_info["saturation_rps"] if load is not None else rate
        self._rate_scale = rate_scale
        self._load_info = {k: rate_info[k] for k in ("load", "saturation_rps") if k in rate_info}
        admission_check(base, self._config, on_unfit)  # bad on_unfit or unfit rows fail here
        self.workload_seed = None
        self._state = None

    def _set_policy(self, name: str, args: dict | None) -> None:
        """The engine's policy: spec, knob values and parameter array."""
        self._policy = name
        self._spec, self._knobs, self._params = resolve(name, args, self._coef,
                                                        self._config.max_num_seqs)

    def _init_slot_view(self, slots: int) -> None:
        """Observation space and buffers of the slot-based envs (``Serve-v0``,
        ``ServePriority-v0``): ``slots`` requests described by ``decisions.observe``."""
        if not (isinstance(slots, int) and slots >= 1):
            raise ValueError(f"slots must be an integer >= 1, got {slots!r}")
        self.slots = slots
        nf, ng = len(D.SLOT_FEATURES), len(D.GLOBAL_FEATURES)
        self.observation_space = spaces.Dict({
            "slots": spaces.Box(0.0, LOG_HIGH, (slots * nf,), np.float32),
            "slot_valid": spaces.Box(0.0, 1.0, (slots,), np.float32),
            "globals": spaces.Box(0.0, LOG_HIGH, (ng,), np.float32)})
        self._obs = {"slots": np.zeros(slots * nf, np.float32),
                     "slot_valid": np.zeros(slots, np.float32),
                     "globals": np.zeros(ng, np.float32)}

    def _observe_slots(self) -> dict:
        """The observation of the requests in ``_slot_ids`` (copies of the buffers)."""
        st, o = self._state, self._obs
        D.observe(st.rf, st.ri, st.batch, st.s, st.t, self._cfg_i, st.kv, self._d,
                  self._recent, self._slot_ids, o["slots"], o["slot_valid"], o["globals"])
        return {key: v.copy() for key, v in o.items()}

    def _new_episode(self, seed: int | None) -> dict:
        """A fresh engine state for the episode of ``seed`` (drawn from ``np_random`` if
        None); returns the reset info."""
        self.workload_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31))
        wl = self._fixed_workload or load_workload(self.workload, seed=self.workload_seed)
        wl, self._rate_info = apply_rate(wl, self._config, self._coef, rate=self._rate,
                                         rate_scale=self._rate_scale)
        refused, self._rejected = admission_check(wl, self._config, self._on_unfit)
        hint = self._spec.hint(wl.output_tokens, self._knobs,
                               np.random.default_rng([self.workload_seed, POLICY_STREAM]))
        self._state = new_state(wl, self._config, refused, hint, self._spec.pstate(self._knobs))
        self._workload_name = wl.name
        self._t_start = float(self._state.t[L.T_NOW])
        self._wall = 0.0
        self._lo = 0       # every request before this index has finished or was rejected
        self._iv_buf, self._iv_out = np.zeros((3, self._state.n_requests)), np.zeros(IV_COLS)
        self._arrived = 0  # requests arrived so far (rejected ones included)
        self._history = []  # (t, waiting, running, swapped, kv_util) per step, when rendering
        return {"workload_seed": self.workload_seed, "t": self._t_start,
                "requests": self._state.n_requests, "rejected": len(self._rejected),
                **self._rate_info}

    def _interval(self, t0: float) -> dict:
        """What happened from ``t0`` to now: request-seconds spent in the system (and the
        ``exp-tail`` and ``slo-excess`` penalties, see ``interval_stats``), P50/P90/P99
        of the TTLT and TTFT of the requests that finished (``quantiles``, zeros if none), their
        output tokens, how many finished and missed ``slo_s``, arrivals, and the age of the
        oldest request still in the system."""
        st = self._state
        t1 = float(st.t[L.T_NOW])
        k = int(np.searchsorted(st.rf[:, L.ARRIVAL], t1, side="right"))
        buf, out = self._iv_buf, self._iv_out
        interval_stats(st.rf, st.ri, self._lo, k, t0, t1, self.slo_s, self.theta, buf, out)
        done = int(out[IV_FINISHED])
        self._lo = int(out[IV_LO])
        arrivals, self._arrived = k - self._arrived, k
        return {**interval_costs(out), "completions": done, "quantiles": out[IV_QUANTILES:].copy(),
                "outputs": buf[2, :done].copy(), "arrivals": arrivals,
                "oldest_age": t1 - st.rf[self._lo, L.ARRIVAL] if self._lo < k else 0.0}

    def _penalty(self, interval: dict) -> float:
        """The step's cost under ``reward`` (unscaled) from an ``_interval`` result."""
        return float(interval[REWARDS[self.reward]])

    def _record(self) -> None:
        """Append the queue counts and KV use of this moment to the render history."""
        s = self._state.s
        self._history.append((float(self._state.t[L.T_NOW]) - self._t_start,
                              int(s[L.S_N_WAITING]), int(s[L.S_N_RUNNING]),
                              int(s[L.S_N_SWAPPED]),
                              1.0 - s[L.S_FREE_BLOCKS] / self._config.num_gpu_blocks))

    def _all_done(self) -> bool:
        st = self._state
        return int(st.s[L.S_N_FINISHED]) + len(self._rejected) == st.n_requests

    def _truncated(self, terminated: bool) -> bool:
        return (not terminated and self.horizon_s is not None
                and float(self._state.t[L.T_NOW]) - self._t_start >= self.horizon_s)

    def _config_info(self) -> dict:
        """Names and knobs of the run for ``report().config``."""
        return {"workload": self._workload_name, "policy": self._policy,
                "policy_args": self._knobs, "model": self.model, "gpu": self.gpu,
                "seed": self.workload_seed, "step_model": self._step_model}

    def report(self) -> Report:
        """The episode so far as a ``Report`` (per-request arrays and summary statistics)."""
        st = self._state
        if st is None:
            raise RuntimeError("call reset() before report()")
        return Report(
            requests=request_table(st),
            rejected=self._rejected,
            config={**self._config_info(), **self._load_info, **self._rate_info,
                    **asdict(self._config)},
            steps=int(st.s[L.S_STEPS]),
            simulated_seconds=float(st.t[L.T_NOW]) - self._t_start,
            busy_seconds=float(st.t[L.T_BUSY]),
            wall_seconds=self._wall,
            preemptions_recompute=int(st.s[L.S_PREEMPT_RECOMPUTE]),
            preemptions_swap=int(st.s[L.S_PREEMPT_SWAP]),
            guard_overrides=int(st.s[L.S_GUARD_OVERRIDES]),
            slo={"ttlt": self.slo_s},
        )

    # ------------------------------------------------------------------------ rendering

    def render(self):
        if self.render_mode is None or self._state is None:
            return None
        return self._render_ansi() if self.render_mode == "ansi" else self._render_rgb()

    def _header(self) -> str:
        """First line of the text rendering (what the agent controls)."""
        return f"t={float(self._state.t[L.T_NOW]) - self._t_start:.2f}s"

    def _shown(self) -> np.ndarray:
        """Requests listed in the text rendering, in order."""
        st = self._state
        queued = np.flatnonzero(np.isin(st.ri[:, L.STATUS], list(STATUS_NAMES)[1:]))
        return queued[np.argsort(st.rf[queued, L.PRIO], kind="stable")]

    def _render_ansi(self, max_rows: int = 10) -> str:
        """Header, queue counts, a KV-occupancy bar and a table of requests in the system."""
        st, rf, ri, s = self._state, self._state.rf, self._state.ri, self._state.s
        kv_util = 1.0 - s[L.S_FREE_BLOCKS] / self._config.num_gpu_blocks
        bar = "#" * round(20 * kv_util) + "." * (20 - round(20 * kv_util))
        lines = [self._header(),
                 (f"waiting {s[L.S_N_WAITING]}  running {s[L.S_N_RUNNING]}  swapped "
                  f"{s[L.S_N_SWAPPED]}  finished {s[L.S_N_FINISHED]}/{st.n_requests}"),
                 f"KV [{bar}] {100 * kv_util:.0f}% of {self._config.num_gpu_blocks} blocks",
                 (f"{'req':>6} {'status':>8} {'age_s':>8} {'prompt':>7} {'gen':>6} "
                  f"{'blocks':>6} {'prio':>10}")]
        for i in self._shown()[:max_rows]:
            age = st.t[L.T_NOW] - rf[i, L.ARRIVAL]
            lines.append(f"{i:>6} {STATUS_NAMES[ri[i, L.STATUS]]:>8} {age:>8.2f} "
                         f"{ri[i, L.PROMPT]:>7} {ri[i, L.GENERATED]:>6} {ri[i, L.BLOCKS]:>6} "
                         f"{rf[i, L.PRIO]:>10.4g}")
        return "\n".join(lines)

    def _render_rgb(self) -> np.ndarray:
        """Queue lengths and KV occupancy over the episode, as an (H, W, 3) uint8 picture."""
        if not self._history:
            self._record()
        h = np.array(self._history, dtype=np.float64)

        def draw(top, bottom):
            for col, label in ((1, "waiting"), (2, "running"), (3, "swapped")):
                top.step(h[:, 0], h[:, col], where="post", label=label)
            top.set_ylabel("requests")
            top.legend(fontsize=6, loc="upper left")
            bottom.fill_between(h[:, 0], h[:, 4], step="post", alpha=0.6)
            bottom.set_xlabel("simulated s")
        return kv_picture(draw)
