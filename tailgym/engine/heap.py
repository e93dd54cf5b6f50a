"""Binary min-heaps of request indices keyed by (priority, arrival, index).

A heap lives in one row of ``queues`` with its size in an ``s`` slot. Ties on priority are
broken by arrival time, then by request index, so every order is total and deterministic.
"""
from numba import njit

from .layout import ARRIVAL, PRIO


@njit(cache=True, inline="always")
def before(rf, a, b):
    """True if request ``a`` is served before request ``b``."""
    pa = rf[a, PRIO]
    pb = rf[b, PRIO]
    if pa != pb:
        return pa < pb
    xa = rf[a, ARRIVAL]
    xb = rf[b, ARRIVAL]
    if xa != xb:
        return xa < xb
    return a < b


@njit(cache=True)
def heap_push(heap, s, slot, rf, idx):
    pos = s[slot]
    heap[pos] = idx
    s[slot] = pos + 1
    while pos > 0:
        parent = (pos - 1) >> 1
        if before(rf, heap[pos], heap[parent]):
            heap[pos], heap[parent] = heap[parent], heap[pos]
            pos = parent
        else:
            break


@njit(cache=True)
def _sift_down(heap, n, pos, rf):
    while True:
        left = 2 * pos + 1
        if left >= n:
            return
        best = left
        right = left + 1
        if right < n and before(rf, heap[right], heap[left]):
            best = right
        if not before(rf, heap[best], heap[pos]):
            return
        heap[pos], heap[best] = heap[best], heap[pos]
        pos = best


@njit(cache=True)
def heap_pop(heap, s, slot, rf):
    n = s[slot] - 1
    top = heap[0]
    heap[0] = heap[n]
    s[slot] = n
    _sift_down(heap, n, 0, rf)
    return top


@njit(cache=True)
def heapify(heap, n, rf):
    """Restore the heap property of ``heap[:n]`` after priorities changed in place."""
    for start in range(n // 2 - 1, -1, -1):
        _sift_down(heap, n, start, rf)
