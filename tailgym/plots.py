"""Figures of a ``tailgym compare`` grid, drawn with matplotlib without pyplot, so no GUI
backend or global state is involved. Each figure function takes rows or arrays and an output
path and returns the path; ``draw_plots`` draws all of a grid's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .compare import policy_label, pooled_latencies
from .metrics import METRIC_TITLES

PANEL_W, PANEL_H = 5.0, 4.2
CDF_TICKS = (0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999)


def _figure(n_panels: int, title: str):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(PANEL_W * n_panels, PANEL_H), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    fig.suptitle(title)
    return fig, axes


def _colors(labels) -> dict:
    from matplotlib import colormaps
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _log_axis(ax, which: str) -> None:
    """Log scale labelled with plain numbers (0.5, 2, 30) instead of powers of ten."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):  # LogFormatter decides which ticks get a label; this, how
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:g}"

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(Plain(labelOnlyBase=False))
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(1.5, 0.3)))


def _auto_axis(ax, which: str, values) -> None:
    """Log scale where the positive values span more than a factor 4, else linear."""
    from matplotlib.ticker import ScalarFormatter
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and v.max() > 4 * v.min():
        _log_axis(ax, which)
    else:
        getattr(ax, f"{which}axis").set_major_formatter(ScalarFormatter(useOffset=False))


