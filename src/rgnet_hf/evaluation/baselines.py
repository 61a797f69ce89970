"""Reference baselines for long-video grounding from pre-extracted features.

- [`zero_shot_cosine_baseline`]: the "zero-shot CLIP" baseline of MAD. Sliding-window proposals of several lengths
  cover the whole video; a proposal's score is the mean cosine similarity between the query's sentence feature and
  the L2-normalised frame features inside it; proposals are ranked, suppressed with greedy temporal NMS and cut to the
  top K. Scores come from cumulative sums of the per-frame cosines (one matrix product per video), so there is no
  Python loop over proposals.
- [`evaluate_zero_shot`]: that baseline over every query of a dataset split of `rgnet_hf.data` (e.g. `load_mad`),
  scored with `rgnet_hf.evaluation.metrics.compute_grounding_metrics` (R@K at IoU thresholds, strict `IoU > t`, and
  mIoU).

The MAD paper's zero-shot protocol ranks its proposals against the `ext_timestamps`
with NMS 0.3; CONE/RGNet evaluate on `timestamps` with NMS 0.5. Both are available (`reference=`, `nms_threshold=`);
the defaults follow RGNet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..post_processing import hull_iou
from .metrics import EvaluationPreset, compute_grounding_metrics

__all__ = [
    "evaluate_zero_shot",
    "greedy_temporal_nms",
    "sliding_window_proposals",
    "zero_shot_cosine_baseline",
]

DEFAULT_WINDOW_LENGTHS_S = (2.0, 4.0, 8.0, 16.0)


def sliding_window_proposals(
    num_frames: int,
    window_lengths: Sequence[int],
    stride_fraction: float = 0.25,
) -> np.ndarray:
    """Frame-index proposals `[start, end)` covering a video of `num_frames` features.

    For each length `w` (frames), starts run from 0 every `max(1, round(w * stride_fraction))` frames; a last window
    ending exactly at `num_frames` is added when the grid stops short of it. A length longer than the video gives the
    single proposal `[0, num_frames)`. Duplicates are removed.

    Returns:
        `np.ndarray (P, 2)` int64, ordered by length (as given) then start.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if not 0 < stride_fraction <= 1:
        raise ValueError(f"stride_fraction must be in (0, 1], got {stride_fraction}")
    lengths = list(window_lengths)
    if not lengths or any(isinstance(w, bool) or int(w) != w or w < 1 for w in lengths):
        raise ValueError(f"window lengths must be a non-empty list of ints >= 1 (frames), got {window_lengths!r}")
    blocks, seen = [], set()
    for length in (min(int(w), num_frames) for w in lengths):
        if length in seen:
            continue
        seen.add(length)
        stride = max(1, int(round(length * stride_fraction)))
        starts = np.arange(0, num_frames - length + 1, stride, dtype=np.int64)
        if starts[-1] + length < num_frames:
            starts = np.append(starts, num_frames - length)
        blocks.append(np.stack([starts, starts + length], axis=1))
    return np.concatenate(blocks)


def greedy_temporal_nms(
    spans: np.ndarray, scores: np.ndarray, nms_threshold: float = 0.5, max_keep: int | None = None
) -> np.ndarray:
    """Greedy temporal NMS in memory linear in the number of spans (for the tens of thousands of proposals of a
    long video; `rgnet_hf.post_processing.temporal_nms` builds the full IoU matrix).

    Spans are ranked by score (descending; ties keep the input order); a span is dropped when its IoU
    (intersection / hull length, 0 when the hull is empty, as the official NMS and metrics compute it) with an
    already kept span is strictly greater than `nms_threshold`. Same result as `temporal_nms` on the ranked spans.

    Args:
        spans: `(N, 2)` `[start, end]`.
        scores: `(N,)`.
        nms_threshold: IoU above which a span is suppressed, in [0, 1].
        max_keep: stop after this many kept spans (None: no limit).

    Returns:
        `np.ndarray (K,)` int64 indices into `spans`, best first.
    """
    spans = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != spans.shape[0]:
        raise ValueError(f"spans and scores must have the same length, got {spans.shape[0]} and {scores.shape[0]}")
    if not (np.isfinite(spans).all() and np.isfinite(scores).all()):
        raise ValueError("spans and scores must be finite")
    if not 0.0 <= nms_threshold <= 1.0:
        raise ValueError(f"nms_threshold must be in [0, 1], got {nms_threshold}")
    if max_keep is not None and max_keep < 1:
        raise ValueError(f"max_keep must be >= 1, got {max_keep}")
    order = np.argsort(-scores, kind="stable")
    ranked = spans[order]
    alive = np.ones(order.size, dtype=bool)
    limit = order.size if max_keep is None else min(max_keep, order.size)
    kept: list[int] = []
    position = 0
    while len(kept) < limit:
        remaining = np.flatnonzero(alive[position:])
        if remaining.size == 0:
            break
        best = position + int(remaining[0])
        kept.append(best)
        alive[best] = False
        position = best + 1
        alive &= ~(hull_iou(ranked, ranked[best]) > nms_threshold)
    return order[np.asarray(kept, dtype=np.int64)]


