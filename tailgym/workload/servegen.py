"""The ServeGen production reasoning workload ``servegen-r1``: DeepSeek-R1 on Alibaba Cloud
Model Studio (Xiang et al., "ServeGen: Workload Characterization of Large Language Model
Serving in Production", arXiv 2505.09999; data alibaba/ServeGen ``data/reason/deepseek-r1``,
Apache-2.0).

The data describe each of 73 clients, not single requests, so requests are generated from them,
seeded. A pool folder holds per client ``c``:

- ``chunk-<c>-trace.csv`` (no header), one line per 600-s window of one day:
  ``window_start_s,rate_rps,cv,family,arg1,arg2``: the client's mean rate in the window, the
  inter-arrival CV and the fitted inter-arrival law, ``Gamma`` (arg1 = shape, arg2 = scale) or
  ``Weibull`` (arg1 = shape, arg2 = scale), as ServeGen's ``clientpool.py`` reads them (its own
  examples pair ``Gamma`` (0.25, 1.0) with 4 req/s: shape x scale is the mean gap); an empty
  family (and zeros) where the client sent nothing;
- ``chunk-<c>-dataset.json``: per 6-hour window start (``"0"``, ``"21600"``, ...) the empirical
  PMFs of ``input_tokens`` and ``output_tokens`` (and ``reason_ratio``, not used: the output
  tokens include the reasoning) as the text of a Python dict ``{tokens: probability}``
  (``"{}"`` where the client had no data).

Generation (:func:`servegen_workload`): in each selected client's 600-s window with rate r > 0,
arrivals are a stationary renewal process whose gaps follow the window's fitted law with its
fitted shape and the scale that makes the mean gap 1/r (the fitted Gamma scales give that mean
within 1% in most windows, but not in the burstiest ones), so the window brings r x 600
requests on average (:func:`window_arrivals`). A window with rate 0
brings no request. Each request's prompt and output tokens are drawn independently (the data
hold only the marginals) from its client's PMFs of the 6-hour window containing its arrival.
Arrivals, prompts and outputs use independent streams spawned from the seed.

Default span: hour 1 to 2 of the data's day (22 req/s, about 80,000 requests; the day
averages 16 req/s), the busy hour whose output lengths are closest to the whole day's (largest
CDF gap 0.07; outputs mean 1,323 / P50 921 / P99 10,902 tokens, prompts mean 1,141 / P99 20,253).
The busiest hour, 22 (35 req/s), is dominated by three clients with short answers (output P99
5,427). Rate-weighted over the whole day and all clients the PMFs give outputs of mean 1,527 /
P50 792 / P90 3,432 / P99 12,607 tokens (bimodal: short answers and long thinking) and prompts
of mean 1,268 / P50 208 / P99 23,423 (``start_h=0,hours=24``, 1.38 million requests).
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .core import Workload, WorkloadError
from .rows import Where

NAME = "servegen-r1"
WINDOW_S = 600.0  # the trace's windows
DEFAULT_START_H = 1.0
DEFAULT_HOURS = 1.0
TRACE_COLUMNS = ("window_start_s", "rate_rps", "cv", "family", "arg1", "arg2")
GAMMA, WEIBULL = 1, 2
FAMILIES = {"": 0, "Gamma": GAMMA, "Weibull": WEIBULL}
LENGTH_FIELDS = ("input_tokens", "output_tokens")
_TRACE_FILE = re.compile(r"chunk-(\d+)-trace\.csv")


@dataclass(frozen=True, eq=False)
class ClientLengths:
    """One client's length PMFs: per 6-hour window (``starts`` ascending, ``keys`` as in the
    file) a ``(tokens, cdf)`` pair per field, None where the file has ``"{}"``."""

    path: Path
    starts: np.ndarray
    keys: tuple[str, ...]
    pmfs: dict[str, tuple]


@dataclass(frozen=True, eq=False)
class Pool:
    """A ServeGen client pool: clients (ascending ids) x 600-s windows from ``first_s``."""

    clients: np.ndarray
    first_s: float
    rate: np.ndarray  # (clients, windows) requests/s
    family: np.ndarray  # (clients, windows): 0 (no law), GAMMA or WEIBULL
    shape: np.ndarray  # (clients, windows) the fitted law's shape (arg1)
    lengths: tuple[ClientLengths, ...]

    @property
    def end_s(self) -> float:
        """End of the last window."""
        return self.first_s + self.rate.shape[1] * WINDOW_S


# ---------------------------------------------------------------- reading


def _number(text: str) -> float:
    x = float(text)  # ValueError for text that is not a number
    if not math.isfinite(x):
        raise ValueError
    return x


def _read_trace(path: Path) -> tuple[float, np.ndarray]:
    """``(first window start, rows (windows, 3) of rate, family, shape)``; errors name file,
    line, column and value."""
    where = Where(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"cannot read ServeGen trace {path}: {exc}") from None
    rows, first = [], None
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        cells = [c.strip() for c in raw.split(",")]
        if len(cells) != len(TRACE_COLUMNS):
            raise where.error(line, f"expected {len(TRACE_COLUMNS)} fields {','.join(TRACE_COLUMNS)}, "
                                    f"got {len(cells)}", value=raw.strip()[:80])
        values = {}
        for col, cell in zip(TRACE_COLUMNS, cells):
            if col == "family":
                if cell not in FAMILIES:
                    raise where.error(line, "unknown inter-arrival law (expected Gamma, Weibull or empty)", col, cell)
                continue
            try:
                values[col] = _number(cell)
            except ValueError:
                raise where.error(line, "not a finite number", col, cell) from None
        start = values["window_start_s"]
        first = start if first is None else first
        if start != first + len(rows) * WINDOW_S:
            raise where.error(line, f"windows must follow each other every {WINDOW_S:g} s "
                                    f"(expected {first + len(rows) * WINDOW_S:g})", "window_start_s", cells[0])
        for col in ("rate_rps", "cv"):
            if values[col] < 0:
                raise where.error(line, "must be >= 0", col, cells[TRACE_COLUMNS.index(col)])
        family = FAMILIES[cells[3]]
        if family:
            for col in ("arg1", "arg2"):
                if values[col] <= 0:
                    raise where.error(line, f"the {cells[3]} law's {'shape' if col == 'arg1' else 'scale'} "
                                            f"must be > 0", col, cells[TRACE_COLUMNS.index(col)])
        elif values["rate_rps"] > 0:
            raise where.error(line, "a window with requests needs its inter-arrival law (Gamma or Weibull)",
                              "family", cells[3])
        rows.append((values["rate_rps"], family, values["arg1"]))
    if not rows:
        raise WorkloadError(f"{path}: no windows (expected lines {','.join(TRACE_COLUMNS)})")
    return first, np.array(rows)


def _pmf(text, fail) -> tuple[np.ndarray, np.ndarray] | None:
    """``(tokens, cdf)`` of the text of a Python dict ``{tokens: probability}``; None for ``{}``."""
    body = text.strip() if isinstance(text, str) else ""
    if not (body.startswith("{") and body.endswith("}")):
        raise fail("expected the text of a Python dict {tokens: probability}", text)
    body = body[1:-1].strip()
    if not body:
        return None
    items = body.split(",")
    parts = body.replace(":", ",").split(",")
    try:
        pairs = np.array(parts, dtype=np.float64).reshape(-1, 2) if len(parts) == 2 * len(items) else None
    except ValueError:
        pairs = None
    if pairs is None:
        i = next(i for i, item in enumerate(items) if not _is_pair(item))
        raise fail(f"entry {i + 1} is not 'tokens: probability'", items[i].strip())
    tokens, probs = pairs[:, 0], pairs[:, 1]
    if (bad := np.flatnonzero(~np.isfinite(tokens) | (tokens < 1) | (tokens != np.round(tokens)))).size:
        raise fail(f"entry {bad[0] + 1}: the token count must be an integer >= 1", items[bad[0]].strip())
    if (bad := np.flatnonzero(~np.isfinite(probs) | (probs < 0))).size:
        raise fail(f"entry {bad[0] + 1}: the probability must be finite and >= 0", items[bad[0]].strip())
    if np.unique(tokens).size != tokens.size:
        raise fail("a token count appears twice", text[:80])
    if not abs(probs.sum() - 1) <= 1e-6:
        raise fail(f"the probabilities sum to {probs.sum():.9g}, not 1", text[:80])
    cdf = np.cumsum(probs)
    return tokens.astype(np.int64), cdf / cdf[-1]


def _is_pair(item: str) -> bool:
    key, sep, value = item.partition(":")
    try:
        float(key), float(value)
    except ValueError:
        return False
    return bool(sep)


def _read_lengths(path: Path) -> ClientLengths:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"cannot read ServeGen dataset {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} at character {exc.colno}") from None
    if not isinstance(data, dict) or not data:
        raise WorkloadError(f"{path}: expected a JSON object keyed by 6-hour window start (\"0\", \"21600\", ...)")
    windows = []
    for key, fields in data.items():
        try:
            start = _number(key)
        except ValueError:
            raise WorkloadError(f"{path}: window {key!r}: the key must be the window's start in seconds") from None
        if not isinstance(fields, dict):
            raise WorkloadError(f"{path}: window {key!r}: expected an object with {', '.join(LENGTH_FIELDS)}")
        pmfs = []
        for field in LENGTH_FIELDS:
            if field not in fields:
                raise WorkloadError(f"{path}: window {key!r}: missing field {field!r}")

            def fail(problem, value, field=field):
                return WorkloadError(f"{path}: window {key!r} field {field!r}: {problem} (value {str(value)[:80]!r})")
            pmfs.append(_pmf(fields[field], fail))
        windows.append((start, key, pmfs))
    windows.sort(key=lambda w: w[0])
    starts = np.array([w[0] for w in windows])
    if (np.diff(starts) == 0).any():
        raise WorkloadError(f"{path}: two windows start at the same time")
    return ClientLengths(path, starts, tuple(w[1] for w in windows),
                         {f: [w[2][i] for w in windows] for i, f in enumerate(LENGTH_FIELDS)})


@functools.lru_cache(maxsize=4)
def _read_pool(directory: Path, signature: tuple) -> Pool:
    """The pool in ``directory`` (cached by the files' names, sizes and modification times)."""
    clients = sorted(int(_TRACE_FILE.fullmatch(name).group(1)) for name, *_ in signature if _TRACE_FILE.fullmatch(name))
    firsts, traces, lengths = [], [], []
    for c in clients:
        path = directory / f"chunk-{c}-trace.csv"
        first, rows = _read_trace(path)
        if traces and (first != firsts[0] or len(rows) != len(traces[0])):
            raise WorkloadError(f"{path}: windows {first:g}..{first + (len(rows) - 1) * WINDOW_S:g} s differ "
                                f"from those of chunk-{clients[0]}-trace.csv "
                                f"({firsts[0]:g}..{firsts[0] + (len(traces[0]) - 1) * WINDOW_S:g} s)")
        firsts.append(first)
        traces.append(rows)
        lengths.append(_read_lengths(directory / f"chunk-{c}-dataset.json"))
    table = np.stack(traces)
    return Pool(np.array(clients, dtype=np.int64), firsts[0], table[..., 0],
                table[..., 1].astype(np.int8), table[..., 2], tuple(lengths))


def read_pool(directory) -> Pool:
    """Read (once per process while the files are unchanged) the ServeGen pool in ``directory``."""
    directory = Path(directory)
    try:
        entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in directory.glob("chunk-*-*"))
    except OSError as exc:
        raise WorkloadError(f"cannot read ServeGen pool {directory}: {exc}") from None
    names = {e[0] for e in entries}
    traces = [n for n in names if _TRACE_FILE.fullmatch(n)]
    if not traces:
        raise WorkloadError(f"{directory}: no ServeGen client files (chunk-<client>-trace.csv)")
    if missing := sorted(n for n in traces if n.replace("-trace.csv", "-dataset.json") not in names):
        raise WorkloadError(f"{directory}: {missing[0]} has no {missing[0].replace('-trace.csv', '-dataset.json')}")
    return _read_pool(directory, tuple(entries))


