"""``tailgym.plots`` on hand-made rows and arrays: each figure is a real, non-empty PNG."""
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure
from matplotlib.image import imread

from tailgym import plots
from tailgym.compare import STAT_KEYS

METRICS = ("ttft", "tbt", "ttlt")


def _row(policy, knobs, sweep, load, scale):
    """An aggregated row whose latencies grow with ``load`` and ``scale``; spread +-10%."""
    row = {"workload": "default:n=200", "policy": policy, "knobs": knobs, "sweep": sweep,
           "load": load, "seeds": 3}
    for i, key in enumerate(STAT_KEYS):
        value = scale * (1 + i % 6) / (1.05 - load)
        row.update({key: value, f"{key}_min": 0.9 * value, f"{key}_max": 1.1 * value})
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
    plots._annotate_points(ax, [(1.0, 1.0, "0.1"), (1.0, 1.0, "1"), (10.0, 10.0, "10")], "gamma")
    assert [t.get_text() for t in ax.texts] == ["gamma=0.1, 1", "gamma=10"]
