"""The `video-grounding` pipeline: a long video's features and query features in, ranked moments in seconds out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from .inference_rgnet import RGNetGroundingEngine


def _queries(text_features) -> tuple[list[np.ndarray], bool]:
    """One query `(Lq, Dt)` or many (`(Q, Lq, Dt)` or a list of `(Lq_i, Dt)`) -> (list, whether many were given)."""
    if isinstance(text_features, (list, tuple)):
        if len(text_features) == 0:
            raise ValueError("`text_features` is an empty list: give at least one query")
        if all(np.ndim(item) == 2 for item in text_features):
            return list(text_features), True
        return [np.asarray(text_features, dtype=np.float32)], False
    array = text_features.detach().cpu().numpy() if isinstance(text_features, torch.Tensor) else text_features
    array = np.asarray(array, dtype=np.float32)
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
        if not isinstance(inputs, dict):
            raise ValueError("video-grounding inputs are dicts with `video_features` and `text_features`")
        missing = {"video_features", "text_features"} - set(inputs)
        if missing:
            raise ValueError(f"missing input key(s): {', '.join(sorted(missing))}")
        queries, many = _queries(inputs["text_features"])
        features = self.feature_extractor
        sentence = inputs.get("sentence_features")
        if sentence is not None:
            sentence = np.asarray(
                sentence.detach().cpu() if isinstance(sentence, torch.Tensor) else sentence, dtype=np.float32
            )
            if sentence.ndim == 1:
                sentence = sentence[None]
            if len(sentence) != len(queries):
                raise ValueError(f"{len(sentence)} sentence features for {len(queries)} queries")
        encoded = features(
            video_features=inputs["video_features"],
            text_features=queries,
            sentence_features=list(sentence) if sentence is not None else None,
            return_tensors="pt",
        )
        seconds_per_feature = inputs.get("seconds_per_feature")
        if seconds_per_feature is not None and not seconds_per_feature > 0:
            raise ValueError(f"seconds_per_feature must be > 0, got {seconds_per_feature}")
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
