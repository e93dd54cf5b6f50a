"""What every subcommand shares: the one-line-error parser, checked value types, the workload,
policy, rate and engine options, warnings about suspicious settings, the compile notice, and
the guard that turns bad input into one line on stderr (exit 2) instead of a traceback."""
from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import subprocess
import sys
import time

from ..data import DataError
from ..workload import WorkloadError

# A load above this many times the saturation throughput gets a warning: the queue then grows
# for the whole trace, so latencies measure the trace's length more than the policy.
FAR_PAST_SATURATION = 1.25
# First compile of the numba engine, measured on the 2-core development machine (a fresh
# cache, `tailgym run`: 17-18 s); update it when the engine's compile time changes.
COMPILE_SECONDS = 18


class CLIError(Exception):
    """Bad input, in the user's words (the message names the flag); exit status 2."""


class Parser(argparse.ArgumentParser):
    """``argparse`` with a one-line error: ``tailgym run: error: ... (see tailgym run --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _check_value(self, action, value):  # a misspelt choice gets a "did you mean"
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentError(action, suggest(value, action.choices, "choice"))


def warn(message: str) -> None:
    print(f"tailgym: warning: {message}", file=sys.stderr, flush=True)


def suggest(name: str, known, what: str) -> str:
    """``unknown WHAT 'NAME'; did you mean 'X'? (choose from ...)``"""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}{hint} (choose from {', '.join(known)})"


# ------------------------------------------------------------------------- value types

def _typed(kind, ok, what: str):
    """An argparse ``type``: ``kind(text)`` that must satisfy ``ok``, else 'must be WHAT'."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    return convert


