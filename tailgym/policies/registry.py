"""Policies by name: numba priority function (by id), engine settings, knobs, knowledge.

Each ``PolicySpec`` says what the policy may know about output lengths (``knowledge``):
``none`` (prediction-free: ``hint`` is nan), ``oracle`` (the true length), ``predicted``
(true length times a lognormal error) or ``rank`` (a score with a set Kendall tau to the
truth). The engine passes only ``hint`` to policies, never the true length.
"""
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Callable

import numpy as np

from ..engine.layout import MODE_PREEMPTIVE, MODE_VLLM, V_LAST, V_LOWEST_PRIORITY
from ..hardware import step_features
from . import attained, dispatch, fcfs, gittins, ltr, online, sizes, uniboost

WORK = {"alpha_p": np.nan, "alpha_d": np.nan}  # s/token; nan = from the step-time model
WORK_DOC = {"alpha_p": "work per prompt token, s (default: from the step-time model)",
            "alpha_d": "work per output token, s (default: from the step-time model)"}
GAMMA = {"gamma": 5.0, "gamma_mode": "auto", "gamma_min": np.nan, "gamma_max": 200.0,
         "refresh_s": 5.0, "beta": 0.3, "ada_smoothing": "linear", "gamma_heavy": np.nan}
GAMMA_DOC = {
    "gamma": "boost decay rate, 1/s (the start value in auto and ada modes); large -> FCFS, "
             "small -> SJF; <= 0: no boost, FCFS order (SGLang's fallback)",
    "gamma_mode": "fixed | auto (Lundberg root from arrival rate and completed sizes) | "
                  "ada (from the P95/P99 of recent end-to-end latencies, SGLang's rule)",
    "gamma_min": "lower clamp of gamma, 1/s (also the overload value in auto mode); "
                 "default 1 in ada mode (SGLang), 0.1 otherwise",
    "gamma_max": "upper clamp of gamma, 1/s",
    "refresh_s": "seconds of simulated time between gamma updates (> 0 unless gamma_mode=fixed)",
    "beta": "EMA weight of each gamma update, in (0, 1]",
    "ada_smoothing": "ada mode: linear (SGLang: gamma <- (1 - beta) gamma + beta target) | "
                     "log (EMA in log gamma, at most x2 per update; auto mode always uses it)",
    "gamma_heavy": "auto mode: the gamma while recent sizes are heavy-tailed (Hill index < 2, "
                   "no Lundberg root), 1/s; default gamma_min"}
GAMMA_CHOICES = {"gamma_mode": ("fixed", "auto", "ada"), "ada_smoothing": ("linear", "log")}


@dataclass(frozen=True)
class EngineSettings:
    """How the engine schedules for a policy (see ``tailgym.engine.schedule``)."""

    mode: int = MODE_VLLM
    victim: int = V_LAST
    reprioritize: bool = False
    guard_k: int = 0
    delta: float = 0.0
    cost_aware: bool = False
    reserve: float = 0.0
    refresh_s: float = 0.0


@dataclass(frozen=True)
class PolicySpec:
    """A scheduling policy: id of its numba priority function, knobs (defaults in engine
    order; string knobs take one of ``choices``), and its engine settings."""

    name: str
    pid: int
    doc: str
    signals: tuple[str, ...]
    knowledge: str = "none"
    params: dict = field(default_factory=dict)
    knob_docs: dict = field(default_factory=dict)
    choices: dict = field(default_factory=dict)
    engine: Callable[[dict], EngineSettings] = lambda knobs: EngineSettings()
    check: Callable[[str, dict], None] | None = None  # validates knobs, fills derived defaults

    def __reduce__(self):
        """Registered specs pickle by name (their engine rules may be lambdas)."""
        if POLICIES.get(self.name) is self:
            return get_policy, (self.name,)
        return super().__reduce__()

    @property
    def reads_output_length(self) -> bool:
        return self.knowledge != "none"

    def knobs(self, args: dict | None = None) -> dict:
        """Knob values with defaults filled in; unknown knobs or bad values are errors. A
        number must be finite, or nan where the default is nan (a derived default)."""
        args = dict(args or {})
        unknown = sorted(set(args) - set(self.params))
        if unknown:
            valid = ", ".join(self.params) or "none"
            raise ValueError(f"policy {self.name!r} has no knob {unknown[0]!r} (knobs: {valid})")
        out = {}
        for key, default in self.params.items():
            value = args.get(key, default)
            if key in self.choices:
                if value not in self.choices[key]:
                    raise ValueError(f"policy {self.name!r} knob {key!r} must be one of "
                                     f"{', '.join(self.choices[key])}, got {value!r}")
            else:
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"policy {self.name!r} knob {key!r} needs a number, "
                                     f"got {value!r}") from None
                if not (np.isfinite(value) or (np.isnan(value) and np.isnan(default))):
                    raise ValueError(f"policy {self.name!r} knob {key!r} needs a finite "
                                     f"number, got {args[key]!r}")
            out[key] = value
        if self.check is not None:
            self.check(self.name, out)
        return out

    def param_array(self, args: dict | None = None) -> np.ndarray:
        """Knob values in engine order (choices as their index)."""
        values = [float(self.choices[k].index(v)) if k in self.choices else v
                  for k, v in self.knobs(args).items()]
        return np.array(values, dtype=np.float64) if values else np.zeros(1)

    def settings(self, params: np.ndarray) -> EngineSettings:
        knobs = {k: (self.choices[k][int(v)] if k in self.choices else float(v))
                 for k, v in zip(self.params, params)}
        return self.engine(knobs)

    def hint(self, output_tokens: np.ndarray, knobs: dict, rng: np.random.Generator) -> np.ndarray:
        """What the policy may know about each request's output length."""
        out = np.asarray(output_tokens, dtype=np.float64)
        if self.knowledge == "oracle":
            return out.copy()
        if self.knowledge == "predicted":
            return out * np.exp(knobs["sigma"] * rng.standard_normal(out.size))
        if self.knowledge == "rank":
            return rank_scores(out, knobs["tau"], rng)
        return np.full(out.size, np.nan)

    def pstate(self, knobs: dict) -> np.ndarray:
        return online.new_pstate(float(knobs.get("gamma", 0.0)))


