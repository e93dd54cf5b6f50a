"""Smoke tests of the benchmark and experiment scripts on tiny inputs: they run, and what they
return or write has the shape and values their reports rely on."""
import sys
from pathlib import Path

import numpy as np

from tailgym import bench
from tailgym.envs import bench as env_bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import ablation  # noqa: E402
import headline  # noqa: E402


def test_simulator_benchmark_on_a_tiny_workload():
    r = bench.bench_simulator(2, workload="default:n=30")
    assert r["requests"] == r["completed"] == 30 and r["identical"]
    assert r["steps"] > 0 and r["best_s"] <= r["median_s"]
    assert r["steps_per_s"] == r["steps"] / r["best_s"]


def test_prefix_cache_benchmark_on_a_tiny_shared_prefix_workload():
    m = bench.bench_mooncake(1, workload="chat-prefix:n=30")
    assert m["requests"] == 30 and 0.0 < m["hit_rate"] < 1.0


def test_env_benchmark_counts_steps_of_single_and_vector_envs():
    for num_envs in (1, 2):
        rate = env_bench.bench_env("tailgym/Serve-v0", {"workload": "default:n=30"}, num_envs,
                                   seconds=0.05)
        assert np.isfinite(rate) and rate > 0


def test_headline_grid_and_tables():
    """Two policies on two tiny windows: rows carry the latency stats, the paired table has a
    number with its interval for the condition, the target table a verdict."""
    cells = [dict(workload="azure-conv", kv="default", load=0.9, seed=s, policy=p,
                  spec=headline.window_spec("azure-conv", s, window=20))
             for p in ("fcfs", "srpt-oracle", "uniboost", "gittins-tail") for s in (0, 1)]
    rows = headline.run_grid(cells, 1, "smoke")
    assert [r["policy"] for r in rows[::2]] == ["fcfs", "srpt-oracle", "uniboost", "gittins-tail"]
    assert all(r["completed"] == 20 and r["ttlt_p99"] >= r["ttlt_p50"] > 0 for r in rows)
    table = headline.tables(rows, "srpt-oracle", "fcfs")
    assert "| azure-conv | default | " in table and "% [" in table
    target = headline.target_table(rows, "gittins-tail")
    assert target.count("| azure-conv | default | 0.9 |") == 1 and "x |" in target
    assert headline.window_spec("servegen-r1", 3, window=50) == "servegen-r1:n=50,seed=3"


def test_ablation_on_tiny_windows_writes_its_table(tmp_path):
    """Windows of 12 requests, two seeds: a row per variant in each condition's table, with
    a paired interval against UniBoost's defaults."""
    out = tmp_path / "ablation.md"
    assert ablation.main(["--processes", "1", "--window", "12", "--seeds", "0", "1",
                          "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count("| uniboost k=0 |") == len(ablation.CONDITIONS)
    assert text.count("\n| ") == len(ablation.CONDITIONS) * (len(ablation.VARIANTS) + 1)
    assert "% [" in text
