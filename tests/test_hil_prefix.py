"""The real-engine mode with prefix caching, on the CPU with the tiny model: the HIL block
tables are the engine's (shared physical blocks included), only uncached tokens are computed,
and every logit after a prefix hit, a recompute or a swap equals a from-scratch computation of
the same tokens."""
import numpy as np
import pytest
import torch

from tailgym.engine import layout as L
from tailgym.engine.blocks import K_KEY, K_REF, NO_KEY
from tailgym.hil import driver
from tailgym.hil.executor import HILExecutor, token_ids, token_seeds
from tailgym.hil.kv_cache import PagedKVCache
from tailgym.hil.model import model_spec, tiny_model
from tailgym.sim import prepare
from tailgym.workload import Workload
from tailgym.workload.prefix import engine_block_keys
from tailgym.workload.synthetic import Uniform, synthetic
from test_hil_driver import replay
from test_hil_model import _one_thread  # noqa: F401 (autouse: one torch thread)

BS = 16
STEP_S = 0.005  # every batch takes this long, so the schedule does not depend on the machine
TOL = dict(rtol=1e-4, atol=1e-5)


def sessions():
    """Hand-made prefix content (ids per 16 tokens; bs = 16 so ids and engine blocks align):
    request 0 and the burst 1-4 share a 3-block system prompt; 5 and 6 are turns 2 and 3 of
    request 0's session (each prompt = the previous prompt + output + a question); 7 and 8
    arrive together with another, 2-block system prompt."""
    reqs = []  # arrival, prompt, output, ids: the shared ones, then its own

    def add(arrival, prompt, output, shared):
        own = 100 * (len(reqs) + 1)
        ids = [*shared, *range(own, own - len(shared) - (-(prompt + output) // BS))]
        reqs.append((arrival, prompt, output, ids))
        return ids

    turn1 = add(0, 70, 30, [1, 2, 3])
    for user in (5, 10, 25, 22):
        add(30, 48 + user, 9, [1, 2, 3])
    add(90, 147, 10, add(60, 120, 15, turn1))
    add(120, 40, 6, [4, 5])
    add(120, 50, 6, [4, 5])
    arrival, prompt, output, ids = zip(*reqs)
    return Workload(arrival, prompt, output, name="sessions", hash_ids=np.concatenate(ids),
                    hash_offsets=np.cumsum([0, *map(len, ids)]), hash_block_tokens=BS,
                    hashed_tokens=np.add(prompt, output))


# hand-computed: the burst hits request 0's 3 system blocks (it finished long before); turn 2 the
# 6 full blocks of turn 1's 99 computed tokens (its last token's KV is never computed); turn 3 the
# 8 of turn 2's 134; request 8 the 2 system blocks that request 7 computes in the same batch
CACHED = [0, 48, 48, 48, 48, 96, 128, 0, 32]
CHAT = synthetic(24, rate=400.0, prompt=Uniform(8, 60), output=Uniform(4, 50), groups=2,
                 system_tokens=48, turns=2.5, think_s=0.01, tpot_s=0.0, seed=1, name="chat")


def workload_key(st, i, k):
    """The workload key of request i's block k (None where the ids do not describe it)."""
    j = st.key_off[i] + k
    return int(st.keys[j]) if j < st.key_off[i + 1] else None


class Checked(driver.HILEngine):
    """The HIL engine checked against the engine's accounting after every sync. It records each
    executed entry (request, context, new tokens, logits of its last token), the tokens the
    model computed per step, every step's block tables, the requests that finished while
    preempted (waiting or on the host), and the swapped-in entries."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        forward = self.executor.model.forward

        def counted(ids, *a, **k):
            self.computed = ids.shape[0]
            return forward(ids, *a, **k)
        self.executor.model.forward = counted

    def new_episode(self, n_requests):
        super().new_episode(n_requests)
        self.entries, self.tokens, self.history, self.swapped_in = [], [], [], 0
        self.status = np.zeros(n_requests, dtype=np.int64)
        self.finished_in = {L.ST_WAITING: set(), L.ST_SWAPPED: set()}

    def execute(self, st):
        self.state = st
        self.note_finishes(st)
        on_host = set(self.tables.host)
        out = {i: torch.stack((self.cache.k[:, held], self.cache.v[:, held]))
               for i, held in self.tables.gpu.items()
               if st.ri[i, L.N_SWAP] > self.tables.swaps[i] and i not in on_host}
        super().execute(st)
        self.check(st)
        for i, kv in out.items():  # the host slots hold the K and V of the blocks it held
            if i in self.tables.host:  # (else swapped out and back in within the plan)
                copy = self.cache.host[self.tables.host[i]].permute(1, 2, 0, 3, 4, 5)
                assert torch.equal(copy, kv)
        nb = int(st.s[L.S_BATCH])
        if not nb:
            return 0.0
        logits = self.executor.last_logits()
        batch = st.batch[[L.B_REQ, L.B_CONTEXT, L.B_NEW], :nb].T.tolist()
        for e, (i, c, n) in enumerate(batch):
            self.entries.append((i, c, n, logits[e].clone()))
            self.swapped_in += i in on_host and i not in self.tables.host
        self.tokens.append(self.computed)
        return STEP_S

    def note_finishes(self, st):
        """Requests finished since the last check, by the state they were in then."""
        now = st.ri[:, L.STATUS]
        for was, done in self.finished_in.items():
            done.update(np.flatnonzero((now == L.ST_FINISHED) & (self.status == was)).tolist())
        self.status = now.copy()

    def release(self, st):
        self.note_finishes(st)
        super().release(st)

    def check(self, st):
        ri, t = st.ri, self.tables
        held = np.flatnonzero(ri[:, L.ROW] >= 0).tolist()
        assert sorted(t.gpu) == held
        owner = {}
        for i in held:
            assert t.gpu[i] == st.pool_tables[ri[i, L.ROW], :ri[i, L.BLOCKS]].tolist()
            for k, b in enumerate(t.gpu[i]):  # a shared block: same index, same content by the ids
                j, kj = owner.setdefault(b, (i, k))
                key = workload_key(st, i, k)
                assert j == i or kj == k and key == workload_key(st, j, k) is not None
        refs = np.bincount([b for i in held for b in t.gpu[i]],
                           minlength=self.config.num_gpu_blocks)
        blk = st.pool_blocks[:len(refs)]  # counts kept for keyed blocks, a keyless one's 0
        assert refs[0] == 0 and (np.where(blk[:, K_KEY] == NO_KEY, 0, refs) == blk[:, K_REF]).all()
        assert (refs[blk[:, K_KEY] == NO_KEY] <= 1).all()
        assert (refs[1:] == 0).sum() == st.s[L.S_FREE_BLOCKS]
        assert sorted(t.host) == np.flatnonzero(ri[:, L.HOST_BLOCKS] > 0).tolist()
        slots = [h for i in t.host for h in t.host[i]]
        assert len(set(slots)) == len(slots) == self.config.num_host_blocks - len(t.free_host)
        assert all(len(t.host[i]) <= ri[i, L.HOST_BLOCKS] for i in t.host)
        self.history.append({i: list(b) for i, b in t.gpu.items()})
        self.note_finishes(st)

    def dense_mismatches(self):
        """Entries whose logits differ from a dense from-scratch pass over the request's tokens."""
        st, bad = self.state, []
        keys = (st.key_off, st.keys)
        total = st.ri[:, L.PROMPT] + st.target
        with torch.inference_mode():
            ref = {}
            for i, c, n, got in self.entries:
                if i not in ref:
                    pos = np.arange(total[i] - 1)
                    seeds = torch.as_tensor(token_seeds(np.full_like(pos, i), pos, BS, keys))
                    p = torch.as_tensor(pos)
                    ref[i] = self.executor.model(token_ids(seeds, p, self.executor.spec.vocab), p)
                if not torch.allclose(got, ref[i][c + n - 1], **TOL):
                    bad.append((i, c, n))
        return bad


@pytest.fixture
def hil(monkeypatch):
    """run_hil on a checked engine: returns (report, step log, engine)."""
    engines = []

    def make(*args, **kw):
        engines.append(Checked(*args, **kw))
        return engines[-1]

    monkeypatch.setattr(driver, "HILEngine", make)

    def run(wl, policy, **knobs):
        report, log = driver.run_hil(wl, policy, model="tiny", **knobs)
        return report, log, engines[-1]
    return run


def assert_like_the_simulator(wl, policy, knobs, report, log, engine):
    """The model computes, step by step, the simulator's prefill + decode tokens for the same
    step times, and over the run only the uncached ones: each request's tokens but its last,
    plus those recomputed after preemptions, less the cache hits (a request that finished by
    the output of a step in flight while it waited to be recomputed never recomputes)."""
    sim = prepare(wl, policy, model=model_spec("tiny"), **knobs)
    np.testing.assert_array_equal(replay(sim, log[:, -1]), log[:, :-1])
    np.testing.assert_array_equal(engine.tokens, log[:, 1] + log[:, 2])
    np.testing.assert_array_equal(sim.state.rf[:, L.DONE], report.requests["completion"])
    r = report.requests
    uncached = (r["prompt_tokens"] + r["output_tokens"] - 1 + r["recomputed_tokens"]
                - r["hit_tokens"])
    executed = np.zeros(len(wl), dtype=np.int64)
    for i, _, n, _ in engine.entries:
        executed[i] += n
    exact = np.ones(len(wl), dtype=bool)
    exact[list(engine.finished_in[L.ST_WAITING])] = False
    np.testing.assert_array_equal(executed[exact], uncached[exact])
    assert (executed <= uncached).all()


def test_shared_prefixes_use_the_same_blocks_and_compute_only_uncached_tokens(hil):
    wl = sessions()
    knobs = dict(kv_blocks=64, max_num_batched_tokens=256, max_num_seqs=8)
    report, log, engine = hil(wl, "fcfs", **knobs)
    assert report.requests["cached_tokens"].tolist() == CACHED
    assert report.summary()["preemptions"] == 0
    last = {}  # each request's table the last time it held blocks
    for tables in engine.history:
        last.update(tables)
        burst = [tables[i] for i in range(1, 5) if i in tables]
        assert all(t[:3] == last[0][:3] for t in burst)  # request 0's system blocks, only those
        assert all(len(set(a) & set(b)) == 3 for a in burst for b in burst if a is not b)
    assert last[5][:6] == last[0][:6] and last[6][:8] == last[5][:8]  # turn 1 and 2 had finished
    assert last[8][:2] == last[7][:2] and last[8][2] not in last[7]
    assert max(sum(i in tables for i in range(1, 5)) for tables in engine.history) == 4
    assert_like_the_simulator(wl, "fcfs", knobs, report, log, engine)
    assert sum(engine.tokens) == (wl.prompt_tokens + wl.output_tokens - 1).sum() - sum(CACHED)
    assert engine.dense_mismatches() == []


@pytest.mark.parametrize("policy,mode,args", [("fcfs", "recompute", None),
                                              ("fcfs", "swap", None),
                                              ("uniboost", "swap", {"cost_aware": 0, "k": 0})])
def test_tight_cache_keeps_tables_and_logits_right(hil, policy, mode, args):
    knobs = dict(kv_blocks=30, max_num_batched_tokens=128, max_num_seqs=6, preemption_mode=mode,
                 swap_space_gib=0.0001, policy_args=args)
    report, log, engine = hil(CHAT, policy, **knobs)
    s, r = report.summary(), report.requests
    assert s["requests_completed"] == len(CHAT) and s["preemptions"] > 0
    assert (s["preemptions_swap"] > 0) == (mode == "swap")
    assert (engine.swapped_in > 0) == (mode == "swap")  # swapped-in requests ran
    if policy == "uniboost":  # host slots freed before they are taken again, whatever the order
        assert engine.finished_in[L.ST_SWAPPED]  # of the plan; a request finished on the host
    offsets, keys = engine_block_keys(CHAT, BS)
    values, counts = np.unique(keys, return_counts=True)
    shared = set(values[counts > 1].tolist())  # keys of blocks that requests share per the ids
    hit = np.flatnonzero(r["cached_tokens"])
    assert len(hit) >= len(CHAT) // 2
    assert all(keys[offsets[i] + r["cached_tokens"][i] // BS - 1] in shared for i in hit)
    assert_like_the_simulator(CHAT, policy, knobs, report, log, engine)
    assert engine.dense_mismatches() == []


def test_logits_after_a_prefix_hit_equal_a_fresh_computation():
    """Request 1 reads request 0's three system-prompt blocks and computes only its own 30 tokens;
    its logits equal request 1 computed alone in a fresh cache. Per-request tokens (no keys, the
    former behaviour) would make the hit read another request's tokens."""
    spec = tiny_model()
    wl = Workload([0, 1], [68, 78], [1, 1], hash_ids=[1, 2, 3, 4, 5, 1, 2, 3, 6, 7],
                  hash_offsets=[0, 5, 10], hash_block_tokens=BS, hashed_tokens=[68, 79])
    keys = engine_block_keys(wl, BS)

    def fresh():
        return HILExecutor(spec, PagedKVCache(spec, 12, BS), seed=3)

    def shared(block_keys):
        ex = fresh()
        ex.step([(0, 0, 68, [1, 2, 3, 4, 5])], block_keys)
        ex.step([(1, 48, 30, [1, 2, 3, 7, 8])], block_keys)
        return ex.last_logits()[0]

    alone = fresh()
    alone.step([(1, 0, 78, [9, 2, 11, 4, 6])], keys)
    torch.testing.assert_close(shared(keys), alone.last_logits()[0], **TOL)
    alone.step([(1, 0, 78, [9, 2, 11, 4, 6])], None)
    assert not torch.allclose(shared(None), alone.last_logits()[0], **TOL)
