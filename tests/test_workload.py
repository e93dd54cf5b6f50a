"""Workload container, CSV loading, synthetic generators and spec resolution."""

import csv
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailgym.workload import (
    PRESETS,
    LogNormal,
    Mixture,
    Pareto,
    Resample,
    Uniform,
    UnsortedArrivalsWarning,
    Workload,
    WorkloadError,
    bursty_arrivals,
    gamma_arrivals,
    load_csv,
    load_workload,
    parse_columns,
    poisson_arrivals,
    preset,
    synthetic,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HEADER = "arrival_s,prompt_tokens,output_tokens"


@pytest.fixture(autouse=True)
def data_dir(monkeypatch):
    if not os.environ.get("TAILGYM_DATA_DIR"):
        monkeypatch.setenv("TAILGYM_DATA_DIR", str(SHARED))


def write(tmp_path, lines, *, newline="\n", name="t.csv", bom=False):
    path = tmp_path / name
    text = newline.join(lines) + newline
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def cv(x):
    return x.std() / x.mean()


# ---------------------------------------------------------------- CSV loading


def test_crlf_lf_and_bom_identical(tmp_path):
    lines = [HEADER, "1.5,10,3", "2.0,20,4", "4.25,30,5"]
    lf = load_csv(write(tmp_path, lines, name="lf.csv"))
    crlf = load_csv(write(tmp_path, lines, newline="\r\n", name="crlf.csv"))
    bom = load_csv(write(tmp_path, lines, newline="\r\n", name="bom.csv", bom=True))
    for w in (crlf, bom):
        assert w.fingerprint() == lf.fingerprint()
        np.testing.assert_array_equal(w.source_rows, lf.source_rows)
    np.testing.assert_array_equal(lf.arrival_s, [0.0, 0.5, 2.75])
    assert lf.name == "lf" and lf.prompt_tokens.dtype == np.int64 and lf.labels is None


def test_wall_clock_timestamps_exact(tmp_path):
    lines = [
        "TIMESTAMP,ContextTokens,GeneratedTokens",
        "2023-11-16 18:15:46.6805900,374,44",
        "2023-11-16 18:15:50.9951690,396,109",
        "2023-11-16T23:59:59.999999999,1,1",  # ISO separator, 9 digits
        "2023-11-17 00:00:01,1,1",  # next day, no fraction
    ]
    columns = "arrival=TIMESTAMP,prompt=ContextTokens,output=GeneratedTokens"
    w = load_csv(write(tmp_path, lines, newline="\r\n"), columns)
    # 50.9951690 - 46.6805900 = 4.3145790 s
    assert w.arrival_s[1] == 4_314_579_000 / 1e9
    # 23:59:59.999999999 - 18:15:46.68059 = 5h44m13.319409999 s = 20653.319409999 s
    assert w.arrival_s[2] == 20_653_319_409_999 / 1e9
    assert w.arrival_s[3] == (20_653_319_409_999 + 1_000_000_001) / 1e9
    np.testing.assert_array_equal(w.prompt_tokens, [374, 396, 1, 1])


def test_column_mapping_and_labels(tmp_path):
    path = write(tmp_path, ["t,cls,in,out", "0,b,5,6", "1,a,7,8", "2,b,9,10.0"])
    w = load_csv(path, {"arrival": "t", "prompt": "in", "output": "out", "label": "cls"})
    assert w.label_names == ("a", "b")
    np.testing.assert_array_equal(w.labels, [1, 0, 1])
    np.testing.assert_array_equal(w.output_tokens, [6, 8, 10])  # "10.0" is integral
    assert w.describe()["labels"] == {"a": 1, "b": 2}


def test_parse_columns():
    assert parse_columns("arrival=TIMESTAMP, prompt=ContextTokens,output=GeneratedTokens") == {
        "arrival": "TIMESTAMP", "prompt": "ContextTokens", "output": "GeneratedTokens"
    }
    for bad, words in [("arival=T", ["arival", "arrival, prompt, output, label"]),
                       ("arrival", ["arrival", "key=value"]),
                       ("arrival=a,arrival=b", ["duplicate", "arrival"])]:
        with pytest.raises(WorkloadError) as err:
            parse_columns(bad)
        assert all(word in str(err.value) for word in words)


BAD_CSVS = [
    # (lines, line number, column, value, problem)
    (["arrival_s,prompt_tokens"], 1, None, None, "missing output column 'output_tokens'; columns present: 'arrival_s', 'prompt_tokens'"),
    ([], 1, None, None, "empty file"),
    ([HEADER], 2, None, None, "no data rows"),
    ([HEADER, "0,1,1", "1,nan,1"], 3, "prompt_tokens", "nan", "not finite"),
    ([HEADER, "0,1,1", "inf,1,1"], 3, "arrival_s", "inf", "not finite"),
    ([HEADER, "0,1,1", "1,1,-3"], 3, "output_tokens", "-3", "negative"),
    ([HEADER, "0,1,1", "1,1,0"], 3, "output_tokens", "0", ">= 1"),
    ([HEADER, "0,1,1", "1,0,5"], 3, "prompt_tokens", "0", ">= 1"),
    ([HEADER, "0,1,1", "1,12.5,1"], 3, "prompt_tokens", "12.5", "not an integer"),
    ([HEADER, "0,1,1", "1,abc,1"], 3, "prompt_tokens", "abc", "not a number"),
    ([HEADER, "0,1,1", "x,1,1"], 3, "arrival_s", "x", "unparsable time"),
    ([HEADER, "0,1,1", "2023-11-16 18:15:46,1,1"], 3, "arrival_s", "2023-11-16 18:15:46", "unparsable time"),
    ([HEADER, "2023-11-16 18:15:46,1,1", "2023-11-16 25:00:00,1,1"], 3, "arrival_s", "2023-11-16 25:00:00", "unparsable time"),
    ([HEADER, "2023-02-28 00:00:00,1,1", "2023-02-30 00:00:00,1,1"], 3, "arrival_s", "2023-02-30 00:00:00", "unparsable time"),
    ([HEADER, "2023-11-16 18:15:46,1,1", "2023-11-16 18:15:46.1234567891,1,1"], 3, "arrival_s", "2023-11-16 18:15:46.1234567891", "unparsable"),
    ([HEADER, "0,1,1", "1,2"], 3, None, "1,2", "expected 3 fields, got 2"),
    ([HEADER, "0,1,1", "", "1,2,3,4"], 4, None, "1,2,3,4", "expected 3 fields, got 4"),
]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("lines,line,column,value,problem", BAD_CSVS)
def test_bad_csv_errors_are_located(tmp_path, newline, lines, line, column, value, problem):
    path = tmp_path / "bad.csv"
    path.write_bytes("".join(s + newline for s in lines).encode())
    with pytest.raises(WorkloadError) as err:
        load_csv(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}:"), msg
    assert problem in msg
    if column is not None:
        assert f"column {column!r}" in msg
    if value is not None:
        assert repr(value) in msg


def test_missing_file_and_bad_mapping_key(tmp_path):
    with pytest.raises(WorkloadError, match="nope.csv"):
        load_csv(tmp_path / "nope.csv")
    with pytest.raises(WorkloadError, match="colour"):
        load_csv(write(tmp_path, [HEADER, "0,1,1"]), {"colour": "x"})


def test_unsorted_rows_sorted_with_warning(tmp_path):
    rows = ["0,10,1", "5,11,2", "3,12,3", "4,13,4", "1,14,5", "5,15,6", "3,16,7"]
    with pytest.warns(UnsortedArrivalsWarning, match=r"3 row\(s\) .* line 4\)"):
        w = load_csv(write(tmp_path, [HEADER, *rows]))
    order = [0, 4, 2, 6, 3, 1, 5]  # stable: equal arrivals keep file order
    np.testing.assert_array_equal(w.source_rows, np.array(order) + 2)
    np.testing.assert_array_equal(w.prompt_tokens, np.array(order) + 10)
    np.testing.assert_array_equal(w.output_tokens, np.array(order) + 1)
    np.testing.assert_array_equal(w.arrival_s, [0, 1, 3, 3, 4, 5, 5])


@pytest.mark.parametrize("name,relpath", [("azure-conv", "traces/azure_llm_2023_conv.csv"),
                                          ("azure-code", "traces/azure_llm_2023_code.csv")])
def test_real_azure_traces(name, relpath):
    with open(Path(os.environ["TAILGYM_DATA_DIR"]) / relpath, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r][1:]
    start = time.perf_counter()
    w = load_workload(name)
    elapsed = time.perf_counter() - start
    assert w.name == name and len(w) == len(rows)
    first, last = (np.datetime64(rows[i][0], "ns") for i in (0, -1))
    assert w.arrival_s[0] == 0.0
    assert w.arrival_s[-1] == (last - first) / np.timedelta64(1, "ns") / 1e9
    assert (w.prompt_tokens[0], w.output_tokens[0]) == (int(rows[0][1]), int(rows[0][2]))
    assert (w.prompt_tokens[-1], w.output_tokens[-1]) == (int(rows[-1][1]), int(rows[-1][2]))
    assert w.source_rows[0] == 2 and w.source_rows[-1] == len(rows) + 1
    assert elapsed < 0.5


# ---------------------------------------------------------------- Workload


def small(arrivals=(0.0, 1.0, 2.0, 4.0)):
    n = len(arrivals)
    return Workload(np.array(arrivals), np.arange(1, n + 1), np.full(n, 7), name="small")


def test_workload_coerces_and_freezes():
    w = Workload([0, 1], [3.0, 4.0], np.array([1, 2], dtype=np.int32))
    assert w.arrival_s.dtype == np.float64 and w.output_tokens.dtype == np.int64
    with pytest.raises(ValueError):
        w.prompt_tokens[0] = 5


@pytest.mark.parametrize("kwargs,problem", [
    (dict(arrival_s=[0, 1], prompt_tokens=[1], output_tokens=[1, 1]), "shape"),
    (dict(arrival_s=[1, 0], prompt_tokens=[1, 1], output_tokens=[1, 1]), "earlier"),
    (dict(arrival_s=[0, np.nan], prompt_tokens=[1, 1], output_tokens=[1, 1]), "not finite"),
    (dict(arrival_s=[0, 1], prompt_tokens=[1, 0], output_tokens=[1, 1]), "prompt_tokens 0 must be >= 1"),
    (dict(arrival_s=[0, 1], prompt_tokens=[1, 1.5], output_tokens=[1, 1]), "integers"),
    (dict(arrival_s=[], prompt_tokens=[], output_tokens=[]), "at least one"),
    (dict(arrival_s=[0, 1], prompt_tokens=[1, 1], output_tokens=[1, 1], labels=[0, 1], label_names=("a",)), "labels"),
    (dict(arrival_s=[0, 1], prompt_tokens=[1, 1], output_tokens=[0, 1], source_rows=[7, 9]), "line 7"),
])
def test_workload_validation(kwargs, problem):
    with pytest.raises(WorkloadError, match=problem):
        Workload(**kwargs)


def test_rates_head_fingerprint_describe():
    w = small()
    assert w.duration_s == 4.0 and w.mean_rate == 0.75
    np.testing.assert_array_equal(w.with_rate(1.5).arrival_s, [0, 0.5, 1, 2])
    np.testing.assert_array_equal(w.with_rate_scale(2).arrival_s, [0, 0.5, 1, 2])
    np.testing.assert_array_equal(small((10.0, 12.0, 14.0)).with_rate_scale(0.5).arrival_s, [10, 14, 18])
    assert w.with_rate(3.0).mean_rate == pytest.approx(3.0, rel=1e-12)
    assert w.with_rate(1.5).prompt_tokens is not None and w.with_rate(1.5).name == "small"
    h = w.head(2)
    assert len(h) == 2 and h.duration_s == 1.0
    assert w.fingerprint() == small().fingerprint() != w.head(3).fingerprint()
    assert w.fingerprint() != w.with_rate(1.0).fingerprint()
    d = w.describe()
    assert d["n"] == 4 and d["mean_rate"] == 0.75 and d["prompt_tokens"]["max"] == 4 and d["output_tokens"]["p50"] == 7
    assert small((3.0,)).describe()["mean_rate"] is None
    for bad in (small((3.0,)), small((3.0, 3.0))):
        with pytest.raises(WorkloadError, match="rate"):
            bad.mean_rate
    for call in (lambda: w.with_rate(0), lambda: w.with_rate_scale(-1), lambda: w.head(0)):
        with pytest.raises(WorkloadError):
            call()


# ---------------------------------------------------------------- synthetic


def test_seed_reproducible_and_distinct():
    for name in PRESETS:
        a, b, c = preset(name, seed=7), preset(name, seed=7), preset(name, seed=8)
        for field in ("arrival_s", "prompt_tokens", "output_tokens"):
            assert np.array_equal(getattr(a, field), getattr(b, field))
            assert not np.array_equal(getattr(a, field), getattr(c, field))
        assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    # arrivals and lengths use independent streams: changing the process keeps the lengths
    g = preset("chat", arrival="gamma", cv=3.0)
    assert np.array_equal(g.output_tokens, preset("chat").output_tokens)


@pytest.mark.parametrize("target", [0.5, 1.0, 3.0])
def test_gamma_cv_and_rate(target):
    t = gamma_arrivals(200_000, 4.0, target, np.random.default_rng(1))
    gaps = np.diff(t)
    assert t[0] == 0.0 and cv(gaps) == pytest.approx(target, rel=0.05)
    assert 1 / gaps.mean() == pytest.approx(4.0, rel=0.02)


def test_poisson_cv():
    gaps = np.diff(poisson_arrivals(100_000, 2.0, np.random.default_rng(2)))
    assert cv(gaps) == pytest.approx(1.0, rel=0.03)


def test_bursty_mean_rate_and_burstiness():
    t = bursty_arrivals(200_000, 5.0, np.random.default_rng(3), burst_ratio=10, p_burst=0.1, mean_burst_s=1.0)
    assert len(t) == 200_000 and t[0] == 0.0 and np.all(np.diff(t) >= 0)
    assert (len(t) - 1) / t[-1] == pytest.approx(5.0, rel=0.05)
    assert cv(np.diff(t)) > 1.3
    w = preset("bursty-chat")
    assert w.mean_rate == pytest.approx(4.0, rel=0.3)


def test_length_distributions():
    rng = np.random.default_rng(4)
    x = LogNormal(100, 1.0, 500).sample(50_000, rng)
    assert x.dtype == np.int64 and x.min() >= 1 and x.max() == 500
    assert np.median(x) == pytest.approx(100, rel=0.05)
    p = Pareto(50, 1.5, 10_000).sample(50_000, rng)
    assert p.min() == 50 and p.max() <= 10_000
    r = Resample(np.array([3, 9, 27])).sample(1000, rng)
    assert set(r) == {3, 9, 27}
    m = Mixture([(Uniform(1, 10), 0.75), (Uniform(1000, 2000), 0.25)]).sample(40_000, rng)
    assert np.mean(m >= 1000) == pytest.approx(0.25, abs=0.01)
    with pytest.raises(WorkloadError):
        LogNormal(0, 1, 10)
    with pytest.raises(WorkloadError):
        Resample(np.array([0, 1]))


def test_reasoning_preset_long_tail():
    out = preset("reasoning", n=20_000).output_tokens
    assert np.mean(out >= 4000) == pytest.approx(0.10, abs=0.01) and out.max() <= 16_000


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    rate=st.floats(0.01, 100),
    arrival=st.sampled_from(["poisson", "gamma", "bursty"]),
    shape=st.floats(0.2, 5),
    seed=st.integers(0, 2**32),
    median=st.floats(1, 5000),
    sigma=st.floats(0, 3),
)
def test_synthetic_property(n, rate, arrival, shape, seed, median, sigma):
    kw = {"gamma": {"cv": shape}, "bursty": {"burst_ratio": 1 + shape}}.get(arrival, {})
    w = synthetic(n, rate=rate, arrival=arrival, seed=seed, prompt=LogNormal(median, sigma, 8000),
                  output=Mixture([(Pareto(median, shape, 4000), 1), (Uniform(1, 5), 1)]), **kw)
    assert len(w) == n and w.arrival_s[0] == 0.0 and np.all(np.diff(w.arrival_s) >= 0)
    assert w.prompt_tokens.min() >= 1 and w.output_tokens.min() >= 1
    assert w.prompt_tokens.max() <= 8000 and w.output_tokens.max() <= 4000


