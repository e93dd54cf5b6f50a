"""Fleets: replicas behind a router; replicas=1 is the single engine, routers do what they say."""
from dataclasses import replace

import numpy as np
import pytest

from tailgym.cli import main
from tailgym.fleet import ROUTERS
from tailgym.sim import build_engine, simulate
from tailgym.workload import Workload, load_workload

AZURE = "azure-conv:n=500"
KNOBS = dict(model="llama2-7b", max_num_seqs=32, max_num_batched_tokens=2048, max_model_len=16384)


def _same_run(single, fleet):
    """Every single-engine request column and summary entry equal, bit for bit."""
    for key, column in single.requests.items():
        assert column.tobytes() == fleet.requests[key].tobytes(), key
    a, b = single.summary(), fleet.summary()
    for key in set(a) - {"wall_seconds", "config"}:
        assert repr(a[key]) == repr(b[key]), key
    fleet_keys = ("replicas", "router", "router_args", "router_refresh_s")
    config = {k: v for k, v in b["config"].items() if k not in fleet_keys}
    assert config == {k: v for k, v in a["config"].items() if k not in fleet_keys}


@pytest.mark.parametrize("policy, router, kw", [
    ("fcfs", "least-outstanding", dict(rate_scale=4.0)),
    ("uniboost", "random", dict(rate_scale=4.0, kv_blocks=300, async_scheduling=False,
                                on_unfit="reject")),
    ("srpt-oracle", "prefix-aware", dict(preemption_mode="swap", kv_blocks=400,
                                         rate_scale=4.0, on_unfit="reject")),
])
def test_one_replica_is_the_single_engine_bit_for_bit(policy, router, kw):
    single = simulate(AZURE, policy, **KNOBS, **kw)
    fleet = simulate(AZURE, policy, replicas=1, router=router, **KNOBS, **kw)
    _same_run(single, fleet)
    assert single.preemptions_recompute + single.preemptions_swap > 0 or "kv_blocks" not in kw
    routed = ~single.requests["rejected"]
    assert (fleet.requests["replica"][routed] == 0).all()
    assert (fleet.requests["replica"][~routed] == -1).all()


def test_one_replica_with_prefix_caching_and_a_burst_that_grows_the_queues():
    burst = load_workload("chat-prefix:n=700")
    burst = replace(burst, arrival_s=np.zeros(len(burst)), name="burst")  # 700 > 256 queued
    _same_run(simulate(burst, "fcfs", **KNOBS),
              simulate(burst, "fcfs", replicas=1, router="weighted", **KNOBS))


def test_progress_chunks_and_seeds_leave_the_bytes_alone(monkeypatch):
    import tailgym.fleet.sim as fleet_sim
    plain = simulate(AZURE, replicas=3, router="power-of-two", rate_scale=3.0, **KNOBS)
    monkeypatch.setattr(fleet_sim, "PROGRESS_ROWS", 7)  # stop and resume every 7 requests
    chunked = simulate(AZURE, replicas=3, router="power-of-two", rate_scale=3.0, progress=True,
                       **KNOBS)
    for key, column in plain.requests.items():
        assert column.tobytes() == chunked.requests[key].tobytes(), key


def _burst(n, spacing=0.0):
    rng = np.random.default_rng(1)
    return Workload(np.arange(n) * spacing, rng.integers(50, 400, n), rng.integers(20, 200, n),
                    name="burst")


def test_round_robin_sends_the_ith_request_to_replica_i_mod_n():
    r = simulate(AZURE, replicas=3, router="round-robin", rate_scale=3.0, **KNOBS)
    assert np.array_equal(r.requests["replica"], np.arange(500) % 3)
    assert r.fleet["requests"] == [167, 167, 166]


def test_least_outstanding_balances_a_burst_and_random_does_not():
    even = simulate(_burst(64), replicas=4, router="least-outstanding", **KNOBS)
    assert even.fleet["requests"] == [16, 16, 16, 16]
    assert even.fleet["imbalance"]["requests"] == 1.0
    rand = simulate(_burst(64), replicas=4, router="random", **KNOBS)
    assert rand.fleet["imbalance"]["requests"] > 1.0


def _first_block(w):
    return w.hash_ids[w.hash_offsets[:-1]]


def test_prefix_aware_keeps_a_shared_prefix_on_one_replica_and_hits_more():
    w = load_workload("chat-prefix:n=400")
    group = _first_block(w)
    knobs = {"prefix-aware": {"cache_threshold": 0.1}}  # the shared prefixes: 1024 tokens
    runs = {name: simulate(w, replicas=4, router=name, rate_scale=8.0,
                           router_args=knobs.get(name), **KNOBS)
            for name in ("round-robin", "prefix-aware", "weighted")}

    def loyalty(report):  # share of requests on their prefix group's most used replica
        rep = report.requests["replica"]
        return sum(np.bincount(rep[group == g]).max() for g in np.unique(group)) / len(rep)
    assert loyalty(runs["prefix-aware"]) > 0.9 > loyalty(runs["round-robin"])
    hits = {k: r.summary()["prefix_cache_hit_rate"] for k, r in runs.items()}
    assert hits["prefix-aware"] > hits["round-robin"] and hits["weighted"] > hits["round-robin"]
    spread = simulate(w, replicas=4, router="prefix-aware", rate_scale=8.0,
                      router_args={"cache_threshold": 1.0}, **KNOBS)  # no prompt is all cached
    assert loyalty(spread) < loyalty(runs["prefix-aware"])


