"""Load a request trace from CSV, with precise, located error messages."""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from datetime import date
from pathlib import Path

import numpy as np

from .core import UnsortedArrivalsWarning, Workload, WorkloadError, parse_options

DEFAULT_COLUMNS = {"arrival": "arrival_s", "prompt": "prompt_tokens", "output": "output_tokens", "label": "label"}
_KEYS = tuple(DEFAULT_COLUMNS)
_NS_PER_DAY = 86_400 * 10**9
_EPOCH = date(1970, 1, 1).toordinal()
# YYYY-MM-DD[ T]HH:MM:SS[.f{1,9}]
_TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?", re.ASCII)
_BAD_TIME = "unparsable time (expected seconds or YYYY-MM-DD HH:MM:SS[.fraction])"


def parse_columns(text: str) -> dict[str, str]:
    """Parse ``"arrival=TIMESTAMP,prompt=ContextTokens,output=GeneratedTokens[,label=X]"``."""
    return parse_options(text, _KEYS, "column mapping")


class _Where:
    """Formats errors as ``file:line: column 'h': problem (value 'v')``."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, line: int, problem: str, column: str | None = None, value: str | None = None) -> WorkloadError:
        col = f" column {column!r}:" if column is not None else ""
        val = f" (value {value!r})" if value is not None else ""
        return WorkloadError(f"{self.path}:{line}:{col} {problem}{val}")


def _parse_count(s: str) -> int:
    """A token count >= 1 written as an integer (``"12"`` or ``"12.0"``); raises ValueError."""
    try:
        k = int(s)
    except ValueError:
        try:
            x = float(s)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(x):
            raise ValueError("not finite") from None
        if not x.is_integer():
            raise ValueError("not an integer") from None
        k = int(x)
    if k < 0:
        raise ValueError("negative")
    if k == 0:
        raise ValueError("must be >= 1")
    return k


class _ArrivalParser:
    """Parses numeric seconds (float) or wall-clock timestamps (exact int ns); the first row decides."""

    def __init__(self, first: str):
        self.numeric = _TIMESTAMP.fullmatch(first) is None
        self._days: dict[str, int] = {}

    def __call__(self, s: str) -> float | int:
        if self.numeric:
            try:
                x = float(s)
            except ValueError:
                raise ValueError(_BAD_TIME) from None
            if not math.isfinite(x):
                raise ValueError("not finite")
            return x
        m = _TIMESTAMP.fullmatch(s)
        if m is None:
            raise ValueError(_BAD_TIME)
        day, hh, mm, ss, frac = m.groups()
        h, mi, sec = int(hh), int(mm), int(ss)
        if h > 23 or mi > 59 or sec > 59:
            raise ValueError("unparsable time (field out of range)")
        if day not in self._days:
            try:
                self._days[day] = (date.fromisoformat(day).toordinal() - _EPOCH) * _NS_PER_DAY
            except ValueError:
                raise ValueError("unparsable time (bad date)") from None
        ns = int(frac.ljust(9, "0")) if frac else 0
        return self._days[day] + ((h * 60 + mi) * 60 + sec) * 10**9 + ns


def _column_index(header: list[str], columns: dict[str, str], where: _Where) -> dict[str, int]:
    index = {}
    for key, col in columns.items():
        hits = [i for i, h in enumerate(header) if h == col]
        if len(hits) > 1:
            raise where.error(1, f"column {col!r} appears {len(hits)} times in the header")
        if hits:
            index[key] = hits[0]
        elif key != "label" or col != DEFAULT_COLUMNS["label"]:  # the default label column is optional
            raise where.error(1, f"missing {key} column {col!r}; columns present: {', '.join(map(repr, header))}")
    return index


def load_csv(
    path: str | os.PathLike,
    columns: dict[str, str] | str | None = None,
    *,
    name: str | None = None,
) -> Workload:
    """Load a CSV trace; arrivals become seconds since the first request.

    ``columns`` maps ``arrival``/``prompt``/``output``/``label`` to header names
    (dict or :func:`parse_columns` text); unmapped keys use :data:`DEFAULT_COLUMNS`.
    The arrival column holds seconds or ``YYYY-MM-DD HH:MM:SS[.f]`` timestamps (up to
    9 fractional digits, parsed exactly). Unsorted rows are stably sorted with an
    :class:`UnsortedArrivalsWarning`; no row is dropped.
    """
    path = Path(path)
    mapping = parse_columns(columns) if isinstance(columns, str) else dict(columns or {})
    if bad := set(mapping) - set(_KEYS):
        raise WorkloadError(f"unknown column mapping keys {sorted(bad)}; valid keys: {', '.join(_KEYS)}")
    mapping = DEFAULT_COLUMNS | mapping
    where = _Where(path)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise WorkloadError(f"cannot read workload file {path}: {exc}") from exc
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise where.error(1, "empty file (expected a header line)")
            header = [h.strip() for h in header]
            index = _column_index(header, mapping, where)
            values: dict[str, list] = {k: [] for k in index}
            lines: list[int] = []
            parsers = None
            for row in reader:
                if not row:
                    continue  # blank line
                line = reader.line_num
                if len(row) != len(header):
                    raise where.error(line, f"expected {len(header)} fields, got {len(row)}", value=",".join(row))
                if parsers is None:
                    arrival = _ArrivalParser(row[index["arrival"]].strip())
                    parsers = {"arrival": arrival, "prompt": _parse_count, "output": _parse_count, "label": str}
                for key, col in index.items():
                    raw = row[col].strip()
                    try:
                        values[key].append(parsers[key](raw))
                    except ValueError as exc:
                        raise where.error(line, str(exc), header[col], raw) from None
                lines.append(line)
        except csv.Error as exc:
            raise where.error(reader.line_num, f"malformed CSV: {exc}") from None
        except UnicodeDecodeError as exc:
            raise WorkloadError(f"{path}: not UTF-8 text: {exc}") from None
    if not lines:
        raise where.error(2, "no data rows after the header")
    return _build(values, np.array(lines, dtype=np.int64), name or path.stem, where)


def _build(values: dict[str, list], lines: np.ndarray, name: str, where: _Where) -> Workload:
    """Sort by arrival (warning if needed), shift to start at 0 and make the Workload."""
    t = np.array(values["arrival"])  # int64 ns for timestamps, float64 seconds otherwise
    if (late := np.flatnonzero(t[1:] < t[:-1]) + 1).size:
        warnings.warn(
            f"{where.path}: {late.size} row(s) arrive earlier than the row before them "
            f"(first at line {lines[late[0]]}); stably sorted by arrival, no rows dropped",
            UnsortedArrivalsWarning,
            stacklevel=3,
        )
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order[0]]
    arrival_s = t / 1e9 if t.dtype.kind == "i" else t
    labels, label_names = None, ()
    if "label" in values:
        names, labels = np.unique(np.array(values["label"], dtype=str), return_inverse=True)
        labels, label_names = labels[order], tuple(str(s) for s in names)
    return Workload(
        arrival_s=arrival_s,
        prompt_tokens=np.array(values["prompt"], dtype=np.int64)[order],
        output_tokens=np.array(values["output"], dtype=np.int64)[order],
        name=name,
        labels=labels,
        label_names=label_names,
        source_rows=lines[order],
    )
