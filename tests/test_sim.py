"""The simulate() API: inputs, rate control, admission, accounting, determinism."""
import json

import numpy as np
import pytest

import tailgym
from tailgym.sim import build_engine, simulate
from tailgym.workload import Workload, WorkloadError, load_workload

SMALL = "azure-conv:n=400"


def test_summary_has_the_documented_keys():
    s = simulate(SMALL, model="llama2-7b").summary()
    for key in ("requests_in", "requests_completed", "requests_rejected", "ttft", "tbt", "ttlt",
                "preemptions", "simulated_seconds", "wall_seconds"):
        assert key in s
    for key in ("ttft", "tbt", "ttlt"):
        assert set(s[key]) >= {"mean", "p50", "p90", "p95", "p99"}
    assert s["requests_in"] == 400 and s["requests_completed"] + s["requests_rejected"] == 400
    json.dumps(s)  # plain JSON


def test_exported_at_package_level():
    assert tailgym.simulate is simulate


def test_same_seed_same_bytes_and_workload_forms_agree(tmp_path):
    a = simulate("default:n=300", seed=3, load=0.8)
    b = simulate("default:n=300", seed=3, load=0.8)
    for key, arr in a.requests.items():
        assert arr.tobytes() == b.requests[key].tobytes(), key
    c = simulate("default:n=300", seed=4, load=0.8)
    assert c.requests["arrival"].tobytes() != a.requests["arrival"].tobytes()
    wl = load_workload(SMALL)
    path = tmp_path / "w.csv"
    rows = "\n".join(f"{float(t)!r},{p},{o}" for t, p, o in zip(wl.arrival_s, wl.prompt_tokens, wl.output_tokens))
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + rows + "\n")
    by_name, by_obj, by_csv = (simulate(w, model="llama2-7b").requests["completion"]
                               for w in (SMALL, wl, str(path)))
    assert by_name.tobytes() == by_obj.tobytes() == by_csv.tobytes()


def test_rate_controls():
    wl = load_workload(SMALL)
    r = simulate(wl, rate=2.0).summary()["config"]
    assert r["rate_rps"] == pytest.approx(2.0)
    r = simulate(wl, rate_scale=3.0).summary()["config"]
    assert r["rate_rps"] == pytest.approx(3.0 * wl.mean_rate)
    with pytest.raises(ValueError, match="at most one"):
        simulate(wl, rate=1.0, load=0.5)


def test_load_is_a_fraction_of_measured_saturation():
    low = simulate(SMALL, load=0.3).summary()
    high = simulate(SMALL, load=1.5).summary()
    sat = low["config"]["saturation_rps"]
    assert high["config"]["saturation_rps"] == sat  # cached, same engine and lengths
    assert low["config"]["rate_rps"] == pytest.approx(0.3 * sat)
    # past saturation queues build up: tails must be far worse than at light load
    assert high["ttft"]["p99"] > 5 * low["ttft"]["p99"]
    assert high["throughput_rps"] < 1.1 * sat


def test_requests_longer_than_max_model_len_are_rejected_with_reasons():
    rep = simulate("azure-conv:n=2000", model="llama2-7b")
    s = rep.summary()
    wl = load_workload("azure-conv:n=2000")
    too_long = int(((wl.prompt_tokens + wl.output_tokens) > 4096).sum())
    assert too_long > 0 and s["requests_rejected"] == too_long
    assert s["requests_completed"] == 2000 - too_long
    first = s["rejected"][0]
    assert "max_model_len (4096)" in first["reason"] and first["row"] >= 2
    assert not rep.requests["finished"][rep.requests["rejected"]].any()


def test_request_that_can_never_fit_the_kv_cache():
    wl = Workload(np.array([0.0, 1.0]), np.array([100, 3000]), np.array([10, 10]), name="tiny.csv",
                  source_rows=np.array([2, 3]))
    with pytest.raises(WorkloadError, match=r"tiny.csv, row 3: prompt_tokens=3000.*never fit"):
        simulate(wl, kv_blocks=50)
    rep = simulate(wl, kv_blocks=50, on_unfit="reject").summary()
    assert rep["requests_completed"] == 1 and rep["rejected"][0]["row"] == 3


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_memory_pressure_preempts_and_conserves_blocks(mode):
    rep = simulate("azure-conv:n=600", model="llama2-7b", kv_blocks=600, rate_scale=4.0,
                   preemption_mode=mode, check=True, record_steps=True)
    s = rep.summary()
    assert s["requests_completed"] == 600 - s["requests_rejected"]
    assert s["preemptions"] > 0
    if mode == "swap":
        assert s["preemptions_swap"] > 0 and s["swapped_tokens"] > 0
    else:
        assert s["preemptions_swap"] == 0 and s["recomputed_tokens"] > 0
    log = rep.step_log
    from tailgym.engine import layout as L
    assert (log[:, L.L_FREE] + log[:, L.L_HELD] == 599).all()  # block 0 is reserved


def test_engine_defaults_follow_vllm_for_the_gpu():
    cfg, _ = build_engine("llama3-8b", "h100-80gb")
    assert (cfg.max_num_batched_tokens, cfg.max_num_seqs, cfg.block_size) == (8192, 1024, 16)
    cfg, _ = build_engine("llama3-8b", "a100-80gb")
    assert (cfg.max_num_batched_tokens, cfg.max_num_seqs) == (2048, 256)
    cfg, _ = build_engine("llama2-7b", "h100-80gb", kv_blocks=123)
    assert cfg.num_gpu_blocks == 123


def test_unknown_policy_and_knob_errors():
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        simulate(SMALL, "nope")
    with pytest.raises(ValueError, match="no knob 'gamma'"):
        simulate(SMALL, "fcfs", policy_args={"gamma": 1.0})


def test_profile_changes_step_times():
    names = tailgym.hardware.list_profiles()
    name = next(n for n in names if "llama2-7b" in n)
    a = simulate(SMALL, model="llama2-7b").summary()
    b = simulate(SMALL, model="llama2-7b", profile=name).summary()
    assert b["config"]["step_model"] != a["config"]["step_model"]
    assert b["ttlt"]["mean"] != a["ttlt"]["mean"]


def test_jit_compile_is_cached_across_processes():
    """A fresh interpreter loads the engine from numba's disk cache instead of compiling."""
    import subprocess
    import sys
    simulate("default:n=30", "fcfs")  # make sure this process compiled (and cached) it
    code = ("import tailgym\n"
            "from tailgym.engine.step import run_engine\n"
            "tailgym.simulate('default:n=30', 'fcfs')\n"
            "st = run_engine.stats\n"
            "print(sum(st.cache_hits.values()), sum(st.cache_misses.values()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    hits, misses = map(int, out.stdout.split())
    assert hits >= 1 and misses == 0