# ---------------------------------------------------------------- load_workload


def test_spec_forms(tmp_path):
    w = preset("chat")
    assert load_workload(w) is w
    assert load_workload("default").fingerprint() == w.fingerprint()
    s = load_workload("synthetic:preset=reasoning,n=500,arrival=gamma,cv=3,rate=4,seed=1")
    assert s.fingerprint() == preset("reasoning", n=500, arrival="gamma", cv=3, rate=4, seed=1).fingerprint()
    assert load_workload("chat:n=10", seed=5).fingerprint() == preset("chat", n=10, seed=5).fingerprint()
    path = write(tmp_path, ["t,p,o", "0,1,2", "1,3,4"])
    assert len(load_workload(path, columns="arrival=t,prompt=p,output=o")) == 2
    assert len(load_workload(str(path), columns={"arrival": "t", "prompt": "p", "output": "o"})) == 2


def test_trace_with_redrawn_arrivals():
    trace = load_workload("azure-conv")
    a = load_workload("azure-conv:arrival=gamma,cv=3", seed=1)
    assert np.array_equal(a.prompt_tokens, trace.prompt_tokens) and np.array_equal(a.output_tokens, trace.output_tokens)
    assert np.array_equal(a.source_rows, trace.source_rows)
    assert a.mean_rate == pytest.approx(trace.mean_rate, rel=0.1)
    assert cv(np.diff(a.arrival_s)) == pytest.approx(3.0, rel=0.15)
    assert a.fingerprint() == load_workload("azure-conv:arrival=gamma,cv=3", seed=1).fingerprint()
    assert a.fingerprint() != load_workload("azure-conv:arrival=gamma,cv=3,seed=2").fingerprint()
    assert load_workload("azure-code:rate=10,n=100").mean_rate == pytest.approx(10.0, rel=1e-12)


