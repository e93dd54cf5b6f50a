"""Routers: which replica of a fleet serves each arriving request; one numba function each.

A router reads per-replica signals ``sig`` (float64 ``(R, SIG_COLS)``, columns ``SIG_*``;
fresh, or a snapshot taken every ``router_refresh_s``), the request's cached prefix on each
replica ``match`` (tokens; zeros unless the router reads prefixes and prefix caching is on),
its prompt length, two uniform numbers ``u0, u1`` pre-drawn for the request, its rank among
the routed requests ``seq`` and the router's knob values ``args``, and returns a replica.
Ties go to the lowest replica index. To add a router: a function here, a branch in ``route``
and an entry in ``ROUTERS``.
"""
from dataclasses import dataclass, field

import numpy as np

from ..jit import kernel

SIG_OUTSTANDING = 0  # requests routed to the replica and not finished
SIG_QUEUED = 1       # of those, not running: waiting, swapped, or routed and not admitted yet
SIG_KV = 2           # share of its GPU KV blocks in use (cached free blocks count as free)
SIG_TOKENS = 3       # prompt + generated tokens of its outstanding requests (routers that ask)
SIG_COLS = 4

R_ROUND_ROBIN = 0
R_RANDOM = 1
R_LEAST_OUTSTANDING = 2
R_LEAST_TOKENS = 3
R_POWER_OF_TWO = 4
R_KV_UTILIZATION = 5
R_PREFIX_AWARE = 6
R_WEIGHTED = 7


@kernel
def least(sig, col):
    """Replica with the smallest ``sig[:, col]``."""
    best = 0
    for r in range(1, sig.shape[0]):
        if sig[r, col] < sig[best, col]:
            best = r
    return best


@kernel
def power_of_two(sig, u0, u1):
    """Two distinct replicas drawn uniformly; the one with fewer outstanding requests."""
    n = sig.shape[0]
    if n == 1:
        return 0
    a = min(int(u0 * n), n - 1)
    b = min(int(u1 * (n - 1)), n - 2)
    if b >= a:
        b += 1
    lo, hi = min(a, b), max(a, b)
    return hi if sig[hi, SIG_OUTSTANDING] < sig[lo, SIG_OUTSTANDING] else lo


@kernel
def kv_utilization(sig):
    """Least KV use; ties by fewer outstanding requests."""
    best = 0
    for r in range(1, sig.shape[0]):
        if (sig[r, SIG_KV] < sig[best, SIG_KV]
                or (sig[r, SIG_KV] == sig[best, SIG_KV]
                    and sig[r, SIG_OUTSTANDING] < sig[best, SIG_OUTSTANDING])):
            best = r
    return best


@kernel
def prefix_aware(sig, match, prompt, args):
    """SGLang's cache-aware rule: when the load is imbalanced (max - min outstanding above
    ``balance_abs`` and max above ``balance_rel`` x min) the least loaded replica; else the
    longest cached prefix if it covers at least ``cache_threshold`` of the prompt (ties: the
    less loaded), else the least loaded."""
    lo = least(sig, SIG_OUTSTANDING)
    mx = sig[0, SIG_OUTSTANDING]
    for r in range(1, sig.shape[0]):
        mx = max(mx, sig[r, SIG_OUTSTANDING])
    mn = sig[lo, SIG_OUTSTANDING]
    if mx - mn > args[1] and mx > args[2] * mn:
        return lo
    best = 0
    for r in range(1, sig.shape[0]):
        if (match[r] > match[best] or (match[r] == match[best]
                                       and sig[r, SIG_OUTSTANDING] < sig[best, SIG_OUTSTANDING])):
            best = r
    if match[best] > 0 and match[best] >= args[0] * prompt:
        return best
    return lo


