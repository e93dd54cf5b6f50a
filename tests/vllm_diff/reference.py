"""vLLM 0.33.0's real scheduler as a reference, called from the main test venv (no vLLM here).

``run_vllm(scenario)`` runs ``vllm_driver.py`` with the interpreter named by the environment
variable TAILGYM_VLLM_PYTHON (a venv built as README.md says) and returns its report;
``workload_scenario`` turns a tailgym workload (e.g. ``"azure-conv:n=1000"``) into a scenario.
"""
import json
import os
import subprocess
import tempfile
from pathlib import Path

ENV = "TAILGYM_VLLM_PYTHON"
DRIVER = Path(__file__).with_name("vllm_driver.py")

# vLLM 0.33's defaults (async scheduling, prefix caching, full-prompt reservation, class budgets).
DEFAULTS = {"block_size": 16, "num_gpu_blocks": 500, "max_num_batched_tokens": 2048,
            "max_num_seqs": 128, "max_model_len": 16384, "long_prefill_token_threshold": 0,
            "enable_chunked_prefill": True, "policy": "fcfs", "async_scheduling": True,
            "enable_prefix_caching": True, "scheduler_reserve_full_isl": True, "watermark": 0.0,
            "step_time": {"const": 0.010, "per_token": 0.0002}}


class VllmDriverError(RuntimeError):
    """The driver failed; the message carries its exit status and the tail of its stderr."""


def vllm_python():
    """Path of the vLLM venv's interpreter (TAILGYM_VLLM_PYTHON), or None when unset."""
    return os.environ.get(ENV) or None


def scenario(requests, **settings):
    """A driver scenario: DEFAULTS, then ``settings``; requests get priority 0 and no block keys
    unless they say otherwise."""
    return {**DEFAULTS, **settings,
            "requests": [{"priority": 0, "block_keys": [], **r} for r in requests]}


def workload_scenario(workload, **settings):
    """A scenario of a tailgym workload (a Workload or a spec for ``load_workload``), no shared
    blocks, priority 0; DEFAULTS, then ``settings``."""
    from tailgym.workload.resolve import load_workload

    w = load_workload(workload)
    return scenario([{"arrival": float(a), "prompt_tokens": int(p), "output_tokens": int(o)}
                     for a, p, o in zip(w.arrival_s, w.prompt_tokens, w.output_tokens)],
                    **settings)


def run_vllm(scenario, timeout=600):
    """Run one scenario dict through vLLM's scheduler; return the driver's report dict."""
    return _run(scenario, timeout)


def run_vllm_many(scenarios, timeout=600):
    """Run several scenarios in one driver process (vLLM is imported once); a list of reports."""
    return _run(list(scenarios), timeout)


def _run(payload, timeout):
    python = vllm_python()
    if python is None:
        raise VllmDriverError(f"{ENV} is not set: build the vLLM venv (tests/vllm_diff/README.md)")
    with tempfile.TemporaryDirectory(prefix="tailgym-vllm-") as tmp:
        src, dst = Path(tmp, "scenario.json"), Path(tmp, "report.json")
        src.write_text(json.dumps(payload))
        try:
            proc = subprocess.run([python, str(DRIVER), str(src), str(dst)], cwd=tmp,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise VllmDriverError(f"vLLM driver ran past {timeout} s{_tail(e.stderr)}") from None
        except OSError as e:
            raise VllmDriverError(f"cannot run {ENV}={python}: {e}") from None
        if proc.returncode != 0:
            raise VllmDriverError(
                f"vLLM driver failed (exit {proc.returncode}){_tail(proc.stderr)}")
        return json.loads(dst.read_text())


def _tail(stderr, lines=25):
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    text = (stderr or "").strip().splitlines()
    return ":\n" + "\n".join(text[-lines:]) if text else ""
