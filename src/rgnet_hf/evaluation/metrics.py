"""Temporal-grounding metrics of RGNet: R@K at temporal-IoU thresholds, top-1 mIoU and window recall.

The rules are those of the official MAD and Ego4D-NLQ evaluation scripts, which RGNet uses for both benchmarks:

- **R@K, IoU=t**: a query is a hit when *one of its first K predictions* has IoU with the ground truth **strictly
  greater** than `t`; the recall is the mean over the evaluated queries. The denominator is the number of evaluated
  (predicted) queries: the MAD script asserts that the predicted query ids equal the ground-truth ids, and the Ego4D
  script divides by the submitted records (ground-truth queries without a prediction are not counted). Here
  predictions and references are paired lists, so the denominator is their common length. A query with fewer than K
  predictions is scored on what it has; a query with no prediction is a miss.
- **mIoU**: the mean over queries of the IoU of the top-1 prediction (0 for a query without predictions).
- **Window recall at K**: a query is a hit when one of its K best-ranked windows overlaps its moment (see
  `rgnet_hf.windowing.ground_truth_windows`).

IoU is intersection / hull length, `max(0, min(ends) - max(starts)) / (max(ends) - min(starts))`, as both official
evaluators compute it (equal to the usual IoU whenever the spans overlap). When the hull length is 0, i.e. a
zero-length ground truth and a prediction on exactly the same point, the official code computes 0/0 = NaN, which never
counts as a hit but turns the Ego4D mIoU into NaN. Here that IoU is defined as **0**: a zero-length moment has no
extent to overlap. Recall is then identical to the official evaluators' and mIoU stays finite; no output is ever NaN.

**Arithmetic.** The official MAD evaluator computes IoUs and compares them with the thresholds in float32 torch
tensors; the Ego4D evaluator uses numpy float64. An IoU that sits at a threshold (common when times are rounded to 4
decimals) can count differently in the two precisions, so each preset fixes its own: `iou_dtype="float32"` for MAD
(spans, IoU and thresholds all rounded to float32, each operation in float32, exactly as the official torch code),
`"float64"` for Ego4D. Every function takes `iou_dtype` to choose the other.

Values are fractions in [0, 1]; multiply by 100 for the percentages of the paper. Result keys are `"R@{K} IoU={t}"`
(e.g. `"R@1 IoU=0.3"`), `"mIoU"`, and `"window R@{K}"`.

The IoU itself is [`rgnet_hf.post_processing.hull_iou`], shared with NMS and the baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..post_processing import hull_iou

__all__ = [
    "EGO4D_PRESET",
    "EVALUATION_PRESETS",
    "MAD_PRESET",
    "EvaluationPreset",
    "IOU_DTYPES",
    "compute_grounding_metrics",
    "mean_iou_top1",
    "per_query_hits",
    "recall_at_k",
    "recall_key",
    "temporal_iou",
    "top1_iou",
    "window_recall",
    "window_recall_key",
]


@dataclass(frozen=True)
class EvaluationPreset:
    """The K values and IoU thresholds that RGNet reports for a dataset."""

    name: str
    ks: tuple[int, ...]
    iou_thresholds: tuple[float, ...]
    window_ks: tuple[int, ...]
    iou_dtype: str = "float64"  # the precision of the official evaluator's IoU and threshold comparison


MAD_PRESET = EvaluationPreset(
    name="mad",
    ks=(1, 5, 10, 50, 100),
    iou_thresholds=(0.1, 0.3, 0.5),
    window_ks=(1, 5, 10, 30, 50, 100, 200),
    iou_dtype="float32",
)
EGO4D_PRESET = EvaluationPreset(
    name="ego4d", ks=(1, 5, 10, 50, 100), iou_thresholds=(0.3, 0.5), window_ks=(1, 5, 10, 20, 30, 50)
)
EVALUATION_PRESETS: dict[str, EvaluationPreset] = {"mad": MAD_PRESET, "ego4d": EGO4D_PRESET}


def recall_key(k: int, iou_threshold: float) -> str:
    """Result key of R@K at an IoU threshold, e.g. `recall_key(1, 0.3) == "R@1 IoU=0.3"`."""
    return f"R@{k} IoU={iou_threshold:g}"


def window_recall_key(k: int) -> str:
    """Result key of window recall at K, e.g. `"window R@5"`."""
    return f"window R@{k}"


def _check_ks(ks: Sequence[int], name: str = "ks") -> tuple[int, ...]:
    ks = tuple(ks)
    if len(ks) == 0:
        raise ValueError(f"`{name}` must contain at least one K.")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"`{name}` must contain ints, got {k!r} ({type(k).__name__}).")
        if k <= 0:
            raise ValueError(f"`{name}` must contain K >= 1, got K={k}.")
    if len(set(ks)) != len(ks):
        raise ValueError(f"`{name}` contains repeated values: {ks}.")
    return tuple(int(k) for k in ks)


def _check_thresholds(iou_thresholds: Sequence[float]) -> tuple[float, ...]:
    thresholds = tuple(float(t) for t in iou_thresholds)
    if len(thresholds) == 0:
        raise ValueError("`iou_thresholds` must contain at least one threshold.")
    for t in thresholds:
        if not 0.0 <= t <= 1.0:  # also rejects NaN
            raise ValueError(f"`iou_thresholds` must be in [0, 1], got {t}.")
    if len({f"{t:g}" for t in thresholds}) != len(thresholds):
        raise ValueError(f"`iou_thresholds` contains repeated values: {thresholds}.")
    return thresholds


IOU_DTYPES = {"float32": np.float32, "float64": np.float64}


def _check_iou_dtype(iou_dtype: str) -> type:
    if iou_dtype not in IOU_DTYPES:
        raise ValueError(f"`iou_dtype` must be 'float32' or 'float64', got {iou_dtype!r}.")
    return IOU_DTYPES[iou_dtype]


def _check_span_array(spans, name: str) -> np.ndarray:
    """`(N, >=2)` array-like -> finite float64 `(N, 2)` `[start, end]` with start <= end; extra columns are dropped."""
    spans = np.asarray(spans, dtype=np.float64)
    if spans.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if spans.ndim != 2 or spans.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, 2) (or more columns, which are ignored), got {spans.shape}.")
    spans = spans[:, :2]
    if not np.isfinite(spans).all():
        raise ValueError(f"{name} contains NaN or infinite times.")
    if (spans[:, 1] < spans[:, 0]).any():
        row = int(np.flatnonzero(spans[:, 1] < spans[:, 0])[0])
        raise ValueError(f"{name} has a span with end < start at row {row}: {spans[row].tolist()}.")
    return spans


def _check_references(references) -> np.ndarray:
    references = np.asarray(references, dtype=np.float64)
    if references.size == 0:
        raise ValueError("`references` is empty: there is no query to evaluate.")
    if references.ndim != 2 or references.shape[1] != 2:
        raise ValueError(f"`references` must have shape (Q, 2), one [start, end] per query, got {references.shape}.")
    return _check_span_array(references, "`references`")


def _check_predictions(predictions, num_queries: int) -> list[np.ndarray]:
    if len(predictions) != num_queries:
        raise ValueError(
            f"`predictions` and `references` must have the same length (one entry per query), got "
            f"{len(predictions)} and {num_queries}."
        )
    return [_check_span_array(spans, f"`predictions[{q}]`") for q, spans in enumerate(predictions)]


def temporal_iou(predicted_spans, reference_span, iou_dtype: str = "float64") -> np.ndarray:
    """
    Temporal IoU (intersection / hull length, see the module docstring) of several spans with one reference span.

    Args:
        predicted_spans: shape `(N, 2)` (more columns are ignored), `[start, end]`.
        reference_span: shape `(2,)`.
        iou_dtype (`str`): `"float64"` or `"float32"` (the times are rounded to it and every step computed in it).

    Returns:
        `np.ndarray` of shape `(N,)`, in [0, 1] and of `iou_dtype`; 0 when the hull length is 0.
    """
    spans = _check_span_array(predicted_spans, "`predicted_spans`")
    reference = _check_span_array(np.asarray(reference_span, dtype=np.float64).reshape(1, -1), "`reference_span`")
    return _iou_with_reference(spans, reference[0], _check_iou_dtype(iou_dtype))


def _iou_with_reference(spans: np.ndarray, reference: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    # The hull length `end - start` of times up to half the dtype's largest value stays finite; larger times would
    # give an infinite hull or NaN IoU (float32 overflows past 1.7e38 s), so they are refused instead.
    limit = float(np.finfo(dtype).max) / 2
    largest = max(float(np.abs(spans[:, :2]).max(initial=0.0)), float(np.abs(reference[:2]).max()))
    if largest > limit:
        raise ValueError(
            f"a time of {largest:g} s is too large for the {np.dtype(dtype).name} IoU (|time| must be <= "
            f"{limit:.3g} s); check the times' unit, or use iou_dtype='float64'"
        )
    return hull_iou(spans[:, :2].astype(dtype), reference[:2].astype(dtype))


def _ranked_iou(predictions: list[np.ndarray], references: np.ndarray, depth: int, dtype: type) -> np.ndarray:
    """`(Q, depth)` IoU of each query's first `depth` predictions; missing ranks are -1 (never a hit)."""
    ious = np.full((len(predictions), depth), -1.0, dtype=dtype)
    for q, spans in enumerate(predictions):
        top = spans[:depth]
        ious[q, : len(top)] = _iou_with_reference(top, references[q], dtype)
    return ious


