"""The outside check of issue 10 (items 1, 2, 3 and 5): MemGuard quantises decode progress
only, the Hill test survives ties and atoms, knobs are validated (gamma <= 0 falls back to
FCFS as in SGLang) and gamma-Ada follows SGLang's rule by default."""
import numpy as np
import pytest
from numba import njit
from engine_helpers import simulate_arrays
from test_cli import _one_line_error
from test_policies import COEF, ENGINE, burst, first_order

from tailgym.cli import main
from tailgym.engine import layout as L
from tailgym.policies import get_policy, online
from tailgym.policies import uniboost as U


# --- 1. MemGuard quantises decode progress, not the prompt -------------------------------

def test_memguard_keeps_prompt_lengths_apart():
    # with this step model k_w = alpha_d * 256 covers ~2,600 prompt tokens: quantising the
    # whole work ties every prompt of the burst (FCFS), quantising decode only keeps SJF order
    arrival, prompt, output = burst()
    orders = {}
    for memguard in ("decode", "work"):
        state, _ = simulate_arrays(arrival, prompt, output, COEF, "uniboost",
                                   dict(gamma_mode="fixed", gamma=1e-3, memguard=memguard),
                                   **dict(ENGINE, max_num_seqs=1))
        orders[memguard] = first_order(state)
    assert orders["decode"] == list(np.argsort(prompt, kind="stable"))
    assert orders["work"] == list(range(prompt.size))


def test_decode_quantisation_levels():
    assert [U.decode_level(d, 16.0) for d in (0, 15, 16, 31, 32, 100)] == [0, 0, 16, 16, 32, 64]
    assert U.decode_level(7, 0.0) == 7.0


@pytest.mark.parametrize("memguard, first, changes", [("decode", 0, [0, 0, 1, 2, 3, 4, 6]),
                                                      ("work", 1, [0, 0, 0, 1, 2, 3, 5])])
def test_priority_changes_exactly_at_the_memguard_thresholds(memguard, first, changes):
    """A lone request with a tiny prompt changes priority once per threshold crossed before
    its last token (decode: k, 2k, 4k...; whole work: 2k, 4k..., its floor is k), no more
    (the revision bound) and no fewer (the engine's cached priority is re-evaluated at every
    threshold: ``uniboost_next_change``)."""
    k = 16
    outputs = [15, 16, 17, 40, 100, 200, 600]
    arrival = 10.0 * np.arange(len(outputs))  # one at a time
    state, _ = simulate_arrays(arrival, np.full(len(outputs), 2), outputs, COEF, "uniboost",
                               dict(gamma_mode="fixed", gamma=1e-3, k=k, memguard=memguard,
                                    alpha_p=1e-6, alpha_d=1e-3), **ENGINE)
    expected = [sum(k * 2 ** m <= s - 1 for m in range(first, 20)) for s in outputs]
    assert state.ri[:, L.PRIO_CHANGES].tolist() == expected == changes


def test_next_change_is_the_next_decode_threshold():
    params = get_policy("uniboost").param_array(dict(gamma_mode="fixed", k=16, alpha_p=1e-4,
                                                      alpha_d=1e-3))
    ri = np.zeros((1, L.RI_COLS), dtype=np.int64)
    ri[0, L.PROMPT] = 100
    got = []
    for d in (0, 15, 16, 31, 32, 63, 64, 200):
        ri[0, L.GENERATED] = d
        got.append(U.uniboost_next_change(params, ri, 0))
    assert got == [16, 16, 32, 32, 64, 64, 128, 256]


# --- 2. the Hill test: ties at the maximum, atoms -----------------------------------------

def test_hill_index_of_ties_and_atoms_is_light():
    rng = np.random.default_rng(0)
    assert online.hill_index(np.full(500, 3.0)) == np.inf              # all identical
    capped = np.minimum(rng.exponential(1.0, 2000), 1.5)               # 22% tie at the cap
    assert online.hill_index(capped) == np.inf
    two_point = np.where(rng.random(2000) < 0.05, 100.0, 1.0)          # light, 100x apart
    assert online.hill_index(two_point) == np.inf
    assert online.lundberg_gamma(two_point, 0.001, 1e-3, 1e-4) > 1e-3        # a root, not gamma_min
    pareto = (1.0 + rng.pareto(1.2, 5000)) * 0.1                       # still heavy
    assert online.hill_index(pareto) == pytest.approx(1.2, rel=0.2)


@pytest.mark.parametrize("policy", ["uniboost", "gamma-boost-oracle", "uniboost-dist",
                                    "gittins-tail"])
def test_identical_requests_run_with_online_gamma(policy):
    n = 400
    arrival = np.sort(np.random.default_rng(0).uniform(0.0, 40.0, n))
    state, _ = simulate_arrays(arrival, np.full(n, 50), np.full(n, 20), COEF, policy,
                               **dict(ENGINE, max_num_seqs=16))
    assert (state.ri[:, L.STATUS] == L.ST_FINISHED).all()
    assert state.pstate[online.G_N_DONE] == n and np.isfinite(state.pstate[online.G_GAMMA])
    assert state.pstate[online.G_GAMMA] != 5.0  # gamma was re-estimated from the sizes


# --- 3. knob validation, FCFS fallback for gamma <= 0 -------------------------------------

@pytest.mark.parametrize("gamma", [0.0, -2.0])
def test_gamma_not_positive_falls_back_to_fcfs(gamma):
    arrival, prompt, output = burst()
    arrival = np.arange(prompt.size) * 1e-3
    for mode in ("fixed", "auto"):
        state, _ = simulate_arrays(arrival, prompt, output, COEF, "uniboost",
                                   dict(gamma_mode=mode, gamma=gamma),
                                   **dict(ENGINE, max_num_seqs=1))
        assert first_order(state) == list(range(prompt.size))
        assert np.array_equal(state.rf[:, L.PRIO], arrival)


