"""Command-line knobs reach the engine (checked on the batches it ran, not on exit codes), and
an unknown policy name is a one-line error."""
import pytest
from test_cli import _one_line_error

from tailgym import sim
from tailgym.cli import main

BUSY = ["run", "--workload", "default:n=40", "--rate", "200", "-q"]  # a queue builds up


def _run_recording(monkeypatch, argv):
    """Run ``tailgym run argv`` with batch recording on; return the report it printed."""
    reports = []
    simulate = sim.simulate

    def recording(*args, **kwargs):
        reports.append(simulate(*args, record_batches=True, **kwargs))
        return reports[-1]
    monkeypatch.setattr(sim, "simulate", recording)
    assert main(argv) == 0
    (report,) = reports
    return report


def test_max_num_seqs_flag_caps_every_batch_and_is_reached(monkeypatch):
    """``--max-num-seqs 3``: no step runs more than 3 requests, and some step runs 3."""
    report = _run_recording(monkeypatch, [*BUSY, "--max-num-seqs", "3"])
    sizes = [len(b["batch"]) for b in report.batches]
    assert max(sizes) == 3 and report.config["max_num_seqs"] == 3


def test_token_budget_flag_caps_every_batch_and_is_reached(monkeypatch):
    """``--max-num-batched-tokens 64``: every step schedules at most 64 tokens; some, 64."""
    report = _run_recording(monkeypatch, [*BUSY, "--max-num-batched-tokens", "64"])
    tokens = [sum(n for _, n in b["batch"]) for b in report.batches]
    assert max(tokens) == 64


@pytest.mark.parametrize("flags, key, value", [
    (["--kv-blocks", "1000"], "num_gpu_blocks", 1000),
    (["--no-async-scheduling"], "async_scheduling", False),
    (["--no-enable-prefix-caching"], "enable_prefix_caching", False),
    (["--no-scheduler-reserve-full-isl"], "scheduler_reserve_full_isl", False),
    (["--preemption-mode", "swap"], "preemption_mode", "swap"),
    (["--long-prefill-token-threshold", "32"], "long_prefill_token_threshold", 32),
])
def test_engine_flags_reach_the_engine_config(monkeypatch, flags, key, value):
    """Each flag lands in the ``EngineConfig`` the run used (the default differs)."""
    report = _run_recording(monkeypatch, [*BUSY, *flags])
    assert report.config[key] == value


def test_policy_args_reach_the_engine(monkeypatch):
    """``--policy las --policy-arg k=8``: the knob is in the run's policy arguments and the
    engine ran LAS (preemptive: a waiting request can evict a running one)."""
    report = _run_recording(monkeypatch, [*BUSY, "--policy", "las", "--policy-arg", "k=8",
                                          "--max-num-seqs", "2"])
    assert report.config["policy"] == "las" and report.config["policy_args"]["k"] == 8.0
    assert report.summary()["preemptions"] > 0


def test_unknown_policy_listing_is_a_one_line_error(capsys):
    """``tailgym policies nope`` exits 2 with one line naming the policies to choose from."""
    _one_line_error(capsys, ["policies", "nope"], 2, "unknown policy 'nope'", "fcfs")
