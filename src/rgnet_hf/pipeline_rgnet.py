"""The `video-grounding` pipeline: a long video's features and query features in, ranked moments in seconds out."""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from .inference_rgnet import RGNetGroundingEngine
from .windowing import _check_seconds_per_feature

# Every key an input dict may hold; anything else is refused, so a misspelt key cannot be silently ignored.
REQUIRED_INPUT_KEYS = frozenset({"video_features", "text_features"})
OPTIONAL_INPUT_KEYS = frozenset({"sentence_features", "seconds_per_feature"})
ACCEPTED_INPUT_KEYS = REQUIRED_INPUT_KEYS | OPTIONAL_INPUT_KEYS


def check_input_keys(inputs: Any) -> None:
    """Refuse an input that is not a dict, lacks a required key or holds a key the pipeline does not read."""
    if not isinstance(inputs, dict):
        raise ValueError(
            f"video-grounding inputs are dicts with `video_features` and `text_features`, got {type(inputs).__name__}"
        )
    unknown = sorted(set(inputs) - ACCEPTED_INPUT_KEYS, key=str)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), sorted(ACCEPTED_INPUT_KEYS), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"unknown input key(s) {', '.join(hints)}; accepted keys: {', '.join(sorted(ACCEPTED_INPUT_KEYS))}"
        )
    missing = REQUIRED_INPUT_KEYS - set(inputs)
    if missing:
        raise ValueError(f"missing input key(s): {', '.join(sorted(missing))}")


def _as_numpy(value) -> np.ndarray:
    """Arrays, lists and tensors of any float dtype (bfloat16 included, which numpy lacks) -> float32 numpy."""
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _queries(text_features) -> tuple[list[np.ndarray], bool]:
    """One query `(Lq, Dt)` or many (`(Q, Lq, Dt)` or a list of `(Lq_i, Dt)`) -> (list, whether many were given)."""
    if isinstance(text_features, (list, tuple)):
        if len(text_features) == 0:
            raise ValueError("`text_features` is an empty list: give at least one query")
        if all(np.ndim(item) == 2 for item in text_features):
            return list(text_features), True
        return [np.asarray(text_features, dtype=np.float32)], False
    array = _as_numpy(text_features)
    if array.ndim == 3:
        return list(array), True
    return [array], False


class VideoGroundingPipeline(Pipeline):
    """
    Ground natural-language queries in a long video with RGNet.

    ```python
    pipe = pipeline("video-grounding", model="path/to/rgnet")
    pipe({"video_features": feats,            # (T, Dv) array or tensor
          "text_features": tokens,            # (Lq, Dt), the query's token features; or a list / (Q, Lq, Dt) array
          "sentence_features": sentence,      # (Dc,) or (Q, Dc), used by the matching score; optional
          "seconds_per_feature": 0.2},        # optional; default from the config
         top_k=5)
    # -> [{"start": 1012.4, "end": 1016.0, "score": 1.93}, ...] best first
    ```
    With several queries in one input, the result is a list (one ranked list per query); all windows of all the
    queries of a video are batched together. A list of inputs gives a list of results.

    One input holds one video: several videos (a `(N, T, D)` array or a list of videos) are refused, as are keys
    other than the four above; pass a list of inputs, one per video. `seconds_per_feature` must be a finite number
    > 0.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = None
    _load_image_processor = False

    def __init__(self, *args, memory_budget_bytes: int = 2 * 2**30, **kwargs):
        super().__init__(*args, **kwargs)
        self.engine = RGNetGroundingEngine(self.model, memory_budget_bytes=memory_budget_bytes)
        if self.feature_extractor is None and self.processor is not None:
            self.feature_extractor = self.processor.feature_extractor

    def _sanitize_parameters(self, top_k: int | None = None, top_k_windows: int | None = None, **kwargs):
        postprocess = {}
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
            postprocess["top_k"] = top_k
        forward = {}
        if top_k_windows is not None:
            if top_k_windows <= 0:
                raise ValueError(f"top_k_windows must be a positive integer, got {top_k_windows!r}")
            forward["top_k_windows"] = top_k_windows
        return {}, forward, postprocess

    def preprocess(self, inputs: dict[str, Any]) -> dict[str, Any]:
        check_input_keys(inputs)
        seconds_per_feature = inputs.get("seconds_per_feature")
        if seconds_per_feature is not None:
            seconds_per_feature = _check_seconds_per_feature(seconds_per_feature)
        queries, many = _queries(inputs["text_features"])
        features = self.feature_extractor
        sentence = inputs.get("sentence_features")
        if sentence is not None:
            sentence = _as_numpy(sentence)
            if sentence.ndim == 1:
                sentence = sentence[None]
            if sentence.ndim != 2:
                raise ValueError(
                    f"`sentence_features` must have shape (sentence_feature_size,) or (num_queries, "
                    f"sentence_feature_size), got {sentence.shape}"
                )
            if len(sentence) != len(queries):
                raise ValueError(f"{len(sentence)} sentence features for {len(queries)} queries")
        encoded = features(
            video_features=inputs["video_features"],
            text_features=queries,
            sentence_features=list(sentence) if sentence is not None else None,
            return_tensors="pt",
        )
        if len(encoded["video_features"]) != 1:
            raise ValueError(
                f"one input holds one video, got {len(encoded['video_features'])} videos in `video_features`: pass a "
                "list of inputs, one dict per video"
            )
        return {
            "video_features": encoded["video_features"][0],
            "text_features": encoded["text_features"],
            "text_mask": encoded["text_mask"],
            "sentence_features": encoded.get("sentence_features"),
            "seconds_per_feature": seconds_per_feature,
            "many_queries": many,
        }

    def _forward(self, model_inputs: dict[str, Any], top_k_windows: int | None = None) -> dict[str, Any]:
        engine = self.engine
        if top_k_windows is not None:
            engine = RGNetGroundingEngine(self.model, engine.memory_budget_bytes, top_k_windows=top_k_windows)
        results = engine.ground(
            model_inputs["video_features"],
            model_inputs["text_features"],
            model_inputs["text_mask"],
            model_inputs["sentence_features"],
            seconds_per_feature=model_inputs["seconds_per_feature"],
        )
        return {"results": results, "many_queries": model_inputs["many_queries"]}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int = 5):
        ranked = [result.to_list(top_k) for result in model_outputs["results"]]
        return ranked if model_outputs["many_queries"] else ranked[0]

    def __call__(self, inputs, **kwargs):
        if kwargs.get("batch_size", 1) not in (None, 1):
            # Each video is already one batch of all its windows and queries; videos run one after the other.
            kwargs.pop("batch_size")
        return super().__call__(inputs, **kwargs)


__all__ = ["VideoGroundingPipeline"]
