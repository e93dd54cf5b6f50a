"""Robust fit of the step-time model, outlier detection, leave-one-out and holdout quality.

Method, per (model, GPU, TP):

1. Steps with identical features form a grid point. A repeat more than
   ``REPEAT_TOL`` away from its grid point's median is an outlier; the point's
   time is the median of the rest.
2. The two regimes of ``max(compute @ x, memory @ x)`` are fitted by
   alternating assignment (each point goes to the regime that predicts more)
   and non-negative least squares on relative errors, reweighted for a Huber
   loss on relative errors (``HUBER_DELTA``), from several starting splits by
   token count. The compute regime (:func:`regimes`) uses const, scheduled
   tokens (a prefill token and a decode token cost the same GEMM FLOPs) plus
   prefill attention at the model's attention/GEMM FLOP ratio (a free column
   when the model is not in :data:`tailgym.hardware.MODELS`), prefill seqs and
   the two knee features; the memory regime const (weights), decode seqs,
   context tokens (KV reads) and prefill seqs.
3. Every grid point is predicted by a fit to the others (leave-one-out). The
   worst point, if off by more than a factor ``1 + POINT_TOL``, is an outlier:
   it is dropped and the loop repeats. The last round's errors are the
   leave-one-out quality report, split into prefill (steps with prefill
   tokens) and decode points.
4. Holdout: the fitted profile predicts grid points it never saw (steps a
   reader flags as holdout, and those of a second file that are not training
   grid points); ``holdout_*`` in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tailgym.calibrate.readers import CalibrationError, Observations
from tailgym.hardware import FEATURES, MODELS, StepTimeModel

REPEAT_TOL = 0.25
POINT_TOL = 0.5
HUBER_DELTA = 0.05
N_STARTS = 8
MAX_ITER = 100
MIN_POINTS = 4

_F = {name: i for i, name in enumerate(FEATURES)}


@dataclass(frozen=True)
class Regimes:
    """Columns of each regime as combinations of the features (``x @ compute`` is the compute
    regime's design matrix)."""

    compute: np.ndarray
    memory: np.ndarray


def _basis(columns) -> np.ndarray:
    basis = np.zeros((len(FEATURES), len(columns)))
    for j, weights in enumerate(columns):
        for name, w in weights.items():
            basis[_F[name], j] = w
    return basis


def regimes(model: str | None = None) -> Regimes:
    """The fit's regime columns; ``model`` (a name in ``MODELS``) ties prefill attention to tokens."""
    spec = MODELS.get(model)
    tokens = {"prefill_tokens": 1.0, "decode_seqs": 1.0}
    if spec is not None:
        tokens["prefill_attention"] = spec.attention_flops_per_pair / spec.flops_per_token
        attention = []
    else:
        attention = [{"prefill_attention": 1.0}]
    compute = [{"const": 1.0}, tokens, *attention,
               *({name: 1.0} for name in ("prefill_seqs", "knee_tokens", "large_step_tokens"))]
    memory = [{name: 1.0} for name in ("const", "decode_seqs", "context_tokens", "prefill_seqs")]
    return Regimes(_basis(compute), _basis(memory))


def nnls(a: np.ndarray, b: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """argmin ||a x - b|| subject to x >= 0 (Lawson-Hanson active set)."""
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(10 * n):
        grad = a.T @ (b - a @ x)
        grad[passive] = -np.inf
        if grad.max(initial=-np.inf) <= tol:
            break
        passive[np.argmax(grad)] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if np.all(z[passive] > 0):
                x = z
                break
            neg = passive & (z <= 0)
            x = x + np.min(x[neg] / (x[neg] - z[neg])) * (z - x)
            passive &= x > tol
            x[~passive] = 0
    return x


def _relative_nnls(a: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Non-negative c minimising sum w * (a c / y - 1)^2, with columns rescaled for conditioning."""
    if not len(y):
        return np.zeros(a.shape[1])
    sw = np.sqrt(w)
    rows = a / y[:, None] * sw[:, None]
    scale = np.linalg.norm(rows, axis=0)
    scale[scale == 0] = 1
    return nnls(rows / scale, sw) / scale


@dataclass
class MaxAffineFit:
    compute: np.ndarray
    memory: np.ndarray
    in_compute: np.ndarray  # which points the compute regime predicts
    loss: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ self.compute, x @ self.memory)


def _starts(x: np.ndarray) -> list[np.ndarray]:
    tokens = x[:, _F["prefill_tokens"]] + x[:, _F["decode_seqs"]]
    cuts = np.unique(np.quantile(tokens, np.linspace(0, 1, N_STARTS)))
    return [np.ones(len(x), dtype=bool)] + [tokens > c for c in cuts]


def fit_max_affine(x: np.ndarray, y: np.ndarray, start: np.ndarray | None = None,
                   basis: Regimes | None = None) -> MaxAffineFit:
    """Robust fit of max(compute @ x, memory @ x) to times ``y`` (see module docstring).

    ``start`` (bool per point: compute regime) replaces the default starting splits;
    ``basis`` defaults to ``regimes()`` (attention a free column).
    """
    basis = basis or regimes()
    ac, am = x @ basis.compute, x @ basis.memory
    best = None
    for in_c in [start] if start is not None else _starts(x):
        w, pred = np.ones(len(y)), y
        for _ in range(MAX_ITER):
            cc = _relative_nnls(ac[in_c], y[in_c], w[in_c])
            cm = _relative_nnls(am[~in_c], y[~in_c], w[~in_c])
            pc, pm = ac @ cc, am @ cm
            new_pred = np.maximum(pc, pm)
            done = np.array_equal(pc > pm, in_c) and np.allclose(new_pred, pred, rtol=1e-7, atol=0)
            pred, in_c = new_pred, pc > pm
            e = np.abs(pred / y - 1)
            w = np.minimum(1.0, HUBER_DELTA / np.maximum(e, 1e-300))
            if done:
                break
        loss = float(np.sum(np.where(e <= HUBER_DELTA, e * e / 2, HUBER_DELTA * (e - HUBER_DELTA / 2))))
        if best is None or loss < best.loss:
            best = MaxAffineFit(basis.compute @ cc, basis.memory @ cm, in_c, loss)
    return best


@dataclass
class Grid:
    """Grid points (distinct feature vectors) with the median time of their repeats."""

    x: np.ndarray
    seconds: np.ndarray
    members: list[np.ndarray]  # observation indices of each point (outlier repeats excluded)
    outliers: list[str]


def _line_list(lines) -> str:
    lines = sorted(set(int(v) for v in lines))
    runs, start = [], lines[0]
    for prev, cur in zip(lines, lines[1:] + [None]):
        if cur != prev + 1:
            runs.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    return ("line " if len(lines) == 1 else "lines ") + ", ".join(runs)


def make_grid(obs: Observations) -> Grid:
    """Group ``obs`` by feature vector and drop repeats far from their point's median."""
    if not len(obs.seconds):
        raise CalibrationError(f"{obs.file}: no usable rows")
    xs, inverse = np.unique(obs.x, axis=0, return_inverse=True)
    seconds, members, outliers = [], [], []
    for k in range(len(xs)):
        idx = np.flatnonzero(inverse == k)
        ratio = obs.seconds[idx] / np.median(obs.seconds[idx])
        bad = np.abs(ratio - 1) > REPEAT_TOL if len(idx) >= 3 else np.zeros(len(idx), dtype=bool)
        outliers += [
            f"{obs.file} line {obs.lines[i]}: {obs.desc[i]} = {obs.seconds[i] * 1e3:.1f} ms is {q:.2f}x "
            f"the median of its {len(idx)} repeats"
            for i, q in zip(idx[bad], ratio[bad])
        ]
        members.append(idx[~bad])
        seconds.append(np.median(obs.seconds[idx[~bad]]))
    return Grid(xs, np.array(seconds), members, outliers)


def error_summary(x: np.ndarray, rel_err: np.ndarray, prefix: str) -> dict:
    """MAPE and max |error| (fractions) of prefill ("prompt") and decode ("token") points."""
    out = {}
    for kind, sel in (("prompt", x[:, 1] > 0), ("token", x[:, 1] == 0)):
        e = np.abs(rel_err[sel & np.isfinite(rel_err)])
        out[f"{prefix}mape_{kind}"] = round(float(e.mean()), 5) if len(e) else None
        out[f"{prefix}max_err_{kind}"] = round(float(e.max()), 5) if len(e) else None
    return out


def _leave_one_out(g: Grid, keep: np.ndarray, full: MaxAffineFit, basis: Regimes) -> np.ndarray:
    err = np.full(len(g.seconds), np.nan)
    kept = np.flatnonzero(keep)
    for j, i in enumerate(kept):
        others = np.delete(kept, j)
        f = fit_max_affine(g.x[others], g.seconds[others], start=np.delete(full.in_compute, j), basis=basis)
        err[i] = f.predict(g.x[i]) / g.seconds[i] - 1
    return err


def calibrate(obs: Observations, *, model: str, gpu: str, tp: int, name: str | None = None,
              source: str = "", holdout: Observations | None = None) -> StepTimeModel:
    """Fit a :class:`StepTimeModel` to the steps of ``obs`` not flagged ``holdout``; its ``fit``
    field holds the quality report. ``holdout_*`` is measured on the grid points of ``holdout``
    (default: the flagged steps of ``obs``) that the fit never saw."""
    train = obs.subset(~obs.holdout) if obs.holdout.any() else obs
    if holdout is None and obs.holdout.any():
        holdout = obs.subset(obs.holdout)
    g = make_grid(train)
    if len(g.seconds) < MIN_POINTS:
        raise CalibrationError(f"{obs.file}: need at least {MIN_POINTS} distinct steps, got {len(g.seconds)}")
    basis = regimes(model)
    outliers = list(obs.rejected) + g.outliers
    keep = np.ones(len(g.seconds), dtype=bool)
    while True:
        full = fit_max_affine(g.x[keep], g.seconds[keep], basis=basis)
        loo = _leave_one_out(g, keep, full, basis)
        worst = int(np.nanargmax(np.abs(np.log1p(loo))))
        if abs(np.log1p(loo[worst])) <= np.log1p(POINT_TOL) or keep.sum() <= MIN_POINTS:
            break
        keep[worst] = False
        idx = g.members[worst]
        outliers.append(
            f"{obs.file} {_line_list(train.lines[idx])}: {train.desc[idx[0]]} = {g.seconds[worst] * 1e3:.1f} ms, "
            f"{loo[worst]:+.0%} off when predicted from the other points"
        )
    in_sample = full.predict(g.x) / g.seconds - 1
    in_sample[~keep] = np.nan
    report = {
        "n_rows": int(len(np.unique(train.lines)) + len(obs.rejected)),
        "n_points": int(keep.sum()),
        "n_points_prompt": int(np.sum(keep & (g.x[:, 1] > 0))),
        "n_points_token": int(np.sum(keep & (g.x[:, 1] == 0))),
        **error_summary(g.x, loo, "loo_"),
        **error_summary(g.x, in_sample, "fit_"),
        "outliers": outliers,
    }
    profile = StepTimeModel(
        compute=full.compute,
        memory=full.memory,
        name=name or f"{model}-{gpu}-tp{tp}",
        source=source,
        model=model,
        gpu=gpu,
        tp=tp,
        fit=report,
    )
    if holdout is not None:
        report.update(holdout_errors(profile, holdout, seen=g.x))
    return profile


def holdout_errors(profile: StepTimeModel, obs: Observations, seen: np.ndarray | None = None) -> dict:
    """``holdout_*`` report of ``profile`` on the grid points of ``obs`` that are not rows of
    ``seen`` (the training grid): point counts, MAPE and max |error| for prefill and decode."""
    g = make_grid(obs)
    new = np.ones(len(g.seconds), dtype=bool) if seen is None else ~(g.x[:, None, :] == seen[None]).all(-1).any(-1)
    err = np.where(new, profile.predict(g.x) / g.seconds - 1, np.nan)
    return {
        "holdout_file": obs.file,
        "holdout_n_points_prompt": int(np.sum(new & (g.x[:, 1] > 0))),
        "holdout_n_points_token": int(np.sum(new & (g.x[:, 1] == 0))),
        **error_summary(g.x, err, "holdout_"),
    }
