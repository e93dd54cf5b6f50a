"""Gate the vLLM reference tests on TAILGYM_VLLM_PYTHON: skipped when it is unset on a
developer's machine; failed when it is unset under CI (CI set, so CI never skips them) or when
the interpreter it names holds no vLLM 0.33.0."""
import os
import subprocess

import pytest

from reference import ENV, vllm_python

VLLM_VERSION = "0.33.0"
SKIP_REASON = "vLLM reference venv not built: run .ci/run or see tests/vllm_diff/README.md"


def _venv_problem(python):
    """Why the interpreter cannot serve as the vLLM reference, or None when it can."""
    probe = "import importlib.metadata as m; print(m.version('vllm'))"
    try:
        proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{ENV}={python}: cannot run: {e}"
    version = proc.stdout.strip()
    if proc.returncode != 0 or version != VLLM_VERSION:
        return f"{ENV}={python}: vLLM {VLLM_VERSION} not installed (found {version or 'none'})"
    return None


@pytest.fixture(scope="session", autouse=True)
def _require_vllm_venv():
    """Session-wide, so it acts before any module fixture runs the driver."""
    python = vllm_python()
    if python is None and not os.environ.get("CI"):
        pytest.skip(SKIP_REASON)
    problem = SKIP_REASON if python is None else _venv_problem(python)
    if problem:
        pytest.fail(problem, pytrace=False)
