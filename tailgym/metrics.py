"""Per-request times to latency statistics: TTFT, TBT, TTLT, queueing, throughput, SLOs."""
from dataclasses import dataclass, field

import numpy as np

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
METRICS = ("ttft", "tbt", "tbt_max", "ttlt", "queueing")
METRIC_TITLES = {"ttft": "TTFT", "tbt": "TBT (mean/request)", "tbt_max": "TBT (max/request)",
                 "ttlt": "TTLT", "queueing": "queueing delay"}


def latency_stats(values: np.ndarray) -> dict[str, float]:
    """Mean and percentiles (linear interpolation) of ``values``; nan where empty."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"mean": float("nan"), **{k: float("nan") for k in PERCENTILES}}
    qs = np.percentile(values, list(PERCENTILES.values()))
    return {"mean": float(values.mean()), **{k: float(q) for k, q in zip(PERCENTILES, qs)}}


@dataclass
class Report:
    """The outcome of one simulation: per-request arrays plus run-level figures.

    ``requests`` holds one entry per request that entered (rejected ones included, with nan
    times): arrival, prompt/output tokens, first scheduled, first token, completion, mean and
    max token gap, preemptions, swaps, swapped and recomputed tokens, prompt tokens served from
    the prefix cache at first admission (``cached_tokens``) and over all admissions
    (``hit_tokens``), and ``finished``. ``batches`` (with ``record_batches``) lists every engine
    step: ``t_start``, ``t_end`` (s), ``batch`` (``[request index, tokens]``, in schedule order;
    request index = row of the loaded workload) and ``preempted`` (requests preempted while
    forming it, or while forming empty batches just before it).
    """

    requests: dict[str, np.ndarray]
    rejected: list[dict]
    config: dict
    steps: int
    simulated_seconds: float
    busy_seconds: float
    wall_seconds: float
    preemptions_recompute: int
    preemptions_swap: int
    guard_overrides: int = 0
    warmup_s: float = 0.0
    slo: dict[str, float] = field(default_factory=dict)
    step_log: np.ndarray | None = None
    batches: list[dict] | None = None
    empty_batches: int = 0
    fleet: dict | None = None  # replicas behind a router: see tailgym.fleet.sim.Fleet.report

    def __post_init__(self):
        arrival = self.requests["arrival"]
        if self.warmup_s > 0 and len(arrival) and not (arrival >= arrival[0] + self.warmup_s).any():
            raise ValueError(f"warmup_s={self.warmup_s:g} excludes every request: the arrivals "
                             f"span only {arrival[-1] - arrival[0]:.1f} s")

    def _measured(self) -> np.ndarray:
        """Mask of finished requests that arrived after the warm-up window."""
        r = self.requests
        start = r["arrival"][0] if len(r["arrival"]) else 0.0
        return r["finished"] & (r["arrival"] >= start + self.warmup_s)

    def metric(self, name: str) -> np.ndarray:
        """Per-request values (s) of ``ttft``, ``tbt``, ``tbt_max``, ``ttlt`` or ``queueing``
        for the finished requests outside the warm-up window. TBT needs two tokens."""
        r, m = self.requests, self._measured()
        if name == "ttft":
            return (r["first_token"] - r["arrival"])[m]
        if name == "ttlt":
            return (r["completion"] - r["arrival"])[m]
        if name == "queueing":
            return (r["first_scheduled"] - r["arrival"])[m]
        if name in ("tbt", "tbt_max"):
            m = m & (r["output_tokens"] > 1)
            return r["mean_gap" if name == "tbt" else "max_gap"][m]
        raise ValueError(f"unknown metric {name!r}; choose one of: {', '.join(METRICS)}")

    def slo_attainment(self, thresholds: dict[str, float]) -> dict[str, float]:
        """Share of requests (after warm-up, rejected ones counted as misses) meeting each
        threshold, and all of them together (key ``all``)."""
        r = self.requests
        start = r["arrival"][0] if len(r["arrival"]) else 0.0
        considered = r["arrival"] >= start + self.warmup_s
        ok_all = r["finished"].copy()
        out = {}
        with np.errstate(invalid="ignore"):
            per_request = {
                "ttft": r["first_token"] - r["arrival"],
                "ttlt": r["completion"] - r["arrival"],
                "tbt": np.where(r["output_tokens"] > 1, r["mean_gap"], 0.0),
                "tbt_max": np.where(r["output_tokens"] > 1, r["max_gap"], 0.0),
                "queueing": r["first_scheduled"] - r["arrival"],
            }
            for name, limit in thresholds.items():
                if name not in per_request:
                    raise ValueError(f"unknown SLO metric {name!r}; choose from {METRICS}")
                ok = r["finished"] & (per_request[name] <= limit)
                ok_all &= ok
                out[f"{name}<={limit:g}"] = float(ok[considered].mean()) if considered.any() else float("nan")
        if thresholds:
            out["all"] = float(ok_all[considered].mean()) if considered.any() else float("nan")
        return out

    def summary(self) -> dict:
        """Plain JSON-ready dict (the CLI's ``--json``); latencies in seconds."""
        r = self.requests
        finished = r["finished"]
        n_done = int(finished.sum())
        span = float(np.nanmax(r["completion"]) - r["arrival"][0]) if n_done else 0.0
        out = {
            "requests_in": int(len(r["arrival"])),
            "requests_completed": n_done,
            "requests_rejected": len(self.rejected),
            "rejected": self.rejected,
            **{name: latency_stats(self.metric(name)) for name in METRICS},
            "throughput_rps": n_done / span if span > 0 else float("nan"),
            "output_tokens_per_s": float(r["output_tokens"][finished].sum()) / span if span > 0 else float("nan"),
            "preemptions": self.preemptions_recompute + self.preemptions_swap,
            "preemptions_recompute": self.preemptions_recompute,
            "preemptions_swap": self.preemptions_swap,
            "guard_overrides": self.guard_overrides,
            "prefix_cache_hit_rate": (float(r["cached_tokens"][finished].sum())
                                      / max(int(r["prompt_tokens"][finished].sum()), 1)),
            "prefix_cache_hit_tokens": int(r["hit_tokens"].sum()),
            "swapped_tokens": int(r["swapped_tokens"].sum()),
            "recomputed_tokens": int(r["recomputed_tokens"].sum()),
            "steps": self.steps,
            "simulated_seconds": self.simulated_seconds,
            "busy_seconds": self.busy_seconds,
            "wall_seconds": self.wall_seconds,
            "warmup_s": self.warmup_s,
            "config": self.config,
        }
        if self.slo:
            out["slo_attainment"] = self.slo_attainment(self.slo)
        if self.fleet is not None:
            out["fleet"] = self.fleet
        return out

    def table(self) -> str:
        """A readable table of the latency statistics and run figures."""
        s = self.summary()
        cols = ["mean", *PERCENTILES]
        head = f"{'metric (s)':<22}" + "".join(f"{c:>10}" for c in cols)
        lines = [head, "-" * len(head)]
        for name in METRICS:
            lines.append(f"{METRIC_TITLES[name]:<22}" + "".join(f"{s[name][c]:>10.4g}" for c in cols))
        lines.append("")
        lines.append(f"requests: {s['requests_in']} in, {s['requests_completed']} completed, "
                     f"{s['requests_rejected']} rejected")
        lines.append(f"throughput: {s['throughput_rps']:.3f} req/s, "
                     f"{s['output_tokens_per_s']:.1f} output tok/s")
        lines.append(f"preemptions: {s['preemptions']} ({s['preemptions_recompute']} recompute, "
                     f"{s['preemptions_swap']} swap); recomputed tokens {s['recomputed_tokens']}, "
                     f"swapped tokens {s['swapped_tokens']}")
        lines.append(f"prefix cache: {100 * s['prefix_cache_hit_rate']:.1f}% of prompt tokens "
                     f"served from cache ({s['prefix_cache_hit_tokens']} tokens incl. resumes)")
        lines.append(f"engine: {s['steps']} steps, {s['simulated_seconds']:.1f} s simulated "
                     f"({s['busy_seconds']:.1f} s busy) in {s['wall_seconds']:.3f} s wall")
        if self.fleet is not None:
            f = self.fleet
            lines.append(f"fleet: {f['replicas']} replicas, router {f['router']}; requests per "
                         f"replica {min(f['requests'])}-{max(f['requests'])}, busy share "
                         f"{min(f['busy_share']):.2f}-{max(f['busy_share']):.2f}; imbalance "
                         f"(max/mean) {f['imbalance']['requests']:.3f} requests, "
                         f"{f['imbalance']['busy']:.3f} busy")
        for key, share in s.get("slo_attainment", {}).items():
            lines.append(f"SLO {key}: {100 * share:.2f}% of requests")
        return "\n".join(lines)
