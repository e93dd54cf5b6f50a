"""What the CSV and JSONL loaders share: located errors, counts, and building the Workload."""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np

from .core import UnsortedArrivalsWarning, Workload, WorkloadError, hash_span_problem, ragged_take


class Where:
    """Formats errors as ``file:line: column 'h': problem (value 'v')`` (``what`` names the column)."""

    def __init__(self, path: Path, what: str = "column"):
        self.path, self.what = path, what

    def error(self, line: int, problem: str, column: str | None = None, value: str | None = None) -> WorkloadError:
        col = f" {self.what} {column!r}:" if column is not None else ""
        val = f" (value {value!r})" if value is not None else ""
        return WorkloadError(f"{self.path}:{line}:{col} {problem}{val}")


def parse_count(s: str) -> int:
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


def int64_ids(ids: list[int]) -> list[int]:
    """``ids`` if every one fits int64; raises ValueError."""
    if ids and not -(1 << 63) <= min(ids) <= max(ids) < 1 << 63:
        raise ValueError("hash id out of the int64 range")
    return ids


def build(values: dict[str, list], lines: np.ndarray, name: str, where: Where, *,
          hash_block: int | None = None, fields: dict[str, str] | None = None) -> Workload:
    """Sort by arrival (warning if needed), shift to start at 0 and make the Workload.

    ``values`` hold per row ``arrival`` (int ns or float s), ``prompt``, ``output`` and
    optionally ``label``, ``hash`` (a list of content ids of ``hash_block`` tokens) and
    ``hashed`` (tokens the ids describe; default the prompt). ``fields`` name the file's
    ``hash`` and ``hashed`` fields in messages.
    """
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
    prompt = np.array(values["prompt"], dtype=np.int64)
    output = np.array(values["output"], dtype=np.int64)
    prefix = {}
    if "hash" in values:
        prefix = _prefix(values, prompt + output, lines, where, hash_block, fields or {})
        prefix["hash_offsets"], prefix["hash_ids"] = ragged_take(prefix["hash_offsets"], prefix["hash_ids"], order)
        prefix["hashed_tokens"] = prefix["hashed_tokens"][order]
    return Workload(
        arrival_s=arrival_s,
        prompt_tokens=prompt[order],
        output_tokens=output[order],
        name=name,
        labels=labels,
        label_names=label_names,
        source_rows=lines[order],
        **prefix,
    )


def _prefix(values: dict[str, list], tokens: np.ndarray, lines: np.ndarray, where: Where,
            hash_block: int, fields: dict[str, str]) -> dict:
    """The prefix-content fields in file order, their lengths checked with located errors."""
    lens = np.fromiter(map(len, values["hash"]), dtype=np.int64, count=len(values["hash"]))
    offsets = np.concatenate(([0], np.cumsum(lens)))
    ids = np.fromiter(itertools.chain.from_iterable(values["hash"]), dtype=np.int64, count=offsets[-1])
    hashed = np.array(values.get("hashed", values["prompt"]), dtype=np.int64)
    hashed_name = fields.get("hashed", "hashed_tokens")
    if problem := hash_span_problem(lens, hashed, hash_block, tokens, hashed_name):
        raise where.error(int(lines[problem[0]]), problem[1], fields.get("hash", "hash_ids"))
    return {"hash_ids": ids, "hash_offsets": offsets, "hash_block_tokens": hash_block, "hashed_tokens": hashed}
