"""How tailgym's numba functions are compiled: two decorators, both cached on disk.

``kernel`` compiles without numba's reference counting (NRT). The engine passes the same
dozen arrays through every call, and with NRT on each array argument a callee writes to costs
an atomic increment and decrement per call, even when LLVM inlines the callee: the engine ran
2.5x slower with it. A kernel may read and write the arrays it is given (and views of them),
call other kernels and ``allocating`` functions that return no array; it never allocates an
array and never returns one (``tests/test_jit.py`` checks the compiled signatures).
``allocating`` keeps NRT, for functions that create arrays (``np.zeros``, ``np.sort``,
percentiles) or return views; called from a kernel, such a function must return no array
(the kernel would not release it). ``inlined`` functions are compiled into each caller (numba
IR inlining), in the caller's mode: for small helpers that return views of their arguments.
A function without a decorator of this module would inherit its caller's mode, so every
tailgym numba function takes one of them.
"""
from numba import njit

kernel = njit(cache=True, _nrt=False)
allocating = njit(cache=True, _nrt=True)
inlined = njit(cache=True, inline="always")