def rank_scores(truth: np.ndarray, tau: float, rng: np.random.Generator) -> np.ndarray:
    """Scores whose Kendall tau with ``truth`` is ``tau`` in expectation: a Gaussian copula
    with correlation ``sin(pi tau / 2)`` on the normal scores of the truth's ranks."""
    if not -1.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [-1, 1], got {tau}")
    n = truth.size
    ranks = np.argsort(np.argsort(truth, kind="stable"), kind="stable")
    z = np.array([NormalDist().inv_cdf(q) for q in (ranks + 0.5) / n])
    rho = np.sin(np.pi * tau / 2.0)
    return rho * z + np.sqrt(max(1.0 - rho * rho, 0.0)) * rng.standard_normal(n)


def knob_error(policy: str, key: str, value: float, rule: str) -> ValueError:
    return ValueError(f"policy {policy!r} knob {key}={value:g} {rule}")


def check_gamma(policy: str, knobs: dict) -> None:
    """Validate the gamma knobs (and the work units) and fill gamma_min's mode default (and
    gamma_heavy's, gamma_min)."""
    mode = knobs["gamma_mode"]
    if np.isnan(knobs["gamma_min"]):
        knobs["gamma_min"] = 1.0 if mode == "ada" else 0.1
    if np.isnan(knobs["gamma_heavy"]):
        knobs["gamma_heavy"] = knobs["gamma_min"]
    for key in ("alpha_p", "alpha_d"):
        if not (np.isnan(knobs[key]) or knobs[key] > 0.0):
            raise knob_error(policy, key, knobs[key], "must be > 0 (seconds of work per token)")
    if not knobs["gamma_min"] > 0.0:
        raise knob_error(policy, "gamma_min", knobs["gamma_min"], "must be > 0")
    if not knobs["gamma_max"] >= knobs["gamma_min"]:
        raise knob_error(policy, "gamma_max", knobs["gamma_max"],
                         f"must be >= gamma_min={knobs['gamma_min']:g}")
    if not 0.0 < knobs["gamma_heavy"] <= knobs["gamma_max"]:
        raise knob_error(policy, "gamma_heavy", knobs["gamma_heavy"],
                         f"must be in (0, gamma_max={knobs['gamma_max']:g}]")
    if not 0.0 < knobs["beta"] <= 1.0:
        raise knob_error(policy, "beta", knobs["beta"], "must be in (0, 1]")
    if knobs["refresh_s"] <= 0.0 and policy in ("uniboost-dist", "gittins-tail"):
        raise knob_error(policy, "refresh_s", knobs["refresh_s"],
                         "must be > 0: the boost tables are rebuilt every refresh_s seconds")
    if knobs["refresh_s"] <= 0.0 and mode != "fixed":
        raise knob_error(policy, "refresh_s", knobs["refresh_s"],
                         f"must be > 0 with gamma_mode={mode}: gamma is re-estimated every "
                         f"refresh_s seconds (gamma_mode=fixed keeps it constant)")