positive_int = _typed(int, lambda v: v >= 1, "an integer >= 1")
nonneg_int = _typed(int, lambda v: v >= 0, "an integer >= 0")
positive = _typed(float, lambda v: math.isfinite(v) and v > 0, "a number > 0")
nonneg = _typed(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
fraction = _typed(float, lambda v: 0 < v <= 1, "a fraction in (0, 1]")
share = _typed(float, lambda v: 0 <= v < 1, "a share in [0, 1)")


def key_values(items: list[str], flag: str, numbers: bool = True) -> dict:
    """``key=value`` options; values are numbers, or (``numbers=False``) numbers where they
    parse and words otherwise (e.g. ``gamma_mode=ada``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"{flag} must look like KEY=VALUE, got {item!r}")
        try:
            out[key] = float(value)
        except ValueError:
            if numbers:
                raise CLIError(f"{flag} {key!r} needs a number, got {value!r}") from None
            out[key] = value
    return out


# ------------------------------------------------------------------------- options

def add_workload_arguments(p: argparse.ArgumentParser, *, columns: bool = True) -> None:
    p.add_argument("--workload", default="default", metavar="SPEC",
                   help="data set (azure-conv, azure-code, mooncake-conv, mooncake-synthetic, "
                        "servegen-r1), "
                        "synthetic preset (default, chat, reasoning, bursty-chat, chat-prefix, "
                        "multiturn), spec (azure-conv:n=2000,arrival=gamma,cv=3; "
                        "synthetic:preset=chat,n=500) or CSV/JSONL path (default: default, the "
                        "offline synthetic chat workload)")
    if columns:
        p.add_argument("--columns", metavar="MAPPING",
                       help="CSV column names, e.g. arrival=TIMESTAMP,prompt=ContextTokens,"
                            "output=GeneratedTokens (default: arrival_s,prompt_tokens,"
                            "output_tokens)")


def add_policy_arguments(p: argparse.ArgumentParser) -> None:
    from ..policies import POLICIES
    p.add_argument("--policy", default="fcfs", choices=list(POLICIES), metavar="NAME",
                   help=f"scheduling policy: {', '.join(POLICIES)} (default: fcfs; "
                        f"`tailgym policies` explains each and its knobs)")
    p.add_argument("--policy-arg", action="append", default=[], metavar="KNOB=VALUE",
                   help="set a knob of the policy (repeatable), e.g. gamma_mode=fixed")


def replica_groups(text: str):
    """``--replicas``: a count, or GPU groups ``GPU=N,GPU=N`` (a dict, in order)."""
    if "=" not in text:
        return positive_int(text)
    from ..hardware import GPUS
    groups = {}
    for item in text.split(","):
        gpu, _, n = item.partition("=")
        if gpu not in GPUS:
            raise argparse.ArgumentTypeError(suggest(gpu, GPUS, "GPU"))
        try:
            groups[gpu] = positive_int(n)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"{gpu} needs a count >= 1, got {n!r}") from None
    return groups


def add_fleet_arguments(p: argparse.ArgumentParser) -> None:
    from ..fleet import ROUTERS
    p.add_argument("--replicas", type=replica_groups, metavar="N|GPU=N,...",
                   help="simulate a fleet of N engines behind a router, or GPU groups (e.g. "
                        "h100-80gb=4,a100-80gb=4, each on its GPU's roofline; then no --gpu); "
                        "--load is then per replica (default: one engine)")
    p.add_argument("--router", default="round-robin", choices=list(ROUTERS), metavar="NAME",
                   help=f"which replica serves each request: {', '.join(ROUTERS)} "
                        f"(default: round-robin; needs --replicas)")
    p.add_argument("--router-arg", action="append", default=[], metavar="KNOB=VALUE",
                   help="set a knob of the router (repeatable), e.g. cache_threshold=0.5")
    p.add_argument("--router-refresh-s", type=nonneg, default=0.0, metavar="SECONDS",
                   help="the router sees replica load signals refreshed every SECONDS of "
                        "simulated time (default: 0 = fresh)")


def fleet_options(args) -> dict:
    """``simulate``'s fleet keyword arguments of parsed ``add_fleet_arguments`` options."""
    given = [flag for flag, on in (("--router", args.router != "round-robin"),
                                   ("--router-arg", bool(args.router_arg)),
                                   ("--router-refresh-s", args.router_refresh_s > 0)) if on]
    if args.replicas is None:
        if given:
            raise CLIError(f"{given[0]} needs --replicas N")
        return {}
    from ..fleet import get_router
    if isinstance(args.replicas, dict) and args.gpu != "h100-80gb":
        raise CLIError(f"--gpu {args.gpu} does not apply with GPU groups in --replicas")
    knobs = key_values(args.router_arg, "--router-arg")
    try:
        get_router(args.router).knobs(knobs)
    except ValueError as err:
        raise CLIError(f"--router-arg: {err}") from None
    return {"replicas": args.replicas, "router": args.router, "router_args": knobs,
            "router_refresh_s": args.router_refresh_s}


def add_rate_arguments(p: argparse.ArgumentParser) -> None:
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=positive, metavar="RPS",
                      help="mean arrival rate, requests/s")
    rate.add_argument("--rate-scale", type=positive, metavar="F",
                      help="multiply the workload's arrival rate")
    rate.add_argument("--load", type=positive, metavar="RHO",
                      help="arrival rate as a fraction of the engine's saturation throughput")


def add_seed_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=nonneg_int, default=0, metavar="N",
                   help="draws the synthetic workload, redrawn arrivals and the policy's random "
                        "numbers; a trace replayed as is does not depend on it (default: 0)")


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """What a simulating command measures and shows: warm-up, unfit requests, quiet."""
    p.add_argument("--warmup", dest="warmup_s", type=nonneg, default=0.0, metavar="SECONDS",
                   help="leave out requests arriving in the first SECONDS (default: 0)")
    p.add_argument("--on-unfit", choices=("error", "reject"), default="error",
                   help="a request that can never fit the KV cache: stop with an error, or "
                        "report it as rejected (default: error)")
    p.add_argument("-q", "--quiet", action="store_true", help="no compile notice or progress bar")