def per_query_hits(
    predictions: Sequence,
    references,
    ks: Sequence[int],
    iou_thresholds: Sequence[float],
    iou_dtype: str = "float64",
) -> np.ndarray:
    """
    Hit matrix of R@K: `hits[q, i, j]` is True when one of the first `ks[i]` predictions of query `q` has IoU strictly
    greater than `iou_thresholds[j]`.

    Args:
        predictions: one ranked, best-first list of spans per query, shape `(N_q, 2)` (or `(N_q, >2)`: only the
            first two columns are read, like the official evaluators); `N_q` may be 0.
        references: shape `(Q, 2)`, the ground-truth `[start, end]` per query (same time unit).
        ks: the K values (ints >= 1); iou_thresholds: thresholds in [0, 1].
        iou_dtype (`str`): precision of the IoU and of the thresholds it is compared with (module docstring).

    Returns:
        `np.ndarray` of bool, shape `(Q, len(ks), len(iou_thresholds))`.
    """
    ks = _check_ks(ks)
    thresholds = _check_thresholds(iou_thresholds)
    dtype = _check_iou_dtype(iou_dtype)
    references = _check_references(references)
    predictions = _check_predictions(predictions, len(references))
    # Best IoU among the first r predictions, for every rank r.
    best_iou_by_rank = np.maximum.accumulate(_ranked_iou(predictions, references, max(ks), dtype), axis=1)
    best_iou_at_k = best_iou_by_rank[:, np.asarray(ks) - 1]
    return best_iou_at_k[:, :, None] > np.asarray(thresholds, dtype=dtype)[None, None, :]


