"""How tailgym's numba functions are compiled: three decorators, all cached on disk.

``kernel`` compiles without numba's reference counting (NRT). The engine passes the same
dozen arrays through every call, and with NRT on each array argument a callee writes to costs
an atomic increment and decrement per call, even when LLVM inlines the callee: the engine ran
3x slower with it. A kernel may read and write the arrays it is given (and views of them),
call other kernels and ``allocating`` functions that return no array; it never allocates an
array, never returns one, and calls no numpy function or array method whose numba code needs
NRT (``sort``, ``max``, ``min``...: such a call compiles only if the same code was compiled
with NRT earlier in the process, so it fails in some orders and not others).
``tests/test_jit.py`` checks these rules in the source and compiles a kernel in a fresh
process. ``allocating`` keeps NRT, for functions that create arrays (``np.zeros``,
``np.sort``, percentiles) or return views; called from a kernel, such a function must return
no array (the kernel would not release it). ``inlined`` functions are compiled into each
caller (numba IR inlining), in the caller's mode: for small helpers that return views of their
arguments. A function without a decorator of this module would inherit its caller's mode, so
every tailgym numba function takes one of them.
"""
from numba import njit

kernel = njit(cache=True, _nrt=False)
allocating = njit(cache=True, _nrt=True)
inlined = njit(cache=True, inline="always")
