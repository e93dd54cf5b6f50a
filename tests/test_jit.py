"""Every numba function declares how it is compiled (``tailgym/jit.py``), and kernels keep
the rules that make compiling them without reference counting safe."""
import ast
import importlib
import inspect
import json
import os
import pathlib
import pkgutil
import subprocess
import sys

import pytest
from numba.core.registry import CPUDispatcher

import tailgym

NUMBA_PACKAGES = ("engine", "policies", "fleet", "envs", "workload")
ALLOCATORS = {"zeros", "empty", "full", "ones", "array", "sort", "argsort", "percentile",
              "minimum", "maximum", "cumsum", "concatenate", "nonzero", "arange", "repeat",
              "asarray", "ascontiguousarray", "mean", "unique", "where", "zeros_like",
              "empty_like", "copy"}
# array methods whose numba code needs reference counting (tried one by one; sum, mean, any,
# all, argmax and prod do not)
ARRAY_METHODS = {"copy", "sort", "argsort", "astype", "flatten", "ravel", "max", "min",
                 "cumsum", "nonzero"}


def numba_modules():
    for pkg in NUMBA_PACKAGES:
        mod = importlib.import_module(f"tailgym.{pkg}")
        yield mod
        for info in pkgutil.iter_modules(mod.__path__, f"{mod.__name__}."):
            yield importlib.import_module(info.name)


def dispatchers():
    for mod in numba_modules():
        for name, obj in vars(mod).items():
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == mod.__name__:
                yield f"{mod.__name__}.{name}", obj


def kernels():
    return [(name, d) for name, d in dispatchers() if d.targetoptions.get("_nrt") is False]


def test_every_numba_function_declares_its_compile_mode():
    found = dict(dispatchers())
    assert len(found) > 100  # the walk reaches the engine, policies, fleet, envs, workload
    undeclared = [name for name, d in found.items()
                  if "_nrt" not in d.targetoptions and d.targetoptions.get("inline") != "always"]
    assert not undeclared, f"use tailgym.jit.kernel or allocating for {undeclared}"
    assert len(kernels()) > 80


@pytest.mark.parametrize("name,dispatcher", kernels(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_kernel_neither_allocates_nor_returns_its_arrays(name, dispatcher):
    """Without reference counting a kernel must not create an array (numba refuses to compile
    it, but only once a path reaches it) or hand a view back: its return statements name no
    slice, and no array is copied by a slice assignment (numba would allocate a temporary)."""
    fn = ast.parse(inspect.getsource(dispatcher.py_func).lstrip()).body[0]
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            f = node.func
            called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            on_np = isinstance(f, ast.Attribute) and getattr(f.value, "id", "") == "np"
            method = isinstance(f, ast.Attribute) and not on_np and called in ARRAY_METHODS
            assert not (on_np and called in ALLOCATORS or method), \
                f"{name} allocates with {ast.unparse(node)}"
        if isinstance(node, ast.Return) and node.value is not None:
            parts = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for p in parts:
                assert not (isinstance(p, ast.Subscript) and isinstance(p.slice, ast.Slice)), \
                    f"{name} returns a view {ast.unparse(p)}"
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Slice):
                    raise AssertionError(f"{name} copies an array slice: {ast.unparse(node)}")


def test_the_jit_module_is_the_only_place_that_configures_numba():
    root = pathlib.Path(tailgym.__file__).parent
    users = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if p.name != "jit.py" and "njit" in p.read_text()]
    assert not users, f"decorate with tailgym.jit's kernel, allocating or inlined: {users}"


FRESH_COMPILE = """
import numpy as np
from tailgym.envs.base import IV_COLS, interval_stats
from tailgym.engine import layout as L
rf = np.zeros((4, L.RF_COLS)); ri = np.zeros((4, L.RI_COLS), dtype=np.int64)
ri[:, L.STATUS] = L.ST_FINISHED
rf[:, L.DONE] = rf[:, L.FIRST_TOKEN] = [1.0, 2.0, 3.0, 4.0]
out = np.zeros(IV_COLS)
interval_stats(rf, ri, 0, 4, 0.0, 5.0, 10.0, 0.0, np.zeros((3, 4)), out)
print(out[IV_COLS - 6:].tolist())
"""


def test_a_kernel_compiles_in_a_fresh_process(tmp_path):
    """A kernel that reaches numba code needing reference counting (np.sort, ...) compiles
    only if that code was compiled earlier in the same process, so the suite's order can hide
    it: the env's interval statistics, compiled first thing in a fresh process with an empty
    cache (as after ``tailgym run``, which leaves the engine cached and sorts nothing)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", FRESH_COMPILE], capture_output=True, text=True,
                         env=env, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == pytest.approx([2.5, 3.7, 3.97] * 2)  # TTLT, TTFT