# Engine on/off switches: build_engine kwarg -> (flag that turns it off, help). The engine's
# vLLM-named switches (async_scheduling, enable_prefix_caching, scheduler_reserve_full_isl:
# --no-async-scheduling, --no-enable-prefix-caching, --no-scheduler-reserve-full-isl) are
# added here when build_engine takes them; engine_knobs() passes every entry on.
SWITCHES = {
    "enable_chunked_prefill": ("--no-chunked-prefill",
                               "schedule whole prompts only (vLLM's --no-enable-chunked-prefill)"),
    "async_scheduling": ("--no-async-scheduling",
                         "schedule each step after the previous one's output (vLLM 0.33 "
                         "schedules step k+1 while step k runs)"),
    "enable_prefix_caching": ("--no-enable-prefix-caching",
                              "no automatic prefix caching (vLLM 0.33 caches full KV blocks)"),
    "scheduler_reserve_full_isl": ("--no-scheduler-reserve-full-isl",
                                   "admit a request when its first chunk fits (vLLM 0.33 waits "
                                   "until blocks for its whole prompt are free)"),
}
ENGINE_KNOBS = ("tp", "profile", "kv_blocks", "max_num_batched_tokens", "max_num_seqs",
                "max_model_len", "preemption_mode", "swap_space_gib", "gpu_memory_utilization",
                "long_prefill_token_threshold", "watermark", *SWITCHES)


def add_engine_arguments(p: argparse.ArgumentParser, *, model: str = "llama3-8b",
                         any_model: bool = False) -> None:
    """Options of every command that builds an engine; ``any_model`` allows model names the
    simulator does not know (the real engine's ``tiny``, ``llama3-8b:layers=2``)."""
    from ..hardware import GPUS, MODELS
    models = ", ".join(MODELS)
    if any_model:
        models = f"tiny, {models} or one scaled down (llama3-8b:layers=2)"
    p.add_argument("--model", default=model, metavar="NAME",
                   choices=None if any_model else list(MODELS),
                   help=f"model shape: {models} (default: {model})")
    p.add_argument("--gpu", default="h100-80gb", choices=list(GPUS), metavar="NAME",
                   help=f"GPU: {', '.join(GPUS)} (default: h100-80gb)")
    p.add_argument("--tp", type=positive_int, default=1, metavar="N",
                   help="tensor-parallel degree (default: 1)")
    p.add_argument("--profile", metavar="NAME|FILE",
                   help="step-time profile: a shipped name (e.g. vidur-llama2-7b-h100-80gb-tp1) "
                        "or a JSON from tailgym calibrate (default: roofline of model and GPU)")
    p.add_argument("--kv-blocks", type=positive_int, metavar="N",
                   help="KV cache size in 16-token blocks, vLLM's num_gpu_blocks (block 0 is "
                        "reserved, N - 1 hold KV; default: from GPU memory)")
    p.add_argument("--max-num-batched-tokens", type=positive_int, metavar="N",
                   help="token budget per step (default: vLLM's for the GPU)")
    p.add_argument("--max-num-seqs", type=positive_int, metavar="N",
                   help="cap on running requests (default: vLLM's for the GPU)")
    p.add_argument("--max-model-len", type=positive_int, metavar="N",
                   help="reject requests with more prompt+output tokens (default: the "
                        "model's context)")
    p.add_argument("--preemption-mode", choices=("recompute", "swap"), default="recompute",
                   help="on KV shortage, recompute the victim later or swap it to host memory "
                        "(default: recompute)")
    p.add_argument("--swap-space-gib", type=nonneg, default=4.0, metavar="GIB",
                   help="host swap space per GPU, GiB, in swap mode (default: 4)")
    p.add_argument("--gpu-memory-utilization", type=fraction, default=0.9, metavar="SHARE",
                   help="share of GPU memory for weights, activations and KV cache (default: 0.9)")
    p.add_argument("--long-prefill-token-threshold", type=nonneg_int, default=0, metavar="N",
                   help="cap on one prompt's tokens per step (default: 0 = no cap)")
    p.add_argument("--watermark", type=share, default=0.0, metavar="SHARE",
                   help="share of KV blocks kept free when admitting (default: 0)")
    for dest, (flag, text) in SWITCHES.items():
        p.add_argument(flag, dest=dest, action="store_false", help=text)


