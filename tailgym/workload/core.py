"""The :class:`Workload` container: a validated, immutable request trace."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np


class WorkloadError(ValueError):
    """Invalid workload data or spec; names file, line, column and value where known."""


class UnsortedArrivalsWarning(UserWarning):
    """A trace's arrivals were out of order and have been stably sorted."""


def parse_options(text: str, valid: tuple[str, ...], what: str) -> dict[str, str]:
    """Parse ``"k=v,k=v"`` into a dict, accepting only keys in ``valid``."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key or not value:
            raise WorkloadError(f"bad {what} item {item!r}: expected key=value")
        if key not in valid:
            raise WorkloadError(f"unknown {what} key {key!r}; valid keys: {', '.join(valid)}")
        if key in out:
            raise WorkloadError(f"duplicate {what} key {key!r}")
        out[key] = value
    return out


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _int_array(name: str, values) -> np.ndarray:
    a = np.asarray(values)
    if a.dtype.kind == "f" and not (np.isfinite(a).all() and (a == np.round(a)).all()):
        raise WorkloadError(f"{name} must hold integers")
    if a.dtype.kind not in "iuf":
        raise WorkloadError(f"{name} must be numeric, got dtype {a.dtype}")
    return np.array(a, dtype=np.int64)


def is_count(value) -> bool:
    """Whether ``value`` is an integer >= 1 (a bool is not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def ragged_take(offsets: np.ndarray, values: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``idx`` of the ragged array (``values[offsets[i]:offsets[i+1]]`` is row i):
    the new ``(offsets, values)``."""
    starts, lens = offsets[idx], np.diff(offsets)[idx]
    new = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lens, out=new[1:])
    return new, values[np.repeat(starts - new[:-1], lens) + np.arange(new[-1])]


def _stats(x: np.ndarray) -> dict[str, float]:
    p50, p99 = np.percentile(x, [50, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p99": float(p99), "max": int(x.max())}


PREFIX_FIELDS = ("hash_ids", "hash_offsets", "hash_block_tokens", "hashed_tokens")


def _prefix_fields(w: Workload, n: int) -> dict:
    """The coerced prefix-content fields of ``w`` (empty if it has none); checks their shapes."""
    given = [k for k in PREFIX_FIELDS if getattr(w, k) is not None]
    if not given:
        return {}
    if missing := [k for k in PREFIX_FIELDS if k not in given]:
        raise WorkloadError(f"{w.name}: prefix content needs {', '.join(PREFIX_FIELDS)} together; "
                            f"missing {', '.join(missing)}")
    block = w.hash_block_tokens
    if not is_count(block):
        raise WorkloadError(f"{w.name}: hash_block_tokens must be an integer >= 1, got {block!r}")
    out = {k: _int_array(k, getattr(w, k)) for k in ("hash_ids", "hash_offsets", "hashed_tokens")}
    for key, shape in (("hash_ids", (out["hash_ids"].size,)), ("hash_offsets", (n + 1,)), ("hashed_tokens", (n,))):
        if out[key].shape != shape:
            raise WorkloadError(f"{w.name}: {key} has shape {out[key].shape}; expected {shape}")
    off = out["hash_offsets"]
    if off[0] != 0 or off[-1] != len(out["hash_ids"]) or (np.diff(off) < 0).any():
        raise WorkloadError(f"{w.name}: hash_offsets must rise from 0 to len(hash_ids) = "
                            f"{len(out['hash_ids'])}, got {off[0]}..{off[-1]}")
    return out | {"hash_block_tokens": int(block)}


def hash_span_problem(n_ids: np.ndarray, hashed: np.ndarray, block: int, tokens: np.ndarray,
                      hashed_name: str = "hashed_tokens") -> tuple[int, str] | None:
    """The first request whose ``hashed`` token count does not fit its ``n_ids`` ids of
    ``block`` tokens or exceeds its ``tokens`` (prompt + output), with the problem; else None."""
    low = np.where(n_ids > 0, (n_ids - 1) * block + 1, 0)
    if (bad := np.flatnonzero((hashed < low) | (hashed > n_ids * block))).size:
        i = int(bad[0])
        return i, (f"{hashed_name} {hashed[i]} does not fit {n_ids[i]} hash ids of {block} tokens "
                   f"(needs {low[i]}..{n_ids[i] * block})")
    if (bad := np.flatnonzero(hashed > tokens)).size:
        i = int(bad[0])
        return i, f"{hashed_name} {hashed[i]} exceeds prompt + output tokens {tokens[i]}"
    return None


@dataclass(frozen=True, eq=False, repr=False)
class Workload:
    """Requests sorted by arrival: arrival time (s) and prompt/output token counts.

    ``labels`` optionally hold a class index per request into ``label_names``;
    ``source_rows`` the 1-based source-file line of each request, used in messages.

    Optional prefix content (all four given, or none): request i's content ids are
    ``hash_ids[hash_offsets[i]:hash_offsets[i + 1]]``, one per ``hash_block_tokens``
    tokens of its token sequence (prompt, then output; the last block may be partial),
    and they describe its first ``hashed_tokens[i]`` tokens. Equal ids at the same
    position after equal ids mean equal tokens (a shorter block is a prefix of a
    longer one with the same id); see :mod:`tailgym.workload.prefix`.
    Arrays are coerced to their dtypes, validated and made read-only.
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    name: str = "workload"
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] = ()
    source_rows: np.ndarray | None = None
    hash_ids: np.ndarray | None = None
    hash_offsets: np.ndarray | None = None
    hash_block_tokens: int | None = None
    hashed_tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        fields = {
            "arrival_s": np.array(self.arrival_s, dtype=np.float64),
            "prompt_tokens": _int_array("prompt_tokens", self.prompt_tokens),
            "output_tokens": _int_array("output_tokens", self.output_tokens),
        }
        if self.labels is not None:
            fields["labels"] = _int_array("labels", self.labels).astype(np.int32)
        if self.source_rows is not None:
            fields["source_rows"] = _int_array("source_rows", self.source_rows)
        n = len(fields["arrival_s"])
        for key, a in fields.items():
            if a.ndim != 1 or len(a) != n:
                raise WorkloadError(f"{key} has shape {a.shape}; expected ({n},) like arrival_s")
        if n == 0:
            raise WorkloadError("a workload needs at least one request")
        prefix = _prefix_fields(self, n)
        for key, a in (fields | prefix).items():
            object.__setattr__(self, key, _frozen(a) if isinstance(a, np.ndarray) else a)
        object.__setattr__(self, "label_names", tuple(self.label_names))
        self._validate()

    def _where(self, i: int) -> str:
        line = f" (line {self.source_rows[i]})" if self.source_rows is not None else ""
        return f"{self.name}: request {i}{line}"

    def _validate(self) -> None:
        a = self.arrival_s
        if not np.isfinite(a).all():
            i = int(np.argmin(np.isfinite(a)))
            raise WorkloadError(f"{self._where(i)}: arrival_s {a[i]} is not finite")
        if (bad := np.flatnonzero(np.diff(a) < 0)).size:
            i = int(bad[0]) + 1
            raise WorkloadError(f"{self._where(i)}: arrival_s {a[i]} is earlier than the previous {a[i - 1]}")
        for key in ("prompt_tokens", "output_tokens"):
            t = getattr(self, key)
            if (bad := np.flatnonzero(t < 1)).size:
                i = int(bad[0])
                raise WorkloadError(f"{self._where(i)}: {key} {t[i]} must be >= 1")
        if self.labels is not None and len(self.labels):
            lo, hi = int(self.labels.min()), int(self.labels.max())
            if lo < 0 or hi >= len(self.label_names):
                raise WorkloadError(
                    f"{self.name}: labels span {lo}..{hi} but there are {len(self.label_names)} label_names"
                )
        if self.has_prefix and (problem := hash_span_problem(
                np.diff(self.hash_offsets), self.hashed_tokens, self.hash_block_tokens,
                self.prompt_tokens + self.output_tokens)):
            raise WorkloadError(f"{self._where(problem[0])}: {problem[1]}")

    def __len__(self) -> int:
        return len(self.arrival_s)

    def __repr__(self) -> str:
        return f"Workload(name={self.name!r}, n={len(self)}, duration_s={self.duration_s:.6g})"

    @property
    def has_prefix(self) -> bool:
        """Whether the requests carry prefix content (:data:`PREFIX_FIELDS`)."""
        return self.hash_ids is not None

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival."""
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def mean_rate(self) -> float:
        """Mean arrival rate (n - 1) / duration in requests/s."""
        if len(self) < 2 or self.duration_s <= 0:
            raise WorkloadError(f"{self.name}: mean rate undefined for {len(self)} requests over {self.duration_s} s")
        return (len(self) - 1) / self.duration_s

    def with_rate_scale(self, factor: float) -> Workload:
        """Multiply the arrival rate by ``factor`` (inter-arrival gaps divided by it)."""
        if not (np.isfinite(factor) and factor > 0):
            raise WorkloadError(f"rate scale factor must be finite and > 0, got {factor}")
        a0 = self.arrival_s[0]
        return dataclasses.replace(self, arrival_s=a0 + (self.arrival_s - a0) / factor)

    def with_rate(self, rate: float) -> Workload:
        """Rescale arrival times so that :attr:`mean_rate` equals ``rate``."""
        if not (np.isfinite(rate) and rate > 0):
            raise WorkloadError(f"rate must be finite and > 0, got {rate}")
        return self.with_rate_scale(rate / self.mean_rate)

    def with_arrivals(self, arrival_s: np.ndarray) -> Workload:
        """Same requests (lengths, labels, rows) in the same order with new arrival times."""
        return dataclasses.replace(self, arrival_s=arrival_s)

    def head(self, n: int) -> Workload:
        """The first ``n`` requests."""
        return self.window(0, n)

    def window(self, start: int, n: int) -> Workload:
        """Requests ``start`` to ``start + n - 1``, arrivals shifted so the first is at 0."""
        if n < 1 or start < 0 or start >= len(self):
            raise WorkloadError(f"{self.name}: window needs n >= 1 and 0 <= start < {len(self)}, "
                                f"got start={start}, n={n}")
        w = self.take(np.arange(start, min(start + n, len(self))))
        return w.with_arrivals(w.arrival_s - w.arrival_s[0])

    def take(self, idx: np.ndarray, arrival_s: np.ndarray | None = None,
             id_shift: np.ndarray | None = None) -> Workload:
        """Requests ``idx`` (an index array; must keep arrivals sorted, or give the new sorted
        ``arrival_s``) with all their data; ``id_shift`` (per taken row) is added to its
        prefix ids."""
        arrays = ("arrival_s", "prompt_tokens", "output_tokens", "labels", "source_rows", "hashed_tokens")
        cut = {f: getattr(self, f)[idx] for f in arrays if getattr(self, f) is not None}
        if arrival_s is not None:
            cut["arrival_s"] = arrival_s
        if self.has_prefix:
            cut["hash_offsets"], cut["hash_ids"] = ragged_take(self.hash_offsets, self.hash_ids, idx)
            if id_shift is not None:
                cut["hash_ids"] = cut["hash_ids"] + np.repeat(id_shift, np.diff(cut["hash_offsets"]))
        return dataclasses.replace(self, **cut)

    def superpose(self, copies: int, seed: int) -> Workload:
        """``copies`` independent tenants of this workload served together, for fleets larger
        than one trace: copy c is the workload shifted by a random phase (seeded) around its
        period (duration plus one mean gap, so each copy still covers it once), its prefix ids
        offset so copies share no content. Sorted by arrival, the first at 0; same total
        rate shape, ``copies`` times the rate. ``copies=1`` is a seeded circular window."""
        if not is_count(copies):
            raise WorkloadError(f"{self.name}: copies must be an integer >= 1, got {copies!r}")
        n = len(self)
        period = self.duration_s * n / (n - 1) if n > 1 and self.duration_s > 0 else 1.0
        phase = np.random.default_rng(seed).uniform(0.0, period, copies)
        copy = np.repeat(np.arange(copies), n)
        idx = np.tile(np.arange(n), copies)
        t = (self.arrival_s[idx] - self.arrival_s[0] + phase[copy]) % period
        order = np.argsort(t, kind="stable")
        shift = copy[order] * (int(self.hash_ids.max()) + 1 if self.has_prefix else 0)
        return self.take(idx[order], arrival_s=t[order] - t[order[0]], id_shift=shift)

    def fingerprint(self) -> str:
        """sha256 hex digest of the arrival, token, label and prefix data (for caches)."""
        names = self.label_names if self.labels is not None else None
        block = f";hash_block={self.hash_block_tokens}" if self.has_prefix else ""
        h = hashlib.sha256(f"n={len(self)};labels={names}{block}".encode())
        for a in (self.arrival_s, self.prompt_tokens, self.output_tokens, self.labels,
                  self.hash_ids, self.hash_offsets, self.hashed_tokens):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        """Summary statistics as plain Python numbers (``mean_rate`` None if undefined)."""
        try:
            rate = self.mean_rate
        except WorkloadError:
            rate = None
        out = {
            "name": self.name,
            "n": len(self),
            "duration_s": self.duration_s,
            "mean_rate": rate,
            "prompt_tokens": _stats(self.prompt_tokens),
            "output_tokens": _stats(self.output_tokens),
        }
        if self.labels is not None:
            counts = np.bincount(self.labels, minlength=len(self.label_names))
            out["labels"] = {k: int(c) for k, c in zip(self.label_names, counts)}
        if self.has_prefix:
            from .prefix import content_chain  # prefix.py needs Workload for typing only

            refs = len(self.hash_ids)
            unique = len(np.unique(content_chain(self))) if refs else 0
            out["prefix"] = {"hash_block_tokens": self.hash_block_tokens, "block_refs": refs,
                             "repeat_share": 1 - unique / refs if refs else 0.0}
        return out
