"""Long-video grounding with RGNet: every window of a video scored by the retrieval token, the best windows decoded
into moments, scores fused and suppressed exactly as the official inference does (steps: docs/ground.md)."""

from __future__ import annotations

import copy
import functools
import logging
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .feature_extraction_rgnet import pad_sequences
from .memory_planning import GroundingMemoryPlan, GroundingMemoryPlanner
from .modeling_rgnet import RGNetEncoderOutput, RGNetForVideoGrounding
from .post_processing import WindowRanking, format_window_predictions, post_process_query_all_rankings, rank_windows
from .windowing import (
    WindowGrid,
    _check_seconds_per_feature,
    cut_windows,
    frame_runs_of_windows,
    window_bounds,
    window_spans_to_seconds,
)

logger = logging.getLogger(__name__)

RANKINGS = ("fused", "proposal", "matching")


@dataclass
class VideoGroundingResult:
    """Everything the engine found for one query.

    Attributes:
        moments (`np.ndarray` of shape `(K, 2)`): `[start, end]` in seconds, best first (the fused ranking).
        scores (`np.ndarray` of shape `(K,)`): fused score of each moment (min-max normalised proposal score +
            min-max normalised matching score).
        rankings (`dict[str, np.ndarray]`): rows `[start, end, proposal, matching, fused]` of the `"fused"`,
            `"proposal"` and `"matching"` rankings after NMS.
        window_order (`np.ndarray` of shape `(W,)`): every window of the video, best retrieval score first.
        window_scores (`np.ndarray` of shape `(W,)`): `sigmoid(window_logit)` of window `w` at index `w` (not sorted;
            `window_scores[window_order]` is best first).
        window_bounds (`np.ndarray` of shape `(W, 2)`): `[start, end)` frames of each window.
        window_predictions (`np.ndarray` of shape `(k, num_queries, 4)`): rows `[start, end, proposal, matching]` of
            each decoded window (window-rank order, rows sorted by proposal score, rounded to 4 decimals).
    """

    moments: np.ndarray
    scores: np.ndarray
    rankings: dict[str, np.ndarray]
    window_order: np.ndarray
    window_scores: np.ndarray
    window_bounds: np.ndarray
    window_predictions: np.ndarray = field(repr=False)

    def to_list(self, top_k: int | None = None) -> list[dict[str, float]]:
        """`[{"start", "end", "score"}, ...]`, best first."""
        rows = self.rankings["fused"][:top_k]
        return [{"start": float(r[0]), "end": float(r[1]), "score": float(r[4])} for r in rows]


def matching_scores(
    window_features: torch.Tensor,
    window_lengths: torch.Tensor,
    sentence_features: torch.Tensor,
    spans: torch.Tensor,
    top_frames: int = 3,
) -> torch.Tensor:
    """The CONE feature-matching score of each predicted span: the sum of the `top_frames` largest cosine
    similarities between the sentence feature and the frames inside the span.

    Unlike the official code, only the valid frames of a window are read: a span reaching into the zero padding of a
    short window scores its valid frames instead of NaN (the official code normalises the zero rows, 0 / 0). A span
    with no valid frame scores 0, as an empty span does in the official code.

    Args:
        window_features (`(B, L, D)`): the windows' raw features, zero-padded.
        window_lengths (`(B,)`): valid frames per window.
        sentence_features (`(B, D)`): the query's sentence feature of each window.
        spans (`(B, N, 2)`): (centre, width) normalised by the window's valid length.
    Returns:
        `(B, N)` scores.
    """
    num_frames = window_features.shape[1]
    lengths = window_lengths.to(spans.dtype)[:, None]
    start = torch.relu(torch.floor((spans[..., 0] - spans[..., 1] / 2) * lengths))
    end = torch.minimum(torch.ceil((spans[..., 0] + spans[..., 1] / 2) * lengths), lengths)
    cosine = torch.einsum(
        "bld,bd->bl", F.normalize(window_features.float(), dim=-1), F.normalize(sentence_features.float(), dim=-1)
    )
    frame = torch.arange(num_frames, device=spans.device, dtype=spans.dtype)
    inside = (frame[None, None] >= start[..., None]) & (frame[None, None] < end[..., None])
    masked = cosine[:, None, :].expand(-1, spans.shape[1], -1).masked_fill(~inside, float("-inf"))
    best = masked.topk(min(top_frames, num_frames), dim=-1).values
    return torch.where(torch.isfinite(best), best, torch.zeros_like(best)).sum(-1).to(spans.dtype)


def _in_eval_mode(ground):
    """Run `ground` with the engine's models in eval mode (dropout and the sampler's noise off) and restore their
    mode afterwards; a model in training mode would give random moments. Warns when it had to switch."""

    @functools.wraps(ground)
    def wrapper(self, *args, **kwargs):
        training = [m for m in (self.model, self.window_scorer) if m is not None and m.training]
        if training:
            logger.warning(
                "RGNetGroundingEngine got a model in training mode: grounding in eval mode (call `model.eval()` "
                "first to silence this warning); the training mode is restored afterwards"
            )
        for module in training:
            module.eval()
        try:
            return ground(self, *args, **kwargs)
        finally:
            for module in training:
                module.train()

    return wrapper


