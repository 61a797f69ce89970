"""Processor for RGNet: pre-extracted features in, model inputs out; model outputs in, moments in seconds out."""

from __future__ import annotations

import torch
from transformers import BatchFeature, ProcessorMixin

from .feature_extraction_rgnet import RGNetFeatureExtractor


class RGNetProcessor(ProcessorMixin):
    r"""
    Wraps an [`RGNetFeatureExtractor`]. RGNet reads pre-extracted text-token features (CLIP text states for MAD);
    raw-text encoding is not part of this processor yet, so `text=` raises a clear error.

    Args:
        feature_extractor ([`RGNetFeatureExtractor`]).
    """

    def __init__(self, feature_extractor: RGNetFeatureExtractor | None = None, **kwargs):
        super().__init__(feature_extractor, **kwargs)

    @classmethod
    def from_model_config(cls, config) -> RGNetProcessor:
        return cls(RGNetFeatureExtractor.from_model_config(config))

    def __call__(
        self,
        video_features=None,
        text_features=None,
        sentence_features=None,
        text: str | list[str] | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """See [`RGNetFeatureExtractor.__call__`]."""
        if text is not None:
            raise ValueError(
                "RGNetProcessor takes pre-extracted text features (`text_features`, e.g. CLIP text-token states); "
                "encoding raw text is not supported yet"
            )
        return self.feature_extractor(
            video_features=video_features,
            text_features=text_features,
            sentence_features=sentence_features,
            return_tensors=return_tensors,
        )

    @property
    def model_input_names(self) -> list[str]:
        return ["video_features", "video_mask", "text_features", "text_mask"]

    def post_process_video_grounding(
        self,
        outputs,
        window_starts: torch.Tensor,
        window_lengths: torch.Tensor,
        seconds_per_feature: float | None = None,
        top_k: int | None = None,
    ) -> list[list[dict[str, float]]]:
        """
        Turn the outputs of [`RGNetForVideoGrounding`] on a batch of windows into moments in seconds.

        Args:
            outputs: the model output (`logits` `(B, Nq, 2)`, `pred_spans` `(B, Nq, 2)`, `window_logits` `(B,)`).
            window_starts (`(B,)`): first frame of each window in its video.
            window_lengths (`(B,)`): valid frames of each window.
            seconds_per_feature (`float`, *optional*): defaults to the feature extractor's.
            top_k (`int`, *optional*): moments kept per window (all by default).

        Returns:
            per window, `[{"start", "end", "score"}, ...]` sorted by score, where score = foreground probability x
            `sigmoid(window_logit)` (the official proposal score). For whole videos use
            [`RGNetGroundingEngine`] or the `video-grounding` pipeline, which also rank windows and fuse scores.
        """
        from .windowing import _check_seconds_per_feature, window_spans_to_seconds

        if seconds_per_feature is None:
            seconds_per_feature = self.feature_extractor.seconds_per_feature
        seconds_per_feature = _check_seconds_per_feature(seconds_per_feature)
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be > 0, got {top_k}")
        spans = outputs.pred_spans.detach().float()
        scores = outputs.logits.detach().float().softmax(-1)[..., 0]
        scores = scores * torch.sigmoid(outputs.window_logits.detach().float())[:, None]
        seconds = window_spans_to_seconds(
            spans, torch.as_tensor(window_starts), torch.as_tensor(window_lengths), seconds_per_feature
        )
        results = []
        for row_scores, row_seconds in zip(scores, seconds):
            order = row_scores.argsort(descending=True)[:top_k]
            results.append(
                [
                    {"start": float(row_seconds[i, 0]), "end": float(row_seconds[i, 1]), "score": float(row_scores[i])}
                    for i in order.tolist()
                ]
            )
        return results


__all__ = ["RGNetProcessor"]
