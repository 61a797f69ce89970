"""Timeline pictures: short moments near the end of a long video stay visible, inside the axis, and labelled."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="timeline pictures need matplotlib")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from rgnet_hf.apps.timeline import MIN_DRAWN_SHARE, draw_timeline, plot_timeline  # noqa: E402

TWO_HOURS_S = 7200.0


def _artist(figure, gid: str):
    found = figure.findobj(lambda artist: artist.get_gid() == gid)
    assert len(found) == 1, f"{gid}: {found}"
    return found[0]


def _inside(inner, outer, tolerance: float = 0.5) -> bool:
    return (
        inner.x0 >= outer.x0 - tolerance
        and inner.x1 <= outer.x1 + tolerance
        and inner.y0 >= outer.y0 - tolerance
        and inner.y1 <= outer.y1 + tolerance
    )


@pytest.fixture
def end_of_two_hours():
    """A 0.5 s predicted moment (with its score) and a 0.5 s true moment in the last second of a 2-hour video."""
    figure = draw_timeline(
        TWO_HOURS_S,
        [np.array([[7199.5, 7200.0], [10.0, 70.0]])],
        ground_truth=[[7199.0, 7199.5]],
        labels=["the credits roll"],
        scores=[np.array([0.87, 0.5])],
        title="a two-hour video",
    )
    figure.canvas.draw()
    yield figure
    plt.close(figure)


def test_a_short_moment_at_the_end_is_drawn_wide_enough_and_inside_the_axis(end_of_two_hours):
    figure = end_of_two_hours
    axis = figure.axes[0]
    minutes = TWO_HOURS_S / 60
    for gid, (start, end) in {"prediction-0-0": (7199.5, 7200.0), "truth-0": (7199.0, 7199.5)}.items():
        extent = _artist(figure, gid).get_paths()[0].get_extents()  # in minutes
        assert extent.width >= MIN_DRAWN_SHARE * minutes * (1 - 1e-6), gid
        # Widened to the left near the end: inside the axis, and still covering the moment itself.
        assert extent.x1 <= minutes + 1e-9, gid
        assert extent.x0 <= start / 60 and extent.x1 >= end / 60, gid
        pixels = Bbox(axis.transData.transform(extent.get_points()))
        assert pixels.width >= 3, f"{gid} is {pixels.width:.1f} pixels wide"
        assert _inside(pixels, axis.get_window_extent()), gid
    # A long moment keeps its true span.
    extent = _artist(figure, "prediction-0-1").get_paths()[0].get_extents()
    np.testing.assert_allclose([extent.x0, extent.x1], [10.0 / 60, 70.0 / 60], rtol=1e-6)


def test_the_labels_of_a_moment_at_the_end_stay_inside_the_axis(end_of_two_hours):
    figure = end_of_two_hours
    renderer = figure.canvas.get_renderer()
    axis_box = figure.axes[0].get_window_extent()
    score = _artist(figure, "score-0")
    assert score.get_text().strip() == "0.87"
    for gid in ("score-0", "label-0"):
        box = _artist(figure, gid).get_window_extent(renderer)
        assert _inside(box, figure.bbox) and _inside(box, axis_box), f"{gid} {box} outside {axis_box}"
    # The legend sits above the axis: it covers no moment.
    legend = figure.axes[0].get_legend().get_window_extent(renderer)
    assert _inside(legend, figure.bbox)
    axis = figure.axes[0]
    moment = Bbox(axis.transData.transform(_artist(figure, "prediction-0-0").get_paths()[0].get_extents().get_points()))
    assert legend.y0 >= moment.y1 or legend.x1 <= moment.x0


def test_plot_timeline_writes_a_png(tmp_path):
    path = plot_timeline(tmp_path / "pictures" / "timeline.png", 600.0, [np.array([[5.0, 9.0]])], top_k=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no query"):
        plot_timeline(tmp_path / "empty.png", 600.0, [])
    with pytest.raises(ValueError, match="duration_s"):
        plot_timeline(tmp_path / "zero.png", 0.0, [np.array([[0.0, 1.0]])])
