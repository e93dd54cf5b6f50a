"""``tailgym/ServePriority-v0``: score the requests; the engine serves them in score order.

Every ``interval_s`` of simulated time the agent gives one score per visible slot. The slots
hold the ``slots`` oldest requests in the system (arrived and unfinished; oldest first).
In between, the engine runs its preemptive single-priority scheduler (``MODE_PREEMPTIVE``,
see ``tailgym.engine.schedule``) on those scores: a higher score is served first, may take
the KV blocks of a running request with a lower one (past its MemGuard guard ``guard_k`` and
by more than the hysteresis ``delta``), and requests nobody scored yet (younger than the
visible ones, or arrived during the interval) come after every scored one, oldest first.
All-equal scores therefore serve in arrival order.

**Action**: ``Box(-1, 1, (slots,), float32)``, clipped; entries of empty slots are ignored.

**Observation**: the same ``Dict`` as ``tailgym/Serve-v0`` (``slots``, ``slot_valid``,
``globals``; the decision-kind and budget features are 0), for the visible requests.
Rewards (``response``, ``exp-tail``, ``slo-excess``, ``tail``), episodes and engine kwargs as
``ServingEnv``; a step's reward covers its interval.
"""
import time

import numpy as np
from gymnasium import spaces

from ..engine import decisions as D
from ..engine import layout as L
from ..engine.heap import heapify
from ..engine.runner import run_steps
from ..engine.layout import MODE_PREEMPTIVE, V_LOWEST_PRIORITY
from ..policies import dispatch
from ..policies.registry import EngineSettings, PolicySpec
from .base import ServingEnv

def _external_engine(knobs: dict) -> EngineSettings:
    return EngineSettings(MODE_PREEMPTIVE, V_LOWEST_PRIORITY, guard_k=int(knobs["k"]),
                          delta=knobs["delta"])


EXTERNAL = PolicySpec(
    "external", dispatch.EXTERNAL, "Priorities set from outside the engine.",
    signals=("agent scores",), params={"k": 0.0, "delta": 0.0},
    knob_docs={"k": "MemGuard quantum, tokens (0 = a request may be evicted at once)",
               "delta": "hysteresis: evict only for a score higher by more than this"},
    engine=_external_engine)
LIVE = (L.ST_FUTURE, L.ST_WAITING, L.ST_RUNNING, L.ST_SWAPPED)  # FUTURE: arrived, not yet queued


class ServePriorityEnv(ServingEnv):
    """Per-request priority scores, one action per interval (see the module docstring)."""

    def __init__(self, workload: str = "default:n=2000", model: str = "llama3-8b",
                 gpu: str = "h100-80gb", profile: str | None = None, load: float | None = None,
                 rate: float | None = None, rate_scale: float | None = None,
                 kv_blocks: int | None = None, max_num_batched_tokens: int | None = None,
                 max_num_seqs: int | None = None, preemption_mode: str = "recompute",
                 slots: int = 16, interval_s: float = 1.0, guard_k: int = 0,
                 delta: float = 0.0, reward: str = "response", reward_scale: float = 1.0,
                 slo_s: float = 10.0, theta: float = 0.1, horizon_s: float | None = None,
                 on_unfit: str = "reject",
                 render_mode: str | None = None):
        self._init_slot_view(slots)
        if not (np.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be finite and > 0, got {interval_s}")
        if not (guard_k >= 0 and delta >= 0):
            raise ValueError(f"guard_k and delta must be >= 0, got {guard_k}, {delta}")
        super().__init__(workload, model, gpu, profile, load, rate, rate_scale, kv_blocks,
                         max_num_batched_tokens, max_num_seqs, preemption_mode, reward,
                         reward_scale, slo_s, horizon_s, on_unfit, render_mode,
                         theta)
        self._policy, self._spec = "external", EXTERNAL
        self._knobs = EXTERNAL.knobs({"k": guard_k, "delta": delta})
        self._params = EXTERNAL.param_array(self._knobs)
        self._cfg_i, self._cfg_f = self._config.arrays(EXTERNAL, self._params)
        self.interval_s = float(interval_s)
        self.action_space = spaces.Box(-1.0, 1.0, (slots,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        info = self._new_episode(seed)
        self._state.rf[:, L.PRIO] = dispatch.UNSCORED
        self._d, _, self._slot_ids, _, self._recent, _ = D.new_decision_state(
            self.slots, self._state.n_requests, self.slo_s)
        return self._observe(), info

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape or not np.isfinite(a).all():
            raise ValueError(f"action must be {self.slots} finite numbers, got {action!r}")
        st = self._state
        shown = self._slot_ids >= 0
        st.rf[self._slot_ids[shown], L.PRIO] = -np.clip(a[shown], -1.0, 1.0)
        heapify(st.queues[L.Q_WAITING], st.s[L.S_N_WAITING], st.rf)
        heapify(st.queues[L.Q_SWAPPED], st.s[L.S_N_SWAPPED], st.rf)
        t0 = float(st.t[L.T_NOW])
        start = time.perf_counter()
        run_steps(st, self._cfg_i, self._cfg_f, self._coef, self._params, t0 + self.interval_s)
        self._wall += time.perf_counter() - start
        iv = self._interval(t0)
        for n in iv["outputs"]:  # completed output lengths feed the quantile features
            self._recent[self._d[D.D_RECENT] % self._recent.size] = n
            self._d[D.D_RECENT] += 1
        terminated = self._all_done()
        truncated = self._truncated(terminated)
        penalty = self._penalty(iv)
        info = {"t": float(st.t[L.T_NOW]), "completions": iv["completions"],
                "slo_violations": iv["slo_violations"],
                **{key: iv[key] for key in ("in_system_s", "exp_tail", "slo_excess")}}
        if terminated or truncated:
            info["tailgym"] = self.report().summary()
        if self.render_mode is not None:
            self._record()
        return self._observe(), -self.reward_scale * float(penalty), terminated, truncated, info

    def _observe(self) -> dict:
        """Pick the visible requests (the oldest arrived, unfinished ones) and describe them."""
        st = self._state
        k = int(np.searchsorted(st.rf[:, L.ARRIVAL], st.t[L.T_NOW], side="right"))
        live = np.flatnonzero(np.isin(st.ri[self._lo:k, L.STATUS], LIVE))[:self.slots]
        self._slot_ids[:] = -1
        self._slot_ids[:live.size] = self._lo + live
        self._d[D.D_NSLOTS] = live.size
        return self._observe_slots()

    def _config_info(self) -> dict:
        return {**super()._config_info(), "policy": "agent", "slots": self.slots,
                "interval_s": self.interval_s}

    def _shown(self) -> np.ndarray:
        return self._slot_ids[self._slot_ids >= 0]
