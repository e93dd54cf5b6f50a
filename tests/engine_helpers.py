"""Run the numba engine directly on tiny hand-made workloads (no hardware tables)."""
import numpy as np

from tailgym.engine import EngineConfig, EngineState, run
from tailgym.engine import layout as L
from tailgym.policies import resolve


def linear_coef(const=0.0, prefill=0.0, decode=0.0, context=0.0, attention=0.0):
    coef = np.zeros((2, L.N_FEATURES))
    coef[0, :5] = [const, prefill, decode, context, attention]
    return coef


# "vLLM 0.33 with these features off": the synchronous engine without prefix caching or
# full-prompt reservation, in which hand-computed timings stay short
FEATURES_OFF = {"async_scheduling": False, "enable_prefix_caching": False,
                "scheduler_reserve_full_isl": False}


def simulate_arrays(arrival, prompt, output, coef, policy="fcfs", policy_args=None, seed=0,
                    usable_blocks=None, block_keys=None, record_batches=False, max_steps=None,
                    **config):
    """Run the engine on arrays; ``usable_blocks`` gives the KV blocks that hold tokens (vLLM's
    ``num_gpu_blocks`` is one more: block 0 is reserved). Features default to off.
    ``max_steps`` caps the batches run (a livelock then returns with requests unfinished
    instead of hanging)."""
    config.setdefault("check", True)
    for key, value in FEATURES_OFF.items():
        config.setdefault(key, value)
    if usable_blocks is not None:
        config["num_gpu_blocks"] = usable_blocks + 1
    cfg = EngineConfig(**config)
    spec, knobs, params = resolve(policy, policy_args, coef, cfg.max_num_seqs)
    output = np.asarray(output)
    state = EngineState(np.asarray(arrival, float), np.asarray(prompt), output, cfg,
                        hint=spec.hint(output, knobs, np.random.default_rng(seed)),
                        pstate=spec.pstate(knobs), block_keys=block_keys)
    log, blog = run(state, cfg, coef, spec, params, record_steps=True,
                    record_batches=record_batches, max_steps=max_steps)
    return (state, log, blog) if record_batches else (state, log)
