"""Mutation check: do the fast tests catch realistic bugs in the engine, policies and metrics?

    TAILGYM_DATA_DIR=../shared/data python tests/mutation/mutate.py            # every mutant
    python tests/mutation/mutate.py --only cost-roofline-sum blocks-lru-order  # some of them
    python tests/mutation/mutate.py --list                                     # just list them

Each mutant in ``tests/mutation/mutants.toml`` names a file, an exact snippet of it (which must
occur exactly once), its replacement, the fast test files that should catch it and a one-line
description. The script copies the repository's tracked and untracked-but-not-ignored files
to a scratch directory (no virtual environment, no numba caches), checks that the listed
tests pass there unmutated, then for each mutant: writes the mutated file, deletes every
numba cache file (``*.nbi``, ``*.nbc``) in the copy and points ``NUMBA_CACHE_DIR`` into it,
verifies that ``import`` of the mutated module loads the scratch copy and that its source
holds the replacement, runs the tests with a per-mutant timeout (default 60 s), and restores
the file (also on error or Ctrl-C). A mutant is *killed* when a test fails or errors, or the
run times out (a hang); it *survived* when all pass. The table and the kill rate go to stdout;
the exit status is 1 if any mutant survived or was invalid.

By default the tests run with ``NUMBA_DISABLE_JIT=1``: the engine is interpreted, which
needs no recompilation per mutant (a fresh compile of the engine takes minutes on the 2-core
development machine) and, for these logic mutants, behaves as the compiled engine does.
``--jit`` compiles each mutant instead (slow; raise ``--timeout``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = Path(__file__).with_name("mutants.toml")
FIELDS = ("name", "file", "original", "replacement", "tests", "description")


def load_mutants(path: Path = MUTANTS) -> list[dict]:
    """The mutants of ``path``, each with every field; names unique."""
    mutants = tomllib.loads(path.read_text())["mutant"]
    names = set()
    for m in mutants:
        missing = [f for f in FIELDS if f not in m]
        if missing:
            raise SystemExit(f"{path.name}: mutant {m.get('name', '?')} lacks {', '.join(missing)}")
        if m["name"] in names:
            raise SystemExit(f"{path.name}: two mutants named {m['name']}")
        names.add(m["name"])
    return mutants


def repo_files(root: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files of the checkout at ``root``."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=root, capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f and (root / f).is_file()]


def make_scratch(root: Path, scratch: Path) -> None:
    for f in repo_files(root):
        if f.endswith((".nbi", ".nbc", ".pyc")):
            continue
        target = scratch / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, target)


def clear_numba_caches(scratch: Path) -> None:
    for pattern in ("*.nbi", "*.nbc"):
        for f in scratch.rglob(pattern):
            f.unlink()
    shutil.rmtree(scratch / ".numba-cache", ignore_errors=True)


def environment(scratch: Path, jit: bool) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(scratch)  # ahead of the editable install of the real checkout
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["NUMBA_CACHE_DIR"] = str(scratch / ".numba-cache")
    env.setdefault("TAILGYM_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    if jit:
        env.pop("NUMBA_DISABLE_JIT", None)
    else:
        env["NUMBA_DISABLE_JIT"] = "1"
    return env


def module_name(file: str) -> str:
    return file.removesuffix(".py").replace("/", ".").removesuffix(".__init__")


def verify_import(scratch: Path, mutant: dict, env: dict) -> str | None:
    """None if importing the mutated module loads the scratch file holding the replacement,
    else what went wrong."""
    code = ("import importlib, inspect, sys\n"
            f"m = importlib.import_module({module_name(mutant['file'])!r})\n"
            "print(m.__file__)\n"
            f"sys.exit(0 if {mutant['replacement']!r} in inspect.getsource(m) else 3)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=scratch, env=env, capture_output=True,
                       text=True, timeout=120)
    if r.returncode == 3:
        return "the imported module does not hold the replacement"
    if r.returncode != 0:
        return "import failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    loaded = Path(r.stdout.strip().splitlines()[-1]).resolve()
    if loaded != (scratch / mutant["file"]).resolve():
        return f"imported {loaded}, not the scratch copy"
    return None


def run_tests(scratch: Path, tests: list[str], env: dict, timeout: float) -> tuple[str, float]:
    """``passed``, ``failed`` (a test failed or errored), ``timeout`` or ``error`` (pytest
    could not run them), and the wall time."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-x", "-q",
           "--no-header", *tests]  # -n 0: one process (mutants may run side by side)
    try:
        r = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start
    wall = time.perf_counter() - start
    if r.returncode == 0:
        return "passed", wall
    if r.returncode in (1, 2):  # 2: interrupted, e.g. a collection error the mutant caused
        return "failed", wall
    return "error", wall


def apply(scratch: Path, mutant: dict) -> str:
    """Write the mutated file; return the original text."""
    path = scratch / mutant["file"]
    text = path.read_text()
    count = text.count(mutant["original"])
    if count != 1:
        raise ValueError(f"snippet found {count} times in {mutant['file']} (must be once)")
    path.write_text(text.replace(mutant["original"], mutant["replacement"]))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant")
    parser.add_argument("--jit", action="store_true", help="compile each mutant with numba")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = parser.parse_args(argv)
    mutants = load_mutants()
    if args.only:
        unknown = sorted(set(args.only) - {m["name"] for m in mutants})
        if unknown:
            raise SystemExit(f"unknown mutant(s): {', '.join(unknown)}")
        mutants = [m for m in mutants if m["name"] in args.only]
    if args.list:
        for m in mutants:
            print(f"{m['name']:<32} {m['file']:<34} {m['description']}")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="tailgym-mutants-"))
    try:
        make_scratch(ROOT, scratch)
        env = environment(scratch, args.jit)
        clear_numba_caches(scratch)
        tests = sorted({t for m in mutants for t in m["tests"]})
        status, wall = run_tests(scratch, tests, env, 10 * args.timeout)
        print(f"baseline (unmutated, {len(tests)} test files): {status} in {wall:.0f} s", flush=True)
        if status != "passed":
            print("the tests must pass unmutated; fix that first")
            return 2
        results = []
        for m in mutants:
            original = None
            try:
                original = apply(scratch, m)
                clear_numba_caches(scratch)
                problem = verify_import(scratch, m, env)
                if problem:
                    outcome, wall = "invalid: " + problem, 0.0
                else:
                    status, wall = run_tests(scratch, m["tests"], env, args.timeout)
                    outcome = {"passed": "SURVIVED", "failed": "killed",
                               "timeout": "killed (timeout)"}.get(status, "invalid: pytest error")
            except ValueError as e:
                outcome, wall = f"invalid: {e}", 0.0
            finally:
                if original is not None:
                    (scratch / m["file"]).write_text(original)
            results.append((m, outcome, wall))
            print(f"{outcome:<18} {wall:5.1f} s  {m['name']:<32} {m['description']}", flush=True)
        killed = sum(o.startswith("killed") for _, o, _ in results)
        valid = sum(not o.startswith("invalid") for _, o, _ in results)
        print(f"\nkill rate: {killed}/{valid} valid mutants killed "
              f"({100 * killed / max(valid, 1):.0f}%); {len(results) - valid} invalid")
        for m, o, _ in results:
            if not o.startswith("killed"):
                print(f"  {o}: {m['name']} ({m['file']})")
        return 0 if killed == len(results) else 1
    finally:
        if args.keep:
            print(f"scratch copy kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
