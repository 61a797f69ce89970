"""Training samples as the official recipes build them (the rules: docs/prepare_data.md), reproducibly.

For one query on a video of `T` features (windows of `L` frames, stride `S`):

1. `s = start / seconds_per_feature`, `e = end / seconds_per_feature`, kept fractional, clamped to `[0, T]`
   (the official loader clamps to `<= T` only; the lower clamp keeps a rare negative start from selecting window -1),
   swapped if reversed.
2. Candidate windows: `floor(s / S) ... ceil(e / S)` inclusive.
3. The positive window is drawn among the candidates with probability proportional to the standard-normal pdf of
   `index - mean(candidates)` (central windows favoured).
4. With `ws = (index - 1) * S` (not clamped) and the window's first frame `vs` and valid length `n`, the span is
   `[max(ws, s) - vs, min(ws + L, e) - vs]` (clipped to the window), normalised by `n` and given as (centre, width).
5. Saliency: positive frames uniform in `range(floor(s'), ceil(e'))` (the span in window frames); negative frames
   uniform among the other frames of the window.
6. Negative window (only when asked): uniform among the windows that are not candidates, cut by the same grid.

Randomness comes from `numpy.random.default_rng([seed, epoch, index])`, so a sample depends only on
(seed, epoch, index): any number of DataLoader workers or distributed processes give the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import torch

from ..windowing import moment_windows, window_span
from ..windowing import num_windows as count_windows
from ..windowing import resolve_window_stride as resolve_stride
from .feature_stores import FeatureSources, l2_normalize
from .loaders import get_feature_sources

__all__ = [
    "RGNetTrainingDataset",
    "TrainingWindow",
    "positive_window_probabilities",
    "sample_training_window",
]


@dataclass(frozen=True)
class TrainingWindow:
    """Where one training sample sits in its video (frames are feature indices).

    Attributes:
        window_index, window_start, window_end: the positive window, frames `[window_start, window_end)`.
        candidate_windows: the windows overlapping the moment (the positive is one of them).
        span: (centre, width) of the moment clipped to the window, normalised by its valid length.
        span_frames: [start, end] of the clipped moment in window frames (fractional).
        saliency_positive_frames, saliency_negative_frames: `(P,)` int64 frame indices inside the window.
        saliency_fallback: True when the window has no frame outside the moment (the moment covers it); the negative
            frames are then the positive ones, a pair whose hinge loss is constant.
        negative_window_index, negative_window_start, negative_window_end: the negative window (None unless asked).
    """

    window_index: int
    window_start: int
    window_end: int
    candidate_windows: tuple[int, ...]
    span: tuple[float, float]
    span_frames: tuple[float, float]
    saliency_positive_frames: np.ndarray
    saliency_negative_frames: np.ndarray
    saliency_fallback: bool = False
    negative_window_index: int | None = None
    negative_window_start: int | None = None
    negative_window_end: int | None = None


def positive_window_probabilities(candidate_windows: Sequence[int]) -> np.ndarray:
    """Official weights of the candidate windows: standard-normal pdf of `index - mean(indices)`, normalised.

    Returns:
        `np.ndarray` of shape `(len(candidate_windows),)`, summing to 1.
    """
    indices = np.asarray(candidate_windows, dtype=np.float64)
    offsets = indices - indices.mean()
    weights = np.exp(-0.5 * offsets**2) / math.sqrt(2.0 * math.pi)
    return weights / weights.sum()


def sample_training_window(
    num_frames: int,
    timestamps: Sequence[float],
    *,
    seconds_per_feature: float,
    window_length: int,
    window_stride: int | None = None,
    rng: np.random.Generator,
    saliency_pairs: int = 1,
    negative_window: bool = False,
) -> TrainingWindow:
    """Draws the positive window, its span and saliency frames (and a negative window) for one query.

    Args:
        num_frames (`int`): features of the video `T` (from the feature array, never from the duration).
        timestamps (`[start, end]`): the moment in seconds.
        seconds_per_feature (`float`): 0.2 (MAD), 0.535 (Ego4D).
        window_length (`int`): frames per window `L`; window_stride (`int`, *optional*): default `L // 2`.
        rng (`np.random.Generator`): the source of randomness.
        saliency_pairs (`int`): positive/negative saliency frames per sample `P` (1 in the official recipes; drawn
            with replacement when > 1).
        negative_window (`bool`): also draw a negative window.

    Raises:
        ValueError: when `negative_window` is asked and every window of the video overlaps the moment (the official
            loader asserts; the Ego4D training filter removes such queries).
    """
    stride = resolve_stride(window_length, window_stride)
    if num_frames < 1:
        raise ValueError(f"a video needs at least one feature, got {num_frames}")
    start, end = float(timestamps[0]), float(timestamps[1])
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"timestamps must be finite, got {timestamps}")
    s = min(max(start / seconds_per_feature, 0.0), float(num_frames))
    e = min(max(end / seconds_per_feature, 0.0), float(num_frames))
    if s > e:
        s, e = e, s
    if s >= num_frames:
        # Clamped to the end, the moment would become a zero-width target on the last window.
        raise ValueError(
            f"the moment {list(timestamps)} s starts at or after the end of the video features ({num_frames} "
            f"features, {num_frames * seconds_per_feature:g} s)"
        )
    num_windows = count_windows(num_frames, stride)
    candidates = moment_windows(s, e, stride, num_windows)

    # 1. positive window
    probabilities = positive_window_probabilities(candidates)
    window_index = int(candidates[rng.choice(len(candidates), p=probabilities)])
    window_start, window_end = window_span(window_index, num_frames, window_length, stride)
    valid_length = window_end - window_start

    # 2. span clipped to the nominal window extent (unclamped start), in window frames
    nominal_start = (window_index - 1) * stride
    span_start = max(nominal_start, s) - window_start
    span_end = min(nominal_start + window_length, e) - window_start
    span = ((span_start + span_end) / 2 / valid_length, (span_end - span_start) / valid_length)

    # 3. saliency frames
    first_positive = min(max(math.floor(span_start), 0), valid_length - 1)
    end_positive = min(max(math.ceil(span_end), first_positive + 1), valid_length)  # never empty
    positive_pool = np.arange(first_positive, end_positive)
    negative_pool = np.concatenate([np.arange(0, first_positive), np.arange(end_positive, valid_length)])
    positives = rng.choice(positive_pool, size=saliency_pairs, replace=True)
    fallback = negative_pool.size == 0
    negatives = positives.copy() if fallback else rng.choice(negative_pool, size=saliency_pairs, replace=True)

    # 4. negative window (drawn last, so asking for it does not change the draws above)
    negative = (None, None, None)
    if negative_window:
        pool = [index for index in range(num_windows) if index not in candidates]
        if not pool:
            raise ValueError(
                f"no negative window: all {num_windows} windows of the video ({num_frames} features) overlap the "
                f"moment {list(timestamps)} s"
            )
        negative_index = int(pool[rng.integers(len(pool))])
        negative = (negative_index, *window_span(negative_index, num_frames, window_length, stride))

    return TrainingWindow(
        window_index=window_index,
        window_start=window_start,
        window_end=window_end,
        candidate_windows=tuple(candidates),
        span=(float(span[0]), float(span[1])),
        span_frames=(float(span_start), float(span_end)),
        saliency_positive_frames=positives.astype(np.int64),
        saliency_negative_frames=negatives.astype(np.int64),
        saliency_fallback=fallback,
        negative_window_index=negative[0],
        negative_window_start=negative[1],
        negative_window_end=negative[2],
    )


class RGNetTrainingDataset(torch.utils.data.Dataset):
    """A map-style torch dataset of training samples: one positive window (and optionally a negative window) per
    query, read lazily from the feature files.

    Args:
        queries (`datasets.Dataset`): query rows of a loader of this package (features attached), with timestamps.
        window_length (`int`), window_stride (`int`, *optional*), seconds_per_feature (`float`, *optional*): the
            window grid (`config.window_length`, `config.window_stride`, `config.seconds_per_feature`);
            seconds_per_feature defaults to the one recorded with the features.
        max_text_length (`int`, *optional*): tokens kept per query (`config.max_text_length`).
        negative_windows (`bool`): also read a negative window per query (the Ego4D fine-tuning recipe).
        seed (`int`): base seed; the sample of `index` in epoch `epoch` uses `default_rng([seed, epoch, index])`.
        saliency_pairs (`int`): saliency frame pairs per sample (1 officially).
        normalize_text_features (`bool`): L2-normalise each token (`x / (||x|| + 1e-5)`) as the official loader does
            unless `--no_norm_tfeat`. Video features are never normalised (the official model gets them raw).
        features ([`FeatureSources`], *optional*): defaults to the features attached to `queries`.

    Call `set_epoch(epoch)` before each epoch (with `persistent_workers=True` the workers keep the epoch they were
    started with, so recreate the DataLoader or do not use persistent workers).

    Each item is a dict:
        - `video_features`: `torch.FloatTensor (n, Dv)`, the positive window (n = its valid length);
        - `text_features`: `torch.FloatTensor (Lq, Dt)`, `Lq <= max_text_length`;
        - `labels`: `{"spans": (1, 2), "saliency_positive_frames": (P,), "saliency_negative_frames": (P,)}`;
        - `negative_video_features`: `torch.FloatTensor (n', Dv)` (only with `negative_windows=True`);
        - `metadata`: query id, clip id, window indices and bounds, timestamps.
    """

    def __init__(
        self,
        queries: datasets.Dataset,
        *,
        window_length: int,
        window_stride: int | None = None,
        seconds_per_feature: float | None = None,
        max_text_length: int | None = None,
        negative_windows: bool = False,
        seed: int = 0,
        saliency_pairs: int = 1,
        normalize_text_features: bool = True,
        features: FeatureSources | None = None,
    ):
        sources = features if features is not None else get_feature_sources(queries)
        if sources is None:
            raise ValueError("the queries have no features attached: use a loader of rgnet_hf.data or pass `features`")
        if sources.text_path is None:
            raise ValueError("training needs text features, but the queries have none attached")
        if seconds_per_feature is None:
            seconds_per_feature = sources.seconds_per_feature
        if not seconds_per_feature or seconds_per_feature <= 0:
            raise ValueError(f"seconds_per_feature must be > 0, got {seconds_per_feature!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if max_text_length is not None and max_text_length < 1:
            raise ValueError(f"max_text_length must be >= 1, got {max_text_length}")
        if saliency_pairs < 1:
            raise ValueError(f"saliency_pairs must be >= 1, got {saliency_pairs}")
        self.window_length = window_length
        self.window_stride = resolve_stride(window_length, window_stride)
        self.seconds_per_feature = float(seconds_per_feature)
        self.max_text_length = max_text_length
        self.negative_windows = negative_windows
        self.seed = seed
        self.epoch = 0
        self.saliency_pairs = saliency_pairs
        self.normalize_text_features = normalize_text_features
        self.sources = sources

        # Plain Python columns: no Arrow access per item, cheap to share with workers.
        columns = queries.with_format(None).select_columns(["query_id", "video_id", "clip_id", "timestamps"]).to_dict()
        missing = [qid for qid, ts in zip(columns["query_id"], columns["timestamps"], strict=True) if ts is None]
        if missing:
            raise ValueError(
                f"{len(missing)} queries have no timestamps (e.g. {missing[:3]}): the test split cannot be used for "
                "training"
            )
        self.query_ids: list[str] = columns["query_id"]
        self.video_ids: list[str] = columns["video_id"]
        self.clip_ids: list[str] = columns["clip_id"]
        self.timestamps = np.asarray(columns["timestamps"], dtype=np.float64).reshape(-1, 2)
        self._num_frames: dict[str, int] = {}

    @classmethod
    def from_config(cls, queries: datasets.Dataset, config, **kwargs) -> RGNetTrainingDataset:
        """Window grid, text length and negative windows from an [`RGNetConfig`]; checks the feature sizes."""
        sources = kwargs.get("features") or get_feature_sources(queries)
        if sources is not None:
            recorded = sources.seconds_per_feature
            if recorded and not math.isclose(recorded, config.seconds_per_feature):
                raise ValueError(
                    f"the features have {sources.seconds_per_feature} s per feature but the config has "
                    f"{config.seconds_per_feature}"
                )
            for name, dim, expected in (
                ("video", sources.video_feature_dim, config.video_feature_size),
                ("text", sources.text_feature_dim, config.text_feature_size),
            ):
                if dim is not None and dim != expected:
                    raise ValueError(f"{name} features have size {dim} but config expects {expected}")
        values = {
            "window_length": config.window_length,
            "window_stride": config.window_stride,
            "seconds_per_feature": config.seconds_per_feature,
            "max_text_length": config.max_text_length,
            "negative_windows": config.use_negative_window_loss,
        }
        values.update(kwargs)
        return cls(queries, **values)

    def set_epoch(self, epoch: int) -> None:
        """Samples of a new epoch draw new windows / frames (same seed, different stream)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.query_ids)

    def num_frames(self, clip_id: str) -> int:
        if clip_id not in self._num_frames:
            self._num_frames[clip_id] = self.sources.video_store().num_frames(clip_id)
        return self._num_frames[clip_id]

    def plan(self, index: int) -> TrainingWindow:
        """The window geometry of item `index` in the current epoch (no feature read but the video length)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        clip_id = self.clip_ids[index]
        try:
            return sample_training_window(
                self.num_frames(clip_id),
                self.timestamps[index],
                seconds_per_feature=self.seconds_per_feature,
                window_length=self.window_length,
                window_stride=self.window_stride,
                rng=rng,
                saliency_pairs=self.saliency_pairs,
                negative_window=self.negative_windows,
            )
        except ValueError as error:
            raise ValueError(f"query {self.query_ids[index]!r} (clip {clip_id!r}): {error}") from error

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} queries")
        window = self.plan(index)
        video_store, text_store = self.sources.video_store(), self.sources.text_store()
        clip_id, query_id = self.clip_ids[index], self.query_ids[index]
        video = video_store.read(clip_id, window.window_start, window.window_end)
        tokens, _ = text_store.read(query_id)
        if tokens.shape[0] == 0:
            raise ValueError(f"{self.sources.text_path}: text features of {query_id!r} have no tokens")
        tokens = tokens[: self.max_text_length]
        if self.normalize_text_features:
            tokens = l2_normalize(tokens)
        item = {
            "video_features": torch.from_numpy(np.ascontiguousarray(video)),
            "text_features": torch.from_numpy(np.ascontiguousarray(tokens)),
            "labels": {
                "spans": torch.tensor([window.span], dtype=torch.float32),
                "saliency_positive_frames": torch.from_numpy(window.saliency_positive_frames),
                "saliency_negative_frames": torch.from_numpy(window.saliency_negative_frames),
            },
            "metadata": {
                "query_id": query_id,
                "video_id": self.video_ids[index],
                "clip_id": clip_id,
                "timestamps": self.timestamps[index].tolist(),
                "window_index": window.window_index,
                "window_start": window.window_start,
                "window_end": window.window_end,
                "saliency_fallback": window.saliency_fallback,
            },
        }
        if self.negative_windows:
            negative = video_store.read(clip_id, window.negative_window_start, window.negative_window_end)
            item["negative_video_features"] = torch.from_numpy(np.ascontiguousarray(negative))
            item["metadata"].update(
                negative_window_index=window.negative_window_index,
                negative_window_start=window.negative_window_start,
                negative_window_end=window.negative_window_end,
            )
        return item
