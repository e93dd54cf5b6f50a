"""The tailgym command line: runs, help, and every bad input as one line on stderr."""
import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from numba.core import types

from tailgym.cli import common, main

SMALL = ["--workload", "default:n=60", "-q"]


def _status(argv) -> int:
    """``main``'s exit status, whether it returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def _one_line_error(capsys, argv, status, *words):
    """``argv`` exits with ``status`` and a single stderr line holding ``words``."""
    assert _status(argv) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def test_run_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "--workload", "azure-code:n=300", "--model", "llama2-7b",
                 "--max-num-seqs", "64", "--kv-blocks", "3000", "--slo", "ttft=1",
                 "--json", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "TTFT" in text and "TTLT" in text and "azure-code" in text
    s = json.loads(out.read_text())
    assert s["requests_in"] == 300 and s["config"]["max_num_seqs"] == 64
    assert s["config"]["num_gpu_blocks"] == 3000 and "ttft<=1" in s["slo_attainment"]
    assert set(s["ttlt"]) >= {"mean", "p50", "p90", "p95", "p99"}


def test_policy_args_and_rate_options_parse(capsys):
    assert main(["run", "--workload", "default:n=100", "--load", "0.5", "-q"]) == 0
    assert "load 0.5" in capsys.readouterr().out
    _one_line_error(capsys, ["run", *SMALL, "--policy-arg", "gamma=2"], 2, "no knob 'gamma'")


def test_bad_csv_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,prompt_tokens,output_tokens\r\n0.0,12,5\r\n0.5,-3,5\r\n")
    _one_line_error(capsys, ["run", "--workload", str(bad), "-q"], 2,
                    "bad.csv", "prompt_tokens", "-3", ":3")


def test_column_mapping_reads_wall_clock_timestamps(tmp_path, capsys):
    f = tmp_path / "azure-like.csv"
    f.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n")
    assert main(["run", "--workload", str(f), "-q", "--columns",
                 "arrival=TIMESTAMP,prompt=ContextTokens,output=GeneratedTokens"]) == 0
    assert "2 in, 2 completed" in capsys.readouterr().out
    _one_line_error(capsys, ["run", "--workload", str(f), "-q"], 2, "azure-like.csv:1",
                    "--columns arrival=TIMESTAMP,prompt=ContextTokens,output=GeneratedTokens")


def test_policy_args_accept_words_and_policies_are_listed(capsys):
    assert main(["run", "--workload", "default:n=60", "--policy", "uniboost", "--policy-arg",
                 "gamma_mode=ada", "--policy-arg", "k=64", "-q"]) == 0
    assert main(["policies", "uniboost"]) == 0
    out = capsys.readouterr().out
    assert "gamma_mode = auto" in out and "output lengths: none" in out


@pytest.mark.parametrize("args, words", [
    (["--max-num-seqs", "0"], ["argument --max-num-seqs: must be an integer >= 1, got '0'"]),
    (["--max-num-batched-tokens", "0"], ["argument --max-num-batched-tokens: must be an integer"]),
    (["--kv-blocks", "0"], ["argument --kv-blocks: must be an integer >= 1"]),
    (["--gpu-memory-utilization", "1.5"], ["--gpu-memory-utilization: must be a fraction in (0, 1]"]),
    (["--tp", "0"], ["argument --tp: must be an integer >= 1"]),
    (["--seed", "-1"], ["argument --seed: must be an integer >= 0"]),
    (["--load", "0"], ["argument --load: must be a number > 0"]),
    (["--warmup", "100000"], ["--warmup 100000 excludes every request", "span only"]),
    (["--policy", "unibost"], ["--policy: unknown choice 'unibost'; did you mean 'uniboost'?"]),
    (["--model", "llama3"], ["--model: unknown choice", "llama3-8b"]),
    (["--tp", "3"], ["--tp 3 must be a positive divisor"]),
    (["--kv-blocks", "100"], ["never fit the KV cache", "Raise --kv-blocks or pass --on-unfit reject"]),
    (["--frobnicate"], ["unrecognized arguments: --frobnicate", "(see tailgym run --help)"]),
])
def test_nonsense_is_rejected_in_one_line_naming_the_flag(capsys, args, words):
    _one_line_error(capsys, ["run", *SMALL, *args], 2, *words)


def test_unknown_names_of_listing_commands_are_errors(capsys):
    _one_line_error(capsys, ["policies", "unibost"], 2, "unknown policy 'unibost'",
                    "did you mean 'uniboost'?")
    _one_line_error(capsys, ["data", "fetch", "azure-cov"], 2, "did you mean 'azure-conv'?")
    _one_line_error(capsys, ["data", "fetch"], 2, "name the data sets to fetch")
    _one_line_error(capsys, ["comapre"], 2, "did you mean 'compare'?")


def test_suspicious_settings_warn_and_run(capsys):
    assert main(["run", *SMALL, "--load", "5"]) == 0
    err = capsys.readouterr().err
    assert "warning: --load 5 is far past saturation" in err and err.count("\n") == 1
    assert main(["run", *SMALL, "--profile", "vidur-llama2-7b-h100-80gb-tp1"]) == 0
    err = capsys.readouterr().err
    assert "--profile vidur-llama2-7b-h100-80gb-tp1 was fitted for llama2-7b" in err
    assert "pass --model llama2-7b" in err and err.count("\n") == 1
    assert main(["run", *SMALL, "--profile", "vidur-llama2-7b-h100-80gb-tp1", "--model",
                 "llama2-7b"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "2 of 60 requests rejected" in err
    assert "request 21: prompt+output tokens (4312) exceed --max-model-len (4096)" in err


def test_a_failed_download_points_to_the_local_data_dir(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setenv("TAILGYM_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("TAILGYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("urllib.request.urlopen", offline)
    _one_line_error(capsys, ["run", "--workload", "azure-code", "-q"], 2,
                    "download of", "network unreachable", "TAILGYM_DATA_DIR")
    _one_line_error(capsys, ["bench", "--fleet-only"], 2,  # the benchmark's own parser
                    "python -m tailgym.bench: error: download of", "TAILGYM_DATA_DIR")


def test_data_list_says_which_data_sets_are_here(tmp_path, monkeypatch, capsys):
    assert main(["data", "list"]) == 0  # the tests' TAILGYM_DATA_DIR holds the traces
    out = capsys.readouterr().out
    assert "azure-conv" in out and "CC-BY" in out
    assert f"here: {Path(common.os.environ['TAILGYM_DATA_DIR']) / 'traces'}" in out
    monkeypatch.setenv("TAILGYM_DATA_DIR", str(tmp_path))
    assert main(["data", "list"]) == 0
    assert "not here: downloaded on first use, or put it at $TAILGYM_DATA_DIR/traces/" \
           in capsys.readouterr().out


def test_help_lists_values_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and all(f"    {c}" in top for c in ("compare", "policies", "hil"))
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("srpt-predicted, ltr, las", "(default: fcfs", "llama2-7b, llama2-70b",
                   "(default: llama3-8b)", "h100-80gb-pcap", "(default: h100-80gb)",
                   "--seed N draws the synthetic workload", "(default: 0)",
                   "--preemption-mode {recompute,swap}", "(default: recompute)"):
        assert phrase in text, phrase


def test_the_compile_notice_comes_once_before_the_wait(monkeypatch, capsys):
    from tailgym.engine.step import run_engine
    assert main(["run", *SMALL]) == 0  # compiles the engine or loads it from disk
    assert common.engine_cached()
    monkeypatch.setattr(run_engine._cache._cache_file, "_load_index", lambda: {})
    assert not common.engine_cached()  # the numba internals it reads are where it expects
    monkeypatch.setattr(common, "engine_cached", lambda fleet=False: False)
    assert main(["run", "--workload", "default:n=60"]) == 0
    err = capsys.readouterr().err
    assert err.count("compiling the numba engine") == 1
    assert f"about {common.COMPILE_SECONDS} s" in err
    assert err.index("compiling") < err.index("compiled in")
    assert main(["run", *SMALL]) == 0 and "compiling" not in capsys.readouterr().err


def test_the_compile_helper_uses_the_argument_types_of_the_engine_loop(capsys):
    """The helper process's calls (``compile_helper``: ``compile_iteration``, then a step of
    ``Serve-v0``) and this process's ``form_batch`` call have the types ``run_engine``
    passes, so the loop finds both halves in the cache instead of compiling them again."""
    from tailgym.engine.decisions import advance
    from tailgym.engine.step import begin_step, complete_batch, form_batch, run_engine
    assert main(["run", *SMALL]) == 0
    capsys.readouterr()
    common.compile_helper()
    assert capsys.readouterr().out == "compiled\n" and advance.signatures
    run, st, cfg_i, cfg_f = common.tiny_engine()
    form_batch(st.rf, st.ri, st.target, st.queues, st.batches[0], st.s, cfg_i, cfg_f,
               run.steps.coef(), st.kv, 0.0)
    loop = dict(zip(inspect.signature(run_engine.py_func).parameters, run_engine.signatures[0]))
    assert loop["until"] == types.float64 and loop["queues"].layout == "C"
    for f in (begin_step, complete_batch, form_batch):
        (sig,) = f.signatures
        named = dict(zip(inspect.signature(f.py_func).parameters, sig))
        shared = [p for p in named if p in loop]
        assert len(shared) >= 9 and all(named[p] == loop[p] for p in shared), f.__name__
    assert named["batch"] == loop["batches"].copy(ndim=2)


def test_a_fleet_run_warms_the_fleet_loop_behind_the_notice(monkeypatch, capsys):
    from tailgym.fleet.core import run_fleet
    asked = []
    monkeypatch.setattr(common, "engine_cached", lambda fleet=False: asked.append(fleet))
    assert main(["run", "--workload", "default:n=60", "--replicas", "2"]) == 0
    assert asked == [True] and "compiling the numba engine" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(run_fleet._cache._cache_file, "_load_index", lambda: {})
    assert not common.engine_cached(fleet=True) and common.engine_cached()


@pytest.mark.parametrize("argv", [["run", "--workload", "default:n=60"], ["policies"]])
def test_a_closed_pipe_stops_quietly(argv):
    """``tailgym run | head -1``: the reader is gone before anything is written."""
    p = subprocess.Popen([sys.executable, "-m", "tailgym.cli", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 1 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_hil_without_torch_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    _one_line_error(capsys, ["hil", "run", "--limit", "2"], 2, "tailgym hil needs PyTorch",
                    "pip install 'tailgym[hil]'")


def test_hil_on_a_missing_gpu_says_how_to_run_on_the_cpu(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    _one_line_error(capsys, ["hil", "run", "--model", "llama3-8b", "--device", "cuda"], 2,
                    "--device cuda", "--device cpu --model tiny")
    _one_line_error(capsys, ["hil", "profile", "-o", "x.csv", "--device", "cuda"], 2,
                    "--device cpu --model tiny")


def test_console_entry_point_runs_as_module():
    r = subprocess.run([sys.executable, "-m", "tailgym.cli", "data", "list"], capture_output=True,
                       text=True, check=True)
    assert "azure-conv" in r.stdout and "CC-BY" in r.stdout


def _imports(path: Path) -> set[str]:
    """Absolute names of the tailgym modules that ``path`` imports."""
    parts = path.relative_to(Path(common.__file__).parents[2]).with_suffix("").parts
    package = parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names |= {module} | {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_nothing_below_the_command_line_imports_it():
    root = Path(common.__file__).parents[1]
    for path in root.rglob("*.py"):
        if "cli" in path.relative_to(root).parts[:1]:
            continue
        upward = {n for n in _imports(path) if n == "tailgym.cli" or n.startswith("tailgym.cli.")}
        assert not upward, f"{path} imports {upward}"
    assert not any(n.startswith("tailgym.plots") for n in _imports(root / "compare.py"))