# ---------------------------------------------------------------- generation


def select_clients(pool: Pool, spec: str, lo: int, hi: int) -> np.ndarray:
    """Pool rows of the clients ``spec`` names: ``all``, ``top<k>`` (the k with the most expected
    requests in windows ``lo:hi``, ties to the lower id) or ids joined by ``+`` (``12+35``)."""
    spec = spec.strip()
    if spec == "all":
        return np.arange(len(pool.clients))
    if m := re.fullmatch(r"top(\d+)", spec):
        k = int(m.group(1))
        if not 1 <= k <= len(pool.clients):
            raise WorkloadError(f"clients={spec}: k must be 1..{len(pool.clients)} (the pool's clients)")
        return np.sort(np.argsort(-pool.rate[:, lo:hi].sum(axis=1), kind="stable")[:k])
    rows = []
    for part in spec.split("+"):
        try:
            c = int(part)
        except ValueError:
            raise WorkloadError(f"clients={spec!r}: expected all, top<k> or client ids joined by + "
                                f"(e.g. 12+35)") from None
        if (i := np.searchsorted(pool.clients, c)) == len(pool.clients) or pool.clients[i] != c:
            raise WorkloadError(f"clients={spec!r}: no client {c} (the pool's clients are "
                                f"{pool.clients[0]}..{pool.clients[-1]})")
        if i in rows:
            raise WorkloadError(f"clients={spec!r}: client {c} named twice")
        rows.append(i)
    return np.array(sorted(rows))


