"""Binary min-heaps of request indices keyed by (priority, arrival, index).

A heap lives in one row of ``queues`` with its size in an ``s`` slot. Ties on priority are
broken by arrival time, then by request index, so every order is total and deterministic.
"""

from ..jit import kernel
from .layout import ARRIVAL, PRIO


@kernel
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


@kernel
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


@kernel
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


@kernel
def heap_pop(heap, s, slot, rf):
    n = s[slot] - 1
    top = heap[0]
    heap[0] = heap[n]
    s[slot] = n
    _sift_down(heap, n, 0, rf)
    return top


@kernel
def heapify(heap, n, rf):
    """Restore the heap property of ``heap[:n]`` after priorities changed in place."""
    for start in range(n // 2 - 1, -1, -1):
        _sift_down(heap, n, start, rf)


@kernel
def heap_remove(heap, s, slot, rf, pos):
    """Remove the entry at ``pos`` (any position) and restore the heap."""
    n = s[slot] - 1
    s[slot] = n
    if pos == n:
        return
    heap[pos] = heap[n]
    while pos > 0:
        parent = (pos - 1) >> 1
        if not before(rf, heap[pos], heap[parent]):
            break
        heap[pos], heap[parent] = heap[parent], heap[pos]
        pos = parent
    _sift_down(heap, n, pos, rf)


@kernel
def heap_head(heap, n, rf, out, limit, frontier):
    """Write the best ``limit`` entries of ``heap[:n]`` in service order into ``out``
    (a best-first walk of the tree, O(limit^2), with ``frontier`` as scratch of size
    ``limit + 1`` or more). Returns how many were written."""
    if n == 0 or limit <= 0:
        return 0
    frontier[0] = 0  # heap positions, kept sorted best first
    size = 1
    count = 0
    while size > 0 and count < limit:
        pos = frontier[0]
        for f in range(1, size):
            frontier[f - 1] = frontier[f]
        size -= 1
        out[count] = heap[pos]
        count += 1
        for child in (2 * pos + 1, 2 * pos + 2):
            if child >= n:
                continue
            f = size
            while f > 0 and before(rf, heap[child], heap[frontier[f - 1]]):
                frontier[f] = frontier[f - 1]
                f -= 1
            frontier[f] = child
            size += 1
    return count
