"""FCFS, vLLM's default policy.

Running requests are served in admission order, waiting ones by arrival; preempted requests
go back to the head of the queue (they arrived before every waiting request); the victim is
the most recently admitted running request. Signals read: arrival time only.
"""

from ..engine.layout import ARRIVAL
from ..jit import kernel


@kernel
def priority(rf, ri, i, now, params):
    return rf[i, ARRIVAL]
