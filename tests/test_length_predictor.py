"""External length hints in prepare/simulate, and the learned length predictor baseline."""
import numpy as np
import pytest
import torch

from baselines.length_predictor import (
    CHECKPOINT,
    features,
    load_predictor,
    predict,
    save_predictor,
    time_split,
    train,
)
from tailgym.sim import prepare, simulate
from tailgym.workload import load_workload

SYNTH = "default:n=300"


@pytest.fixture(scope="module")
def conv():
    return load_workload("azure-conv:n=4000")


@pytest.mark.parametrize("bad, message", [
    (np.ones(299), r"hint has shape \(299,\); expected \(300,\)"),
    (np.ones((300, 1)), r"hint has shape \(300, 1\); expected \(300,\)"),
    (np.r_[np.ones(7), np.nan, np.ones(292)], r"hint\[7\] = nan: .* finite and > 0 \(1 bad"),
    (np.r_[np.ones(3), 0.0, -1.0, np.ones(295)], r"hint\[3\] = 0.0: .* \(2 bad values\)"),
    (np.r_[np.inf, np.ones(299)], r"hint\[0\] = inf"),
])
def test_bad_hints_are_rejected_with_the_bad_index(bad, message):
    with pytest.raises(ValueError, match=message):
        prepare(SYNTH, "srpt-predicted", hint=bad)


def test_hint_length_is_checked_after_rate_changes():
    with pytest.raises(ValueError, match=r"expected \(300,\)"):
        prepare(SYNTH, "sjf-oracle", hint=np.ones(301), rate=2.0)
    prepare(SYNTH, "sjf-oracle", hint=np.ones(300), rate=2.0)


@pytest.mark.parametrize("policy", ["fcfs", "uniboost", "las"])
def test_prediction_free_policies_take_no_hint(policy):
    with pytest.raises(ValueError, match=f"policy '{policy}' does not read output lengths.*srpt-predicted"):
        simulate(SYNTH, policy, hint=np.ones(300))


def test_true_lengths_as_hint_reproduce_srpt_oracle_bit_for_bit():
    """Both policies use ``srpt_priority`` (it reads only alpha_p, alpha_d and the hint) and the
    same preemptive engine settings; the oracle's own hint is the true length as float64.
    Eight sequences at most, so that order matters and requests get preempted."""
    wl = load_workload(SYNTH)
    engine = {"load": 1.1, "max_num_seqs": 8}
    oracle = simulate(wl, "srpt-oracle", **engine)
    learned = simulate(wl, "srpt-predicted", hint=wl.output_tokens, **engine)
    assert oracle.preemptions_recompute > 0
    for key, arr in oracle.requests.items():
        assert arr.tobytes() == learned.requests[key].tobytes(), key
    assert learned.summary()["config"]["hint"] == "external"
    assert "hint" not in oracle.summary()["config"]
    noisy = simulate(wl, "srpt-predicted", **engine)  # its own lognormal draw: a different order
    assert noisy.requests["completion"].tobytes() != oracle.requests["completion"].tobytes()


def test_a_few_epochs_beat_the_constant_predictor_on_held_out_rows(conv):
    torch.set_num_threads(1)
    train_wl, test_wl = time_split(conv, 0.75)
    y_train, y_test = np.log(train_wl.output_tokens), np.log(test_wl.output_tokens)
    model = train(features(train_wl), y_train, epochs=15, batch_size=128, seed=0)
    mae_model = np.abs(np.log(predict(model, test_wl)) - y_test).mean()
    mae_constant = np.abs(np.median(y_train) - y_test).mean()
    assert mae_model < 0.9 * mae_constant


def test_predict_is_deterministic_positive_and_round_trips(conv, tmp_path):
    torch.set_num_threads(1)
    head = conv.head(500)
    a, b = (train(features(head), np.log(head.output_tokens), epochs=2, seed=3) for _ in range(2))
    pa = predict(a, conv)
    assert pa.shape == (len(conv),) and np.isfinite(pa).all() and (pa > 0).all()
    assert pa.tobytes() == predict(b, conv).tobytes() == predict(a, conv).tobytes()
    save_predictor(a, tmp_path / "m.pt", {"hidden": 64, "traces": ["azure-conv", "azure-code"]})
    assert predict(load_predictor(tmp_path / "m.pt"), conv).tobytes() == pa.tobytes()
    synthetic = load_workload(SYNTH)
    with pytest.raises(ValueError, match="pass trace="):
        predict(a, synthetic)
    assert predict(a, synthetic, trace="azure-code").shape == (300,)


def test_shipped_checkpoint_is_small_and_predicts():
    assert CHECKPOINT.stat().st_size < 1_000_000
    model = load_predictor()
    pred = predict(model, load_workload("azure-code:start=100,n=50"))
    assert pred.shape == (50,) and np.isfinite(pred).all() and (pred > 0).all()
