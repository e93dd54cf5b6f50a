"""servegen-r1: requests generated from ServeGen's DeepSeek-R1 client pool, checked against
the data files read independently here (the PMF texts as JSON once their keys are quoted,
``csv`` for the traces)."""
import csv
import json
import math
import re

import numpy as np
import pytest

from tailgym.cli import main
from tailgym.data import data_path
from tailgym.workload import WorkloadError, load_workload, servegen_workload

POOL = data_path("servegen-r1", download=False)
DAY_H = 24


def _trace(c: int) -> list[list[str]]:
    with open(POOL / f"chunk-{c}-trace.csv", newline="") as f:
        return list(csv.reader(f))


def _pmfs(c: int, field: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Client c's PMFs of ``field`` (tokens, probabilities) by 6-hour window start."""
    data = json.loads((POOL / f"chunk-{c}-dataset.json").read_text())
    pmfs = {int(k): json.loads(re.sub(r"(\d+):", r'"\1":', v[field])) for k, v in data.items()}
    return {k: (np.array(list(pmf), dtype=np.int64), np.array(list(pmf.values()))) for k, pmf in pmfs.items()}


def _mixture(weights: dict[tuple[int, int], float], pmfs) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, probabilities) of the PMFs mixed with ``weights`` per (client, window start)."""
    acc = np.zeros(1 << 17)
    for (c, start), weight in weights.items():
        tokens, p = pmfs[c][start]
        np.add.at(acc, tokens, weight * p / p.sum())
    tokens = np.flatnonzero(acc)
    return tokens, acc[tokens] / acc.sum()


def _quantile(tokens, p, q):
    return tokens[np.searchsorted(np.cumsum(p), q)]


@pytest.fixture(scope="module")
def day():
    """The whole day of all 73 clients (1.38 million requests)."""
    return servegen_workload(POOL, start_h=0, hours=DAY_H, seed=3)


def test_same_seed_same_bytes_and_n_keeps_the_first_requests():
    a = load_workload("servegen-r1:n=5000,seed=1")
    assert len(a) == 5000 and a.fingerprint() == load_workload("servegen-r1:n=5000,seed=1").fingerprint()
    assert a.fingerprint() != load_workload("servegen-r1:n=5000,seed=2").fingerprint()
    head = load_workload("servegen-r1:n=100,seed=1")
    for key in ("arrival_s", "prompt_tokens", "output_tokens", "labels"):
        assert np.array_equal(getattr(head, key), getattr(a, key)[:100])
    # arrivals are seconds since the span's start, 1 h into the data's day by default
    assert 0 <= a.arrival_s[0] and a.arrival_s[-1] < 600  # 5000 requests at about 21 req/s
    assert load_workload("servegen-r1:n=5000", seed=1).fingerprint() == a.fingerprint()


def test_lengths_follow_the_pmfs_of_their_client_and_6_hour_window(day):
    pmfs = {f: {c: _pmfs(c, f) for c in range(73)} for f in ("output_tokens", "input_tokens")}
    # the data's rate-weighted day: the numbers the data README states
    expected = {}
    for c in range(73):
        for row in _trace(c):
            start = int(row[0]) // 21600 * 21600
            expected[c, start] = expected.get((c, start), 0.0) + float(row[1]) * 600
    expected = {k: v for k, v in expected.items() if v > 0}
    out_t, out_p = _mixture(expected, pmfs["output_tokens"])
    assert round((out_t * out_p).sum()) == 1527
    assert [_quantile(out_t, out_p, q) for q in (0.5, 0.9, 0.99)] == [792, 3432, 12607]
    in_t, in_p = _mixture(expected, pmfs["input_tokens"])
    assert round((in_t * in_p).sum()) == 1268 and _quantile(in_t, in_p, 0.5) == 208
    # generated, within the sampling error of the requests per window (about 0.3% for the mean)
    out = day.output_tokens
    assert abs(out.mean() / 1527.4 - 1) < 0.01 and abs(day.prompt_tokens.mean() / 1268.2 - 1) < 0.015
    for q, value in ((50, 792), (90, 3432), (99, 12607)):
        assert abs(np.percentile(out, q) / value - 1) < 0.015, q
    # given each request's client and 6-hour window, its lengths are draws from that PMF
    client = np.array([int(name.split("-")[1]) for name in day.label_names])[day.labels]
    counts = np.bincount(client * 4 + (day.arrival_s // 21600).astype(int), minlength=73 * 4)
    realized = {(int(k) // 4, int(k) % 4 * 21600): float(counts[k]) for k in np.flatnonzero(counts)}
    for field, x in (("output_tokens", out), ("input_tokens", day.prompt_tokens)):
        tokens, p = _mixture(realized, pmfs[field])
        mean = (tokens * p).sum()
        se = math.sqrt(((tokens - mean) ** 2 * p).sum() / len(x))
        assert abs(x.mean() - mean) < 5 * se, field
        cdf = np.cumsum(np.bincount(x, minlength=tokens[-1] + 1))[tokens] / len(x)
        dkw = math.sqrt(math.log(2 / 1e-6) / (2 * len(x)))  # fails with probability 1e-6
        assert np.abs(cdf - np.cumsum(p)).max() < dkw, field


def test_requests_per_window_follow_the_rates_and_rate_0_brings_none(day):
    client = np.array([int(name.split("-")[1]) for name in day.label_names])[day.labels]
    window = (day.arrival_s // 600).astype(int)
    got = np.zeros((73, 144))
    np.add.at(got, (client, window), 1)
    rate = np.array([[float(row[1]) for row in _trace(c)] for c in range(73)])
    assert (got[rate == 0] == 0).all() and (rate == 0).sum() > 7000
    cv = np.array([[float(row[2]) for row in _trace(c)] for c in range(73)])
    assert (got[(rate * 600 >= 30) & (cv <= 2)] > 0).all()  # a burstier window may stay empty
    assert abs(len(day) / (rate.sum() * 600) - 1) < 0.01  # 1,383,669 expected


def test_a_busy_gamma_window_has_the_files_cv():
    row = _trace(13)[135]  # client 13, 22:30 to 22:40: Gamma, 9,171 requests expected, cv 1.64
    assert row[0] == "81000" and row[3] == "Gamma"
    w = servegen_workload(POOL, clients="13", start_h=22.5, hours=1 / 6, seed=5)
    gaps = np.diff(w.arrival_s)
    assert abs(gaps.std() / gaps.mean() / float(row[2]) - 1) < 0.08
    assert abs(len(w) / (float(row[1]) * 600) - 1) < 0.1
    assert w.label_names == ("client-13",)


def test_clients_option():
    rates = np.array([sum(float(row[1]) for row in _trace(c)[6:12]) for c in range(73)])
    top = sorted(np.argsort(-rates, kind="stable")[:3])
    w = load_workload("servegen-r1:clients=top3")  # hour 1 to 2
    assert w.label_names == tuple(f"client-{c}" for c in top) and set(np.unique(w.labels)) == {0, 1, 2}
    w = load_workload("servegen-r1:clients=35+3,start_h=2,hours=0.5,seed=4")
    assert w.label_names == ("client-3", "client-35") and w.arrival_s[-1] < 1800
    for spec, words in (("clients=99", "no client 99"), ("clients=top0", "k must be 1..73"),
                        ("clients=a+b", "top<k>"), ("clients=3+3", "named twice"),
                        ("start_h=23,hours=2", "outside the data"), ("hours=0", "hours > 0"),
                        ("clients=2,hours=0.5", "send no requests"), ("n=100000,hours=0.5", "fewer than n=100000"),
                        ("start=5", "unknown servegen-r1 key 'start'")):
        with pytest.raises(WorkloadError, match=words):
            load_workload(f"servegen-r1:{spec}")


def test_rate_and_arrival_options_act_as_on_a_trace():
    base = load_workload("servegen-r1:n=500")
    w = load_workload("servegen-r1:n=500,rate=5")
    assert abs(w.mean_rate - 5) < 1e-9 and np.array_equal(w.output_tokens, base.output_tokens)
    g = load_workload("servegen-r1:n=4000,arrival=gamma,cv=2,rate=4,seed=3")
    gaps = np.diff(g.arrival_s)
    assert abs(gaps.mean() * 4 - 1) < 0.15 and abs(gaps.std() / gaps.mean() / 2 - 1) < 0.2
    assert np.array_equal(g.prompt_tokens, load_workload("servegen-r1:n=4000,seed=3").prompt_tokens)


def test_cli_runs_it_at_a_load(capsys):
    assert main(["run", "--workload", "servegen-r1:n=200,seed=1", "--load", "0.9", "-q"]) == 0
    out = capsys.readouterr().out
    assert "servegen-r1:n=200,seed=1" in out and "load 0.9" in out


# ------------------------------------------------------------ a pool written here


def _write(folder, traces: dict[int, list[str]], lengths: dict[int, dict] | None = None):
    folder.mkdir(exist_ok=True)
    for c, lines in traces.items():
        (folder / f"chunk-{c}-trace.csv").write_text("".join(f"{line}\n" for line in lines))
        default = {"0": {"input_tokens": "{10: 0.5, 20: 0.5}", "output_tokens": "{5: 0.25, 7: 0.75}",
                         "reason_ratio": "{0.0: 1.0}"}}
        (folder / f"chunk-{c}-dataset.json").write_text(json.dumps((lengths or {}).get(c, default)))
    return folder


def test_stationary_windows_keep_the_rate_and_weibull_takes_arg1_as_shape(tmp_path):
    # Gamma cv 3: a renewal process restarted with a full gap each window would bring 4 more
    windows = 2000
    gamma = [f"{600 * i},0.1,3.0,Gamma,{1 / 9},{90.0}" for i in range(windows)]
    k = 0.8
    weibull = [f"{600 * i},20,1.28,Weibull,{k},0.04" for i in range(windows)]
    pool = _write(tmp_path / "pool", {0: gamma, 1: weibull})
    hours = windows / 6
    w = servegen_workload(pool, clients="0", start_h=0, hours=hours, seed=1)
    assert abs(len(w) / windows - 60) < 3 * math.sqrt(60 * 9 / windows)
    w = servegen_workload(pool, clients="1", start_h=0, hours=2, seed=1)
    gaps = np.diff(w.arrival_s)
    cv = math.sqrt(math.gamma(1 + 2 / k) / math.gamma(1 + 1 / k) ** 2 - 1)
    assert abs(gaps.mean() * 20 - 1) < 0.03 and abs(gaps.std() / gaps.mean() / cv - 1) < 0.05
    assert set(w.output_tokens) == {5, 7} and abs((w.output_tokens == 7).mean() - 0.75) < 0.02


def test_rate_0_with_a_law_brings_nothing(tmp_path):
    pool = _write(tmp_path / "pool", {0: ["0,0,0,Gamma,1.0,1.0", "600,1.0,1.0,Gamma,1.0,1.0", "1200,0,0,,0,0"]})
    w = servegen_workload(pool, start_h=0, hours=0.5, seed=0)
    assert (w.arrival_s >= 600).all() and (w.arrival_s < 1200).all() and 500 < len(w) < 700


GOOD = ["0,1.0,1.0,Gamma,1.0,1.0", "600,1.0,1.0,Weibull,1.0,1.0"]


@pytest.mark.parametrize("line, words", [
    ("600,x,1.0,Gamma,1.0,1.0", ("chunk-0-trace.csv:2:", "'rate_rps'", "not a finite number", "'x'")),
    ("600,1.0,1.0,Pareto,1.0,1.0", ("chunk-0-trace.csv:2:", "'family'", "Gamma, Weibull or empty", "'Pareto'")),
    ("600,1.0,1.0,,0,0", ("chunk-0-trace.csv:2:", "'family'", "needs its inter-arrival law")),
    ("600,1.0,1.0,Gamma,-1,1.0", ("chunk-0-trace.csv:2:", "'arg1'", "shape must be > 0", "'-1'")),
    ("600,-1,1.0,Gamma,1,1.0", ("chunk-0-trace.csv:2:", "'rate_rps'", "must be >= 0", "'-1'")),
    ("900,1.0,1.0,Gamma,1,1.0", ("chunk-0-trace.csv:2:", "'window_start_s'", "every 600 s", "'900'")),
    ("600,1.0,1.0,Gamma,1", ("chunk-0-trace.csv:2:", "expected 6 fields", "'600,1.0,1.0,Gamma,1'")),
])
def test_a_bad_trace_line_is_named(tmp_path, line, words):
    pool = _write(tmp_path / "pool", {0: [GOOD[0], line]})
    with pytest.raises(WorkloadError) as err:
        servegen_workload(pool, start_h=0, hours=0.2)
    assert all(word in str(err.value) for word in words), err.value


@pytest.mark.parametrize("text, words", [
    ("{10: 0.5, 20 0.5}", ("entry 2 is not 'tokens: probability'", "'20 0.5'")),
    ("{10: 0.5, 20: 0.4}", ("sum to 0.9",)),
    ("{10: 0.5, 0: 0.5}", ("entry 2", "integer >= 1", "'0: 0.5'")),
    ("{10: 0.5, 2.5: 0.5}", ("entry 2", "integer >= 1")),
    ("{10: 1.5, 20: -0.5}", ("entry 2", "finite and >= 0")),
    ("{10: 0.5, 10: 0.5}", ("appears twice",)),
    ("[10, 20]", ("text of a Python dict",)),
])
def test_a_bad_pmf_is_named(tmp_path, text, words):
    lengths = {0: {"0": {"input_tokens": text, "output_tokens": "{5: 1.0}"}}}
    pool = _write(tmp_path / "pool", {0: GOOD}, lengths)
    with pytest.raises(WorkloadError) as err:
        servegen_workload(pool, start_h=0, hours=0.2)
    msg = str(err.value)
    assert "chunk-0-dataset.json" in msg and "window '0'" in msg and "'input_tokens'" in msg, msg
    assert all(word in msg for word in words), msg


def test_missing_and_empty_lengths_are_named(tmp_path):
    pool = _write(tmp_path / "a", {0: GOOD}, {0: {"0": {"input_tokens": "{}", "output_tokens": "{}"}}})
    with pytest.raises(WorkloadError, match=r"window '0' field 'input_tokens' is empty but the trace has requests"):
        servegen_workload(pool, start_h=0, hours=0.2)
    pool = _write(tmp_path / "b", {0: GOOD, 1: GOOD})
    (pool / "chunk-1-dataset.json").unlink()
    with pytest.raises(WorkloadError, match="chunk-1-trace.csv has no chunk-1-dataset.json"):
        servegen_workload(pool, start_h=0, hours=0.2)
    (pool / "chunk-1-dataset.json").write_text("{\"0\": ")
    with pytest.raises(WorkloadError, match="chunk-1-dataset.json:1: invalid JSON"):
        servegen_workload(pool, start_h=0, hours=0.2)
    pool = _write(tmp_path / "c", {0: GOOD, 1: GOOD[:1]})
    with pytest.raises(WorkloadError, match="chunk-1-trace.csv: windows 0..0 s differ from those of chunk-0"):
        servegen_workload(pool, start_h=0, hours=0.2)