@pytest.mark.parametrize("policy, args, words", [
    ("uniboost", {"refresh_s": 0}, "knob refresh_s=0 must be > 0 with gamma_mode=auto"),
    ("gamma-boost-oracle", {"gamma_mode": "ada", "refresh_s": -1},
     "knob refresh_s=-1 must be > 0 with gamma_mode=ada"),
    ("uniboost-dist", {"gamma_mode": "fixed", "refresh_s": 0}, "knob refresh_s=0 must be > 0"),
    ("uniboost", {"gamma_min": 0}, "knob gamma_min=0 must be > 0"),
    ("uniboost", {"gamma_max": 0.5, "gamma_mode": "ada"}, "gamma_max=0.5 must be >= gamma_min=1"),
    ("uniboost", {"beta": 0}, "knob beta=0 must be in (0, 1]"),
    ("uniboost", {"gamma": "nan"}, "knob 'gamma' needs a finite number, got 'nan'"),
    ("uniboost", {"k": -1}, "knob k=-1 must be >= 0"),
    ("uniboost", {"reserve": 1}, "knob reserve=1 must be in [0, 1)"),
    ("uniboost", {"alpha_p": 0}, "knob alpha_p=0 must be > 0"),
    ("uniboost", {"cached": 2}, "knob cached=2 must be 0 or 1"),
    ("uniboost", {"memguard": "prompt"}, "knob 'memguard' must be one of decode, work"),
])
def test_invalid_knobs_are_one_line_errors(policy, args, words):
    with pytest.raises(ValueError) as err:
        get_policy(policy).knobs(args)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_fixed_gamma_needs_no_refresh():
    assert get_policy("uniboost").knobs({"gamma_mode": "fixed", "refresh_s": 0})["refresh_s"] == 0


def test_cli_names_the_policy_arg(capsys):
    _one_line_error(capsys, ["run", "--workload", "default:n=20", "--policy", "uniboost",
                             "--policy-arg", "refresh_s=0", "-q"], 2, "refresh_s=0")
    assert main(["run", "--workload", "default:n=40", "--policy", "uniboost",
                 "--policy-arg", "gamma=0", "-q"]) == 0


# --- 5. gamma-Ada: SGLang's rule by default, the log rule by name -------------------------

def _ada_params(**args):
    return get_policy("uniboost").param_array(dict(gamma_mode="ada", **args))


def _pstate_with_latencies(latencies, gamma):
    pstate = get_policy("uniboost").pstate({"gamma": gamma})
    for t in latencies:
        online.record_completion(pstate, 1.0, 10, t)
    return pstate


def heavy_latencies(seed=0, n=1000):
    rng = np.random.default_rng(seed)
    return 1.0 + np.where(np.arange(n) % 33 == 0, 100.0, rng.uniform(0, 0.05, n))


def test_ada_target_is_sglangs_formula():
    lat = np.random.default_rng(1).lognormal(0.0, 1.0, 2000)
    t95, t99 = np.percentile(lat, 95), np.percentile(lat, 99)
    assert t99 / t95 > 1.5
    assert online.ada_target(lat, 200.0) == pytest.approx(200.0 / (1 + 4 * (t99 / t95 - 1)))
    assert online.ada_target(np.ones(300), 200.0) == 200.0   # flat tail -> gamma_max


numba_percentile = njit(lambda x, q: np.percentile(x, q))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 2000])
def test_online_percentile_equals_numpys_bit_for_bit(n):
    """The engine's own percentile (of sorted input) is numba's np.percentile, which the
    engine used before, exactly, also with ties and at q = 0 and 100 (numpy's own differs
    from both in the last bit: it interpolates as a + (b - a) t)."""
    rng = np.random.default_rng(n)
    for x in (rng.lognormal(0.0, 1.0, n), np.round(rng.uniform(0, 5, n))):
        ordered = np.sort(x)
        for q in (0.0, 1.0, 50.0, 95.0, 99.0, 99.9, 100.0):
            assert online.percentile(ordered, q) == numba_percentile(x, q), (n, q)


def test_ada_default_smooths_linearly_and_clamps_like_sglang():
    knobs = get_policy("uniboost").knobs({"gamma_mode": "ada"})
    assert (knobs["gamma_min"], knobs["gamma_max"], knobs["beta"]) == (1.0, 200.0, 0.3)
    lat = heavy_latencies()
    target = online.ada_target(lat, 200.0)
    pstate = _pstate_with_latencies(lat, 100.0)
    assert U.refresh_gamma(_ada_params(), pstate)
    assert pstate[online.G_GAMMA] == pytest.approx(0.7 * 100.0 + 0.3 * target)
    for _ in range(30):
        U.refresh_gamma(_ada_params(), pstate)
    assert 1.0 <= pstate[online.G_GAMMA] < 20.0             # heavy tail: toward SJF
    light = _pstate_with_latencies(1.0 + np.random.default_rng(1).uniform(0, 0.02, 1000), 20.0)
    for _ in range(30):
        U.refresh_gamma(_ada_params(), light)
    assert 150.0 < light[online.G_GAMMA] <= 200.0            # flat tail: toward FCFS


def test_ada_log_smoothing_is_the_named_option():
    pstate = _pstate_with_latencies(heavy_latencies(), 100.0)
    U.refresh_gamma(_ada_params(ada_smoothing="log", gamma_min=0.1), pstate)
    assert pstate[online.G_GAMMA] == pytest.approx(50.0)     # the x2 cap per update
