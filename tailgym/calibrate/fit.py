"""Robust fit of the step-time model, outlier detection and leave-one-out quality.

Method, per (model, GPU, TP):

1. Steps with identical features form a grid point. A repeat more than
   ``REPEAT_TOL`` away from its grid point's median is an outlier; the point's
   time is the median of the rest.
2. The two regimes of ``max(compute @ x, memory @ x)`` are fitted by
   alternating assignment (each point goes to the regime that predicts more)
   and non-negative least squares on relative errors, reweighted for a Huber
   loss on relative errors (``HUBER_DELTA``), from several starting splits by
   token count. The compute regime uses const, scheduled tokens (a prefill
   token and a decode token cost the same GEMM FLOPs) and prefill attention;
   the memory regime const (weights), prefill tokens, decode seqs and context
   tokens (KV reads).
3. Every grid point is predicted by a fit to the others (leave-one-out). The
   worst point, if off by more than a factor ``1 + POINT_TOL``, is an outlier:
   it is dropped and the loop repeats. The last round's errors are the
   leave-one-out quality report, split into prefill (steps with prefill
   tokens) and decode points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tailgym.calibrate.readers import CalibrationError, Observations
from tailgym.hardware import StepTimeModel

REPEAT_TOL = 0.25
POINT_TOL = 0.5
HUBER_DELTA = 0.05
N_STARTS = 8
MAX_ITER = 100
MIN_POINTS = 4

# Columns of each regime as combinations of the 5 features (x @ basis).
COMPUTE_BASIS = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]], dtype=np.float64)
MEMORY_BASIS = np.eye(5)[:, :4]


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
    tokens = x[:, 1] + x[:, 2]
    cuts = np.unique(np.quantile(tokens, np.linspace(0, 1, N_STARTS)))
    return [np.ones(len(x), dtype=bool)] + [tokens > c for c in cuts]


def fit_max_affine(x: np.ndarray, y: np.ndarray, start: np.ndarray | None = None) -> MaxAffineFit:
    """Robust fit of max(compute @ x, memory @ x) to times ``y`` (see module docstring).

    ``start`` (bool per point: compute regime) replaces the default starting splits.
    """
    ac, am = x @ COMPUTE_BASIS, x @ MEMORY_BASIS
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
            best = MaxAffineFit(COMPUTE_BASIS @ cc, MEMORY_BASIS @ cm, in_c, loss)
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


def _leave_one_out(g: Grid, keep: np.ndarray, full: MaxAffineFit) -> np.ndarray:
    err = np.full(len(g.seconds), np.nan)
    kept = np.flatnonzero(keep)
    for j, i in enumerate(kept):
        others = np.delete(kept, j)
        f = fit_max_affine(g.x[others], g.seconds[others], start=np.delete(full.in_compute, j))
        err[i] = f.predict(g.x[i]) / g.seconds[i] - 1
    return err


def calibrate(obs: Observations, *, model: str, gpu: str, tp: int, name: str | None = None,
              source: str = "") -> StepTimeModel:
    """Fit a :class:`StepTimeModel` to ``obs``; its ``fit`` field holds the quality report."""
    g = make_grid(obs)
    if len(g.seconds) < MIN_POINTS:
        raise CalibrationError(f"{obs.file}: need at least {MIN_POINTS} distinct steps, got {len(g.seconds)}")
    outliers = list(obs.rejected) + g.outliers
    keep = np.ones(len(g.seconds), dtype=bool)
    while True:
        full = fit_max_affine(g.x[keep], g.seconds[keep])
        loo = _leave_one_out(g, keep, full)
        worst = int(np.nanargmax(np.abs(np.log1p(loo))))
        if abs(np.log1p(loo[worst])) <= np.log1p(POINT_TOL) or keep.sum() <= MIN_POINTS:
            break
        keep[worst] = False
        idx = g.members[worst]
        outliers.append(
            f"{obs.file} {_line_list(obs.lines[idx])}: {obs.desc[idx[0]]} = {g.seconds[worst] * 1e3:.1f} ms, "
            f"{loo[worst]:+.0%} off when predicted from the other points"
        )
    in_sample = full.predict(g.x) / g.seconds - 1
    in_sample[~keep] = np.nan
    report = {
        "n_rows": int(len(np.unique(obs.lines)) + len(obs.rejected)),
        "n_points": int(keep.sum()),
        "n_points_prompt": int(np.sum(keep & (g.x[:, 1] > 0))),
        "n_points_token": int(np.sum(keep & (g.x[:, 1] == 0))),
        **error_summary(g.x, loo, "loo_"),
        **error_summary(g.x, in_sample, "fit_"),
        "outliers": outliers,
    }
    return StepTimeModel(
        compute=full.compute,
        memory=full.memory,
        name=name or f"{model}-{gpu}-tp{tp}",
        source=source,
        model=model,
        gpu=gpu,
        tp=tp,
        fit=report,
    )


def holdout_errors(profile: StepTimeModel, obs: Observations) -> dict:
    """``holdout_mape_*`` / ``holdout_max_err_*`` of ``profile`` on the grid points of ``obs``."""
    g = make_grid(obs)
    return error_summary(g.x, profile.predict(g.x) / g.seconds - 1, "holdout_")