@kernel
def weighted(sig, match, prompt, args):
    """llm-d's scorer sum: ``w_prefix`` x cached share of the prompt + ``w_queue`` x queue
    score ((max - queued) / (max - min) over replicas; 1 when all equal) + ``w_kv`` x free
    KV share; the highest score."""
    qmin = sig[0, SIG_QUEUED]
    qmax = qmin
    for r in range(1, sig.shape[0]):
        qmin = min(qmin, sig[r, SIG_QUEUED])
        qmax = max(qmax, sig[r, SIG_QUEUED])
    best, top = 0, -np.inf
    for r in range(sig.shape[0]):
        queue = (qmax - sig[r, SIG_QUEUED]) / (qmax - qmin) if qmax > qmin else 1.0
        score = (args[0] * match[r] / max(prompt, 1) + args[1] * queue
                 + args[2] * (1.0 - sig[r, SIG_KV]))
        if score > top:
            best, top = r, score
    return best


@kernel
def route(rid, sig, match, prompt, u0, u1, seq, args):
    """The replica router ``rid`` picks (see the module docstring)."""
    n = sig.shape[0]
    if rid == R_ROUND_ROBIN:
        return seq % n
    if rid == R_RANDOM:
        return min(int(u0 * n), n - 1)
    if rid == R_LEAST_OUTSTANDING:
        return least(sig, SIG_OUTSTANDING)
    if rid == R_LEAST_TOKENS:
        return least(sig, SIG_TOKENS)
    if rid == R_POWER_OF_TWO:
        return power_of_two(sig, u0, u1)
    if rid == R_KV_UTILIZATION:
        return kv_utilization(sig)
    if rid == R_PREFIX_AWARE:
        return prefix_aware(sig, match, prompt, args)
    return weighted(sig, match, prompt, args)


@dataclass(frozen=True)
class RouterSpec:
    """A router by name: its id in ``route``, what it reads, its knobs and their defaults."""

    name: str
    rid: int
    doc: str
    params: dict = field(default_factory=dict)
    reads_prefix: bool = False
    reads_tokens: bool = False

    def knobs(self, args: dict | None = None) -> dict:
        """Knob values with defaults filled in; an unknown knob or a value that is not a
        finite number >= 0 is an error naming it."""
        given = dict(args or {})
        for key in sorted(given):
            if key not in self.params:
                raise ValueError(f"router {self.name!r} has no knob {key!r} "
                                 f"(knobs: {', '.join(self.params) or 'none'})")
        return {key: self._number(key, given.get(key, default))
                for key, default in self.params.items()}

    def _number(self, key: str, value) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not (np.isfinite(number) and number >= 0):
            raise ValueError(f"router {self.name!r} knob {key!r} needs a finite number >= 0, "
                             f"got {value!r}")
        return number

    def param_array(self, knobs: dict) -> np.ndarray:
        return np.array([knobs[k] for k in self.params] or [0.0], dtype=np.float64)


ROUTERS = {spec.name: spec for spec in (
    RouterSpec("round-robin", R_ROUND_ROBIN, "the i-th routed request to replica i mod N"),
    RouterSpec("random", R_RANDOM, "a uniformly random replica (seeded)"),
    RouterSpec("least-outstanding", R_LEAST_OUTSTANDING,
               "fewest requests routed there and not finished"),
    RouterSpec("least-tokens", R_LEAST_TOKENS,
               "fewest prompt + generated tokens of unfinished requests", reads_tokens=True),
    RouterSpec("power-of-two", R_POWER_OF_TWO,
               "two random replicas, the one with fewer outstanding requests"),
    RouterSpec("kv-utilization", R_KV_UTILIZATION,
               "least KV cache in use (ties: fewer outstanding requests)"),
    RouterSpec("prefix-aware", R_PREFIX_AWARE,
               "longest cached prefix above cache_threshold of the prompt, else the least "
               "loaded; the least loaded whenever max - min load > balance_abs and "
               "max > balance_rel x min (SGLang's cache-aware router)",
               {"cache_threshold": 0.3, "balance_abs": 64.0, "balance_rel": 1.5},
               reads_prefix=True),
    RouterSpec("weighted", R_WEIGHTED,
               "highest w_prefix x prefix hit share + w_queue x queue score + w_kv x free KV "
               "share (llm-d's weighted scorers)",
               {"w_prefix": 1.0, "w_queue": 1.0, "w_kv": 1.0}, reads_prefix=True),
)}


def get_router(name: str) -> RouterSpec:
    try:
        return ROUTERS[name]
    except KeyError:
        raise ValueError(f"unknown router {name!r}; choose one of: {', '.join(ROUTERS)}") from None
