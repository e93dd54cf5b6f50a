"""Synthetic workloads: arrival processes, token-length distributions and presets.

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

import inspect
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .core import Workload, WorkloadError


def _check(n: int, rate: float) -> None:
    if int(n) != n or n < 1:
        raise WorkloadError(f"n must be an integer >= 1, got {n}")
    if not (np.isfinite(rate) and rate > 0):
        raise WorkloadError(f"rate must be finite and > 0, got {rate}")


def _from_gaps(gaps: np.ndarray) -> np.ndarray:
    return np.concatenate(([0.0], np.cumsum(gaps)))


# ---------------------------------------------------------------- arrivals
# Each returns n non-decreasing arrival times in seconds, the first at 0.0.


def gamma_arrivals(n: int, rate: float, cv: float, rng: np.random.Generator) -> np.ndarray:
    """Renewal process with Gamma inter-arrivals of mean ``1/rate`` and coefficient of
    variation ``cv`` (``cv=1`` is Poisson; larger is burstier)."""
    _check(n, rate)
    if not (np.isfinite(cv) and cv > 0):
        raise WorkloadError(f"cv must be finite and > 0, got {cv}")
    shape = 1.0 / cv**2
    return _from_gaps(rng.gamma(shape, 1.0 / (rate * shape), n - 1))


def poisson_arrivals(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson process: exponential inter-arrivals of mean ``1/rate``."""
    return gamma_arrivals(n, rate, 1.0, rng)


def bursty_arrivals(
    n: int,
    rate: float,
    rng: np.random.Generator,
    *,
    burst_ratio: float = 10.0,
    p_burst: float = 0.1,
    mean_burst_s: float = 5.0,
) -> np.ndarray:
    """Two-state (calm/burst) Markov-modulated Poisson process with long-run mean ``rate``.

    burst_ratio:  arrival rate in a burst divided by the calm rate (>= 1).
    p_burst:      long-run fraction of time spent in bursts (0 < p_burst < 1).
    mean_burst_s: mean burst duration in seconds; calm periods then last
                  ``mean_burst_s * (1 - p_burst) / p_burst`` on average.
    State durations are exponential and the process starts in its stationary state.
    """
    _check(n, rate)
    if not (burst_ratio >= 1 and 0 < p_burst < 1 and mean_burst_s > 0):
        raise WorkloadError(
            f"need burst_ratio >= 1, 0 < p_burst < 1, mean_burst_s > 0; "
            f"got {burst_ratio}, {p_burst}, {mean_burst_s}"
        )
    calm_rate = rate / (p_burst * burst_ratio + 1 - p_burst)
    rates = np.array([calm_rate, calm_rate * burst_ratio])  # index 1 = burst
    means = np.array([mean_burst_s * (1 - p_burst) / p_burst, mean_burst_s])
    per_cycle = rates @ means
    state = int(rng.random() < p_burst)
    starts, durs, counts = [], [], []
    t, total = 0.0, 0
    while total < n:
        k = 2 * int(np.ceil(1.2 * (n - total) / per_cycle)) + 2  # sojourns in this chunk (even)
        states = (state + np.arange(k)) % 2
        d = rng.exponential(means[states])
        c = rng.poisson(rates[states] * d)
        starts.append(t + np.concatenate(([0.0], np.cumsum(d[:-1]))))
        durs.append(d)
        counts.append(c)
        t += d.sum()
        total += int(c.sum())
    counts = np.concatenate(counts)
    times = np.repeat(np.concatenate(starts), counts)
    times += rng.random(times.size) * np.repeat(np.concatenate(durs), counts)
    times = np.sort(times)[:n]
    return times - times[0]


ARRIVAL_PROCESSES = {"poisson": poisson_arrivals, "gamma": gamma_arrivals, "bursty": bursty_arrivals}


def arrival_params(process: str) -> dict[str, inspect.Parameter]:
    """Parameters of arrival ``process`` besides ``n``, ``rate`` and ``rng``."""
    try:
        fn = ARRIVAL_PROCESSES[process]
    except KeyError:
        raise WorkloadError(f"unknown arrival process {process!r}; valid: {', '.join(ARRIVAL_PROCESSES)}") from None
    params = inspect.signature(fn).parameters
    return {k: p for k, p in params.items() if k not in ("n", "rate", "rng")}


def arrival_times(process: str, n: int, rate: float, rng: np.random.Generator, **params: float) -> np.ndarray:
    """Draw ``n`` arrivals from ``process`` (a key of :data:`ARRIVAL_PROCESSES`)."""
    allowed = arrival_params(process)
    if unknown := sorted(set(params) - set(allowed)):
        takes = f"parameters {', '.join(allowed)}" if allowed else "no parameters"
        raise WorkloadError(f"{process} arrivals take {takes}; got {', '.join(unknown)}")
    if missing := [k for k, p in allowed.items() if p.default is p.empty and k not in params]:
        raise WorkloadError(f"{process} arrivals need {', '.join(missing)}")
    return ARRIVAL_PROCESSES[process](n=n, rate=rate, rng=rng, **params)


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
