"""Run the numba engine directly on tiny hand-made workloads (no hardware tables)."""
import numpy as np

from tailgym.engine import EngineConfig, EngineState, run
from tailgym.engine import layout as L
from tailgym.policies import get_policy


def linear_coef(const=0.0, prefill=0.0, decode=0.0, context=0.0, attention=0.0):
    coef = np.zeros((2, L.N_FEATURES))
    coef[0] = [const, prefill, decode, context, attention]
    return coef


def simulate_arrays(arrival, prompt, output, coef, policy="fcfs", **config):
    config.setdefault("check", True)
    cfg = EngineConfig(**config)
    spec = get_policy(policy)
    state = EngineState(np.asarray(arrival, float), np.asarray(prompt), np.asarray(output), cfg)
    log = run(state, cfg, coef, spec, spec.param_array(), record_steps=True)
    return state, log