def check_uniboost(policy: str, knobs: dict) -> None:
    check_gamma(policy, knobs)
    if knobs["k"] < 0.0:
        raise knob_error(policy, "k", knobs["k"], "must be >= 0 (0 = no MemGuard quantum)")
    if knobs["delta"] < 0.0:
        raise knob_error(policy, "delta", knobs["delta"], "must be >= 0")
    if not 0.0 <= knobs["reserve"] < 1.0:
        raise knob_error(policy, "reserve", knobs["reserve"], "must be in [0, 1)")
    for key in ("cost_aware", "cached"):
        if knobs[key] not in (0.0, 1.0):
            raise knob_error(policy, key, knobs[key], "must be 0 or 1")


def _uniboost_engine(knobs: dict) -> EngineSettings:
    full = knobs["variant"] == "full"
    if knobs["variant"] == "distboost":
        return EngineSettings(MODE_VLLM, V_LOWEST_PRIORITY, refresh_s=knobs["refresh_s"])
    return EngineSettings(MODE_PREEMPTIVE, V_LOWEST_PRIORITY, reprioritize=True,
                          guard_k=int(knobs["k"]) if full else 0, delta=knobs["delta"],
                          cost_aware=bool(knobs["cost_aware"]), reserve=knobs["reserve"],
                          refresh_s=knobs["refresh_s"])


def check_mlfq(policy: str, knobs: dict) -> None:
    if not knobs["q0"] > 0.0:
        raise knob_error(policy, "q0", knobs["q0"], "must be > 0 (seconds of work)")
    if not knobs["levels"] >= 1.0:
        raise knob_error(policy, "levels", knobs["levels"], "must be >= 1")
    for key in ("k", "starve_s"):
        if knobs[key] < 0.0:
            raise knob_error(policy, key, knobs[key], "must be >= 0 (0 = off)")


def _mlfq_engine(knobs: dict) -> EngineSettings:
    return EngineSettings(MODE_PREEMPTIVE, V_LOWEST_PRIORITY, reprioritize=True,
                          guard_k=int(knobs["k"]), refresh_s=knobs["starve_s"] / 10)


UNIBOOST_KNOBS = {**WORK, **GAMMA, "k": 256.0, "delta": 0.05, "variant": "full",
                  "cost_aware": 1.0, "reserve": 0.02, "memguard": "decode", "cached": 0.0}
UNIBOOST_DOCS = {
    **WORK_DOC, **GAMMA_DOC,
    "k": "MemGuard quantum, tokens: priority changes only at k, 2k, 4k... decoded tokens, and a "
         "(re)dispatched request is not evictable before its next threshold",
    "delta": "hysteresis, s: a request is evicted only for one whose priority is better by more",
    "variant": "full (MemGuard) | base (no MemGuard) | distboost (decodes first, boosted prefills)",
    "cost_aware": "1 = in swap mode, swap a victim only if cheaper than recomputing it",
    "reserve": "share of KV blocks kept free when admitting (decode-growth headroom)",
    "memguard": "full variant: decode (quantise decode progress only) | work (ablation: "
                "quantise the whole known work, k_w = alpha_d k, which ties short prompts)",
    "cached": "1 = count prompt work as uncached tokens (prompt - its prefix-cache match, "
              "looked up at arrival and each refresh while waiting), SGLang's cache-aware form"}
UNIBOOST_CHOICES = {**GAMMA_CHOICES, "variant": ("full", "base", "distboost"),
                    "memguard": ("decode", "work")}
PREEMPTIVE = EngineSettings(MODE_PREEMPTIVE, V_LOWEST_PRIORITY, reprioritize=True)
PRIORITY = EngineSettings(MODE_VLLM, V_LOWEST_PRIORITY)

