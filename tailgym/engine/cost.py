"""Step-time model inside the engine: the features of a batch and the time they cost
(the feature set and coefficient layout are documented in ``tailgym.hardware``)."""
from numba import njit

from .layout import B_CONTEXT, B_DECODE, B_NEW


@njit(cache=True, inline="always")
def batch_features(batch, nb, x):
    """Fill ``x`` with the step-time features of the first ``nb`` batch entries (rows
    ``B_*`` of ``layout``): const, prefill tokens, decode sequences, context tokens read,
    prefill attention (causal query-key pairs)."""
    x[0] = 1.0
    x[1] = 0.0
    x[2] = 0.0
    x[3] = 0.0
    x[4] = 0.0
    for b in range(nb):
        n = batch[B_NEW, b]
        c = batch[B_CONTEXT, b]
        if batch[B_DECODE, b] == 1:
            x[2] += 1.0
            x[3] += c + 1.0
        else:
            x[1] += n
            x[3] += c + n
            x[4] += n * (c + 0.5 * n)


@njit(cache=True, inline="always")
def step_time(coef, x):
    """Roofline form: the larger of the compute and memory times of the batch."""
    compute = 0.0
    memory = 0.0
    for f in range(x.shape[0]):
        compute += coef[0, f] * x[f]
        memory += coef[1, f] * x[f]
    return max(compute, memory)


@njit(cache=True)
def recompute_seconds(coef, tokens):
    """Marginal step time of prefilling ``tokens`` again (constant term excluded)."""
    c = float(tokens)
    compute = coef[0, 1] * c + coef[0, 3] * c + coef[0, 4] * 0.5 * c * c
    memory = coef[1, 1] * c + coef[1, 3] * c + coef[1, 4] * 0.5 * c * c
    return max(compute, memory)
