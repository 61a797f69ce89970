"""Feature extractor for RGNet: validates, pads and windows pre-extracted video and text features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import BatchFeature, SequenceFeatureExtractor

from .windowing import cut_windows, resolve_window_stride, window_bounds

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


def pad_sequences(
    sequences: Sequence[np.ndarray | torch.Tensor], name: str = "sequences", padding_value: float = 0.0
) -> tuple[torch.FloatTensor, torch.FloatTensor]:
    """Pad `(n_i, D)` arrays or tensors at the end to one batch: the padding rule of every RGNet input (the feature
    extractor, the training collator and evaluation).

    Returns:
        float32 features `(B, max n_i, D)` and mask `(B, max n_i)` with 1 = valid, 0 = padding.
    """
    tensors = [torch.as_tensor(sequence).to(torch.float32) for sequence in sequences]
    sizes = {tuple(tensor.shape[1:]) for tensor in tensors}
    if not tensors or any(tensor.ndim != 2 for tensor in tensors) or len(sizes) != 1:
        raise ValueError(f"{name}: every item needs a (length, feature_size) tensor of one feature size, got {sizes}")
    lengths = torch.tensor([tensor.shape[0] for tensor in tensors])
    if int(lengths.min()) < 1:
        raise ValueError(f"{name}: an item has no rows")
    # pad_sequence is several times faster than filling a zero tensor row by row.
    batch = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=padding_value)
    mask = (torch.arange(batch.shape[1]) < lengths[:, None]).to(torch.float32)
    return batch, mask


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
        self.window_stride = resolve_window_stride(window_length, window_stride)
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
            padded, mask = pad_sequences(videos, "video_features", self.padding_value)
            data["video_features"], data["video_mask"] = padded.numpy(), mask.numpy()
        if text_features is not None:
            texts = [
                t[: self.max_text_length] for t in self._list(text_features, "text_features", 2, self.text_feature_size)
            ]
            padded, mask = pad_sequences(texts, "text_features")
            data["text_features"], data["text_mask"] = padded.numpy(), mask.numpy()
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
        windows, mask = cut_windows(video, bounds)
        data = {"video_features": windows, "video_mask": mask.float(), "window_bounds": bounds}
        return BatchFeature(data, tensor_type=return_tensors)


# `save_pretrained` writes this class into the folder's `auto_map` (see configuration_rgnet.py).
RGNetFeatureExtractor.register_for_auto_class()


__all__ = ["RGNetFeatureExtractor", "l2_normalize", "pad_sequences"]
