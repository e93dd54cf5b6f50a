"""Load a Mooncake-style JSONL trace: one JSON object per line with ``timestamp`` (ms
from the start), ``input_length``, ``output_length`` and ``hash_ids`` (one content id
per 512 prompt tokens, the last block possibly partial). Other fields are ignored."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .core import Workload, WorkloadError
from .rows import Where, build, int64_ids, parse_count

MOONCAKE_BLOCK = 512


def _number(v) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("not a number")
    if not math.isfinite(v):
        raise ValueError("not finite")
    return v


def _count(v) -> int:
    return parse_count(repr(_number(v)))


def _ids(v) -> list[int]:
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
        raise ValueError("expected a list of integers")
    return int64_ids(v)


_FIELDS = {"timestamp": ("arrival", _number), "input_length": ("prompt", _count),
           "output_length": ("output", _count), "hash_ids": ("hash", _ids)}


def load_jsonl(path: str | os.PathLike, *, name: str | None = None, hash_block: int = MOONCAKE_BLOCK) -> Workload:
    """Load a JSONL trace; arrivals become seconds since the first request, the content ids
    describe each prompt (``hash_block`` tokens per id). Errors name file, line, field and
    value; unsorted lines are stably sorted with a warning, as for CSV."""
    path = Path(path)
    where = Where(path, "field")
    values: dict[str, list] = {key: [] for key, _ in _FIELDS.values()}
    lines: list[int] = []
    try:
        fh = open(path, encoding="utf-8-sig")
    except OSError as exc:
        raise WorkloadError(f"cannot read workload file {path}: {exc}") from exc
    with fh:
        try:
            for line, text in enumerate(fh, 1):
                if text.strip():
                    _parse_line(text, line, values, where)
                    lines.append(line)
        except UnicodeDecodeError as exc:
            raise WorkloadError(f"{path}: not UTF-8 text: {exc}") from None
    if not lines:
        raise where.error(1, "no requests (expected one JSON object per line)")
    ms = np.array(values["arrival"])  # exact int ns for integer ms, else float seconds
    values["arrival"] = ms * 1_000_000 if ms.dtype.kind == "i" else ms / 1e3
    return build(values, np.array(lines, dtype=np.int64), name or path.stem, where,
                 hash_block=hash_block, fields={"hash": "hash_ids", "hashed": "input_length"})


def _parse_line(text: str, line: int, values: dict[str, list], where: Where) -> None:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise where.error(line, f"invalid JSON: {exc.msg} at character {exc.colno}") from None
    if not isinstance(record, dict):
        raise where.error(line, "expected a JSON object", value=text.strip()[:80])
    for field, (key, parse) in _FIELDS.items():
        if field not in record:
            raise where.error(line, f"missing field {field!r}; fields present: {', '.join(map(repr, record))}")
        try:
            values[key].append(parse(record[field]))
        except ValueError as exc:
            raise where.error(line, str(exc), field, json.dumps(record[field])[:80]) from None
