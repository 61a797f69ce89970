"""Processor for RGNet: raw inputs (a video file, query sentences) or pre-extracted features in, model inputs out;
model outputs in, moments in seconds out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from .feature_extraction_rgnet import RGNetFeatureExtractor, l2_normalize


@dataclass
class RGNetRawInputs:
    """Raw inputs encoded into features, as every tool of the package feeds them to the model.

    Attributes:
        video_features (`np.ndarray` of shape `(T, video_feature_size)`, *optional*): frame features at the feature
            rate, un-normalised (the model receives them so).
        duration (`float`, *optional*): seconds covered by the decoded video.
        text_features (`list[np.ndarray]`, *optional*): per query, its token features `(L_i, text_feature_size)`,
            L2-normalised, unpadded.
        sentence_features (`np.ndarray` of shape `(Q, sentence_feature_size)`, *optional*): L2-normalised.
        queries (`list[str]`, *optional*): the query sentences as given.
        truncated (`list[bool]`, *optional*): per query, whether it was cut to the text encoder's context.
    """

    video_features: np.ndarray | None = None
    duration: float | None = None
    text_features: list[np.ndarray] | None = None
    sentence_features: np.ndarray | None = None
    queries: list[str] | None = None
    truncated: list[bool] | None = None


class RGNetProcessor(ProcessorMixin):
    r"""
    Wraps an [`RGNetFeatureExtractor`] and, for raw inputs, a video-and-text feature encoder
    ([`VideoTextEncoder`]: the CLIP or SigLIP model whose features the RGNet model reads).

    The one way raw inputs become model inputs: the pipeline, the command line and the web app call
    [`RGNetProcessor.encode_raw_inputs`] (or `processor(video=..., text=...)`), which decodes and encodes a video file
    at the feature rate, cleans up, encodes and L2-normalises query sentences, exactly as the released features and
    the data loaders prepare them.

    Args:
        feature_extractor ([`RGNetFeatureExtractor`]).
        feature_encoder ([`VideoTextEncoder`] or `str`, *optional*): the encoder of raw inputs, or its name (loaded
            on first use). Not saved with the processor: a model's config names its encoder
            (`config.feature_encoder`), and [`RGNetProcessor.from_model_config`] uses it.
    """

    def __init__(self, feature_extractor: RGNetFeatureExtractor | None = None, feature_encoder=None, **kwargs):
        super().__init__(feature_extractor, **kwargs)
        self._feature_encoder = feature_encoder
        self._model_config = None
        self._video_cache: tuple[tuple, Any] | None = None

    @classmethod
    def from_model_config(cls, config, feature_encoder=None) -> RGNetProcessor:
        """The processor of a model config. Raw inputs use `feature_encoder` (checked to fit the model), by default
        the encoder the config names (`config.feature_encoder`)."""
        processor = cls(RGNetFeatureExtractor.from_model_config(config), feature_encoder=feature_encoder)
        processor._model_config = config
        return processor

    def to_dict(self) -> dict[str, Any]:
        # the encoder (a whole CLIP model) and the last encoded video are runtime state, not configuration
        held = {name: self.__dict__.pop(name, None) for name in ("_feature_encoder", "_model_config", "_video_cache")}
        try:
            return super().to_dict()
        finally:
            self.__dict__.update(held)

    @property
    def feature_encoder(self):
        """The [`VideoTextEncoder`] of raw inputs (loaded on first use when a name was given)."""
        from .video_text_encoders import VideoTextEncoder, feature_encoder_for_model, load_feature_encoder

        if isinstance(self._feature_encoder, VideoTextEncoder):
            return self._feature_encoder
        config = self._model_config
        if self._feature_encoder is not None:
            encoder = load_feature_encoder(self._feature_encoder)
            if config is not None:
                encoder.check_fits(config)
        elif config is not None:
            encoder = feature_encoder_for_model(config)  # explains a config that names no encoder
        else:
            raise ValueError(
                "this processor has no feature encoder for raw inputs (a video file or query text): build it with "
                "`RGNetProcessor.from_model_config(model.config)`, set `processor.feature_encoder = "
                "load_feature_encoder(name)`, or give pre-extracted features"
            )
        self._feature_encoder = encoder
        return encoder

    @feature_encoder.setter
    def feature_encoder(self, encoder) -> None:
        if encoder is not self._feature_encoder:
            self._video_cache = None
        self._feature_encoder = encoder

    def encode_video(
        self,
        video: str | os.PathLike,
        seconds_per_feature: float | None = None,
        progress: bool = False,
        allow_truncated: bool = False,
    ):
        """Decode and encode a video file at `1 / seconds_per_feature` features per second (the feature extractor's
        rate by default) -> [`EncodedVideo`]. The last video is kept: asking again for the same unchanged file, rate
        and encoder reuses it. A truncated file is an error, or with `allow_truncated=True` a `TruncatedVideoWarning`
        and the features of its decoded part (`EncodedVideo.declared_duration` then holds the container's claim)."""
        from .windowing import _check_seconds_per_feature

        if not isinstance(video, (str, os.PathLike)):
            raise ValueError(f"`video` must be a path to a video file, got {type(video).__name__}")
        if seconds_per_feature is None:
            seconds_per_feature = self.feature_extractor.seconds_per_feature
        seconds_per_feature = _check_seconds_per_feature(seconds_per_feature)
        path = os.path.abspath(os.fspath(video))
        if os.path.isdir(path):
            raise ValueError(
                f"{path} is a folder, not a video file: ground one video file at a time (`rgnet-hf extract` takes a "
                "folder and writes a feature cache for all its videos)"
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such video file: {path}")
        stat = os.stat(path)
        encoder = self.feature_encoder
        key = (path, stat.st_mtime_ns, stat.st_size, float(seconds_per_feature), encoder.name, str(encoder.dtype))
        key += (bool(allow_truncated),)
        if self._video_cache is None or self._video_cache[0] != key:
            self._video_cache = None  # free the previous video's features before encoding the next
            encoded = encoder.encode_video(
                path, seconds_per_feature, progress=progress, allow_truncated=allow_truncated
            )
            self._video_cache = (key, encoded)
        return self._video_cache[1]

    @property
    def last_encoded_video(self):
        """The [`EncodedVideo`] of the last `encode_video` call (kept for reuse), or None."""
        return None if self._video_cache is None else self._video_cache[1]

    def encode_queries(self, text: str | list[str], lowercase: bool = False) -> RGNetRawInputs:
        """Query sentences -> normalised token features (unpadded) and sentence features, in one forward pass.
        `lowercase` follows the model (Ego4D-NLQ models read lower-cased queries)."""
        from .video_text_encoders import FeatureEncoderError

        queries = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
        if not queries or not all(isinstance(query, str) for query in queries):
            raise FeatureEncoderError("`text` must be a query string or a non-empty list of query strings")
        encoded = self.feature_encoder.encode_queries(queries, lowercase=lowercase)
        # the one normalisation of text features on their way into the model, as the data loaders apply it
        return RGNetRawInputs(
            text_features=[l2_normalize(query.token_features) for query in encoded],
            sentence_features=l2_normalize(np.stack([query.sentence_features for query in encoded])),
            queries=queries,
            truncated=[query.truncated for query in encoded],
        )

    def encode_raw_inputs(
        self,
        video: str | os.PathLike | None = None,
        text: str | list[str] | None = None,
        seconds_per_feature: float | None = None,
        lowercase: bool = False,
        progress: bool = False,
        allow_truncated: bool = False,
    ) -> RGNetRawInputs:
        """A video file and / or query sentences -> [`RGNetRawInputs`] (see [`RGNetProcessor.encode_video`] and
        [`RGNetProcessor.encode_queries`])."""
        if video is None and text is None:
            raise ValueError("give a `video` file, query `text`, or both")
        inputs = self.encode_queries(text, lowercase=lowercase) if text is not None else RGNetRawInputs()
        if video is not None:
            encoded = self.encode_video(video, seconds_per_feature, progress=progress, allow_truncated=allow_truncated)
            inputs.video_features, inputs.duration = encoded.features, encoded.duration
        return inputs

    def __call__(
        self,
        video_features=None,
        text_features=None,
        sentence_features=None,
        text: str | list[str] | None = None,
        video: str | os.PathLike | None = None,
        return_tensors: str | None = None,
        seconds_per_feature: float | None = None,
        lowercase: bool = False,
        **kwargs,
    ) -> BatchFeature:
        """Model inputs from features (see [`RGNetFeatureExtractor.__call__`]) or raw inputs: `video` (a video file)
        replaces `video_features`, `text` (one or more sentences) replaces `text_features` and
        `sentence_features`."""
        if video is not None and video_features is not None:
            raise ValueError("give either `video` or `video_features`, not both")
        if text is not None and (text_features is not None or sentence_features is not None):
            raise ValueError("give either `text` or `text_features` / `sentence_features`, not both")
        if video is not None or text is not None:
            raw = self.encode_raw_inputs(video, text, seconds_per_feature, lowercase=lowercase)
            if video is not None:
                video_features = raw.video_features
            if text is not None:
                text_features, sentence_features = raw.text_features, list(raw.sentence_features)
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


# `save_pretrained` writes this class into the folder's `auto_map` (see configuration_rgnet.py).
RGNetProcessor.register_for_auto_class()


__all__ = ["RGNetProcessor", "RGNetRawInputs"]