POLICIES: dict[str, PolicySpec] = {p.name: p for p in (
    PolicySpec("fcfs", dispatch.FCFS, fcfs.__doc__, signals=("arrival",)),
    PolicySpec("sjf-oracle", dispatch.SJF_ORACLE, sizes.__doc__, ("prompt", "true output"),
               "oracle", dict(WORK), dict(WORK_DOC), engine=lambda k: PRIORITY),
    PolicySpec("srpt-oracle", dispatch.SRPT_ORACLE, sizes.__doc__,
               ("prompt", "tokens done", "true output"), "oracle", dict(WORK), dict(WORK_DOC),
               engine=lambda k: PREEMPTIVE),
    PolicySpec("srpt-predicted", dispatch.SRPT_PREDICTED, sizes.__doc__,
               ("prompt", "tokens done", "predicted output"), "predicted",
               {**WORK, "sigma": 0.5},
               {**WORK_DOC, "sigma": "sigma of the multiplicative lognormal prediction error"},
               engine=lambda k: PREEMPTIVE),
    PolicySpec("ltr", dispatch.LTR, ltr.__doc__, ("arrival", "rank score"), "rank",
               {"tau": 0.6, "starvation_s": 30.0},
               {"tau": "Kendall tau of the rank scores to the true output lengths",
                "starvation_s": "waiting longer than this promotes a request ahead of all"},
               engine=lambda k: EngineSettings(MODE_VLLM, V_LOWEST_PRIORITY,
                                               refresh_s=k["starvation_s"] / 10)),
    PolicySpec("las", dispatch.LAS, attained.__doc__, ("prompt", "tokens done", "arrival"),
               params={**WORK, "k": 256.0},
               knob_docs={**WORK_DOC, "k": "minimum run after (re)dispatch, tokens, doubling "
                          "(k, 2k, 4k...); 0 = pure LAS, which thrashes under recompute"},
               engine=lambda k: EngineSettings(MODE_PREEMPTIVE, V_LOWEST_PRIORITY,
                                               reprioritize=True, guard_k=int(k["k"]))),
    PolicySpec("mlfq", dispatch.MLFQ, attained.__doc__, ("prompt", "tokens done", "arrival"),
               params={**WORK, "q0": 0.05, "levels": 8.0, "k": 0.0, "starve_s": 0.0},
               knob_docs={**WORK_DOC, "q0": "quantum of the top level, s of work",
                          "levels": "number of levels",
                          "k": "minimum run after (re)dispatch, tokens, doubling (k, 2k, 4k...); "
                               "0 = none (FastServe protection, off by default)",
                          "starve_s": "a queued request not served for this long, s, is "
                                      "promoted above every level; 0 = never (FastServe)"},
               engine=_mlfq_engine, check=check_mlfq),
    PolicySpec("gamma-boost-oracle", dispatch.GAMMA_BOOST_ORACLE, uniboost.__doc__,
               ("arrival", "prompt", "true output", "online statistics"), "oracle",
               {**WORK, **GAMMA}, {**WORK_DOC, **GAMMA_DOC}, dict(GAMMA_CHOICES),
               engine=lambda k: EngineSettings(MODE_VLLM, V_LOWEST_PRIORITY,
                                               refresh_s=k["refresh_s"]), check=check_gamma),
    PolicySpec("uniboost", dispatch.UNIBOOST, uniboost.__doc__,
               ("arrival", "prompt", "tokens generated", "online statistics"),
               params=dict(UNIBOOST_KNOBS), knob_docs=dict(UNIBOOST_DOCS),
               choices=dict(UNIBOOST_CHOICES), engine=_uniboost_engine, check=check_uniboost),
    PolicySpec("uniboost-dist", dispatch.UNIBOOST_DIST, uniboost.__doc__,
               ("arrival", "prompt", "tokens generated", "online statistics"),
               params=dict(UNIBOOST_KNOBS), knob_docs=dict(UNIBOOST_DOCS),
               choices=dict(UNIBOOST_CHOICES), engine=_uniboost_engine, check=check_uniboost),
    PolicySpec("gittins-tail", dispatch.GITTINS_TAIL, gittins.__doc__,
               ("arrival", "prompt", "tokens generated", "online statistics"),
               params={**UNIBOOST_KNOBS, "gamma_heavy": gittins.GAMMA_HEAVY},
               knob_docs={**UNIBOOST_DOCS, "gamma_heavy": GAMMA_DOC["gamma_heavy"].replace(
                   "default gamma_min", f"default {gittins.GAMMA_HEAVY:g}")},
               choices=dict(UNIBOOST_CHOICES), engine=_uniboost_engine, check=check_uniboost),
)}


def get_policy(name: str) -> PolicySpec:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}") from None


def work_units(coef: np.ndarray, batch: int = 64, context: int = 1024) -> tuple[float, float]:
    """Seconds of work per prompt token (a 2048-token prefill step per token) and per output
    token (a decode step of ``batch`` sequences at ``context`` tokens, per sequence)."""
    def step(x):
        x = np.asarray(x, dtype=np.float64)
        return float(max(coef[0] @ x, coef[1] @ x))
    chunk = 2048
    alpha_p = step(step_features([0], [chunk], [False])) / chunk
    alpha_d = step(step_features(np.full(batch, context), np.ones(batch), np.ones(batch, dtype=bool))) / batch
    return alpha_p, alpha_d


def resolve(name: str, args: dict | None, coef: np.ndarray, max_num_seqs: int):
    """Spec, knob values (work units filled in from the step-time model) and engine params."""
    spec = get_policy(name)
    knobs = spec.knobs(args)
    if "alpha_p" in knobs:
        alpha_p, alpha_d = work_units(coef, batch=min(64, max_num_seqs))
        knobs["alpha_p"] = alpha_p if np.isnan(knobs["alpha_p"]) else knobs["alpha_p"]
        knobs["alpha_d"] = alpha_d if np.isnan(knobs["alpha_d"]) else knobs["alpha_d"]
    return spec, knobs, spec.param_array(knobs)
