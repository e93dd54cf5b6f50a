"""A policy x load x seed grid on one workload and engine: its columns, cells, resumable
runs, CSVs, and the ranked and full tables (``tailgym compare`` is ``tailgym.cli.compare``;
its figures are ``tailgym.plots``).

Policy syntax: policies are separated by commas, a policy's knobs follow its name after colons:
``NAME`` or ``NAME:KNOB=VALUE:KNOB=VALUE`` (e.g. ``uniboost:gamma=10:k=256``); nothing in it
needs quoting in a shell. ``POLICY.KNOB=V1,V2,...`` sweeps (``--sweep``) add one grid column
per value; when POLICY is listed its entry gives the other knobs and is replaced by the sweep
columns, else the sweep starts from the policy's defaults.

Every cell (one policy column, load and seed) is stored atomically in ``OUT/cells/<key>``
(``.json`` summary, ``.npz`` per-request latencies) under a hash of everything that defines
the simulation, so re-running a grid skips finished cells and a killed run loses only the
cells in flight, whether they ran in worker processes or as Ray tasks (``backend="ray"``: a
local Ray or a cluster; the results come back to be stored here, the same bytes). The cache
is keyed on the inputs, not on the code: after changing the simulator, use a fresh ``OUT``.
``OUT/results.csv`` has a row per cell, ``summary.csv`` a row per policy column and load
(mean over seeds, its 95% interval ``_lo``/``_hi`` and the ``_min``/``_max`` over seeds),
``ranking.csv`` a row per policy column and load of the ranked table, with the paired 95%
interval of its difference from the reference (``tailgym.stats``).

Python API: ``parse_policies``, ``parse_sweep``, ``expand_sweeps``, ``make_grid`` (``Cell``
objects), ``run_cell``, ``run_grid``, ``aggregate``, ``ranking``, ``write_csv``,
``ranking_rows``, ``format_ranking``, ``format_table``, ``interval_note``,
``pooled_latencies``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import textwrap
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import DataError
from .metrics import METRIC_TITLES, METRICS, PERCENTILES
from .policies import get_policy
from .stats import LEVEL, Interval, mean_interval, paired_ratio

# The main job's grid: the policies of the headline comparison, loads around the knee of the
# default workload (latency tails bend up between 1 and 1.2 of saturation), three seeds.
MAIN_POLICIES = ("fcfs", "sjf-oracle", "srpt-oracle", "srpt-predicted", "las", "uniboost")
KNEE_LOADS = (0.9, 1.0, 1.1, 1.2)
SEEDS = (0, 1, 2)
STATS = ("mean", *PERCENTILES)
STAT_KEYS = tuple(f"{m}_{s}" for m in METRICS for s in STATS)
GROUP = ("workload", "policy", "knobs", "sweep", "load")  # a summary row: seeds aggregated
IDENTITY = (*GROUP, "seed")
COUNTS = ("requests_in", "requests_completed", "requests_rejected", "preemptions")
RATES = ("rate_rps", "saturation_rps", "throughput_rps")
TABLE_METRICS = ("ttft", "ttlt")
RANK_STATS = ("p50", "p99")
RANK_BY = "ttlt_p99"
SHORT_TITLES = {"ttft": "TTFT", "tbt": "TBT", "tbt_max": "TBTmax", "ttlt": "TTLT",
                "queueing": "queue"}
TABLE_STATS = ("mean", "p50", "p90", "p95", "p99")


class CompareError(ValueError):
    """Bad grid input, or a cell that failed on its input (the message names it)."""


def format_value(value) -> str:
    """Shortest text of a knob value: floats as their round-trip repr without a trailing .0."""
    return repr(value).removesuffix(".0") if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Policy:
    """One grid column: a registered policy with the knobs set explicitly (registry order);
    ``sweep`` names the knob that a ``--sweep`` varies in this column ("" otherwise)."""

    name: str
    args: dict = field(default_factory=dict)
    sweep: str = ""

    @property
    def knobs(self) -> str:
        return ":".join(f"{k}={format_value(v)}" for k, v in self.args.items())

    @property
    def label(self) -> str:
        return f"{self.name}:{self.knobs}" if self.args else self.name

    @property
    def sweep_point(self) -> str:
        """``KNOB=VALUE`` of the swept knob, "" for a listed policy."""
        return f"{self.sweep}={format_value(self.args[self.sweep])}" if self.sweep else ""


def make_policy(name: str, args: dict | None = None, sweep: str = "") -> Policy:
    """A validated ``Policy``: known name and knobs, values converted as the registry does
    (numbers to float, choice knobs checked), in registry order. Raises ValueError."""
    args = dict(args or {})
    knobs = get_policy(name).knobs(args)
    return Policy(name, {k: v for k, v in knobs.items() if k in args}, sweep)


def parse_policy(token: str) -> Policy:
    """``NAME`` or ``NAME:KNOB=VALUE:KNOB=VALUE`` -> ``Policy``."""
    name, *items = token.strip().split(":")
    if not name:
        raise CompareError(f"policy entry {token!r} has no name")
    if any(c in token for c in "[](){};"):
        raise CompareError(f"policy entry {token!r}: write knobs after colons, e.g. "
                           f"uniboost:gamma=10:k=256")
    args = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not (sep and key and value):
            raise CompareError(f"policy entry {token!r}: knob {item!r} must look like KNOB=VALUE")
        if key in args:
            raise CompareError(f"policy entry {token!r}: knob {key!r} given twice")
        args[key] = value
    try:
        return make_policy(name, args)
    except ValueError as err:
        raise CompareError(f"policy entry {token!r}: {err}") from None


def parse_policies(text: str) -> list[Policy]:
    """Comma-separated policy entries (see ``parse_policy``)."""
    tokens = text.split(",")
    if not all(t.strip() for t in tokens):
        raise CompareError(f"--policies {text!r} has an empty entry")
    return [parse_policy(t) for t in tokens]


def parse_sweep(text: str) -> tuple[str, str, list[str]]:
    """``POLICY.KNOB=V1,V2,...`` -> (policy, knob, value texts); values are checked when the
    columns are made (``expand_sweeps``)."""
    target, sep, values = text.partition("=")
    name, dot, knob = target.partition(".")
    items = values.split(",")
    if not (sep and dot and name and knob and all(v.strip() for v in items)):
        raise CompareError(f"--sweep {text!r} must look like POLICY.KNOB=V1,V2,... "
                           f"(e.g. uniboost.gamma=0.1,1,10)")
    try:
        get_policy(name)
    except ValueError as err:
        raise CompareError(f"--sweep {text!r}: {err}") from None
    return name, knob, [v.strip() for v in items]


def _swept(base: Policy, knob: str, value: str) -> Policy:
    where = f"--sweep {base.name}.{knob}={value}"
    if knob in base.args:
        raise CompareError(f"{where}: the listed entry {base.label!r} already sets {knob}")
    try:
        return make_policy(base.name, {**base.args, knob: value}, sweep=knob)
    except ValueError as err:
        raise CompareError(f"{where}: {err}") from None


def expand_sweeps(policies: list[Policy], sweeps: list[tuple[str, str, list[str]]]) -> list[Policy]:
    """Grid columns: each listed policy, or in its place the columns of the sweeps of its
    name; sweeps of unlisted policies (from their defaults) at the end. Labels must be unique."""
    def family(base: Policy) -> list[Policy]:
        return [_swept(base, knob, v) for name, knob, values in sweeps if name == base.name
                for v in values]

    listed = {p.name for p in policies}
    columns = [c for p in policies for c in (family(p) or [p])]
    for name in dict.fromkeys(name for name, _, _ in sweeps):
        if name not in listed:
            columns += family(Policy(name))
    seen = set()
    for c in columns:
        if c.label in seen:
            raise CompareError(f"policy column {c.label!r} appears twice in the grid")
        seen.add(c.label)
    return columns


@dataclass(frozen=True)
class Cell:
    """One simulation of the grid. ``engine`` holds ``build_engine`` knobs (``tp``,
    ``kv_blocks``, ``profile``...); ``load`` is the fraction of saturation throughput."""

    workload: str
    policy: Policy
    load: float
    seed: int
    model: str = "llama3-8b"
    gpu: str = "h100-80gb"
    engine: dict = field(default_factory=dict)
    warmup_s: float = 0.0
    on_unfit: str = "error"
    columns: str = ""  # CSV column mapping (``tailgym.workload.parse_columns``)

    def key(self) -> str:
        """Stable hash of everything that defines the simulation (knob defaults included;
        the column's label and sweep are not part of it)."""
        ident = {"workload": self.workload, "policy": self.policy.name,
                 "knobs": get_policy(self.policy.name).knobs(self.policy.args),
                 "load": float(self.load), "seed": int(self.seed), "model": self.model,
                 "gpu": self.gpu, "engine": self.engine, "warmup_s": float(self.warmup_s),
                 "on_unfit": self.on_unfit, **({"columns": self.columns} if self.columns else {})}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]

    def describe(self) -> str:
        return f"{self.policy.label} at load {self.load:g}, seed {self.seed}"

    def identity(self) -> dict:
        """The identifying columns of the cell's CSV row."""
        return {"workload": self.workload, "policy": self.policy.name, "knobs": self.policy.knobs,
                "sweep": self.policy.sweep_point, "load": float(self.load), "seed": int(self.seed)}


