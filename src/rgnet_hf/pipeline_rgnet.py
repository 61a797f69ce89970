"""The `video-grounding` pipeline: a long video (a file or its features) and queries (text or features) in, ranked
moments in seconds out."""

from __future__ import annotations

import difflib
import importlib
import os
from typing import Any

import numpy as np
import torch
from transformers import AutoProcessor, Pipeline

from .configuration_rgnet import RGNetConfig
from .inference_rgnet import RGNetGroundingEngine
from .processing_rgnet import RGNetProcessor
from .windowing import _check_seconds_per_feature

# Every key an input dict may hold; anything else is refused, so a misspelt key cannot be silently ignored.
REQUIRED_INPUT_KEYS = frozenset({"video_features", "text_features"})
OPTIONAL_INPUT_KEYS = frozenset({"sentence_features", "seconds_per_feature"})
# Raw inputs, encoded by the model's feature encoder: a video file instead of `video_features`, query text instead of
# `text_features` (and `sentence_features`).
RAW_INPUT_KEYS = {"video": "video_features", "text": "text_features"}
ACCEPTED_INPUT_KEYS = REQUIRED_INPUT_KEYS | OPTIONAL_INPUT_KEYS | frozenset(RAW_INPUT_KEYS)
# A library input searches every video of an index folder (`rgnet-hf index`) instead of one video.
LIBRARY_INPUT_KEYS = frozenset({"library", "text", "text_features", "sentence_features"})
# `VideoLibrary`'s `segment_windows` choices (`rgnet_hf.search.SEGMENT_WINDOWS`), spelled here: the flat core
# imports no sub-package.
LIBRARY_SEGMENT_WINDOWS = ("overlapping", "central")
# The library search (FAISS, the index format) lives in the installed package's `search` sub-package, which the flat
# core never imports by statement: a model folder's copy of this file then loads without rgnet_hf, and only library
# inputs need it (imported by name, on the first library input).
LIBRARY_MODULE = "rgnet_hf.search"


def _unknown_keys_message(unknown: list, accepted: frozenset) -> str:
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), sorted(accepted), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown input key(s) {', '.join(hints)}; accepted keys: {', '.join(sorted(accepted))}"


def check_library_input_keys(inputs: dict) -> None:
    """Refuse a library input with a key it does not read, or without queries (given once: text or features)."""
    unknown = sorted(set(inputs) - LIBRARY_INPUT_KEYS, key=str)
    if unknown:
        one_video = [key for key in unknown if key in ACCEPTED_INPUT_KEYS]
        if one_video:
            raise ValueError(
                f"a `library` input searches the index's videos and takes no {one_video[0]!r}: give either `library` "
                "(an index folder) or one video"
            )
        raise ValueError(_unknown_keys_message(unknown, LIBRARY_INPUT_KEYS))
    if "text" in inputs and ("text_features" in inputs or "sentence_features" in inputs):
        raise ValueError("give the queries either as `text` or as `text_features` (and `sentence_features`), not both")
    if "text" not in inputs and "text_features" not in inputs:
        raise ValueError("a `library` input needs queries: `text` (a sentence or a list), or `text_features`")
    text = inputs.get("text")
    if text is not None:
        # Checked before the feature encoder loads.
        queries = [text] if isinstance(text, str) else text
        if not isinstance(queries, (list, tuple)) or not queries:
            raise ValueError(f"`text` must be a sentence or a non-empty list of sentences, got {text!r}")
        for query in queries:
            if not isinstance(query, str) or not query.strip():
                raise ValueError(f"an empty query ({query!r}): give a sentence that describes the moment")


def check_input_keys(inputs: Any) -> None:
    """Refuse an input that is not a dict, lacks a required key or holds a key the pipeline does not read."""
    if not isinstance(inputs, dict):
        raise ValueError(
            f"video-grounding inputs are dicts with `video_features` and `text_features`, got {type(inputs).__name__}"
        )
    if "library" in inputs:
        check_library_input_keys(inputs)
        return
    unknown = sorted(set(inputs) - ACCEPTED_INPUT_KEYS, key=str)
    if unknown:
        raise ValueError(_unknown_keys_message(unknown, ACCEPTED_INPUT_KEYS | {"library"}))
    given = set(inputs) | {RAW_INPUT_KEYS[key] for key in inputs if key in RAW_INPUT_KEYS}
    missing = REQUIRED_INPUT_KEYS - given
    if missing:
        raw = {features: key for key, features in RAW_INPUT_KEYS.items()}
        raise ValueError(f"missing input key(s): {', '.join(f'{key} (or {raw[key]})' for key in sorted(missing))}")
    for key, features in RAW_INPUT_KEYS.items():
        clash = [name for name in (features, "sentence_features" if key == "text" else None) if name in inputs]
        if key in inputs and clash:
            raise ValueError(f"give either `{key}` or `{clash[0]}`, not both")


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


