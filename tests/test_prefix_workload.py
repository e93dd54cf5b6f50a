"""Prefix content: Workload fields, JSONL and CSV loading, engine block keys, hit ceiling,
the shared-prefix generator and the Mooncake traces."""

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailgym.workload import (
    UnsortedArrivalsWarning,
    Workload,
    WorkloadError,
    engine_block_keys,
    hit_ceiling,
    load_csv,
    load_jsonl,
    load_workload,
    preset,
)
from tailgym.workload.synthetic import CHAT_OUTPUT, TURN_PROMPT, Prefixes, session_requests


def prefixed(ids, hashed, prompt=None, output=None, block=512, arrival=None):
    """A workload whose request i has content ids ``ids[i]`` describing ``hashed[i]`` tokens."""
    n = len(ids)
    prompt = hashed if prompt is None else prompt
    return Workload(
        arrival_s=np.arange(n, dtype=float) if arrival is None else arrival,
        prompt_tokens=prompt,
        output_tokens=[1] * n if output is None else output,
        hash_ids=[x for row in ids for x in row],
        hash_offsets=np.concatenate(([0], np.cumsum([len(r) for r in ids]))),
        hash_block_tokens=block,
        hashed_tokens=hashed,
    )


def keys_of(w, bs):
    offsets, keys = engine_block_keys(w, bs)
    return [keys[offsets[i]:offsets[i + 1]].tolist() for i in range(len(w))]


