"""The invariant fuzz over every scheduler and policy family: FCFS, priority mode (SJF, LTR,
gamma-Boost, distboost), the preemptive scheduler (SRPT, LAS with and without its guard, MLFQ,
uniboost full/base, uniboost-dist, gittins-tail), recompute or swap, with and without async scheduling,
prefix caching (with shared prefixes) and full-prompt reservation. Each run is capped in
steps, so a livelock fails in seconds instead of hanging, and is run twice (same bytes)."""
import numpy as np
from engine_helpers import linear_coef, simulate_arrays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailgym.engine import layout as L

POLICIES = [
    ("fcfs", {}), ("sjf-oracle", {}), ("ltr", {"starvation_s": 0.5}),
    ("gamma-boost-oracle", {"gamma_mode": "fixed"}), ("srpt-oracle", {}),
    ("srpt-predicted", {}), ("las", {"k": 0}), ("las", {"k": 4}), ("las", {"k": 256}),
    ("mlfq", {"q0": 0.01}), ("uniboost", {"k": 4}), ("uniboost", {"variant": "base"}),
    ("uniboost", {"variant": "distboost"}), ("uniboost", {"reserve": 0.2}),
    ("uniboost-dist", {"k": 4}), ("gittins-tail", {"k": 4, "refresh_s": 0.5}),
]
COEF = linear_coef(const=0.01, prefill=1e-4, decode=1e-3, context=1e-6)

requests = st.integers(1, 25).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0, 2, allow_nan=False), min_size=n, max_size=n),
    st.lists(st.integers(1, 120), min_size=n, max_size=n),
    st.lists(st.integers(1, 40), min_size=n, max_size=n),
    st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n)))  # shared prefix group
engines = st.fixed_dictionaries({
    "max_num_batched_tokens": st.integers(1, 300), "max_num_seqs": st.integers(1, 6),
    "extra_blocks": st.integers(0, 20), "block_size": st.sampled_from([1, 4, 16]),
    "preemption_mode": st.sampled_from(["recompute", "swap"]), "num_host_blocks": st.integers(0, 30),
    "long_prefill_token_threshold": st.integers(0, 64), "watermark_blocks": st.integers(0, 2),
    "async_scheduling": st.booleans(), "enable_prefix_caching": st.booleans(),
    "scheduler_reserve_full_isl": st.booleans()})


def prefix_keys(prompt, group, block_size):
    """Requests of one group share their prompt's leading full blocks (-1: no shared
    content): keys name the group and the block index, so equal keys mean equal prefixes."""
    per_request = [[1000 * (g + 1) + k for k in range(p // block_size)] if g >= 0 else []
                   for p, g in zip(prompt, group)]
    offsets = np.concatenate(([0], np.cumsum([len(k) for k in per_request])))
    return offsets.astype(np.int64), np.array([k for ks in per_request for k in ks], np.int64)


def step_cap(prompt, output):
    """Far more steps than any schedule needs: each token of a request recomputing its whole
    sequence one token per step (pure LAS thrashes so, by design), twice over."""
    tokens = prompt + output
    return 2 * int((tokens * (tokens + 2)).sum()) + 200


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(requests, engines, st.sampled_from(POLICIES))
def test_every_policy_finishes_every_request_within_the_step_cap(wl, cfg, policy):
    arrival, prompt, output = np.sort(wl[0]), np.array(wl[1]), np.array(wl[2])
    bs = cfg["block_size"]
    need = -(-(prompt + output - 1) // bs)
    name, args = policy
    usable = int(need.max()) + cfg.pop("extra_blocks")
    cfg = dict(cfg, usable_blocks=usable, swap_s_per_block=1e-4)
    state, log = simulate_arrays(arrival, prompt, output, COEF, name, args,
                                 block_keys=prefix_keys(prompt, wl[3], bs),
                                 max_steps=step_cap(prompt, output), **cfg)
    ri, rf = state.ri, state.rf
    assert (ri[:, L.STATUS] == L.ST_FINISHED).all(), f"stuck after {len(log)} steps"
    assert (ri[:, L.GENERATED] == output).all()
    # (async: a request preempted with its last token in flight finishes while waiting)
    assert ((ri[:, L.COMPUTED] == prompt + output - 1)
            | (cfg["async_scheduling"] & (ri[:, L.N_PREEMPT] > 0) & (ri[:, L.COMPUTED] == 0))).all()
    assert (ri[:, L.BLOCKS] == 0).all() and (ri[:, L.HOST_BLOCKS] == 0).all()
    assert state.s[L.S_FREE_BLOCKS] == cfg["usable_blocks"]
    assert state.s[L.S_FREE_HOST] == cfg["num_host_blocks"]
    if not cfg["enable_prefix_caching"]:  # shared blocks are held by several requests
        assert (log[:, L.L_FREE] + log[:, L.L_HELD] == cfg["usable_blocks"]).all()
    assert (log[:, L.L_RUNNING] <= cfg["max_num_seqs"]).all()
    assert (log[:, L.L_PREFILL] + log[:, L.L_DECODE] <= cfg["max_num_batched_tokens"]).all()
    assert (rf[:, L.FIRST_SCHED] >= rf[:, L.ARRIVAL]).all()
    assert (rf[:, L.FIRST_TOKEN] > rf[:, L.FIRST_SCHED]).all()
    assert (rf[:, L.DONE] >= rf[:, L.FIRST_TOKEN]).all()
    assert (rf[:, L.MAX_GAP] <= rf[:, L.DONE] - rf[:, L.FIRST_TOKEN] + 1e-12).all()
    assert (np.diff(log[:, L.L_END]) > 0).all()
    assert ri[:, L.N_PREEMPT].sum() == state.s[L.S_PREEMPT_RECOMPUTE] + state.s[L.S_PREEMPT_SWAP]
    assert (ri[:, L.CACHED_TOKENS] <= np.maximum(prompt - 1, 0)).all()
    again, log2 = simulate_arrays(arrival, prompt, output, COEF, name, args,
                                  block_keys=prefix_keys(prompt, wl[3], bs),
                                  max_steps=step_cap(prompt, output), **cfg)
    assert again.rf.tobytes() == rf.tobytes() and log2.tobytes() == log.tobytes()