def recall_at_k(
    predictions: Sequence,
    references,
    ks: Sequence[int] = MAD_PRESET.ks,
    iou_thresholds: Sequence[float] = MAD_PRESET.iou_thresholds,
    iou_dtype: str = "float64",
) -> dict[str, float]:
    """
    R@K at IoU thresholds with the official strict rule (module docstring).

    Args:
        predictions: one ranked list of spans per query (see [`per_query_hits`]).
        references: shape `(Q, 2)`, with `Q >= 1`.
        ks, iou_thresholds: defaults are the MAD preset's values.
        iou_dtype (`str`): `"float64"` (default) or `"float32"` (the official MAD arithmetic).

    Returns:
        `{"R@{K} IoU={t}": recall}` for every K and threshold, fractions in [0, 1].

    Raises:
        ValueError: on mismatched lengths, no query, NaN/infinite times, end < start, K <= 0, or a threshold
            outside [0, 1].
    """
    hits = per_query_hits(predictions, references, ks, iou_thresholds, iou_dtype)
    recall = hits.mean(axis=0)
    return {
        recall_key(k, t): float(recall[i, j])
        for i, k in enumerate(_check_ks(ks))
        for j, t in enumerate(_check_thresholds(iou_thresholds))
    }


def top1_iou(predictions: Sequence, references, iou_dtype: str = "float64") -> np.ndarray:
    """IoU of each query's top-1 prediction, shape `(Q,)`; 0 for a query without predictions."""
    references = _check_references(references)
    predictions = _check_predictions(predictions, len(references))
    return np.maximum(_ranked_iou(predictions, references, 1, _check_iou_dtype(iou_dtype))[:, 0], 0.0)


