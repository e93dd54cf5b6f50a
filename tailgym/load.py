"""Saturation throughput of an engine for a workload, measured by the simulator itself.

``--load RHO`` means: arrivals at RHO times the rate the engine sustains when every request
of the workload is queued at t=0 (FCFS; shared prefixes served from the prefix cache as in a
run). Results are cached on disk by a hash of the workload's lengths and prefix content, the
engine configuration and the step-time coefficients.
"""
import hashlib
import json
import os

import numpy as np

from .data import cache_root
from .engine import EngineState, run
from .engine import layout as L
from .policies import get_policy
from .admission import admission_check
from .workload.prefix import engine_block_keys


def _key(workload, config, coef) -> str:
    h = hashlib.sha256()
    lengths = (workload.prompt_tokens, workload.output_tokens, workload.hash_ids,
               workload.hash_offsets, workload.hashed_tokens)  # arrivals do not matter
    for a in (*(a for a in lengths if a is not None), np.asarray(coef, np.float64)):
        h.update(np.ascontiguousarray(a).tobytes())
    fcfs = get_policy("fcfs")
    for a in config.arrays(fcfs):
        h.update(a.tobytes())
    return h.hexdigest()


def measure_saturation(workload, config, coef) -> float:
    """Requests/s completed with all requests of ``workload`` arriving at once."""
    refused, _ = admission_check(workload, config, on_unfit="reject")
    keep = ~refused
    if not keep.any():
        raise ValueError(f"no request of {workload.name} fits the engine; cannot measure saturation")
    kept = workload.take(np.flatnonzero(keep))
    n = len(kept)
    keys = engine_block_keys(kept, config.block_size) if config.enable_prefix_caching else None
    state = EngineState(np.zeros(n), kept.prompt_tokens, kept.output_tokens, config,
                        block_keys=keys)
    fcfs = get_policy("fcfs")
    run(state, config, coef, fcfs, fcfs.param_array())
    return n / float(state.t[L.T_NOW])


def saturation_rate(workload, config, coef, *, cache: bool = True) -> float:
    """Cached ``measure_saturation``; the cache lives in the tailgym cache directory."""
    path = cache_root() / "saturation.json"
    key = _key(workload, config, coef)
    table = {}
    if cache and path.exists():
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        if key in table:
            return float(table[key])
    rate = measure_saturation(workload, config, coef)
    if cache:
        table[key] = rate
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table))
        os.replace(tmp, path)
    return rate