def _library_module():
    """`rgnet_hf.search`, imported by name (see `LIBRARY_MODULE`), with FAISS checked; a clear error without them."""
    try:
        module = importlib.import_module(LIBRARY_MODULE)
    except ImportError as error:
        if isinstance(error, ModuleNotFoundError) and error.name and not LIBRARY_MODULE.startswith(error.name):
            raise  # rgnet_hf is there but one of its own dependencies is not: that error names it
        raise ImportError(
            "`library` inputs need the rgnet_hf package with its search extra (pip install 'rgnet_hf[search]'); "
            "a model folder's own pipeline code grounds single videos only"
        ) from error
    module.backends.import_faiss()  # an ImportError that says what to install
    return module


def _default_processor(model) -> RGNetProcessor:
    """The processor derived from the model's config, for model folders that carry none.

    Transformers loads a folder's processor softly (any error gives None): a local folder that does have a
    `processor_config.json` is loaded again here so that a broken file is reported instead of replaced.
    """
    name_or_path = str(getattr(model, "name_or_path", "") or "")
    processor_file = os.path.join(name_or_path, "processor_config.json")
    if name_or_path and os.path.isfile(processor_file):
        try:
            return AutoProcessor.from_pretrained(name_or_path)
        except Exception as error:
            raise ValueError(f"{processor_file} could not be loaded as an RGNet processor: {error}") from error
    return RGNetProcessor.from_model_config(model.config)