def common(a, b):
    """Length of the common leading run of two key lists."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def jsonl(tmp_path, records, name="t.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def rec(t=0, i=600, o=5, h=(1, 2)):
    return {"timestamp": t, "input_length": i, "output_length": o, "hash_ids": list(h)}


# ---------------------------------------------------------------- Workload fields


def test_prefix_fields_validated():
    ok = dict(arrival_s=[0, 1], prompt_tokens=[600, 10], output_tokens=[1, 1], hash_ids=[1, 2, 3],
              hash_offsets=[0, 2, 3], hash_block_tokens=512, hashed_tokens=[600, 10])
    w = Workload(**ok)
    assert w.has_prefix and w.hash_ids.dtype == np.int64 and not w.hash_ids.flags.writeable
    assert not Workload([0], [1], [1]).has_prefix
    for change, problem in [
        (dict(hash_block_tokens=None), "missing hash_block_tokens"),
        (dict(hash_block_tokens=0), "hash_block_tokens must be an integer >= 1"),
        (dict(hash_offsets=[0, 2]), r"hash_offsets has shape \(2,\); expected \(3,\)"),
        (dict(hash_offsets=[0, 3, 2]), "rise from 0 to len"),
        (dict(hash_offsets=[1, 2, 3]), "rise from 0"),
        (dict(hashed_tokens=[512, 10]), r"request 0: hashed_tokens 512 does not fit 2 hash ids of 512 tokens \(needs 513..1024\)"),
        (dict(hashed_tokens=[600, 513]), "request 1: hashed_tokens 513 does not fit 1 hash ids"),
        (dict(hashed_tokens=[600, 12]), "request 1: hashed_tokens 12 exceeds prompt \\+ output tokens 11"),
        (dict(hash_ids=[[1, 2, 3]]), "hash_ids has shape"),
    ]:
        with pytest.raises(WorkloadError, match=problem):
            Workload(**(ok | change))


def test_operations_keep_prefix_content():
    w = prefixed([[1, 2], [1], [5, 6, 7], [8]], [600, 10, 1100, 3], arrival=[0.0, 1.0, 1.0, 4.0])
    win = w.window(1, 2)
    assert win.hash_ids.tolist() == [1, 5, 6, 7] and win.hash_offsets.tolist() == [0, 1, 4]
    assert win.hashed_tokens.tolist() == [10, 1100] and win.arrival_s.tolist() == [0.0, 0.0]
    assert w.head(1).hash_ids.tolist() == [1, 2] and w.window(3, 10).hash_ids.tolist() == [8]
    for v in (w.with_rate(2.0), w.with_rate_scale(3), w.with_arrivals(np.array([0, 5, 6, 7.0]))):
        assert v.hash_block_tokens == 512 and all((getattr(v, f) == getattr(w, f)).all() for f in
                                                  ("hash_ids", "hash_offsets", "hashed_tokens"))
    assert w.fingerprint() != prefixed([[1, 2], [1], [5, 6, 9], [8]], [600, 10, 1100, 3],
                                       arrival=[0.0, 1.0, 1.0, 4.0]).fingerprint()
    assert w.fingerprint() != prefixed([[1, 2], [1], [5, 6, 7], [8]], [599, 10, 1100, 3],
                                       arrival=[0.0, 1.0, 1.0, 4.0]).fingerprint()
    assert prefixed([[1]], [5], block=16).fingerprint() != prefixed([[1]], [5], block=8).fingerprint()
    assert w.window(1, 2).fingerprint() == prefixed([[1], [5, 6, 7]], [10, 1100], arrival=[0.0, 0.0]).fingerprint()
    d = w.describe()["prefix"]
    assert d == {"hash_block_tokens": 512, "block_refs": 7, "repeat_share": pytest.approx(1 / 7)}  # request 1's [1]


def test_superpose_copies_are_disjoint_tenants_at_the_summed_rate():
    w = prefixed([[1, 2], [1], [5, 6, 7], [8]], [600, 10, 1100, 3], arrival=[0.0, 1.0, 2.0, 3.0])
    s = w.superpose(3, seed=4)
    assert len(s) == 12 and s.arrival_s[0] == 0 and (np.diff(s.arrival_s) >= 0).all()
    assert s.duration_s < 4.0  # three copies share one period of 4 s (3 s plus a mean gap)
    assert sorted(s.prompt_tokens.tolist()) == sorted(w.prompt_tokens.tolist() * 3)
    rows = [tuple(s.hash_ids[a:b]) for a, b in zip(s.hash_offsets, s.hash_offsets[1:])]
    # each copy's rows are the original rows with its ids shifted by copy x (max id + 1)
    assert sorted(rows) == sorted(tuple(x + 9 * c for x in r) for c in range(3)
                                  for r in ((1, 2), (1,), (5, 6, 7), (8,)))
    assert s.fingerprint() == w.superpose(3, seed=4).fingerprint() != w.superpose(3, seed=5).fingerprint()
    one = w.superpose(1, seed=4)  # a circular window: the same requests in a rotated order
    assert sorted(one.hash_ids.tolist()) == sorted(w.hash_ids.tolist())
    with pytest.raises(WorkloadError, match="copies must be an integer >= 1"):
        w.superpose(0, seed=0)


def test_repeat_share_counts_chains_not_bare_ids():
    # id 1 at position 1 after 2 is not the block 1 at position 0
    w = prefixed([[1, 2], [2, 1], [2, 1, 3]], [1000, 1000, 1100])
    assert w.describe()["prefix"]["repeat_share"] == pytest.approx(2 / 7)


# ---------------------------------------------------------------- JSONL


def test_jsonl_loads_sorts_and_keeps_ids_with_their_rows(tmp_path):
    path = jsonl(tmp_path, [rec(1000, 600, 5, [1, 2]), "", rec(250, 100, 3, [1]), rec(2500.5, 1025, 1, [1, 2, 9])])
    with pytest.warns(UnsortedArrivalsWarning, match=r"line 3"):
        w = load_jsonl(path)
    assert w.name == "t" and w.source_rows.tolist() == [3, 1, 4]
    assert w.arrival_s.tolist() == [0.0, 0.75, 2.2505]
    assert w.prompt_tokens.tolist() == [100, 600, 1025] and w.hashed_tokens.tolist() == [100, 600, 1025]
    assert w.hash_ids.tolist() == [1, 1, 2, 1, 2, 9] and w.hash_offsets.tolist() == [0, 1, 3, 6]
    assert w.hash_block_tokens == 512
    with pytest.warns(UnsortedArrivalsWarning):
        assert load_workload(str(path)).fingerprint() == w.fingerprint()


def test_jsonl_integer_ms_are_exact(tmp_path):
    w = load_jsonl(jsonl(tmp_path, [rec(1_700_000_000_123), rec(1_700_000_003_456)]))
    assert w.arrival_s.tolist() == [0.0, 3.333]


BAD_JSONL = [
    # (lines, line, field, value, problem)
    ([rec(), "{nope"], 2, None, None, "invalid JSON"),
    ([rec(), "[1, 2]"], 2, None, "[1, 2]", "expected a JSON object"),
    ([rec(), {"timestamp": 1, "input_length": 5, "output_length": 1}], 2, None, None,
     "missing field 'hash_ids'; fields present: 'timestamp', 'input_length', 'output_length'"),
    ([rec(i="abc")], 1, "input_length", '"abc"', "not a number"),
    ([rec(i=True)], 1, "input_length", "true", "not a number"),
    ([rec(), rec(i=0, h=[])], 2, "input_length", "0", ">= 1"),
    ([rec(o=1.5)], 1, "output_length", "1.5", "not an integer"),
    ([rec(o=-2)], 1, "output_length", "-2", "negative"),
    ([rec(t="noon")], 1, "timestamp", '"noon"', "not a number"),
    ([rec(t=float("nan"))], 1, "timestamp", "NaN", "not finite"),
    ([rec(h=[1, "a"])], 1, "hash_ids", '[1, "a"]', "expected a list of integers"),
    ([rec(h=[1, 2 ** 63])], 1, "hash_ids", None, "int64 range"),
    ([rec(), rec(), rec(i=1000, h=[4])], 3, "hash_ids", None,
     "input_length 1000 does not fit 1 hash ids of 512 tokens (needs 1..512)"),
    ([rec(i=512, h=[4, 5])], 1, "hash_ids", None, "input_length 512 does not fit 2 hash ids"),
    ([], 1, None, None, "no requests"),
]


@pytest.mark.parametrize("lines,line,field,value,problem", BAD_JSONL)
def test_bad_jsonl_errors_are_located(tmp_path, lines, line, field, value, problem):
    path = jsonl(tmp_path, lines, name="bad.jsonl")
    with pytest.raises(WorkloadError) as err:
        load_workload(str(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}:") and problem in msg, msg
    if field is not None:
        assert f"field {field!r}" in msg, msg
    if value is not None:
        assert f"(value {value!r})" in msg, msg


def test_jsonl_refuses_columns(tmp_path):
    with pytest.raises(WorkloadError, match="columns only apply to CSV"):
        load_workload(str(jsonl(tmp_path, [rec()])), columns="arrival=t")


# ---------------------------------------------------------------- CSV hash column


def csv_file(tmp_path, lines):
    path = tmp_path / "h.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_hash_column_defaults_and_mapping(tmp_path):
    w = load_csv(csv_file(tmp_path, ["arrival_s,prompt_tokens,output_tokens,hash_ids",
                                     "0,600,5,1 2", "1,100,3,1"]))
    assert w.hash_ids.tolist() == [1, 2, 1] and w.hash_block_tokens == 512 and w.hashed_tokens.tolist() == [600, 100]
    path = csv_file(tmp_path, ["t,p,o,ids,covered", "0,20,30,7 8 9 10, 50", "2,4,1,7,5", "1,40,1,7 8 9, 41"])
    with pytest.warns(UnsortedArrivalsWarning):
        w = load_csv(path, "arrival=t,prompt=p,output=o,hash=ids,hashed=covered,hash_block=16")
    assert w.hash_block_tokens == 16 and w.hashed_tokens.tolist() == [50, 41, 5]
    assert w.hash_ids.tolist() == [7, 8, 9, 10, 7, 8, 9, 7] and w.source_rows.tolist() == [2, 4, 3]
    assert not load_csv(csv_file(tmp_path, ["arrival_s,prompt_tokens,output_tokens", "0,1,1"])).has_prefix


@pytest.mark.parametrize("lines,columns,problem", [
    (["arrival_s,prompt_tokens,output_tokens,hash_ids", "0,600,1,1 2", "1,600,1,1 x"], None,
     "h.csv:3: column 'hash_ids': hash ids must be space-separated integers (value '1 x')"),
    (["arrival_s,prompt_tokens,output_tokens,hash_ids", "0,600,1,1 2", "1,600,1,1"], None,
     "h.csv:3: column 'hash_ids': prompt_tokens 600 does not fit 1 hash ids of 512 tokens (needs 1..512)"),
    (["arrival_s,prompt_tokens,output_tokens,hash_ids,hashed_tokens", "0,600,1,1 2,602"], None,
     "h.csv:2: column 'hash_ids': hashed_tokens 602 exceeds prompt + output tokens 601"),
    (["arrival_s,prompt_tokens,output_tokens", "0,1,1"], "hash_block=16",
     "h.csv:1: hash_block=16 given but there is no hash column 'hash_ids'"),
    (["arrival_s,prompt_tokens,output_tokens,hashed_tokens", "0,1,1,1"], None,
     "hashed column 'hashed_tokens' needs a hash column"),
    (["arrival_s,prompt_tokens,output_tokens,hash_ids", "0,1,1,1"], "hash_block=0",
     "column mapping hash_block='0': must be >= 1"),
    (["arrival_s,prompt_tokens,output_tokens", "0,1,1"], "hash=ids", "missing hash column 'ids'"),
])
def test_csv_hash_column_errors(tmp_path, lines, columns, problem):
    with pytest.raises(WorkloadError) as err:
        load_csv(csv_file(tmp_path, lines), columns)
    assert problem in str(err.value), str(err.value)


# ---------------------------------------------------------------- engine block keys


def test_one_and_a_half_shared_content_blocks():
    # a: blocks 1 and the first half of 2; b: 1, 2 in full, 3; c: 1, then another block
    w = prefixed([[1, 2], [1, 2, 3], [1, 4]], [768, 1100, 1024])
    for bs, shared in ((16, 48), (32, 24), (48, 16), (512, 1), (100, 7)):
        a, b, c = keys_of(w, bs)
        assert len(a) == 768 // bs and len(b) == 1100 // bs
        assert common(a, b) == shared == 768 // bs
        assert common(b, c) == common(a, c) == 512 // bs
        assert not set(a[common(a, c):]) & set(c)  # nothing shared past the common prefix


def test_partial_last_block_and_ragged_lengths():
    # 600 tokens = 1 full block + 88 of block 2; 700 continues that block; 610 stops in it
    w = prefixed([[1, 2], [1, 2], [1, 2], [1, 3]], [600, 700, 610, 1000])
    a, b, c, d = keys_of(w, 16)
    assert (len(a), len(b), len(c), len(d)) == (37, 43, 38, 62)  # floor(hashed / 16)
    assert b[:37] == a and c == b[:38] and common(a, d) == 32
    assert len(set(b)) == len(b)  # keys of different prefix lengths differ
    offsets, keys = engine_block_keys(w, 16)
    assert offsets.tolist() == [0, 37, 80, 118, 180] and keys.dtype == np.int64 and (keys >= 0).all()


def test_no_prefix_content_no_keys_and_bad_block_size():
    offsets, keys = engine_block_keys(preset("chat", n=5), 16)
    assert offsets.tolist() == [0] * 6 and keys.size == 0 and hit_ceiling(preset("chat", n=5), 16) == 0.0
    for bad in (0, 1.5, True):
        with pytest.raises(WorkloadError, match="block_size"):
            engine_block_keys(prefixed([[1]], [5]), bad)


_M64 = (1 << 64) - 1


def _sm(x):
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _reference_keys(ids, hashed, block, bs):
    """The module docstring's formula in plain Python integers."""
    chain, c = [], 0x243F6A8885A308D3
    for x in ids:
        c = _sm(_sm(c) ^ (x & _M64))
        chain.append(c)
    out = []
    for k in range(hashed // bs):
        end = (k + 1) * bs
        j = (end - 1) // block
        out.append(_sm(_sm(chain[j]) ^ (end - j * block)) & ((1 << 63) - 1))
    return out


@settings(max_examples=60, deadline=None)
@given(data=st.data(), block=st.integers(1, 40), bs=st.integers(1, 40))
def test_keys_match_formula_and_identify_prefixes(data, block, bs):
    rows = data.draw(st.lists(st.lists(st.integers(-3, 3), min_size=1, max_size=6), min_size=1, max_size=6))
    hashed = [data.draw(st.integers((len(r) - 1) * block + 1, len(r) * block)) for r in rows]
    w = prefixed(rows, hashed, block=block)
    got = keys_of(w, bs)
    assert got == [_reference_keys(r, h, block, bs) for r, h in zip(rows, hashed)]
    # equal keys <=> equal prefixes: same ids up to the block holding the last token, same length
    seen = {}
    for row, keys in zip(rows, got):
        for k, key in enumerate(keys):
            end = (k + 1) * bs
            prefix = (tuple(row[:(end - 1) // block + 1]), end)
            assert seen.setdefault(key, prefix) == prefix
    assert len(set(seen.values())) == len(seen)


# ---------------------------------------------------------------- hit ceiling


def test_hit_ceiling_hand_case():
    w = prefixed(
        [[1, 2, 3, 4], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4], [7, 8, 9, 10], [7, 8, 9, 10, 11]],
        hashed=[64, 96, 64, 64, 80], prompt=[64, 96, 64, 32, 80], output=[1, 1, 1, 32, 1], block=16)
    # request 1 hits 4 blocks (64 of 96); request 2 all 4 blocks but capped at (64 - 1) // 16 = 3;
    # request 4 hits the 4 blocks that request 3 described past its 32-token prompt (its output)
    assert hit_ceiling(w, 16) == (64 + 48 + 64) / (64 + 96 + 64 + 32 + 80)
    # at 32 tokens a block: 64, 32 (capped at 1 block), 64
    assert hit_ceiling(w, 32) == (64 + 32 + 64) / 336


def _brute_ceiling(w, bs):
    seen, hit = set(), 0
    for i, keys in enumerate(keys_of(w, bs)):
        hit += min(common(keys, [k if k in seen else -1 for k in keys]), (w.prompt_tokens[i] - 1) // bs) * bs
        seen.update(keys)
    return hit / w.prompt_tokens.sum()


@pytest.mark.parametrize("spec", ["mooncake-conv:n=1500", "mooncake-synthetic:start=2000,n=800", "multiturn:n=400"])
def test_hit_ceiling_matches_key_by_key_count(spec):
    w = load_workload(spec)
    for bs in (16, 48, 700):
        assert hit_ceiling(w, bs) == pytest.approx(_brute_ceiling(w, bs), abs=1e-15)


# ---------------------------------------------------------------- Mooncake traces


@pytest.mark.parametrize("name,n,span_s,prompt_mean,output_mean,repeat", [
    ("mooncake-conv", 12_031, 3537, 12_035, 343, 0.366),
    ("mooncake-synthetic", 3_993, 1022, 15_325, 149, 0.64),
])
def test_mooncake_statistics_match_data_readme(name, n, span_s, prompt_mean, output_mean, repeat):
    start = time.perf_counter()
    w = load_workload(name)
    elapsed = time.perf_counter() - start
    d = w.describe()
    assert d["n"] == n and round(d["duration_s"]) == span_s and w.name == name
    assert round(d["prompt_tokens"]["mean"]) == prompt_mean and round(d["output_tokens"]["mean"]) == output_mean
    assert round(d["prefix"]["repeat_share"], len(str(repeat)) - 2) == repeat
    assert (w.hashed_tokens == w.prompt_tokens).all() and w.hash_block_tokens == 512
    assert elapsed < 2.0


def test_mooncake_conversation_every_request_starts_with_block_0():
    w = load_workload("mooncake-conv")
    assert (w.hash_ids[w.hash_offsets[:-1]] == 0).all()
    assert round(w.describe()["prompt_tokens"]["p50"]) == 6909 and w.prompt_tokens.max() == 126_195


def test_mooncake_window_and_redraw_keep_ids():
    full = load_workload("mooncake-conv")
    w = load_workload("mooncake-conv:start=100,n=500")
    assert w.hash_ids.tolist() == full.hash_ids[full.hash_offsets[100]:full.hash_offsets[600]].tolist()
    assert (w.hash_offsets == full.hash_offsets[100:601] - full.hash_offsets[100]).all()
    assert (w.hashed_tokens == full.hashed_tokens[100:600]).all() and w.arrival_s[0] == 0.0
    a = load_workload("mooncake-conv:arrival=gamma,cv=3", seed=1)
    assert a.hash_ids is not None and (a.hash_ids == full.hash_ids).all() and (a.hash_offsets == full.hash_offsets).all()
    assert a.fingerprint() != full.fingerprint()
    assert load_workload("mooncake-synthetic:rate=8,n=100").mean_rate == pytest.approx(8.0, rel=1e-12)


def test_engine_block_keys_speed_on_full_conversation_trace():
    w = load_workload("mooncake-conv")
    engine_block_keys(w.head(10), 16)  # JIT compile or cache load
    start = time.perf_counter()
    offsets, keys = engine_block_keys(w, 16)
    elapsed = time.perf_counter() - start
    assert offsets[-1] == len(keys) == (w.prompt_tokens // 16).sum() > 9_000_000
    assert elapsed < 1.0


# ---------------------------------------------------------------- generator


def sessions(n=600, seed=3, **knobs):
    p = Prefixes(**({"groups": 2, "system_tokens": 100, "turns": 5.0} | knobs))
    fields, session = session_requests(n, 2.0, TURN_PROMPT, CHAT_OUTPUT, "poisson", seed, p, {})
    return Workload(**fields), session, p


@pytest.mark.parametrize("knobs", [{}, {"think_s": 0.0, "tpot_s": 0.0}, {"hash_block": 7, "max_context": 3000}])
def test_turn_k_shares_exactly_the_previous_prompt_and_output(knobs):
    w, session, p = sessions(**knobs)
    prev = {}
    pairs = 0
    keys = {bs: keys_of(w, bs) for bs in (16, 24, 32)}
    for i, s in enumerate(session.tolist()):
        if s in prev:
            r = prev[s]
            shared = w.prompt_tokens[r] + w.output_tokens[r]
            assert w.prompt_tokens[i] > shared  # previous prompt + output + new user tokens
            assert w.arrival_s[i] >= w.arrival_s[r] + p.tpot_s * w.output_tokens[r]
            for bs, k in keys.items():
                assert common(k[i], k[r]) == len(k[r]) == shared // bs
            pairs += 1
        else:
            assert w.prompt_tokens[i] > p.system_tokens
        prev[s] = i
    assert pairs > len(w) // 2


def test_turns_respect_max_context_and_sessions_are_disjoint():
    w, session, p = sessions(groups=0, system_tokens=0, turns=8.0, max_context=2000)
    first = np.zeros(len(w), dtype=bool)
    first[np.unique(session, return_index=True)[1]] = True
    assert (w.prompt_tokens + w.output_tokens <= 2000)[~first].all() and (~first).sum() > len(w) // 2
    k = keys_of(w, 16)
    starts = np.flatnonzero(first)[:60]
    assert all(common(k[i], k[r]) == 0 for i in starts for r in starts if r < i)  # no system prompt


def test_system_prompt_groups_share_exactly_the_system_blocks():
    w = preset("chat-prefix", n=300)
    first = w.hash_ids[w.hash_offsets[:-1]]  # group g's block 0 has id g * 64
    assert set(first.tolist()) <= {g * 64 for g in range(8)} and len(set(first.tolist())) > 3
    assert np.bincount(first // 64)[0] > np.bincount(first // 64, minlength=8)[7]  # Zipf: group 0 is the most common
    for bs in (16, 32, 64):
        k = keys_of(w, bs)
        for i in range(40):
            for r in range(i):
                assert common(k[i], k[r]) == (1024 // bs if first[i] == first[r] else 0)
    chat = preset("chat", n=300)
    assert (w.arrival_s == chat.arrival_s).all() and (w.prompt_tokens == chat.prompt_tokens + 1024).all()
    assert (w.output_tokens == chat.output_tokens).all()


def test_presets_deterministic_to_the_byte():
    for name in ("chat-prefix", "multiturn"):
        a, b, c = preset(name, seed=11), preset(name, seed=11), preset(name, seed=12)
        for f in ("arrival_s", "prompt_tokens", "output_tokens", "hash_ids", "hash_offsets", "hashed_tokens"):
            assert getattr(a, f).tobytes() == getattr(b, f).tobytes()
        assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    m = preset("multiturn")
    assert len(m) == 2000 and m.mean_rate == pytest.approx(2.0, rel=0.15)
    assert (m.hashed_tokens == m.prompt_tokens + m.output_tokens).all() and m.hash_block_tokens == 16


def test_prefix_knobs_in_specs():
    assert load_workload("multiturn:turns=6,think_s=5,n=300", seed=2).fingerprint() == \
        preset("multiturn", turns=6, think_s=5, n=300, seed=2).fingerprint()
    w = load_workload("chat:groups=3,system_tokens=256,n=50")
    assert w.has_prefix and (w.prompt_tokens == preset("chat", n=50).prompt_tokens + 256).all()
    assert not load_workload("chat:n=50").has_prefix
    for spec, words in [("chat:groups=2", ["groups", "system_tokens", "both"]),
                        ("multiturn:turns=0.5", ["turns", ">= 1"]),
                        ("multiturn:think_s=-1", ["think_s", ">= 0"]),
                        ("multiturn:turns=many", ["turns", "float"]),
                        ("mooncake-conv:turns=2", ["unknown", "turns", "start"])]:
        with pytest.raises(WorkloadError) as err:
            load_workload(spec)
        assert all(word in str(err.value) for word in words), str(err.value)
