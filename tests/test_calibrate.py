import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from tailgym.calibrate import (
    CalibrationError,
    Observations,
    calibrate,
    cli,
    nnls,
    read_splitwise,
    read_tailgym_csv,
    read_vidur_mlp,
    write_tailgym_csv,
)
from tailgym.data import data_path
from tailgym.hardware import StepTimeModel, load_profile

SPLITWISE_COMBOS = [
    *((m, g, tp) for m, tps in (("llama2-70b", (2, 4, 8)), ("bloom-176b", (8,)))
      for g in ("a100-80gb", "h100-80gb", "h100-80gb-pcap") for tp in tps),
]


def dataset(name):
    return data_path(name, download=False)  # conftest points TAILGYM_DATA_DIR at shared/data


@pytest.fixture
def splitwise():
    return dataset("splitwise-perf-model")


@pytest.fixture(scope="module")
def h100_tp2_profile():
    path = dataset("splitwise-perf-model")
    return calibrate(read_splitwise(path, "llama2-70b", "h100-80gb", 2), model="llama2-70b", gpu="h100-80gb", tp=2)


def test_nnls_matches_active_constraint():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(nnls(a, np.array([1.0, 2.0, 3.0])), [1.0, 2.0])
    np.testing.assert_allclose(nnls(a, np.array([-1.0, 2.0, 1.0])), [0.0, 1.5])


def test_splitwise_llama2_70b_h100_tp2_fit(h100_tp2_profile):
    r = h100_tp2_profile.fit
    assert r["loo_mape_prompt"] < 0.06 and r["loo_mape_token"] < 0.02
    assert r["loo_max_err_prompt"] < 0.2 and r["loo_max_err_token"] < 0.05
    assert r["n_points"] == 22
    assert any("batch_size=64" in o for o in r["outliers"])


@pytest.mark.parametrize("model, gpu, tp", SPLITWISE_COMBOS)
def test_splitwise_all_combos_honest_bounds(splitwise, model, gpu, tp):
    """Decode steps fit well everywhere; prefill is limited by batched prompts costing more per
    token than single prompts of the same size (not expressible in the step features)."""
    r = calibrate(read_splitwise(splitwise, model, gpu, tp), model=model, gpu=gpu, tp=tp).fit
    assert r["loo_mape_token"] < 0.06
    assert r["loo_mape_prompt"] < 0.25


def test_splitwise_row_mapping(splitwise):
    obs = read_splitwise(splitwise, "llama2-70b", "a100-80gb", 2)
    i = obs.desc.index("token_time at prompt_size=512 batch_size=8 token_size=128")
    np.testing.assert_array_equal(obs.x[i], [1, 0, 8, 8 * (512 + 64), 0])
    np.testing.assert_array_equal(obs.x[i - 1], [1, 8 * 512, 0, 8 * 512, 8 * 512 * 256])
    assert len(obs.rejected) == 5 and all("batch_size=64" in r for r in obs.rejected)


TRUE = StepTimeModel(
    compute=[5e-3, 1.5e-4, 1.5e-4, 0.0, 3e-9],
    memory=[20e-3, 1e-4, 3e-4, 1e-7, 0.0],
    name="truth", source="test", model="m", gpu="g",
)


def synthetic(rng, repeats=3, noise=2e-4):
    xs = [[1, b * p, 0, b * p, b * p * p / 2] for p in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
          for b in (1, 4)]
    xs += [[1, 0, b, b * c, 0] for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) for c in (500, 4000)]
    xs += [[1, 256, 32, 32 * 1000 + 256, 256 * 128]]
    x = np.repeat(np.array(xs, dtype=float), repeats, axis=0)
    y = TRUE.predict(x) * np.exp(rng.normal(0, noise, len(x)))
    return x, y


def observations(x, y):
    return Observations("synthetic.csv", x, y, np.arange(2, len(y) + 2), [f"step {i}" for i in range(len(y))])


def test_synthetic_recovery_with_outliers():
    rng = np.random.default_rng(0)
    x, y = synthetic(rng)
    bad_points = [(x[:, 1] == 1024) & (x[:, 4] == 1024 * 512), (x[:, 2] == 16) & (x[:, 3] == 16 * 4000)]
    y[bad_points[0]] *= 10
    y[bad_points[1]] /= 10
    y[5] *= 10  # one bad repeat
    fit = calibrate(observations(x, y), model="m", gpu="g", tp=1)
    np.testing.assert_allclose(fit.compute, TRUE.compute, rtol=0.01)
    np.testing.assert_allclose(fit.memory, TRUE.memory, rtol=0.01)
    outliers = fit.fit["outliers"]
    assert len(outliers) == 3
    assert "line 7: step 5" in outliers[0] and "the median of its 3 repeats" in outliers[0]
    flagged_lines = {int(o.split("lines ")[1].split("-")[0]) for o in outliers[1:]}
    assert flagged_lines == {int(np.flatnonzero(b)[0]) + 2 for b in bad_points}
    assert fit.fit["loo_mape_prompt"] < 0.01 and fit.fit["loo_mape_token"] < 0.01


