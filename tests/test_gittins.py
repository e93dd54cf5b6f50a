"""gittins-tail: the Gittins form of prediction-free gamma-Boost (tailgym/policies/gittins.py)."""
import numpy as np
import pytest
from engine_helpers import linear_coef, simulate_arrays

from tailgym.engine import layout as L
from tailgym.policies import get_policy, online
from tailgym.policies.boost import b_gamma
from tailgym.policies.gittins import build_quanta, gittins_next_change, gittins_priority
from tailgym.policies.uniboost import build_table, uniboost_dist_priority, uniboost_priority

ALPHA_P, ALPHA_D, K = 1e-4, 1e-3, 64


def tables(decodes, gamma):
    """Knobs and a policy state whose tables were built from completions of ``decodes``."""
    params = get_policy("gittins-tail").param_array(dict(
        gamma_mode="fixed", gamma=gamma, alpha_p=ALPHA_P, alpha_d=ALPHA_D, k=K))
    pstate = online.new_pstate(gamma)
    for d in decodes:
        online.record_completion(pstate, ALPHA_D * d, d, 1.0)
    build_table(params, pstate)
    build_quanta(params, pstate)
    return params, pstate


def request(arrival=10.0, prompt=0, computed=0, generated=0):
    rf = np.zeros((1, L.RF_COLS))
    ri = np.zeros((1, L.RI_COLS), dtype=np.int64)
    rf[0, L.ARRIVAL] = arrival
    ri[0, L.PROMPT], ri[0, L.COMPUTED], ri[0, L.GENERATED] = prompt, computed, generated
    return rf, ri


@pytest.mark.parametrize("gamma", [0.05, 1.0, 20.0])
def test_one_known_size_is_gamma_boost(gamma):
    """With every completion of the same length the size is known: the boost is b_gamma."""
    params, pstate = tables(np.full(300, 500), gamma)
    rf, ri = request(prompt=200, computed=50)
    work = ALPHA_P * 150 + ALPHA_D * 500
    assert gittins_priority(params, pstate, rf, ri, 0) == pytest.approx(
        10.0 - b_gamma(gamma, work), rel=1e-9)


def test_bimodal_short_mode_keeps_its_boost_until_it_passes():
    """Half the requests decode 100 tokens, half 10,000: a fresh request is boosted as the
    likely short job (the quantum b = 128 tokens), far more than the no-quantum form
    (uniboost-dist) gives it; once past the short mode it is a known long job."""
    gamma = 1.0
    params, pstate = tables(np.r_[np.full(300, 100), np.full(300, 10000)], gamma)
    rf, ri = request()
    gittins = 10.0 - gittins_priority(params, pstate, rf, ri, 0)
    dist = 10.0 - uniboost_dist_priority(params, pstate, rf, ri, 0)
    e_short = (np.exp(gamma * ALPHA_D * 100) + np.exp(gamma * ALPHA_D * 128)) / 2 - 1
    assert gittins == pytest.approx(np.log1p(0.5 / e_short) / gamma, rel=1e-9)
    assert gittins > 5 * dist
    ri[0, L.GENERATED] = 128
    assert 10.0 - gittins_priority(params, pstate, rf, ri, 0) == pytest.approx(
        b_gamma(gamma, ALPHA_D * (10000 - 128)), rel=1e-9)
    assert gittins_next_change(params, ri, 0) == 256


def test_falls_back_to_uniboost_until_the_table_fills():
    params, pstate = tables(np.full(online.MIN_SAMPLES // 10, 500), 1.0)
    assert pstate[online.G_TABLE_READY] == 0.0
    rf, ri = request(prompt=300, generated=70)
    assert gittins_priority(params, pstate, rf, ri, 0) == uniboost_priority(params, pstate, rf, ri, 0)


def test_an_engine_run_uses_the_quanta():
    """On a bimodal burst the quanta change the order of service against uniboost-dist, and
    every request finishes with blocks conserved (check mode)."""
    rng = np.random.default_rng(1)
    n = 600
    arrival = np.sort(rng.uniform(0, 60, n))
    output = np.where(rng.random(n) < 0.5, 20, 600)
    prompt = rng.integers(10, 200, n)
    coef = linear_coef(const=0.01, prefill=1e-4, decode=1e-3)
    runs = {p: simulate_arrays(arrival, prompt, output, coef, p,
                               dict(gamma_mode="fixed", gamma=0.5, refresh_s=1.0),
                               max_num_batched_tokens=2048, max_num_seqs=8,
                               num_gpu_blocks=4000, check=True)[0]
            for p in ("gittins-tail", "uniboost-dist")}
    for state in runs.values():
        assert (state.ri[:, L.STATUS] == L.ST_FINISHED).all()
        assert state.pstate[online.G_TABLE_READY] == 1.0
    assert not np.array_equal(runs["gittins-tail"].rf[:, L.FIRST_SCHED],
                              runs["uniboost-dist"].rf[:, L.FIRST_SCHED])


def test_heavy_tailed_sizes_take_gittins_tails_own_gamma():
    """gamma auto on Pareto sizes (no Lundberg root): gittins-tail goes to its gamma_heavy,
    UniBoost to gamma_min (its spec); on exponential sizes both take the same root."""
    from tailgym.policies.gittins import GAMMA_HEAVY
    from tailgym.policies.uniboost import refresh_gamma
    rng = np.random.default_rng(0)
    laws = {"heavy": (1.0 + rng.pareto(1.2, 1000)) * 0.1, "light": rng.exponential(0.5, 1000)}
    for law, sizes in laws.items():
        gammas = {}
        for name in ("gittins-tail", "uniboost"):
            spec = get_policy(name)
            params, pstate = spec.param_array(), spec.pstate(spec.knobs())
            for j, s in enumerate(sizes):
                online.record_arrival(pstate, 2.0 * j)  # 0.5 requests/s: rho 0.3 and 0.25
                online.record_completion(pstate, s, 10, 1.0)
            for _ in range(40):
                refresh_gamma(params, pstate)
            gammas[name] = pstate[online.G_GAMMA]
        if law == "heavy":
            assert gammas["gittins-tail"] == pytest.approx(GAMMA_HEAVY, rel=1e-3)
            assert gammas["uniboost"] == pytest.approx(0.1, rel=1e-3)
        else:
            assert gammas["gittins-tail"] == gammas["uniboost"] > 0.1
