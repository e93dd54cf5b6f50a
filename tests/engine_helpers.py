"""Run the numba engine directly on tiny hand-made workloads (no hardware tables)."""
import numpy as np

from tailgym.engine import EngineConfig, EngineState, run
from tailgym.engine import layout as L
from tailgym.policies import resolve


def linear_coef(const=0.0, prefill=0.0, decode=0.0, context=0.0, attention=0.0):
    coef = np.zeros((2, L.N_FEATURES))
    coef[0] = [const, prefill, decode, context, attention]
    return coef


def simulate_arrays(arrival, prompt, output, coef, policy="fcfs", policy_args=None, seed=0,
                    **config):
    config.setdefault("check", True)
    cfg = EngineConfig(**config)
    spec, knobs, params = resolve(policy, policy_args, coef, cfg.max_num_seqs)
    output = np.asarray(output)
    state = EngineState(np.asarray(arrival, float), np.asarray(prompt), output, cfg,
                        hint=spec.hint(output, knobs, np.random.default_rng(seed)),
                        pstate=spec.pstate(knobs))
    log = run(state, cfg, coef, spec, params, record_steps=True)
    return state, log
