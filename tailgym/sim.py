"""``tailgym.simulate``: a workload, a model on a GPU and a policy in; a ``Report`` out."""
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import hardware
from .engine import EngineConfig, EngineError, EngineState, run
from .engine import layout as L
from .admission import admission_check
from .hardware import StepTimeModel
from .load import saturation_rate
from .metrics import Report
from .policies import POLICIES, PolicySpec, get_policy, resolve
from .workload import Workload, load_workload
from .workload.prefix import engine_block_keys

SWAP_SPACE_GIB = 4.0  # vLLM v0 default swap space per GPU
POLICY_STREAM = 7    # random stream of the policy's pre-drawn numbers (predictions, scores)


def build_engine(model: str = "llama3-8b", gpu: str = "h100-80gb", *, tp: int = 1,
                 kv_blocks: int | None = None, max_num_batched_tokens: int | None = None,
                 max_num_seqs: int | None = None, profile=None,
                 preemption_mode: str = "recompute", swap_space_gib: float = SWAP_SPACE_GIB,
                 gpu_memory_utilization: float = 0.9, block_size: int = 16,
                 long_prefill_token_threshold: int = 0, enable_chunked_prefill: bool = True,
                 watermark: float = 0.0, max_model_len: int | None = None,
                 async_scheduling: bool = True, enable_prefix_caching: bool = True,
                 scheduler_reserve_full_isl: bool = True, check: bool = False):
    """Engine knobs and step-time model for ``model`` on ``gpu`` (vLLM 0.33's defaults for the
    GPU where a knob is None). ``profile`` is a profile JSON path or shipped name (default: the
    roofline model). ``watermark`` is the share of blocks kept free at admission while a
    request runs. ``kv_blocks`` is vLLM's ``num_gpu_blocks`` (block 0 is reserved). The three
    flags are vLLM's defaults; all off gives "vLLM with these features off"."""
    m, g = hardware.get_model(model), hardware.get_gpu(gpu)
    defaults = hardware.default_engine_knobs(g)
    if kv_blocks is None:
        kv_blocks = hardware.kv_capacity_blocks(m, g, tp=tp, block_size=block_size,
                                                gpu_memory_utilization=gpu_memory_utilization)
    block_bytes = hardware.kv_block_bytes(m, block_size=block_size, tp=tp)
    if not 0.0 <= watermark < 1.0:
        raise ValueError(f"watermark must be in [0, 1), got {watermark}")
    budget = int(max_num_batched_tokens or defaults["max_num_batched_tokens"])
    if max_model_len is None:
        max_model_len = m.max_context if enable_chunked_prefill else min(m.max_context, budget)
    config = EngineConfig(
        max_num_batched_tokens=budget,
        max_num_seqs=int(max_num_seqs or defaults["max_num_seqs"]),
        num_gpu_blocks=int(kv_blocks),
        block_size=block_size,
        num_host_blocks=int(swap_space_gib * 2**30 // block_bytes) if preemption_mode == "swap" else 0,
        preemption_mode=preemption_mode,
        long_prefill_token_threshold=long_prefill_token_threshold,
        enable_chunked_prefill=enable_chunked_prefill,
        watermark_blocks=int(np.floor(watermark * kv_blocks)),
        max_model_len=int(max_model_len),
        swap_s_per_block=block_bytes / g.host_link_bw,
        async_scheduling=bool(async_scheduling),
        enable_prefix_caching=bool(enable_prefix_caching),
        scheduler_reserve_full_isl=bool(scheduler_reserve_full_isl),
        check=check,
    )
    steps = hardware.load_profile(profile) if profile is not None else hardware.roofline(m, g, tp)
    return config, steps


def new_state(wl: Workload, config: EngineConfig, refused, hint, pstate) -> EngineState:
    """The engine state of a run of ``wl`` (with the prefix keys of its blocks when prefix
    caching is on)."""
    keys = engine_block_keys(wl, config.block_size) if config.enable_prefix_caching else None
    return EngineState(wl.arrival_s, wl.prompt_tokens, wl.output_tokens, config, refused,
                       hint=hint, pstate=pstate, block_keys=keys)


def check_rate_choice(rate, rate_scale, load) -> None:
    """At most one of ``rate``, ``rate_scale`` and ``load`` is given; a load is > 0."""
    given = [k for k, v in (("rate", rate), ("rate_scale", rate_scale), ("load", load)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of rate, rate_scale, load (got {', '.join(given)})")
    if load is not None and not float(load) > 0:
        raise ValueError(f"load must be > 0, got {load}")


def apply_rate(workload: Workload, config: EngineConfig, coef, *, rate=None, rate_scale=None,
               load=None) -> tuple[Workload, dict]:
    """Rescale arrivals by one of ``rate`` (req/s), ``rate_scale`` (x the trace's rate) or
    ``load`` (fraction of the engine's measured saturation throughput)."""
    check_rate_choice(rate, rate_scale, load)
    info = {}
    if rate is not None:
        workload = workload.with_rate(float(rate))
    elif rate_scale is not None:
        workload = workload.with_rate_scale(float(rate_scale))
    elif load is not None:
        info["saturation_rps"] = saturation_rate(workload, config, coef)
        info["load"] = float(load)
        workload = workload.with_rate(float(load) * info["saturation_rps"])
    if len(workload) > 1 and workload.duration_s > 0:
        info["rate_rps"] = workload.mean_rate
    return workload, info


def external_hint(hint, workload: Workload) -> np.ndarray:
    """``hint`` as float64, checked: one finite value > 0 per request of ``workload``."""
    h = np.array(hint, dtype=np.float64)
    if h.shape != (len(workload),):
        raise ValueError(f"hint has shape {h.shape}; expected ({len(workload)},), one predicted "
                         f"output length per request of {workload.name}")
    bad = np.flatnonzero(~(np.isfinite(h) & (h > 0)))
    if bad.size:
        raise ValueError(f"hint[{bad[0]}] = {float(h[bad[0]])}: predicted output lengths must be finite "
                         f"and > 0 ({bad.size} bad values)")
    return h


@dataclass
class Run:
    """Everything a run needs, prepared from the user's arguments (see ``prepare``)."""

    workload: Workload
    config: EngineConfig
    steps: StepTimeModel
    spec: PolicySpec
    params: np.ndarray
    state: EngineState
    rejected: list
    info: dict  # for the report's config: names, knobs, rates

    def report(self, wall_seconds: float, *, warmup_s: float = 0.0, slo=None,
               step_log=None, batches=None, fleet=None, partial: bool = False) -> Report:
        """The report of the finished run; every request must be finished or rejected
        unless ``partial`` (an environment's episode cut short)."""
        state = self.state
        counts = state.status_counts()
        if not partial and counts["finished"] + counts["rejected"] != state.n_requests:
            raise EngineError(f"requests unaccounted for at the end of the run: {counts}")
        start = self.workload.arrival_s[0] if len(self.workload) else 0.0
        return Report(
            requests=request_table(state), rejected=self.rejected,
            config={**self.info, **asdict(self.config)},
            steps=int(state.s[L.S_STEPS]),
            simulated_seconds=float(state.t[L.T_NOW] - start),
            busy_seconds=float(state.t[L.T_BUSY]), wall_seconds=wall_seconds,
            preemptions_recompute=int(state.s[L.S_PREEMPT_RECOMPUTE]),
            preemptions_swap=int(state.s[L.S_PREEMPT_SWAP]),
            guard_overrides=int(state.s[L.S_GUARD_OVERRIDES]),
            warmup_s=warmup_s, slo=dict(slo or {}), step_log=step_log,
            batches=batches,
            empty_batches=int(state.s[L.S_EMPTY_BATCHES]), fleet=fleet)


def prepare(workload, policy: str = "fcfs", *, model: str = "llama3-8b",
            gpu: str = "h100-80gb", seed: int = 0, rate: float | None = None,
            rate_scale: float | None = None, load: float | None = None,
            policy_args: dict | None = None, on_unfit: str = "error", data_dir=None,
            columns=None, hint=None, **knobs) -> Run:
    """Resolve the workload, engine, step-time model and policy into a ready ``Run``.

    ``hint``: optional predicted output length of each request of the loaded workload
    (finite, > 0), used instead of the policy's own draw (``PolicySpec.hint``), e.g. a
    learned predictor's output; only for policies that read output lengths
    (``srpt-predicted``, ``sjf-oracle``...). Recorded as ``"hint": "external"``.
    """
    if not get_policy(policy).reads_output_length and hint is not None:  # unknown names fail first
        readers = ", ".join(n for n, p in POLICIES.items() if p.reads_output_length)
        raise ValueError(f"policy {policy!r} does not read output lengths, so it takes no hint; "
                         f"policies that do: {readers}")
    wl = load_workload(workload, data_dir=data_dir, seed=seed, columns=columns)
    config, steps = build_engine(model, gpu, **knobs)
    spec, policy_knobs, params = resolve(policy, policy_args, steps.coef(), config.max_num_seqs)
    wl, rate_info = apply_rate(wl, config, steps.coef(), rate=rate, rate_scale=rate_scale, load=load)
    refused, rejected = admission_check(wl, config, on_unfit)
    external = hint is not None
    if external:
        hint = external_hint(hint, wl)
    else:
        hint = spec.hint(wl.output_tokens, policy_knobs, np.random.default_rng([seed, POLICY_STREAM]))
    state = new_state(wl, config, refused, hint, spec.pstate(policy_knobs))
    info = {"workload": wl.name, "policy": policy, "policy_args": policy_knobs,
            "model": getattr(model, "name", model),
            "gpu": gpu, "seed": seed, "step_model": steps.name, **rate_info}
    if external:
        info["hint"] = "external"
    return Run(wl, config, steps, spec, params, state, rejected, info)


def simulate(workload, policy: str = "fcfs", *, warmup_s: float = 0.0,
             slo: dict[str, float] | None = None, progress: bool = False,
             record_steps: bool = False, record_batches: bool = False, replicas: int | None = None,
             router: str = "round-robin", router_args: dict | None = None,
             router_refresh_s: float = 0.0, **kwargs) -> Report:
    """Replay ``workload`` (a data set name, a CSV path, a synthetic spec or a ``Workload``)
    through one engine running ``policy`` and return the report.

    ``replicas`` = N simulates a fleet of N identical engines (or GPU groups, e.g.
    ``{"h100-80gb": 4, "a100-80gb": 4}``), each running ``policy``, behind ``router`` (a name
    of ``tailgym.fleet.ROUTERS``, its knobs ``router_args``), which reads replica signals
    refreshed every ``router_refresh_s`` simulated seconds (0: fresh); ``load`` is then per
    replica (arrivals at ``load`` x the sum of the replicas' saturation rates) and the
    report adds ``requests["replica"]`` and ``report.fleet`` (see
    ``tailgym.fleet.sim``). ``replicas=1`` gives the single engine's results exactly.

    ``kwargs`` are those of ``prepare``: ``model``, ``gpu``, ``seed``, ``rate``,
    ``rate_scale``, ``load``, ``policy_args``, ``on_unfit``, ``data_dir``, ``columns``, ``hint``
    (predicted output lengths replacing the policy's own), and the
    engine knobs of ``build_engine``: ``tp``, ``kv_blocks``, ``max_num_batched_tokens``,
    ``max_num_seqs``, ``profile``, ``preemption_mode``, ``swap_space_gib``,
    ``gpu_memory_utilization``, ``block_size``, ``long_prefill_token_threshold``,
    ``enable_chunked_prefill``, ``watermark``, ``max_model_len``, ``async_scheduling``,
    ``enable_prefix_caching``, ``scheduler_reserve_full_isl``, ``check``.
    ``record_batches`` fills ``report.batches`` (one dict per engine step).
    """
    if replicas is not None:
        from .fleet.sim import simulate_fleet
        return simulate_fleet(workload, policy, replicas=replicas, router=router,
                              router_args=router_args, router_refresh_s=router_refresh_s,
                              warmup_s=warmup_s, slo=slo, progress=progress,
                              record_steps=record_steps, record_batches=record_batches, **kwargs)
    r = prepare(workload, policy, **kwargs)
    start = time.perf_counter()
    log, blog = run(r.state, r.config, r.steps.coef(), r.spec, r.params, progress=progress,
                    record_steps=record_steps or record_batches, record_batches=record_batches)
    return r.report(time.perf_counter() - start, warmup_s=warmup_s, slo=slo,
                    step_log=log if record_steps else None,
                    batches=None if blog is None else batch_list(log, blog))


def batch_list(step_log: np.ndarray, batch_log: np.ndarray) -> list[dict]:
    """``report.batches`` from the step log and the batch log of a run."""
    steps = [{"t_start": float(row[L.L_START]), "t_end": float(row[L.L_END]), "batch": [],
              "preempted": []} for row in step_log]
    for step, kind, req, tokens in batch_log.tolist():
        if step < len(steps):
            if kind == L.BLK_SCHEDULED:
                steps[step]["batch"].append([req, tokens])
            else:
                steps[step]["preempted"].append(req)
    return steps


def request_table(state: EngineState) -> dict[str, np.ndarray]:
    """Named per-request arrays of a finished run."""
    rf, ri = state.rf, state.ri
    gen = ri[:, L.GENERATED]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_gap = np.where(gen > 1, rf[:, L.SUM_GAP] / (gen - 1), np.nan)
    return {
        "arrival": rf[:, L.ARRIVAL].copy(),
        "prompt_tokens": ri[:, L.PROMPT].copy(),
        "output_tokens": state.target.copy(),
        "first_scheduled": rf[:, L.FIRST_SCHED].copy(),
        "first_token": rf[:, L.FIRST_TOKEN].copy(),
        "completion": rf[:, L.DONE].copy(),
        "mean_gap": mean_gap,
        "max_gap": np.where(gen > 1, rf[:, L.MAX_GAP], np.nan),
        "preemptions": ri[:, L.N_PREEMPT].copy(),
        "swaps": ri[:, L.N_SWAP].copy(),
        "swapped_tokens": ri[:, L.SWAPPED_TOKENS].copy(),
        "recomputed_tokens": ri[:, L.RECOMPUTED_TOKENS].copy(),
        "cached_tokens": ri[:, L.CACHED_TOKENS].copy(),
        "hit_tokens": ri[:, L.HIT_TOKENS].copy(),
        "finished": ri[:, L.STATUS] == L.ST_FINISHED,
        "rejected": ri[:, L.STATUS] == L.ST_REJECTED,
    }
