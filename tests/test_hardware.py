import json

import numpy as np
import pytest

from tailgym.engine import layout as L
from tailgym.engine.cost import batch_features, step_time
from tailgym.hardware import (
    FEATURES,
    GPUS,
    MODELS,
    MiB,
    StepTimeModel,
    default_engine_knobs,
    get_gpu,
    get_model,
    kv_block_bytes,
    kv_capacity_blocks,
    list_profiles,
    load_profile,
    roofline,
    step_features,
)
from tailgym.hil.profiler import features as hil_features


def prefill(n):
    return step_features([0], [n], [False])


def decode(batch, context):
    return step_features(np.full(batch, context), np.ones(batch), np.ones(batch, dtype=bool))


def engine_features(shape):
    """batch_features of a batch of (computed, n_new, is_decode) entries."""
    batch = np.zeros((L.B_ROWS, len(shape)), dtype=np.int64)
    for b, (c, n, d) in enumerate(shape):
        batch[[L.B_REQ, L.B_NEW, L.B_CONTEXT, L.B_DECODE], b] = (b, n, c, d)
    return np.array(batch_features(batch, len(shape)))


# Two prefill chunks (3000 fresh tokens; 500 after 100) and two decodes at contexts 10 and 20:
# 3502 scheduled tokens, 1454 past the 2048 knee.
SHAPE = [(0, 3000, 0), (100, 500, 0), (10, 1, 1), (20, 1, 1)]
SHAPE_X = [1, 3500, 2, 3000 + 600 + 11 + 21, 3000 * 1500 + 500 * 350, 2, 1454, 2908]


def test_features_of_a_hand_made_batch():
    assert L.N_FEATURES == len(FEATURES)
    np.testing.assert_array_equal(engine_features(SHAPE), SHAPE_X)
    np.testing.assert_array_equal(hil_features([(c, n) for c, n, _ in SHAPE]), SHAPE_X)
    np.testing.assert_array_equal(step_features(*zip(*SHAPE)), SHAPE_X)
    # the knee: 0 up to 2048 scheduled tokens, all of them from 4096 on, linear in between
    assert [tuple(prefill(n)[6:]) for n in (2048, 3072, 4096, 5000)] == [
        (0, 0), (1024, 2048), (2048, 4096), (2952, 5000)]


def write_v1(path, compute, memory):
    path.write_text(json.dumps({
        "format": "tailgym-profile/1", "model": "llama2-70b", "gpu": "h100-80gb", "tp": 2, "source": "old",
        "features": ["const", "prefill_tokens", "decode_seqs", "context_tokens", "prefill_attention"],
        "compute": compute, "memory": memory}))
    return path


def test_v1_profile_times_a_batch_as_before(tmp_path):
    p = load_profile(write_v1(tmp_path / "old.json", [0.01, 1e-4, 2e-4, 1e-7, 1e-9], [0.03, 0, 0, 2e-7, 0]))
    assert p.name == "old" and p.coef().shape == (2, len(FEATURES))
    # SHAPE's first five features [1, 3500, 2, 3632, 4675000]:
    # compute 0.01 + 0.35 + 0.0004 + 0.0003632 + 0.004675 = 0.3654382; memory 0.03 + 0.0007264
    x = engine_features(SHAPE)
    assert step_time(p.coef(), x) == pytest.approx(0.3654382, rel=1e-12)
    assert p.predict(x) == pytest.approx(0.3654382, rel=1e-12)
    memory_bound = engine_features([(4000, 1, 1)])  # compute 0.0102004, memory 0.0308002
    assert step_time(p.coef(), memory_bound) == pytest.approx(0.0308002, rel=1e-12)


def test_step_time_is_the_larger_regime_not_the_sum():
    coef = np.zeros((2, len(FEATURES)))
    coef[0, 1:3] = 1e-4  # compute: 0.1 ms per prefill or decode token
    coef[1, 0], coef[1, 3] = 0.02, 1e-6  # memory: 20 ms + 1 us per context token
    x = engine_features([(3000, 1, 1), (5000, 1, 1)])  # 2 tokens, 8002 context tokens
    assert step_time(coef, x) == pytest.approx(0.02 + 8002e-6, rel=1e-12)  # not + 2e-4