@dataclass
class _EncoderInputs:
    """What one model's encoder reads for the rows of a video, and how the rows' frames are embedded:

    - `"shared"`: the whole video embedded once; `video` holds the windows as views of that buffer;
    - `"per_chunk"`: `video` is the raw features; each chunk embeds its own windows' frames (no video-sized buffer,
      for budgets it does not fit);
    - `"per_row"`: the reference: `video` holds views of the zero-padded raw features and each row goes through the
      whole model's default path (`share_video_work=False`).

    The first two embed the text once per query and run the model's inference-only arithmetic (`fast_inference`).

    With `frame_table`, `video` is a `(F, D or hidden_size)` table of frames gathered from one or more videos and the
    grid is [`WindowGrid.for_rows`]: each row's frames are read by its bounds (`cut_windows`) instead of as views."""

    video_embedding: str
    video: torch.Tensor  # (W - 1, window_length, D or hidden_size) views, or (T, D) raw features for "per_chunk"
    padding_state: torch.Tensor | None  # (hidden_size,): embed_video(0), except "per_row"
    text: torch.Tensor  # (Q, Lq, text_feature_size or hidden_size)
    text_mask: torch.Tensor  # (Q, Lq)
    frame_table: bool = False

    def encode(
        self,
        model: RGNetForVideoGrounding,
        grid: WindowGrid,
        queries: torch.Tensor,
        windows: torch.Tensor,
        retrieval_only: bool = False,
    ) -> RGNetEncoderOutput:
        """Encode rows `(queries[r], windows[r])`; `windows` on the grid's device."""
        mask = grid.mask[windows]
        text, text_mask = self.text[queries], self.text_mask[queries]
        if self.video_embedding == "per_row":
            if self.frame_table:  # zero past each row's end, as the padded video's views are
                frames, _ = cut_windows(self.video, grid.bounds, windows, grid.window_length)
            else:
                frames = self.video[grid.view_index.to(windows.device)[windows]] * mask[..., None]
            return model.model.encode(frames, mask, text, text_mask)
        return model.model.encode(
            None,
            mask,
            None,
            text_mask,
            video_embeds=self._embedded_frames(model, grid, windows, mask),
            text_embeds=text,
            retrieval_only=retrieval_only,
            fast_inference=True,
        )

    def _embedded_frames(
        self, model: RGNetForVideoGrounding, grid: WindowGrid, windows: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """`(len(windows), window_length, hidden_size)`, a new tensor (the encoder releases it after its first
        layer); padded frames hold the state of a padded frame."""
        if self.video_embedding == "shared" and not self.frame_table:
            frames = self.video[grid.view_index.to(windows.device)[windows]]
        elif self.video_embedding == "shared":
            frames, _ = cut_windows(self.video, grid.bounds, windows, grid.window_length)
        else:
            raw_frames, _ = cut_windows(self.video, grid.bounds, windows, grid.window_length)
            frames = model.model.embed_video(raw_frames)
        frames[~mask.bool()] = self.padding_state
        return frames


@dataclass
class _QueryGroup:
    """Rows `(query, window)` of a group of queries: row `r` is query `queries[r // W]`, window `r % W`."""

    query_ids: list[int]
    num_windows: int

    def __post_init__(self) -> None:
        self.query_index = torch.tensor(self.query_ids).repeat_interleave(self.num_windows)
        self.window_index = torch.arange(self.num_windows).repeat(len(self.query_ids))

    @property
    def num_rows(self) -> int:
        return len(self.query_ids) * self.num_windows


@dataclass
class _WindowRows:
    """Explicit rows `(query_index[r], window_index[r])` of one video, in the layout of a [`_QueryGroup`] of one
    block (`query_ids` is `[0]`: `_window_predictions` returns them as one `(1, R, num_queries, 4)` block)."""

    query_index: torch.Tensor
    window_index: torch.Tensor
    query_ids: tuple[int, ...] = (0,)

    @property
    def num_rows(self) -> int:
        return len(self.query_index)


@dataclass
class VideoFrameRuns:
    """Some frames of one video: enough for [`RGNetGroundingEngine.score_window_rows`] and
    [`RGNetGroundingEngine.decode_window_rows`] to read the windows they cover, without the rest of the video.

    Attributes:
        num_frames (`int`): frames of the whole video (its window grid is that of `num_frames` frames).
        frame_runs (`np.ndarray` of shape `(R, 2)`): sorted, disjoint `[start, end)` frame ranges.
        features (`torch.Tensor` or `np.ndarray` of shape `(F, video_feature_size)`): the frames of the runs, one
            run after another (`F` is the runs' total length).
    """

    num_frames: int
    frame_runs: np.ndarray
    features: torch.Tensor | np.ndarray


@dataclass
class _RowTable:
    """Rows of one row length from one or more videos, with the frames their windows cover gathered into one table.

    Attributes:
        rows (`torch.LongTensor` of shape `(G,)`): positions of these rows in the caller's list of rows.
        frames (`torch.Tensor` of shape `(F, D)`): float32, on the CPU: per video, the union of its rows' windows
            (their valid `[start, end)` frames), one video after another.
        grid ([`WindowGrid`]): `WindowGrid.for_rows` of the rows' bounds in `frames`.
        window_starts (`torch.LongTensor` of shape `(G,)`): each row's first frame in its own video.
    """

    rows: torch.Tensor
    frames: torch.Tensor
    grid: WindowGrid
    window_starts: torch.Tensor


def _frame_runs_of(video: Any, name: str, feature_size: int) -> tuple[int, np.ndarray, torch.Tensor]:
    """A video given whole (`(T, D)`) or as [`VideoFrameRuns`] -> `(num_frames, frame_runs (R, 2), features (F, D))`."""
    if isinstance(video, VideoFrameRuns):
        num_frames, runs, features = int(video.num_frames), video.frame_runs, video.features
        runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    else:
        features = video
        runs = None
    features = _as_tensor(features, name)
    if features.dim() != 2 or features.shape[1] != feature_size:
        raise ValueError(f"`{name}` must be (num_frames, {feature_size}) features, got shape {tuple(features.shape)}")
    if runs is None:
        num_frames = features.shape[0]
        runs = np.array([[0, num_frames]], dtype=np.int64)
    lengths = runs[:, 1] - runs[:, 0]
    if (lengths < 0).any() or (runs[1:, 0] < runs[:-1, 1]).any() or runs.min(initial=0) < 0:
        raise ValueError(f"`{name}.frame_runs` must be sorted, disjoint [start, end) ranges")
    if runs.max(initial=0) > num_frames or int(lengths.sum()) != features.shape[0]:
        raise ValueError(
            f"`{name}` holds {features.shape[0]} frames for runs of {int(lengths.sum())} frames within a video of "
            f"{num_frames}"
        )
    return num_frames, runs, features


def _range_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated `arange(starts[i], starts[i] + lengths[i])` (vectorised)."""
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))


class BestWindowStates:
    """The encoder states of the best-scored rows of each query across [`RGNetGroundingEngine.score_window_rows`]
    calls, so that [`RGNetGroundingEngine.decode_window_rows`] finishes those rows (the last self-attention layer,
    [`RGNetModel.complete_encoding`]) instead of encoding them again. Made by
    [`RGNetGroundingEngine.best_window_states`].

    After each encoder chunk, the rows of each query ranked by (window score descending, row id ascending) keep
    their states up to the `top_k` best: a query's `top_k` best rows of all calls are then kept, whatever the order
    of the calls. Rows of different row lengths (videos shorter than a window) are ranked separately, each length
    keeping its own `top_k` (a superset of the overall best). A decoded row that was not kept is encoded again.

    Attributes:
        top_k (`int`): rows kept per query (and row length).
    """

    def __init__(self, top_k: int):
        self.top_k = int(top_k)
        # row length -> {"row_ids", "queries", "scores"} (numpy, CPU) and the states (model device)
        self._kept: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return sum(len(kept["row_ids"]) for kept in self._kept.values())

    def offer(
        self,
        window_length: int,
        row_ids: np.ndarray,
        queries: np.ndarray,
        scores: np.ndarray,
        encoded: RGNetEncoderOutput,
    ) -> None:
        """Rank `R` new rows (ids `(R,)`, queries `(R,)`, float32 window scores `(R,)` and their
        `encode(..., retrieval_only=True)` output `encoded`) with the kept ones; keep the best `top_k` per query."""
        kept = self._kept.get(window_length)
        old_ids = np.zeros(0, dtype=np.int64) if kept is None else kept["row_ids"]
        num_old = len(old_ids)
        row_ids = np.concatenate([old_ids, row_ids])
        queries = np.concatenate([queries[:0] if kept is None else kept["queries"], queries])
        scores = np.concatenate([scores[:0] if kept is None else kept["scores"], scores])
        order = np.lexsort((row_ids, -scores.astype(np.float64), queries))
        ranked_queries = queries[order]
        rank = np.arange(len(order)) - np.searchsorted(ranked_queries, ranked_queries, side="left")
        chosen = order[rank < self.top_k]
        from_old = chosen < num_old
        states = {}
        for name, new in (
            ("last_layer_input", encoded.last_layer_input),
            ("sampler_selection", encoded.sampler_selection),
        ):
            # only the chosen rows are copied: the old buffer and the chunk's states are not concatenated
            buffer = new.new_empty(len(chosen), *new.shape[1:])
            if kept is not None and from_old.any():
                buffer[torch.from_numpy(np.flatnonzero(from_old))] = kept[name][torch.from_numpy(chosen[from_old])]
            buffer[torch.from_numpy(np.flatnonzero(~from_old))] = new[torch.from_numpy(chosen[~from_old] - num_old)]
            states[name] = buffer
        self._kept[window_length] = {
            "row_ids": row_ids[chosen],
            "queries": queries[chosen],
            "scores": scores[chosen],
            **states,
        }

    def lookup(self, window_length: int, row_ids: np.ndarray) -> dict[str, torch.Tensor] | None:
        """The kept states `{"last_layer_input": (R, L + 1, H), "sampler_selection": (R, L)}` of rows `row_ids`
        `(R,)` of length `window_length`, or None unless every one of them is kept."""
        kept = self._kept.get(window_length)
        if kept is None or len(row_ids) == 0:
            return None
        order = np.argsort(kept["row_ids"])
        position = np.searchsorted(kept["row_ids"], row_ids, sorter=order).clip(max=len(order) - 1)
        slots = order[position]
        if not (kept["row_ids"][slots] == row_ids).all():
            return None
        index = torch.from_numpy(slots).to(kept["last_layer_input"].device)
        return {name: kept[name][index] for name in ("last_layer_input", "sampler_selection")}


class _MaybeCompiled:
    """`torch.compile(function)` when asked and available; on any compile or run failure, a warning and the plain
    function from then on (the results are the same, only slower)."""

    def __init__(self, function: Callable[..., Any], enabled: bool):
        self.function = function
        self.compiled = None
        if enabled:
            try:
                self.compiled = torch.compile(function)
            except Exception as error:  # noqa: BLE001 - any backend problem means: run eagerly
                logger.warning("torch.compile is unavailable (%s): running eagerly", error)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001
                logger.warning("torch.compile failed (%s): running eagerly", error)
                self.compiled = None
        return self.function(*args, **kwargs)


class RGNetGroundingEngine:
    """Grounds queries in whole long videos with an [`RGNetForVideoGrounding`].

    For each video: the official window grid is cut from the feature array as views; every window of every query is
    encoded (batched over queries and windows, chunked to `memory_budget_bytes`) and scored by the retrieval token;
    only the `top_k_windows` best windows of each query are decoded into moments (the others cannot reach the output,
    so the results equal decoding every window); proposal scores (foreground probability x window score) and feature
    matching scores are fused, ranked and suppressed per query.

    Work that does not depend on the query is done once per video (`share_video_work=True`, the default): the video
    input projection, the text projection (once per query), the frame positions and the decoder's key positions
    (once per distinct window length). Windows are scored with the last self-attention layer run for the retrieval
    token alone, and only the decoded windows run it for every frame. The rows run the model's inference-only
    arithmetic (`fast_inference`: the feed-forward in cache-sized tiles, the sampler's bias in one pass, the decoder's
    memory projections folded into its few queries). Every row is computed as the full model computes it, so the
    results equal `share_video_work=False` (each (query, window) row through the model's default path, the
    reference) up to float rounding.

    Explicit rows instead of every window: `score_windows` / `decode_windows` for the rows of one video,
    `score_window_rows` / `decode_window_rows` for rows of many videos in shared chunks (a library search), which
    embed only the frames of the rows' windows and can keep the best rows' states for the decoding
    ([`BestWindowStates`]).

    Args:
        model ([`RGNetForVideoGrounding`]): the model; the engine follows its device, dtype (a bfloat16 model is the
            fast mode) and attention implementation (`model.config._attn_implementation`).
        memory_budget_bytes (`int`, defaults to 2 GiB): memory the engine's work may use besides the model and the
            inputs: the embedded video, one encoder chunk's activations (estimated) and the encoder states kept for
            the decoding of a group of queries. When the embedded video would take more than half of the budget,
            each chunk embeds its own windows instead; when not even one query's states fit, the decoded windows are
            encoded again. The plan is made by `engine.memory_planner`, a [`GroundingMemoryPlanner`].
        top_k_windows, nms_threshold, max_predictions_before_nms, max_predictions (*optional*): override the config.
        window_scorer ([`RGNetForVideoGrounding`], *optional*): a separate model whose window logits rank the windows
            (a two-stage pipeline: retrieval by one model, grounding by `model`); by default `model` does both, as
            RGNet does.
        rescore_windows (`int`, *optional*): with a `window_scorer`, its `rescore_windows` best windows of each query
            are scored again by `model`, whose scores rank them (ahead of the others) and weight their moments; the
            best `top_k_windows` of them are decoded. With a reduced-precision copy of `model` as the scorer
            ([`RGNetGroundingEngine.with_reduced_precision_scoring`]) the moments equal the float32 engine's whenever
            its top-k windows are among the scorer's best `rescore_windows`.
        share_video_work (`bool`, defaults to `True`): see above.
        compile (`bool`, defaults to `False`): run the encoder through `torch.compile`, falling back to eager
            execution (with a warning) where compilation is unavailable or fails.
    """

    def __init__(
        self,
        model: RGNetForVideoGrounding,
        memory_budget_bytes: int = 2 * 2**30,
        top_k_windows: int | None = None,
        nms_threshold: float | None = None,
        max_predictions_before_nms: int | None = None,
        max_predictions: int | None = None,
        window_scorer: RGNetForVideoGrounding | None = None,
        share_video_work: bool = True,
        compile: bool = False,
        rescore_windows: int | None = None,
    ):
        config = model.config
        self.model = model
        self.window_scorer = window_scorer
        self.rescore_windows = rescore_windows
        # None means the config's value; 0 is refused, not replaced by it.
        self.top_k_windows = _count_or_default(top_k_windows, config.top_k_windows, "top_k_windows")
        self.nms_threshold = config.nms_threshold if nms_threshold is None else nms_threshold
        self.max_predictions_before_nms = _count_or_default(
            max_predictions_before_nms, config.max_predictions_before_nms, "max_predictions_before_nms"
        )
        self.max_predictions = _count_or_default(max_predictions, config.max_predictions, "max_predictions")
        self.share_video_work = share_video_work
        self._encode = _MaybeCompiled(_EncoderInputs.encode, compile)
        self.memory_planner = GroundingMemoryPlanner(
            model,
            memory_budget_bytes,
            share_video_work=share_video_work,
            num_models=1 if window_scorer is None else 2,
            can_keep_states=window_scorer is None,
        )
        if rescore_windows is not None and (window_scorer is None or rescore_windows < self.top_k_windows):
            raise ValueError(
                f"rescore_windows ({rescore_windows}) needs a window_scorer and at least top_k_windows "
                f"({self.top_k_windows}) windows"
            )

    @property
    def memory_budget_bytes(self) -> int:
        return self.memory_planner.memory_budget_bytes

    @memory_budget_bytes.setter
    def memory_budget_bytes(self, value: int) -> None:
        self.memory_planner.memory_budget_bytes = int(value)

    @classmethod
    def with_reduced_precision_scoring(
        cls,
        model: RGNetForVideoGrounding,
        dtype: torch.dtype | None = None,
        extra_windows: int = 10,
        **engine_kwargs: Any,
    ) -> RGNetGroundingEngine:
        """A fast mode that keeps the float32 results: a `dtype` copy of `model` scores every window, `model` scores
        again its `top_k_windows + extra_windows` best windows of each query and decodes the best `top_k_windows`
        of those (see `rescore_windows`). The window order past the re-scored windows is the copy's. `dtype`
        defaults to float16 on CUDA and bfloat16 elsewhere (CPUs have no fast float16 kernels; bfloat16 is fast
        where the CPU has native support, AVX-512 BF16 or AMX)."""
        if dtype is None:
            dtype = torch.float16 if model.device.type == "cuda" else torch.bfloat16
        scorer = copy.deepcopy(model).to(dtype).eval()
        top_k = _count_or_default(engine_kwargs.get("top_k_windows"), model.config.top_k_windows, "top_k_windows")
        return cls(model, window_scorer=scorer, rescore_windows=top_k + extra_windows, **engine_kwargs)

    def _validate(
        self,
        video_features: torch.Tensor,
        text_features: torch.Tensor,
        text_mask: torch.Tensor,
        sentence_features: torch.Tensor | None,
        appearance_features: torch.Tensor,
    ) -> None:
        config = self.model.config
        if video_features.dim() != 2:
            raise ValueError(
                f"`video_features` must be (num_frames, {config.video_feature_size}), "
                f"got shape {tuple(video_features.shape)}"
            )
        if video_features.shape[0] < 1:
            raise ValueError("the video has no feature (0 frames): it is shorter than one feature")
        if video_features.shape[1] != config.video_feature_size:
            raise ValueError(
                f"`video_features` have {video_features.shape[1]} dimensions per frame but the model "
                f"expects {config.video_feature_size}"
            )
        if not _all_finite(video_features):
            raise ValueError("`video_features` contain NaN or infinite values")
        if text_features.dim() != 3 or text_features.shape[-1] != config.text_feature_size:
            raise ValueError(
                f"`text_features` must be (num_queries, num_tokens, {config.text_feature_size}), "
                f"got shape {tuple(text_features.shape)}"
            )
        if text_features.shape[0] == 0:
            raise ValueError("no query given (`text_features` has 0 rows)")
        if text_mask.shape != text_features.shape[:2]:
            raise ValueError(
                f"`text_mask` has shape {tuple(text_mask.shape)}, expected {tuple(text_features.shape[:2])}"
            )
        if bool(((text_mask != 0) & (text_mask != 1)).any()):
            raise ValueError("`text_mask` must hold only 0 (padding) and 1 (valid token)")
        if text_features.shape[1] == 0 or bool((text_mask.sum(1) == 0).any()):
            raise ValueError("a query has no text token (empty text features)")
        if not torch.isfinite(text_features).all():
            raise ValueError("`text_features` contain NaN or infinite values")
        if appearance_features is not video_features:
            if appearance_features.dim() != 2 or appearance_features.shape[0] != video_features.shape[0]:
                raise ValueError(
                    f"`appearance_features` must be (num_frames, D) with one row per video feature "
                    f"({video_features.shape[0]}), got shape {tuple(appearance_features.shape)}"
                )
            if not _all_finite(appearance_features):
                raise ValueError("`appearance_features` contain NaN or infinite values")
        if sentence_features is not None:
            expected = (text_features.shape[0], appearance_features.shape[1])
            if tuple(sentence_features.shape) != expected:
                raise ValueError(
                    f"`sentence_features` must have shape {expected} (one per query, the size of the "
                    f"appearance features), got {tuple(sentence_features.shape)}"
                )
            if not torch.isfinite(sentence_features).all():
                raise ValueError("`sentence_features` contain NaN or infinite values")
            # The matching score normalises both in float32: an overflowing norm would make every cosine 0.
            for name, features in (
                ("sentence_features", sentence_features),
                ("appearance_features", appearance_features),
            ):
                if not _all_finite(features, transform=lambda part: part.float().norm(dim=-1)):
                    raise ValueError(
                        f"`{name}` overflow float32 (a row's norm is infinite: values too large); the features are "
                        f"expected at the scale of un-normalised CLIP features (magnitudes around 1), as extracted"
                    )

    # ---------------------------------------------------------------- main entry
    @torch.no_grad()
    @_in_eval_mode
    def ground(
        self,
        video_features: torch.Tensor | np.ndarray,
        text_features: torch.Tensor | np.ndarray | list[torch.Tensor | np.ndarray],
        text_mask: torch.Tensor | np.ndarray | None = None,
        sentence_features: torch.Tensor | np.ndarray | None = None,
        appearance_features: torch.Tensor | np.ndarray | None = None,
        seconds_per_feature: float | None = None,
        decode_all_windows: bool = False,
        max_queries_per_group: int | None = None,
    ) -> list[VideoGroundingResult]:
        """
        Ground `Q` queries in one video.

        Args:
            video_features (`(T, video_feature_size)`): the whole video's features (un-normalised, as extracted).
            text_features (`(Q, Lq, text_feature_size)`, or a list of `Q` arrays `(Lq_i, text_feature_size)`): token
                features of each query, zero-padded to one length, or unpadded (a list, padded here).
            text_mask (`(Q, Lq)`, *optional*): 1 = valid token; all valid when omitted (and for a list).
            sentence_features (`(Q, sentence_feature_size)`, *optional*): sentence features for the feature-matching
                score. Without them the matching score is 0 everywhere and the fused ranking follows the proposal
                score alone.
            appearance_features (`(T, D)`, *optional*): the features the matching score compares with the sentence
                feature; defaults to `video_features` (as in both released configurations).
            seconds_per_feature (`float`, *optional*): defaults to `config.seconds_per_feature`.
            decode_all_windows (`bool`): decode every window instead of the top-k only (same results, more work;
                for testing and diagnostics).
            max_queries_per_group (`int`, *optional*): most queries whose encoder states are kept at once; derived
                from the memory budget by default.
        Returns:
            one [`VideoGroundingResult`] per query.
        """
        config = self.model.config
        if max_queries_per_group is not None:
            max_queries_per_group = _count_or_default(max_queries_per_group, None, "max_queries_per_group")
        video_features = _as_tensor(video_features, "video_features")
        if isinstance(text_features, (list, tuple)) and not _is_one_query(text_features):
            if len(text_features) == 0:
                raise ValueError("no query given (`text_features` is an empty list)")
            if text_mask is not None:
                raise ValueError("`text_mask` is for padded `text_features`; a list of queries is padded here")
            queries = [_as_tensor(query, f"text_features[{index}]") for index, query in enumerate(text_features)]
            text_features, text_mask = pad_sequences(queries, "text_features")
        text_features = _as_tensor(text_features, "text_features")
        if text_features.dim() == 2:
            text_features = text_features.unsqueeze(0)
        if text_mask is None:
            text_mask = torch.ones(text_features.shape[:2])
        text_mask = _as_tensor(text_mask, "text_mask")
        if text_mask.dim() == 1:
            text_mask = text_mask.unsqueeze(0)
        appearance = (
            video_features if appearance_features is None else _as_tensor(appearance_features, "appearance_features")
        )
        if sentence_features is not None:
            sentence_features = _as_tensor(sentence_features, "sentence_features")
            if sentence_features.dim() == 1:
                sentence_features = sentence_features.unsqueeze(0)
        self._validate(video_features, text_features, text_mask, sentence_features, appearance)
        if seconds_per_feature is None:
            seconds_per_feature = config.seconds_per_feature
        seconds_per_feature = _check_seconds_per_feature(seconds_per_feature)

        device, dtype = self.model.device, self.model.dtype
        grid = WindowGrid.for_video(video_features.shape[0], config.window_length, config.window_stride, device, dtype)
        num_queries = text_features.shape[0]
        plan = self.memory_planner.plan(grid, text_features.shape[1], num_queries)
        rows_per_chunk, keep_states, group_size = plan.rows_per_chunk, plan.keep_states, plan.queries_per_group
        video = _to_device(video_features, device, dtype)
        text_features, text_mask = _to_device(text_features, device, dtype), _to_device(text_mask, device, dtype)
        inputs = self._encoder_inputs(self.model, grid, video, text_features, text_mask, plan)
        scorer_inputs = inputs
        if self.window_scorer is not None:
            scorer_inputs = self._encoder_inputs(self.window_scorer, grid, video, text_features, text_mask, plan)
        del video

        if max_queries_per_group is not None:
            group_size = max_queries_per_group
        results: list[VideoGroundingResult] = []
        for group_start in range(0, num_queries, group_size):
            group = _QueryGroup(list(range(group_start, min(group_start + group_size, num_queries))), grid.num_windows)
            results.extend(
                self._ground_group(
                    group,
                    grid,
                    inputs,
                    scorer_inputs,
                    sentence_features,
                    appearance,
                    seconds_per_feature,
                    rows_per_chunk,
                    keep_states,
                    decode_all_windows,
                )
            )
        return results

    def _prepare_rows(
        self,
        video_features: torch.Tensor | np.ndarray,
        text_features: torch.Tensor | np.ndarray,
        text_mask: torch.Tensor | np.ndarray | None,
        query_index: torch.Tensor | np.ndarray,
        window_index: torch.Tensor | np.ndarray,
        sentence_features: torch.Tensor | np.ndarray | None = None,
    ):
        """Checked inputs of `score_windows` / `decode_windows`: tensors, the grid, the plan and the rows."""
        config = self.model.config
        video_features = _as_tensor(video_features, "video_features")
        text_features = _as_tensor(text_features, "text_features")
        if text_features.dim() == 2:
            text_features = text_features.unsqueeze(0)
        text_mask = torch.ones(text_features.shape[:2]) if text_mask is None else _as_tensor(text_mask, "text_mask")
        if sentence_features is not None:
            sentence_features = _as_tensor(sentence_features, "sentence_features")
        self._validate(video_features, text_features, text_mask, sentence_features, video_features)
        device, dtype = self.model.device, self.model.dtype
        grid = WindowGrid.for_video(video_features.shape[0], config.window_length, config.window_stride, device, dtype)
        rows = _WindowRows(
            torch.as_tensor(np.asarray(query_index), dtype=torch.long).flatten(),
            torch.as_tensor(np.asarray(window_index), dtype=torch.long).flatten(),
        )
        if len(rows.query_index) != len(rows.window_index):
            raise ValueError(
                f"`query_index` ({len(rows.query_index)}) and `window_index` ({len(rows.window_index)}) must have one "
                "entry per row"
            )
        for name, index, limit in (
            ("query_index", rows.query_index, text_features.shape[0]),
            ("window_index", rows.window_index, grid.num_windows),
        ):
            if len(index) and (int(index.min()) < 0 or int(index.max()) >= limit):
                raise ValueError(
                    f"`{name}` must lie in [0, {limit}), got values in [{int(index.min())}, {int(index.max())}]"
                )
        plan = self.memory_planner.plan(grid, text_features.shape[1], text_features.shape[0])
        text_features, text_mask = _to_device(text_features, device, dtype), _to_device(text_mask, device, dtype)
        return video_features, text_features, text_mask, sentence_features, grid, plan, rows

    @torch.no_grad()
    @_in_eval_mode
    def score_windows(
        self,
        video_features: torch.Tensor | np.ndarray,
        text_features: torch.Tensor | np.ndarray,
        text_mask: torch.Tensor | np.ndarray | None,
        query_index: torch.Tensor | np.ndarray,
        window_index: torch.Tensor | np.ndarray,
    ) -> torch.Tensor:
        """
        Window logits of an explicit list of (query, window) rows of one video, encoded as `ground` scores every
        window (batched and chunked to the memory budget; the window scorer when one is set; `[RET]` alone in the
        last layer). For searches that score candidate windows only.

        Args:
            video_features (`(T, video_feature_size)`): the whole video's features.
            text_features (`(Q, Lq, text_feature_size)`), text_mask (`(Q, Lq)`, *optional*): the queries, padded.
            query_index, window_index (`(R,)`): row `r` is query `query_index[r]` in window `window_index[r]` of
                the video's window grid (`WindowGrid.for_video`).
        Returns:
            `(R,)` float32 window logits (on the model's device); `sigmoid` of them is `ground`'s window score.
        """
        video, text, mask, _, grid, plan, rows = self._prepare_rows(
            video_features, text_features, text_mask, query_index, window_index
        )
        scorer = self.window_scorer if self.window_scorer is not None else self.model
        video = _to_device(video, self.model.device, self.model.dtype)
        inputs = self._encoder_inputs(scorer, grid, video, text, mask, plan)
        logits, _ = self._score_windows(rows, grid, inputs, plan.rows_per_chunk, False, self.share_video_work)
        _check_model_outputs("window logits", logits, scorer)
        return logits

    @torch.no_grad()
    @_in_eval_mode
    def decode_windows(
        self,
        video_features: torch.Tensor | np.ndarray,
        text_features: torch.Tensor | np.ndarray,
        text_mask: torch.Tensor | np.ndarray | None,
        query_index: torch.Tensor | np.ndarray,
        window_index: torch.Tensor | np.ndarray,
        window_scores: torch.Tensor | np.ndarray,
        sentence_features: torch.Tensor | np.ndarray | None = None,
        seconds_per_feature: float | None = None,
    ) -> np.ndarray:
        """
        The moment rows of an explicit list of (query, window) rows of one video, as `ground` decodes its top-k
        windows (`window_predictions`).

        Args:
            video_features, text_features, text_mask, query_index, window_index: as in `score_windows`.
            window_scores (`(R,)`): each row's window score (`sigmoid` of its logit), the proposal scores' weight.
            sentence_features (`(Q, sentence_feature_size)`, *optional*): for the matching score (0 without).
            seconds_per_feature (`float`, *optional*): defaults to `config.seconds_per_feature`.
        Returns:
            `(R, num_queries, 4)` rows `[start, end, proposal, matching]` (seconds; rows of a window sorted by
            proposal score, rounded to 4 decimals).
        """
        video, text, mask, sentence, grid, plan, rows = self._prepare_rows(
            video_features, text_features, text_mask, query_index, window_index, sentence_features
        )
        seconds_per_feature = _check_seconds_per_feature(
            self.model.config.seconds_per_feature if seconds_per_feature is None else seconds_per_feature
        )
        window_scores = _as_tensor(window_scores, "window_scores").float().flatten().to(self.model.device)
        if len(window_scores) != rows.num_rows:
            raise ValueError(f"`window_scores` has {len(window_scores)} entries for {rows.num_rows} rows")
        if rows.num_rows == 0:
            return np.zeros((0, self.model.config.num_queries, 4))
        inputs = self._encoder_inputs(
            self.model, grid, _to_device(video, self.model.device, self.model.dtype), text, mask, plan
        )
        every_row = torch.arange(rows.num_rows)
        logits, spans = self._decode_rows(rows, grid, inputs, every_row, None, plan.rows_per_chunk)
        _check_model_outputs("moment predictions", torch.cat([logits.flatten(), spans.flatten()]), self.model)
        window_rows = self._window_predictions(
            rows,
            grid,
            every_row,
            logits,
            spans,
            window_scores,
            sentence,
            video,
            seconds_per_feature,
            plan.rows_per_chunk,
        )
        return window_rows[0]

    def best_window_states(self, num_queries: int) -> BestWindowStates | None:
        """A [`BestWindowStates`] keeping the states of the `top_k_windows` best rows of each of `num_queries`
        queries, for `score_window_rows` and `decode_window_rows`; None where they cannot be kept (a separate
        window scorer, `share_video_work=False`) or where they (twice, while a chunk's rows are ranked in) would
        take more than a quarter of the memory budget: the decoded rows are then encoded again."""
        states = BestWindowStates(self.top_k_windows)
        if (
            not self._can_keep_row_states()
            or 4 * self._best_states_bytes(states, num_queries) > self.memory_budget_bytes
        ):
            return None
        return states

    def _can_keep_row_states(self) -> bool:
        return self.share_video_work and self.window_scorer is None

    def _best_states_bytes(self, states: BestWindowStates, num_queries: int) -> int:
        """Bytes of the kept states at their largest (one row length), twice: the old and new buffers of a merge."""
        window_length = self.model.config.window_length
        return 2 * states.top_k * num_queries * self.memory_planner.bytes_per_kept_row(window_length)

    @staticmethod
    def _row_ids(row_ids: torch.Tensor | np.ndarray | None, num_rows: int) -> np.ndarray:
        if row_ids is None:
            return np.arange(num_rows)
        row_ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        if len(row_ids) != num_rows:
            raise ValueError(f"`row_ids` has {len(row_ids)} entries for {num_rows} rows")
        return row_ids

    def _prepare_window_rows(
        self,
        videos: Sequence[Any],
        text_features: torch.Tensor | np.ndarray,
        text_mask: torch.Tensor | np.ndarray | None,
        video_index: torch.Tensor | np.ndarray,
        query_index: torch.Tensor | np.ndarray,
        window_index: torch.Tensor | np.ndarray,
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
        """The queries as tensors and the rows `(video_index, query_index, window_index)` as int64 arrays, checked
        (the windows are checked against each video's grid by `_row_tables`)."""
        text_features = _as_tensor(text_features, "text_features")
        if text_features.dim() == 2:
            text_features = text_features.unsqueeze(0)
        text_mask = torch.ones(text_features.shape[:2]) if text_mask is None else _as_tensor(text_mask, "text_mask")
        indices = [np.asarray(index, dtype=np.int64).reshape(-1) for index in (video_index, query_index, window_index)]
        if len({len(index) for index in indices}) > 1:
            raise ValueError(
                f"`video_index`, `query_index` and `window_index` must have one entry per row, got lengths "
                f"{[len(index) for index in indices]}"
            )
        for name, index, limit in (
            ("video_index", indices[0], len(videos)),
            ("query_index", indices[1], text_features.shape[0]),
        ):
            if len(index) and (int(index.min()) < 0 or int(index.max()) >= limit):
                raise ValueError(
                    f"`{name}` must lie in [0, {limit}), got values in [{int(index.min())}, {int(index.max())}]"
                )
        return text_features, text_mask, *indices

    def _row_tables(self, videos: Sequence[Any], video_index: np.ndarray, window_index: np.ndarray) -> list[_RowTable]:
        """The rows grouped by row length (`min(window_length, T)`: one group unless some videos are shorter than a
        window), each group with the frames of its rows' windows. One step per video, vectorised over its rows."""
        config = self.model.config
        order = np.argsort(video_index, kind="stable")
        distinct, first = np.unique(video_index[order], return_index=True)
        last = np.append(first[1:], len(order))
        parts: dict[int, list[tuple[np.ndarray, torch.Tensor, np.ndarray, np.ndarray]]] = {}
        for video, start, end in zip(distinct.tolist(), first.tolist(), last.tolist()):
            rows = order[start:end]
            num_frames, runs, features = _frame_runs_of(videos[video], f"videos[{video}]", config.video_feature_size)
            grid_bounds = window_bounds(num_frames, config.window_length, config.window_stride).numpy()
            windows = window_index[rows]
            if int(windows.min()) < 0 or int(windows.max()) >= len(grid_bounds):
                raise ValueError(
                    f"`window_index` of video {video} must lie in [0, {len(grid_bounds)}), got values in "
                    f"[{int(windows.min())}, {int(windows.max())}]"
                )
            bounds = grid_bounds[windows]
            # Only the frames of these windows are embedded: the union of their valid frames, in runs.
            needed = frame_runs_of_windows(bounds)
            run = np.searchsorted(runs[:, 0], needed[:, 0], side="right") - 1
            covered = (run >= 0) & (runs[run.clip(min=0), 1] >= needed[:, 1])
            if not covered.all():
                raise ValueError(f"`videos[{video}]` lacks frames of its rows' windows (not in its `frame_runs`)")
            run_offsets = np.cumsum(runs[:, 1] - runs[:, 0]) - (runs[:, 1] - runs[:, 0])
            needed_lengths = needed[:, 1] - needed[:, 0]
            frames = features[
                torch.from_numpy(_range_index(run_offsets[run] + needed[:, 0] - runs[run, 0], needed_lengths))
            ]
            needed_offsets = np.cumsum(needed_lengths) - needed_lengths
            within = np.searchsorted(needed[:, 0], bounds[:, 0], side="right") - 1
            row_starts = needed_offsets[within] + bounds[:, 0] - needed[within, 0]
            row_bounds = np.stack([row_starts, row_starts + bounds[:, 1] - bounds[:, 0]], axis=1)
            parts.setdefault(min(config.window_length, num_frames), []).append(
                (rows, frames.float(), row_bounds, bounds[:, 0])
            )
        tables = []
        for row_length, videos_parts in parts.items():
            sizes = np.array([len(frames) for _, frames, _, _ in videos_parts])
            offsets = np.cumsum(sizes) - sizes
            bounds = np.concatenate([part[2] + offset for part, offset in zip(videos_parts, offsets)])
            tables.append(
                _RowTable(
                    rows=torch.from_numpy(np.concatenate([part[0] for part in videos_parts])),
                    frames=torch.cat([part[1] for part in videos_parts]),
                    grid=WindowGrid.for_rows(torch.from_numpy(bounds), row_length, self.model.device, self.model.dtype),
                    window_starts=torch.from_numpy(np.concatenate([part[3] for part in videos_parts])),
                )
            )
        return tables

    @torch.no_grad()
    @_in_eval_mode
    def score_window_rows(
        self,
        videos: Sequence[torch.Tensor | np.ndarray | VideoFrameRuns],
        text_features: torch.Tensor | np.ndarray,
        text_mask: torch.Tensor | np.ndarray | None,
        video_index: torch.Tensor | np.ndarray,
        query_index: torch.Tensor | np.ndarray,
        window_index: torch.Tensor | np.ndarray,
        best_states: BestWindowStates | None = None,
        row_ids: torch.Tensor | np.ndarray | None = None,
    ) -> torch.Tensor:
        """
        Window logits of explicit (video, query, window) rows of several videos, as `score_windows` scores each
        video's rows, but batched across videos: the rows of all videos share the encoder's chunks (sized to the
        memory budget), and only the frames of the rows' windows are embedded (once per video, not the whole
        video). For searches over many videos with few candidate windows each.

        Args:
            videos (`Sequence`): per video, its `(T, video_feature_size)` features, or a [`VideoFrameRuns`] holding
                at least the frames of its rows' windows. Only the videos that have rows are read.
            text_features (`(Q, Lq, text_feature_size)`), text_mask (`(Q, Lq)`, *optional*): the queries, padded.
            video_index, query_index, window_index (`(R,)`): row `r` is query `query_index[r]` in window
                `window_index[r]` of the window grid of video `video_index[r]`.
            best_states ([`BestWindowStates`], *optional*): keeps the encoder states of each query's best rows
                (`best_window_states`), for `decode_window_rows` to finish instead of encoding them again.
            row_ids (`(R,)`, *optional*): with `best_states`, ids of the rows, unique across the calls that share it;
                equal scores are ranked by ascending id. `arange(R)` by default.
        Returns:
            `(R,)` float32 window logits (on the model's device), equal to `score_windows` of each video's rows up to
            float rounding.
        """
        text, text_mask, video_index, query_index, window_index = self._prepare_window_rows(
            videos, text_features, text_mask, video_index, query_index, window_index
        )
        row_ids = self._row_ids(row_ids, len(query_index))
        if best_states is not None and not self._can_keep_row_states():
            raise ValueError("`best_states` needs share_video_work=True and no separate window_scorer")
        scorer = self.window_scorer if self.window_scorer is not None else self.model
        device = self.model.device
        logits = torch.empty(len(query_index), dtype=torch.float32, device=device)
        query_index = torch.from_numpy(query_index)
        for table in self._row_tables(videos, video_index, window_index):
            self._validate(table.frames, text, text_mask, None, table.frames)
            plan = self.memory_planner.plan_rows(
                len(table.frames),
                table.grid.window_length,
                text.shape[1],
                reserved_bytes=0 if best_states is None else self._best_states_bytes(best_states, text.shape[0]),
            )
            inputs = self._encoder_inputs(
                scorer,
                table.grid,
                _to_device(table.frames, device, self.model.dtype),
                _to_device(text, device, self.model.dtype),
                _to_device(text_mask, device, self.model.dtype),
                plan,
                frame_table=True,
            )
            rows = _WindowRows(query_index[table.rows], torch.arange(len(table.rows)))
            table_logits, _ = self._score_windows(
                rows,
                table.grid,
                inputs,
                plan.rows_per_chunk,
                False,
                self.share_video_work,
                best_states,
                row_ids[table.rows.numpy()],
            )
            logits[table.rows.to(device)] = table_logits
        _check_model_outputs("window logits", logits, scorer)
        return logits

    @torch.no_grad()
    @_in_eval_mode
    def decode_window_rows(
        self,
        videos: Sequence[torch.Tensor | np.ndarray | VideoFrameRuns],
        text_features: torch.Tensor | np.ndarray,
        text_mask: torch.Tensor | np.ndarray | None,
        video_index: torch.Tensor | np.ndarray,
        query_index: torch.Tensor | np.ndarray,
        window_index: torch.Tensor | np.ndarray,
        window_scores: torch.Tensor | np.ndarray,
        sentence_features: torch.Tensor | np.ndarray | None = None,
        seconds_per_feature: float | None = None,
        best_states: BestWindowStates | None = None,
        row_ids: torch.Tensor | np.ndarray | None = None,
    ) -> np.ndarray:
        """
        The moment rows of explicit (video, query, window) rows of several videos, as `decode_windows` decodes each
        video's rows, batched across videos as in `score_window_rows`. The matching score reads the video features
        (the appearance features of both released configurations).

        Args:
            videos, text_features, text_mask, video_index, query_index, window_index: as in `score_window_rows`.
            window_scores (`(R,)`): each row's window score (`sigmoid` of its logit), the proposal scores' weight.
            sentence_features (`(Q, sentence_feature_size)`, *optional*): for the matching score (0 without).
            seconds_per_feature (`float`, *optional*): defaults to `config.seconds_per_feature`.
            best_states ([`BestWindowStates`], *optional*), row_ids (`(R,)`, *optional*): the states kept by
                `score_window_rows` and the rows' ids there; rows of one row length are finished from their kept
                states when all of them were kept, and encoded again otherwise.
        Returns:
            `(R, num_queries, 4)` rows `[start, end, proposal, matching]` (seconds in each row's video; rows of a
            window sorted by proposal score, rounded to 4 decimals).
        """
        config = self.model.config
        text, text_mask, video_index, query_index, window_index = self._prepare_window_rows(
            videos, text_features, text_mask, video_index, query_index, window_index
        )
        seconds_per_feature = _check_seconds_per_feature(
            config.seconds_per_feature if seconds_per_feature is None else seconds_per_feature
        )
        window_scores = _as_tensor(window_scores, "window_scores").float().flatten().to(self.model.device)
        if len(window_scores) != len(query_index):
            raise ValueError(f"`window_scores` has {len(window_scores)} entries for {len(query_index)} rows")
        if sentence_features is not None:
            sentence_features = _as_tensor(sentence_features, "sentence_features")
        device, dtype = self.model.device, self.model.dtype
        row_ids = self._row_ids(row_ids, len(query_index))
        window_rows = np.zeros((len(query_index), config.num_queries, 4))
        query_index = torch.from_numpy(query_index)
        for table in self._row_tables(videos, video_index, window_index):
            self._validate(table.frames, text, text_mask, sentence_features, table.frames)
            plan = self.memory_planner.plan_rows(len(table.frames), table.grid.window_length, text.shape[1])
            kept = None
            if best_states is not None:
                kept = best_states.lookup(table.grid.window_length, row_ids[table.rows.numpy()])
            inputs = None
            if kept is None:
                inputs = self._encoder_inputs(
                    self.model,
                    table.grid,
                    _to_device(table.frames, device, dtype),
                    _to_device(text, device, dtype),
                    _to_device(text_mask, device, dtype),
                    plan,
                    frame_table=True,
                )
            rows = _WindowRows(query_index[table.rows], torch.arange(len(table.rows)))
            every_row = torch.arange(rows.num_rows)
            logits, spans = self._decode_rows(rows, table.grid, inputs, every_row, kept, plan.rows_per_chunk)
            _check_model_outputs("moment predictions", torch.cat([logits.flatten(), spans.flatten()]), self.model)
            table_rows = self._window_predictions(
                rows,
                table.grid,
                every_row,
                logits,
                spans,
                window_scores[table.rows.to(window_scores.device)],
                sentence_features,
                table.frames,
                seconds_per_feature,
                plan.rows_per_chunk,
                window_starts=table.window_starts,
            )
            window_rows[table.rows.numpy()] = table_rows[0]
        return window_rows

    def _encoder_inputs(
        self,
        model: RGNetForVideoGrounding,
        grid: WindowGrid,
        video: torch.Tensor,
        text_features: torch.Tensor,
        text_mask: torch.Tensor,
        plan: GroundingMemoryPlan,
        frame_table: bool = False,
    ) -> _EncoderInputs:
        """`video` `(T, D)`: one video's features on `grid`, or with `frame_table` a table of frames whose rows
        `grid` (`WindowGrid.for_rows`) reads by their bounds (no padding, no views)."""
        num_frames = video.shape[0]
        padded_length = num_frames if frame_table else grid.padded_length()
        # a window scorer may run in another precision than the grounding model
        video, text_features, text_mask = (tensor.to(model.dtype) for tensor in (video, text_features, text_mask))
        if plan.video_embedding == "per_row":
            rows = video if frame_table else grid.cut(F.pad(video, (0, 0, 0, padded_length - num_frames)))
            return _EncoderInputs("per_row", rows, None, text_features, text_mask, frame_table)
        padding_state = model.model.embed_video(video.new_zeros(1, video.shape[1]))[0]
        text = model.model.embed_text(text_features)
        if plan.video_embedding == "per_chunk":
            return _EncoderInputs("per_chunk", video, padding_state, text, text_mask, frame_table)
        # The whole video embedded once, in chunks (the projection's inner states stay within a chunk's budget),
        # into one buffer whose padded tail holds the state of a padded frame.
        frames_per_chunk = plan.rows_per_chunk * grid.window_length
        embedded = padding_state.new_empty(padded_length, padding_state.shape[0])
        for start in range(0, num_frames, frames_per_chunk):
            end = min(start + frames_per_chunk, num_frames)
            embedded[start:end] = model.model.embed_video(video[start:end])
        embedded[num_frames:] = padding_state
        if frame_table:
            return _EncoderInputs("shared", embedded, padding_state, text, text_mask, frame_table)
        return _EncoderInputs("shared", grid.cut(embedded), padding_state, text, text_mask)

    def _ground_group(
        self,
        group: _QueryGroup,
        grid: WindowGrid,
        inputs: _EncoderInputs,
        scorer_inputs: _EncoderInputs,
        sentence_features: torch.Tensor | None,
        appearance: torch.Tensor,
        seconds_per_feature: float,
        rows_per_chunk: int,
        keep_states: bool,
        decode_all_windows: bool,
    ) -> list[VideoGroundingResult]:
        top_k = min(self.top_k_windows, grid.num_windows)
        # Scoring with [RET] alone pays only when some windows are not decoded.
        retrieval_only = self.share_video_work and top_k < grid.num_windows and not decode_all_windows
        window_logits, kept = self._score_windows(
            group, grid, scorer_inputs, rows_per_chunk, keep_states, retrieval_only
        )
        _check_model_outputs("window logits", window_logits, self.window_scorer or self.model)
        ranking = rank_windows(window_logits.view(len(group.query_ids), grid.num_windows), top_k)
        offsets = torch.arange(len(group.query_ids))[:, None] * grid.num_windows
        if self.rescore_windows is not None:
            window_logits, ranking = self._rescore_windows(group, grid, inputs, window_logits, ranking, rows_per_chunk)
        decoded_windows = ranking.order if decode_all_windows else ranking.order[:, :top_k]
        decoded_rows = (offsets + decoded_windows.cpu()).flatten()
        logits, spans = self._decode_rows(group, grid, inputs, decoded_rows, kept, rows_per_chunk)
        _check_model_outputs("moment predictions", torch.cat([logits.flatten(), spans.flatten()]), self.model)
        window_scores = torch.sigmoid(window_logits[decoded_rows.to(window_logits.device)])
        window_rows = self._window_predictions(
            group,
            grid,
            decoded_rows,
            logits,
            spans,
            window_scores,
            sentence_features,
            appearance,
            seconds_per_feature,
            rows_per_chunk,
        )
        return self._rank_moments(window_rows, ranking, top_k, grid)

    # ---------------------------------------------------------------- steps
    def _rescore_windows(
        self,
        group: _QueryGroup,
        grid: WindowGrid,
        inputs: _EncoderInputs,
        window_logits: torch.Tensor,
        ranking: WindowRanking,
        rows_per_chunk: int,
    ) -> tuple[torch.Tensor, WindowRanking]:
        """The scorer's best `rescore_windows` windows of each query scored again by `model`: their logits replace
        the scorer's, and they lead the window order, sorted as `rank_windows` sorts (score, then window index)."""
        num_queries, num_windows = ranking.order.shape
        candidates = ranking.order[:, : min(self.rescore_windows, num_windows)].sort(dim=1).values
        rows = (torch.arange(num_queries, device=candidates.device)[:, None] * num_windows + candidates).flatten()
        rows = rows.to(window_logits.device)
        window_logits = window_logits.clone()
        for start in range(0, len(rows), rows_per_chunk):
            chunk = rows[start : start + rows_per_chunk].cpu()
            queries, windows = group.query_index[chunk], group.window_index[chunk]
            encoded = self._encode(
                inputs, self.model, grid, queries.to(self.model.device), windows.to(self.model.device), True
            )
            window_logits[rows[start : start + rows_per_chunk]] = self.model.window_logits_from(
                encoded.retrieval_embedding
            ).float()
        logits = window_logits.view(num_queries, num_windows)
        candidate_scores = torch.sigmoid(logits.gather(1, candidates.to(logits.device)))
        within = candidate_scores.sort(dim=1, descending=True, stable=True).indices.to(candidates.device)
        order = torch.cat([candidates.gather(1, within), ranking.order[:, candidates.shape[1] :]], dim=1)
        return window_logits, WindowRanking(order, torch.sigmoid(logits), ranking.num_kept)

    def _score_windows(
        self,
        group: _QueryGroup,
        grid: WindowGrid,
        inputs: _EncoderInputs,
        rows_per_chunk: int,
        keep_states: bool,
        retrieval_only: bool,
        best_states: BestWindowStates | None = None,
        row_ids: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Window logits `(num_rows,)` (float32) of every row, and the encoder states the decoding reuses (kept
        when they fit the budget and the scorer is the grounding model). With `best_states` (and `retrieval_only`),
        each chunk's rows (ids `row_ids` `(num_rows,)`) are offered to it instead."""
        scorer = self.window_scorer if self.window_scorer is not None else self.model
        device = self.model.device
        window_logits = torch.empty(group.num_rows, dtype=torch.float32, device=device)
        kept: dict[str, torch.Tensor] | None = None
        for chunk_start in range(0, group.num_rows, rows_per_chunk):
            rows = slice(chunk_start, min(chunk_start + rows_per_chunk, group.num_rows))
            queries, windows = group.query_index[rows].to(device), group.window_index[rows].to(device)
            encoded = self._encode(inputs, scorer, grid, queries, windows, retrieval_only=retrieval_only)
            window_logits[rows] = scorer.window_logits_from(encoded.retrieval_embedding).float()
            if best_states is not None:
                scores = torch.sigmoid(window_logits[rows]).cpu().numpy()
                best_states.offer(grid.window_length, row_ids[rows], group.query_index[rows].numpy(), scores, encoded)
            if keep_states:
                # Preallocated, so that the kept states never exist twice (no concatenation at the end).
                name = "last_layer_input" if encoded.last_layer_input is not None else "video_memory"
                if kept is None:
                    kept = {
                        name: encoded[name].new_empty(group.num_rows, *encoded[name].shape[1:]),
                        "sampler_selection": encoded.sampler_selection.new_empty(group.num_rows, grid.window_length),
                    }
                kept[name][rows] = encoded[name]
                kept["sampler_selection"][rows] = encoded.sampler_selection
        return window_logits, kept

    def _decode_rows(
        self,
        group: _QueryGroup,
        grid: WindowGrid,
        inputs: _EncoderInputs | None,
        decoded_rows: torch.Tensor,
        kept: dict[str, torch.Tensor] | None,
        rows_per_chunk: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits and (centre, width) spans `(len(decoded_rows), num_queries, 2)` of the last decoder layer
        (`inputs` may be None when every decoded row is `kept`)."""
        model = self.model
        device = model.device
        distinct_positions = model.model.frame_position_embeddings(grid.distinct_masks, model.dtype)
        logits_list, spans_list = [], []
        for chunk_start in range(0, len(decoded_rows), rows_per_chunk):
            rows = decoded_rows[chunk_start : chunk_start + rows_per_chunk]
            windows = group.window_index[rows].to(device)
            mask = grid.mask[windows]
            length_index = grid.length_index[windows]
            if kept is None:
                encoded = self._encode(inputs, model, grid, group.query_index[rows].to(device), windows)
            elif "video_memory" in kept:
                encoded = RGNetEncoderOutput(video_memory=kept["video_memory"][rows.to(device)])
            else:
                partial = RGNetEncoderOutput(
                    last_layer_input=kept["last_layer_input"][rows.to(device)],
                    sampler_selection=kept["sampler_selection"][rows.to(device)],
                    frame_position_embeddings=distinct_positions[length_index],
                )
                encoded = model.model.complete_encoding(partial, mask, fast_inference=True)
            if self.share_video_work:
                hidden_states, reference_points = model.model.decode(
                    encoded.video_memory, distinct_positions, mask, position_index=length_index, fast_inference=True
                )
            else:
                positions = model.model.frame_position_embeddings(mask, model.dtype)
                hidden_states, reference_points = model.model.decode(encoded.video_memory, positions, mask)
            logits, spans = model.moment_predictions(hidden_states[-1:], reference_points[-1:])
            logits_list.append(logits[0])
            spans_list.append(spans[0])
        return torch.cat(logits_list).float(), torch.cat(spans_list).float()

    def _window_predictions(
        self,
        group: _QueryGroup,
        grid: WindowGrid,
        decoded_rows: torch.Tensor,
        logits: torch.Tensor,
        spans: torch.Tensor,
        window_scores: torch.Tensor,
        sentence_features: torch.Tensor | None,
        appearance: torch.Tensor,
        seconds_per_feature: float,
        rows_per_chunk: int,
        window_starts: torch.Tensor | None = None,
    ) -> np.ndarray:
        """Rows `[start, end, proposal, matching]` `(num_group_queries, decoded per query, num_queries, 4)`.
        `window_starts` `(len(decoded_rows),)`: each decoded window's first frame in its video, when the grid's
        bounds are not the video's (a frame table: `WindowGrid.for_rows`)."""
        config = self.model.config
        windows = group.window_index[decoded_rows]
        proposal = logits.softmax(-1)[..., 0] * window_scores[:, None]
        matching = torch.zeros_like(proposal)
        if sentence_features is not None:
            # In chunks: the cut appearance windows are as large as the encoder's inputs.
            for start in range(0, len(windows), rows_per_chunk):
                rows = slice(start, start + rows_per_chunk)
                appearance_windows, _ = cut_windows(appearance, grid.bounds, windows[rows], grid.window_length)
                matching[rows] = matching_scores(
                    appearance_windows.to(spans.device),
                    grid.lengths[windows[rows]].to(spans.device),
                    sentence_features[group.query_index[decoded_rows[rows]]].to(spans.device),
                    spans[rows],
                    config.matching_top_frames,
                )
            if config.scale_matching_score_by_window_score:
                matching = matching * window_scores[:, None]
        starts = grid.starts[windows] if window_starts is None else window_starts
        seconds = window_spans_to_seconds(
            spans,
            starts.to(spans.device),
            grid.lengths[windows].to(spans.device),
            seconds_per_feature,
        )
        window_rows = format_window_predictions(seconds.cpu(), proposal.cpu(), matching.cpu())
        return window_rows.reshape(len(group.query_ids), -1, *window_rows.shape[1:])

    def _rank_moments(
        self, window_rows: np.ndarray, ranking: WindowRanking, top_k: int, grid: WindowGrid
    ) -> list[VideoGroundingResult]:
        """Per query: fuse, rank and suppress the moments of its top-k windows."""
        results = []
        order = ranking.order.cpu().numpy()
        scores = ranking.scores.cpu().numpy()
        for position in range(len(window_rows)):
            rows = window_rows[position][:top_k].reshape(-1, 4)
            ranked = post_process_query_all_rankings(
                rows, RANKINGS, self.nms_threshold, self.max_predictions_before_nms, self.max_predictions
            )
            fused = ranked["fused"]
            results.append(
                VideoGroundingResult(
                    moments=fused[:, :2],
                    scores=fused[:, 4],
                    rankings=ranked,
                    window_order=order[position],
                    window_scores=scores[position],
                    window_bounds=grid.bounds.numpy(),
                    window_predictions=window_rows[position],
                )
            )
        return results


def _count_or_default(value: int | None, default: int | None, name: str) -> int | None:
    """`value` checked to be an int >= 1, or `default` when `value` is None."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1 (or None for the default), got {value!r}")
    return int(value)


def _is_one_query(values: list | tuple) -> bool:
    """Whether a list of text features is one query as nested lists of numbers (`(Lq, D)` or `(D,)`) rather than a
    list of queries."""
    first = values[0] if values else None
    if isinstance(first, (list, tuple)):
        first = first[0] if first else None
    return isinstance(first, numbers.Real)


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    """A tensor from a tensor, an array or a nested list of numbers; a ragged or non-numeric list is refused by
    name (torch's own errors do not say which input is wrong)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, torch.Tensor) for item in value):
        if len({tuple(item.shape) for item in value}) > 1:
            raise ValueError(f"`{name}` is a list of tensors of different shapes: give one array")
        return torch.stack(list(value))
    try:
        array = np.asarray(value)
    except ValueError as error:
        raise ValueError(
            f"`{name}` is a ragged nested list (rows of different lengths): give one array of rows of one length"
        ) from error
    if array.dtype.kind not in "biuf":
        raise ValueError(f"`{name}` must hold numbers, got an array of dtype {array.dtype}")
    return torch.as_tensor(array)


def _check_model_outputs(name: str, outputs: torch.Tensor, model: RGNetForVideoGrounding) -> None:
    """The inputs were checked finite, so non-finite outputs mean the weights are not finite or the inputs
    overflowed inside the model; say which instead of failing later on NaN scores."""
    if torch.isfinite(outputs).all():
        return
    if not all(bool(torch.isfinite(parameter).all()) for parameter in model.parameters()):
        raise ValueError(f"the model's {name} are NaN or infinite: the model's weights contain NaN or infinite values")
    raise ValueError(
        f"the model's {name} are NaN or infinite although the inputs are finite: the inputs overflowed inside the "
        f"model (values too large). The features are expected at the scale of un-normalised CLIP features "
        f"(magnitudes around 1), as extracted; check how they were scaled"
    )


def _all_finite(
    tensor: torch.Tensor,
    rows_per_check: int = 4096,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> bool:
    """`torch.isfinite(tensor).all()` (of `transform(tensor)` when given, computed per block of rows) without a mask
    as large as a whole video's features."""
    parts = tensor.split(rows_per_check)
    return all(bool(torch.isfinite(part if transform is None else transform(part)).all()) for part in parts)


def _to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Host-to-GPU copies from pinned memory, without blocking the host."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.to(dtype).pin_memory().to(device, non_blocking=True)
    return tensor.to(device=device, dtype=dtype)


__all__ = ["BestWindowStates", "RGNetGroundingEngine", "VideoFrameRuns", "VideoGroundingResult", "matching_scores"]
