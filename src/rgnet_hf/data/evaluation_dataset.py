"""Evaluation items: every query of one video together, with the whole video's features, for the inference engine."""

from __future__ import annotations

from collections.abc import Iterator

import datasets
import numpy as np
import torch

from .feature_stores import FeatureSources, l2_normalize
from .loaders import get_feature_sources

__all__ = ["EvaluationVideoDataset", "iter_evaluation_videos"]


class EvaluationVideoDataset(torch.utils.data.Dataset):
    """One item per video (feature key `clip_id`), holding all of its queries, in order of first appearance.

    Args:
        queries (`datasets.Dataset`): query rows of a loader of this package (features attached).
        max_text_length (`int`, *optional*): tokens kept per query (`config.max_text_length`); None keeps all.
        normalize_text_features (`bool`): L2-normalise tokens as the official loader does. Sentence features are
            always L2-normalised (as officially); video features never are.
        features ([`FeatureSources`], *optional*): defaults to the features attached to `queries`.

    Each item is a dict:
        - `video_id` (`str`): the searched video, i.e. the feature key (MAD: the movie; Ego4D: the `clip_uid`, the
          unit that Ego4D-NLQ predictions are made on);
        - `video_features` (`np.ndarray (T, Dv)` float32): the whole video, raw;
        - `duration` (`float`): seconds (as annotated);
        - `query_ids` (`list[str]`), `queries` (`list[str]`): the Q queries of the video;
        - `text_features` (`list` of Q `np.ndarray (Lq_i, Dt)` float32);
        - `sentence_features` (`np.ndarray (Q, Dc)` float32, or None when some query has none);
        - `timestamps` (`np.ndarray (Q, 2)` float64 seconds, or None when the split has no answers, i.e. test);
        - `query_metadata` (`list` of Q dicts): the other columns of each row (e.g. Ego4D `video_id` = video_uid,
          `annotation_uid`, `query_idx`; MAD `ext_timestamps`).

    Use it directly (`for video in dataset`) or in a DataLoader with `batch_size=None` to prefetch videos in workers.
    """

    def __init__(
        self,
        queries: datasets.Dataset,
        *,
        max_text_length: int | None = None,
        normalize_text_features: bool = True,
        features: FeatureSources | None = None,
    ):
        sources = features if features is not None else get_feature_sources(queries)
        if sources is None:
            raise ValueError("the queries have no features attached: use a loader of rgnet_hf.data or pass `features`")
        self.sources = sources
        self.max_text_length = max_text_length
        self.normalize_text_features = normalize_text_features
        self.rows = queries.with_format(None).to_list()
        groups: dict[str, list[int]] = {}
        for index, row in enumerate(self.rows):
            groups.setdefault(row["clip_id"], []).append(index)
        self.video_ids = list(groups)
        self.groups = [groups[video_id] for video_id in self.video_ids]

    def __len__(self) -> int:
        return len(self.video_ids)

    def num_frames_and_queries(self, index: int) -> tuple[int, int]:
        """(features, queries) of a video, from the feature store's shape: no features are read."""
        return self.sources.video_store().num_frames(self.video_ids[index]), len(self.groups[index])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} videos")
        video_id = self.video_ids[index]
        rows = [self.rows[i] for i in self.groups[index]]
        video_store, text_store = self.sources.video_store(), self.sources.text_store()
        video_features = video_store.read(video_id)

        text_features, sentences = [], []
        if text_store is not None:
            for row in rows:
                tokens, sentence = text_store.read(row["query_id"], with_sentence=self.sources.has_sentence_features)
                tokens = tokens[: self.max_text_length]
                text_features.append(l2_normalize(tokens) if self.normalize_text_features else tokens)
                sentences.append(sentence)
        sentence_features = None
        if sentences and all(sentence is not None for sentence in sentences):
            sentence_features = l2_normalize(np.stack(sentences))

        timestamps = None
        if all(row["timestamps"] is not None for row in rows):
            timestamps = np.asarray([row["timestamps"] for row in rows], dtype=np.float64).reshape(-1, 2)
        excluded = {"query_id", "query", "clip_id", "duration", "timestamps"}
        return {
            "video_id": video_id,
            "video_features": video_features,
            "duration": float(rows[0]["duration"]),
            "query_ids": [row["query_id"] for row in rows],
            "queries": [row["query"] for row in rows],
            "text_features": text_features,
            "sentence_features": sentence_features,
            "timestamps": timestamps,
            "query_metadata": [{k: v for k, v in row.items() if k not in excluded} for row in rows],
        }

    def __iter__(self) -> Iterator[dict]:
        for index in range(len(self)):
            yield self[index]


def iter_evaluation_videos(queries: datasets.Dataset, **kwargs) -> Iterator[dict]:
    """Iterates over the videos of `queries`, yielding the items of [`EvaluationVideoDataset`]."""
    yield from EvaluationVideoDataset(queries, **kwargs)
