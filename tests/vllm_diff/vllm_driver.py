"""Drive vLLM 0.33.0's real Scheduler / AsyncScheduler on a simulated clock and report every step.

Usage: ``python vllm_driver.py SCENARIO.json OUT.json`` inside a venv holding vLLM (see README.md).
A file holding a JSON list of scenarios gives a list of reports (one vLLM import for all).
This file never imports tailgym; ``reference.py`` runs it from the test venv.

No GPU and no model: a tiny local ``config.json`` stands in for the model, the device is the
CPU, and a fake model output (one sampled token per scheduled request that is not a partial
prefill chunk, built like vLLM's ``tests/v1/core/utils.py`` does) is fed back through
``Scheduler.update_from_output``.

Token ids: request i's sequence (prompt, then output) is deterministic. Block k < len(block_keys)
is drawn from a counter-based generator (splitmix64) seeded by ``block_keys[k]``; every other
position p from one seeded by (i, p), so it is unique to the request. The fake model samples the
sequence's own next id, so a follow-up whose prompt holds an earlier answer shares its blocks.

Clock (simulated time T), mirroring ``vllm/v1/engine/core.py``:

* Top of every loop iteration (``EngineCoreProc.run_busy_loop``): every request with
  arrival <= T is added in index order (``_process_input_queue``). When the scheduler has no
  requests and no batch is in flight (``has_work`` false) T jumps to the next arrival.
* A batch that schedules n >= 1 tokens runs ``const + per_token * n`` seconds on the GPU; a
  0-token batch takes 0 s. Batches run back to back: a batch starts at
  max(T when it was scheduled, end of the previous batch).
* Sync (``EngineCore.step``): if the scheduler has requests, schedule at T, T = end of that
  batch, ``update_from_output``.
* Async (``EngineCore.step_with_batch_queue``, queue of ``max_concurrent_batches`` = 2, with
  ``AsyncScheduler``): if the scheduler has requests, schedule at T (0-token batches included)
  and queue the batch; return without blocking if the queue is not full and (the batch had
  tokens or the scheduler still has requests). Otherwise (or with nothing to schedule and a
  non-empty queue) block on the oldest batch: T = max(T, its end), ``update_from_output``.
* Stall (not in vLLM, whose loop would spin in real time): a 0-token schedule while the
  scheduler holds unfinished requests and no batch with tokens is in flight cannot change
  anything, so T jumps to the next arrival; with no arrival left the run fails (deadlock).

Output: one ``steps`` entry per ``schedule()`` call that scheduled >= 1 token; ``batch`` in the
scheduler's own order (``SchedulerOutput.num_scheduled_tokens``); ``preempted`` from
``SchedulerOutput.preempted_req_ids``. ``num_cached_tokens`` is vLLM's own ``PrefillStats``
figure (first admission); ``prefix_cache`` sums vLLM's ``PrefixCacheStats``: ``queries``/``hits``
count first admissions, ``preempted_queries``/``preempted_hits`` re-admissions.
"""
import json
import os
import sys
import tempfile
from collections import deque

import numpy as np

VOCAB = 32000
MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)

SCENARIO_KEYS = {
    "block_size": int, "num_gpu_blocks": int, "max_num_batched_tokens": int,
    "max_num_seqs": int, "max_model_len": int, "long_prefill_token_threshold": int,
    "enable_chunked_prefill": bool, "policy": str, "async_scheduling": bool,
    "enable_prefix_caching": bool, "scheduler_reserve_full_isl": bool,
    "watermark": (int, float), "step_time": dict, "requests": list,
}
REQUEST_KEYS = {"arrival": (int, float), "prompt_tokens": int, "output_tokens": int,
                "priority": int, "block_keys": list}


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file, key and value."""


class RunError(RuntimeError):
    """A run that cannot finish (a request can never run) or cannot be reported."""


def _check(cond, path, where, value, why):
    if not cond:
        raise ScenarioError(f"{path}: {where}={value!r}: {why}")


def _typed(obj, key, kind, path, where):
    if key not in obj:
        raise ScenarioError(f"{path}: {where}: missing")
    value = obj[key]
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    _check(ok, path, where, value, f"must be {getattr(kind, '__name__', 'a number')}")
    return value


def load_scenarios(path):
    """Read a scenario file (one scenario, or a list of them); return (list, was_list).

    Raises ScenarioError naming the file, the bad key and its value."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ScenarioError(f"{path}: cannot read scenario: {e}") from None
    many = isinstance(data, list)
    scenarios = data if many else [data]
    for k, sc in enumerate(scenarios):
        check_scenario(sc, path, f"[{k}]." if many else "")
    return scenarios, many


