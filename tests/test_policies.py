"""Policy suite: the uniboost spec's checks (section 3.8), knowledge enforcement, baselines."""
import numpy as np
import pytest
from engine_helpers import linear_coef, simulate_arrays
from hypothesis import given, settings
from hypothesis import strategies as st

import tailgym
from tailgym.engine import layout as L
from tailgym.policies import POLICIES, get_policy
from tailgym.policies.boost import b_gamma
from tailgym.policies.registry import rank_scores, work_units
from tailgym.policies.uniboost import memguard, uniboost_priority

COEF = linear_coef(const=0.01, prefill=1e-4, decode=1e-3, context=1e-7)
ENGINE = dict(max_num_batched_tokens=4096, max_num_seqs=4, num_gpu_blocks=5000)
FIXED = {"gamma_mode": "fixed"}


def first_order(state):
    return list(np.argsort(state.rf[:, L.FIRST_SCHED], kind="stable"))


def burst(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return np.zeros(n), rng.integers(20, 2000, n), rng.integers(5, 300, n)


def test_gamma_huge_is_exactly_fcfs():
    # no admission headroom and a KV cache that never fills: only the order can differ
    args = dict(FIXED, gamma=1e12, reserve=0.0)
    rep = {p: tailgym.simulate("azure-conv:n=1500", p, model="llama3-8b", load=1.1,
                               kv_blocks=10**6,
                               policy_args=None if p == "fcfs" else args)
           for p in ("fcfs", "uniboost")}
    assert rep["fcfs"].summary()["ttft"]["p99"] > 0.5  # queues do form
    assert rep["fcfs"].preemptions_recompute == rep["uniboost"].preemptions_recompute == 0
    for key in ("first_scheduled", "first_token", "completion"):
        assert rep["fcfs"].requests[key].tobytes() == rep["uniboost"].requests[key].tobytes()


def test_gamma_tiny_is_exactly_sjf_on_known_work():
    arrival, prompt, output = burst()
    state, _ = simulate_arrays(arrival, prompt, output, COEF, "uniboost",
                               dict(FIXED, gamma=1e-9, variant="base"),
                               **dict(ENGINE, max_num_seqs=1))
    assert first_order(state) == list(np.argsort(prompt, kind="stable"))


def test_equal_work_keeps_fcfs_order():
    n = 10
    arrival = np.arange(n) * 1e-3
    for variant in ("full", "base"):
        state, _ = simulate_arrays(arrival, np.full(n, 500), np.full(n, 50), COEF, "uniboost",
                                   dict(FIXED, gamma=3.0, variant=variant),
                                   **dict(ENGINE, max_num_seqs=2))
        assert first_order(state) == list(range(n))


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-3, 1e3), st.floats(16, 4096), st.floats(0, 100), st.floats(0, 100),
       st.integers(1, 20000), st.integers(1, 20000), st.integers(0, 20000), st.integers(0, 20000),
       st.sampled_from(["decode", "work"]))
def test_anti_starvation_bound(gamma, k, a_i, gap, p_i, p_j, d_i, d_j, memguard):
    """A request that has waited longer than b_max is never ordered behind a later arrival,
    whatever both requests' work: b_max = b_gamma(k_w) when MemGuard quantises the whole
    work, b_gamma(alpha_p) (a one-token prompt) when it quantises decode progress only."""
    params = get_policy("uniboost").param_array(dict(FIXED, gamma=gamma, k=k, alpha_p=1e-4,
                                                      alpha_d=2e-4, memguard=memguard))
    b_max = b_gamma(gamma, 2e-4 * k if memguard == "work" else 1e-4)
    if not np.isfinite(b_max) or b_max > 1e6:
        return
    rf = np.zeros((2, L.RF_COLS))
    ri = np.zeros((2, L.RI_COLS), dtype=np.int64)
    rf[0, L.ARRIVAL], rf[1, L.ARRIVAL] = a_i, a_i + b_max * (1 + 1e-9) + gap
    ri[:, L.PROMPT] = p_i, p_j
    ri[:, L.GENERATED] = d_i, d_j
    pstate = get_policy("uniboost").pstate({"gamma": gamma})
    phi = [uniboost_priority(params, pstate, rf, ri, i) for i in (0, 1)]
    assert phi[0] <= phi[1]


