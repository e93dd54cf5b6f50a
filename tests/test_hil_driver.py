"""The real-engine mode on the CPU with a tiny model: same decisions, same accounting."""
import numpy as np
import pytest

from tailgym.engine import layout as L
from tailgym.engine.cost import batch_features
from tailgym.engine.step import (PLAN_AGAIN, PLAN_DONE, begin_step, complete_batch,
                                 enqueue_batch, form_batch, has_requests)
from tailgym.hil.driver import run_hil
from tailgym.hil.model import model_spec
from tailgym.sim import prepare
from tailgym.workload import Workload

RNG = np.random.default_rng(0)
# every request queued at t=0: the evictions the tight cache forces then do not depend on how
# fast this machine runs the real steps (spread arrivals finish early on an idle machine)
WORKLOAD = Workload(np.zeros(24), RNG.integers(20, 200, 24), RNG.integers(5, 60, 24),
                    name="small")


def replay(run, dts):
    """Step the simulator core with the measured step times; return its feature rows."""
    st = run.state
    cfg_i, cfg_f = run.config.arrays(run.spec, run.params)
    rows = []
    while True:
        status = begin_step(st.rf, st.ri, st.hint, st.queues, st.s, st.t, cfg_i, cfg_f,
                            run.params, st.pstate, st.kv, np.inf)
        if status == PLAN_AGAIN:
            continue
        if status == PLAN_DONE:
            return np.array(rows)
        if has_requests(st.s):
            form_batch(st.rf, st.ri, st.target, st.queues, st.batch, st.s, cfg_i, cfg_f,
                       run.steps.coef(), st.kv, st.t[L.T_NOW])
            nb = int(st.s[L.S_BATCH])
            dt = 0.0
            if nb:
                rows.append(batch_features(st.batch, nb))
                dt = dts[len(rows) - 1]
            if not enqueue_batch(st.s, st.t, cfg_i, dt):
                continue
        complete_batch(st.rf, st.ri, st.target, st.hint, st.queues, st.batches, st.s, st.t,
                       cfg_i, run.params, st.pstate, st.kv)


@pytest.mark.parametrize("policy,mode,args", [("fcfs", "recompute", None),
                                              ("fcfs", "swap", None),
                                              ("uniboost", "swap", {"cost_aware": 0, "k": 0})])
def test_hil_batches_equal_the_simulators_for_the_same_step_times(policy, mode, args):
    knobs = dict(kv_blocks=40, max_num_batched_tokens=256, max_num_seqs=8, preemption_mode=mode,
                 swap_space_gib=0.0001, policy_args=args)
    report, log = run_hil(WORKLOAD, policy, model="tiny", device="cpu", **knobs)
    s = report.summary()
    assert s["requests_completed"] + s["requests_rejected"] == 24
    assert s["preemptions"] > 0                      # the tight cache forces evictions
    assert (s["preemptions_swap"] > 0) == (mode == "swap")  # and swaps move real KV blocks
    assert (log[:, -1] > 0).all() and len(log) == s["steps"]
    sim = prepare(WORKLOAD, policy, model=model_spec("tiny"), **knobs)
    features = replay(sim, log[:, -1])
    np.testing.assert_array_equal(features, log[:, :-1])
    assert np.array_equal(sim.state.rf[:, L.DONE], report.requests["completion"], equal_nan=True)


def test_hil_report_matches_the_cli_keys(tmp_path):
    from tailgym.cli import main
    out = tmp_path / "hil.json"
    assert main(["hil", "run", "--workload", "azure-conv", "--limit", "6", "--kv-blocks", "400",
                 "--max-num-batched-tokens", "512", "--json", str(out)]) == 0
    import json
    s = json.loads(out.read_text())
    assert s["requests_in"] == 6 and set(s["ttlt"]) >= {"p50", "p99"}
    assert s["config"]["device"] == "cpu"
