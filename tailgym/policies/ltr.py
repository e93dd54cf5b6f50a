"""Learning-to-rank ordering (vllm-ltr style) with a starvation guard.

``hint`` holds a rank score whose Kendall tau to the true output lengths is the ``tau`` knob
(built in the registry from pre-drawn normals); lower score = predicted shorter = first.
A request waiting longer than ``starvation_s`` is promoted ahead of every scored request
(FCFS among the promoted). Non-preemptive ordering (vLLM priority mode).
Signals: arrival time, ``hint`` (the rank score).
"""

from ..engine.layout import ARRIVAL, ST_WAITING, STATUS
from ..jit import kernel

TAU, STARVATION_S = 0, 1
PROMOTED = -1e12


@kernel
def ltr_priority(params, hint, rf, ri, i, now):
    if ri[i, STATUS] == ST_WAITING and now - rf[i, ARRIVAL] > params[STARVATION_S]:
        return PROMOTED + rf[i, ARRIVAL]
    return hint[i]