def make_grid(workload: str, policies: list[Policy], loads: list[float], seeds: list[int],
              **common) -> list[Cell]:
    """Cells in grid order (policy, load, seed); ``common`` are the other ``Cell`` fields."""
    bad = [x for x in loads if not 0 < x < float("inf")]
    if bad:
        raise CompareError(f"--loads: {bad[0]!r} is not a positive number")
    if any(seed < 0 for seed in seeds):
        raise CompareError(f"--seeds: {min(seeds)} is negative")
    return [Cell(workload, p, float(load), int(seed), **common)
            for p in policies for load in loads for seed in seeds]


def run_cell(cell: Cell) -> tuple[dict, dict[str, np.ndarray], float]:
    """Simulate one cell: its CSV row, per-request latencies (s) by metric, wall seconds."""
    from .sim import simulate
    from .workload import parse_columns
    report = simulate(cell.workload, cell.policy.name, model=cell.model, gpu=cell.gpu,
                      seed=cell.seed, load=cell.load, policy_args=cell.policy.args,
                      warmup_s=cell.warmup_s, on_unfit=cell.on_unfit,
                      columns=parse_columns(cell.columns) if cell.columns else None, **cell.engine)
    s = report.summary()
    row = {**cell.identity(), "rate_rps": s["config"].get("rate_rps", float("nan")),
           "saturation_rps": s["config"]["saturation_rps"], "throughput_rps": s["throughput_rps"],
           **{k: s[k] for k in COUNTS},
           **{f"{m}_{q}": s[m][q] for m in METRICS for q in STATS}}
    return row, {m: report.metric(m) for m in METRICS}, report.wall_seconds


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def cell_paths(out_dir, cell: Cell) -> tuple[Path, Path]:
    """(summary .json, latencies .npz) of ``cell`` under ``out_dir/cells``."""
    stem = Path(out_dir) / "cells" / cell.key()
    return stem.with_suffix(".json"), stem.with_suffix(".npz")


