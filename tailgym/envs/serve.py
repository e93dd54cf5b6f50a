"""``tailgym/Serve-v0``: make the engine's scheduling decisions, one at a time.

The engine runs vLLM 0.33's scheduler with its defaults (running requests first, then
swapped, then waiting ones; async scheduling, prefix caching, full-prompt reservation; see
``tailgym.engine.decisions``) and stops, with its clock frozen, at each choice:

* **admit** (``globals[decision_admit] == 1``): which swapped or waiting request gets its
  next share of this step's token budget (chunked prefill), or the no-op, which runs the
  step. Offered while budget, seats and an admissible request are left, in steps without
  preemption.
* **evict** (``decision_evict``): a running request needs KV blocks the cache lacks; pick
  the running request to preempt (the one asking may pick itself, which ends the running pass
  under ``fcfs`` and goes on to the next running request under priority policies, as vLLM;
  one already scheduled leaves the batch).
* **swap or recompute** (``decision_swap``, ``preemption_mode="swap"`` only, when the victim
  fits the host space): action 0 recomputes, action 1 swaps.

**Action**: ``Discrete(slots + 1)``: a slot, or ``slots`` for the no-op. ``action_masks()``
(bool, what sb3-contrib reads) and ``info["action_mask"]`` (int8) mark the legal ones. An
illegal action is replaced by ``heuristic_action()`` and flagged in ``info["illegal_action"]``
(counted in ``report().config["illegal_actions"]``), or raises with
``illegal_action="raise"``.

**Observation**: ``Dict`` of float32 Boxes: ``slots`` (``slots x len(SLOT_FEATURES)``, flat,
slot-major: age, prompt tokens, tokens generated, tokens left to compute, phase (1 while
decoding, 0 in prefill or recompute), KV blocks held, preemptions, swapped, running, tokens
scheduled this step, blocks it needs, prompt tokens the prefix cache serves it: at its
admission, or for a waiting request if it were admitted now), ``slot_valid``
and ``globals`` (``GLOBAL_FEATURES``: decision kind, KV and host use, budget and seats left,
queue lengths, candidates hidden beyond the slots, batch size, arrival rate over the last 64
arrivals, P50/P90/P99 of the last 64 completed output lengths, preemptions). Counts and times
are ``log1p``'d. Slots list the candidates of the pending decision in the order of the
``order`` policy (victim order for evictions; swapped then waiting, best first, for
admissions); nothing reveals the output length of an unfinished request unless ``order``
itself reads it (e.g. ``sjf-oracle``: then the slot order does). Async scheduling: each
decision forms the next batch while the previous one is still in flight, so the observation
shows what vLLM's scheduler sees then (tokens in flight count as computed; a waiting request
whose output is still in flight is not offered); and, as in vLLM, a request whose last
(``max_tokens``-th) token is in flight is scheduled no more, which an agent can notice one
batch before it ends.

``heuristic_action()`` is the ``order`` policy's own choice; always taking it reproduces
``tailgym.simulate(..., policy=order)`` bit for bit for the policies that use vLLM's
scheduler (``fcfs``, ``sjf-oracle``, ``ltr``, ``gamma-boost-oracle``, ``uniboost`` with
``variant=distboost``). Rewards (``response``, ``exp-tail``, ``slo-excess``, ``tail``),
episodes and engine kwargs as ``ServingEnv``; one step is
one decision, so a step's reward covers the engine steps run since the previous decision
(``info["elapsed_s"]`` simulated seconds; 0 between decisions of the same engine step).
Mind the discount: with one below 1 an agent defers its costs by taking more decisions per
engine step; train undiscounted or discount by ``elapsed_s``. The no-op is legal whenever the
batch is not empty, so an agent may hold requests back (to keep KV headroom) or starve them;
with ``work_conserving=True`` it is legal only once nothing more can be admitted, so the agent
chooses the admission order only (``heuristic_action()`` then takes the best admissible
request where vLLM would block at the head of the line).
"""
import time

import numpy as np
from gymnasium import spaces

from ..engine import EngineError
from ..engine import decisions as D
from ..engine import layout as L
from ..engine.kv import should_swap
from .base import ServingEnv

KIND_NAMES = {D.K_ADMIT: "admit", D.K_EVICT: "evict", D.K_SWAP: "swap or recompute",
              D.K_NONE: "none"}


