"""The ranking of moments across the videos of a library (docs/library_search.md, "Cross-video ranking").

RGNet's post-processing normalises the scores of one query's rows with a min-max over the rows of its top-k windows
in one video, so a video's scores say nothing about another video's. The library rule keeps one pool per query:

1. **Windows.** The windows of every video compete on their retrieval score, `sigmoid(window logit)`, an absolute
   probability; the `top_k_windows` best windows of the whole library are kept (ties: library order of the videos,
   then window index, as `rank_windows` breaks ties within a video).
2. **Fusion.** The moment rows of the kept windows, concatenated in that window order, are fused as the official
   post-processing fuses one video's rows: min-max normalised proposal + min-max normalised matching score, over
   the whole pool; repeated spans collapse only within one video.
3. **Suppression.** Ranked by the fused score, the first `max_before_nms` rows go through greedy NMS that compares a
   row only with kept rows of the same video (moments of two videos never overlap), then `max_after_nms` are kept.

For a library of one video every step is the single-video rule, so the ranking is exactly `engine.ground`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..post_processing import RANKING_COLUMNS, min_max_normalize, temporal_iou_matrix

__all__ = [
    "fuse_library_rows",
    "library_nms",
    "merge_video_groundings",
    "rank_library_rows",
    "select_library_windows",
]


def select_library_windows(scores: np.ndarray, top_k: int) -> np.ndarray:
    """
    Step 1: the positions of the `top_k` best windows of a pool, best first.

    Args:
        scores (`(N,)`): window scores of the pool's candidate windows, given in library order (video, then window
            index): a stable sort keeps that order among ties.
    Returns:
        `(min(top_k, N),)` int64 positions into `scores`.
    """
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:top_k]


def fuse_library_rows(rows: np.ndarray, videos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Step 2: `[start, end, proposal, matching]` rows `(N, 4)` of the pool and the video of each row `(N,)` ->
    fused rows `[start, end, proposal, matching, fused]` `(M, 5)` and their videos `(M,)`, one row per distinct
    (video, start, end), in order of first occurrence holding the scores of its last occurrence (the official
    dict semantics, per video).
    """
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    videos = np.asarray(videos, dtype=np.int64).reshape(-1)
    if not np.isfinite(rows).all():
        raise ValueError("the moment rows contain NaN or infinite values")
    fused = min_max_normalize(rows[:, 2]) + min_max_normalize(rows[:, 3])
    fused_rows = np.concatenate([rows, fused[:, None]], axis=1)
    if len(rows) == 0:
        return fused_rows.reshape(0, 5), videos
    starts, ends = rows[:, 0] + 0.0, rows[:, 1] + 0.0  # -0.0 and 0.0 are one key, as in a Python dict
    order = np.lexsort((np.arange(len(rows)), ends, starts, videos))
    key = np.stack([videos[order], starts[order], ends[order]], axis=1)
    new_group = np.ones(len(rows), dtype=bool)
    new_group[1:] = (key[1:] != key[:-1]).any(axis=1)
    first = np.flatnonzero(new_group)
    last = np.append(first[1:], len(rows)) - 1
    by_first_occurrence = np.argsort(order[first], kind="stable")
    value_rows = order[last][by_first_occurrence]
    return fused_rows[value_rows], videos[value_rows]


def library_nms(spans: np.ndarray, videos: np.ndarray, nms_threshold: float, max_keep: int) -> np.ndarray:
    """Greedy temporal NMS of ranked spans `(N, 2)` in which a span suppresses only spans of its own video; ->
    kept positions, in rank order."""
    spans = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
    videos = np.asarray(videos).reshape(-1)
    suppressed_by = (temporal_iou_matrix(spans, spans) > nms_threshold) & (videos[:, None] == videos[None, :])
    available = np.ones(len(spans), dtype=bool)
    kept: list[int] = []
    # One iteration per kept span, as `temporal_nms`.
    while len(kept) < max_keep and available.any():
        best = int(np.argmax(available))
        kept.append(best)
        available &= ~suppressed_by[best]
        available[best] = False
    return np.asarray(kept, dtype=np.int64)


def rank_library_rows(
    rows: np.ndarray,
    videos: np.ndarray,
    ranking: str = "fused",
    nms_threshold: float = 0.5,
    max_before_nms: int = 200,
    max_after_nms: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-3 on the rows of the kept windows (in window-rank order): -> `(K, 5)` ranked rows and their videos."""
    if ranking not in RANKING_COLUMNS:
        raise ValueError(f"`ranking` must be one of {sorted(RANKING_COLUMNS)}, got {ranking!r}")
    fused_rows, fused_videos = fuse_library_rows(rows, videos)
    order = np.argsort(-fused_rows[:, RANKING_COLUMNS[ranking]], kind="stable")[:max_before_nms]
    ranked, ranked_videos = fused_rows[order], fused_videos[order]
    kept = library_nms(ranked[:, :2], ranked_videos, nms_threshold, max_after_nms)
    return ranked[kept], ranked_videos[kept]


def merge_video_groundings(
    results: Sequence,
    top_k_windows: int,
    ranking: str = "fused",
    nms_threshold: float = 0.5,
    max_before_nms: int = 200,
    max_after_nms: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """
    The library rule applied to one query grounded in each video alone: `results[v]` is the
    [`VideoGroundingResult`] of video `v` (its decoded windows are its best, so the library's best `top_k_windows`
    are among them).

    Returns:
        `(K, 5)` rows `[start, end, proposal, matching, fused]`, best first, and the video of each `(K,)`.
    """
    scores, window_rows, videos = [], [], []
    for video, result in enumerate(results):
        decoded = result.window_order[: len(result.window_predictions)]
        scores.append(result.window_scores[decoded])
        window_rows.append(result.window_predictions)
        videos.append(np.full(len(decoded), video))
    if not scores:
        return np.zeros((0, 5)), np.zeros(0, dtype=np.int64)
    scores, window_rows, videos = np.concatenate(scores), np.concatenate(window_rows), np.concatenate(videos)
    kept = select_library_windows(scores, top_k_windows)
    num_queries = window_rows.shape[1]
    return rank_library_rows(
        window_rows[kept].reshape(-1, 4),
        np.repeat(videos[kept], num_queries),
        ranking,
        nms_threshold,
        max_before_nms,
        max_after_nms,
    )