def engine_knobs(args) -> dict:
    """The ``build_engine`` keyword arguments of parsed ``add_engine_arguments`` options."""
    return {k: getattr(args, k) for k in ENGINE_KNOBS}


# ------------------------------------------------------------------------- checks

def check_profile(args) -> None:
    """Warn when ``--profile`` was fitted for another model, GPU or TP degree."""
    if not args.profile:
        return
    from ..hardware import load_profile
    p = load_profile(args.profile)
    ours = {"--model": args.model, "--gpu": args.gpu, "--tp": args.tp}
    theirs = {"--model": p.model, "--gpu": p.gpu, "--tp": p.tp}
    off = [flag for flag in ours if str(ours[flag]) != str(theirs[flag])]
    if off:
        warn(f"--profile {args.profile} was fitted for {p.model} on {p.gpu} at tp {p.tp}, not "
             f"{', '.join(f'{f} {ours[f]}' for f in off)}: step times follow the profile, the "
             f"KV cache the options; pass {' '.join(f'{f} {theirs[f]}' for f in off)} to match")


def check_loads(loads, flag: str = "--load") -> None:
    """Warn about loads far past saturation."""
    far = [x for x in loads if x > FAR_PAST_SATURATION]
    if far:
        warn(f"{flag} {','.join(f'{x:g}' for x in far)} is far past saturation: requests arrive "
             f"faster than the engine can serve them, so the queue grows for the whole trace "
             f"and latencies measure its length more than the policy")