def _window_frames(
    window_lengths_s: Sequence[float] | None, window_lengths: Sequence[int] | None, seconds_per_feature: float
) -> list[int]:
    if window_lengths is not None and window_lengths_s is not None:
        raise ValueError("give window_lengths (frames) or window_lengths_s (seconds), not both")
    if window_lengths is not None:
        return list(window_lengths)
    seconds = DEFAULT_WINDOW_LENGTHS_S if window_lengths_s is None else tuple(window_lengths_s)
    if not seconds or any(not math.isfinite(s) or s <= 0 for s in seconds):
        raise ValueError(f"window_lengths_s must be positive seconds, got {window_lengths_s!r}")
    return [max(1, int(round(s / seconds_per_feature))) for s in seconds]


def zero_shot_cosine_baseline(
    video_features: np.ndarray,
    sentence_features: np.ndarray,
    seconds_per_feature: float,
    *,
    window_lengths_s: Sequence[float] | None = None,
    window_lengths: Sequence[int] | None = None,
    stride_fraction: float = 0.25,
    top_k: int = 100,
    nms_threshold: float = 0.5,
    query_chunk_size: int = 256,
) -> list[np.ndarray]:
    """Ranks sliding-window proposals of a whole video for each query by the mean cosine between the query's sentence
    feature and the proposal's frames.

    Args:
        video_features: `(T, D)` raw frame features of one video (normalised here, row by row).
        sentence_features: `(Q, D)` (or `(D,)`) sentence features of the queries (normalised here).
        seconds_per_feature: seconds between two frame features (0.2 for MAD's 5 fps).
        window_lengths_s: proposal lengths in seconds (default 2, 4, 8, 16 s), rounded to whole frames.
        window_lengths: proposal lengths in frames (instead of `window_lengths_s`).
        stride_fraction: proposals of length `w` start every `max(1, round(w * stride_fraction))` frames.
        top_k: moments kept per query after NMS.
        nms_threshold: greedy temporal NMS drops a proposal whose IoU with a better one is > this (0.3 in the MAD
            paper's zero-shot evaluation, 0.5 in RGNet's).
        query_chunk_size: queries scored together (bounds the `(T, chunk)` cumulative-sum buffer).

    Returns:
        one `np.ndarray (K, 3)` float64 per query, rows `[start_s, end_s, score]`, best first, `K <= top_k`.
        A proposal `[a, b)` of frames is `[a * seconds_per_feature, b * seconds_per_feature]`.
    """
    video = np.asarray(video_features, dtype=np.float32)
    sentences = np.asarray(sentence_features, dtype=np.float32)
    if sentences.ndim == 1:
        sentences = sentences[None]
    if video.ndim != 2 or video.shape[0] < 1:
        raise ValueError(f"video_features must have shape (T, D) with T >= 1, got {video.shape}")
    if sentences.ndim != 2 or sentences.shape[1] != video.shape[1]:
        raise ValueError(
            f"sentence_features must have shape (Q, {video.shape[1]}) (the frames' feature size), got {sentences.shape}"
        )
    if not (np.isfinite(video).all() and np.isfinite(sentences).all()):
        raise ValueError("video_features and sentence_features must be finite")
    if not seconds_per_feature > 0:
        raise ValueError(f"seconds_per_feature must be > 0, got {seconds_per_feature}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    if query_chunk_size < 1:
        raise ValueError(f"query_chunk_size must be >= 1, got {query_chunk_size}")

    proposals = sliding_window_proposals(
        video.shape[0], _window_frames(window_lengths_s, window_lengths, seconds_per_feature), stride_fraction
    )
    proposal_seconds = proposals.astype(np.float64) * seconds_per_feature
    lengths = (proposals[:, 1] - proposals[:, 0]).astype(np.float64)
    frames = video / np.maximum(np.linalg.norm(video, axis=1, keepdims=True), 1e-12)
    sentences = sentences / np.maximum(np.linalg.norm(sentences, axis=1, keepdims=True), 1e-12)

    results: list[np.ndarray] = []
    for first in range(0, sentences.shape[0], query_chunk_size):
        cosine = frames @ sentences[first : first + query_chunk_size].T  # (T, q)
        cumulative = np.zeros((cosine.shape[0] + 1, cosine.shape[1]), dtype=np.float64)
        np.cumsum(cosine, axis=0, dtype=np.float64, out=cumulative[1:])
        scores = (cumulative[proposals[:, 1]] - cumulative[proposals[:, 0]]) / lengths[:, None]  # (P, q)
        for column in range(scores.shape[1]):
            keep = greedy_temporal_nms(proposal_seconds, scores[:, column], nms_threshold, top_k)
            results.append(np.concatenate([proposal_seconds[keep], scores[keep, column, None]], axis=1))
    return results


def evaluate_zero_shot(
    split: Any,
    preset: str | EvaluationPreset = "mad",
    *,
    reference: str = "timestamps",
    seconds_per_feature: float | None = None,
    return_predictions: bool = False,
    **baseline_kwargs: Any,
) -> dict[str, Any]:
    """Runs [`zero_shot_cosine_baseline`] on every query of a dataset split and scores it.

    Args:
        split: a split of a `rgnet_hf.data` loader with features attached and sentence features (e.g.
            `load_mad(..., sentence_features=...)["test"]`), or an `rgnet_hf.data.EvaluationVideoDataset`.
        preset: evaluation preset of `compute_grounding_metrics` (`"mad"`: R@{1,5,10,50,100} at IoU {0.1,0.3,0.5}).
        reference: the ground truth, `"timestamps"` (CONE/RGNet) or `"ext_timestamps"` (the MAD paper's baselines).
        seconds_per_feature: default: the one recorded with the split's features.
        return_predictions: also return `"predictions"`: `{query_id: (K, 3) array}`.
        baseline_kwargs: passed to [`zero_shot_cosine_baseline`] (`window_lengths_s`, `stride_fraction`, `top_k`,
            `nms_threshold`, ...).

    Returns:
        the metrics (`"R@1 IoU=0.3"`, ..., `"mIoU"`), fractions in [0, 1], plus `"num_queries"` and `"num_videos"`
        (and `"predictions"` when asked).
    """
    from ..data import EvaluationVideoDataset

    if reference not in ("timestamps", "ext_timestamps"):
        raise ValueError(f"reference must be 'timestamps' or 'ext_timestamps', got {reference!r}")
    videos = split if isinstance(split, EvaluationVideoDataset) else EvaluationVideoDataset(split)
    if seconds_per_feature is None:
        seconds_per_feature = videos.sources.seconds_per_feature
    if not seconds_per_feature:
        raise ValueError("seconds_per_feature is unknown: pass it")
    predictions, references, query_ids = [], [], []
    for video in videos:
        if video["sentence_features"] is None:
            raise ValueError(
                f"video {video['video_id']!r} has queries without sentence features: load the split with sentence "
                "features (e.g. load_mad(..., sentence_features=...))"
            )
        if reference == "timestamps":
            truth = video["timestamps"]
        else:
            truth = [metadata.get("ext_timestamps") for metadata in video["query_metadata"]]
            truth = None if any(t is None for t in truth) else np.asarray(truth, dtype=np.float64)
        if truth is None:
            raise ValueError(f"video {video['video_id']!r} has queries without {reference}: cannot evaluate")
        predictions += zero_shot_cosine_baseline(
            video["video_features"], video["sentence_features"], seconds_per_feature, **baseline_kwargs
        )
        references.append(np.asarray(truth, dtype=np.float64).reshape(-1, 2))
        query_ids += video["query_ids"]
    if not predictions:
        raise ValueError("the split has no query to evaluate")
    metrics: dict[str, Any] = compute_grounding_metrics(
        [p[:, :2] for p in predictions], np.concatenate(references), preset
    )
    metrics["num_queries"] = len(predictions)
    metrics["num_videos"] = len(videos)
    if return_predictions:
        metrics["predictions"] = dict(zip(query_ids, predictions, strict=True))
    return metrics