def mean_iou_top1(predictions: Sequence, references, iou_dtype: str = "float64") -> float:
    """mIoU: the mean over queries of the top-1 prediction's IoU (the Ego4D evaluator's mIoU). Needs `Q >= 1`."""
    return float(np.mean(top1_iou(predictions, references, iou_dtype), dtype=np.float64))


def window_recall(
    window_rankings: Sequence[Sequence[int]],
    ground_truth_windows: Sequence[Sequence[int]],
    ks: Sequence[int] = MAD_PRESET.window_ks,
) -> dict[str, float]:
    """
    Window recall: a query is a hit at K when one of its first K ranked windows is one of its ground-truth windows.

    Args:
        window_rankings: per query, window indices best first (e.g. `rank_windows(...).order`), length `W_q`.
        ground_truth_windows: per query, the windows that overlap its moment
            (`rgnet_hf.windowing.ground_truth_windows`); an empty set is never a hit.
        ks: K values; defaults are the MAD preset (`EGO4D_PRESET.window_ks` for Ego4D).

    Returns:
        `{"window R@{K}": recall}`, fractions in [0, 1].
    """
    ks = _check_ks(ks)
    if len(window_rankings) != len(ground_truth_windows):
        raise ValueError(
            f"`window_rankings` and `ground_truth_windows` must have the same length, got {len(window_rankings)} "
            f"and {len(ground_truth_windows)}."
        )
    if len(window_rankings) == 0:
        raise ValueError("Cannot compute window recall over zero queries.")
    depth = max(ks)
    rankings = [np.asarray(ranking, dtype=np.int64).reshape(-1) for ranking in window_rankings]
    truths = [np.asarray(truth, dtype=np.int64).reshape(-1) for truth in ground_truth_windows]
    for name, lists in (("window_rankings", rankings), ("ground_truth_windows", truths)):
        for q, indices in enumerate(lists):
            if (indices < 0).any():
                raise ValueError(f"`{name}[{q}]` contains a negative window index: {indices.tolist()}.")
    rankings = [ranking[:depth] for ranking in rankings]
    num_columns = 1 + max((int(indices.max()) for indices in rankings + truths if indices.size), default=0)
    # is_truth[q, w]: window w overlaps query q's moment; the extra last column stands for "no window at this rank".
    is_truth = np.zeros((len(truths), num_columns + 1), dtype=bool)
    padded_rankings = np.full((len(rankings), depth), num_columns, dtype=np.int64)
    for q, (ranking, truth) in enumerate(zip(rankings, truths, strict=True)):
        is_truth[q, truth] = True
        padded_rankings[q, : len(ranking)] = ranking
    hit_by_rank = np.logical_or.accumulate(np.take_along_axis(is_truth, padded_rankings, axis=1), axis=1)
    recall = hit_by_rank[:, np.asarray(ks) - 1].mean(axis=0)
    return {window_recall_key(k): float(r) for k, r in zip(ks, recall, strict=True)}


def compute_grounding_metrics(
    predictions: Sequence,
    references,
    preset: str | EvaluationPreset = "mad",
    ks: Sequence[int] | None = None,
    iou_thresholds: Sequence[float] | None = None,
    iou_dtype: str | None = None,
) -> dict[str, float]:
    """
    R@K at IoU thresholds and top-1 mIoU with a dataset preset (`"mad"` or `"ego4d"`); `ks`, `iou_thresholds` and
    `iou_dtype` override the preset's values (MAD: float32 arithmetic as its official evaluator, Ego4D: float64).

    Returns:
        `{"R@{K} IoU={t}": recall, ..., "mIoU": miou}`, fractions in [0, 1].
    """
    if isinstance(preset, str):
        if preset not in EVALUATION_PRESETS:
            raise ValueError(f"Unknown evaluation preset {preset!r}; choose one of {sorted(EVALUATION_PRESETS)}.")
        preset = EVALUATION_PRESETS[preset]
    ks = preset.ks if ks is None else ks
    iou_thresholds = preset.iou_thresholds if iou_thresholds is None else iou_thresholds
    iou_dtype = preset.iou_dtype if iou_dtype is None else iou_dtype
    results = recall_at_k(predictions, references, ks, iou_thresholds, iou_dtype)
    results["mIoU"] = mean_iou_top1(predictions, references, iou_dtype)
    return results