def test_memguard_bounds_priority_changes():
    arrival, prompt, output = burst(40, seed=3)
    output = np.maximum(output * 10, 1)
    k = 64
    state, _ = simulate_arrays(arrival, prompt // 20 + 1, output, COEF, "uniboost",
                               dict(FIXED, gamma=2.0, k=k), **dict(ENGINE, max_num_seqs=8))
    bound = 1 + np.floor(np.log2(np.maximum(output, k) / k))
    changes = state.ri[:, L.PRIO_CHANGES]
    assert (changes <= bound).all() and changes.sum() > 0
    assert memguard(5.0, 1.0) == 4.0 and memguard(0.3, 1.0) == 1.0


def _guard_scenario(k, delta=0.0, gamma=1e-6):
    # A's 90-token prompt fills all 6 blocks; B, much smaller, arrives while A decodes
    coef = linear_coef(const=0.01, prefill=1e-4, decode=1e-3)
    return simulate_arrays([0.0, 0.03], [90, 4], [6, 2], coef, "uniboost",
                           dict(FIXED, gamma=gamma, k=k, delta=delta, reserve=0.0),
                           max_num_batched_tokens=512, max_num_seqs=4, usable_blocks=6,
                           block_size=16)


def test_no_eviction_before_the_guard():
    guarded, _ = _guard_scenario(k=256)
    assert guarded.ri[0, L.N_PREEMPT] == 0 and guarded.s[L.S_GUARD_OVERRIDES] == 0
    assert guarded.rf[1, L.FIRST_SCHED] >= guarded.rf[0, L.DONE]  # B waited for A
    unguarded, _ = _guard_scenario(k=0)
    assert unguarded.ri[0, L.N_PREEMPT] >= 1                     # without the guard A is evicted
    assert unguarded.rf[1, L.DONE] < unguarded.rf[0, L.DONE]


def test_no_preemption_without_the_hysteresis_margin():
    evicts, _ = _guard_scenario(k=0, delta=0.0)
    assert evicts.ri[0, L.N_PREEMPT] >= 1
    spared, _ = _guard_scenario(k=0, delta=1e9)
    assert spared.ri[0, L.N_PREEMPT] == 0


PREDICTION_FREE = [n for n, p in POLICIES.items() if not p.reads_output_length]


def test_only_oracle_predicted_and_ltr_policies_read_output_lengths():
    assert set(PREDICTION_FREE) == {"fcfs", "las", "mlfq", "uniboost", "uniboost-dist",
                                   "gittins-tail"}
    for name in PREDICTION_FREE:
        hint = get_policy(name).hint(np.array([5, 50]), get_policy(name).knobs(),
                                     np.random.default_rng(0))
        assert np.isnan(hint).all()


@pytest.mark.parametrize("policy", PREDICTION_FREE + ["sjf-oracle"])
def test_schedule_ignores_unrevealed_output_lengths(policy):
    """Lengthening one request's output must not change any decision taken before that
    request would have finished; an oracle policy fails this check."""
    arrival, prompt, output = burst(30, seed=5)
    arrival = np.sort(np.random.default_rng(1).uniform(0, 0.5, 30))
    args = dict(FIXED, gamma=2.0) if policy.startswith("uniboost") else None
    j = 7
    longer = output.copy()
    longer[j] += 5000
    a, _ = simulate_arrays(arrival, prompt, output, COEF, policy, args, **ENGINE)
    b, _ = simulate_arrays(arrival, prompt, longer, COEF, policy, args, **ENGINE)
    cut = a.rf[j, L.DONE]
    same = True
    for col in (L.FIRST_SCHED, L.FIRST_TOKEN, L.DONE):
        before_cut = a.rf[:, col] < cut
        same &= np.array_equal(a.rf[before_cut, col], b.rf[before_cut, col])
    assert same == (policy != "sjf-oracle")


