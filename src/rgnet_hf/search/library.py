"""Search a library of videos: a vector pre-filter over segments, RGNet's retrieval token on the candidate windows,
its decoder on the best of them, and one ranking across videos (docs/library_search.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..feature_extraction_rgnet import pad_sequences
from ..inference_rgnet import BestWindowStates, RGNetGroundingEngine, VideoFrameRuns
from ..windowing import frame_runs_of_windows, window_bounds
from .index import LibraryIndex
from .ranking import rank_library_rows, select_library_windows

__all__ = ["LibraryMoment", "LibrarySearchResult", "VideoLibrary", "SEGMENT_WINDOWS"]

SEGMENT_WINDOWS = ("overlapping", "central")


@dataclass
class LibraryMoment:
    """One moment found in a library: the video's key and file (`path`, the source its features were extracted
    from), start and end in seconds (clamped to the video; the ranking is the unclamped one), fused score, query."""

    key: str
    path: str
    start: float
    end: float
    score: float
    query: str | None

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "path": self.path,
            "start": self.start,
            "end": self.end,
            "score": self.score,
            "query": self.query,
        }


@dataclass
class LibrarySearchResult:
    """What a library search found for one query.

    Attributes:
        moments (`list[LibraryMoment]`): the best `top_k`, best first.
        rows (`np.ndarray` of shape `(K, 5)`): the whole ranking, rows `[start, end, proposal, matching, fused]`.
        videos (`np.ndarray` of shape `(K,)`): position in `VideoLibrary.index.videos` of each row's video.
        candidate_windows (`int`): windows scored by the retrieval token for this query.
    """

    query: str | None
    moments: list[LibraryMoment]
    rows: np.ndarray = field(repr=False)
    videos: np.ndarray = field(repr=False)
    candidate_windows: int = 0


class VideoLibrary:
    """
    Queries over every video of a library index (built by `rgnet-hf index`).

    Args:
        index (`str`, `os.PathLike` or [`LibraryIndex`]): the index folder.
        model ([`RGNetForVideoGrounding`]): the model the index was built for (checked: encoder, rate, size).
        engine ([`RGNetGroundingEngine`], *optional*): scores and decodes windows; one with default settings by default.
        feature_encoder (*optional*): a [`VideoTextEncoder`] or its name, to encode query sentences (the model's
            `config.feature_encoder` by default); not needed when queries come as features.
        batch_videos (`bool`, defaults to `True`): score and decode the candidate windows of many videos in shared
            encoder chunks (`RGNetGroundingEngine.score_window_rows` / `decode_window_rows`), embedding only their
            frames. `False` makes one engine call per video (`score_windows` / `decode_windows`, each embedding the
            whole video): the same results up to float rounding, slower; the reference of the tests and benchmark.
        segment_windows (`str`, defaults to `"overlapping"`): which windows a segment found by the pre-filter makes
            candidates. `"overlapping"`: every window that overlaps it (two for most segments on a half-overlapping
            grid). `"central"`: the one window in whose middle `window_stride` frames the segment's middle lies, so
            a moment up to `window_length - window_stride` frames long around the segment lies inside it; about half
            the windows to score on a half-overlapping grid (docs/library_search.md has the measured effect).
    """

    def __init__(
        self,
        index,
        model,
        engine: RGNetGroundingEngine | None = None,
        feature_encoder=None,
        batch_videos: bool = True,
        segment_windows: str = "overlapping",
    ):
        if segment_windows not in SEGMENT_WINDOWS:
            raise ValueError(f"`segment_windows` must be one of {SEGMENT_WINDOWS}, got {segment_windows!r}")
        self.segment_windows = segment_windows
        self.index = index if isinstance(index, LibraryIndex) else LibraryIndex.open(index)
        self.model = model
        self.index.check_fits(model.config)
        self.engine = engine if engine is not None else RGNetGroundingEngine(model)
        self.batch_videos = batch_videos
        self._feature_encoder = feature_encoder
        self._processor = None

    @classmethod
    def from_folders(
        cls,
        index: str | os.PathLike,
        model: str | os.PathLike,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ):
        """The index folder and the model folder (or Hub id) opened; `dtype` (e.g. `torch.bfloat16`) casts the model,
        which the engine follows: faster where the hardware has native bfloat16 (GPUs, CPUs with AVX-512 BF16 or
        AMX), slower elsewhere, and the rankings move by reduced-precision rounding."""
        from ..modeling_rgnet import RGNetForVideoGrounding

        index = LibraryIndex.open(index)  # a missing or broken index fails before the model loads
        loaded = RGNetForVideoGrounding.from_pretrained(model).eval()
        if device is not None or dtype is not None:
            loaded = loaded.to(device=device, dtype=dtype)
        return cls(index, loaded, **kwargs)

    # ------------------------------------------------------------------ queries
    def encode_queries(self, text: list[str]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Sentences -> padded token features `(Q, Lq, Dt)`, mask `(Q, Lq)`, sentence features `(Q, Ds)`."""
        from ..processing_rgnet import RGNetProcessor
        from ..video_text_encoders import VideoTextEncoder, feature_encoder_for_model, load_feature_encoder

        if self._processor is None:
            encoder = self._feature_encoder
            options = {"device": self.model.device}
            if encoder is None:
                encoder = feature_encoder_for_model(self.model.config, **options)
            elif not isinstance(encoder, VideoTextEncoder):
                encoder = load_feature_encoder(encoder, **options)
            encoder.check_fits(self.model.config)
            self._processor = RGNetProcessor.from_model_config(self.model.config, feature_encoder=encoder)
        raw = self._processor.encode_queries(text, lowercase=self.model.config.dataset_name == "ego4d")
        features, mask = pad_sequences([torch.as_tensor(t) for t in raw.text_features], "text_features")
        return features, mask, np.asarray(raw.sentence_features, dtype=np.float32)

    def _query_inputs(self, text, text_features, text_mask, sentence_features):
        if text is not None:
            queries = [text] if isinstance(text, str) else list(text)
            if not queries:
                raise ValueError("no query given")
            for query in queries:
                if not isinstance(query, str) or not query.strip():
                    raise ValueError(f"an empty query ({query!r}): give a sentence that describes the moment")
            features, mask, sentence = self.encode_queries([query.strip() for query in queries])
            return queries, features, mask, sentence
        if text_features is None:
            raise ValueError("give the queries as `text` or as `text_features` (with `sentence_features`)")
        if isinstance(text_features, (list, tuple)):
            if not text_features:
                raise ValueError("no query given (`text_features` is an empty list)")
            features, mask = pad_sequences([torch.as_tensor(np.asarray(t)) for t in text_features], "text_features")
        else:
            features = torch.as_tensor(np.asarray(text_features))
            features = features[None] if features.dim() == 2 else features
            mask = torch.ones(features.shape[:2]) if text_mask is None else torch.as_tensor(np.asarray(text_mask))
        if features.shape[0] == 0 or features.shape[1] == 0 or bool((mask.sum(-1) == 0).any()):
            raise ValueError("an empty query (no text token): give a sentence that describes the moment")
        sentence = None
        if sentence_features is not None:
            sentence = np.asarray(sentence_features, dtype=np.float32)
            sentence = sentence[None] if sentence.ndim == 1 else sentence
            if sentence.ndim != 2 or len(sentence) != len(features):
                raise ValueError(
                    f"`sentence_features` must be (num_queries, D) with one row per query ({len(features)}), got "
                    f"shape {tuple(np.shape(sentence_features))}"
                )
            if not np.isfinite(sentence).all():
                raise ValueError("`sentence_features` contain NaN or infinite values")
        return [None] * len(features), features, mask, sentence

    # ------------------------------------------------------------------ search
    def search(
        self,
        text: str | list[str] | None = None,
        *,
        text_features=None,
        text_mask=None,
        sentence_features=None,
        top_k: int = 10,
        depth: int = 200,
        exhaustive: bool = False,
    ) -> list[LibrarySearchResult]:
        """
        The best moments of the whole library for each query.

        Args:
            text (`str` or `list[str]`): query sentences (encoded by the feature encoder), or:
            text_features (`(Q, Lq, Dt)` or a list of `(Lq_i, Dt)`), text_mask (`(Q, Lq)`, *optional*),
            sentence_features (`(Q, Ds)`): precomputed query features (the sentence features are the pre-filter's
                query vectors and feed the matching score; required unless `exhaustive`).
            top_k (`int`): moments returned per query.
            depth (`int`): segments taken from the vector index per query; the windows overlapping them are the
                candidates the retrieval token scores.
            exhaustive (`bool`): score every window of every video (no pre-filter): the reference.
        Returns:
            one [`LibrarySearchResult`] per query.
        """
        for name, value in (("top_k", top_k), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
        names, features, mask, sentence = self._query_inputs(text, text_features, text_mask, sentence_features)
        if sentence is None and not exhaustive:
            raise ValueError("the pre-filter needs `sentence_features` (one per query); or search with exhaustive=True")
        if sentence is not None and sentence.shape[1] != self.index.feature_size:
            raise ValueError(
                f"the sentence features are {sentence.shape[1]}-d but the index holds {self.index.feature_size}-d "
                "segment vectors: the model's sentence and video features must share one space for the pre-filter"
            )
        candidates = self._all_windows(len(names)) if exhaustive else self._candidate_windows(sentence, depth)
        # the scoring keeps the encoder states of each query's best windows, which the decoding then finishes
        best_states = self.engine.best_window_states(len(names)) if self.batch_videos else None
        scores = self._score(candidates, features, mask, best_states)
        return self._decode_and_rank(candidates, scores, names, features, mask, sentence, top_k, best_states)

    def _grid_bounds(self, position: int) -> np.ndarray:
        config = self.model.config
        num_frames = self.index.videos[position].num_frames
        return window_bounds(num_frames, config.window_length, config.window_stride).numpy()

    def _all_windows(self, num_queries: int) -> np.ndarray:
        """Rows `(video, query, window)` of every window of every video, sorted."""
        parts = []
        for position in range(len(self.index.videos)):
            windows = np.arange(len(self._grid_bounds(position)))
            queries, windows = np.meshgrid(np.arange(num_queries), windows, indexing="ij")
            parts.append(np.stack([np.full(queries.size, position), queries.ravel(), windows.ravel()], axis=1))
        return np.concatenate(parts).astype(np.int64)

    def _candidate_windows(self, sentence: np.ndarray, depth: int) -> np.ndarray:
        """The `depth` best segments of each query -> deduplicated rows `(video, query, window)` of the windows that
        overlap them, sorted (video, query, window)."""
        norms = np.linalg.norm(sentence, axis=1, keepdims=True)
        queries = np.divide(sentence, norms, out=np.zeros_like(sentence), where=norms > 0)
        _, ids = self.index.backend.search(queries, depth)
        query_of_hit = np.repeat(np.arange(len(ids)), ids.shape[1])
        ids = ids.ravel()
        found = ids >= 0
        videos, segments = self.index.segments_of(ids[found])
        query_of_hit = query_of_hit[found]
        segment_frames = self.index.segment_frames
        parts = [np.zeros((0, 3), dtype=np.int64)]
        # One step per video with hits (never per window): the windows overlapping each hit segment.
        for position in np.unique(videos):
            hits = videos == position
            bounds = self._grid_bounds(int(position))
            start = segments[hits] * segment_frames
            end = np.minimum(start + segment_frames, self.index.videos[position].num_frames)
            if self.segment_windows == "central":
                hit, window = np.arange(len(start)), self._central_windows(start, end, len(bounds))
            else:
                overlap = (bounds[None, :, 0] < end[:, None]) & (bounds[None, :, 1] > start[:, None])
                hit, window = np.nonzero(overlap)
            parts.append(np.stack([np.full(len(hit), position), query_of_hit[hits][hit], window], axis=1))
        return np.unique(np.concatenate(parts).astype(np.int64), axis=0)

    def _central_windows(self, start: np.ndarray, end: np.ndarray, num_windows: int) -> np.ndarray:
        """The window whose middle `stride` frames hold each segment's middle: window `i` nominally spans
        `[(i - 1) * stride, (i - 1) * stride + window_length)` (`window_bounds`, before the cut at the video's
        ends), so its middle is `[(i - 1) * stride + (window_length - stride) / 2, ... + stride)`, and these middles
        tile the video. The segment's middle lies inside the window whenever `stride <= window_length`."""
        config = self.model.config
        stride = config.window_stride
        middle = (start + end) / 2.0
        window = np.floor((middle - (config.window_length - stride) / 2.0) / stride).astype(np.int64) + 1
        return np.clip(window, 0, num_windows - 1)

    def _score(
        self,
        candidates: np.ndarray,
        features: torch.Tensor,
        mask: torch.Tensor,
        best_states: BestWindowStates | None = None,
    ) -> np.ndarray:
        """`sigmoid(window logit)` of each candidate row: the rows of a batch of videos in one engine call (one call
        per video without `batch_videos`); `best_states` keeps the states of the best rows (ids: candidate rows)."""
        scores = np.zeros(len(candidates), dtype=np.float32)
        if not self.batch_videos:
            for position, rows in _rows_by_video(candidates):
                video = _whole_video(self._read_windows(position, candidates[rows, 2]))
                logits = self.engine.score_windows(video, features, mask, candidates[rows, 1], candidates[rows, 2])
                scores[rows] = torch.sigmoid(logits).cpu().numpy()
            return scores
        for rows, videos, video_index in self._video_batches(candidates):
            logits = self.engine.score_window_rows(
                videos,
                features,
                mask,
                video_index,
                candidates[rows, 1],
                candidates[rows, 2],
                best_states=best_states,
                row_ids=rows,
            )
            scores[rows] = torch.sigmoid(logits).cpu().numpy()
        return scores

    def _frame_rows(self, position: int, windows: np.ndarray) -> np.ndarray:
        """`(K, 2)` `[start, end)` rows of frames of `windows` of a video: a window's row of frames starts at its
        first frame and holds `min(window_length, T)` of them (the leading half window's row is the second window's:
        its masked tail is read too, so its inputs are the same)."""
        num_frames = self.index.videos[position].num_frames
        starts = self._grid_bounds(position)[np.unique(windows), 0]
        row = min(self.model.config.window_length, num_frames)
        return np.stack([starts, np.minimum(starts + row, num_frames)], axis=1)

    def _read_windows(self, position: int, windows: np.ndarray) -> VideoFrameRuns | np.ndarray:
        """
        The frames of `windows` of a video as [`VideoFrameRuns`] (one read per contiguous run of their rows of
        frames): every frame when the windows cover the video (an exhaustive search), a few runs for a pre-filtered
        one. The engine embeds frames independently and encodes each window from its own row of frames, so these
        windows' rows are those of the whole video's features.
        """
        runs = frame_runs_of_windows(self._frame_rows(position, windows))
        features = self.index.read_features(position, runs, compact=True)
        return VideoFrameRuns(self.index.videos[position].num_frames, runs, features)

    def _video_batches(self, candidates: np.ndarray):
        """Consecutive videos of sorted-by-video candidate rows, in batches whose frames to read take at most a
        quarter of the engine's memory budget (a video alone can exceed it): `(rows, videos, video_index)` per batch,
        with `videos` read by `_read_windows` and `video_index` `(len(rows),)` positions in `videos`."""
        frame_bytes = 4 * self.index.feature_size
        frames_per_batch = max(1, self.engine.memory_budget_bytes // 4 // frame_bytes)
        batch: list[tuple[int, np.ndarray]] = []
        batch_frames = 0
        for position, rows in _rows_by_video(candidates):
            runs = frame_runs_of_windows(self._frame_rows(position, candidates[rows, 2]))
            frames = int((runs[:, 1] - runs[:, 0]).sum())
            if batch and batch_frames + frames > frames_per_batch:
                yield self._read_batch(candidates, batch)
                batch, batch_frames = [], 0
            batch.append((position, rows))
            batch_frames += frames
        if batch:
            yield self._read_batch(candidates, batch)

    def _read_batch(self, candidates: np.ndarray, batch: list[tuple[int, np.ndarray]]):
        videos = [self._read_windows(position, candidates[rows, 2]) for position, rows in batch]
        video_index = np.concatenate([np.full(len(rows), slot) for slot, (_, rows) in enumerate(batch)])
        return np.concatenate([rows for _, rows in batch]), videos, video_index

    def _decode_and_rank(self, candidates, scores, names, features, mask, sentence, top_k, best_states=None):
        config = self.engine.model.config
        engine = self.engine
        # Per query: the library's best windows (rows of `candidates` are in library order within a query).
        kept_rows = []
        for query in range(len(names)):
            rows = np.flatnonzero(candidates[:, 1] == query)
            kept_rows.append(rows[select_library_windows(scores[rows], engine.top_k_windows)])
        decoded = np.zeros((len(candidates), config.num_queries, 4))
        every_kept = np.unique(np.concatenate(kept_rows)) if kept_rows else np.zeros(0, dtype=np.int64)
        if self.batch_videos:
            for rows, videos, video_index in self._video_batches(candidates[every_kept]):
                rows = every_kept[rows]
                decoded[rows] = engine.decode_window_rows(
                    videos,
                    features,
                    mask,
                    video_index,
                    candidates[rows, 1],
                    candidates[rows, 2],
                    scores[rows],
                    sentence_features=sentence,
                    seconds_per_feature=self.index.seconds_per_feature,
                    best_states=best_states,
                    row_ids=rows,
                )
        else:
            for position, rows in _rows_by_video(candidates[every_kept]):
                rows = every_kept[rows]
                decoded[rows] = engine.decode_windows(
                    _whole_video(self._read_windows(position, candidates[rows, 2])),
                    features,
                    mask,
                    candidates[rows, 1],
                    candidates[rows, 2],
                    scores[rows],
                    sentence_features=sentence,
                    seconds_per_feature=self.index.seconds_per_feature,
                )
        results = []
        for query, rows in enumerate(kept_rows):
            ranked, videos = rank_library_rows(
                decoded[rows].reshape(-1, 4),
                np.repeat(candidates[rows, 0], config.num_queries),
                "fused",
                engine.nms_threshold,
                engine.max_predictions_before_nms,
                engine.max_predictions,
            )
            moments = []
            for row, position in zip(ranked[:top_k], videos[:top_k]):
                video = self.index.videos[position]
                moments.append(
                    LibraryMoment(
                        key=video.key,
                        path=video.source,
                        start=float(min(max(row[0], 0.0), video.duration)),
                        end=float(min(max(row[1], 0.0), video.duration)),
                        score=float(row[4]),
                        query=names[query],
                    )
                )
            results.append(
                LibrarySearchResult(names[query], moments, ranked, videos, int((candidates[:, 1] == query).sum()))
            )
        return results


def _rows_by_video(candidates: np.ndarray):
    """(video position, row indices) for each video of sorted-by-video candidate rows."""
    if len(candidates) == 0:
        return
    videos, starts = np.unique(candidates[:, 0], return_index=True)
    ends = np.append(starts[1:], len(candidates))
    for position, start, end in zip(videos, starts, ends):
        yield int(position), np.arange(start, end)


def _whole_video(video: VideoFrameRuns | np.ndarray) -> np.ndarray:
    """`(T, D)` features of a video read as [`VideoFrameRuns`]: its runs in place, the other frames zero."""
    if not isinstance(video, VideoFrameRuns):
        return video
    runs = video.frame_runs
    whole = np.zeros((video.num_frames, video.features.shape[1]), dtype=np.float32)
    lengths = runs[:, 1] - runs[:, 0]
    frames = np.repeat(runs[:, 0] - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))
    whole[frames] = video.features
    return whole
