"""The gamma-Boost function and the work units shared by the size-based policies.

``b_gamma(w) = (1/gamma) ln(1 / (1 - exp(-gamma w)))`` (Yu & Scully): a job of ``w`` seconds
of work is treated as if it had arrived ``b_gamma(w)`` earlier; ``gamma <= 0`` gives no boost
(FCFS order, SGLang's fallback). Work is measured in seconds:
``alpha_p`` per prompt token, ``alpha_d`` per output token (from the step-time model).
"""
import numpy as np

from ..jit import kernel

MAX_BOOST = 1e9


@kernel
def b_gamma(gamma, work):
    if gamma <= 0.0:
        return 0.0
    if work <= 0.0:
        return MAX_BOOST
    return -np.log(-np.expm1(-gamma * work)) / gamma


@kernel
def job_work(alpha_p, alpha_d, prompt, output):
    """Seconds of server work of a job with ``prompt`` and ``output`` tokens."""
    return alpha_p * prompt + alpha_d * output
