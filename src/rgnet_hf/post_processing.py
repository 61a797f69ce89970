"""Per-query post-processing of RGNet's window-level moment predictions, as the official inference does it.

For one query, inference keeps its top-k windows (by window score) and, for each kept window, the five moment rows
`[start_s, end_s, proposal_score, matching_score]`, sorted by the unrounded proposal score (descending) and rounded to
4 decimals ([`format_window_predictions`]). The rows of the kept windows are concatenated in window-rank order and
then post-processed ([`post_process_query`]):

1. **Score fusion.** The proposal scores are min-max normalised over the query's rows, and so are the matching scores
   (a list whose values are all equal is left unchanged); `fused = proposal_normalised + matching_normalised`.
2. **Collapse of repeated spans.** The official code stores the rows in a dict keyed by `(start, end)`: when a
   (rounded) pair repeats, the later row's scores replace the earlier row's, and the row keeps the position of the
   pair's *first* occurrence (dict insertion order). The normalisation of step 1 runs before the collapse, over all
   rows.
3. **Ranking** by the fused, proposal or matching score, descending. Ties keep the current order (a stable sort).
4. Keep the first `max_before_nms` (200) rows; **greedy temporal NMS** drops a row whose IoU with an already kept row
   is strictly greater than `nms_threshold` (0.5), where IoU = intersection / hull length; keep at most
   `max_after_nms` (100) rows.

The output rows are `[start_s, end_s, proposal, matching, fused]` (proposal and matching raw, fused unrounded).

**NaN policy.** The official matching score can be NaN (it reads zero-padded frames of short windows, and normalising
a zero vector gives 0/0); the official post-processing then ranks NaN rows in an order that depends on where they sit.
This module does not reproduce that: NaN or infinite scores or spans raise a `ValueError`. The `rgnet_hf` engine never
produces them, because its matching score reads only the valid frames of each window.

This file is copied flat into Hugging Face remote-code folders: it imports only the standard library, numpy, torch
and its sibling modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "RANKING_COLUMNS",
    "WindowRanking",
    "collapse_repeated_spans",
    "format_window_predictions",
    "fuse_scores",
    "min_max_normalize",
    "post_process_queries",
    "post_process_query",
    "post_process_query_all_rankings",
    "rank_windows",
    "hull_iou",
    "temporal_iou_matrix",
    "temporal_nms",
]

# Column of the sort key in the fused rows `[start, end, proposal, matching, fused]`, per ranking name.
RANKING_COLUMNS: dict[str, int] = {"fused": 4, "proposal": 2, "matching": 3}

ArrayLike = np.ndarray | torch.Tensor | Sequence


def _to_float64_array(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def _check_rows(rows: ArrayLike, num_columns: int, name: str = "rows") -> np.ndarray:
    """Float64 `(N, num_columns)` array, with finite values and `start <= end`; raises `ValueError` otherwise."""
    rows = _to_float64_array(rows)
    if rows.size == 0:
        return rows.reshape(0, num_columns)
    if rows.ndim != 2 or rows.shape[1] != num_columns:
        raise ValueError(f"`{name}` must have shape (N, {num_columns}), got {rows.shape}.")
    if not np.isfinite(rows).all():
        bad_row = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
        raise ValueError(
            f"`{name}` contains NaN or infinite values (first at row {bad_row}: {rows[bad_row].tolist()}). The "
            "official code ranks NaN scores in an order-dependent way; rgnet_hf rejects them instead."
        )
    if (rows[:, 1] < rows[:, 0]).any():
        bad_row = int(np.flatnonzero(rows[:, 1] < rows[:, 0])[0])
        raise ValueError(f"`{name}` has a span with end < start (row {bad_row}: {rows[bad_row, :2].tolist()}).")
    return rows


def min_max_normalize(scores: ArrayLike) -> np.ndarray:
    """
    Min-max normalisation `(x - min) / (max - min)` of a 1-d score list, as the official `normalize_score`; a list
    whose values are all equal (including a single value) is returned unchanged.

    Args:
        scores: shape `(N,)`, finite.

    Returns:
        `np.ndarray` of shape `(N,)`, float64.
    """
    scores = _to_float64_array(scores)
    if scores.ndim != 1:
        raise ValueError(f"`scores` must be 1-d, got shape {scores.shape}.")
    if scores.size == 0:
        return scores
    if not np.isfinite(scores).all():
        raise ValueError("`scores` contains NaN or infinite values.")
    low, high = scores.min(), scores.max()
    if low == high:
        return scores.copy()
    return (scores - low) / (high - low)


def collapse_repeated_spans(spans: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """
    Python-dict semantics of the official score dict keyed by `(start, end)`, vectorised.

    Args:
        spans: shape `(N, 2)`, `[start, end]` per row (already rounded: the key is the exact value).

    Returns:
        `(position_rows, value_rows)`, two int64 arrays of shape `(M,)` with `M` the number of distinct pairs, in
        order of first occurrence: `position_rows[j]` is the first row holding pair `j` (where the dict entry sits)
        and `value_rows[j]` is the last row holding it (whose scores the dict keeps).
    """
    spans = _to_float64_array(spans).reshape(-1, 2)
    num_rows = spans.shape[0]
    if num_rows == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    # Adding 0.0 maps -0.0 to 0.0, which a Python dict treats as the same key.
    starts, ends = spans[:, 0] + 0.0, spans[:, 1] + 0.0
    # lexsort is stable: equal pairs end up adjacent and in row order.
    order = np.lexsort((np.arange(num_rows), ends, starts))
    sorted_starts, sorted_ends = starts[order], ends[order]
    new_group = np.ones(num_rows, dtype=bool)
    new_group[1:] = (sorted_starts[1:] != sorted_starts[:-1]) | (sorted_ends[1:] != sorted_ends[:-1])
    group_first = np.flatnonzero(new_group)
    group_last = np.append(group_first[1:], num_rows) - 1
    first_rows, last_rows = order[group_first], order[group_last]
    by_first_occurrence = np.argsort(first_rows, kind="stable")
    return first_rows[by_first_occurrence], last_rows[by_first_occurrence]


def fuse_scores(rows: ArrayLike) -> np.ndarray:
    """
    Steps 1-2 of the module docstring: min-max fusion of the proposal and matching scores, then the collapse of
    repeated `(start, end)` pairs.

    Args:
        rows: shape `(N, 4)`, `[start_s, end_s, proposal, matching]`, concatenated over the query's kept windows in
            window-rank order.

    Returns:
        `np.ndarray` of shape `(M, 5)`, `[start_s, end_s, proposal, matching, fused]`, one row per distinct
        `(start, end)` pair, in order of first occurrence, float64.

    Raises:
        ValueError: on NaN or infinite values, spans with end < start, or a wrong shape.
    """
    rows = _check_rows(rows, 4)
    fused = min_max_normalize(rows[:, 2]) + min_max_normalize(rows[:, 3])
    fused_rows = np.concatenate([rows, fused[:, None]], axis=1)
    # The dict entry sits where its pair first occurred and holds the scores of the pair's last occurrence.
    _, value_rows = collapse_repeated_spans(rows[:, :2])
    return fused_rows[value_rows]


def hull_iou(spans_a: np.ndarray, spans_b: np.ndarray) -> np.ndarray:
    """
    Temporal IoU as the official NMS and metrics compute it, elementwise over broadcast `[start, end]` spans: the
    one implementation behind NMS, the metrics and the baselines.

    IoU = `max(0, min(ends) - max(starts)) / (max(ends) - min(starts))`, intersection over hull length. This equals
    the usual IoU whenever the spans overlap, and is 0 otherwise. When the hull length is 0 (both spans are the same
    single point) the IoU is 0 instead of 0/0: a zero-length span has no extent to overlap.

    Args:
        spans_a, spans_b (`np.ndarray` of shapes `(..., 2)` that broadcast): `[start, end]` in the last axis.

    Returns:
        `np.ndarray` of the broadcast shape without the last axis, in the floating dtype of the inputs (float32 spans
        give a float32 computation, as the official MAD evaluator's).
    """
    start_a, end_a = spans_a[..., 0], spans_a[..., 1]
    start_b, end_b = spans_b[..., 0], spans_b[..., 1]
    zero = np.result_type(spans_a, spans_b).type(0)
    intersection = np.maximum(zero, np.minimum(end_a, end_b) - np.maximum(start_a, start_b))
    hull = np.maximum(end_a, end_b) - np.minimum(start_a, start_b)
    return np.divide(intersection, hull, out=np.zeros_like(intersection), where=hull > 0)


def temporal_iou_matrix(spans_a: ArrayLike, spans_b: ArrayLike) -> np.ndarray:
    """
    Pairwise temporal IoU ([`hull_iou`]) of two sets of spans.

    Args:
        spans_a: shape `(N, 2)`; spans_b: shape `(M, 2)`.

    Returns:
        `np.ndarray` of shape `(N, M)`, float64.
    """
    spans_a = _to_float64_array(spans_a).reshape(-1, 2)
    spans_b = _to_float64_array(spans_b).reshape(-1, 2)
    return hull_iou(spans_a[:, None], spans_b[None])


def temporal_nms(spans: ArrayLike, nms_threshold: float = 0.5, max_keep: int | None = None) -> np.ndarray:
    """
    Greedy temporal NMS over spans that are already ranked best-first: a span is dropped when its IoU
    ([`temporal_iou_matrix`]) with an already kept span is strictly greater than `nms_threshold`.

    Args:
        spans: shape `(N, 2)`, ranked best-first.
        nms_threshold (`float`): IoU above which a span is suppressed.
        max_keep (`int`, *optional*): stop after this many kept spans.

    Returns:
        `np.ndarray` of int64 row indices into `spans`, shape `(K,)`, in rank order.
    """
    spans = _to_float64_array(spans).reshape(-1, 2)
    if not np.isfinite(spans).all():
        raise ValueError("`spans` contains NaN or infinite values.")
    if not 0.0 <= nms_threshold <= 1.0:
        raise ValueError(f"`nms_threshold` must be in [0, 1], got {nms_threshold}.")
    if max_keep is not None and max_keep < 1:
        raise ValueError(f"`max_keep` must be >= 1, got {max_keep}.")
    num_spans = spans.shape[0]
    limit = num_spans if max_keep is None else min(max_keep, num_spans)
    suppressed_by = temporal_iou_matrix(spans, spans) > nms_threshold
    available = np.ones(num_spans, dtype=bool)
    kept: list[int] = []
    # One iteration per kept span: take the best remaining span, then drop everything it suppresses.
    while len(kept) < limit and available.any():
        best = int(np.argmax(available))
        kept.append(best)
        available &= ~suppressed_by[best]
        available[best] = False
    return np.asarray(kept, dtype=np.int64)


def _check_post_processing_args(ranking: str, nms_threshold: float, max_before_nms: int, max_after_nms: int) -> None:
    if ranking not in RANKING_COLUMNS:
        raise ValueError(f"`ranking` must be one of {sorted(RANKING_COLUMNS)}, got {ranking!r}.")
    if not 0.0 <= nms_threshold <= 1.0:
        raise ValueError(f"`nms_threshold` must be in [0, 1], got {nms_threshold}.")
    for name, value in (("max_before_nms", max_before_nms), ("max_after_nms", max_after_nms)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")


def _rank_and_suppress(
    fused_rows: np.ndarray, ranking: str, nms_threshold: float, max_before_nms: int, max_after_nms: int
) -> np.ndarray:
    # Negating keeps equal keys equal, so the stable sort leaves ties in their current order (Python's
    # `sorted(..., reverse=True)` does the same).
    order = np.argsort(-fused_rows[:, RANKING_COLUMNS[ranking]], kind="stable")[:max_before_nms]
    ranked = fused_rows[order]
    return ranked[temporal_nms(ranked[:, :2], nms_threshold, max_after_nms)]


def post_process_query(
    rows: ArrayLike,
    ranking: str = "fused",
    nms_threshold: float = 0.5,
    max_before_nms: int = 200,
    max_after_nms: int = 100,
) -> np.ndarray:
    """
    The official post-processing of one query (module docstring, steps 1-4).

    Args:
        rows: shape `(N, 4)`, `[start_s, end_s, proposal, matching]`, concatenated over the query's kept windows in
            window-rank order, each window's rows as [`format_window_predictions`] returns them.
        ranking (`str`): sort key, `"fused"` (the headline ranking), `"proposal"` or `"matching"`.
        nms_threshold (`float`): NMS IoU threshold (config `nms_threshold`, 0.5).
        max_before_nms (`int`): rows kept before NMS (config `max_predictions_before_nms`, 200).
        max_after_nms (`int`): rows kept after NMS (config `max_predictions`, 100).

    Returns:
        `np.ndarray` of shape `(K, 5)`, `[start_s, end_s, proposal, matching, fused]`, best first, float64;
        `K <= max_after_nms`.

    Raises:
        ValueError: on NaN or infinite values, spans with end < start, a wrong shape or invalid options.
    """
    _check_post_processing_args(ranking, nms_threshold, max_before_nms, max_after_nms)
    return _rank_and_suppress(fuse_scores(rows), ranking, nms_threshold, max_before_nms, max_after_nms)


def post_process_query_all_rankings(
    rows: ArrayLike,
    rankings: Sequence[str] = ("fused", "proposal", "matching"),
    nms_threshold: float = 0.5,
    max_before_nms: int = 200,
    max_after_nms: int = 100,
) -> dict[str, np.ndarray]:
    """[`post_process_query`] for several rankings of one query, sharing the fusion step: `{ranking: (K, 5) array}`."""
    for ranking in rankings:
        _check_post_processing_args(ranking, nms_threshold, max_before_nms, max_after_nms)
    fused_rows = fuse_scores(rows)
    return {
        ranking: _rank_and_suppress(fused_rows, ranking, nms_threshold, max_before_nms, max_after_nms)
        for ranking in rankings
    }


def post_process_queries(
    rows_per_query: Sequence[ArrayLike],
    ranking: str = "fused",
    nms_threshold: float = 0.5,
    max_before_nms: int = 200,
    max_after_nms: int = 100,
) -> list[np.ndarray]:
    """
    [`post_process_query`] over many queries.

    Args:
        rows_per_query: one `(N_q, 4)` array (or nested list, or tensor) per query.

    Returns:
        One `(K_q, 5)` float64 array per query, in input order.

    Raises:
        ValueError: naming the offending query index, on bad rows.
    """
    _check_post_processing_args(ranking, nms_threshold, max_before_nms, max_after_nms)
    results = []
    for query_index, rows in enumerate(rows_per_query):
        try:
            fused_rows = fuse_scores(rows)
        except ValueError as error:
            raise ValueError(f"query {query_index}: {error}") from error
        results.append(_rank_and_suppress(fused_rows, ranking, nms_threshold, max_before_nms, max_after_nms))
    return results


def format_window_predictions(
    spans_seconds: ArrayLike,
    proposal_scores: ArrayLike,
    matching_scores: ArrayLike,
    decimals: int = 4,
) -> np.ndarray:
    """
    The per-window rows of the official inference: the moment rows of each window sorted by the unrounded proposal
    score (descending, ties in query order), then every value rounded to `decimals` decimals.

    Args:
        spans_seconds: shape `(B, N, 2)`, `[start_s, end_s]` per window and moment query.
        proposal_scores: shape `(B, N)`.
        matching_scores: shape `(B, N)`.
        decimals (`int`): rounding (4 in the official code).

    Returns:
        `np.ndarray` of shape `(B, N, 4)`, `[start_s, end_s, proposal, matching]`, float64. Reshape to `(B * N, 4)`
        (with the windows in window-rank order) to get the input of [`post_process_query`].
    """
    spans_seconds = _to_float64_array(spans_seconds)
    proposal_scores = _to_float64_array(proposal_scores)
    matching_scores = _to_float64_array(matching_scores)
    if spans_seconds.ndim != 3 or spans_seconds.shape[-1] != 2:
        raise ValueError(f"`spans_seconds` must have shape (B, N, 2), got {spans_seconds.shape}.")
    expected = spans_seconds.shape[:2]
    if proposal_scores.shape != expected or matching_scores.shape != expected:
        raise ValueError(
            f"`proposal_scores` {proposal_scores.shape} and `matching_scores` {matching_scores.shape} must have the "
            f"shape {expected} of `spans_seconds`' first two dimensions."
        )
    rows = np.concatenate([spans_seconds, proposal_scores[..., None], matching_scores[..., None]], axis=-1)
    order = np.argsort(-proposal_scores, axis=1, kind="stable")
    return np.round(np.take_along_axis(rows, order[..., None], axis=1), decimals)


class WindowRanking(NamedTuple):
    """Window retrieval of a batch of queries (see [`rank_windows`])."""

    order: torch.LongTensor
    """`(Q, W)`: window indices sorted by window score, best first; invalid windows last."""
    scores: torch.Tensor
    """`(Q, W)`: `sigmoid(window_logits)`, in window order (0 for invalid windows)."""
    num_kept: torch.LongTensor
    """`(Q,)`: windows kept per query, `min(top_k, valid windows)`; the kept windows are `order[q, :num_kept[q]]`."""


def rank_windows(window_logits: torch.Tensor, top_k: int, window_mask: torch.Tensor | None = None) -> WindowRanking:
    """
    Window retrieval: score each window with `sigmoid(logit)`, sort descending (stable, so ties keep window order),
    and keep the top `top_k` (30 for MAD, 20 for Ego4D, fewer when the video has fewer windows). The full order is
    the window ranking that window recall ([`rgnet_hf.evaluation.metrics.window_recall`]) scores.

    Args:
        window_logits (`torch.Tensor` of shape `(Q, W)` or `(W,)`): the window-retrieval logits.
        top_k (`int`): windows kept per query.
        window_mask (`torch.Tensor` of shape `(Q, W)`, *optional*): True (or 1) for real windows, when queries of
            videos with different window counts are padded to one `W`.

    Returns:
        [`WindowRanking`]; for a 1-d input, every field loses its query dimension.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"`top_k` must be an int >= 1, got {top_k!r}.")
    squeeze = window_logits.ndim == 1
    logits = window_logits.reshape(1, -1) if squeeze else window_logits
    if logits.ndim != 2:
        raise ValueError(f"`window_logits` must have shape (Q, W) or (W,), got {tuple(window_logits.shape)}.")
    if window_mask is None:
        valid = torch.ones_like(logits, dtype=torch.bool)
    else:
        valid = window_mask.reshape(logits.shape).to(device=logits.device, dtype=torch.bool)
    scores = torch.sigmoid(logits)
    if torch.isnan(scores[valid]).any():
        raise ValueError("`window_logits` contains NaN values.")
    scores = scores.masked_fill(~valid, 0.0)
    # Invalid windows get a key below every sigmoid value, so they sort last.
    sort_key = scores.masked_fill(~valid, -1.0)
    order = torch.sort(sort_key, dim=1, descending=True, stable=True).indices
    num_kept = valid.sum(dim=1).clamp(max=top_k)
    if squeeze:
        return WindowRanking(order[0], scores[0], num_kept[0])
    return WindowRanking(order, scores, num_kept)
