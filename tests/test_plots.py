"""``tailgym.plots`` on hand-made rows and arrays: each figure is a real, non-empty PNG."""
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from tailgym import plots
from tailgym.compare import STAT_KEYS

METRICS = ("ttft", "tbt", "ttlt")


def _row(policy, knobs, sweep, load, scale):
    """An aggregated row whose latencies grow with ``load`` and ``scale``; spread +-10%, 95%
    interval +-20% (-100% for sjf-oracle's P99 at 0.9: a lower bound below 0)."""
    row = {"workload": "default:n=200", "policy": policy, "knobs": knobs, "sweep": sweep,
           "load": load, "seeds": 3}
    for i, key in enumerate(STAT_KEYS):
        value = scale * (1 + i % 6) / (1.05 - load)
        wide = policy == "sjf-oracle" and load == 0.9 and key.endswith("_p99")
        row.update({key: value, f"{key}_min": 0.9 * value, f"{key}_max": 1.1 * value,
                    f"{key}_lo": (-0.1 if wide else 0.8) * value, f"{key}_hi": 1.2 * value})
    return row


def _rows():
    rows = []
    for load in (0.5, 0.7, 0.9):
        rows += [_row("fcfs", "", "", load, 1.0), _row("sjf-oracle", "", "", load, 0.6)]
        rows += [_row("uniboost", f"gamma={g}:gamma_mode=fixed", f"gamma={g}", load, s)
                 for g, s in (("0.1", 0.7), ("1", 0.8), ("10", 0.8), ("100", 0.95))]
    return rows


def _is_png(path, width):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert imread(path).shape[1] == width


def test_latency_cdfs(tmp_path):
    rng = np.random.default_rng(0)
    samples = {label: {m: rng.lognormal(mu, 1.0, 500) for m in METRICS}
               for label, mu in (("fcfs", 0.0), ("uniboost:gamma=1", -0.5))}
    path = plots.latency_cdfs(samples, tmp_path / "cdf.png", metrics=METRICS, title="t")
    _is_png(path, int(3 * plots.PANEL_W * 110))


def test_p99_vs_load_one_panel_per_metric(tmp_path):
    path = plots.p99_vs_load(_rows(), tmp_path / "p99.png", metrics=("ttlt",), title="t")
    _is_png(path, int(plots.PANEL_W * 110))


def test_frontier_of_a_sweep_with_references(tmp_path):
    path = plots.frontier(_rows(), tmp_path / "f.png", sweep="uniboost.gamma", metrics=METRICS,
                          load=0.9, title="t")
    _is_png(path, int(3 * plots.PANEL_W * 110))
    with pytest.raises(ValueError, match="no rows of sweep uniboost.k at load 0.9"):
        plots.frontier(_rows(), tmp_path / "g.png", sweep="uniboost.k", metrics=METRICS,
                       load=0.9, title="t")


def test_coincident_frontier_points_share_one_label():
    ax = Figure().subplots()
    ax.plot([1, 1, 10], [1, 1, 10])
    plots._annotate_points(ax, [(1.0, 1.0, "0.1"), (1.0, 1.0, "1"), (10.0, 10.0, "10")])
    assert [t.get_text() for t in ax.texts] == ["0.1, 1", "10"]


def test_frontier_labels_of_crowded_points_do_not_overlap():
    ax = Figure(figsize=(5, 4)).subplots()
    points = [(1.0, 10.0, "0.01"), (2.0, 5.0, "0.1"), (2.1, 4.9, "1"), (2.16, 4.85, "10"),
              (2.3, 4.8, "100"), (2.5, 4.75, "1000")]
    ax.plot(*zip(*[(x, y) for x, y, _ in points]))
    plots._annotate_points(ax, points)
    renderer = ax.figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    labels = [t.get_text() for t in ax.texts]
    assert ", ".join(labels).split(", ") == [v for _, _, v in points]  # each value once, in order
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), labels


def test_p99_plot_says_what_its_error_bars_are(tmp_path, monkeypatch):
    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or save(fig, path))
    plots.p99_vs_load(_rows(), tmp_path / "p99.png", metrics=("ttlt",), title="t")
    assert figures[0]._suptitle.get_text() == "t | bars: 95% t interval of the mean over 3 seeds"
    ax = figures[0].axes[0]
    bottom, top = ax.get_ylim()
    assert ax.get_yscale() == "log" and 0 < bottom and top > max(r["ttlt_p99_hi"] for r in _rows())
    one = [{**r, "seeds": 1, **{k: np.nan for k in r if k.endswith(("_lo", "_hi"))}}
           for r in _rows()]
    plots.p99_vs_load(one, tmp_path / "one.png", metrics=("ttlt",), title="t")
    assert figures[1]._suptitle.get_text() == "t"  # one seed: no bars, nothing to say