def test_v2_lists_its_features_in_any_order(tmp_path):
    d = roofline("llama2-7b", "h100-80gb").to_dict()
    d.update(features=["large_step_tokens", "const"], compute=[2e-5, 0.01], memory=[0.0, 0.02])
    (tmp_path / "p.json").write_text(json.dumps(d))
    p = load_profile(tmp_path / "p.json")
    assert p.compute.tolist() == [0.01, 0, 0, 0, 0, 0, 0, 2e-5] and p.memory.tolist() == [0.02] + [0] * 7
    assert p.predict(prefill(4096)) == pytest.approx(0.01 + 2e-5 * 4096)  # compute regime: above 0.02


@pytest.mark.parametrize("name", ["llama3-8b", "llama2-7b", "llama2-70b", "codellama-34b"])
def test_llama_param_counts_match_shapes(name):
    m = MODELS[name]
    kv = m.n_kv_heads * m.head_dim
    per_layer = 2 * m.hidden * m.hidden + 2 * m.hidden * kv + 3 * m.hidden * m.intermediate + 2 * m.hidden
    assert m.n_params == m.n_layers * per_layer + 2 * m.vocab * m.hidden + m.hidden


def test_kv_block_bytes():
    assert kv_block_bytes("llama2-7b") == 8 * MiB
    assert kv_block_bytes("llama3-8b") == 2 * MiB
    assert kv_block_bytes("llama2-70b", tp=2) == kv_block_bytes("llama2-70b") // 2
    assert kv_block_bytes("llama2-70b", tp=16) == kv_block_bytes("llama2-70b", tp=8)  # KV heads replicated
    with pytest.raises(ValueError, match="tp=3"):
        kv_block_bytes("llama2-70b", tp=3)


def test_kv_capacity():
    blocks = kv_capacity_blocks("llama2-7b", "h100-80gb", gpu_memory_utilization=0.9)
    assert 6500 < blocks < 8000  # engine.md: about 7k blocks
    assert kv_capacity_blocks("llama2-7b", "h200") > 1.8 * blocks
    assert kv_capacity_blocks("llama2-7b", "h100-80gb", activation_reserve_bytes=0) > blocks
    with pytest.raises(ValueError, match="weights.*larger tp"):
        kv_capacity_blocks("llama2-70b", "a100-80gb", tp=1)
    assert kv_capacity_blocks("llama2-70b", "a100-80gb", tp=4) > 0


def test_default_engine_knobs():
    assert default_engine_knobs("h100-80gb") == {"max_num_batched_tokens": 8192, "max_num_seqs": 1024, "block_size": 16}
    assert default_engine_knobs("h200")["max_num_batched_tokens"] == 8192
    assert default_engine_knobs("a100-80gb") == {"max_num_batched_tokens": 2048, "max_num_seqs": 256, "block_size": 16}


def test_lookup_errors_list_valid_names():
    with pytest.raises(ValueError, match="unknown model 'gpt-5'.*llama2-7b"):
        get_model("gpt-5")
    with pytest.raises(ValueError, match="unknown gpu 'tpu'.*h100-80gb"):
        get_gpu("tpu")
    assert get_gpu("h100-80gb-pcap").hbm_bw == GPUS["h100-80gb"].hbm_bw
    assert get_model(MODELS["llama2-7b"]) is MODELS["llama2-7b"]