def test_rank_scores_reach_the_requested_kendall_tau():
    rng = np.random.default_rng(0)
    truth = rng.lognormal(5, 1, 600)
    for tau in (0.3, 0.8):
        score = rank_scores(truth, tau, np.random.default_rng(1))
        s = np.sign(np.subtract.outer(score, score)) * np.sign(np.subtract.outer(truth, truth))
        measured = s[np.triu_indices(truth.size, 1)].mean()
        assert measured == pytest.approx(tau, abs=0.05)


def test_predicted_lengths_have_the_requested_error():
    out = np.full(20000, 100.0)
    hint = get_policy("srpt-predicted").hint(out, {"sigma": 0.5}, np.random.default_rng(0))
    assert np.std(np.log(hint / out)) == pytest.approx(0.5, rel=0.05)


def test_sjf_oracle_admits_shortest_jobs_first():
    arrival, prompt, output = burst()
    state, _ = simulate_arrays(arrival, np.full(12, 100), output, COEF, "sjf-oracle",
                               **dict(ENGINE, max_num_seqs=1))
    assert first_order(state) == list(np.argsort(output, kind="stable"))


def test_srpt_preempts_for_a_shorter_arrival():
    state, _ = simulate_arrays([0.0, 0.2], [100, 100], [400, 5], COEF, "srpt-oracle",
                               **dict(ENGINE, max_num_seqs=1))
    assert state.ri[0, L.N_PREEMPT] == 1 and state.rf[1, L.DONE] < state.rf[0, L.DONE]
    fcfs, _ = simulate_arrays([0.0, 0.2], [100, 100], [400, 5], COEF, "fcfs",
                              **dict(ENGINE, max_num_seqs=1))
    assert fcfs.rf[1, L.DONE] > fcfs.rf[0, L.DONE]


def test_mlfq_levels_skip_join_and_demote():
    from tailgym.policies.attained import mlfq_priority
    params = get_policy("mlfq").param_array(dict(alpha_p=1e-3, alpha_d=1e-2, q0=0.1, levels=8))
    rf = np.zeros((1, L.RF_COLS))
    ri = np.zeros((1, L.RI_COLS), dtype=np.int64)
    ri[0, L.PROMPT] = 50                       # 0.05 s of prompt work: joins level 0
    assert mlfq_priority(params, rf, ri, 0, 0.0) == 0
    ri[0, L.PROMPT] = 350                      # 0.35 s: skips to level 2 (0.4 s quantum)
    assert mlfq_priority(params, rf, ri, 0, 0.0) == 2
    ri[0, L.GENERATED] = 40                    # 0.4 s of decode exhausts level 2
    assert mlfq_priority(params, rf, ri, 0, 1e9) == 3  # no starvation promotion by default


def test_mlfq_promotes_a_request_not_served_for_starve_s():
    from tailgym.policies.attained import PROMOTED, mlfq_priority
    params = get_policy("mlfq").param_array(dict(alpha_p=1e-3, alpha_d=1e-2, q0=0.1,
                                                 starve_s=5.0))
    rf = np.zeros((1, L.RF_COLS))
    ri = np.zeros((1, L.RI_COLS), dtype=np.int64)
    ri[0, L.PROMPT], ri[0, L.GENERATED], ri[0, L.STATUS] = 350, 40, L.ST_WAITING
    rf[0, L.ARRIVAL], rf[0, L.LAST_TOKEN] = 0.0, 10.0   # last served at 10 s, not at arrival
    assert mlfq_priority(params, rf, ri, 0, 14.9) == 3
    assert mlfq_priority(params, rf, ri, 0, 15.1) == PROMOTED
    ri[0, L.STATUS] = L.ST_RUNNING
    assert mlfq_priority(params, rf, ri, 0, 15.1) == 3