def window_arrivals(rate: np.ndarray, family: np.ndarray, shape: np.ndarray, start: np.ndarray,
                    length: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times and their window index, unsorted: in window j a stationary renewal process
    on ``[start[j], start[j] + length[j])`` whose gaps follow law ``family[j]`` (GAMMA or
    WEIBULL) of shape ``shape[j]`` and mean ``1 / rate[j]`` (all rates > 0). Stationary: the
    first arrival comes after a residual gap (a uniform share of a length-biased gap), so a
    window brings ``rate x length`` requests on average whatever its burstiness; a process
    started with a full gap would bring about ``(cv^2 - 1) / 2`` more."""
    gamma = family == GAMMA
    log_gamma_fn = np.array([math.lgamma(1 + 1 / k) for k in shape])  # Weibull mean = scale Gamma(1 + 1/k)
    scale = np.where(gamma, 1 / (rate * shape), np.exp(-np.log(rate) - log_gamma_fn))
    # length-biased gaps: Gamma(k, s) -> Gamma(k + 1, s); Weibull(k, s) -> s Gamma(1 + 1/k) ** (1/k)
    spanning = np.empty(len(rate))
    spanning[gamma] = rng.gamma(shape[gamma] + 1, scale[gamma])
    k = shape[~gamma]
    spanning[~gamma] = scale[~gamma] * rng.gamma(1 + 1 / k) ** (1 / k)
    reached = rng.random(len(rate)) * spanning  # time since the window's start of its last arrival
    live = np.flatnonzero(reached < length)
    times, windows = [start[live] + reached[live]], [live]
    while live.size:  # draw enough gaps to pass the end of most windows; redraw for the rest
        count = np.ceil(1.5 * rate[live] * (length[live] - reached[live])).astype(np.int64) + 16
        w = np.repeat(live, count)
        gaps = np.empty(w.size)
        g = gamma[w]
        gaps[g] = rng.gamma(shape[w[g]], scale[w[g]])
        gaps[~g] = rng.weibull(shape[w[~g]]) * scale[w[~g]]
        total = np.cumsum(gaps)
        ends = np.cumsum(count) - 1
        before = np.concatenate(([0.0], total[ends[:-1]]))
        local = reached[w] + total - np.repeat(before, count)
        inside = local < length[w]
        times.append(start[w[inside]] + local[inside])
        windows.append(w[inside])
        reached[live] = local[ends]
        live = live[reached[live] < length[live]]
    return np.concatenate(times), np.concatenate(windows)


def _sample_lengths(pool: Pool, rows: np.ndarray, t: np.ndarray, rngs) -> dict[str, np.ndarray]:
    """Per request (pool row ``rows[i]``, arrival ``t[i]`` s into the day) tokens per field drawn
    from its client's PMF of the 6-hour window containing ``t[i]``."""
    u = {f: rng.random(len(t)) for f, rng in zip(LENGTH_FIELDS, rngs)}
    out = {f: np.empty(len(t), dtype=np.int64) for f in LENGTH_FIELDS}
    for r in np.unique(rows):
        mine = np.flatnonzero(rows == r)
        lengths = pool.lengths[r]
        which = np.searchsorted(lengths.starts, t[mine], side="right") - 1
        if which[0] < 0:
            raise WorkloadError(f"{lengths.path}: no window starts at or before {t[mine][0]:g} s, "
                                f"where the trace has requests (the first starts at {lengths.keys[0]})")
        for li in np.unique(which):
            idx = mine[which == li]
            for f in LENGTH_FIELDS:
                if (pmf := lengths.pmfs[f][li]) is None:
                    raise WorkloadError(f"{lengths.path}: window {lengths.keys[li]!r} field {f!r} is empty "
                                        f"but the trace has requests then (at {t[idx[0]]:g} s)")
                tokens, cdf = pmf
                out[f][idx] = tokens[np.searchsorted(cdf, u[f][idx], side="right")]
    return out


def servegen_workload(directory, *, clients: str = "all", start_h: float = DEFAULT_START_H,
                      hours: float = DEFAULT_HOURS, n: int | None = None, seed: int = 0,
                      name: str = NAME) -> Workload:
    """Requests of the ServeGen pool in ``directory`` (see the module docstring) for ``clients``
    (:func:`select_clients`) from hour ``start_h`` of the data's day for ``hours`` hours
    (windows cut at the span's ends); ``n`` keeps the first n (an error if the span has fewer).
    ``arrival_s`` is seconds since the span's start; ``labels`` name each request's client."""
    pool = read_pool(directory)
    begin, end = start_h * 3600.0, (start_h + hours) * 3600.0
    if not (math.isfinite(begin) and math.isfinite(end) and hours > 0):
        raise WorkloadError(f"{name}: need finite start_h and hours > 0, got start_h={start_h}, hours={hours}")
    if begin < pool.first_s or end > pool.end_s:
        raise WorkloadError(f"{name}: the span start_h={start_h:g} to {start_h + hours:g} h is outside the data "
                            f"({pool.first_s / 3600:g} to {pool.end_s / 3600:g} h)")
    if n is not None and not (isinstance(n, (int, np.integer)) and n >= 1):
        raise WorkloadError(f"{name}: n must be an integer >= 1, got {n!r}")
    lo = int((begin - pool.first_s) // WINDOW_S)
    hi = int(math.ceil((end - pool.first_s) / WINDOW_S))
    rows = select_clients(pool, clients, lo, hi)
    rate = pool.rate[rows, lo:hi]
    c, j = np.nonzero(rate > 0)
    w_start = np.maximum(pool.first_s + (lo + j) * WINDOW_S, begin)
    w_end = np.minimum(pool.first_s + (lo + j + 1) * WINDOW_S, end)
    rng_arrival, *rng_lengths = np.random.default_rng(seed).spawn(1 + len(LENGTH_FIELDS))
    t, win = window_arrivals(rate[c, j], pool.family[rows][c, lo + j], pool.shape[rows][c, lo + j],
                             w_start, w_end - w_start, rng_arrival)
    order = np.argsort(t, kind="stable")
    if n is not None:
        if n > len(t):
            raise WorkloadError(f"{name}: clients={clients} from {start_h:g} h for {hours:g} h bring {len(t)} "
                                f"requests, fewer than n={n}; give a longer span (hours=) or more clients")
        order = order[:n]
    if not order.size:
        raise WorkloadError(f"{name}: clients={clients} send no requests from {start_h:g} h for {hours:g} h")
    t, who = t[order], c[win[order]]
    tokens = _sample_lengths(pool, rows[who], t, rng_lengths)
    return Workload(arrival_s=t - begin, prompt_tokens=tokens["input_tokens"],
                    output_tokens=tokens["output_tokens"], name=name, labels=who,
                    label_names=tuple(f"client-{pool.clients[r]}" for r in rows))
