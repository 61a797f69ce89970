"""Timeline pictures: predicted and true moments of queries over a long video."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# A moment is drawn at least this share of the axis wide (about 5 pixels in a 12-inch picture): a half-second moment
# in a two-hour video would otherwise be thinner than a pixel.
MIN_DRAWN_SHARE = 0.004


def _drawn_span(start_s: float, end_s: float, duration_s: float) -> tuple[float, float]:
    """`(left, width)` in minutes of a moment as drawn: at least the minimum width, and inside `[0, duration]`."""
    minutes = duration_s / 60
    width = min(max((end_s - start_s) / 60, MIN_DRAWN_SHARE * minutes), minutes)
    # A widened moment near the end grows to the left, so that it stays inside the axis.
    left = min(max(start_s / 60, 0.0), minutes - width)
    return left, width


def draw_timeline(
    duration_s: float,
    predictions: Sequence[np.ndarray],
    ground_truth: Sequence[Sequence[float]] | None = None,
    labels: Sequence[str] | None = None,
    scores: Sequence[np.ndarray] | None = None,
    top_k: int = 3,
    title: str | None = None,
):
    """The timeline figure of [`plot_timeline`] (a matplotlib `Figure`; close it with `matplotlib.pyplot.close`).

    Its artists carry ids to find them by (`figure.findobj(lambda artist: artist.get_gid() == ...)`):
    `"prediction-{query}-{rank}"` and `"truth-{query}"` for the moments, `"score-{query}"` for the best moment's
    score, `"label-{query}"` for the query's text (queries and ranks count from 0).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_queries = len(predictions)
    if num_queries == 0:
        raise ValueError("nothing to draw: no query")
    if not duration_s > 0:
        raise ValueError(f"`duration_s` must be positive, got {duration_s!r}")
    figure, axis = plt.subplots(figsize=(12, 0.9 * num_queries + 1.2), dpi=110)
    minutes = duration_s / 60
    for row in range(num_queries):
        y = num_queries - 1 - row
        axis.broken_barh([(0, minutes)], (y - 0.35, 0.7), facecolors="#eeeeee")
        if ground_truth is not None:
            start, end = ground_truth[row]
            axis.broken_barh(
                [_drawn_span(start, end, duration_s)],
                (y - 0.35, 0.7),
                facecolors="#2ca02c",
                label="true moment" if row == 0 else None,
                gid=f"truth-{row}",
            )
        moments = np.asarray(predictions[row])[:top_k]
        for rank, (start, end) in enumerate(moments):
            alpha = 1.0 - 0.6 * rank / max(top_k - 1, 1)
            label = f"predicted (top-{top_k})" if row == 0 and rank == 0 else None
            left, width = _drawn_span(start, end, duration_s)
            axis.broken_barh(
                [(left, width)],
                (y - 0.3, 0.25),
                facecolors="#ff7f0e",
                alpha=alpha,
                label=label,
                gid=f"prediction-{row}-{rank}",
            )
            if rank == 0 and scores is not None:
                text = f" {float(np.asarray(scores[row])[0]):.2f} "
                # Right of the moment, or left of it when it ends in the last tenth, so the label stays on the axis.
                right_side = left + width < 0.9 * minutes
                axis.text(
                    left + width if right_side else left,
                    y - 0.175,
                    text,
                    fontsize=7,
                    va="center",
                    ha="left" if right_side else "right",
                    gid=f"score-{row}",
                )
        text = labels[row] if labels is not None else f"query {row}"
        axis.text(0, y + 0.42, text[:110], fontsize=8, va="bottom", gid=f"label-{row}")
    axis.set_xlim(0, minutes)
    axis.set_ylim(-0.6, num_queries)
    axis.set_yticks([])
    axis.set_xlabel("minutes")
    # Above the axis, not on it: inside, the legend would hide the moments near the end of the first row.
    axis.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncol=2, frameon=False, borderaxespad=0.2)
    if title:
        axis.set_title(title, fontsize=10, loc="left")
    figure.tight_layout()
    return figure


def plot_timeline(
    path: str | Path,
    duration_s: float,
    predictions: Sequence[np.ndarray],
    ground_truth: Sequence[Sequence[float]] | None = None,
    labels: Sequence[str] | None = None,
    scores: Sequence[np.ndarray] | None = None,
    top_k: int = 3,
    title: str | None = None,
) -> Path:
    """Draw one row per query: the video as a bar, the true moment in green, the top-k predictions in orange (the
    best one darkest), and save a PNG.

    Every moment is drawn at least `MIN_DRAWN_SHARE` of the axis wide and inside the axis (a short moment at the very
    end grows to the left), and the best moment's score label stays inside the axis.

    Args:
        path: where to write the PNG.
        duration_s (`float`): video length in seconds.
        predictions: per query, `(K, 2)` `[start, end]` seconds, best first.
        ground_truth: per query, `[start, end]` seconds.
        labels: per query, a short text (e.g. the sentence).
        scores: per query, `(K,)` scores shown next to the predictions.
    """
    figure = draw_timeline(duration_s, predictions, ground_truth, labels, scores, top_k, title)
    import matplotlib.pyplot as plt  # after `draw_timeline` chose the Agg backend

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path


__all__ = ["MIN_DRAWN_SHARE", "draw_timeline", "plot_timeline"]
