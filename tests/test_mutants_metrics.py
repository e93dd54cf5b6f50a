"""Metrics a shifted percentile or a wrong mask would change: P90/P95/P99.9, output tokens per
second, SLOs on TBT and queueing, the warm-up boundary (the hand-made report of
``test_metrics``: four requests, the last one unfinished)."""
import numpy as np
import pytest
from test_metrics import make_report

from tailgym.metrics import latency_stats


def test_every_percentile_is_its_own():
    """1..100 with linear interpolation: the q-th percentile is 1 + 0.99 q."""
    s = latency_stats(np.arange(1, 101, dtype=float))
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01)
    assert s["p999"] == pytest.approx(99.901)


def test_output_tokens_per_second_counts_finished_requests_only():
    """3 + 1 + 5 output tokens finished over the 5 s from the first arrival to the last
    completion (the unfinished request's 2 tokens do not count)."""
    assert make_report().summary()["output_tokens_per_s"] == pytest.approx(9 / 5)


@pytest.mark.parametrize("slo, share", [
    ({"tbt": 0.6}, 3 / 4),        # mean gaps 0.5, -, 0.5; a one-token request meets any TBT
    ({"tbt_max": 0.8}, 2 / 4),    # max gaps 0.75, -, 1.0
    ({"queueing": 0.4}, 2 / 4),   # first scheduled 0, 0.5, 0 s after arrival
    ({"queueing": 0.0}, 2 / 4),
])
def test_slo_on_tbt_and_queueing(slo, share):
    """Share of the four requests (the unfinished one a miss) meeting one threshold."""
    s = make_report(slo=slo).summary()["slo_attainment"]
    ((name, limit),) = slo.items()
    assert s[f"{name}<={limit:g}"] == pytest.approx(share) == s["all"]


def test_slo_all_needs_every_threshold():
    """TBT <= 0.6 misses request 3; queueing <= 0.4 also misses request 1: together 2 of 4."""
    s = make_report(slo={"tbt": 0.6, "queueing": 0.4}).summary()["slo_attainment"]
    assert s["all"] == pytest.approx(2 / 4)


def test_warmup_keeps_a_request_arriving_exactly_at_its_end():
    """Warm-up 2 s: the request arriving at t = 2 s is measured (TTFT 1 s)."""
    s = make_report(warmup_s=2.0).summary()
    assert s["ttft"]["mean"] == pytest.approx(1.0) and s["ttft"]["p999"] == pytest.approx(1.0)
