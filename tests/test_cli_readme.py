"""The README's first command, ``pip install . && tailgym compare``, end to end: the main
policies on the offline default workload, ranked, with CSVs and plots (a smaller grid of
loads and seeds through the same code)."""
import csv
import re
import subprocess
import sys
from pathlib import Path

from tailgym.compare import MAIN_POLICIES

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_opens_with_the_main_job():
    first = re.search(r"```bash\n(.*?)\n```", README.read_text(), re.S).group(1)
    assert first == "pip install . && tailgym compare"


def test_tailgym_compare_ranks_the_main_policies_and_draws_the_plots(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tailgym.cli", "compare", "--loads", "1,1.2",
                        "--seeds", "0,1"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    out = r.stdout
    assert out.startswith("default | llama3-8b on h100-80gb | seeds 0,1\nranked by ttlt_p99")
    blocks = out.split("\n\nload ")[1:]
    assert [b.split(":")[0] for b in blocks] == ["1", "1.2"]
    for block in blocks:
        lines = block.splitlines()
        assert lines[1].split() == ["#", "policy", "TTFT", "P50", "TTFT", "P99", "TTLT", "P50",
                                    "TTLT", "P99", "TTLT", "P99", "vs", "#1", "[95%", "CI]"]
        ranked = [line.split() for line in lines[2:2 + len(MAIN_POLICIES)]]
        assert [row[0] for row in ranked] == [str(i) for i in range(1, len(MAIN_POLICIES) + 1)]
        assert sorted(row[1] for row in ranked) == sorted(MAIN_POLICIES)
        p99 = [float(row[8]) for row in ranked]  # TTLT P99, mean over the seeds
        assert p99 == sorted(p99) and all(row[3].startswith("±") for row in ranked)
    folder = tmp_path / "tailgym-compare"
    with open(folder / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 2 * len(MAIN_POLICIES) and {r["seeds"] for r in summary} == {"2"}
    assert all(r["workload"] == "default" and int(r["requests_in"]) == 4000 for r in summary)
    assert "95% Student-t interval of the mean over 2 seeds" in " ".join(out.split())
    for name in ("results.csv", "ranking.csv", "cdf_load1.png", "p99_vs_load.png"):
        assert (folder / name).stat().st_size > 1000
    assert f"wrote {Path('tailgym-compare') / 'results.csv'}" in out