def check_scenario(sc, path, at=""):
    """Validate one scenario dict; ``at`` prefixes key names in messages."""
    _check(isinstance(sc, dict), path, at + "scenario", type(sc).__name__, "must be an object")
    for key, kind in SCENARIO_KEYS.items():
        _typed(sc, key, kind, path, at + key)
    for key in ("block_size", "num_gpu_blocks", "max_num_batched_tokens", "max_num_seqs",
                "max_model_len"):
        _check(sc[key] >= 1, path, at + key, sc[key], "must be >= 1")
    _check(sc["policy"] in ("fcfs", "priority"), path, at + "policy", sc["policy"],
           "must be fcfs or priority")
    _check(0.0 <= sc["watermark"] < 1.0, path, at + "watermark", sc["watermark"],
           "must be in [0, 1)")
    for key in ("const", "per_token"):
        value = _typed(sc["step_time"], key, (int, float), path, f"{at}step_time.{key}")
        _check(value >= 0, path, f"{at}step_time.{key}", value, "must be >= 0")
    last = 0.0
    for i, r in enumerate(sc["requests"]):
        where = f"{at}requests[{i}]"
        _check(isinstance(r, dict), path, where, r, "must be an object")
        for key, kind in REQUEST_KEYS.items():
            _typed(r, key, kind, path, f"{where}.{key}")
        _check(r["arrival"] >= last, path, f"{where}.arrival", r["arrival"],
               "requests must be sorted by arrival, from 0")
        last = r["arrival"]
        for key in ("prompt_tokens", "output_tokens"):
            _check(r[key] >= 1, path, f"{where}.{key}", r[key], "must be >= 1")
        total = r["prompt_tokens"] + r["output_tokens"]
        _check(total <= sc["max_model_len"], path, f"{where}.prompt_tokens+output_tokens",
               total, f"exceeds max_model_len {sc['max_model_len']}")
        keys = r["block_keys"]
        _check(len(keys) * sc["block_size"] < total + sc["block_size"], path,
               f"{where}.block_keys", len(keys), "more keyed blocks than the sequence has")
        _check(all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < 2**63
                   for k in keys), path, f"{where}.block_keys", keys,
               "keys must be int64 >= 0")


def _mix(x):
    """splitmix64 finalizer, elementwise on uint64 arrays."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & MASK64
        return x ^ (x >> np.uint64(31))


def _draw(seed, counters):
    """Token ids in [1, VOCAB) of the counter-based stream seeded by ``seed``."""
    with np.errstate(over="ignore"):
        start = _mix(np.array([seed], dtype=np.uint64))[0]
        ids = _mix(start + np.asarray(counters, dtype=np.uint64))
    return (np.uint64(1) + ids % np.uint64(VOCAB - 1)).astype(np.int64)


def _request_seed(i):
    """Seed of request i's own stream; distinct from every block key (those are < 2**63)."""
    return (1 << 63) | i


def token_sequence(i, req, block_size):
    """Request i's full token ids (prompt then output) as a list of ints."""
    total = req["prompt_tokens"] + req["output_tokens"]
    toks = _draw(_request_seed(i), np.arange(total))
    for k, key in enumerate(req["block_keys"]):
        lo, hi = k * block_size, min((k + 1) * block_size, total)
        toks[lo:hi] = _draw(key, np.arange(hi - lo))
    return toks.tolist()


def token_at(i, seq, pos):
    """Id at position ``pos`` of request i: its sequence, or its own stream past the end."""
    return seq[pos] if pos < len(seq) else int(_draw(_request_seed(i), [pos])[0])


def _write_model_dir(root, max_model_len):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
           "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 2,
           "num_hidden_layers": 1, "vocab_size": VOCAB, "rms_norm_eps": 1e-5,
           "max_position_embeddings": max_model_len, "torch_dtype": "float16"}
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(cfg, f)
    return root


def _vllm_config(sc, model_dir):
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig

    sched_cfg = SchedulerConfig(
        max_num_seqs=sc["max_num_seqs"], max_num_batched_tokens=sc["max_num_batched_tokens"],
        max_model_len=sc["max_model_len"],
        long_prefill_token_threshold=sc["long_prefill_token_threshold"],
        enable_chunked_prefill=sc["enable_chunked_prefill"], policy=sc["policy"],
        async_scheduling=sc["async_scheduling"],
        scheduler_reserve_full_isl=sc["scheduler_reserve_full_isl"],
        watermark=float(sc["watermark"]), is_encoder_decoder=False)
    model_cfg = ModelConfig(model=model_dir, skip_tokenizer_init=True,
                            max_model_len=sc["max_model_len"], dtype="float16")
    cache_cfg = CacheConfig(block_size=sc["block_size"],
                            enable_prefix_caching=sc["enable_prefix_caching"])
    return VllmConfig(scheduler_config=sched_cfg, model_config=model_cfg,
                      cache_config=cache_cfg, device_config=DeviceConfig(device="cpu"))