@pytest.mark.parametrize("router", ["random", "power-of-two"])
def test_random_routers_are_deterministic_per_seed(router):
    w = _burst(200, spacing=0.01)
    a, b, c = (simulate(w, replicas=5, router=router, seed=s, **KNOBS) for s in (3, 3, 4))
    for key, column in a.requests.items():
        assert column.tobytes() == b.requests[key].tobytes(), key
    assert not np.array_equal(a.requests["replica"], c.requests["replica"])
    assert set(np.unique(a.requests["replica"])) == set(range(5))


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_every_router_accounts_for_requests_and_conserves_blocks(router):
    w = load_workload("chat-prefix:n=240")
    r = simulate(w, replicas=3, router=router, rate_scale=10.0, check=True, kv_blocks=300,
                 on_unfit="reject", **KNOBS)
    rep, finished, rejected = (r.requests[k] for k in ("replica", "finished", "rejected"))
    assert 0 < rejected.sum() < 40 and (finished | rejected).all() and not (finished & rejected).any()
    assert ((rep[finished] >= 0) & (rep[finished] < 3)).all() and (rep[rejected] == -1).all()
    assert r.fleet["requests"] == np.bincount(rep[finished], minlength=3).tolist()
    assert r.steps == sum(r.fleet["steps"])
    assert r.preemptions_recompute == sum(r.fleet["preemptions"])
    assert all(0 < b <= 1 for b in r.fleet["busy_share"])


def test_stale_signals_herd_a_burst_onto_one_replica():
    w = _burst(8, spacing=0.01)  # no request finishes within the burst
    fresh = simulate(w, replicas=4, router="least-outstanding", **KNOBS)
    stale = simulate(w, replicas=4, router="least-outstanding", router_refresh_s=100.0, **KNOBS)
    assert fresh.fleet["requests"] == [2, 2, 2, 2]
    assert stale.fleet["requests"] == [8, 0, 0, 0]  # every snapshot says all are idle
    later = simulate(w, replicas=4, router="least-outstanding", router_refresh_s=0.035, **KNOBS)
    assert later.fleet["requests"] == [4, 3, 1, 0]  # snapshots at 0, 0.035 and 0.07 s


@pytest.mark.parametrize("kw, words", [
    (dict(router="nope"), "unknown router 'nope'"),
    (dict(router="weighted", router_args={"w_cache": 1}), "no knob 'w_cache'"),
    (dict(router="prefix-aware", router_args={"cache_threshold": -1}), "'cache_threshold'"),
    (dict(replicas=0), "replicas must be an integer >= 1"),
    (dict(router_refresh_s=float("nan")), "router_refresh_s"),
    (dict(record_steps=True), "record_steps"),
])
def test_bad_fleet_arguments_are_one_line_errors(kw, words):
    with pytest.raises(ValueError, match=words) as err:
        simulate("default:n=20", **{"replicas": 2, **kw})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("argv, words", [
    (["--replicas", "0"], "--replicas"),
    (["--replicas", "2", "--router", "least-outstandin"], "did you mean 'least-outstanding'"),
    (["--replicas", "2", "--router-arg", "foo=1"], "--router-arg"),
    (["--replicas", "2", "--router-arg", "cache_threshold"], "--router-arg"),
    (["--replicas", "2", "--router-refresh-s", "-1"], "--router-refresh-s"),
    (["--router", "random"], "--router needs --replicas"),
    (["--replicas", "h100-80gb=2,a100=1"], "unknown GPU 'a100'"),
    (["--replicas", "h100-80gb=two"], "--replicas"),
    (["--replicas", "h100-80gb=2", "--gpu", "a100-80gb"], "--gpu a100-80gb does not apply"),
])
def test_cli_fleet_flags_fail_in_one_line(capsys, argv, words):
    try:
        status = main(["run", "--workload", "default:n=20", "-q", *argv])
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err and words in err, err


def test_cli_runs_a_fleet(capsys):
    assert main(["run", "--workload", "default:n=60", "-q", "--replicas", "3", "--router",
                 "power-of-two", "--load", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "3 replicas behind power-of-two" in out and "fleet: 3 replicas" in out
    assert main(["run", "--workload", "default:n=60", "-q", "--replicas",
                 "h100-80gb=1,a100-80gb=2"]) == 0
    assert "on h100-80gb=1,a100-80gb=2" in capsys.readouterr().out


def test_gpu_groups_get_their_own_engines():
    mixed = {"h100-80gb": 2, "a100-80gb": 2}
    r = simulate(AZURE, replicas=mixed, router="least-outstanding", load=0.9, check=True,
                 model="llama2-7b", max_model_len=16384)
    groups = r.fleet["groups"]
    assert [(g["gpu"], g["replicas"]) for g in groups] == list(mixed.items())
    for g in groups:  # each group's KV cache (and vLLM defaults) from its GPU
        blocks = build_engine("llama2-7b", g["gpu"], max_model_len=16384)[0].num_gpu_blocks
        assert g["num_gpu_blocks"] == blocks
    assert groups[0]["num_gpu_blocks"] != groups[1]["num_gpu_blocks"]
    assert r.requests["finished"].all() and sum(r.fleet["requests"]) == 500
    h100, a100 = sum(r.fleet["requests"][:2]), sum(r.fleet["requests"][2:])
    assert h100 > a100  # faster replicas drain sooner, so least-outstanding sends them more
    one = simulate(AZURE, replicas={"h100-80gb": 3}, router="random", **KNOBS)
    _same_run(simulate(AZURE, replicas=3, router="random", **KNOBS), one)
    with pytest.raises(ValueError, match="give no gpu or profile"):
        simulate(AZURE, replicas=mixed, gpu="h100-80gb")
    with pytest.raises(ValueError, match=r"replicas\['a100-80gb'\] must be an integer >= 1"):
        simulate(AZURE, replicas={"h100-80gb": 1, "a100-80gb": 0})