def _simulate_cell(cell: Cell) -> tuple[dict, dict[str, np.ndarray], float]:
    """``run_cell``, with a failure on the cell's input as a ``CompareError`` naming it."""
    try:
        return run_cell(cell)
    except (ValueError, DataError) as err:
        raise CompareError(f"{cell.describe()}: {err}") from err


def _store(cell: Cell, out_dir, result) -> None:
    """Write the cell's ``run_cell`` result, the ``.json`` last (it marks the cell done)."""
    row, latencies, wall = result
    summary_path, npz_path = cell_paths(out_dir, cell)
    buf = io.BytesIO()
    np.savez(buf, **latencies)
    _write_atomic(npz_path, buf.getvalue())
    record = {"cell": cell.describe(), "row": row, "wall_s": wall}
    _write_atomic(summary_path, json.dumps(record, indent=1).encode())


def _store_cell(cell: Cell, out_dir) -> None:
    """Simulate ``cell`` and store it (the process backend's job, in a worker)."""
    _store(cell, out_dir, _simulate_cell(cell))


def load_row(out_dir, cell: Cell) -> dict:
    """The stored row of a finished cell, identified as ``cell`` (label and sweep as now)."""
    row = json.loads(cell_paths(out_dir, cell)[0].read_text())["row"]
    row.update(cell.identity())
    return row


