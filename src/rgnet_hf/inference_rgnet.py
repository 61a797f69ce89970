"""Long-video grounding with RGNet: every window of a video scored by the retrieval token, the best windows decoded
into moments, scores fused and suppressed exactly as the official inference does (steps: docs/ground.md)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .modeling_rgnet import frame_position_embeddings
from .post_processing import format_window_predictions, post_process_query_all_rankings, rank_windows
from .windowing import _check_seconds_per_feature, window_bounds, window_spans_to_seconds

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
        window_scores (`np.ndarray` of shape `(W,)`): `sigmoid(window_logit)` of each window, in window order.
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


class RGNetGroundingEngine:
    """Grounds queries in whole long videos with an [`RGNetForVideoGrounding`].

    For each video: the official window grid is cut from the feature array as views; every window of every query is
    encoded (batched over queries and windows, chunked to `memory_budget_bytes`) and scored by the retrieval token;
    only the `top_k_windows` best windows of each query are decoded into moments (the others cannot reach the output,
    so the results equal decoding every window); proposal scores (foreground probability x window score) and feature
    matching scores are fused, ranked and suppressed per query.

    Args:
        model ([`RGNetForVideoGrounding`]): the model; the engine follows its device and dtype.
        memory_budget_bytes (`int`, defaults to 2 GiB): activation memory one encoder chunk may use (estimated); the
            encoder states kept for the top-k selection of a group of queries count against it too.
        top_k_windows, nms_threshold, max_predictions_before_nms, max_predictions (*optional*): override the config.
        window_scorer ([`RGNetForVideoGrounding`], *optional*): a separate model whose window logits rank the windows
            (a two-stage pipeline: retrieval by one model, grounding by `model`); by default `model` does both, as
            RGNet does.
    """

    def __init__(
        self,
        model,
        memory_budget_bytes: int = 2 * 2**30,
        top_k_windows: int | None = None,
        nms_threshold: float | None = None,
        max_predictions_before_nms: int | None = None,
        max_predictions: int | None = None,
        window_scorer=None,
    ):
        config = model.config
        self.model = model
        self.window_scorer = window_scorer
        self.memory_budget_bytes = int(memory_budget_bytes)
        self.top_k_windows = top_k_windows or config.top_k_windows
        self.nms_threshold = config.nms_threshold if nms_threshold is None else nms_threshold
        self.max_predictions_before_nms = max_predictions_before_nms or config.max_predictions_before_nms
        self.max_predictions = max_predictions or config.max_predictions
        if self.top_k_windows < 1 or self.max_predictions < 1:
            raise ValueError("top_k_windows and max_predictions must be >= 1")

    # ---------------------------------------------------------------- sizing
    def _bytes_per_encoded_row(self, num_frames: int, num_tokens: int) -> int:
        config = self.model.config
        element = torch.finfo(self.model.dtype).bits // 8
        sequence = num_frames + 1
        activations = (
            num_frames * (config.video_feature_size + 8 * config.hidden_size + config.intermediate_size)
            + num_tokens * (config.text_feature_size + 2 * config.hidden_size)
            + 3 * config.num_attention_heads * sequence * max(sequence, num_tokens)
        )
        return activations * element

    def _bytes_per_kept_row(self, num_frames: int) -> int:
        element = torch.finfo(self.model.dtype).bits // 8
        return (num_frames + 1) * self.model.config.hidden_size * element

    # ---------------------------------------------------------------- validation
    def _validate(self, video_features, text_features, text_mask, sentence_features, appearance_features):
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
        if not torch.isfinite(video_features).all():
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
        if text_features.shape[1] == 0 or bool((text_mask.sum(1) == 0).any()):
            raise ValueError("a query has no text token (empty text features)")
        if not torch.isfinite(text_features).all():
            raise ValueError("`text_features` contain NaN or infinite values")
        if sentence_features is not None:
            expected = (text_features.shape[0], appearance_features.shape[1])
            if tuple(sentence_features.shape) != expected:
                raise ValueError(
                    f"`sentence_features` must have shape {expected} (one per query, the size of the "
                    f"appearance features), got {tuple(sentence_features.shape)}"
                )
            if not torch.isfinite(sentence_features).all():
                raise ValueError("`sentence_features` contain NaN or infinite values")
        if appearance_features.shape[0] != video_features.shape[0]:
            raise ValueError("`appearance_features` must have one row per video feature")

    # ---------------------------------------------------------------- main entry
    @torch.no_grad()
    @_in_eval_mode
    def ground(
        self,
        video_features: torch.Tensor | np.ndarray,
        text_features: torch.Tensor | np.ndarray,
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
            text_features (`(Q, Lq, text_feature_size)`): token features of each query, zero-padded.
            text_mask (`(Q, Lq)`, *optional*): 1 = valid token; all valid when omitted.
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
        model = self.model
        config = model.config
        device, dtype = model.device, model.dtype
        video_features = torch.as_tensor(video_features)
        text_features = torch.as_tensor(text_features)
        if text_features.dim() == 2:
            text_features = text_features.unsqueeze(0)
        if text_mask is None:
            text_mask = torch.ones(text_features.shape[:2])
        text_mask = torch.as_tensor(text_mask)
        if text_mask.dim() == 1:
            text_mask = text_mask.unsqueeze(0)
        appearance = video_features if appearance_features is None else torch.as_tensor(appearance_features)
        if sentence_features is not None:
            sentence_features = torch.as_tensor(sentence_features)
            if sentence_features.dim() == 1:
                sentence_features = sentence_features.unsqueeze(0)
        self._validate(video_features, text_features, text_mask, sentence_features, appearance)
        if seconds_per_feature is None:
            seconds_per_feature = config.seconds_per_feature
        seconds_per_feature = _check_seconds_per_feature(seconds_per_feature)

        num_frames = video_features.shape[0]
        bounds = window_bounds(num_frames, config.window_length, config.window_stride)
        num_windows, window_length = bounds.shape[0], int(min(config.window_length, num_frames))
        starts, lengths = bounds[:, 0], bounds[:, 1] - bounds[:, 0]
        # Windows as views of the zero-padded video: window i >= 1 starts at (i - 1) * stride; window 0 is the head.
        stride = config.window_stride
        padded_length = max((num_windows - 2) * stride + window_length, window_length)
        video = F.pad(video_features.to(device=device, dtype=dtype), (0, 0, 0, padded_length - num_frames))
        window_views = torch.cat(
            [video[:window_length].unsqueeze(0), video.unfold(0, window_length, stride).transpose(1, 2)]
        )[:num_windows]  # (W, window_length, D), views except the small concatenation of window 0's index
        window_mask = (torch.arange(window_length)[None] < lengths[:, None]).to(device=device, dtype=dtype)

        num_queries = text_features.shape[0]
        text_features = text_features.to(device=device, dtype=dtype)
        text_mask = text_mask.to(device=device, dtype=dtype)
        top_k = min(self.top_k_windows, num_windows)
        row_bytes = self._bytes_per_encoded_row(window_length, text_features.shape[1])
        rows_per_chunk = max(1, self.memory_budget_bytes // row_bytes)
        if max_queries_per_group is None:
            kept_bytes = num_windows * self._bytes_per_kept_row(window_length)
            max_queries_per_group = max(1, self.memory_budget_bytes // max(kept_bytes, 1))

        results: list[VideoGroundingResult] = []
        for group_start in range(0, num_queries, max_queries_per_group):
            group = range(group_start, min(group_start + max_queries_per_group, num_queries))
            results.extend(
                self._ground_group(
                    group,
                    window_views,
                    window_mask,
                    starts,
                    lengths,
                    text_features,
                    text_mask,
                    sentence_features,
                    appearance,
                    seconds_per_feature,
                    rows_per_chunk,
                    top_k,
                    decode_all_windows,
                    bounds,
                )
            )
        return results

    def _ground_group(
        self,
        group,
        window_views,
        window_mask,
        starts,
        lengths,
        text_features,
        text_mask,
        sentence_features,
        appearance,
        seconds_per_feature,
        rows_per_chunk,
        top_k,
        decode_all_windows,
        bounds,
    ) -> list[VideoGroundingResult]:
        model = self.model
        config = model.config
        num_windows = window_views.shape[0]
        num_group = len(group)
        query_index = torch.tensor(list(group)).repeat_interleave(num_windows)  # row r = (query, window)
        window_index = torch.arange(num_windows).repeat(num_group)
        num_rows = len(query_index)

        def encode(encoder, rows):
            windows, queries = window_index[rows], query_index[rows]
            mask = window_mask[windows]
            return encoder.model.encode(
                window_views[windows] * mask[..., None], mask, text_features[queries], text_mask[queries]
            )

        # 1. Encode every (query, window) row in chunks and score it; keep the encoder states for decoding (unless a
        #    separate window scorer is used: then only the top-k rows are encoded again by the grounding model).
        scorer = self.window_scorer if self.window_scorer is not None else model
        window_logits = torch.empty(num_rows, dtype=torch.float32, device=model.device)
        memories = []
        for chunk_start in range(0, num_rows, rows_per_chunk):
            rows = slice(chunk_start, min(chunk_start + rows_per_chunk, num_rows))
            encoded = encode(scorer, rows)
            window_logits[rows] = scorer.window_logits_from(encoded.retrieval_embedding).float()
            if scorer is model:
                memories.append(encoded.video_memory)
        memory = torch.cat(memories) if memories else None

        # 2. Window retrieval: rank the windows of each query, keep the top k.
        ranking = rank_windows(window_logits.view(num_group, num_windows).float(), top_k)
        decoded_windows = ranking.order if decode_all_windows else ranking.order[:, :top_k]
        decoded_rows = (torch.arange(num_group)[:, None] * num_windows + decoded_windows.cpu()).flatten()

        # 3. Decode only the rows that can reach the output.
        logits_list, spans_list = [], []
        for chunk_start in range(0, len(decoded_rows), rows_per_chunk):
            rows = decoded_rows[chunk_start : chunk_start + rows_per_chunk]
            mask = window_mask[window_index[rows]]
            positions = _frame_positions(mask, config)
            rows_memory = memory[rows.to(memory.device)] if memory is not None else encode(model, rows).video_memory
            hidden_states, reference_points = model.model.decode(rows_memory, positions, mask)
            logits, spans = model.moment_predictions(hidden_states[-1:], reference_points[-1:])
            logits_list.append(logits[0])
            spans_list.append(spans[0])
        logits = torch.cat(logits_list).float()
        spans = torch.cat(spans_list).float()
        decoded_windows_flat = window_index[decoded_rows]
        decoded_queries = query_index[decoded_rows]
        window_scores = torch.sigmoid(window_logits[decoded_rows.to(window_logits.device)].float())

        foreground = logits.softmax(-1)[..., 0]
        proposal = foreground * window_scores[:, None]
        if sentence_features is not None:
            appearance_windows = _cut_windows(appearance, bounds, window_views.shape[1], decoded_windows_flat)
            matching = matching_scores(
                appearance_windows.to(spans.device),
                lengths[decoded_windows_flat].to(spans.device),
                sentence_features[decoded_queries].to(spans.device),
                spans,
                config.matching_top_frames,
            )
            if config.scale_matching_score_by_window_score:
                matching = matching * window_scores[:, None]
        else:
            matching = torch.zeros_like(proposal)
        seconds = window_spans_to_seconds(
            spans,
            starts[decoded_windows_flat].to(spans.device),
            lengths[decoded_windows_flat].to(spans.device),
            seconds_per_feature,
        )
        window_rows = format_window_predictions(seconds.cpu(), proposal.cpu(), matching.cpu())
        window_rows = window_rows.reshape(num_group, -1, *window_rows.shape[1:])

        # 4. Per query: fuse, rank, suppress (only the top-k windows reach this step).
        results = []
        order = ranking.order.cpu().numpy()
        scores = ranking.scores.cpu().numpy()
        for position in range(num_group):
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
                    window_bounds=bounds.numpy(),
                    window_predictions=window_rows[position],
                )
            )
        return results


def _frame_positions(mask: torch.Tensor, config) -> torch.Tensor:
    positions = frame_position_embeddings(mask, config.hidden_size, config.frame_position_temperature)
    return positions.to(mask.dtype)


def _cut_windows(features: torch.Tensor, bounds: torch.Tensor, window_length: int, windows: torch.Tensor):
    """`(T, D)` features -> `(len(windows), window_length, D)` zero-padded windows, on the features' device."""
    index = bounds[windows, 0][:, None] + torch.arange(window_length)[None]
    valid = (index < bounds[windows, 1][:, None]).to(features.device)
    gathered = features[index.clamp(max=features.shape[0] - 1).to(features.device)]
    return gathered * valid[..., None].to(gathered.dtype)


__all__ = ["RGNetGroundingEngine", "VideoGroundingResult", "matching_scores"]
