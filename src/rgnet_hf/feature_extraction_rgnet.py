"""Feature extractor for RGNet: validates, pads and windows pre-extracted video and text features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import BatchFeature, SequenceFeatureExtractor

from .windowing import window_bounds

ArrayLike = np.ndarray | torch.Tensor | Sequence


def _as_float_array(value, name: str, ndim: int, feature_size: int | None = None) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{name}` must be a numeric array, got {type(value).__name__}") from error
    if array.ndim != ndim:
        shape = "(num_frames, feature_size)" if ndim == 2 else "(feature_size,)"
        raise ValueError(f"`{name}` must have shape {shape}, got {array.shape}")
    if feature_size is not None and array.shape[-1] != feature_size:
        raise ValueError(f"`{name}` have {array.shape[-1]} dimensions per item but the model expects {feature_size}")
    if array.shape[0] == 0:
        raise ValueError(f"`{name}` is empty")
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` contain NaN or infinite values")
    return array


def l2_normalize(array: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """`x / (||x||_2 + eps)` along the last axis: the normalisation of text features on their way into the model.

    The single owner of that rule: the data loaders (training and evaluation) and the `video-grounding` pipeline (for
    text it encodes itself) call it; video features are never normalised (the official model reads them raw).
    """
    norm = np.linalg.norm(array, axis=-1, keepdims=True)
    return (array / (norm + eps)).astype(np.float32, copy=False)


def _pad(arrays: list[np.ndarray], padding_value: float) -> tuple[np.ndarray, np.ndarray]:
    length = max(len(a) for a in arrays)
    padded = np.full((len(arrays), length, arrays[0].shape[-1]), padding_value, dtype=np.float32)
    mask = np.zeros((len(arrays), length), dtype=np.float32)
    for index, array in enumerate(arrays):
        padded[index, : len(array)] = array
        mask[index, : len(array)] = 1
    return padded, mask


class RGNetFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Prepares pre-extracted features for RGNet.

    - Video: `(num_frames, video_feature_size)` per video, e.g. CLIP frame features at 5 fps for MAD. They are kept
      un-normalised (the official model receives them so); [`RGNetFeatureExtractor.window`] cuts the official window
      grid.
    - Text: `(num_tokens, text_feature_size)` per query (token features), cut to `max_text_length` tokens and padded.
    - Sentence: `(sentence_feature_size,)` per query, used by the feature-matching score.

    Args:
        feature_size (`int`): video feature size.
        text_feature_size (`int`), sentence_feature_size (`int`).
        sampling_rate (`float`): video features per second (`1 / seconds_per_feature`).
        window_length (`int`), window_stride (`int`): the window grid.
        max_text_length (`int`): text tokens kept per query.
    """

    model_input_names = ["video_features", "video_mask", "text_features", "text_mask"]

    def __init__(
        self,
        feature_size: int = 512,
        text_feature_size: int = 512,
        sentence_feature_size: int = 512,
        sampling_rate: float = 5.0,
        window_length: int = 900,
        window_stride: int | None = None,
        max_text_length: int = 25,
        padding_value: float = 0.0,
        **kwargs,
    ):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.text_feature_size = text_feature_size
        self.sentence_feature_size = sentence_feature_size
        self.window_length = window_length
        self.window_stride = window_length // 2 if window_stride is None else window_stride
        self.max_text_length = max_text_length

    @classmethod
    def from_model_config(cls, config) -> RGNetFeatureExtractor:
        return cls(
            feature_size=config.video_feature_size,
            text_feature_size=config.text_feature_size,
            sentence_feature_size=config.sentence_feature_size,
            sampling_rate=1.0 / config.seconds_per_feature,
            window_length=config.window_length,
            window_stride=config.window_stride,
            max_text_length=config.max_text_length,
        )

    @property
    def seconds_per_feature(self) -> float:
        return 1.0 / self.sampling_rate

    def _list(self, value, name: str, ndim: int, size: int) -> list[np.ndarray]:
        if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == ndim:
            return [_as_float_array(value, name, ndim, size)]
        if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == ndim + 1:
            value = list(value)
        if not isinstance(value, (list, tuple)) or len(value) == 0:
            raise ValueError(f"`{name}` must be an array of {ndim} dimensions or a non-empty list of them")
        return [_as_float_array(item, f"{name}[{index}]", ndim, size) for index, item in enumerate(value)]

    def __call__(
        self,
        video_features: ArrayLike | list[ArrayLike] | None = None,
        text_features: ArrayLike | list[ArrayLike] | None = None,
        sentence_features: ArrayLike | list[ArrayLike] | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Validate and pad features. Each argument takes one item (`(T, D)` video, `(Lq, Dt)` text, `(Dc,)` sentence)
        or a list of items.

        Returns:
            [`BatchFeature`] with `video_features` `(B, T, D)` and `video_mask` `(B, T)`, `text_features`
            `(Q, Lq, Dt)` and `text_mask` `(Q, Lq)` (at most `max_text_length` tokens), `sentence_features` `(Q, Dc)`,
            for whichever inputs were given.
        """
        data = {}
        if video_features is not None:
            videos = self._list(video_features, "video_features", 2, self.feature_size)
            data["video_features"], data["video_mask"] = _pad(videos, self.padding_value)
        if text_features is not None:
            texts = [
                t[: self.max_text_length] for t in self._list(text_features, "text_features", 2, self.text_feature_size)
            ]
            data["text_features"], data["text_mask"] = _pad(texts, 0.0)
        if sentence_features is not None:
            sentences = self._list(sentence_features, "sentence_features", 1, self.sentence_feature_size)
            data["sentence_features"] = np.stack(sentences)
        if not data:
            raise ValueError("Nothing to process: pass `video_features`, `text_features` or `sentence_features`")
        return BatchFeature(data, tensor_type=return_tensors)

    def window(self, video_features: ArrayLike, return_tensors: str | None = "pt") -> BatchFeature:
        """Cut one video `(T, D)` into the official window grid.

        Returns:
            [`BatchFeature`] with `video_features` `(W, window_length, D)` (zero-padded), `video_mask` `(W,
            window_length)`, `window_bounds` `(W, 2)` (`[start, end)` frames).
        """
        video = torch.from_numpy(_as_float_array(video_features, "video_features", 2, self.feature_size))
        bounds = window_bounds(video.shape[0], self.window_length, self.window_stride)
        length = int(min(self.window_length, video.shape[0]))
        index = bounds[:, :1] + torch.arange(length)[None]
        mask = index < bounds[:, 1:]
        windows = video[index.clamp(max=video.shape[0] - 1)] * mask[..., None]
        data = {"video_features": windows, "video_mask": mask.float(), "window_bounds": bounds}
        return BatchFeature(data, tensor_type=return_tensors)


__all__ = ["RGNetFeatureExtractor", "l2_normalize"]