def load_latencies(out_dir, cell: Cell) -> dict[str, np.ndarray]:
    with np.load(cell_paths(out_dir, cell)[1]) as f:
        return {m: f[m] for m in f.files}


def _execute(todo: list[Cell], out_dir, processes: int, done) -> None:
    if processes <= 1 or len(todo) <= 1:
        for cell in todo:
            _store_cell(cell, out_dir)
            done()
        return
    with ProcessPoolExecutor(min(processes, len(todo))) as pool:
        futures = [pool.submit(_store_cell, c, out_dir) for c in todo]
        try:
            for f in as_completed(futures):
                f.result()
                done()
        finally:
            for f in futures:
                f.cancel()


def import_ray():
    """The ``ray`` module, or a ``CompareError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise CompareError("--backend ray needs Ray: pip install 'tailgym[ray]'") from None
    return ray


def _execute_ray(todo: list[Cell], out_dir, processes: int, done, address: str | None) -> None:
    """Simulate ``todo`` as Ray tasks of one CPU each, on the cluster at ``address`` or else on
    a local Ray of ``processes`` CPUs (unless Ray is already initialized), storing each result
    here as it arrives. The workers get this process's data and download directories."""
    ray = import_ray()
    if not todo:
        return
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or "local", num_cpus=None if address else processes,
                 include_dashboard=False, logging_level=logging.ERROR)
    env = {k: os.environ[k] for k in ("TAILGYM_DATA_DIR", "TAILGYM_CACHE_DIR") if k in os.environ}
    task = ray.remote(_simulate_cell).options(num_cpus=1, runtime_env={"env_vars": env})
    cells = {task.remote(c): c for c in todo}
    pending = list(cells)
    try:
        while pending:
            [ref], pending = ray.wait(pending)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as err:
                if isinstance(err.cause, CompareError):
                    raise err.cause from None
                raise
            _store(cells[ref], out_dir, result)
            done()
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()


BACKENDS = ("process", "ray")


def run_grid(cells: list[Cell], out_dir, processes: int = 1, progress: bool = False,
             backend: str = "process", ray_address: str | None = None) -> list[dict]:
    """Run the cells not yet stored in ``out_dir`` and return every cell's row in grid order.
    ``backend`` "process": ``processes`` > 1 runs them in worker processes; "ray": as Ray
    tasks (see ``_execute_ray``; ``ray_address``: an existing cluster). Same stored files
    either way, so a grid started with one backend resumes with the other."""
    from tqdm import tqdm
    if processes < 1:
        raise CompareError(f"--processes must be >= 1, got {processes}")
    if backend not in BACKENDS:
        raise CompareError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    (Path(out_dir) / "cells").mkdir(parents=True, exist_ok=True)
    todo = list({c.key(): c for c in cells if not cell_paths(out_dir, c)[0].exists()}.values())
    with tqdm(total=len(cells), initial=len(cells) - len(todo), unit="cell", desc="compare",
              disable=not progress) as bar:
        if backend == "ray":
            _execute_ray(todo, out_dir, processes, bar.update, ray_address)
        else:
            _execute(todo, out_dir, processes, bar.update)
    return [load_row(out_dir, c) for c in cells]