def _legend(fig) -> None:
    """Legend below the panels, as many columns as fit the width."""
    handles, labels = fig.axes[0].get_legend_handles_labels()
    if handles:
        fit = int(fig.get_figwidth() * 12 // (max(map(len, labels)) + 6))
        fig.legend(handles, labels, loc="outside lower center", frameon=False,
                   ncols=max(1, min(len(labels), fit)))


def _save(fig, path) -> Path:
    if not fig.legends:
        _legend(fig)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def latency_cdfs(samples: dict[str, dict[str, np.ndarray]], path, *, metrics, title: str) -> Path:
    """Empirical CDFs, one panel per metric and one line per policy; ``samples[label][metric]``
    holds per-request latencies (s). Log x; the y axis is stretched as -log10(1 - share) so
    that each nine of the tail (90%, 99%, 99.9%) gets the same height."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    fig, axes = _figure(len(metrics), title)
    colors = _colors(list(samples))
    for ax, m in zip(axes, metrics):
        top = 0.0
        for label, per_metric in samples.items():
            x = np.sort(per_metric[m][per_metric[m] > 0])
            if x.size:
                y = (np.arange(x.size) + 0.5) / x.size
                top = max(top, y[-1])
                ax.step(x, y, where="post", color=colors[label], label=label, lw=1.5)
        ax.set_yscale("function", functions=(lambda q: -np.log10(1.0 - np.clip(q, 0.0, 1.0 - 1e-12)),
                                             lambda z: 1.0 - 10.0 ** -np.asarray(z)))
        ax.set_ylim(0.0, top)
        ax.yaxis.set_major_locator(FixedLocator([q for q in CDF_TICKS if q <= top]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda q, _: f"{100 * q:.10g}%"))
        ax.yaxis.set_minor_locator(NullLocator())
        _log_axis(ax, "x")
        ax.set(xlabel=f"{METRIC_TITLES[m]} (s)", title=METRIC_TITLES[m])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("share of requests at or below")
    return _save(fig, path)


def p99_vs_load(rows: list[dict], path, *, metrics, title: str, stat: str = "p99") -> Path:
    """``stat`` of each metric versus load, one panel per metric, one line per policy column;
    ``rows`` are aggregated rows (``compare.aggregate``); error bars are the 95% Student-t
    interval of the mean over seeds (``_lo``/``_hi``; none where it is nan: one seed, or
    seeds that gave the same value)."""
    seeds = max(r["seeds"] for r in rows)
    bars = f" | bars: 95% t interval of the mean over {seeds} seeds" if seeds > 1 else ""
    fig, axes = _figure(len(metrics), title + bars)
    labels = list(dict.fromkeys(policy_label(r) for r in rows))
    colors = _colors(labels)
    loads = sorted({r["load"] for r in rows})
    spread = any(r[f"{m}_{stat}_lo"] < r[f"{m}_{stat}_hi"] for r in rows for m in metrics)
    # bars side by side, so that they do not hide each other (none to hide: lines stay put)
    dodge = spread * 0.08 * min(np.diff(loads), default=0.0) / max(len(labels) - 1, 1)
    for ax, m in zip(axes, metrics):
        key = f"{m}_{stat}"
        for i, label in enumerate(labels):
            rs = sorted((r for r in rows if policy_label(r) == label), key=lambda r: r["load"])
            y = np.array([r[key] for r in rs])
            lo, hi = (np.array([r[f"{key}_{end}"] for r in rs]) for end in ("lo", "hi"))
            bar = np.clip([y - lo, hi - y], 0.0, None)  # the mean may sit an ulp outside
            bar[0] = np.minimum(bar[0], y * (1 - 1e-9))  # a log axis cannot show <= 0
            bar = np.nan_to_num(bar)  # no interval: no bar
            x = np.array([r["load"] for r in rs]) + (i - (len(labels) - 1) / 2) * dodge
            ax.errorbar(x, y, yerr=bar, color=colors[label], label=label, marker="o", ms=4,
                        capsize=3, lw=1.5)
        _auto_axis(ax, "y", [r[key] for r in rows])
        means = [r[key] for r in rows if np.isfinite(r[key]) and r[key] > 0]
        if ax.get_yscale() == "log" and means:  # the lowest bound, or a wide one off the edge
            lows = [r[f"{key}_lo"] for r in rows if r[f"{key}_lo"] > 0] + [min(means)]
            ax.set_ylim(bottom=max(min(lows), min(means) / 4) / 1.2)
        ax.set(xlabel="load (fraction of saturation throughput)",
               ylabel=f"{stat.upper()} {METRIC_TITLES[m]} (s)", title=METRIC_TITLES[m])
        ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def _order(text: str):
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


LABEL_OFFSETS = ((5, 3), (5, -11))  # points: right of the point, above or below it
LABEL_STYLE = {"textcoords": "offset points", "fontsize": 8, "zorder": 5,
               "bbox": {"boxstyle": "round,pad=0.1", "fc": "white", "alpha": 0.7, "lw": 0}}


def _free_label(ax, xy, text: str, others: list, renderer):
    """An annotation of ``xy`` at the first of ``LABEL_OFFSETS`` where it stays inside the
    axes and clear of the ``others``; None where there is no such place."""
    for offset in LABEL_OFFSETS:
        ann = ax.annotate(text, xy, xytext=offset, **LABEL_STYLE)
        ann.set_in_layout(False)
        box = ann.get_window_extent(renderer)
        inside = ax.bbox.contains(box.x0, box.y0) and ax.bbox.contains(box.x1, box.y1)
        if inside and not any(o.get_window_extent(renderer).overlaps(box) for o in others):
            return ann
        ann.remove()
    return None


def _annotate_points(ax, points: list[tuple[float, float, str]], near_px: float = 14) -> None:
    """Label the points in order with their values. A point within ``near_px`` pixels of a
    labelled one, or whose label finds no free place (``_free_label``), joins the nearest
    label (``1, 10, 100``). Call once the figure's legend and axis scales are set: it fixes
    the layout to measure the labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(ax.figure).get_renderer()
    ax.figure.draw_without_rendering()
    groups: list[tuple] = []  # (annotation, pixel of its point, values)
    for x, y, value in points:
        pixel = ax.transData.transform((x, y))
        near = min(groups, key=lambda g: np.hypot(*(pixel - g[1])), default=None)
        ann = None
        if near is None or np.hypot(*(pixel - near[1])) >= near_px:
            ann = _free_label(ax, (x, y), value, [g[0] for g in groups], renderer)
        if ann is None and near is None:  # the first label goes where it must
            ann = ax.annotate(value, (x, y), xytext=LABEL_OFFSETS[0], **LABEL_STYLE)
        if ann is None:
            near[2].append(value)
            near[0].set_text(", ".join(near[2]))
        else:
            groups.append((ann, pixel, [value]))


def frontier(rows: list[dict], path, *, sweep: str, metrics, load: float, title: str) -> Path:
    """P50 versus P99 of each metric at ``load`` as the knob of ``sweep`` (``POLICY.KNOB``)
    varies: a line through the swept columns, each point annotated with its value, and the
    listed (unswept) policies as reference markers. ``rows`` are aggregated rows."""
    name, _, knob = sweep.partition(".")
    at_load = [r for r in rows if r["load"] == load]
    family = [r for r in at_load if r["policy"] == name and r["sweep"].partition("=")[0] == knob]
    if not family:
        raise ValueError(f"no rows of sweep {sweep} at load {load:g}")
    family.sort(key=lambda r: _order(r["sweep"].partition("=")[2]))
    references = [r for r in at_load if not r["sweep"]]
    colors = _colors([policy_label(r) for r in references])
    markers = "sD^vP*Xhp<>"
    fig, axes = _figure(len(metrics), title)
    for ax, m in zip(axes, metrics):
        x, y = [r[f"{m}_p50"] for r in family], [r[f"{m}_p99"] for r in family]
        ax.plot(x, y, "o-", color="black", lw=1.5, ms=5, label=f"{name}, {knob} as labelled",
                zorder=3)
        for i, r in enumerate(references):
            ax.plot(r[f"{m}_p50"], r[f"{m}_p99"], markers[i % len(markers)], ms=9, alpha=0.85,
                    color=colors[policy_label(r)], label=policy_label(r), zorder=4)
        _auto_axis(ax, "x", x + [r[f"{m}_p50"] for r in references])
        _auto_axis(ax, "y", y + [r[f"{m}_p99"] for r in references])
        ax.set(xlabel=f"P50 {METRIC_TITLES[m]} (s)", ylabel=f"P99 {METRIC_TITLES[m]} (s)",
               title=METRIC_TITLES[m])
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig)
    for ax, m in zip(axes, metrics):
        _annotate_points(ax, [(r[f"{m}_p50"], r[f"{m}_p99"], r["sweep"].partition("=")[2])
                              for r in family])
    return _save(fig, path)


def draw_plots(out_dir, cells, summary: list[dict], sweeps, metrics, load: float,
               title: str) -> list[Path]:
    """Latency CDFs (seeds pooled) and the frontier of each sweep at ``load``; P99 versus load."""
    out_dir = Path(out_dir)
    at = f"{title} | load {load:g}"
    seeds = len({c.seed for c in cells})
    pooled = f"{at}, {seeds} seeds pooled" if seeds > 1 else at
    paths = [latency_cdfs(pooled_latencies(out_dir, cells, load, metrics),
                          out_dir / f"cdf_load{load:g}.png", metrics=metrics, title=pooled),
             p99_vs_load(summary, out_dir / "p99_vs_load.png", metrics=metrics, title=title)]
    for name, knob in dict.fromkeys((name, knob) for name, knob, _ in sweeps):
        paths.append(frontier(summary, out_dir / f"frontier_{name}.{knob}_load{load:g}.png",
                              sweep=f"{name}.{knob}", metrics=metrics, load=load, title=at))
    return paths
