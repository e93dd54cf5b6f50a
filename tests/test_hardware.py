import json

import numpy as np
import pytest

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
)


def step(prefill=0, decodes=0, context=0, attention=0):
    return np.array([1.0, prefill, decodes, context, attention])


def prefill(n):
    return step(prefill=n, context=n, attention=n * n / 2)


def decode(batch, context):
    return step(decodes=batch, context=batch * (context + 1))


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
    r = roofline(model, "h100-80gb", tp=8 if MODELS[model].n_params > 5e10 else 1)
    for base in (decode(64, 2000), prefill(1000)):
        xs = np.repeat(base[None], 50, axis=0)
        xs[:, k] += np.geomspace(1, 1e9, 50)
        t = r.predict(xs)
        assert np.all(np.diff(t) >= 0) and t[-1] > r.predict(base)


def test_coef_and_predict_shapes():
    r = roofline("llama3-8b", "a100-80gb")
    c = r.coef()
    assert c.shape == (2, 5) and c.dtype == np.float64 and c.flags.c_contiguous
    xs = np.stack([prefill(512), decode(8, 100)])
    np.testing.assert_allclose(r.predict(xs), np.maximum(xs @ c[0], xs @ c[1]))
    assert r.predict(np.zeros((3, 4, 5))).shape == (3, 4)
    with pytest.raises(ValueError, match="shape"):
        r.predict(np.zeros(4))


def test_profile_json_round_trip(tmp_path):
    r = roofline("llama2-70b", "h100-80gb", tp=2)
    r = StepTimeModel(r.compute, r.memory, "x", r.source, r.model, r.gpu, r.tp, fit={"loo_mape_prompt": 0.05})
    back = StepTimeModel.from_json(r.to_json(tmp_path / "p.json"))
    np.testing.assert_array_equal(back.coef(), r.coef())
    assert (back.name, back.model, back.gpu, back.tp, back.source, back.fit) == (
        "x", "llama2-70b", "h100-80gb", 2, r.source, {"loo_mape_prompt": 0.05})
    assert load_profile(tmp_path / "p.json").name == "x"


@pytest.mark.parametrize("key, value", [
    ("compute", [1.0, 2.0]),
    ("memory", [0, 0, 0, 0, -1]),
    ("tp", 0),
    ("format", "tailgym-profile/0"),
    ("features", ["const"]),
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