def test_roofline_anchor_times():
    r = roofline("llama2-7b", "h100-80gb")
    assert 7e-3 <= r.predict(decode(1, 1024)) <= 9e-3
    assert 60e-3 <= r.predict(prefill(2048)) <= 90e-3
    assert r.predict(decode(128, 1024)) > r.predict(decode(32, 1024)) > r.predict(decode(1, 1024))
    assert roofline("llama2-70b", "h100-80gb", tp=4).predict(prefill(2048)) < roofline(
        "llama2-70b", "h100-80gb", tp=2).predict(prefill(2048))


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("k", range(1, len(FEATURES)))
def test_roofline_monotone_in_each_feature(model, k):
    """Increasing in the FLOP/byte features; prefill seqs and the knee features cost 0."""
    r = roofline(model, "h100-80gb", tp=8 if MODELS[model].n_params > 5e10 else 1)
    for base in (decode(64, 2000), prefill(1000)):
        xs = np.repeat(base[None], 50, axis=0)
        xs[:, k] += np.geomspace(1, 1e9, 50)
        t = r.predict(xs)
        assert np.all(np.diff(t) >= 0)
        assert t[-1] > r.predict(base) if k < 5 else t[-1] == pytest.approx(r.predict(base), rel=1e-12)


def test_coef_and_predict_shapes():
    r = roofline("llama3-8b", "a100-80gb")
    c = r.coef()
    assert c.shape == (2, len(FEATURES)) and c.dtype == np.float64 and c.flags.c_contiguous
    xs = np.stack([prefill(512), decode(8, 100)])
    np.testing.assert_allclose(r.predict(xs), np.maximum(xs @ c[0], xs @ c[1]))
    assert r.predict(np.zeros((3, 4, len(FEATURES)))).shape == (3, 4)
    with pytest.raises(ValueError, match="shape"):
        r.predict(np.zeros(5))


def test_profile_json_round_trip(tmp_path):
    r = roofline("llama2-70b", "h100-80gb", tp=2)
    r = StepTimeModel(r.compute, r.memory, "x", r.source, r.model, r.gpu, r.tp, fit={"loo_mape_prompt": 0.05})
    back = StepTimeModel.from_json(r.to_json(tmp_path / "p.json"))
    assert json.loads((tmp_path / "p.json").read_text())["format"] == "tailgym-profile/2"
    np.testing.assert_array_equal(back.coef(), r.coef())
    assert (back.name, back.model, back.gpu, back.tp, back.source, back.fit) == (
        "x", "llama2-70b", "h100-80gb", 2, r.source, {"loo_mape_prompt": 0.05})
    assert load_profile(tmp_path / "p.json").name == "x"


@pytest.mark.parametrize("key, value", [
    ("compute", [1.0, 2.0]),
    ("memory", [0, 0, 0, 0, 0, 0, 0, -1]),
    ("tp", 0),
    ("format", "tailgym-profile/0"),
    ("features", ["const", "bogus"]),
    ("features", ["const", "const"]),
    ("model", None),
])
def test_bad_profile_json_names_file_and_key(tmp_path, key, value):
    d = roofline("llama2-7b", "h100-80gb").to_dict()
    d[key] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=rf"bad\.json.*'{key}'"):
        StepTimeModel.from_json(path)


def test_invalid_json_names_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        StepTimeModel.from_json(path)


def test_v1_features_must_be_the_five(tmp_path):
    path = write_v1(tmp_path / "old.json", [0.0] * 5, [0.0] * 5)
    d = json.loads(path.read_text())
    d["features"] = d["features"][::-1]
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"old\.json.*'features'"):
        load_profile(path)


def test_shipped_profiles_load_and_match_splitwise_anchors():
    names = list_profiles()
    assert "splitwise-llama2-70b-h100-80gb-tp2" in names and "vidur-llama2-7b-h100-80gb-tp1" in names
    for name in names:
        p = load_profile(name)
        assert p.name == name and p.fit["loo_mape_token"] < 0.1
    p = load_profile("splitwise-llama2-70b-h100-80gb-tp2")
    # engine.md anchors (medians): prompt 512 -> 84 ms, 2048 -> ~310 ms; token bs1 37 ms, bs32 52.3 ms.
    assert p.predict(prefill(512)) == pytest.approx(84e-3, rel=0.1)
    assert p.predict(prefill(2048)) == pytest.approx(310e-3, rel=0.1)
    assert p.predict(decode(1, 576)) == pytest.approx(37e-3, rel=0.05)
    assert p.predict(decode(32, 576)) == pytest.approx(52.3e-3, rel=0.05)
    with pytest.raises(ValueError, match="shipped:.*splitwise-llama2-70b"):
        load_profile("no-such-profile")
