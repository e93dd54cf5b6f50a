"""Policy priority functions on hand-computed requests (LAS, MLFQ, SJF, SRPT, LTR, the
gamma-Boost function, work units), and gamma auto/ada adapting inside an engine run."""
import numpy as np
import pytest
from engine_helpers import linear_coef, simulate_arrays

from tailgym.engine import layout as L
from tailgym.policies import online
from tailgym.policies.attained import las_priority, mlfq_priority
from tailgym.policies.boost import MAX_BOOST, b_gamma
from tailgym.policies.ltr import PROMOTED, ltr_priority
from tailgym.policies.registry import work_units
from tailgym.policies.sizes import sjf_priority, srpt_priority

AP, AD = 1e-3, 1e-2  # seconds of work per prompt token and per output token


def request(prompt, computed=0, generated=0, status=L.ST_RUNNING, arrival=0.0):
    """``(rf, ri)`` tables of one request."""
    rf = np.zeros((1, L.RF_COLS))
    ri = np.zeros((1, L.RI_COLS), dtype=np.int64)
    rf[0, L.ARRIVAL] = arrival
    ri[0, L.PROMPT], ri[0, L.COMPUTED], ri[0, L.GENERATED] = prompt, computed, generated
    ri[0, L.STATUS] = status
    return rf, ri


@pytest.mark.parametrize("computed, generated, work", [
    (40, 0, AP * 40),             # mid-prefill: the prompt tokens prefilled so far
    (104, 5, AP * 100 + AD * 5),  # decoding: the whole prompt plus the tokens generated
])
def test_las_priority_is_attained_work(computed, generated, work):
    _, ri = request(100, computed, generated)
    assert las_priority(np.array([AP, AD, 256.0]), ri, 0) == pytest.approx(work)


@pytest.mark.parametrize("prompt, generated, levels, level", [
    (40, 0, 8, 0),    # prompt work 0.04 <= q0 = 0.05: top level
    (40, 10, 8, 1),   # decode work 0.1 = 2 quanta of level 0: floor(log2(3)) = 1 demotion
    (200, 0, 8, 2),   # prompt work 0.2 = 4 q0: joins level 2
    (200, 30, 8, 3),  # decode work 0.3 / (4 q0) + 1 = 2.5: one demotion
    (200, 30, 3, 2),  # capped at levels - 1
])
def test_mlfq_level(prompt, generated, levels, level):
    rf, ri = request(prompt, prompt, generated)
    params = np.array([AP, AD, 0.05, float(levels), 0.0, 0.0])
    assert mlfq_priority(params, rf, ri, 0, 0.0) == level


def test_sjf_orders_by_total_work():
    _, ri = request(100)
    assert sjf_priority(np.array([AP, AD]), np.array([10.0]), ri, 0) == pytest.approx(0.2)


@pytest.mark.parametrize("computed, generated, work", [
    (40, 0, AP * 60 + AD * 10),  # prompt left 60, output left 10
    (104, 4, AD * 6),            # decoding: output left only
    (111, 12, AD * 1),           # outlived its predicted 10 tokens: one token left
])
def test_srpt_orders_by_remaining_work(computed, generated, work):
    _, ri = request(100, computed, generated)
    assert srpt_priority(np.array([AP, AD]), np.array([10.0]), ri, 0) == pytest.approx(work)


@pytest.mark.parametrize("status, now, expected", [
    (L.ST_WAITING, 40.0, PROMOTED + 5.0),  # waited 35 s > 30 s: ahead of every score
    (L.ST_WAITING, 35.0, 0.7),             # waited exactly 30 s: its score
    (L.ST_RUNNING, 40.0, 0.7),             # running requests keep their score
])
def test_ltr_promotes_only_starving_waiting_requests(status, now, expected):
    rf, ri = request(100, status=status, arrival=5.0)
    assert ltr_priority(np.array([0.6, 30.0]), np.array([0.7]), rf, ri, 0, now) == expected


def test_boost_is_positive_and_shrinks_with_work():
    """b_1(1) = ln(1 / (1 - e^-1)); more work, less boost; no work, the largest boost."""
    assert b_gamma(1.0, 1.0) == pytest.approx(-np.log1p(-np.exp(-1.0)))
    assert b_gamma(1.0, 0.5) > b_gamma(1.0, 1.0) > b_gamma(1.0, 2.0) > 0.0
    assert b_gamma(1.0, 0.0) == MAX_BOOST


def test_work_units_use_the_roofline_maximum():
    """A memory row of 0.5 s per step dominates a 2048-token prefill's 0.2048 s of compute
    and a 64-sequence decode's 0.064 s."""
    coef = np.zeros((2, L.N_FEATURES))
    coef[0, 1], coef[0, 2], coef[1, 0] = 1e-4, 1e-3, 0.5
    alpha_p, alpha_d = work_units(coef)
    assert alpha_p == pytest.approx(0.5 / 2048) and alpha_d == pytest.approx(0.5 / 64)


def _adaptive_run(policy, mode):
    """300 requests at about 40/s for 7.5 s, gamma re-estimated every 0.5 s (from 5/s)."""
    rng = np.random.default_rng(3)
    n = 300
    arrival = np.cumsum(rng.exponential(1 / 40, n))
    prompt, output = rng.integers(20, 200, n), rng.integers(2, 40, n)
    coef = linear_coef(const=0.005, prefill=2e-5, decode=1e-4)
    state, _ = simulate_arrays(arrival, prompt, output, coef, policy, max_steps=50_000,
                               policy_args={"gamma_mode": mode, "refresh_s": 0.5, "gamma": 5.0},
                               max_num_batched_tokens=512, max_num_seqs=16, usable_blocks=400)
    return state


@pytest.mark.parametrize("policy", ["uniboost", "gamma-boost-oracle"])
@pytest.mark.parametrize("mode", ["auto", "ada"])
def test_gamma_adapts_inside_an_engine_run(policy, mode):
    """With 200+ completions gamma leaves its start value, stays within [0.1, 200], and every
    request still finishes; ``fixed`` keeps it."""
    state = _adaptive_run(policy, mode)
    gamma = state.pstate[online.G_GAMMA]
    assert (state.ri[:, L.STATUS] == L.ST_FINISHED).all()
    assert gamma != 5.0 and 0.1 <= gamma <= 200.0
    assert _adaptive_run(policy, "fixed").pstate[online.G_GAMMA] == 5.0