def build_scheduler(sc, model_dir, label):
    """vLLM's Scheduler (or AsyncScheduler) set up as scenario ``sc`` says.

    Returns (scheduler, block hasher, batch queue size); ``label`` names the scenario in errors."""
    import torch
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    bs = sc["block_size"]
    try:
        vllm_cfg = _vllm_config(sc, model_dir)
    except ValueError as e:  # pydantic's ValidationError: settings vLLM refuses
        msg = e.errors()[0]["msg"] if hasattr(e, "errors") else str(e)
        raise ScenarioError(f"{label}: vLLM refuses the settings: {msg}") from None
    got = {"enable_prefix_caching": vllm_cfg.cache_config.enable_prefix_caching,
           "max_model_len": vllm_cfg.model_config.max_model_len,
           **{k: getattr(vllm_cfg.scheduler_config, k) for k in (
               "async_scheduling", "enable_chunked_prefill", "scheduler_reserve_full_isl",
               "max_num_batched_tokens", "max_num_seqs", "long_prefill_token_threshold",
               "policy", "watermark")}}
    changed = {k: v for k, v in got.items() if v != sc[k]}
    if changed:
        raise ScenarioError(f"{label}: vLLM overrode settings: {changed}")
    queue_size = vllm_cfg.max_concurrent_batches  # > 1: step_with_batch_queue

    vllm_cfg.cache_config.num_gpu_blocks = sc["num_gpu_blocks"]
    kv_cfg = KVCacheConfig(
        num_blocks=sc["num_gpu_blocks"], kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer"], FullAttentionSpec(
            block_size=bs, num_kv_heads=1, head_size=1, dtype=torch.float32))])
    cls = AsyncScheduler if sc["async_scheduling"] else Scheduler
    sched = cls(vllm_config=vllm_cfg, kv_cache_config=kv_cfg, block_size=bs, log_stats=True,
                structured_output_manager=StructuredOutputManager(vllm_cfg))
    hash_fn = get_hash_fn_by_name(vllm_cfg.cache_config.prefix_caching_hash_algo)
    init_none_hash(hash_fn)
    return sched, get_request_block_hasher(bs, hash_fn), queue_size


class Batch:
    """One schedule() result on its way through the (simulated) GPU."""

    __slots__ = ("out", "step", "end", "samples")

    def __init__(self, out, step, end, samples):
        self.out, self.step, self.end, self.samples = out, step, end, samples