def test_tailgym_csv_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x, y = synthetic(rng, repeats=1)
    path = tmp_path / "steps.csv"
    write_tailgym_csv(path, x[:10], y[:10] * 1e3, model="m", gpu="g", tp=2)
    write_tailgym_csv(path, x[10:], y[10:] * 1e3, model="m", gpu="g", tp=2, append=True)
    write_tailgym_csv(path, x[:3], y[:3] * 1e3, model="other", gpu="g", tp=2, append=True)
    obs = read_tailgym_csv(path, "m", "g", 2)
    np.testing.assert_array_equal(obs.x, x)
    np.testing.assert_allclose(obs.seconds, y, rtol=1e-15)
    with open(path) as f:
        assert next(csv.reader(f)) == ["model", "gpu", "tp", "prefill_tokens", "decode_seqs", "context_tokens",
                                       "prefill_attention", "step_time_ms"]


def test_cli_writes_loadable_profile_and_report(tmp_path, capsys):
    out, report = tmp_path / "p.json", tmp_path / "r.json"
    rc = cli(["splitwise-perf-model", "--format", "splitwise", "--model", "llama2-70b", "--gpu", "h100-80gb",
              "--tp", "2", "-o", str(out), "--holdout", "splitwise-perf-model", "--json", str(report)])
    assert rc == 0
    profile = load_profile(out)
    assert (profile.name, profile.model, profile.tp) == ("p", "llama2-70b", 2)
    r = json.loads(report.read_text())
    for key in ("holdout_mape_prompt", "holdout_mape_token", "loo_mape_prompt", "loo_mape_token",
                "loo_max_err_prompt", "loo_max_err_token", "n_points", "outliers"):
        assert key in r
    assert r["holdout_mape_token"] < 0.02
    assert "leave-one-out" in capsys.readouterr().out


def test_python_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "tailgym.calibrate", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--holdout" in res.stdout


def test_cli_reports_bad_input(tmp_path, capsys):
    assert cli(["nope.csv", "--format", "splitwise", "--model", "m", "--gpu", "g", "-o", str(tmp_path / "o")]) == 1
    assert "nope.csv: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["x.csv", "--format", "splitwise"])


def write_rows(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


SPLITWISE_HEADER = ["model", "hardware", "prompt_size", "batch_size", "token_size", "prompt_time", "token_time",
                    "e2e_time", "tensor_parallel"]


def test_reader_errors_name_file_line_column_value(tmp_path):
    good = ["llama2-70b", "h100-80gb", 512, 1, 128, 84.0, 37.0, 4800.0, 2]
    path = write_rows(tmp_path / "bad.csv", SPLITWISE_HEADER, [good, good[:5] + ["abc"] + good[6:]])
    with pytest.raises(CalibrationError, match=r"bad\.csv: line 3, column 'prompt_time'.*'abc'"):
        read_splitwise(path, "llama2-70b", "h100-80gb", 2)
    path = write_rows(tmp_path / "short.csv", SPLITWISE_HEADER[:-2], [good[:-2]])
    with pytest.raises(CalibrationError, match=r"short\.csv: missing column.*tensor_parallel, e2e_time"):
        read_splitwise(path, "llama2-70b", "h100-80gb", 2)
    path = write_rows(tmp_path / "one.csv", SPLITWISE_HEADER, [good])
    with pytest.raises(CalibrationError, match=r"no rows for model=llama2-70b, hardware=h100-80gb, "
                                               r"tensor_parallel=4; present: .*tensor_parallel=2"):
        read_splitwise(path, "llama2-70b", "h100-80gb", 4)
    with pytest.raises(CalibrationError, match="at least 4 distinct steps"):
        calibrate(read_splitwise(path, "llama2-70b", "h100-80gb", 2), model="m", gpu="g", tp=2)


def test_vidur_reader():
    path = dataset("vidur-h100-llama2-7b-mlp")
    obs = read_vidur_mlp(path, "llama2-7b", "h100-80gb", 1)
    assert obs.x[:, 1].max() == 4096 and obs.x[:, 2].max() == 1024  # max_context, max_num_seqs
    one = obs.x[:, 1] == 1
    # 32 layers x ~0.18 ms of operators + 3 ms overhead for a 1-token prefill.
    assert 8e-3 < obs.seconds[one][0] < 10e-3
    with pytest.raises(CalibrationError, match="column 'n_kv_head'.*llama3-8b"):
        read_vidur_mlp(path, "llama3-8b", "h100-80gb", 1)
    with pytest.raises(CalibrationError, match="num_tensor_parallel_workers=3; present: .*=1"):
        read_vidur_mlp(path, "llama2-7b", "h100-80gb", 3)
