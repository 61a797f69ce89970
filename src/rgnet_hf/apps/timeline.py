"""Timeline pictures: predicted and true moments of queries over a long video."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


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

    Args:
        path: where to write the PNG.
        duration_s (`float`): video length in seconds.
        predictions: per query, `(K, 2)` `[start, end]` seconds, best first.
        ground_truth: per query, `[start, end]` seconds.
        labels: per query, a short text (e.g. the sentence).
        scores: per query, `(K,)` scores shown next to the predictions.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_queries = len(predictions)
    if num_queries == 0:
        raise ValueError("nothing to draw: no query")
    figure, axis = plt.subplots(figsize=(12, 0.9 * num_queries + 1.2), dpi=110)
    minutes = duration_s / 60
    for row in range(num_queries):
        y = num_queries - 1 - row
        axis.broken_barh([(0, minutes)], (y - 0.35, 0.7), facecolors="#eeeeee")
        if ground_truth is not None:
            start, end = ground_truth[row]
            axis.broken_barh(
                [(start / 60, max(end - start, 0.5) / 60)],
                (y - 0.35, 0.7),
                facecolors="#2ca02c",
                label="true moment" if row == 0 else None,
            )
        moments = np.asarray(predictions[row])[:top_k]
        for rank, (start, end) in enumerate(moments):
            alpha = 1.0 - 0.6 * rank / max(top_k - 1, 1)
            label = f"predicted (top-{top_k})" if row == 0 and rank == 0 else None
            axis.broken_barh(
                [(start / 60, max(end - start, 0.5) / 60)],
                (y - 0.3, 0.25),
                facecolors="#ff7f0e",
                alpha=alpha,
                label=label,
            )
            if rank == 0 and scores is not None:
                axis.text(end / 60, y - 0.25, f" {float(np.asarray(scores[row])[0]):.2f}", fontsize=7, va="center")
        text = labels[row] if labels is not None else f"query {row}"
        axis.text(0, y + 0.42, text[:110], fontsize=8, va="bottom")
    axis.set_xlim(0, minutes)
    axis.set_ylim(-0.6, num_queries)
    axis.set_yticks([])
    axis.set_xlabel("minutes")
    axis.legend(loc="upper right", fontsize=8, ncol=2)
    if title:
        axis.set_title(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


__all__ = ["plot_timeline"]