class VideoGroundingPipeline(Pipeline):
    """
    Ground natural-language queries in a long video with RGNet.

    ```python
    pipe = pipeline("video-grounding", model="path/to/rgnet")
    pipe({"video": "movie.mp4", "text": "a man opens the door"}, top_k=5)
    # -> [{"start": 1012.4, "end": 1016.0, "score": 1.93, "query": "a man opens the door"}, ...] best first
    pipe({"video": "movie.mp4", "text": ["a man opens the door", "a car drives away"]})  # one list per query
    pipe({"video_features": feats,            # (T, Dv) array or tensor
          "text_features": tokens,            # (Lq, Dt), the query's token features; or a list / (Q, Lq, Dt) array
          "sentence_features": sentence,      # (Dc,) or (Q, Dc), used by the matching score; optional
          "seconds_per_feature": 0.2},        # optional; default from the config
         top_k=5)
    # -> [{"start": 1012.4, "end": 1016.0, "score": 1.93, "query": None}, ...] best first
    ```
    A library (an index folder built by `rgnet-hf index`) is searched as a whole, like `rgnet-hf search`:
    ```python
    pipe({"library": "index/", "text": ["a man opens the door"]}, top_k=10, depth=200)
    # -> [[{"key": "ep01", "path": "videos/ep01.mp4", "start": 61.2, "end": 66.0, "score": 0.71,
    #       "query": "a man opens the door"}, ...]] best first, across the library's videos
    ```
    `depth` (segments taken from the vector index per query, 200), `exhaustive` (score every window, False) and
    `segment_windows` (`"overlapping"`, or `"central"`: one window per segment found) set the pre-filter; queries
    may also come as `text_features` with `sentence_features`. The index must have been built for this model's
    encoder, feature rate and size. Library inputs need the installed rgnet_hf package with its search extra
    (docs/library_search.md).

    With several queries in one input, the result is a list (one ranked list per query); all windows of all the
    queries of a video are batched together. A list of inputs gives a list of results.

    One input holds one video: several videos (a `(N, T, D)` array or a list of videos) are refused, as are keys
    other than the six above; pass a list of inputs, one per video. `seconds_per_feature` must be a finite number
    > 0.

    Raw inputs: `video` (a video file, decoded with PyAV and encoded at the model's feature rate) replaces
    `video_features`, and `text` (a string or a list of strings) replaces `text_features` and `sentence_features`;
    they are encoded by the model's `config.feature_encoder` (or the `feature_encoder` given to the pipeline, a name
    or a [`VideoTextEncoder`]). A video is decoded and encoded once per call whatever the number of queries, and the
    last one is kept so that new queries on the same file reuse it. Moments are clipped to `[0, duration]` of the
    video (the ranking is unchanged) and carry `"query"`: the query's text (None for queries given as features).
    """

    # Loaded when the model folder has one; otherwise `__init__` builds the default processor from the config.
    _load_processor = None
    _load_tokenizer = False
    _load_feature_extractor = None
    _load_image_processor = False

    def __init__(
        self,
        *args,
        memory_budget_bytes: int = 2 * 2**30,
        feature_encoder=None,
        feature_encoder_dtype: torch.dtype | None = None,
        progress: bool = True,
        allow_truncated: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        # The task loads any folder through AutoModel; another model's config has none of the grounding fields.
        model_type = getattr(self.model.config, "model_type", None)
        if model_type != RGNetConfig.model_type:
            raise ValueError(f"{self.model.name_or_path} is not an RGNet model folder (model_type {model_type!r})")
        self.engine = RGNetGroundingEngine(self.model, memory_budget_bytes=memory_budget_bytes)
        if self.processor is None:
            self.processor = _default_processor(self.model)
        if self.feature_extractor is None:
            self.feature_extractor = self.processor.feature_extractor
        self._feature_encoder = feature_encoder
        self._feature_encoder_dtype = feature_encoder_dtype
        self.progress = progress
        # a truncated video file: an error, or (True) a warning and the features of its decoded part
        self.allow_truncated = allow_truncated
        self._library_index = None  # (folder, manifest stamp, LibraryIndex) of the last library searched

    @property
    def feature_encoder(self):
        """The [`VideoTextEncoder`] of raw inputs, loaded on first use and checked to fit the model."""
        from .video_text_encoders import VideoTextEncoder, feature_encoder_for_model, load_feature_encoder

        if not isinstance(self._feature_encoder, VideoTextEncoder):
            options = {"device": self.device, "dtype": self._feature_encoder_dtype}
            if self._feature_encoder is None:
                self._feature_encoder = feature_encoder_for_model(self.model.config, **options)
            else:
                self._feature_encoder = load_feature_encoder(self._feature_encoder, **options)
            self._feature_encoder.check_fits(self.model.config)
        return self._feature_encoder

    def _raw_inputs(
        self, inputs: dict[str, Any], seconds_per_feature: float
    ) -> tuple[dict[str, Any], float | None, list | None]:
        """Encode `video` and `text` with the processor; -> (feature inputs, video duration or None, query texts or
        None)."""
        if "video" not in inputs and "text" not in inputs:
            return inputs, None, None
        inputs = dict(inputs)
        text = inputs.pop("text", None)
        self.processor.feature_encoder = self.feature_encoder
        raw = self.processor.encode_raw_inputs(
            video=inputs.pop("video", None),
            text=text,
            seconds_per_feature=seconds_per_feature,
            lowercase=self.model.config.dataset_name == "ego4d",
            progress=self.progress,
            allow_truncated=self.allow_truncated,
        )
        if raw.video_features is not None:
            inputs["video_features"] = raw.video_features
        if raw.queries is not None:
            one = isinstance(text, str)
            inputs["text_features"] = raw.text_features[0] if one else raw.text_features
            inputs["sentence_features"] = raw.sentence_features[0] if one else raw.sentence_features
        return inputs, raw.duration, raw.queries

    def _sanitize_parameters(
        self,
        top_k: int | None = None,
        top_k_windows: int | None = None,
        depth: int | None = None,
        exhaustive: bool | None = None,
        segment_windows: str | None = None,
        **kwargs,
    ):
        postprocess = {}
        forward = {}
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
            postprocess["top_k"] = forward["top_k"] = top_k
        if top_k_windows is not None:
            if top_k_windows <= 0:
                raise ValueError(f"top_k_windows must be a positive integer, got {top_k_windows!r}")
            forward["top_k_windows"] = top_k_windows
        if depth is not None:
            if isinstance(depth, bool) or not isinstance(depth, int) or depth <= 0:
                raise ValueError(f"depth must be a positive integer, got {depth!r}")
            forward["depth"] = depth
        if exhaustive is not None:
            if not isinstance(exhaustive, bool):
                raise ValueError(f"exhaustive must be True or False, got {exhaustive!r}")
            forward["exhaustive"] = exhaustive
        if segment_windows is not None:
            if segment_windows not in LIBRARY_SEGMENT_WINDOWS:
                raise ValueError(f"segment_windows must be one of {LIBRARY_SEGMENT_WINDOWS}, got {segment_windows!r}")
            forward["segment_windows"] = segment_windows
        return {}, forward, postprocess

    def _open_library(self, folder) -> Any:
        """The `LibraryIndex` of `folder`, reopened when its manifest changed (`rgnet-hf index` added videos)."""
        if not isinstance(folder, (str, os.PathLike)):
            raise ValueError(f"`library` must be the path of an index folder, got {type(folder).__name__}")
        path = os.path.abspath(os.fspath(folder))
        if not os.path.isdir(path):
            raise FileNotFoundError(f"library {folder}: no such index folder; build one with `rgnet-hf index`")
        module = _library_module()
        manifest = os.path.join(path, "manifest.json")
        stamp = os.stat(manifest).st_mtime_ns if os.path.isfile(manifest) else None
        cached = self._library_index
        if cached is None or cached[:2] != (path, stamp):
            cached = (path, stamp, module.LibraryIndex.open(path))
            self._library_index = cached
        return module, cached[2]

    def _library_preprocess(self, inputs: dict[str, Any]) -> dict[str, Any]:
        module, index = self._open_library(inputs["library"])
        index.check_fits(self.model.config)  # before any query is encoded
        text = inputs.get("text")
        queries = {"text": text}
        if text is None:
            queries = {"text_features": inputs["text_features"], "sentence_features": inputs.get("sentence_features")}
            text_features = queries["text_features"]
            many = isinstance(text_features, (list, tuple)) or _as_numpy(text_features).ndim == 3
        else:
            many = not isinstance(text, str)
        encoder = self.feature_encoder if text is not None else None
        return {"library": (module, index), "queries": queries, "feature_encoder": encoder, "many_queries": many}

    def _library_forward(
        self, model_inputs, engine, top_k: int, depth: int, exhaustive: bool, segment_windows: str
    ) -> dict[str, Any]:
        module, index = model_inputs["library"]
        library = module.VideoLibrary(
            index,
            self.model,
            engine,
            feature_encoder=model_inputs["feature_encoder"],
            segment_windows=segment_windows,
        )
        results = library.search(**model_inputs["queries"], top_k=top_k, depth=depth, exhaustive=exhaustive)
        rankings = [[moment.to_dict() for moment in result.moments] for result in results]
        return {"library_rankings": rankings, "many_queries": model_inputs["many_queries"]}

    def preprocess(self, inputs: dict[str, Any]) -> dict[str, Any]:
        check_input_keys(inputs)
        if "library" in inputs:
            return self._library_preprocess(inputs)
        seconds_per_feature = inputs.get("seconds_per_feature")
        if seconds_per_feature is not None:
            seconds_per_feature = _check_seconds_per_feature(seconds_per_feature)
        inputs, duration, names = self._raw_inputs(inputs, seconds_per_feature or self.model.config.seconds_per_feature)
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
        if duration is None:
            num_features = int(encoded["video_mask"][0].sum())
            duration = num_features * (seconds_per_feature or self.model.config.seconds_per_feature)
        return {
            "video_features": encoded["video_features"][0],
            "text_features": encoded["text_features"],
            "text_mask": encoded["text_mask"],
            "sentence_features": encoded.get("sentence_features"),
            "seconds_per_feature": seconds_per_feature,
            "many_queries": many,
            "duration": duration,
            "query_names": names if names is not None else [None] * len(queries),
        }

    def _forward(
        self,
        model_inputs: dict[str, Any],
        top_k_windows: int | None = None,
        top_k: int = 5,
        depth: int = 200,
        exhaustive: bool = False,
        segment_windows: str = "overlapping",
    ) -> dict[str, Any]:
        engine = self.engine
        if top_k_windows is not None:
            engine = RGNetGroundingEngine(self.model, engine.memory_budget_bytes, top_k_windows=top_k_windows)
        if "library" in model_inputs:
            return self._library_forward(model_inputs, engine, top_k, depth, exhaustive, segment_windows)
        results = engine.ground(
            model_inputs["video_features"],
            model_inputs["text_features"],
            model_inputs["text_mask"],
            model_inputs["sentence_features"],
            seconds_per_feature=model_inputs["seconds_per_feature"],
        )
        passed = ("many_queries", "duration", "query_names")
        return {"results": results, **{name: model_inputs[name] for name in passed}}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int = 5):
        if "library_rankings" in model_outputs:
            # Already the library's top_k, clamped to each video (VideoLibrary.search).
            ranked = model_outputs["library_rankings"]
            return ranked if model_outputs["many_queries"] else ranked[0]
        duration = model_outputs["duration"]
        ranked = []
        for result, name in zip(model_outputs["results"], model_outputs["query_names"]):
            moments = result.to_list(top_k)
            for moment in moments:
                # Windows and spans may reach past the last frame; the ranking stays the engine's.
                moment["start"] = min(max(moment["start"], 0.0), duration)
                moment["end"] = min(max(moment["end"], 0.0), duration)
                moment["query"] = name
            ranked.append(moments)
        return ranked if model_outputs["many_queries"] else ranked[0]

    def __call__(self, inputs, **kwargs):
        if kwargs.get("batch_size", 1) not in (None, 1):
            # Each video is already one batch of all its windows and queries; videos run one after the other.
            kwargs.pop("batch_size")
        return super().__call__(inputs, **kwargs)


__all__ = ["VideoGroundingPipeline"]
