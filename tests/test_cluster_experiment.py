"""experiments/cluster.py --quick: the fleet grid runs, accounts for every request and writes
its tables and plots."""
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_cluster_experiment(tmp_path):
    out = tmp_path / "cluster"
    subprocess.run([sys.executable, str(ROOT / "experiments" / "cluster.py"), "--quick",
                    "--processes", "1", "--out", str(out)], check=True, capture_output=True)
    rows = list(csv.DictReader(open(out / "cluster.csv")))
    # 2 workloads x 2 seeds x 2 policies x (1 replica + 4 replicas under 2 routers)
    assert len(rows) == 24
    for r in rows:
        assert int(r["completed"]) + int(r["rejected"]) == int(r["requests"]) == 40 * int(r["replicas"])
    fleet = [r for r in rows if r["replicas"] == "4"]
    assert {r["router"] for r in fleet} == {"round-robin", "prefix-aware"}
    mooncake = [float(r["cache_hit"]) for r in fleet if r["workload"] == "mooncake-conv"]
    assert max(mooncake) > 0 and all(float(r["cache_hit"]) == 0 for r in fleet
                                     if r["workload"] == "azure-conv")
    md = (out / "cluster.md").read_text()
    for heading in ("Does the single-engine ordering", "Router or scheduler", "Routers against round-robin"):
        assert heading in md
    assert "| mooncake-conv | uniboost vs fcfs | 1 |" in md and "| azure-conv | 4 | 1 |" in md
    for png in ("ttlt_p99_routers.png", "ttft_p99_routers.png", "ttlt_p99_policies.png"):
        assert (out / png).stat().st_size > 10_000
    again = subprocess.run([sys.executable, str(ROOT / "experiments" / "cluster.py"), "--quick",
                            "--processes", "1", "--out", str(out)], check=True, capture_output=True, text=True)
    assert "24 simulations, 24 stored" in again.stderr  # a rerun reuses the stored rows
