"""Synthetic workloads: token-length distributions and presets (arrival processes are in
:mod:`tailgym.workload.arrivals`).

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
"""

from __future__ import annotations

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


def synthetic(
    n: int,
    *,
    rate: float,
    prompt: LengthDist,
    output: LengthDist,
    arrival: str = "poisson",
    seed: int | np.random.Generator = 0,
    name: str = "synthetic",
    **arrival_kw: float,
) -> Workload:
    """A synthetic workload. ``arrival_kw`` are the parameters of the ``arrival`` process
    (e.g. ``cv`` for ``"gamma"``). Arrivals, prompts and outputs use independent
    streams spawned from ``seed``, so changing the arrival process keeps the lengths."""
    rng_arrival, rng_prompt, rng_output = np.random.default_rng(seed).spawn(3)
    return Workload(
        arrival_s=arrival_times(arrival, n, rate, rng_arrival, **arrival_kw),
        prompt_tokens=prompt.sample(n, rng_prompt),
        output_tokens=output.sample(n, rng_output),
        name=name,
    )


CHAT_PROMPT = LogNormal(median=1000, sigma=0.8, max_tokens=8000)
CHAT_OUTPUT = LogNormal(median=130, sigma=0.9, max_tokens=2000)

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
}


def preset(name: str, /, **overrides) -> Workload:
    """The preset ``name`` (see the module docstring) with keyword overrides for :func:`synthetic`."""
    if name not in PRESETS:
        raise WorkloadError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return synthetic(**(PRESETS[name] | {"name": name} | overrides))