def test_mlfq_starvation_promotion_serves_a_starved_long_request():
    """One long request behind a stream of short ones on one seat: plain MLFQ serves it
    last; with FastServe's protections (promotion, then a minimum run) it finishes while the
    stream still arrives."""
    n = 60
    arrival = 0.05 * np.arange(n)
    output = np.full(n, 4)
    output[0] = 400
    runs = {s: simulate_arrays(arrival, np.full(n, 20), output, COEF, "mlfq",
                               dict(q0=0.001, starve_s=s, k=k), **dict(ENGINE, max_num_seqs=1))[0]
            for s, k in ((0.0, 0.0), (0.3, 50.0))}
    assert runs[0.0].rf[0, L.DONE] > runs[0.0].rf[1:, L.DONE].max()       # starved
    assert runs[0.3].rf[0, L.DONE] < runs[0.3].rf[1:, L.DONE].max()


def test_ltr_promotes_starving_requests():
    arrival = 0.01 * np.arange(40)
    output = np.full(40, 5)
    output[1] = 2000                           # ranked last by a perfect ranker
    state, _ = simulate_arrays(arrival, np.full(40, 50), output, COEF, "ltr",
                               dict(tau=1.0, starvation_s=0.2), **dict(ENGINE, max_num_seqs=1))
    strict, _ = simulate_arrays(arrival, np.full(40, 50), output, COEF, "ltr",
                                dict(tau=1.0, starvation_s=1e9), **dict(ENGINE, max_num_seqs=1))
    assert state.rf[1, L.FIRST_SCHED] < strict.rf[1, L.FIRST_SCHED]
    assert strict.rf[1, L.FIRST_SCHED] > strict.rf[2:, L.FIRST_SCHED].max()  # starved


def test_auto_gamma_follows_the_lundberg_root():
    from tailgym.policies import online
    rng = np.random.default_rng(0)
    sizes = rng.exponential(1.0, 5000)
    lam = 0.5                                   # M/M/1 at rho 0.5: root = mu - lam = 0.5
    g = online.lundberg_gamma(sizes / sizes.mean(), lam, 1e-3, 1e-3)
    assert g == pytest.approx(0.5, rel=0.05)
    assert online.lundberg_gamma(sizes / sizes.mean(), lam, 0.7, 1e-3) == 0.7  # clamped
    assert online.lundberg_gamma(sizes, 1.5, 0.01, 1e-3) == 0.01  # overload -> gamma_min
    assert online.hill_index(sizes) > 2.0
    pareto = (1.0 + rng.pareto(1.2, 5000)) * 0.1               # tail index 1.2, mean 0.6
    assert online.hill_index(pareto) == pytest.approx(1.2, rel=0.2)
    assert online.lundberg_gamma(pareto, 0.5, 0.01, 1e-3) == 1e-3  # heavy tail -> gamma_heavy


def test_work_units_from_step_model():
    alpha_p, alpha_d = work_units(linear_coef(const=0.01, prefill=1e-4, decode=1e-3), batch=10)
    assert alpha_p == pytest.approx(1e-4 + 0.01 / 2048)
    assert alpha_d == pytest.approx(1e-3 + 0.001)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_finishes_a_trace_under_memory_pressure(policy):
    s = tailgym.simulate("azure-code:n=500", policy, model="llama3-8b", kv_blocks=1200,
                         load=0.9, preemption_mode="swap", check=True).summary()
    assert s["requests_completed"] + s["requests_rejected"] == 500


def test_policy_knob_errors():
    with pytest.raises(ValueError, match="gamma_mode.*fixed, auto, ada"):
        tailgym.simulate("default:n=20", "uniboost", policy_args={"gamma_mode": "sometimes"})
    with pytest.raises(ValueError, match="needs a number"):
        tailgym.simulate("default:n=20", "uniboost", policy_args={"k": "big"})
