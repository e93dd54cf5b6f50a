"""Readers turning GPU timing files into step observations (features, seconds).

Features are :data:`tailgym.hardware.FEATURES`, computed by
:func:`tailgym.hardware.step_features`. Three formats:

* ``splitwise``: splitwise-sim ``perf_model.csv`` end-to-end timings. A row
  (batch B, prompt P, T generated tokens) gives one prefill step, ``prompt_time``
  (B fresh prompts of P tokens: c = 0, n = P), and one decode step,
  ``token_time`` (mean ms per decode iteration): B decodes whose context is the
  mean P + T/2 (decode k = 1..T-1 reads P + k tokens of KV). ``e2e_time`` is
  only used to drop broken runs: a row whose e2e_time exceeds
  ``E2E_BROKEN_FACTOR`` x (prompt_time + T*token_time) did not run as one batch
  (the batch-64 runs at TP2: 64 x 640 tokens is about llama2-70b's whole KV
  capacity there) and both its observations are reported as outliers. A
  shorter e2e_time is normal (generation stopped early) and is not used.
* ``vidur-mlp``: vidur per-operator profiles of one layer's non-attention ops
  vs ``num_tokens``. Synthetic steps on a geometric ladder of token counts
  (one prefill of n tokens; n decodes at each of ``VIDUR_DECODE_CONTEXTS``)
  cost ``n_layers`` x the summed operator medians (vidur's block sum, no
  embedding) plus the roofline's attention terms and per-step overhead
  (:func:`tailgym.hardware.roofline`). TP communication is not in the data.
  The steps of the rows the ladder skips are returned too, flagged ``holdout``:
  grid points the fit never sees.
* ``tailgym``: our profiler's CSV, one row per measured step with columns
  :data:`TAILGYM_COLUMNS` (the features up to ``prefill_seqs``; the knee
  features follow from the token counts), ``step_time_ms`` the wall time of the
  step in milliseconds.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tailgym.hardware import (FEATURES, default_engine_knobs, get_gpu, get_model, knee_features, roofline,
                              step_features)

E2E_BROKEN_FACTOR = 2.0
VIDUR_GRID_RATIO = 1.25
VIDUR_DECODE_CONTEXTS = (512, 2048)
VIDUR_LAYER_OPS = (
    "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
    "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add",
)
CSV_FEATURES = FEATURES[1:FEATURES.index("knee_tokens")]
TAILGYM_COLUMNS = ("model", "gpu", "tp", *CSV_FEATURES, "step_time_ms")


class CalibrationError(ValueError):
    """Bad calibration input; the message names the file, row, column and value."""


@dataclass
class Observations:
    """Measured steps: features ``x`` (n, len(FEATURES)), ``seconds`` (n,), and for reports
    the file, its line numbers and a description of each step's grid point.
    ``rejected`` lists rows dropped by the reader's sanity checks; ``holdout`` (n,) marks
    steps kept out of the fit to measure it (default none)."""

    file: str
    x: np.ndarray
    seconds: np.ndarray
    lines: np.ndarray
    desc: list[str]
    rejected: list[str] = field(default_factory=list)
    holdout: np.ndarray | None = None

    def __post_init__(self):
        if self.holdout is None:
            self.holdout = np.zeros(len(self.seconds), dtype=bool)

    def subset(self, sel) -> Observations:
        """The steps selected by the boolean mask ``sel`` (no rejected rows, no holdout flags)."""
        return Observations(self.file, self.x[sel], self.seconds[sel], self.lines[sel],
                            [d for d, k in zip(self.desc, sel) if k])


def _read_rows(path: Path, required) -> list[tuple[int, dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise CalibrationError(f"{path}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        return [(reader.line_num, row) for row in reader]


def _num(path, line, row, col, *, positive=True) -> float:
    raw = row[col]
    try:
        v = float(raw)
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v) or v < 0 or (positive and v == 0):
        kind = "a positive number" if positive else "a non-negative number"
        raise CalibrationError(f"{path}: line {line}, column {col!r}: expected {kind}, got {raw!r}")
    return v


def _select(path, rows, keys: dict) -> list:
    """Rows whose ``keys`` columns match; else an error listing the combinations present."""
    chosen = [(n, r) for n, r in rows if all(r[c].strip() == str(v) for c, v in keys.items())]
    if not chosen:
        present = sorted({tuple(r[c].strip() for c in keys) for _, r in rows})
        listing = "; ".join(", ".join(f"{c}={v}" for c, v in zip(keys, p)) for p in present)
        want = ", ".join(f"{c}={v}" for c, v in keys.items())
        raise CalibrationError(f"{path}: no rows for {want}; present: {listing or 'none'}")
    return chosen


def _observations(path, steps, rejected, holdout=None) -> Observations:
    x, s, lines, desc = zip(*steps) if steps else ((), (), (), ())
    return Observations(
        file=Path(path).name,
        x=np.array(x, dtype=np.float64).reshape(-1, len(FEATURES)),
        seconds=np.array(s, dtype=np.float64),
        lines=np.array(lines, dtype=np.int64),
        desc=list(desc),
        rejected=rejected,
        holdout=None if holdout is None else np.array(holdout, dtype=bool),
    )


def _prefill(batch, prompt) -> np.ndarray:
    """Features of ``batch`` fresh prompts of ``prompt`` tokens each."""
    return step_features(np.zeros(int(batch)), np.full(int(batch), prompt), np.zeros(int(batch), dtype=bool))


def _decode(batch, context) -> np.ndarray:
    """Features of ``batch`` decodes that each read ``context`` tokens of KV (the new one included)."""
    b = int(batch)
    return step_features(np.full(b, context - 1.0), np.ones(b), np.ones(b, dtype=bool))


def read_splitwise(path, model: str, gpu: str, tp: int) -> Observations:
    """Prefill and decode steps of one (model, hardware, tensor_parallel) in a splitwise perf_model.csv."""
    path = Path(path)
    cols = ("prompt_size", "batch_size", "token_size", "prompt_time", "token_time", "e2e_time")
    rows = _select(path, _read_rows(path, ("model", "hardware", "tensor_parallel", *cols)),
                   {"model": model, "hardware": gpu, "tensor_parallel": tp})
    steps, rejected = [], []
    for line, r in rows:
        p, b, t, prompt_ms, token_ms, e2e_ms = (_num(path, line, r, c) for c in cols)
        point = f"prompt_size={p:g} batch_size={b:g}"
        expected = prompt_ms + t * token_ms
        if e2e_ms > E2E_BROKEN_FACTOR * expected:
            rejected.append(
                f"{path.name} line {line} ({point} token_size={t:g}): e2e_time {e2e_ms:.0f} ms is "
                f"{e2e_ms / expected:.1f}x prompt_time + token_size*token_time; broken run dropped"
            )
            continue
        steps.append((_prefill(b, p), prompt_ms / 1e3, line, f"prompt_time at {point}"))
        steps.append((_decode(b, p + t / 2), token_ms / 1e3, line, f"token_time at {point} token_size={t:g}"))
    return _observations(path, steps, rejected)


def _geometric_ladder(values, ratio: float) -> list:
    """Sorted subset of ``values`` from min to max, each at least ``ratio`` times the previous one."""
    values = np.unique(values)
    kept = [values[0]]
    for v in values[1:]:
        if v >= ratio * kept[-1] or v == values[-1]:
            kept.append(v)
    return kept


def read_vidur_mlp(path, model: str, gpu: str, tp: int) -> Observations:
    """Synthetic prefill and decode steps built from a vidur ``mlp.csv`` (see module docstring)."""
    path = Path(path)
    m, g = get_model(model), get_gpu(gpu)
    shape = {"n_head": m.n_heads, "n_kv_head": m.n_kv_heads, "n_embd": m.hidden, "n_expanded_embd": m.intermediate}
    op_cols = [f"time_stats.{op}.median" for op in VIDUR_LAYER_OPS]
    rows = _read_rows(path, ("num_tokens", "num_tensor_parallel_workers", *shape, *op_cols))
    for line, r in rows:
        for col, want in shape.items():
            if _num(path, line, r, col) != want:
                raise CalibrationError(
                    f"{path}: line {line}, column {col!r}: {r[col]!r} does not match {m.name} ({col}={want})"
                )
    rows = _select(path, rows, {"num_tensor_parallel_workers": tp})
    by_tokens = {}
    for line, r in rows:
        n = _num(path, line, r, "num_tokens")
        by_tokens[n] = (line, sum(_num(path, line, r, c, positive=False) for c in op_cols) * m.n_layers / 1e3)
    attention = roofline(m, g, tp)
    tokens = np.array(sorted(by_tokens))
    max_seqs = default_engine_knobs(g)["max_num_seqs"]
    prefills, decodes = tokens[tokens <= m.max_context], tokens[tokens <= max_seqs]
    candidates = [(n, _prefill(1, n), f"prefill of {n:g} tokens", on_ladder)
                  for n, on_ladder in _split_ladder(prefills)]
    candidates += [(n, _decode(n, c + 1), f"{n:g} decodes at context {c}", on_ladder)
                   for n, on_ladder in _split_ladder(decodes) for c in VIDUR_DECODE_CONTEXTS if c < m.max_context]
    steps, holdout = [], []
    for n, x, desc, on_ladder in candidates:
        line, layers_s = by_tokens[n]
        extra = (
            attention.compute[0]  # per-step overhead
            + attention.compute[3] * x[3] + attention.compute[4] * x[4]  # attention FLOPs
            + attention.memory[3] * x[3]  # KV reads
        )
        steps.append((x, layers_s + extra, line, f"{desc} (num_tokens={n:g})"))
        holdout.append(not on_ladder)
    return _observations(path, steps, [], holdout)


def _split_ladder(values):
    """(value, on the ``VIDUR_GRID_RATIO`` ladder) for each distinct value."""
    ladder = set(_geometric_ladder(values, VIDUR_GRID_RATIO))
    return [(v, v in ladder) for v in np.unique(values)]


def read_tailgym_csv(path, model: str, gpu: str, tp: int) -> Observations:
    """Measured steps of one (model, gpu, tp) from a tailgym profile CSV."""
    path = Path(path)
    rows = _select(path, _read_rows(path, TAILGYM_COLUMNS), {"model": model, "gpu": gpu, "tp": tp})
    steps = []
    for line, r in rows:
        x = [1.0] + [_num(path, line, r, c, positive=False) for c in CSV_FEATURES]
        if x[1] + x[2] == 0:
            raise CalibrationError(f"{path}: line {line}: a step needs prefill_tokens or decode_seqs > 0")
        desc = " ".join(f"{c}={v:g}" for c, v in zip(CSV_FEATURES, x[1:]))
        steps.append(([*x, *knee_features(x[1] + x[2])], _num(path, line, r, "step_time_ms") / 1e3, line,
                      f"step {desc}"))
    return _observations(path, steps, [])


def write_tailgym_csv(path, x, step_time_ms, *, model: str, gpu: str, tp: int, append: bool = False) -> Path:
    """Write measured steps (features ``x`` (n, len(FEATURES)) with x[:, 0] = 1, times in ms) as a
    tailgym CSV (the columns :data:`TAILGYM_COLUMNS`).

    With ``append`` the rows go after an existing file's rows (header written once).
    """
    path = Path(path)
    x = np.asarray(x, dtype=np.float64).reshape(-1, len(FEATURES))
    ms = np.asarray(step_time_ms, dtype=np.float64).reshape(-1)
    if len(ms) != len(x):
        raise ValueError(f"{len(x)} feature rows but {len(ms)} step times")
    header = not (append and path.exists() and path.stat().st_size)
    with open(path, "a" if append else "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(TAILGYM_COLUMNS)
        for xi, t in zip(x, ms):
            w.writerow([model, gpu, tp, *(f"{v:.17g}" for v in xi[1:len(CSV_FEATURES) + 1]), f"{t:.17g}"])
    return path


READERS = {"splitwise": read_splitwise, "vidur-mlp": read_vidur_mlp, "tailgym": read_tailgym_csv}