def _distinct(values) -> np.ndarray:
    """Per-seed values, or just the first where every seed gave the same (a trace replayed as
    is: the seeds are copies of one run, not replications, so they carry no interval)."""
    values = np.asarray(values, dtype=np.float64)
    same = values.size > 1 and np.array_equal(values, np.full_like(values, values[0]),
                                               equal_nan=True)
    return values[:1] if same else values


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per (workload, policy column, load): counts summed over seeds; rates and
    latency statistics averaged, the latter with ``_lo``/``_hi``, the 95% Student-t interval
    of the mean over seeds (nan with one seed, or where all seeds gave the same value), and
    ``_min``/``_max`` over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in GROUP), []).append(r)
    out = []
    for key, rs in groups.items():
        agg = {**dict(zip(GROUP, key)), "seeds": len(rs)}
        agg.update({k: sum(r[k] for r in rs) for k in COUNTS})
        agg.update({k: float(np.mean([r[k] for r in rs])) for k in RATES})
        for k in STAT_KEYS:
            values = np.array([r[k] for r in rs], dtype=np.float64)
            ci = mean_interval(_distinct(values))
            agg.update({k: float(values.mean()), f"{k}_lo": ci.lo, f"{k}_hi": ci.hi,
                        f"{k}_min": float(values.min()), f"{k}_max": float(values.max())})
        out.append(agg)
    return out


def policy_label(row: dict) -> str:
    return f"{row['policy']}:{row['knobs']}" if row["knobs"] else row["policy"]


