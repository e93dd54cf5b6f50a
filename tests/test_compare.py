"""``tailgym compare``: knob syntax, sweeps, the resumable grid, CSVs, the paired intervals of
its tables and the command."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from tailgym import compare
from tailgym.compare import (
    COUNTS,
    RATES,
    STAT_KEYS,
    CompareError,
    Policy,
    aggregate,
    expand_sweeps,
    format_ranking,
    make_grid,
    parse_policies,
    parse_sweep,
    ranking,
    run_grid,
    write_csv,
)
from tailgym.cli import main
from tailgym.policies import dispatch, registry

WORKLOAD = "default:n=200"


@pytest.fixture(autouse=True)
def fake_policy(monkeypatch):
    """An FCFS clone with a numeric and a choice knob, so no test depends on other policies."""
    spec = registry.PolicySpec("fake", dispatch.FCFS, "FCFS with inert knobs", ("arrival",),
                               params={"gamma": 5.0, "mode": "a"}, choices={"mode": ("a", "b")})
    monkeypatch.setitem(registry.POLICIES, "fake", spec)
    return spec


def test_policy_syntax_orders_knobs_as_the_registry_and_converts_values():
    fcfs, fake = parse_policies("fcfs,fake:mode=b:gamma=10")
    assert (fcfs.label, fcfs.args) == ("fcfs", {})
    assert fake.args == {"gamma": 10.0, "mode": "b"}
    assert fake.label == "fake:gamma=10:mode=b" and fake.knobs == "gamma=10:mode=b"
    assert parse_policies("fake:gamma=0.25")[0].label == "fake:gamma=0.25"
    assert parse_policies("fake:gamma=1e-3")[0].label == "fake:gamma=0.001"


@pytest.mark.parametrize("text, expected", [
    ("fcfs,,fake", "has an empty entry"),
    ("nope", "'nope': unknown policy 'nope'"),
    ("fake:gamma", "knob 'gamma' must look like KNOB=VALUE"),
    ("fake:gamma=abc", "knob 'gamma' needs a number, got 'abc'"),
    ("fake:gama=1", "has no knob 'gama'"),
    ("fake:gamma=1:gamma=2", "knob 'gamma' given twice"),
    ("fake:mode=c", "'mode' must be one of a, b, got 'c'"),
    ("fake[gamma=1]", "write knobs after colons"),
    ("fcfs,fcfs", "'fcfs' appears twice"),
])
def test_bad_policy_entries_are_errors_naming_the_token(text, expected):
    with pytest.raises(CompareError, match=expected.replace("[", r"\[")):
        expand_sweeps(parse_policies(text), [])


def test_sweep_replaces_the_listed_entry_or_starts_from_defaults():
    columns = expand_sweeps(parse_policies("fcfs,fake:mode=b"), [parse_sweep("fake.gamma=0.1,1,10")])
    assert [c.label for c in columns] == ["fcfs", "fake:gamma=0.1:mode=b", "fake:gamma=1:mode=b",
                                          "fake:gamma=10:mode=b"]
    assert [c.sweep_point for c in columns] == ["", "gamma=0.1", "gamma=1", "gamma=10"]
    columns = expand_sweeps(parse_policies("fcfs"), [parse_sweep("fake.mode=a,b")])
    assert [c.label for c in columns] == ["fcfs", "fake:mode=a", "fake:mode=b"]


@pytest.mark.parametrize("policies, sweep, expected", [
    ("fcfs", "fake.gamma", "must look like POLICY.KNOB=V1,V2"),
    ("fcfs", "fake=1,2", "must look like POLICY.KNOB=V1,V2"),
    ("fcfs", "fake.gamma=1,,2", "must look like POLICY.KNOB=V1,V2"),
    ("fcfs", "nope.gamma=1", "unknown policy 'nope'"),
    ("fcfs", "fake.gama=1", "--sweep fake.gama=1: policy 'fake' has no knob 'gama'"),
    ("fcfs", "fake.gamma=x", "--sweep fake.gamma=x: .*needs a number, got 'x'"),
    ("fake:gamma=1", "fake.gamma=2,3", "'fake:gamma=1' already sets gamma"),
    ("fcfs", "fake.gamma=1,1.0", "'fake:gamma=1' appears twice"),
])
def test_bad_sweeps_are_errors_naming_the_token(policies, sweep, expected):
    with pytest.raises(CompareError, match=expected):
        expand_sweeps(parse_policies(policies), [parse_sweep(sweep)])


def test_grid_loads_and_seeds_are_checked():
    with pytest.raises(CompareError, match="--loads: 0.0 is not a positive number"):
        make_grid(WORKLOAD, [Policy("fcfs")], [0.0], [0])
    with pytest.raises(CompareError, match="--seeds: -1 is negative"):
        make_grid(WORKLOAD, [Policy("fcfs")], [0.5], [0, -1])


def test_cell_key_depends_on_the_simulation_not_on_how_knobs_were_written():
    def key(policy, **kw):
        return make_grid(WORKLOAD, parse_policies(policy), [kw.pop("load", 0.5)], [0], **kw)[0].key()

    assert key("fake") == key("fake:gamma=5") == key("fake:gamma=5.0:mode=a")
    assert len({key("fake"), key("fake:gamma=6"), key("fake", load=0.6), key("fcfs"),
                key("fake", engine={"kv_blocks": 3000}), key("fake", warmup_s=1.0)}) == 6


def _grid(loads=(0.5, 0.9), seeds=(0, 1)):
    return make_grid(WORKLOAD, parse_policies("fcfs,fake:gamma=1"), list(loads), list(seeds))


def test_grid_writes_one_file_pair_per_cell_and_csv_rows(tmp_path):
    cells = _grid()
    rows = run_grid(cells, tmp_path)
    assert len(rows) == 8 and len(list((tmp_path / "cells").glob("*.json"))) == 8
    assert [(r["policy"], r["knobs"], r["load"], r["seed"]) for r in rows[:4]] == [
        ("fcfs", "", 0.5, 0), ("fcfs", "", 0.5, 1), ("fcfs", "", 0.9, 0), ("fcfs", "", 0.9, 1)]
    assert all(r["requests_in"] == r["requests_completed"] == 200 for r in rows)
    assert rows[0]["ttlt_p99"] >= rows[0]["ttlt_p50"] > 0 and "wall_s" not in rows[0]
    summary = aggregate(rows)
    assert len(summary) == 4 and summary[0]["seeds"] == 2 and summary[0]["requests_in"] == 400
    assert summary[0]["ttft_p99_min"] <= summary[0]["ttft_p99"] <= summary[0]["ttft_p99_max"]
    assert summary[0]["ttft_p99_lo"] < summary[0]["ttft_p99"] < summary[0]["ttft_p99_hi"]
    lines = write_csv(rows, tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].startswith("workload,policy,knobs,sweep,load,seed,rate_rps,saturation_rps")
    assert len(lines) == 9 and "ttlt_p999" in lines[0] and lines[5].startswith(f"{WORKLOAD},fake,gamma=1,")
    latencies = compare.load_latencies(tmp_path, cells[0])
    assert set(latencies) == {"ttft", "tbt", "tbt_max", "ttlt", "queueing"}
    assert latencies["ttlt"].size == 200


def test_rerun_simulates_nothing_and_a_lost_cell_is_rerun_alone(tmp_path, monkeypatch):
    cells = _grid()
    first = run_grid(cells, tmp_path)
    calls = []
    real = compare.run_cell
    monkeypatch.setattr(compare, "run_cell", lambda cell: calls.append(cell) or real(cell))
    assert run_grid(cells, tmp_path) == first and calls == []
    compare.cell_paths(tmp_path, cells[3])[0].unlink()  # as if killed while it ran
    assert run_grid(cells, tmp_path) == first and calls == [cells[3]]


def test_parallel_and_in_process_grids_give_identical_csv_bytes(tmp_path):
    cells = _grid()
    one = write_csv(run_grid(cells, tmp_path / "one", processes=1), tmp_path / "one.csv")
    two = write_csv(run_grid(cells, tmp_path / "two", processes=2), tmp_path / "two.csv")
    assert one.read_bytes() == two.read_bytes()
    for c in cells:
        a, b = compare.load_latencies(tmp_path / "one", c), compare.load_latencies(tmp_path / "two", c)
        assert all(np.array_equal(a[m], b[m], equal_nan=True) for m in a)


def test_a_failing_cell_names_itself(tmp_path):
    cells = make_grid(WORKLOAD, [Policy("fcfs")], [0.5], [3], engine={"kv_blocks": 4})
    with pytest.raises(CompareError, match="fcfs at load 0.5, seed 3: no request .* fits"):
        run_grid(cells, tmp_path)


def _row(policy, load, seed, value):
    return {"workload": "w", "policy": policy, "knobs": "", "sweep": "", "load": load,
            "seed": seed, **dict.fromkeys(COUNTS, 0), **dict.fromkeys(RATES, 1.0),
            **dict.fromkeys(STAT_KEYS, value)}


T1, T2 = 12.706205, 4.302653  # t quantiles 0.975 with 1 and 2 degrees of freedom


def test_ranking_orders_each_load_and_compares_seed_by_seed():
    rows = [_row("a", 0.5, 0, 2.0), _row("a", 0.5, 1, 4.0),   # mean 3
            _row("b", 0.5, 0, 1.0), _row("b", 0.5, 1, 4.4),   # mean 2.7: leads on the mean
            _row("c", 0.5, 0, np.nan), _row("c", 0.5, 1, np.nan),
            _row("a", 0.9, 0, 5.0), _row("a", 0.9, 1, 5.0),
            _row("b", 0.9, 0, 6.0), _row("b", 0.9, 1, 7.5)]
    summary = aggregate(rows)
    assert (summary[0]["ttlt_p99_lo"], summary[0]["ttlt_p99_hi"]) == pytest.approx(
        (3 - T1, 3 + T1))                                     # sd / sqrt(2) = |4 - 2| / 2 = 1
    assert np.isnan(summary[3]["ttlt_p99_lo"])                # a at 0.9: 5 on both seeds
    ranked = ranking(rows, summary, by="ttlt_p99")
    assert [(r["load"], r["policy"], r["rank"]) for r in ranked] == [
        (0.5, "b", 1), (0.5, "a", 2), (0.5, "c", 3), (0.9, "a", 1), (0.9, "b", 2)]
    logs = np.log([2.0 / 1.0, 4.0 / 4.4])                     # a over b per seed
    vs = ranked[1]["vs_best"]
    half = T1 * abs(logs[1] - logs[0]) / 2
    assert vs.estimate == pytest.approx(np.sqrt(2.0 * 4.0 / 4.4) - 1)  # geometric mean - 1
    assert (vs.lo, vs.hi) == pytest.approx(np.expm1([logs.mean() - half, logs.mean() + half]))
    assert not vs.real and np.isnan(ranked[0]["vs_best"].lo)
    assert np.isnan(ranked[2]["vs_best"].estimate)
    assert ranked[4]["vs_best"].estimate == pytest.approx(np.sqrt(1.2 * 1.5) - 1)
    text = format_ranking(ranked, ("ttft", "ttlt"), "ttlt_p99")
    assert text.splitlines()[:2] == [
        "load 0.5: 1 req/s, saturation 1 req/s",
        "  #  policy       TTFT P50     TTFT P99     TTLT P50     TTLT P99"
        "   TTLT P99 vs #1 [95% CI]"]
    assert "  2  a             3 ±424%" in text                  # 100 T1 / 3
    assert "+34.8% [-99.1, +20096]" in text and _marked(text) == []
    assert "  1  a" in text.split("load 0.9")[1] and "+34.2% [-67.5, +454]" in text
    assert "95% Student-t interval of the mean over 2 seeds (t with 1 df" in " ".join(text.split())


def _marked(text):
    """The policies of the table lines that end with the real-difference marker."""
    return [line.split()[1] for line in text.splitlines() if line.endswith(" *")]


def _seeds(policy, values, load=1.0):
    return [_row(policy, load, seed, v) for seed, v in enumerate(values)]


def test_pairing_by_seed_finds_a_real_difference_that_the_spreads_hide():
    rows = _seeds("a", [1.0, 2.0, 3.0]) + _seeds("b", [2.0, 4.2, 5.7])  # b/a: 2, 2.1, 1.9
    ranked = ranking(rows, aggregate(rows))
    logs = np.log([2.0, 2.1, 1.9])
    half = T2 * logs.std(ddof=1) / np.sqrt(3)
    vs = ranked[1]["vs_best"]
    assert (vs.estimate, vs.lo, vs.hi) == pytest.approx(
        np.expm1([logs.mean(), logs.mean() - half, logs.mean() + half]))
    assert vs.real
    text = format_ranking(ranked)
    assert "  1  a             2 ±124%" in text                  # 100 T2 / sqrt(3) / 2
    assert "  2  b         3.967 ±117%" in text and "+99.8% [+76.5, +126] *" in text
    assert _marked(text) == ["b"]
    assert "over 3 seeds (t with 2 df" in " ".join(text.split())
    assert "* marks a real difference" in text
    csv_rows = compare.ranking_rows(ranked)
    assert [(r["policy"], r["rank"], r["reference"], r["vs_reference_real"]) for r in csv_rows] == [
        ("a", 1, "a", 0), ("b", 2, "a", 1)]
    assert (csv_rows[1]["vs_reference_lo"], csv_rows[1]["vs_reference_hi"]) == (vs.lo, vs.hi)
    assert np.isnan(csv_rows[0]["vs_reference_lo"])


def test_a_named_reference_instead_of_the_leader():
    rows = _seeds("a", [1.0, 2.0, 3.0]) + _seeds("b", [2.0, 4.2, 5.7]) + _seeds("c", [3, 3, 3])
    ranked = ranking(rows, aggregate(rows), reference="b")
    vs = {r["policy"]: r["vs_best"] for r in ranked}
    assert [r["policy"] for r in ranked] == ["a", "c", "b"]
    assert [r["reference"] for r in ranked] == ["b"] * 3
    assert vs["a"].hi < 0 and vs["a"].real                            # a is below b
    assert vs["c"].lo < 0 < vs["c"].hi                                # c: 3 on every seed
    assert np.isnan(vs["b"].lo)                                       # b itself
    text = format_ranking(ranked)
    assert _marked(text) == ["a"]
    assert "TTLT P99 vs b [95% CI]" in text and "'vs b': the column's value over b's" in text
    assert "* marks a real difference: its 95% interval excludes 0" in text
    with pytest.raises(CompareError, match="'d' is not a policy column"):
        ranking(rows, aggregate(rows), reference="d")


def test_one_seed_or_identical_seeds_give_no_interval_and_no_marker():
    rows = _seeds("a", [2.0]) + _seeds("b", [3.0])
    text = format_ranking(ranking(rows, aggregate(rows)))
    assert "  2  b                   3            3            3            3   +50.0%" in text
    assert "[" not in text and _marked(text) == [] and "one seed: no intervals" in text
    assert "one seed: no intervals" in compare.format_table(aggregate(rows))
    rows = _seeds("a", [2.0] * 3) + _seeds("b", [3.0] * 3)           # a trace replayed as is
    ranked = ranking(rows, aggregate(rows))
    assert not ranked[1]["vs_best"].has_interval and not ranked[1]["vs_best"].real
    text = format_ranking(ranked)
    assert "+50.0%\n" in text and _marked(text) == []
    assert "the 3 seeds gave identical results" in text


def _cli(tmp_path, *extra):
    return main(["compare", "--workload", "azure-conv:n=300", "--policies", "fcfs,fake:mode=b",
                 "--sweep", "fake.gamma=0.1,10", "--loads", "0.5,0.8", "--seeds", "0,1",
                 "--kv-blocks", "4000", "--out", str(tmp_path), "-q", *extra])


def test_cli_end_to_end_in_two_processes_and_resumed(tmp_path, capsys):
    assert _cli(tmp_path, "--processes", "2", "--table", "full", *"--metric ttft --metric tbt "
                "--metric ttlt".split()) == 0
    out = capsys.readouterr()
    assert "azure-conv:n=300 | llama3-8b on h100-80gb | 4000 KV blocks | seeds 0,1" in out.out
    assert "TTFT (s)" in out.out and "TBT (mean/request) (s)" in out.out
    assert "fake:gamma=10:mode=b" in out.out
    assert "all seeds gave identical results" in out.err  # a trace replayed as is
    results = (tmp_path / "results.csv").read_text().splitlines()
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert len(results) == 1 + 3 * 2 * 2 and len(summary) == 1 + 3 * 2
    assert ",fake,gamma=0.1:mode=b,gamma=0.1,0.8,1," in results[-5]
    ranked = (tmp_path / "ranking.csv").read_text().splitlines()
    assert ranked[0].endswith("reference,vs_reference,vs_reference_lo,vs_reference_hi,"
                              "vs_reference_real") and len(ranked) == 1 + 3 * 2
    assert "the 2 seeds gave identical results (copies of one run" in out.out  # no intervals
    for name in ("cdf_load0.8.png", "p99_vs_load.png", "frontier_fake.gamma_load0.8.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
    before = (tmp_path / "results.csv").read_bytes()
    assert _cli(tmp_path, "--processes", "2", "--no-plots", "--rank-by", "ttft_p50") == 0
    out = capsys.readouterr().out
    assert "ranked by ttft_p50" in out and out.count("TTFT P50 vs #1") == 2
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()} == stamps
    assert (tmp_path / "results.csv").read_bytes() == before
    record = json.loads(next((tmp_path / "cells").glob("*.json")).read_text())
    assert record["wall_s"] > 0 and "wall" not in results[0]


def test_cli_prints_paired_intervals_and_marks_only_real_differences(tmp_path, capsys):
    """A tiny grid under tight KV, where P50 TTLT separates the policies: the table's
    intervals and markers are the paired t intervals recomputed here from results.csv."""
    assert main(["compare", "--workload", "default:n=200", "--policies",
                 "fcfs,srpt-oracle,sjf-oracle,las", "--loads", "1.2", "--seeds", "0,1,2",
                 "--kv-blocks", "800", "--rank-by", "ttlt_p50", "--processes", "1",
                 "--no-plots", "-q", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ranked by ttlt_p50 (mean over 3 seeds)" in out and "TTLT P50 vs #1 [95% CI]" in out
    assert "over 3 seeds (t with 2 df" in " ".join(out.split())
    with open(tmp_path / "results.csv") as f:
        per_seed = {}
        for r in csv.DictReader(f):
            per_seed.setdefault(r["policy"], []).append(float(r["ttlt_p50"]))
    leader = min(per_seed, key=lambda p: np.mean(per_seed[p]))
    with open(tmp_path / "ranking.csv") as f:
        table = {r["policy"]: r for r in csv.DictReader(f)}
    assert table[leader]["rank"] == "1" and set(table) == set(per_seed)
    real = []
    for policy, values in per_seed.items():
        if policy == leader:
            continue
        logs = np.log(np.array(values) / per_seed[leader])
        half = T2 * logs.std(ddof=1) / np.sqrt(3)
        lo, hi = np.expm1(logs.mean() - half), np.expm1(logs.mean() + half)
        row = table[policy]
        assert (float(row["vs_reference_lo"]), float(row["vs_reference_hi"])) == \
            pytest.approx((lo, hi))
        assert row["vs_reference_real"] == str(int(lo > 0 or hi < 0))
        if lo > 0 or hi < 0:
            real.append(policy)
    assert "fcfs" in real  # FCFS's median is several times the oracles' here
    assert sorted(_marked(out)) == sorted(real)


@pytest.mark.parametrize("args, expected", [
    (["--policies", "fcfs:gamma=1"], "'fcfs:gamma=1': policy 'fcfs' has no knob 'gamma'"),
    (["--loads", "0.5,abc"], "argument --loads: must be a number > 0, got 'abc'"),
    (["--seeds", "0,-1"], "argument --seeds: must be an integer >= 0, got '-1'"),
    (["--plot-load", "0.3"], "--plot-load 0.3 is not one of --loads 0.9,1,1.1,1.2"),
    (["--processes", "0"], "argument --processes: must be an integer >= 1, got '0'"),
    (["--policies", "fcfs,las", "--vs", "sjf-oracle"],
     "--vs 'sjf-oracle' is not one of the policy columns (fcfs, las)"),
    (["--rank-by", "ttlt_p98"], "unknown choice 'ttlt_p98'; did you mean 'ttlt_p99'?"),
    (["--warmup", "1e6", "--workload", "default:n=20", "--loads", "0.5", "--seeds", "0",
      "--policies", "fcfs"], "fcfs at load 0.5, seed 0: --warmup 1e+06 excludes every request"),
])
def test_cli_bad_input_exits_2_with_one_line_naming_it(tmp_path, capsys, args, expected):
    try:
        status = main(["compare", *args, "--out", str(tmp_path), "-q", "--processes", "1"])
    except SystemExit as exit_:  # argparse rejects the value
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and expected in err and err.count("\n") == 1, err


def test_runs_as_a_module_without_importing_matplotlib_for_the_csvs(tmp_path):
    code = ("import sys, tailgym, tailgym.cli; assert 'matplotlib' not in sys.modules; "
            "rc = tailgym.cli.main(['compare', *sys.argv[1:]]); "
            "assert 'matplotlib' not in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "--workload", "default:n=50", "--policies",
                        "fcfs", "--loads", "0.5", "--no-plots", "--processes", "1", "-q",
                        "--out", str(tmp_path)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "summary.csv").exists()
    r = subprocess.run([sys.executable, "-m", "tailgym.cli", "compare", "--help"],
                       capture_output=True, text=True, check=True)
    assert "NAME:KNOB=VALUE:KNOB=VALUE" in r.stdout


def test_a_csv_with_other_column_names_is_compared_through_columns(tmp_path, capsys):
    trace = tmp_path / "azure-like.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:15:{10 + i:02d}.5,{300 + 7 * i},{20 + i}\n" for i in range(40)))
    argv = ["compare", "--workload", str(trace), "--policies", "fcfs", "--loads", "0.5",
            "--seeds", "0", "--processes", "1", "--no-plots", "-q", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--columns arrival=TIMESTAMP,prompt=ContextTokens,output=GeneratedTokens" in \
        capsys.readouterr().err
    assert main([*argv, "--columns", "arrival=TIMESTAMP,prompt=ContextTokens,"
                                     "output=GeneratedTokens"]) == 0
    assert "  1  fcfs" in capsys.readouterr().out
    plain = make_grid(WORKLOAD, [Policy("fcfs")], [0.5], [0])[0]
    mapped = make_grid(WORKLOAD, [Policy("fcfs")], [0.5], [0], columns="arrival=T")[0]
    assert plain.key() != mapped.key()
