"""Synthetic workloads: token-length distributions, shared-prefix sessions and presets
(arrival processes are in :mod:`tailgym.workload.arrivals`).

All randomness comes from an explicit ``numpy.random.Generator`` or seed: the same
seed gives bit-identical workloads.

Presets (:data:`PRESETS`, built with :func:`preset`) are synthetic and only loosely
matched to the published Azure LLM conversation trace (2023), whose prompts have
median 1020 / mean 1155 tokens and outputs median 129 / mean 211 / max 1000:

``chat`` (the offline default)
    2000 requests, Poisson arrivals at 4 req/s; prompt ``LogNormal(median=1000,
    sigma=0.8, max 8000)``, output ``LogNormal(median=130, sigma=0.9, max 2000)``.
``reasoning``
    2000 requests, Poisson at 2 req/s; chat prompts; outputs a mixture of 90 % chat
    outputs and 10 % very long ``Uniform(4000, 16000)`` reasoning outputs.
``bursty-chat``
    ``chat`` lengths and rate with :func:`bursty_arrivals` at its default parameters.
``chat-prefix`` (shared system prompts, single turn)
    ``chat`` with 8 system prompts of 1024 tokens, picked Zipf(1) (group g with
    probability proportional to 1 / (g + 1)): each prompt is 1024 system tokens + a
    chat prompt; content ids per 16 tokens.
``multiturn`` (conversations)
    2000 requests at about 2 req/s (Poisson session starts at 0.5/s), sessions of 4
    turns on average (geometric); one shared 512-token system prompt; each turn adds
    ``LogNormal(median=200, sigma=0.8, max 2000)`` user tokens to the previous prompt +
    output; chat outputs; think time exponential with mean 30 s after an estimated
    0.02 s per output token; sessions stop before a turn would pass 8192 tokens.

See :func:`synthetic` for the shared-prefix knobs (any preset accepts them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .arrivals import arrival_times
from .core import Workload, WorkloadError


# ---------------------------------------------------------------- lengths
# Each distribution's ``sample(n, rng)`` returns int64 token counts in [1, max_tokens].


class LengthDist(Protocol):
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray: ...


def _tokens(x: np.ndarray, max_tokens: int) -> np.ndarray:
    return np.clip(np.rint(x), 1, max_tokens).astype(np.int64)


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise WorkloadError(what)


@dataclass(frozen=True)
class LogNormal:
    """Log-normal lengths: ``median`` and log-space standard deviation ``sigma``."""

    median: float
    sigma: float
    max_tokens: int

    def __post_init__(self):
        _require(self.median > 0 and self.sigma >= 0 and self.max_tokens >= 1, f"invalid {self}")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _tokens(rng.lognormal(np.log(self.median), self.sigma, n), self.max_tokens)


@dataclass(frozen=True)
class Pareto:
    """Pareto (type I) lengths: minimum ``xm`` and tail index ``alpha``."""

    xm: float
    alpha: float
    max_tokens: int

    def __post_init__(self):
        _require(self.xm > 0 and self.alpha > 0 and self.max_tokens >= 1, f"invalid {self}")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _tokens(self.xm * (1.0 + rng.pareto(self.alpha, n)), self.max_tokens)


@dataclass(frozen=True)
class Uniform:
    """Integer lengths uniform on ``[low, high]``."""

    low: int
    high: int

    def __post_init__(self):
        _require(1 <= self.low <= self.high, f"invalid {self}")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.low, self.high, size=n, endpoint=True, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Resample:
    """Bootstrap: draw with replacement from observed lengths (e.g. a trace's array)."""

    values: np.ndarray

    def __post_init__(self):
        v = np.array(self.values, dtype=np.int64)
        _require(v.ndim == 1 and v.size > 0 and v.min() >= 1, "Resample needs a non-empty 1-D array of counts >= 1")
        v.setflags(write=False)
        object.__setattr__(self, "values", v)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.values[rng.integers(0, self.values.size, n)]


@dataclass(frozen=True)
class Mixture:
    """Draw each length from one of ``components``, a sequence of ``(dist, weight)``."""

    components: tuple[tuple[LengthDist, float], ...]

    def __post_init__(self):
        comps = tuple((d, float(w)) for d, w in self.components)
        _require(len(comps) > 0 and all(w > 0 for _, w in comps), "Mixture needs components with weights > 0")
        object.__setattr__(self, "components", comps)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        w = np.array([w for _, w in self.components])
        which = rng.choice(len(w), size=n, p=w / w.sum())
        out = np.empty(n, dtype=np.int64)
        for i, (dist, _) in enumerate(self.components):
            idx = np.flatnonzero(which == i)
            out[idx] = dist.sample(idx.size, rng)
        return out


# ---------------------------------------------------------------- workloads

@dataclass(frozen=True)
class Prefixes:
    """Shared-prefix knobs of a synthetic workload (see :func:`synthetic`); the defaults
    mean independent requests."""

    groups: int = 0
    system_tokens: int = 0
    zipf: float = 0.0
    turns: float = 1.0
    think_s: float = 30.0
    tpot_s: float = 0.02
    max_context: int = 8192
    hash_block: int = 16

    def __post_init__(self):
        _require(self.groups >= 0 and self.system_tokens >= 0 and (self.groups > 0) == (self.system_tokens > 0),
                 f"groups and system_tokens must both be >= 1 (system prompts) or both 0, "
                 f"got groups={self.groups}, system_tokens={self.system_tokens}")
        for key in ("zipf", "think_s", "tpot_s"):
            _require(np.isfinite(getattr(self, key)) and getattr(self, key) >= 0,
                     f"{key} must be finite and >= 0, got {getattr(self, key)}")
        _require(np.isfinite(self.turns) and self.turns >= 1, f"turns (mean per session) must be >= 1, got {self.turns}")
        _require(self.max_context >= 1 and self.hash_block >= 1,
                 f"max_context and hash_block must be >= 1, got {self.max_context}, {self.hash_block}")

    @property
    def active(self) -> bool:
        return self.groups > 0 or self.turns > 1


# The knobs with their types (those of the defaults), for workload specs.
PREFIX_PARAMS = {f.name: type(f.default) for f in dataclasses.fields(Prefixes)}


def synthetic(
    n: int,
    *,
    rate: float,
    prompt: LengthDist,
    output: LengthDist,
    arrival: str = "poisson",
    seed: int | np.random.Generator = 0,
    name: str = "synthetic",
    **kw: float,
) -> Workload:
    """A synthetic workload. ``kw`` are the parameters of the ``arrival`` process (e.g.
    ``cv`` for ``"gamma"``) and the shared-prefix knobs (:data:`PREFIX_PARAMS`, fields of
    :class:`Prefixes`). Arrivals, prompts and outputs use independent streams spawned
    from ``seed``, so changing the arrival process keeps the lengths.

    Without prefix knobs requests are independent and carry no content ids. With them
    every request belongs to a session of ``turns`` requests on average (geometric, 1 by
    default); a session starts at an arrival of the process at ``rate / turns``, so
    requests come at about ``rate``:

    - system prompts: ``groups`` G >= 1 prompts of ``system_tokens`` S tokens; a session
      picks group g with probability proportional to ``(g + 1) ** -zipf`` (0 = uniform)
      and its first prompt is S tokens plus a ``prompt`` draw of user tokens;
    - turns: turn k's prompt is turn k-1's prompt + output + a new ``prompt`` draw; it
      arrives ``tpot_s * output_{k-1} + think`` after turn k-1's arrival (think time
      exponential, mean ``think_s``). The trace stays open-loop (arrivals fixed, so every
      policy sees the same requests) while ``tpot_s * output`` estimates the reply's
      streaming time, so a user typically asks after reading the answer rather than
      during it; ``tpot_s=0`` measures think time from the previous arrival. A session
      ends early when a turn's prompt + output would exceed ``max_context``.

    All sessions are drawn, their requests sorted by arrival and the first ``n`` kept.
    Content ids, one per ``hash_block`` tokens, describe each request's prompt + output:
    a group's ``floor(S / hash_block)`` full system blocks are shared by its sessions,
    and a session's later blocks by its turns, so turn k shares exactly turn k-1's
    prompt + output with it. With G = 0 and turns = 1 prompts and arrivals are exactly
    those of the plain workload; with turns = 1 prompts are plain prompts + S.
    """
    prefix_kw = {k: kw.pop(k) for k in PREFIX_PARAMS if k in kw}
    prefixes = Prefixes(**prefix_kw)
    if not prefixes.active:
        rng_arrival, rng_prompt, rng_output = np.random.default_rng(seed).spawn(3)
        return Workload(
            arrival_s=arrival_times(arrival, n, rate, rng_arrival, **kw),
            prompt_tokens=prompt.sample(n, rng_prompt),
            output_tokens=output.sample(n, rng_output),
            name=name,
        )
    cols, _ = session_requests(n, rate, prompt, output, arrival, seed, prefixes, kw)
    return Workload(name=name, **cols)


def session_requests(n: int, rate: float, prompt: LengthDist, output: LengthDist, arrival: str,
                     seed: int | np.random.Generator, p: Prefixes, arrival_kw: dict) -> tuple[dict, np.ndarray]:
    """The Workload fields of :func:`synthetic` with prefix knobs, and each request's session."""
    rng_arrival, rng_prompt, rng_output, rng_turns, rng_think, rng_group = np.random.default_rng(seed).spawn(6)
    starts = arrival_times(arrival, n, rate / p.turns, rng_arrival, **arrival_kw)
    turns = rng_turns.geometric(1 / p.turns, n)
    live = np.arange(turns.max()) < turns[:, None]  # sessions x turns
    user, out, think = (np.zeros(live.shape, dtype=dtype) for dtype in (np.int64, np.int64, np.float64))
    user[live] = prompt.sample(live.sum(), rng_prompt)
    out[live] = output.sample(live.sum(), rng_output)
    think[live] = rng_think.exponential(p.think_s, live.sum())
    weights = np.arange(1, p.groups + 1, dtype=np.float64) ** -p.zipf
    group = rng_group.choice(p.groups, n, p=weights / weights.sum()) if p.groups else np.zeros(n, dtype=np.int64)
    step = user + out
    prompt_tokens = p.system_tokens + np.cumsum(step, axis=1) - out
    gaps = np.zeros(live.shape)
    gaps[:, 1:] = p.tpot_s * out[:, :-1] + think[:, 1:]
    arrivals = starts[:, None] + np.cumsum(gaps, axis=1)
    live[:, 1:] &= prompt_tokens[:, 1:] + out[:, 1:] <= p.max_context
    order = np.argsort(arrivals[live], kind="stable")[:n]  # session-major ties: turn k-1 first
    session = np.nonzero(live)[0][order]
    cols = {"arrival_s": arrivals[live][order], "prompt_tokens": prompt_tokens[live][order],
            "output_tokens": out[live][order]}  # the first arrival is session 0's start, 0.0
    hashed = cols["prompt_tokens"] + cols["output_tokens"]
    offsets, ids = _session_ids(session, group[session], hashed, p)
    return cols | {"hash_ids": ids, "hash_offsets": offsets, "hash_block_tokens": p.hash_block,
                   "hashed_tokens": hashed}, session


def _session_ids(session: np.ndarray, group: np.ndarray, hashed: np.ndarray, p: Prefixes):
    """Content ids: group g's system block b is ``g * nsys + b``; session s's block b >= nsys
    is ``G * nsys + base[s] + b - nsys``, bases giving each session its own range."""
    nsys = p.system_tokens // p.hash_block
    blocks = -(-hashed // p.hash_block)
    own = np.zeros(session.max() + 1, dtype=np.int64)
    np.maximum.at(own, session, np.maximum(blocks - nsys, 0))
    base = p.groups * nsys + np.concatenate(([0], np.cumsum(own)[:-1]))
    offsets = np.concatenate(([0], np.cumsum(blocks)))
    b = np.arange(offsets[-1]) - np.repeat(offsets[:-1], blocks)
    s, g = np.repeat(session, blocks), np.repeat(group, blocks)
    return offsets, np.where(b < nsys, g * nsys + b, base[s] + b - nsys)


CHAT_PROMPT = LogNormal(median=1000, sigma=0.8, max_tokens=8000)
CHAT_OUTPUT = LogNormal(median=130, sigma=0.9, max_tokens=2000)
TURN_PROMPT = LogNormal(median=200, sigma=0.8, max_tokens=2000)

PRESETS: dict[str, dict] = {
    "chat": dict(n=2000, rate=4.0, arrival="poisson", prompt=CHAT_PROMPT, output=CHAT_OUTPUT),
    "reasoning": dict(
        n=2000,
        rate=2.0,
        arrival="poisson",
        prompt=CHAT_PROMPT,
        output=Mixture(((CHAT_OUTPUT, 0.9), (Uniform(4000, 16000), 0.1))),
    ),
    "bursty-chat": dict(n=2000, rate=4.0, arrival="bursty", prompt=CHAT_PROMPT, output=CHAT_OUTPUT),
    "chat-prefix": dict(n=2000, rate=4.0, arrival="poisson", prompt=CHAT_PROMPT, output=CHAT_OUTPUT,
                        groups=8, system_tokens=1024, zipf=1.0),
    "multiturn": dict(n=2000, rate=2.0, arrival="poisson", prompt=TURN_PROMPT, output=CHAT_OUTPUT,
                      groups=1, system_tokens=512, turns=4.0, think_s=30.0, tpot_s=0.02, max_context=8192),
}


def preset(name: str, /, **overrides) -> Workload:
    """The preset ``name`` (see the module docstring) with keyword overrides for :func:`synthetic`."""
    if name not in PRESETS:
        raise WorkloadError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return synthetic(**(PRESETS[name] | {"name": name} | overrides))
