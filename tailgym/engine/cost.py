"""Step-time model inside the engine: the features of a batch and the time they cost
(the feature set and coefficient layout are documented in ``tailgym.hardware``)."""

from ..hardware import STEP_KNEE_TOKENS
from ..jit import kernel
from .layout import B_CONTEXT, B_DECODE, B_NEW


@kernel
def batch_features(batch, nb):
    """The step-time features of the first ``nb`` batch entries (rows ``B_*`` of ``layout``),
    as a tuple: const, prefill tokens, decode sequences, context tokens read, prefill
    attention (causal query-key pairs), prefill sequences, knee tokens, large-step tokens
    (``tailgym.hardware.step_features``)."""
    prefill, decodes, context, attention, seqs = 0.0, 0.0, 0.0, 0.0, 0.0
    for b in range(nb):
        n = batch[B_NEW, b]
        c = batch[B_CONTEXT, b]
        if batch[B_DECODE, b] == 1:
            decodes += 1.0
            context += c + 1.0
        else:
            prefill += n
            context += c + n
            attention += n * (c + 0.5 * n)
            seqs += 1.0
    return (1.0, prefill, decodes, context, attention, seqs) + knee(prefill + decodes)


@kernel
def knee(tokens):
    """The knee features (x[6], x[7]) of a step scheduling ``tokens`` tokens."""
    over = max(tokens - STEP_KNEE_TOKENS, 0.0)
    return over, min(tokens, 2.0 * over)


@kernel
def step_time(coef, x):
    """Roofline form: the larger of the compute and memory times of the batch with features
    ``x`` (``coef.shape[1]`` floats)."""
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
    return step_time(coef, (0.0, c, 0.0, c, 0.5 * c * c, 1.0) + knee(c))
