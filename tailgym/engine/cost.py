"""Step-time model inside the engine: the features of a batch and the time they cost
(the feature set and coefficient layout are documented in ``tailgym.hardware``)."""

from ..hardware import STEP_KNEE_TOKENS
from ..jit import kernel
from .layout import B_CONTEXT, B_DECODE, B_NEW


@kernel
def _knee(x, tokens):
    """Fill the knee features x[6], x[7] of a step scheduling ``tokens`` tokens."""
    over = max(tokens - STEP_KNEE_TOKENS, 0.0)
    x[6] = over
    x[7] = min(tokens, 2.0 * over)


@kernel
def batch_features(batch, nb, x):
    """Fill ``x`` with the step-time features of the first ``nb`` batch entries (rows
    ``B_*`` of ``layout``): const, prefill tokens, decode sequences, context tokens read,
    prefill attention (causal query-key pairs), prefill sequences, knee tokens, large-step
    tokens (``tailgym.hardware.step_features``)."""
    x[:] = 0.0
    x[0] = 1.0
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
            x[5] += 1.0
    _knee(x, x[1] + x[2])


@kernel
def step_time(coef, x):
    """Roofline form: the larger of the compute and memory times of the batch with features
    ``x`` (an array or a tuple of ``coef.shape[1]`` floats)."""
    compute = 0.0
    memory = 0.0
    for f in range(coef.shape[1]):
        compute += coef[0, f] * x[f]
        memory += coef[1, f] * x[f]
    return max(compute, memory)


@kernel
def recompute_seconds(coef, tokens):
    """Marginal step time of prefilling ``tokens`` again as one fresh sequence in a step of
    its own (constant term excluded)."""
    c = float(tokens)
    over = max(c - STEP_KNEE_TOKENS, 0.0)
    return step_time(coef, (0.0, c, 0.0, c, 0.5 * c * c, 1.0, over, min(c, 2.0 * over)))
