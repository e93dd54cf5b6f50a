"""Turn a workload spec (name, preset, option string, path or Workload) into a Workload.

Spec forms accepted by :func:`load_workload`:

- a :class:`Workload`: returned as is;
- a trace name (``azure-conv``, ``azure-code``; ``mooncake-conv``, ``mooncake-synthetic``
  with prefix content), found via :func:`tailgym.data.data_path`;
- ``<trace>:key=value,...``: the trace with options, applied in this order:
  ``start`` and ``n`` keep n requests from the start-th (arrivals re-based to 0);
  ``arrival`` (+ its parameters, e.g. ``cv``) redraws
  the arrival times from that process with ``seed``, keeping the requests' lengths in
  order and the trace's mean rate (or ``rate``); ``rate`` alone rescales the trace's
  own arrival times to that mean rate. E.g. ``azure-conv:arrival=gamma,cv=3``;
- ``servegen-r1`` (ServeGen's DeepSeek-R1 client pool, :mod:`~tailgym.workload.servegen`),
  optionally with ``:key=value,...``: ``clients`` (``all``, ``top<k>`` or ids ``12+35``),
  ``start_h`` and ``hours`` (the span of the data's day), ``n`` (the first n requests) and
  ``seed`` choose the generated requests; then ``rate`` and ``arrival`` act as on a trace,
  e.g. ``servegen-r1:n=5000,seed=1`` or ``servegen-r1:clients=top5,start_h=2,hours=3``;
- ``default`` (= ``chat``) or a preset name, optionally with ``:key=value,...`` overrides;
- ``synthetic:preset=chat,n=5000,arrival=gamma,cv=3,rate=4,seed=1``; the shared-prefix
  knobs of :func:`~tailgym.workload.synthetic.synthetic` apply to any preset, e.g.
  ``chat:groups=4,system_tokens=2048`` or ``multiturn:turns=8,think_s=10``;
- a path ending in ``.jsonl``, read by :func:`load_jsonl`;
- a path to a CSV file (an existing file, or one ending in ``.csv``), read by :func:`load_csv`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data import data_path
from .core import Workload, WorkloadError, parse_options
from .csv_loader import load_csv
from .jsonl_loader import load_jsonl
from .arrivals import ARRIVAL_PROCESSES, arrival_params, arrival_times
from .servegen import NAME as SERVEGEN, servegen_workload
from .synthetic import PREFIX_PARAMS, PRESETS, preset

AZURE_COLUMNS = {"arrival": "TIMESTAMP", "prompt": "ContextTokens", "output": "GeneratedTokens"}
_azure = functools.partial(load_csv, columns=AZURE_COLUMNS)
# trace name -> loader(path, name=label)
TRACES: dict[str, Callable[..., Workload]] = {
    "azure-conv": _azure, "azure-code": _azure, "mooncake-conv": load_jsonl, "mooncake-synthetic": load_jsonl,
}

_PROCESS_KEYS = tuple(dict.fromkeys(k for p in ARRIVAL_PROCESSES for k in arrival_params(p)))
_TYPES = ({"n": int, "start": int, "seed": int, "arrival": str, "preset": str, "clients": str}
          | dict.fromkeys(("rate", "start_h", "hours", *_PROCESS_KEYS), float) | PREFIX_PARAMS)
_DRAW_KEYS = ("n", "rate", "seed", "arrival", *_PROCESS_KEYS)
PRESET_KEYS = (*_DRAW_KEYS, *PREFIX_PARAMS)
OPTION_KEYS = ("start", *_DRAW_KEYS)
SYNTHETIC_KEYS = ("preset", *PRESET_KEYS)
_SERVEGEN_SPAN = ("clients", "start_h", "hours", "n")
SERVEGEN_KEYS = (*_SERVEGEN_SPAN, *_DRAW_KEYS[1:])


def _options(text: str, valid: tuple[str, ...], what: str) -> dict:
    out = {}
    for key, value in parse_options(text, valid, what).items():
        try:
            out[key] = _TYPES[key](value)
        except ValueError:
            raise WorkloadError(f"{what} option {key}={value!r}: expected {_TYPES[key].__name__}") from None
    return out


def _is_path(spec) -> bool:
    return isinstance(spec, os.PathLike) or str(spec).lower().endswith((".csv", ".jsonl")) or Path(spec).is_file()


def _trace(name: str, opts: dict, seed: int, data_dir, label: str) -> Workload:
    w = TRACES[name](data_path(name, data_dir=data_dir), name=label)
    if "n" in opts or "start" in opts:
        start = opts.pop("start", 0)
        w = w.window(start, opts.pop("n", len(w) - start))
    seed = opts.pop("seed", seed)
    return _rearrive(w, opts, seed, label)


def _servegen(opts: dict, seed: int, data_dir, label: str) -> Workload:
    seed = opts.pop("seed", seed)
    span = {k: opts.pop(k) for k in _SERVEGEN_SPAN if k in opts}
    w = servegen_workload(data_path(SERVEGEN, data_dir=data_dir), seed=seed, name=label, **span)
    return _rearrive(w, opts, seed, label)


def _rearrive(w: Workload, opts: dict, seed: int, label: str) -> Workload:
    """``w`` after the options ``rate`` and ``arrival`` (with its parameters) of a trace."""
    rate = opts.pop("rate", None)
    if "arrival" in opts:
        rate = w.mean_rate if rate is None else rate
        return w.with_arrivals(arrival_times(opts.pop("arrival"), len(w), rate, np.random.default_rng(seed), **opts))
    if opts:
        raise WorkloadError(f"{label}: options {', '.join(opts)} require arrival=<{'|'.join(ARRIVAL_PROCESSES)}>")
    return w.with_rate(rate) if rate is not None else w


def load_workload(
    spec: Workload | str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    columns: dict[str, str] | str | None = None,
) -> Workload:
    """Resolve ``spec`` (see the module docstring); ``seed`` is the default for random
    draws, ``columns`` the column mapping for CSV paths."""
    if isinstance(spec, Workload):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise WorkloadError(f"workload spec must be a Workload, str or path, got {type(spec).__name__}")
    head, _, text = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    named = head in TRACES or head in PRESETS or head in ("default", "synthetic", SERVEGEN)
    if columns is not None and named:
        raise WorkloadError(f"columns only apply to CSV files, not to {spec!r}")
    label = str(spec) if text else ("chat" if head == "default" else head)
    if head in TRACES:
        return _trace(head, _options(text, OPTION_KEYS, head), seed, data_dir, label)
    if head == SERVEGEN:
        return _servegen(_options(text, SERVEGEN_KEYS, head), seed, data_dir, label)
    if head == "synthetic":
        opts = _options(text, SYNTHETIC_KEYS, head)
        return preset(opts.pop("preset", "chat"), **{"seed": seed, "name": label} | opts)
    if head == "default" or head in PRESETS:
        opts = _options(text, PRESET_KEYS, head)
        return preset("chat" if head == "default" else head, **{"seed": seed, "name": label} | opts)
    if _is_path(spec):
        if str(spec).lower().endswith(".jsonl"):
            if columns is not None:
                raise WorkloadError(f"columns only apply to CSV files, not to {spec}")
            return load_jsonl(spec)
        return load_csv(spec, columns)
    raise WorkloadError(
        f"unknown workload {spec!r}; expected a trace ({', '.join(TRACES)}), {SERVEGEN!r}, 'default', "
        f"a preset ({', '.join(PRESETS)}), 'synthetic:key=value,...', "
        f"'<trace>:key=value,...' or a path to a .csv or .jsonl file"
    )