class ServeEnv(ServingEnv):
    """Decision-event serving environment (see the module docstring). ``slots`` is the number
    of visible candidates K; ``order`` names the policy that orders them (its priorities, its
    victim rule) and ``policy_args`` its knobs."""

    _timed = 1  # the step-time model times each batch (0: an outside clock does)

    def __init__(self, workload: str = "default:n=2000", model: str = "llama3-8b",
                 gpu: str = "h100-80gb", profile: str | None = None, load: float | None = None,
                 rate: float | None = None, rate_scale: float | None = None,
                 kv_blocks: int | None = None, max_num_batched_tokens: int | None = None,
                 max_num_seqs: int | None = None, preemption_mode: str = "recompute",
                 slots: int = 16, order: str = "fcfs", policy_args: dict | None = None,
                 reward: str = "response", reward_scale: float = 1.0, slo_s: float = 10.0,
                 theta: float = 0.1, horizon_s: float | None = None,
                 on_unfit: str = "reject",
                 illegal_action: str = "fallback", work_conserving: bool = False,
                 render_mode: str | None = None):
        self._init_slot_view(slots)
        if illegal_action not in ("fallback", "raise"):
            raise ValueError(f"illegal_action must be 'fallback' or 'raise', "
                             f"got {illegal_action!r}")
        self.illegal_action, self.work_conserving = illegal_action, bool(work_conserving)
        super().__init__(workload, model, gpu, profile, load, rate, rate_scale, kv_blocks,
                         max_num_batched_tokens, max_num_seqs, preemption_mode, reward,
                         reward_scale, slo_s, horizon_s, on_unfit, render_mode,
                         theta)
        self._set_policy(order, policy_args)
        self._cfg_i, self._cfg_f = self._config.arrays(self._spec, self._params)
        self.action_space = spaces.Discrete(slots + 1)
        self._mask = np.ones(slots + 1, dtype=np.int8)  # before reset(): nothing is known
        self._status = D.ADV_DONE

    def action_masks(self) -> np.ndarray:
        """Legal actions (bool, ``slots + 1``); all True before ``reset()``."""
        return self._mask.astype(bool)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        info = self._new_episode(seed)
        st = self._state
        (self._d, self._df, self._slot_ids, self._mask, self._recent,
         self._scratch) = D.new_decision_state(self.slots, st.n_requests, self.slo_s,
                                               self.work_conserving)
        self._until = np.inf if self.horizon_s is None else self._t_start + self.horizon_s
        self._illegal = 0
        self._advance(-1)
        self._df[D.DF_AREA] = self._df[D.DF_MISSES] = 0.0
        info["action_mask"] = self._mask.copy()
        return self._observe_slots(), info

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        a = int(action)
        if a != action or not 0 <= a <= self.slots:
            raise ValueError(f"action must be an integer in 0..{self.slots}, got {action!r}")
        if self._status != D.ADV_DECISION:
            raise RuntimeError("the episode has ended: call reset()")
        illegal = not self._mask[a]
        if illegal:
            if self.illegal_action == "raise":
                raise ValueError(f"action {a} is not allowed for this {self.decision} "
                                 f"decision; legal: {np.flatnonzero(self._mask).tolist()}")
            a = self.heuristic_action()
            self._illegal += 1
        start, t0 = time.perf_counter(), float(self._state.t[L.T_NOW])
        self._advance(a)
        self._wall += time.perf_counter() - start
        df = self._df
        if self.reward == "response":  # the engine's own books (exact, and cheaper)
            penalty = df[D.DF_AREA]
        elif self.reward == "tail":
            penalty = df[D.DF_MISSES]
        else:
            penalty = self._penalty(self._interval(t0))
        df[D.DF_AREA] = df[D.DF_MISSES] = 0.0
        terminated = self._status == D.ADV_DONE
        truncated = self._status == D.ADV_STOP
        info = {"action_mask": self._mask.copy(), "illegal_action": illegal,
                "elapsed_s": float(self._state.t[L.T_NOW]) - t0}
        if terminated or truncated:
            info["tailgym"] = self.report().summary()
        if self.render_mode is not None:
            self._record()
        return self._observe_slots(), -self.reward_scale * float(penalty), terminated, truncated, info

    @property
    def decision(self) -> str:
        """The pending decision: ``admit``, ``evict``, ``swap or recompute`` or ``none``."""
        return KIND_NAMES[int(self._d[D.D_KIND])] if self._state is not None else "none"

    def heuristic_action(self) -> int:
        """What the ``order`` policy's own scheduler would do now."""
        kind, st = int(self._d[D.D_KIND]), self._state
        if kind == D.K_SWAP:
            victim = int(self._d[D.D_VICTIM])
            return int(should_swap(st.ri, victim, st.s, self._cfg_i, self._cfg_f, self._coef))
        if kind == D.K_ADMIT and not self._mask[0]:
            return self.slots if self._mask[self.slots] else int(np.flatnonzero(self._mask)[0])
        return 0

    def _advance(self, action: int) -> None:
        """Run the engine to the next decision (or the episode's end)."""
        st, d = self._state, self._d
        args = (st.rf, st.ri, st.target, st.hint, st.queues, st.batches, st.s, st.t,
                self._cfg_i, self._cfg_f, self._coef, self._params, st.pstate, st.kv, d, self._df,
                self._slot_ids, self._mask, self._recent, self._scratch)
        status = D.advance(*args, action, self._timed, self._until)
        while status == D.ADV_READY:
            D.enqueue(st.s, st.t, self._cfg_i, d, self._execute_batch())
            status = D.advance(*args, -1, 0, self._until)
        if status == D.ADV_ERROR:
            raise EngineError(f"engine error {st.s[L.S_ERROR]} at t={st.t[L.T_NOW]:.6f}s: "
                              f"{st.status_counts()}")
        self._status = status
        if status != D.ADV_DECISION:
            d[D.D_KIND] = D.K_NONE
            d[D.D_NSLOTS] = 0
            self._slot_ids[:] = -1
            self._mask[:] = 0
            self._mask[self.slots] = 1

    def _execute_batch(self) -> float:
        """Seconds the formed batch takes on an outside engine (untimed mode only)."""
        raise NotImplementedError

    def _config_info(self) -> dict:
        return {**super()._config_info(), "policy": "agent", "order": self._policy,
                "slots": self.slots, "illegal_actions": self._illegal}

    def _header(self) -> str:
        legal = np.flatnonzero(self._mask).tolist()
        return f"{super()._header()}  decision: {self.decision}  legal actions: {legal}"

    def _shown(self) -> np.ndarray:
        ids = self._slot_ids
        return ids[ids >= 0] if self._d[D.D_KIND] != D.K_NONE else super()._shown()