@pytest.mark.parametrize("spec,words", [
    ("nonsense", ["nonsense", "azure-conv", "azure-code", "chat", "reasoning", "bursty-chat", "synthetic:"]),
    ("synthetic:bogus=1", ["bogus", "preset", "rate", "cv", "burst_ratio"]),
    ("synthetic:preset=nope", ["nope", "chat"]),
    ("synthetic:n=many", ["n", "many", "int"]),
    ("chat:cv=3", ["poisson", "cv"]),
    ("synthetic:arrival=gamma", ["gamma", "cv"]),
    ("synthetic:arrival=zigzag", ["zigzag", "poisson", "gamma", "bursty"]),
    ("azure-conv:cv=3", ["cv", "arrival="]),
])
def test_bad_specs(spec, words):
    with pytest.raises(WorkloadError) as err:
        load_workload(spec)
    assert all(word in str(err.value) for word in words), str(err.value)


def test_columns_only_for_csv():
    with pytest.raises(WorkloadError, match="columns"):
        load_workload("chat", columns="arrival=t")


def test_trace_window_option_rebases_arrivals():
    from tailgym.workload import load_workload
    full = load_workload("azure-conv")
    w = load_workload("azure-conv:start=100,n=50")
    assert len(w) == 50 and w.arrival_s[0] == 0.0
    assert (w.prompt_tokens == full.prompt_tokens[100:150]).all()
    assert np.allclose(w.arrival_s, full.arrival_s[100:150] - full.arrival_s[100])