class Sim:
    """The engine core loop of vLLM 0.33 around a real scheduler, on simulated time."""

    def __init__(self, sc, sched, hasher, queue_size):
        from vllm.sampling_params import SamplingParams
        from vllm.v1.request import Request

        self.sched, self.queue_size = sched, queue_size
        self.const = float(sc["step_time"]["const"])
        self.per_token = float(sc["step_time"]["per_token"])
        self.specs = sc["requests"]
        self.seqs = [token_sequence(i, r, sc["block_size"]) for i, r in enumerate(self.specs)]
        self.reqs = [
            Request(request_id=str(i), prompt_token_ids=seq[:r["prompt_tokens"]],
                    sampling_params=SamplingParams(max_tokens=r["output_tokens"],
                                                   ignore_eos=True),
                    pooling_params=None, arrival_time=float(r["arrival"]),
                    priority=r["priority"], block_hasher=hasher)
            for i, (r, seq) in enumerate(zip(self.specs, self.seqs))]
        self.t = 0.0
        self.gpu_free = 0.0
        self.next_arrival = 0
        self.queue = deque()  # newest at the left, as in step_with_batch_queue
        self.steps = []
        self.empty_batches = 0
        n = len(self.specs)
        self.first_step, self.finish_step = [None] * n, [None] * n
        self.first_time, self.finish_time = [None] * n, [None] * n
        self.cached = [0] * n
        self.cache_stats = dict.fromkeys(
            ("queries", "hits", "preempted_queries", "preempted_hits"), 0)

    def admit_arrivals(self):
        while (self.next_arrival < len(self.specs)
               and self.specs[self.next_arrival]["arrival"] <= self.t):
            self.sched.add_request(self.reqs[self.next_arrival])
            self.next_arrival += 1

    def schedule(self):
        """schedule() at T and start the batch on the GPU; returns the Batch."""
        out = self.sched.schedule()
        n = out.total_num_scheduled_tokens
        start = max(self.t, self.gpu_free)
        end = start + (self.const + self.per_token * n if n else 0.0)
        self.gpu_free = end
        preempted = sorted(int(r) for r in out.preempted_req_ids)
        if not n:
            self.empty_batches += 1
            if preempted:
                raise RunError(f"schedule() preempted {preempted} but scheduled no token")
            return Batch(out, None, end, {})
        samples = {}
        for req_id in out.num_scheduled_tokens:
            req = self.sched.requests[req_id]
            if not req.is_prefill_chunk:  # computed tokens reach the known (and pending) ones
                i = int(req_id)
                samples[req_id] = token_at(i, self.seqs[i], req.num_computed_tokens)
        self.steps.append({"t_start": start, "t_end": end,
                           "batch": [[int(r), k] for r, k in out.num_scheduled_tokens.items()],
                           "preempted": preempted})
        return Batch(out, len(self.steps) - 1, end, samples)

    def finish(self, batch):
        """Block on ``batch``: T = its end, then feed the fake model output back."""
        from vllm.v1.outputs import ModelRunnerOutput

        self.t = max(self.t, batch.end)
        ids = list(batch.out.num_scheduled_tokens)
        mro = ModelRunnerOutput(
            req_ids=ids, req_id_to_index={r: k for k, r in enumerate(ids)},
            sampled_token_ids=[[batch.samples[r]] if r in batch.samples else [] for r in ids])
        for client in self.sched.update_from_output(batch.out, mro).values():
            for o in client.outputs:
                self.record_output(int(o.request_id), o, batch.step)
            stats = client.scheduler_stats
            if stats is not None and stats.prefix_cache_stats is not None:
                for key in self.cache_stats:
                    self.cache_stats[key] += getattr(stats.prefix_cache_stats, key)

    def record_output(self, i, o, step):
        if o.new_token_ids and self.first_step[i] is None:
            self.first_step[i], self.first_time[i] = step, self.t
        if o.prefill_stats is not None:
            self.cached[i] = o.prefill_stats.num_cached_tokens
        if o.finish_reason is not None:
            self.finish_step[i], self.finish_time[i] = step, self.t

    def stalled(self, batch):
        """A 0-token schedule with unfinished requests and no tokens in flight."""
        return (batch.step is None and self.sched.get_num_unfinished_requests() > 0
                and all(b.step is None for b in self.queue))

    def on_stall(self):
        if self.next_arrival >= len(self.specs):
            waiting = sorted(int(r) for r, q in self.sched.requests.items() if not q.is_finished())
            raise RunError(f"deadlock at t={self.t}: requests {waiting[:10]} can never run")
        self.t = max(self.t, self.specs[self.next_arrival]["arrival"])

    def step_sync(self):
        batch = self.schedule()
        if self.stalled(batch):
            self.on_stall()
        self.finish(batch)

    def step_async(self):
        if self.sched.has_requests():
            batch = self.schedule()
            self.queue.appendleft(batch)
            if self.stalled(batch):
                self.on_stall()
            if len(self.queue) < self.queue_size and (
                    batch.step is not None or self.sched.has_requests()):
                return
        elif not self.queue:
            return
        self.finish(self.queue.pop())

    def run(self):
        step = self.step_async if self.queue_size > 1 else self.step_sync
        while True:
            self.admit_arrivals()
            if not (self.sched.has_requests() or self.queue):
                if self.next_arrival >= len(self.specs):
                    break
                self.t = max(self.t, self.specs[self.next_arrival]["arrival"])
                continue
            step()
        missing = [i for i, s in enumerate(self.finish_step) if s is None]
        if missing:
            raise RunError(f"requests {missing[:10]} never finished")
        return self.report()

    def report(self):
        requests = [{"first_token_step": self.first_step[i], "finish_step": self.finish_step[i],
                     "first_token_time": self.first_time[i], "finish_time": self.finish_time[i],
                     "num_preemptions": req.num_preemptions, "num_cached_tokens": self.cached[i]}
                    for i, req in enumerate(self.reqs)]
        return {"steps": self.steps, "empty_batches": self.empty_batches, "requests": requests,
                "preemptions": sum(r["num_preemptions"] for r in requests),
                "prefix_cache": self.cache_stats}


def run(sc, label="scenario"):
    """Run a validated scenario dict through vLLM and return the report dict."""
    with tempfile.TemporaryDirectory(prefix="vllm-driver-") as root:
        model_dir = _write_model_dir(root, sc["max_model_len"])
        sched, hasher, queue_size = build_scheduler(sc, model_dir, label)
        try:
            return Sim(sc, sched, hasher, queue_size).run()
        except RunError as e:
            raise RunError(f"{label}: {e}") from None


def main(argv):
    if len(argv) != 3:
        print("usage: python vllm_driver.py SCENARIO.json OUT.json", file=sys.stderr)
        return 2
    try:
        scenarios, many = load_scenarios(argv[1])
        results = [run(sc, f"{argv[1]}[{k}]" if many else argv[1])
                   for k, sc in enumerate(scenarios)]
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with open(argv[2], "w") as f:
        json.dump(results if many else results[0], f)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    sys.exit(main(sys.argv))
