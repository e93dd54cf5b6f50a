"""Arrival processes: renewal (Poisson, Gamma) and a two-state bursty process.

Each returns n non-decreasing arrival times in seconds, the first at 0.0, drawn from an
explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import inspect

import numpy as np

from .core import WorkloadError


def _check(n: int, rate: float) -> None:
    if int(n) != n or n < 1:
        raise WorkloadError(f"n must be an integer >= 1, got {n}")
    if not (np.isfinite(rate) and rate > 0):
        raise WorkloadError(f"rate must be finite and > 0, got {rate}")


def _from_gaps(gaps: np.ndarray) -> np.ndarray:
    return np.concatenate(([0.0], np.cumsum(gaps)))


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