def write_csv(rows: list[dict], path) -> Path:
    """Rows as CSV (floats as round-trip repr, so equal results give equal bytes)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(rows[0])
    for r in rows:
        writer.writerow(repr(v) if isinstance(v, float) else v for v in r.values())
    path = Path(path)
    _write_atomic(path, buf.getvalue().encode())
    return path


MARK = "*"  # after a difference whose 95% interval excludes 0


def _with_interval(row: dict, key: str) -> str:
    """``mean ±h%``: h is the half-width of the 95% interval of the mean over seeds, in % of
    the mean; the mean alone with one seed (or seeds that are copies of one run)."""
    mean, lo, hi = row[key], row[f"{key}_lo"], row[f"{key}_hi"]
    if not (np.isfinite(mean) and np.isfinite(lo) and np.isfinite(hi)):
        return f"{mean:.4g}"
    half = 100 * (hi - lo) / 2 / abs(mean) if mean else 0.0
    return f"{mean:.4g} ±{half:.0f}%"


def _level() -> str:
    return f"{100 * LEVEL:g}%"


def interval_note(seeds: int, vs: str | None = "#1", copies: bool = False) -> str:
    """What the table's ± (and, where ``vs`` names the reference, its 'vs' column) means, for
    ``seeds`` seeds; ``copies``: every seed gave the same results (no interval anywhere)."""
    if seeds < 2:
        note = ("one seed: no intervals, and no difference is called real (several seeds, "
                f"e.g. --seeds 0,1,2, give {_level()} intervals)")
    elif copies:
        note = (f"the {seeds} seeds gave identical results (copies of one run, not "
                f"replications): no intervals, and no difference is called real")
    else:
        note = (f"± is half the {_level()} Student-t interval of the mean over {seeds} seeds "
                f"(t with {seeds - 1} df; % of the mean)")
    notes = [note]
    if vs and seeds >= 2 and not copies:
        notes += [f"'vs {vs}': the column's value over {vs}'s on the same seed, geometric mean "
                  f"over the {seeds} seeds, minus 1, and in [ ] its paired {_level()} t interval "
                  f"(of the mean log ratio)",
                  f"{MARK} marks a real difference: its {_level()} interval excludes 0"]
    return "\n".join(line for n in notes for line in textwrap.wrap(n, 100))


def format_table(summary: list[dict], metrics=TABLE_METRICS) -> str:
    """A block per metric: mean/P50/P90/P95/P99 per policy column and load, each the mean over
    seeds ± half its 95% interval (% of the mean), and a line saying so."""
    width = max(len("policy"), *(len(policy_label(r)) for r in summary)) + 2
    col = 15
    blocks = []
    for m in metrics:
        head = f"{'policy':<{width}}{'load':>6}" + "".join(f"{s:>{col}}" for s in TABLE_STATS)
        lines = [f"{METRIC_TITLES[m]} (s)", head, "-" * len(head)]
        lines += [f"{policy_label(r):<{width}}{r['load']:>6g}"
                  + "".join(f"{_with_interval(r, f'{m}_{s}'):>{col}}" for s in TABLE_STATS)
                  for r in summary]
        blocks.append("\n".join(lines))
    copies = not any(np.isfinite(r[f"{m}_{s}_lo"]) for r in summary for m in metrics
                     for s in TABLE_STATS)
    blocks.append(interval_note(max(r["seeds"] for r in summary), vs=None, copies=copies))
    return "\n\n".join(blocks)


def ranking(rows: list[dict], summary: list[dict], by: str = RANK_BY,
            reference: str | None = None) -> list[dict]:
    """The summary rows by load, each load's ordered by ``by`` (mean over seeds, lowest first;
    nan last), with ``rank``, ``reference`` (the label compared with: ``reference`` if given,
    else the load's leader), ``vs`` (its name in the table: ``reference`` or "#1") and
    ``vs_best``, a ``tailgym.stats.Interval``: ``by`` relative to the reference's on the same
    seed (each seed is the same workload draw for every policy), the geometric mean of the
    per-seed ratios minus 1 with its paired 95% interval (none for the reference itself, with
    one seed, or where both columns gave the same value on every seed: copies of one run)."""
    per_seed = {(policy_label(r), r["load"], r["seed"]): r[by] for r in rows}
    if reference is not None and reference not in {policy_label(r) for r in summary}:
        raise CompareError(f"--vs {reference!r} is not a policy column of the grid "
                           f"({', '.join(dict.fromkeys(policy_label(r) for r in summary))})")
    out = []
    for load in dict.fromkeys(r["load"] for r in summary):
        ordered = sorted((r for r in summary if r["load"] == load),
                         key=lambda r: (not np.isfinite(r[by]), r[by]))
        ref = reference or policy_label(ordered[0])
        seeds = sorted({s for (label, x, s) in per_seed if label == ref and x == load})
        base = np.array([per_seed[ref, load, s] for s in seeds])
        for rank, r in enumerate(ordered, 1):
            value = np.array([per_seed[policy_label(r), load, s] for s in seeds])
            if policy_label(r) == ref:
                vs = Interval(0.0, np.nan, np.nan, len(seeds))
            elif len(_distinct(value)) == len(_distinct(base)) == 1:  # copies of one run
                vs = paired_ratio(value[:1], base[:1])
            else:
                vs = paired_ratio(value, base)
            out.append({**r, "rank": rank, "reference": ref, "vs": reference or "#1",
                        "vs_best": vs})
    return out


RANKING_COLUMNS = (*GROUP, "seeds", "rank", "by", "value", "value_lo", "value_hi", "reference",
                   "vs_reference", "vs_reference_lo", "vs_reference_hi", "vs_reference_real")


def ranking_rows(ranked: list[dict], by: str = RANK_BY) -> list[dict]:
    """The ranked table as CSV rows: ``value`` (mean over seeds of ``by``) with its 95%
    interval, and the paired relative difference from the reference (fractions) with its 95%
    interval and whether that excludes 0."""
    return [{**{k: r[k] for k in (*GROUP, "seeds", "rank")}, "by": by, "value": r[by],
             "value_lo": r[f"{by}_lo"], "value_hi": r[f"{by}_hi"], "reference": r["reference"],
             "vs_reference": r["vs_best"].estimate, "vs_reference_lo": r["vs_best"].lo,
             "vs_reference_hi": r["vs_best"].hi, "vs_reference_real": int(r["vs_best"].real)}
            for r in ranked]


def _percent(fraction: float) -> str:
    """Signed per cent: one decimal from 0.1% to 100%, one significant digit below."""
    pct = 100 * fraction
    if pct == 0 or abs(pct) >= 100:
        return f"{pct:+.0f}"
    return f"{pct:+.1f}" if abs(pct) >= 0.1 else f"{pct:+.1g}"


def _vs_best(row: dict) -> str:
    ci = row["vs_best"]
    if policy_label(row) == row["reference"] or not np.isfinite(ci.estimate):
        return ""
    if not ci.has_interval:
        return f"{_percent(ci.estimate)}%"
    mark = f" {MARK}" if ci.real else ""
    return f"{_percent(ci.estimate)}% [{_percent(ci.lo)}, {_percent(ci.hi)}]{mark}"


def format_ranking(ranked: list[dict], metrics=TABLE_METRICS, by: str = RANK_BY) -> str:
    """A block per load: the policy columns ranked (see ``ranking``), with P50 and P99 of each
    metric (mean over seeds ± half its 95% interval, % of the mean) and how far each column's
    ``by`` lies from the reference's (paired by seed, with its 95% interval; ``*``: the
    interval excludes 0); a closing line says what the intervals are."""
    width = max(len("policy"), *(len(policy_label(r)) for r in ranked)) + 2
    keys = [f"{m}_{s}" for m in metrics for s in RANK_STATS]
    titles = [f"{SHORT_TITLES[m]} {s.upper()}" for m in metrics for s in RANK_STATS]
    metric, _, stat = by.rpartition("_")
    by_title = f"{SHORT_TITLES[metric]} {stat.upper()}"
    vs = ranked[0]["vs"]
    seeds = max(r["seeds"] for r in ranked)
    col = 13
    head = (f"{'#':>3}  {'policy':<{width}}" + "".join(f"{t:>{col}}" for t in titles)
            + f"   {by_title} vs {vs}" + (f" [{_level()} CI]" if seeds > 1 else ""))
    blocks = []
    for load in dict.fromkeys(r["load"] for r in ranked):
        rs = [r for r in ranked if r["load"] == load]
        lines = [f"load {load:g}: {rs[0]['rate_rps']:.3g} req/s, saturation "
                 f"{rs[0]['saturation_rps']:.3g} req/s", head]
        lines += [f"{r['rank']:>3}  {policy_label(r):<{width}}"
                  + "".join(f"{_with_interval(r, k):>{col}}" for k in keys) + f"   {_vs_best(r)}"
                  for r in rs]
        blocks.append("\n".join(line.rstrip() for line in lines))
    copies = not any(r["vs_best"].has_interval or np.isfinite(r[f"{k}_lo"])
                     for r in ranked for k in (*keys, by))
    blocks.append(interval_note(seeds, vs, copies))
    return "\n\n".join(blocks)


def pooled_latencies(out_dir, cells: list[Cell], load: float, metrics) -> dict[str, dict[str, np.ndarray]]:
    """Per policy column label and metric, the per-request latencies (s) at ``load``, seeds pooled."""
    runs: dict[str, list[dict]] = {}
    for c in cells:
        if c.load == load:
            runs.setdefault(c.policy.label, []).append(load_latencies(out_dir, c))
    return {label: {m: np.concatenate([r[m] for r in rs]) for m in metrics}
            for label, rs in runs.items()}