def check_columns(workload: str, columns: str | None) -> None:
    """A CSV without tailgym's column names needs ``--columns``: say so, with the mapping."""
    import csv
    from ..workload.csv_loader import DEFAULT_COLUMNS, OPTIONAL_COLUMNS
    if columns or not workload.lower().endswith(".csv") or not os.path.isfile(workload):
        return
    with open(workload, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    needed = {k: v for k, v in DEFAULT_COLUMNS.items() if k not in OPTIONAL_COLUMNS}
    if all(v in header for v in needed.values()):
        return
    azure = {"arrival": "TIMESTAMP", "prompt": "ContextTokens", "output": "GeneratedTokens"}
    guess = azure if all(v in header for v in azure.values()) else dict.fromkeys(needed, "COLUMN")
    raise CLIError(f"{workload}:1: no {', '.join(needed.values())} columns (header: "
                   f"{', '.join(header)}); name yours with --columns "
                   + ",".join(f"{k}={v}" for k, v in guess.items()))


# ------------------------------------------------------------------------- compiling

def engine_cached(fleet: bool = False) -> bool:
    """Whether numba's on-disk cache holds the compiled engine (and, with ``fleet``, the
    fleet loop); else the first simulation compiles it. Reads numba's cache index; if
    numba's internals differ, assumes cached."""
    from ..engine.step import run_engine
    from ..fleet.core import run_fleet
    try:
        return all(bool(f._cache._cache_file._load_index())
                   for f in ((run_engine, run_fleet) if fleet else (run_engine,)))
    except (AttributeError, OSError):
        return True


def ensure_compiled(quiet: bool = False, fleet: bool = False) -> None:
    """Compile the numba engine (and, with ``fleet``, the fleet loop) now if it is not
    cached, saying so first and how long it took, so that no later wait (or progress bar's
    estimate) includes it. The compile runs on two cores: a helper process
    (``compile_helper``) compiles an iteration's arrivals, policies and output processing
    into numba's disk cache while this one compiles batch formation, about half each; then
    the engine loop finds both cached, while the helper goes on to compile the decision loop
    of the gym environments. If the helper fails, this process compiles its half."""
    if engine_cached(fleet):
        return
    from ..engine.step import form_batch
    from ..sim import simulate
    from ..workload import load_workload
    say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    say(f"tailgym: compiling the numba engine, once after installing (about {COMPILE_SECONDS} s "
        f"on a quiet 2-core machine, longer on a busy one; later runs load it from disk in "
        f"about a second)...")
    start = time.perf_counter()
    with subprocess.Popen([sys.executable, "-c", "from tailgym.cli.common import "
                           "compile_helper; compile_helper()"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as helper:
        run, st, cfg_i, cfg_f = tiny_engine()
        form_batch(st.rf, st.ri, st.target, st.queues, st.batches[0], st.s, cfg_i, cfg_f,
                   run.steps.coef(), st.kv, 0.0)
        helper.stdout.readline()  # its half is cached (or it failed: then this compiles it)
        simulate(load_workload("default:n=20"), **({"replicas": 2} if fleet else {}))
    say(f"tailgym: compiled in {time.perf_counter() - start:.0f} s")


def tiny_engine():
    """A prepared run of 20 requests, its state and config arrays: arguments with which the
    engine's numba functions can be called (compiled) one by one."""
    from ..sim import prepare
    run = prepare("default:n=20")
    cfg_i, cfg_f = run.config.arrays(run.spec, run.params)
    return run, run.state, cfg_i, cfg_f


def compile_iteration() -> None:
    """Compile ``begin_step`` and ``complete_batch`` (with the policies and their online
    statistics) into numba's disk cache, with the argument types ``run_engine`` passes."""
    import numpy as np

    from ..engine.step import begin_step, complete_batch
    run, st, cfg_i, cfg_f = tiny_engine()
    begin_step(st.rf, st.ri, st.hint, st.queues, st.s, st.t, cfg_i, cfg_f, run.params,
               st.pstate, st.kv, np.inf)
    complete_batch(st.rf, st.ri, st.target, st.hint, st.queues, st.batches, st.s, st.t, cfg_i,
                   run.params, st.pstate, st.kv)


def compile_helper() -> None:
    """The helper process of ``ensure_compiled``: ``compile_iteration``, a line on stdout
    when that is cached, then a step of ``Serve-v0`` (its decision loop and observations)."""
    from ..envs.serve import ServeEnv
    compile_iteration()
    print("compiled", flush=True)
    env = ServeEnv(workload="default:n=20")
    env.reset(seed=0)
    env.step(env.heuristic_action())


# ------------------------------------------------------------------------- errors

_ALIASES = {"on_unfit='reject'": "--on-unfit reject", "num_gpu_blocks": "--kv-blocks"}


def in_flag_words(message: str, parser: argparse.ArgumentParser) -> str:
    """Rewrite the library's parameter names in ``message`` as this parser's flags
    (``kv_blocks`` -> ``--kv-blocks``, ``tp=3`` -> ``--tp 3``); one-word names only where
    followed by '=', so that plain words stay words."""
    flags = {a.dest: a.option_strings[-1] for a in parser._actions if a.option_strings}
    for code, flag in _ALIASES.items():
        if flag.split()[0] in flags.values():
            message = message.replace(code, flag)

    def swap(m):
        name, eq = m.group(1), m.group(2)
        if name not in flags or not ("_" in name or eq):
            return m.group(0)
        return f"{flags[name]} " if eq else flags[name]
    return re.sub(r"(?<![^\s'\"(])([a-z][a-z0-9_]*)(=?)", swap, message)


def guarded(handler, args, parser: argparse.ArgumentParser) -> int:
    """Run ``handler(args)``; bad input becomes one line on stderr and exit 2, Ctrl-C exit
    130, and a closed stdout (``| head``) a quiet exit 1."""
    try:
        status = handler(args)
        sys.stdout.flush()
        return status
    except (CLIError, WorkloadError, DataError, ValueError) as err:
        text = " ".join(in_flag_words(str(err), parser).split())
        print(f"{parser.prog}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1
