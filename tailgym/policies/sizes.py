"""Size-based policies that know output lengths through ``hint``: SJF and SRPT.

``sjf-oracle`` (non-preemptive, vLLM priority mode) orders by total work
``alpha_p * prompt + alpha_d * output``; ``srpt-oracle`` and ``srpt-predicted`` (preemptive)
order by remaining work. ``hint`` is the true output length for the oracles and a noisy
prediction for ``srpt-predicted``; a request that outlives its prediction keeps one token of
predicted work left. Signals: prompt length, tokens done, ``hint``.
"""

from ..engine.layout import COMPUTED, GENERATED, PROMPT
from ..jit import kernel
from .boost import job_work

ALPHA_P, ALPHA_D = 0, 1


@kernel
def sjf_priority(params, hint, ri, i):
    return job_work(params[ALPHA_P], params[ALPHA_D], ri[i, PROMPT], hint[i])


@kernel
def srpt_priority(params, hint, ri, i):
    generated = ri[i, GENERATED]
    prompt_left = max(ri[i, PROMPT] - ri[i, COMPUTED], 0) if generated == 0 else 0
    output_left = max(hint[i] - generated, 1.0)
    return job_work(params[ALPHA_P], params[ALPHA_D], prompt_left, output_left)
