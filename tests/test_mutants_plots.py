"""Figures checked beyond their PNG header: image size and drawn pixels, axis labels, and the
plotted data itself (read back from the matplotlib figure objects)."""
import numpy as np
import pytest
from matplotlib.image import imread
from test_plots import _rows

from tailgym import plots


@pytest.fixture
def figures(monkeypatch):
    """The figures ``plots`` saves, in order."""
    saved = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or save(fig, path))
    return saved


def _drawn_share(path):
    """Share of pixels that are not white."""
    image = imread(path)[..., :3]
    return float((image < 0.98).any(axis=-1).mean())


def test_latency_cdfs_draw_each_policy_at_mid_ranks(tmp_path, figures):
    """Two policies, 4 samples each: each panel has one step line per policy with x the
    sorted latencies and y the mid-ranks (k + 0.5) / 4; x labelled with the metric."""
    samples = {"fcfs": {"ttft": np.array([4.0, 1.0, 3.0, 2.0]), "ttlt": np.array([8.0, 5.0, 6.0, 7.0])},
               "las": {"ttft": np.array([0.5, 0.6, 0.7, 0.8]), "ttlt": np.array([9.0, 1.0, 2.0, 3.0])}}
    path = plots.latency_cdfs(samples, tmp_path / "cdf.png", metrics=("ttft", "ttlt"), title="t")
    (fig,) = figures
    ttft, ttlt = fig.axes[:2]
    assert ttft.get_xlabel() == "TTFT (s)" and ttlt.get_xlabel() == "TTLT (s)"
    assert ttft.get_ylabel() == "share of requests at or below"
    lines = {line.get_label(): line for line in ttft.get_lines()}
    assert set(lines) == {"fcfs", "las"}
    np.testing.assert_allclose(lines["fcfs"].get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(lines["fcfs"].get_ydata(), [0.125, 0.375, 0.625, 0.875])
    assert imread(path).shape[:2] == (round(plots.PANEL_H * 110), round(2 * plots.PANEL_W * 110))
    assert _drawn_share(path) > 0.02


def test_p99_vs_load_plots_the_p99_of_each_policy_with_its_interval(tmp_path, figures):
    """One TTLT panel: each policy's line runs through its rows' ``ttlt_p99`` at their loads,
    its error bars the 95% interval ``ttlt_p99_lo`` to ``ttlt_p99_hi`` (said in the title);
    y labelled ``P99 TTLT (s)``."""
    rows = _rows()
    path = plots.p99_vs_load(rows, tmp_path / "p99.png", metrics=("ttlt",), title="t")
    ax = figures[0].axes[0]
    assert ax.get_ylabel() == "P99 TTLT (s)" and ax.get_xlabel().startswith("load")
    fcfs = sorted((r for r in rows if r["policy"] == "fcfs"), key=lambda r: r["load"])
    container = next(c for c in ax.containers if c.get_label() == "fcfs")
    np.testing.assert_allclose(container.lines[0].get_ydata(), [r["ttlt_p99"] for r in fcfs])
    (bars,) = container.lines[2]
    spans = [(seg[0][1], seg[1][1]) for seg in bars.get_segments()]
    np.testing.assert_allclose(spans, [(r["ttlt_p99_lo"], r["ttlt_p99_hi"]) for r in fcfs])
    assert "95% t interval" in figures[0].get_suptitle()
    assert _drawn_share(path) > 0.02


def test_frontier_panels_are_labelled_and_drawn(tmp_path, figures):
    """The gamma frontier: a panel per metric with both axes labelled, and ink on the image."""
    path = plots.frontier(_rows(), tmp_path / "f.png", sweep="uniboost.gamma",
                          metrics=("ttft", "ttlt"), load=0.9, title="t")
    for ax in figures[0].axes[:2]:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_lines()
    assert _drawn_share(path) > 0.02
