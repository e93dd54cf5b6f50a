"""tailgym's engine against vLLM 0.33.0's own scheduler, step for step.

Each scenario runs the same requests through ``tailgym.simulate(..., record_batches=True)`` and
through vLLM's ``Scheduler``/``AsyncScheduler`` (``vllm_driver.py`` in its own virtual
environment, fake model outputs), with a step-time profile that gives both the same clock
(10 ms + 0.2 ms per scheduled token). Every step must schedule the same requests with the same
token counts and preempt the same requests; every first token and finish must fall at the same
time; the preemption counts must be equal.
"""
import json

import numpy as np
import pytest

import tailgym
from tailgym.hardware import FEATURES, PROFILE_FORMAT
from tailgym.sim import prepare

from reference import run_vllm_many

CONST_S, PER_TOKEN_S = 0.010, 0.0002
FLAGS_OFF = dict(async_scheduling=False, enable_prefix_caching=False,
                 scheduler_reserve_full_isl=False)
AZURE = "azure-conv:n=400"
SCENARIOS = {
    "ample-kv": dict(workload=AZURE, kv_blocks=20000, max_num_batched_tokens=2048,
                     max_num_seqs=128),
    "tight-kv": dict(workload=AZURE, kv_blocks=1000, max_num_batched_tokens=2048,
                     max_num_seqs=128),
    "tight-kv-features-off": dict(workload=AZURE, kv_blocks=1000, max_num_batched_tokens=2048,
                                  max_num_seqs=128, **FLAGS_OFF),
    "small-budget-chunked": dict(workload=AZURE, kv_blocks=800, max_num_batched_tokens=256,
                                 max_num_seqs=128, long_prefill_token_threshold=128),
    "16-seats": dict(workload=AZURE, kv_blocks=20000, max_num_batched_tokens=2048,
                     max_num_seqs=16),
    # integer priorities: work counted in output tokens (vLLM's priority is an int)
    "priority-tight-kv": dict(workload=AZURE, policy="sjf-oracle", kv_blocks=1000,
                              policy_args={"alpha_p": 0.0, "alpha_d": 1.0},
                              max_num_batched_tokens=2048, max_num_seqs=128),
    "mooncake-prefix": dict(workload="mooncake-conv:n=120", kv_blocks=12000,
                            max_num_batched_tokens=2048, max_num_seqs=64),
}
MAX_MODEL_LEN = 131072


def clock_profile(path):
    """A profile whose step time is 10 ms + 0.2 ms per scheduled token."""
    coef = dict(zip(FEATURES, [0.0] * len(FEATURES)),
                const=CONST_S, prefill_tokens=PER_TOKEN_S, decode_seqs=PER_TOKEN_S)
    path.write_text(json.dumps({"format": PROFILE_FORMAT, "name": "vllm-diff-clock",
                                "model": "llama3-8b", "gpu": "h100-80gb", "tp": 1,
                                "features": list(FEATURES),
                                "compute": [coef[f] for f in FEATURES],
                                "memory": [0.0] * len(FEATURES),
                                "source": "10 ms + 0.2 ms per scheduled token"}))
    return str(path)


def prepare_both(name, profile):
    """tailgym's report and the driver's scenario for scenario ``name``."""
    knobs = dict(SCENARIOS[name])
    workload, policy = knobs.pop("workload"), knobs.pop("policy", "fcfs")
    knobs.update(profile=profile, max_model_len=MAX_MODEL_LEN)
    run = prepare(workload, policy, **knobs)
    assert not run.rejected, "every request must enter both engines"
    report = tailgym.simulate(run.workload, policy, record_batches=True, check=True, **knobs)
    cfg, st = run.config, run.state
    requests = [{"arrival": float(a), "prompt_tokens": int(p), "output_tokens": int(o),
                 "priority": int(o) if policy == "sjf-oracle" else 0,
                 "block_keys": st.keys[st.key_off[i]:st.key_off[i + 1]].tolist()}
                for i, (a, p, o) in enumerate(zip(run.workload.arrival_s,
                                                  run.workload.prompt_tokens,
                                                  run.workload.output_tokens))]
    scenario = {"block_size": cfg.block_size, "num_gpu_blocks": cfg.num_gpu_blocks,
                "max_num_batched_tokens": cfg.max_num_batched_tokens,
                "max_num_seqs": cfg.max_num_seqs, "max_model_len": cfg.max_model_len,
                "long_prefill_token_threshold": cfg.long_prefill_token_threshold,
                "enable_chunked_prefill": cfg.enable_chunked_prefill,
                "policy": "priority" if policy == "sjf-oracle" else "fcfs",
                "async_scheduling": cfg.async_scheduling,
                "enable_prefix_caching": cfg.enable_prefix_caching,
                "scheduler_reserve_full_isl": cfg.scheduler_reserve_full_isl,
                "watermark": 0.0, "step_time": {"const": CONST_S, "per_token": PER_TOKEN_S},
                "requests": requests}
    return report, scenario


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every scenario through both engines (vLLM imported once for all of them)."""
    profile = clock_profile(tmp_path_factory.mktemp("clock") / "clock.json")
    prepared = {name: prepare_both(name, profile) for name in SCENARIOS}
    refs = run_vllm_many([scenario for _, scenario in prepared.values()], timeout=1800)
    return {name: (report, ref) for (name, (report, _)), ref in zip(prepared.items(), refs)}


def first_difference(ours, theirs):
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if a["batch"] != b["batch"] or sorted(a["preempted"]) != sorted(b["preempted"]):
            return k
    return min(len(ours), len(theirs)) if len(ours) != len(theirs) else None


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_step_equals_vllms(name, runs):
    report, ref = runs[name]
    ours, theirs = report.batches, ref["steps"]
    k = first_difference(ours, theirs)
    assert k is None, (f"{name}: first differing step {k} of {len(ours)} (vLLM {len(theirs)}):\n"
                       f"  tailgym {ours[k] if k < len(ours) else None}\n"
                       f"  vLLM    {theirs[k] if k < len(theirs) else None}")
    np.testing.assert_allclose([s["t_end"] for s in ours], [s["t_end"] for s in theirs],
                               rtol=0, atol=1e-6)
    assert report.summary()["preemptions"] == ref["preemptions"]
    assert sum(len(s["preempted"]) for s in ours) > 0 or "tight" not in name
    req = report.requests
    np.testing.assert_allclose(req["first_token"], [r["first_token_time"] for r in ref["requests"]],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(req["completion"], [r["finish_time"] for r in ref["requests"]],
                               rtol=0, atol=1e-6)
    if SCENARIOS[name].get("enable_prefix_caching", True):
        assert req["cached_tokens"].tolist() == [r["num_cached_tokens"] for r in ref["requests"]]
