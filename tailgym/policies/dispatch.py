"""The engine's single entry point into the policies: priority by policy id.

To add a policy: write ``tailgym/policies/<name>.py`` with an ``@njit`` ``priority(rf, ri, i,
now, params)`` (lower = served first), add a branch here, and register it in ``registry.py``.
"""
from numba import njit

from . import fcfs

FCFS = 0


@njit(cache=True)
def priority(pid, params, rf, ri, i, now):
    if pid == FCFS:
        return fcfs.priority(rf, ri, i, now, params)
    raise ValueError("unknown policy id")
