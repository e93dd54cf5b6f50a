"""The PyTorch executor of the real-engine mode: the paged path equals a dense recompute."""
import numpy as np
import pytest
import torch

from tailgym.calibrate import calibrate, read_tailgym_csv
from tailgym.hil import HILExecutor, PagedKVCache, model_spec, profile, tiny_model, token_ids
from tailgym.hil.profiler import default_shapes, features, write_profile_csv

BS = 16
PROMPTS = {0: 40, 1: 23, 2: 5, 3: 70, 4: 37, 5: 20}  # some decode side by side at similar contexts
DECODES = 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny model's ops are too small for threads, and spinning OpenMP threads slow down
    many times over when other processes share the CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(spec=None, num_blocks=64, host_blocks=0):
    spec = spec or tiny_model()
    cache = PagedKVCache(spec, num_blocks, BS, host_blocks=host_blocks)
    return HILExecutor(spec, cache, seed=1), cache


def reference(ex, rid, length):
    """Dense logits of the last of the first ``length`` tokens of request ``rid``."""
    pos = torch.arange(length)
    with torch.inference_mode():
        return ex.model(token_ids(torch.full_like(pos, rid), pos, ex.spec.vocab), pos,
                        select=torch.tensor([length - 1]))[0]


def schedule(prompts, decodes, budget=48):
    """Steps of a chunked-prefill engine: running decodes first, then prompt chunks in budget."""
    done = dict.fromkeys(prompts, 0)
    steps = []
    while any(done[r] < p + decodes for r, p in prompts.items()):
        step, left = [], budget
        for r, p in prompts.items():
            n = 1 if done[r] >= p else min(p - done[r], left)
            if 0 < n <= left and done[r] < p + decodes:
                step.append((r, done[r], n))
                done[r] += n
                left -= n
        steps.append(step)
    return steps


def run(ex, steps, tables):
    """Run ``steps``; the last-token logits of every request of every step."""
    out = []
    for step in steps:
        assert ex.step([(r, c, n, tables[r]) for r, c, n in step]) > 0
        out.append(ex.last_logits().clone())
    return out


def tables_from(order, lengths):
    starts = np.cumsum([0, *(-(-n // BS) for n in lengths.values())])
    return {r: [int(b) for b in order[s:e]] for r, s, e in zip(lengths, starts, starts[1:])}


def lengths():
    return {r: p + DECODES for r, p in PROMPTS.items()}


def test_paged_steps_equal_the_dense_reference():
    ex, _ = make()
    steps = schedule(PROMPTS, DECODES)
    assert any(len({n > 1 for _, _, n in s}) == 2 for s in steps)  # mixed prefill and decode steps
    logits = run(ex, steps, tables_from(np.arange(64), lengths()))
    for step, got in zip(steps, logits):
        want = torch.stack([reference(ex, r, c + n) for r, c, n in step])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_block_order_does_not_matter():
    steps = schedule(PROMPTS, DECODES)
    contiguous = run(make()[0], steps, tables_from(np.arange(64), lengths()))
    shuffled = run(make()[0], steps, tables_from(np.random.default_rng(0).permutation(64), lengths()))
    for a, b in zip(contiguous, shuffled):
        torch.testing.assert_close(a, b)


def prefill_and_decode(ex, rid, prompt, table, decodes=2):
    run(ex, [[(rid, 0, prompt)], *[[(rid, prompt + k, 1)] for k in range(decodes)]], {rid: table})
    return prompt + decodes


def test_swap_out_and_in_to_other_blocks_preserves_the_kv():
    ex, cache = make(host_blocks=8)
    computed = prefill_and_decode(ex, 7, 37, [4, 9, 2])
    cache.swap_out([4, 9, 2], [5, 1, 2])
    cache.k.zero_()
    cache.v.zero_()
    cache.swap_in([5, 1, 2], [11, 12, 0])
    logits = run(ex, [[(7, computed, 1)]], {7: [11, 12, 0]})[0][0]
    torch.testing.assert_close(logits, reference(ex, 7, computed + 1), rtol=1e-4, atol=1e-5)
    assert cache.memory_bytes() == 2 * cache.k.numel() * 4


def test_recompute_after_dropping_the_blocks_gives_the_same_next_token():
    ex, cache = make()
    computed = prefill_and_decode(ex, 3, 29, [0, 1])
    before = run(ex, [[(3, computed, 1)]], {3: [0, 1]})[0][0]
    cache.k.fill_(1.0)  # the dropped blocks get overwritten
    cache.v.fill_(1.0)
    table = [5, 6]
    run(ex, [[(3, 0, 20)], [(3, 20, computed - 20)]], {3: table})
    after = run(ex, [[(3, computed, 1)]], {3: table})[0][0]
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_llama3_8b_head_layout_runs():
    spec = model_spec("llama3-8b:layers=1,vocab=512")
    assert (spec.n_layers, spec.hidden, spec.n_heads, spec.n_kv_heads, spec.head_dim) == (1, 4096, 32, 8, 128)
    ex, _ = make(spec, num_blocks=4)
    run(ex, [[(0, 0, 3)]], {0: [2]})
    logits = run(ex, [[(0, 3, 1), (1, 0, 1)]], {0: [2], 1: [0]})[0]
    want = torch.stack([reference(ex, 0, 4), reference(ex, 1, 1)])
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-4)


def test_model_spec_names():
    assert model_spec("tiny") == tiny_model()
    assert model_spec("llama3-8b").n_params == 8_030_261_248
    with pytest.raises(ValueError, match="unknown model"):
        model_spec("gpt5")
    with pytest.raises(ValueError, match="bad override"):
        model_spec("tiny:depth=3")


def test_profile_writes_a_csv_that_calibrates(tmp_path):
    ex, cache = make(num_blocks=512)
    shapes = default_shapes(max_tokens=64, max_batch=4, max_context=64)
    rows = profile(ex, cache, shapes=shapes, repeats=2)
    assert rows.shape[1] == 9 and (rows[:, -1] > 0).all() and len(rows) > len(shapes)
    np.testing.assert_array_equal(features([(16, 1), (32, 1), (10, 20)]), [1, 20, 2, 80, 20 * 20, 1, 0, 0])
    path = write_profile_csv(tmp_path / "tiny.csv", rows, model="tiny", gpu="cpu")
    obs = read_tailgym_csv(path, "tiny", "cpu", 1)
    np.testing.assert_allclose(obs.x, rows[:, :-1])
    fitted = calibrate(obs, model="tiny", gpu="cpu", tp=1)
    assert fitted.predict(rows[:1, :-1])[0] > 0
