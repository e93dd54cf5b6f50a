"""Latency statistics, warm-up exclusion and SLO attainment on hand-made reports."""
import numpy as np
import pytest

from tailgym.metrics import Report, latency_stats


def make_report(**overrides):
    nan = np.nan
    requests = {
        "arrival": np.array([0.0, 1.0, 2.0, 3.0]),
        "prompt_tokens": np.array([10, 10, 10, 10]),
        "output_tokens": np.array([3, 1, 5, 2]),
        "first_scheduled": np.array([0.0, 1.5, 2.0, nan]),
        "first_token": np.array([0.5, 2.0, 3.0, nan]),
        "completion": np.array([1.5, 2.0, 5.0, nan]),
        "mean_gap": np.array([0.5, nan, 0.5, nan]),
        "max_gap": np.array([0.75, nan, 1.0, nan]),
        "preemptions": np.array([0, 1, 0, 0]),
        "swaps": np.zeros(4, int), "swapped_tokens": np.zeros(4, int),
        "cached_tokens": np.zeros(4, int), "hit_tokens": np.zeros(4, int),
        "recomputed_tokens": np.array([0, 7, 0, 0]),
        "finished": np.array([True, True, True, False]),
        "rejected": np.array([False, False, False, True]),
    }
    fields = dict(requests=requests, rejected=[{"index": 3, "row": 5, "reason": "too long"}],
                  config={}, steps=10, simulated_seconds=5.0, busy_seconds=4.0, wall_seconds=0.1,
                  preemptions_recompute=1, preemptions_swap=0)
    fields.update(overrides)
    return Report(**fields)


def test_latency_stats_match_numpy():
    x = np.arange(1, 101, dtype=float)
    s = latency_stats(x)
    assert s["mean"] == 50.5 and s["p50"] == 50.5 and s["p99"] == pytest.approx(99.01)
    assert np.isnan(latency_stats(np.array([]))["p90"])


def test_summary_counts_and_metrics():
    s = make_report().summary()
    assert (s["requests_in"], s["requests_completed"], s["requests_rejected"]) == (4, 3, 1)
    assert s["ttft"]["mean"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert s["ttlt"]["p50"] == pytest.approx(1.5)
    assert s["queueing"]["mean"] == pytest.approx(0.5 / 3)
    assert s["tbt"]["mean"] == pytest.approx(0.5)  # only requests with >= 2 tokens
    assert s["tbt_max"]["p50"] == pytest.approx(0.875)
    assert s["throughput_rps"] == pytest.approx(3 / 5.0)
    assert s["preemptions"] == 1 and s["recomputed_tokens"] == 7
    for key in ("ttft", "tbt", "ttlt"):
        assert set(s[key]) >= {"mean", "p50", "p90", "p95", "p99"}


def test_warmup_excludes_early_arrivals():
    s = make_report(warmup_s=1.5).summary()
    assert s["ttft"]["mean"] == pytest.approx(1.0)  # only the request arriving at t=2
    assert s["requests_in"] == 4


def test_slo_attainment_counts_rejected_as_misses():
    s = make_report(slo={"ttft": 0.6, "ttlt": 2.0}).summary()["slo_attainment"]
    assert s["ttft<=0.6"] == pytest.approx(1 / 4)
    assert s["ttlt<=2"] == pytest.approx(2 / 4)
    assert s["all"] == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="unknown SLO metric"):
        make_report(slo={"latency": 1}).summary()


def test_table_mentions_every_metric():
    text = make_report().table()
    for word in ("TTFT", "TBT", "TTLT", "queueing", "rejected", "preemptions"):
        assert word in text
