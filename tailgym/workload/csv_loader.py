"""Load a request trace from CSV, with precise, located error messages."""

from __future__ import annotations

import csv
import math
import os
import re
from datetime import date
from pathlib import Path

import numpy as np

from .core import Workload, WorkloadError, parse_options
from .rows import Where, build, int64_ids, parse_count

DEFAULT_COLUMNS = {"arrival": "arrival_s", "prompt": "prompt_tokens", "output": "output_tokens", "label": "label",
                   "hash": "hash_ids", "hashed": "hashed_tokens"}
OPTIONAL_COLUMNS = ("label", "hash", "hashed")  # columns that may be absent under their default names
DEFAULT_HASH_BLOCK = 512  # tokens per content id, as in the Mooncake traces
_KEYS = (*DEFAULT_COLUMNS, "hash_block")
_NS_PER_DAY = 86_400 * 10**9
_EPOCH = date(1970, 1, 1).toordinal()
# YYYY-MM-DD[ T]HH:MM:SS[.f{1,9}]
_TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?", re.ASCII)
_BAD_TIME = "unparsable time (expected seconds or YYYY-MM-DD HH:MM:SS[.fraction])"


def parse_columns(text: str) -> dict[str, str]:
    """Parse ``"arrival=TIMESTAMP,prompt=ContextTokens,output=GeneratedTokens[,label=X]"``
    (also ``hash=``, ``hashed=`` and ``hash_block=<tokens>``, see :func:`load_csv`)."""
    return parse_options(text, _KEYS, "column mapping")


def _hash_ids(s: str) -> list[int]:
    """Space-separated integer content ids (an empty cell is no ids); raises ValueError."""
    try:
        ids = [int(x) for x in s.split()]
    except ValueError:
        raise ValueError("hash ids must be space-separated integers") from None
    return int64_ids(ids)


def _hash_block(text) -> int:
    try:
        return parse_count(str(text))
    except ValueError as exc:
        raise WorkloadError(f"column mapping hash_block={text!r}: {exc} (tokens per hash id)") from None


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


def _column_index(header: list[str], columns: dict[str, str], where: Where) -> dict[str, int]:
    index = {}
    for key, col in columns.items():
        hits = [i for i, h in enumerate(header) if h == col]
        if len(hits) > 1:
            raise where.error(1, f"column {col!r} appears {len(hits)} times in the header")
        if hits:
            index[key] = hits[0]
        elif key not in OPTIONAL_COLUMNS or col != DEFAULT_COLUMNS[key]:
            raise where.error(1, f"missing {key} column {col!r}; columns present: {', '.join(map(repr, header))}")
    if "hashed" in index and "hash" not in index:
        raise where.error(1, f"hashed column {header[index['hashed']]!r} needs a hash column")
    return index


def load_csv(
    path: str | os.PathLike,
    columns: dict[str, str] | str | None = None,
    *,
    name: str | None = None,
) -> Workload:
    """Load a CSV trace; arrivals become seconds since the first request.

    ``columns`` maps ``arrival``/``prompt``/``output``/``label``/``hash``/``hashed`` to
    header names (dict or :func:`parse_columns` text); unmapped keys use
    :data:`DEFAULT_COLUMNS`. The arrival column holds seconds or
    ``YYYY-MM-DD HH:MM:SS[.f]`` timestamps (up to 9 fractional digits, parsed exactly).
    Optional prefix content: the ``hash`` column (default ``hash_ids``) holds each
    request's content ids, space-separated, one per ``hash_block`` tokens (a number in
    the mapping, default 512 as in Mooncake); they describe the prompt, or the first
    ``hashed`` tokens (column default ``hashed_tokens``) where that column exists.
    Unsorted rows are stably sorted with an :class:`UnsortedArrivalsWarning`; no row is
    dropped.
    """
    path = Path(path)
    mapping = parse_columns(columns) if isinstance(columns, str) else dict(columns or {})
    if bad := set(mapping) - set(_KEYS):
        raise WorkloadError(f"unknown column mapping keys {sorted(bad)}; valid keys: {', '.join(_KEYS)}")
    block_text = mapping.pop("hash_block", None)
    hash_block = DEFAULT_HASH_BLOCK if block_text is None else _hash_block(block_text)
    mapping = DEFAULT_COLUMNS | mapping
    where = Where(path)
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
            if block_text is not None and "hash" not in index:
                raise where.error(1, f"hash_block={block_text} given but there is no hash column {mapping['hash']!r}")
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
                    parsers = {"arrival": arrival, "prompt": parse_count, "output": parse_count, "label": str,
                               "hash": _hash_ids, "hashed": parse_count}
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
    fields = {k: header[index[k]] for k in ("hash", "hashed") if k in index}
    fields.setdefault("hashed", header[index["prompt"]])
    return build(values, np.array(lines, dtype=np.int64), name or path.stem, where,
                 hash_block=hash_block, fields=fields)
