"""Frame and text encoders that turn a video file and sentences into RGNet's input features.

Two families of transformers models are supported, chosen by the checkpoint's `model_type`:

- **CLIP** (`CLIPModel`, byte-level BPE tokenizer), the MAD release's features with `openai/clip-vit-base-patch32`:
  frame feature = `get_image_features` (the image embedding, visual projection included, 512-d for B/32); token
  features = the text transformer's `last_hidden_state` (its final layer norm, no projection) at the query's tokens,
  start and end tokens dropped; sentence feature = the end-of-text state through the text projection
  (`get_text_features`).
- **SigLIP** (`SiglipModel`, sentencepiece tokenizer): frame feature = `get_image_features` (the attention-pooled
  image embedding); the text is padded to the context length as SigLIP was trained; token features =
  `last_hidden_state` at the query's tokens (end token dropped; SigLIP adds no start token); sentence feature =
  `get_text_features` (the last position through the text head).

Queries get RGNet's clean-up first (`clean_query`): surrounding full stops, spaces and question marks are removed and
one full stop is appended (Ego4D models also lower-case).

**L2 normalisation.** Encoders return raw features, as stored in the MAD release and in `rgnet-hf extract` caches
(frame features are never normalised; RGNet reads them raw). Text features are normalised in one place, when they
become model inputs: [`l2_normalize`] (of `feature_extraction_rgnet`), applied by the data loaders for training and
evaluation and by the `video-grounding` pipeline for text it encodes itself.

**Encoder backends.** Frames go through PyTorch by default (`backend="pytorch"`, exact). Two opt-in backends run the
image encoder (`get_image_features`: the vision tower and its projection) with ONNX Runtime instead, text staying in
PyTorch: `"onnx"` (float32, the same features within float32 rounding) and `"onnx-int8"` (the exported graph with
onnxruntime's dynamic int8 quantisation of its matrix products: faster on CPUs, features close to but not equal to
float32's). The exported graphs are cached in a user folder (`$RGNET_HF_ONNX_CACHE`, default
`~/.cache/rgnet_hf/onnx`) under a key made of the image encoder's configuration and weights, so they are made once per
encoder. The encoder's `backend` is recorded in feature caches, which refuse to mix features of two backends.

This file is copied flat into Hugging Face remote-code folders: it imports the standard library, numpy, torch,
transformers, tqdm and flat modules of this package (and `onnxruntime` / `onnx` inside functions, for the ONNX
backends only).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .video_decoding import (
    VideoDecodingError,
    _pool,
    iter_sampled_frames,
    iter_sampled_frames_parallel,
    iter_videos_sampled_frames_parallel,
    probe_video,
)

__all__ = [
    "FeatureEncoderError",
    "EncodedQuery",
    "EncodedVideo",
    "PixelTransform",
    "VideoTextEncoder",
    "auto_decode_workers",
    "CLIPVideoTextEncoder",
    "SiglipVideoTextEncoder",
    "ENCODER_BACKENDS",
    "check_encoder_backend",
    "clean_query",
    "load_feature_encoder",
    "feature_encoder_for_model",
]

MAD_FEATURE_ENCODER = "openai/clip-vit-base-patch32"

ENCODER_BACKENDS = ("pytorch", "onnx", "onnx-int8")
"""How frames are encoded: PyTorch (default, exact), ONNX Runtime float32, ONNX Runtime with int8 matrix products."""


class FeatureEncoderError(ValueError):
    """A feature encoder cannot be loaded, does not fit the model, or a query cannot be encoded."""


def clean_query(text: str, lowercase: bool = False) -> str:
    """RGNet's query clean-up: strip surrounding `.`, then spaces, then `?`, and end with one `.`.

    Raises [`FeatureEncoderError`] for a query that is empty (or only punctuation) after the clean-up.
    """
    if not isinstance(text, str):
        raise FeatureEncoderError(f"a query must be a string, got {type(text).__name__}")
    cleaned = text.strip(".").strip(" ").strip("?")
    if not cleaned.strip(" .?\t\n"):
        raise FeatureEncoderError(f"empty query {text!r}: give a sentence describing the moment")
    cleaned = cleaned + "."
    return cleaned.lower() if lowercase else cleaned


@dataclass
class EncodedQuery:
    """One query's text features (raw: not L2-normalised).

    Attributes:
        query (`str`): the query as given.
        cleaned (`str`): after [`clean_query`], what the tokenizer saw.
        token_features (`np.ndarray (L, text_feature_size)` float32): one row per query token.
        sentence_features (`np.ndarray (sentence_feature_size,)` float32).
        truncated (`bool`): the query was longer than the text encoder's context and was cut.
    """

    query: str
    cleaned: str
    token_features: np.ndarray
    sentence_features: np.ndarray
    truncated: bool = False


@dataclass
class EncodedVideo:
    """A video's frame features (raw) at the feature rate.

    Attributes:
        features (`np.ndarray (T, video_feature_size)` float32): feature `i` stands for time `i * seconds_per_feature`.
        seconds_per_feature (`float`).
        duration (`float`): seconds covered by the decoded frames (see `video_decoding`).
        source (`str`): the file (or a description of the frame source).
        declared_duration (`float`, *optional*): set for a truncated file encoded with `allow_truncated=True`: the
            duration its container declares, which `duration` falls short of.
    """

    features: np.ndarray
    seconds_per_feature: float
    duration: float
    source: str
    declared_duration: float | None = None


def check_encoder_backend(backend: str | None) -> str:
    """`backend` (None: `"pytorch"`) checked to be one of [`ENCODER_BACKENDS`]."""
    backend = "pytorch" if backend is None else backend
    if backend not in ENCODER_BACKENDS:
        raise FeatureEncoderError(f"unknown encoder backend {backend!r}: choose one of {', '.join(ENCODER_BACKENDS)}")
    return backend


def _pooled(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class VideoTextEncoder:
    """
    A transformers image-text model used as RGNet's frame and text encoder. Use [`load_feature_encoder`] or
    `from_pretrained`, which picks the family from the checkpoint.

    Args:
        model: a `CLIPModel` / `SiglipModel` (any device and dtype; `eval()` is called).
        tokenizer: its tokenizer.
        image_processor: its image processor (it resizes and normalises frames exactly as the model expects).
        name (`str`): the Hub id or folder it came from (recorded in feature caches).
        batch_size (`int`): frames per forward pass.
        backend (`str`): how frames are encoded, one of [`ENCODER_BACKENDS`] (see the module docstring); the ONNX
            ones need `onnxruntime` and `onnx` (`pip install rgnet-hf[onnx]`) and a float32 model.
        onnx_cache_dir (`str` or `os.PathLike`, *optional*): where the ONNX backends keep their exported graphs
            (default `$RGNET_HF_ONNX_CACHE`, else `~/.cache/rgnet_hf/onnx`).
    """

    family: str = ""

    def __init__(
        self,
        model,
        tokenizer,
        image_processor,
        name: str = "",
        batch_size: int = 64,
        backend: str = "pytorch",
        onnx_cache_dir: str | os.PathLike | None = None,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = name
        self.batch_size = batch_size
        self.backend = check_encoder_backend(backend)
        # Built now, not at the first frame: a missing package or a failed export is reported before any decoding.
        self._onnx = None if self.backend == "pytorch" else _OnnxImageEncoder(self.model, self.backend, onnx_cache_dir)
        # Processes that decode a video's keyframe segments in parallel (1: decode in the producer thread); the pool
        # starts at the first video and serves every later one.
        self._decode_workers = 1
        self._decode_pool = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 64,
        backend: str | None = None,
        onnx_cache_dir: str | os.PathLike | None = None,
    ) -> VideoTextEncoder:
        """Load a CLIP or SigLIP checkpoint (Hub id or local folder) as an encoder of the matching family.

        `backend` (default `"pytorch"`) and `onnx_cache_dir` are [`VideoTextEncoder`]'s."""
        backend = check_encoder_backend(backend)
        if backend != "pytorch" and dtype not in (None, torch.float32):
            raise FeatureEncoderError(
                f"the {backend!r} encoder backend exports the float32 image encoder; leave the dtype out (it was "
                f"{dtype}) or use the pytorch backend"
            )
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

        name = os.fspath(name_or_path)
        if os.path.isdir(name):
            name = os.path.abspath(name)  # one spelling per folder, as recorded in feature caches
        try:
            config = AutoConfig.from_pretrained(name)
        except OSError as error:
            raise FeatureEncoderError(
                f"cannot load the feature encoder {name!r} ({error}). Give a Hub id such as "
                f"{MAD_FEATURE_ENCODER!r} (downloaded once, then cached) or a local folder saved with save_pretrained"
            ) from error
        family = _FAMILIES.get(config.model_type)
        if family is None:
            raise FeatureEncoderError(
                f"{name!r} is a {config.model_type!r} model; supported feature encoders: {', '.join(_FAMILIES)}"
            )
        model = AutoModel.from_pretrained(name, dtype=dtype) if dtype is not None else AutoModel.from_pretrained(name)
        if device is not None:
            model = model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(name)
        image_processor = AutoImageProcessor.from_pretrained(name)
        return family(
            model,
            tokenizer,
            image_processor,
            name=name,
            batch_size=batch_size,
            backend=backend,
            onnx_cache_dir=onnx_cache_dir,
        )

    # decoding workers ------------------------------------------------------------------------------------------

    @property
    def decode_workers(self) -> int:
        """Processes that decode (and pre-process) a video's keyframe segments; 1 decodes in this process. Set an
        `int >= 1` or `"auto"` ([`auto_decode_workers`] for this encoder's device)."""
        return self._decode_workers

    @decode_workers.setter
    def decode_workers(self, value: int | str) -> None:
        workers = auto_decode_workers(self.device if self._onnx is None else "cpu") if value == "auto" else value
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"decode_workers must be an int >= 1 or 'auto', got {value!r}")
        workers = int(workers)
        if workers != self._decode_workers:
            self.close()  # a pool of the old size would not run the new count
        self._decode_workers = workers

    def close(self) -> None:
        """Stop the decoding workers' pool, if one was started (a later video starts a new one)."""
        if self._decode_pool is not None:
            self._decode_pool.shutdown(wait=True, cancel_futures=True)
            self._decode_pool = None

    # sizes -----------------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def video_feature_size(self) -> int:
        raise NotImplementedError

    @property
    def text_feature_size(self) -> int:
        return self.model.config.text_config.hidden_size

    @property
    def sentence_feature_size(self) -> int:
        raise NotImplementedError

    @property
    def context_length(self) -> int:
        """Most tokens (special tokens included) the text encoder reads."""
        limit = self.model.config.text_config.max_position_embeddings
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < limit:
            limit = tokenizer_limit
        return limit

    def check_fits(self, config) -> None:
        """Raise [`FeatureEncoderError`] unless this encoder's feature sizes are the model config's."""
        pairs = (
            ("video_feature_size", self.video_feature_size, "frame features"),
            ("text_feature_size", self.text_feature_size, "token features"),
            ("sentence_feature_size", self.sentence_feature_size, "sentence features"),
        )
        wrong = [
            f"{what}: encoder {size}, model {getattr(config, field)} ({field})"
            for field, size, what in pairs
            if getattr(config, field) != size
        ]
        if wrong:
            raise FeatureEncoderError(
                f"the feature encoder {self.name!r} does not fit this model: " + "; ".join(wrong) + ". Use the "
                "encoder the model was trained with (config.feature_encoder) or a model trained on these features"
            )

    # frames ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, images: list[np.ndarray]) -> torch.Tensor:
        """`(H, W, 3)` uint8 RGB frames -> `(N, video_feature_size)` float32 features on the CPU (one forward pass)."""
        pixel_values = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return self._encode_pixels(pixel_values)

    def pixel_transform(self) -> PixelTransform:
        """This encoder's image processor as a picklable frame -> `(3, H, W)` float32 function (for workers)."""
        return PixelTransform(self.image_processor)

    @torch.no_grad()
    def _encode_pixels(self, pixel_values: torch.Tensor, to_cpu: bool = True) -> torch.Tensor:
        """`(N, 3, H, W)` processed frames -> `(N, video_feature_size)` float32 features on the CPU (`to_cpu=False`:
        on the encoder's device, in its dtype, possibly still being computed)."""
        if self._onnx is not None:
            return self._onnx(pixel_values)
        pixel_values = pixel_values.to(self.device, self.dtype, non_blocking=pixel_values.is_pinned())
        features = _pooled(self.model.get_image_features(pixel_values=pixel_values))
        return features.float().cpu() if to_cpu else features

    def encode_frames(
        self,
        frames: Iterable[tuple[int, np.ndarray]],
        *,
        total: int | None = None,
        progress: bool = True,
        description: str = "encoding frames",
        prefetch_batches: int = 2,
        processed: bool = False,
    ) -> np.ndarray:
        """Encode `(feature_index, frame)` pairs (indices 0, 1, ... in order) in batches of `batch_size`.

        Frames are `(H, W, 3)` uint8 RGB, or with `processed=True` already through the image processor (the
        `(3, H, W)` float32 arrays [`pixel_transform`] makes, e.g. in decoding workers).

        Each distinct frame goes through the image processor and the encoder once: a frame repeated for consecutive
        indices (a still scene, or a gap in the timestamps, where one frame covers hours) is encoded once and its
        features copied. Reading `frames` (decoding, for a video) and the image processor run in a background thread,
        up to `prefetch_batches` batches ahead of the encoder, so the encoder does not wait on them; the batches and
        so the features are the same as encoding them one after the other. What is held is at most
        `prefetch_batches + 2` batches of processed frames (e.g. 3 x 224 x 224 floats each), whatever the video's
        resolution and length. Returns `(T, video_feature_size)` float32.
        """
        from tqdm.auto import tqdm

        if prefetch_batches < 1:
            raise ValueError(f"prefetch_batches must be >= 1, got {prefetch_batches}")
        transform = None if processed else self.pixel_transform()
        # On CUDA the batches are made in page-locked memory (by the producer thread), so their copy to the GPU is
        # asynchronous, and a batch's features are fetched only once the next batch is queued: the GPU is not left
        # idle while Python waits for a result and launches the next forward pass.
        on_cuda = self._onnx is None and self.device.type == "cuda"
        prepared = _PreparedFrameBatches(frames, transform, self.batch_size, prefetch_batches, pin_memory=on_cuda)
        chunks: list[np.ndarray] = []
        in_flight: torch.Tensor | None = None
        with tqdm(total=total, desc=description, unit="frame", disable=not progress, dynamic_ncols=True) as bar:
            for pixel_values, num_indices in prepared:
                if pixel_values is not None:
                    features = self._encode_pixels(pixel_values, to_cpu=not on_cuda)
                    if in_flight is not None:
                        chunks.append(in_flight.float().cpu().numpy())
                    in_flight = features
                bar.update(num_indices)
            if in_flight is not None:
                chunks.append(in_flight.float().cpu().numpy())
        if not chunks:
            return np.zeros((0, self.video_feature_size), dtype=np.float32)
        distinct_features = np.concatenate(chunks).astype(np.float32, copy=False)
        rows = np.frombuffer(prepared.rows, dtype=np.int64)
        if len(rows) == len(distinct_features):
            return distinct_features
        return distinct_features[rows]

    def encode_video(
        self,
        path: str | os.PathLike,
        seconds_per_feature: float,
        *,
        progress: bool = True,
        allow_truncated: bool = False,
    ) -> EncodedVideo:
        """Decode a video file, sample it at `1 / seconds_per_feature` (rule in `video_decoding`) and encode it.

        A truncated file is an error, or with `allow_truncated=True` a `TruncatedVideoWarning` and features of the
        decoded part only (`duration` is the decoded one, `declared_duration` the container's)."""
        report: dict = {}
        if self.decode_workers > 1:
            # The workers run the image processor on the frames they decode: it scales with them, and the parent
            # receives 3 x 224 x 224 floats per frame, whatever the video's resolution.
            frames = iter_sampled_frames_parallel(
                path,
                seconds_per_feature,
                report,
                allow_truncated,
                workers=self.decode_workers,
                executor=self._workers_pool(),
                transform=self.pixel_transform(),
            )
        else:
            frames = iter_sampled_frames(path, seconds_per_feature, report=report, allow_truncated=allow_truncated)
        return self._encode_decoded(path, frames, report, seconds_per_feature, progress)

    def encode_videos(
        self,
        paths: Iterable[str | os.PathLike],
        seconds_per_feature: float,
        *,
        progress: bool = True,
        allow_truncated: bool = False,
    ) -> Iterator[tuple[str, EncodedVideo | ValueError]]:
        """[`encode_video`] for several files, in order: `(path, EncodedVideo)` per file, or `(path, error)` for one
        that cannot be used (a `ValueError`: unreadable, truncated, no frames), the others still encoded.

        With `decode_workers > 1` one pool decodes every file and starts on the next files' segments while a file
        is encoded, so a folder of short videos keeps every worker busy (a file of one segment is decoded whole by
        one worker); the features are those of [`encode_video`]."""
        if self.decode_workers <= 1:
            for path in paths:
                try:
                    yield (
                        os.fspath(path),
                        self.encode_video(
                            path, seconds_per_feature, progress=progress, allow_truncated=allow_truncated
                        ),
                    )
                except ValueError as error:
                    yield os.fspath(path), error
            return
        videos = iter_videos_sampled_frames_parallel(
            paths,
            seconds_per_feature,
            allow_truncated,
            workers=self.decode_workers,
            executor=self._workers_pool(),
            transform=self.pixel_transform(),
        )
        try:
            for path, frames, report in videos:
                try:
                    encoded = self._encode_decoded(path, frames, report, seconds_per_feature, progress)
                except ValueError as error:
                    encoded = error
                yield path, encoded
        finally:
            videos.close()

    def _workers_pool(self):
        if self._decode_pool is None:
            self._decode_pool = _pool(self.decode_workers)
        return self._decode_pool

    def _encode_decoded(
        self, path: str | os.PathLike, frames: Iterator, report: dict, seconds_per_feature: float, progress: bool
    ) -> EncodedVideo:
        """Encode the sampled frames of `path` (processed ones where decoding workers made them); `report` is the
        decoder's, complete once `frames` is exhausted."""
        try:
            info = probe_video(path)
        except BaseException:
            frames.close()
            raise
        total = math.ceil(info.duration / seconds_per_feature) if info.duration else None
        features = self.encode_frames(
            frames,
            total=total,
            progress=progress,
            description=f"encoding {os.path.basename(os.fspath(path))}",
            processed=self.decode_workers > 1,
        )
        if len(features) == 0:
            raise VideoDecodingError(f"{os.fspath(path)} has no video frames")
        declared = report.get("declared_duration") if report.get("truncated") else None
        return EncodedVideo(features, seconds_per_feature, float(report["duration"]), os.fspath(path), declared)

    # text ------------------------------------------------------------------------------------------------------

    def _tokenize(self, text: str) -> tuple[list[int], bool]:
        """Token ids of one cleaned query, special tokens included and cut to the context; whether it was cut."""
        full = self.tokenizer(text, truncation=False)["input_ids"]
        if len(full) <= self.context_length:
            return list(full), False
        cut = self.tokenizer(text, truncation=True, max_length=self.context_length)["input_ids"]
        return list(cut), True

    def _token_slice(self, num_ids: int) -> slice:
        raise NotImplementedError

    def _text_states(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (last_hidden_state `(Q, L, Dt)`, sentence features `(Q, Dc)`) for a batch of token-id lists."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_queries(self, queries: str | list[str], *, lowercase: bool = False) -> list[EncodedQuery]:
        """RGNet text features of one or more queries (raw, not normalised), all in one forward pass.

        A query longer than the text encoder's context is cut to it, with a warning.
        """
        if isinstance(queries, str):
            queries = [queries]
        if not isinstance(queries, (list, tuple)) or len(queries) == 0:
            raise FeatureEncoderError("give at least one query")
        cleaned = [clean_query(query, lowercase=lowercase) for query in queries]
        tokenized = [self._tokenize(text) for text in cleaned]
        for query, (_, cut) in zip(queries, tokenized):
            if cut:
                warnings.warn(
                    f"query {query[:60]!r}... is longer than the text encoder's context of {self.context_length} "
                    "tokens: it was truncated",
                    UserWarning,
                    stacklevel=2,
                )
        hidden, sentence = self._text_states([ids for ids, _ in tokenized])
        results = []
        for index, (query, text, (ids, cut)) in enumerate(zip(queries, cleaned, tokenized)):
            tokens = hidden[index, self._token_slice(len(ids))]
            if tokens.shape[0] == 0:
                raise FeatureEncoderError(f"query {query!r} has no tokens besides the special ones")
            results.append(
                EncodedQuery(
                    query=query,
                    cleaned=text,
                    token_features=tokens.float().cpu().numpy(),
                    sentence_features=sentence[index].float().cpu().numpy(),
                    truncated=cut,
                )
            )
        return results


class CLIPVideoTextEncoder(VideoTextEncoder):
    """CLIP as RGNet's encoder (the MAD release: `openai/clip-vit-base-patch32`). See the module docstring."""

    family = "clip"

    @property
    def video_feature_size(self) -> int:
        return self.model.config.projection_dim

    @property
    def sentence_feature_size(self) -> int:
        return self.model.config.projection_dim

    def _token_slice(self, num_ids: int) -> slice:
        return slice(1, num_ids - 1)  # drop the start and end tokens

    def _text_states(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        length = max(len(row) for row in ids)
        input_ids = torch.full((len(ids), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
        for index, row in enumerate(ids):
            input_ids[index, : len(row)] = torch.tensor(row)
            attention_mask[index, : len(row)] = 1
        # CLIP's text attention is causal: padding after a query does not change its states.
        output = self.model.get_text_features(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
        )
        return output.last_hidden_state, output.pooler_output


class SiglipVideoTextEncoder(VideoTextEncoder):
    """SigLIP as RGNet's encoder (sentencepiece tokenizer). See the module docstring."""

    family = "siglip"

    @property
    def video_feature_size(self) -> int:
        return self.model.config.vision_config.hidden_size

    @property
    def sentence_feature_size(self) -> int:
        text_config = self.model.config.text_config
        return getattr(text_config, "projection_size", None) or text_config.hidden_size

    def _token_slice(self, num_ids: int) -> slice:
        return slice(0, num_ids - 1)  # no start token; drop the end token

    def _text_states(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        # SigLIP was trained on text padded to its context length, without an attention mask.
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(ids), self.context_length), pad, dtype=torch.long)
        for index, row in enumerate(ids):
            input_ids[index, : len(row)] = torch.tensor(row)
        output = self.model.get_text_features(input_ids=input_ids.to(self.device))
        return output.last_hidden_state, output.pooler_output


_FAMILIES: dict[str, type[VideoTextEncoder]] = {"clip": CLIPVideoTextEncoder, "siglip": SiglipVideoTextEncoder}


MAX_AUTO_DECODE_WORKERS = 16


def auto_decode_workers(device: str | torch.device) -> int:
    """The decoding workers `"auto"` gives: 1 for an encoder on the CPU (its matrix products use every core, so
    workers only move the same CPU work elsewhere); on an accelerator, where decoding and pre-processing are the CPU's
    whole share, one per CPU this process may run on, less one for the encoder's process, at most
    `MAX_AUTO_DECODE_WORKERS`."""
    if torch.device(device).type == "cpu":
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_AUTO_DECODE_WORKERS, cpus - 1))


class PixelTransform:
    """An image processor applied to one frame: `(H, W, 3)` uint8 RGB -> `(3, H', W')` float32 pixel values, the
    values `image_processor(images=[frame])` gives. Picklable (the processor travels with it), so decoding workers
    can run it where they decode.

    For transformers' PIL image processors of the CLIP / SigLIP kind (a PIL resize, an optional centre crop, rescale
    and normalise) the steps run here without the processor's per-call overhead ([`_DirectPixelPlan`]), bit for bit
    the processor's result. The first frame of each size goes through the processor as well and is compared with
    the direct result; any other processor, a frame that is not 3-channel uint8, or a size whose first frame
    differed goes through the processor itself.
    """

    def __init__(self, image_processor):
        self.image_processor = image_processor
        self._plan = _DirectPixelPlan.for_processor(image_processor)
        self._direct_by_size: dict[tuple[int, int], bool] = {}

    def _processed(self, frame: np.ndarray) -> np.ndarray:
        return self.image_processor(images=[frame], return_tensors="np")["pixel_values"][0]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self._plan is None or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            return self._processed(frame)
        size = (frame.shape[0], frame.shape[1])
        direct = self._direct_by_size.get(size)
        if direct is None:
            expected = self._processed(frame)
            result = self._plan(frame)
            self._direct_by_size[size] = (
                result is not None and result.shape == expected.shape and np.array_equal(result, expected)
            )
            return expected
        return self._plan(frame) if direct else self._processed(frame)

    @property
    def direct(self) -> bool:
        """Whether the processor's steps run here (sizes whose first frame differed still use the processor)."""
        return self._plan is not None


class _DirectPixelPlan:
    """The steps of a transformers PIL image processor with `do_resize` (shortest edge, or height and width), an
    optional `do_center_crop`, `do_rescale` and `do_normalize`, and nothing else, done for one uint8 RGB frame:

    - the same PIL call (`Image.fromarray(frame).resize((w, h), resample)`), at the size transformers'
      `get_resize_output_image_size` gives;
    - the same centre-crop box (frames smaller than the crop, which the processor pads, are left to it);
    - rescale and normalise through a `(3, 256)` table of every uint8 value's result, computed with the processor's
      arithmetic (the rescale in float64 then float32, the normalisation in float32), so each pixel is bit-identical.
    """

    def __init__(self, shortest_edge, height, width, resample, crop, rescale_factor, image_mean, image_std):
        self.shortest_edge, self.height, self.width = shortest_edge, height, width
        self.resample, self.crop = resample, crop
        rescaled = (np.arange(256, dtype=np.float64) * rescale_factor).astype(np.float32)
        mean = np.broadcast_to(np.asarray(image_mean, dtype=np.float32).reshape(-1), (3,))
        std = np.broadcast_to(np.asarray(image_std, dtype=np.float32).reshape(-1), (3,))
        self.table = np.ascontiguousarray((rescaled[None, :] - mean[:, None]) / std[:, None])  # (3, 256)

    @classmethod
    def for_processor(cls, processor) -> _DirectPixelPlan | None:
        """The plan of `processor`, or None where it does anything else (another backend, padding, ...)."""

        def get(holder, name: str, default=None):  # attributes of a processor or a SizeDict, keys of a dict
            return holder.get(name, default) if isinstance(holder, dict) else getattr(holder, name, default)

        if get(processor, "backend") != "pil" or get(processor, "do_pad", False):
            return None
        if not (get(processor, "do_resize") and get(processor, "do_rescale") and get(processor, "do_normalize")):
            return None
        if get(processor, "data_format") not in ("channels_first", None):
            return None
        size = get(processor, "size")
        if size is None or any(get(size, name) for name in ("longest_edge", "max_height", "min_pixels", "max_pixels")):
            return None
        shortest_edge, height, width = get(size, "shortest_edge"), get(size, "height"), get(size, "width")
        if not shortest_edge and not (height and width):
            return None
        crop = None
        if get(processor, "do_center_crop"):
            crop_size = get(processor, "crop_size")
            if crop_size is None or not (get(crop_size, "height") and get(crop_size, "width")):
                return None
            crop = (int(get(crop_size, "height")), int(get(crop_size, "width")))
        mean, std, resample = get(processor, "image_mean"), get(processor, "image_std"), get(processor, "resample")
        if mean is None or std is None or np.size(mean) not in (1, 3) or np.size(std) not in (1, 3) or resample is None:
            return None
        rescale_factor = float(get(processor, "rescale_factor"))
        return cls(shortest_edge, height, width, int(resample), crop, rescale_factor, mean, std)

    def _resized_size(self, frame_height: int, frame_width: int) -> tuple[int, int]:
        if not self.shortest_edge:
            return self.height, self.width
        from transformers.image_transforms import get_resize_output_image_size
        from transformers.image_utils import ChannelDimension

        shape_only = np.broadcast_to(np.uint8(0), (3, frame_height, frame_width))
        return get_resize_output_image_size(
            shape_only, size=self.shortest_edge, default_to_square=False, input_data_format=ChannelDimension.FIRST
        )

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        """`(H, W, 3)` uint8 -> `(3, H', W')` float32, or None for a frame this plan leaves to the processor."""
        from PIL import Image

        height, width = self._resized_size(frame.shape[0], frame.shape[1])
        resized = np.asarray(Image.fromarray(frame).resize((width, height), resample=self.resample))
        if self.crop is not None:
            crop_height, crop_width = self.crop
            top, left = (height - crop_height) // 2, (width - crop_width) // 2
            if top < 0 or left < 0:
                return None
            resized = resized[top : top + crop_height, left : left + crop_width]
        pixels = np.empty((3, resized.shape[0], resized.shape[1]), dtype=np.float32)
        for channel in range(3):
            np.take(self.table[channel], resized[:, :, channel], out=pixels[channel])
        return pixels


class _PreparedFrameBatches:
    """Iterate `(pixel_values (n, 3, H, W) or None, feature indices covered)` for `encode_frames`, made in a thread.

    The thread reads `frames`, drops consecutive repeats of one frame object (recording in `rows`, per feature index,
    the row of its distinct frame) and runs the encoder's [`PixelTransform`] on them (`None`: the frames are pixel
    values already), at most `prefetch_batches` batches ahead. An error there is raised by the iteration; leaving
    the iteration early (an error in the encoder, Ctrl-C) stops the thread
    and closes `frames`, so a video file is not left open.
    """

    _DONE = object()

    def __init__(
        self,
        frames: Iterable,
        transform: PixelTransform | None,
        batch_size: int,
        prefetch_batches: int,
        pin_memory: bool = False,
    ):
        import queue
        import threading
        from array import array

        self._frames = iter(frames)
        self._transform = transform
        self._batch_size = batch_size
        self._pin_memory = pin_memory
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch_batches)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="rgnet-frame-batches", daemon=True)
        self.rows = array("q")  # feature index -> row among the distinct frames; complete once iteration ends

    def __iter__(self):
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()
            self._thread.join()

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _stack(self, batch: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(batch)
        return stacked.pin_memory() if self._pin_memory else stacked

    def _produce(self) -> None:
        try:
            batch: list[torch.Tensor] = []
            previous = None
            distinct = -1
            pending = 0
            for expected, (index, frame) in enumerate(self._frames):
                if self._stop.is_set():
                    return
                if index != expected:
                    raise ValueError(f"frame indices must run 0, 1, ...: got {index} at position {expected}")
                if frame is not previous:
                    previous = frame
                    distinct += 1
                    batch.append(torch.from_numpy(frame if self._transform is None else self._transform(frame)))
                    if len(batch) == self._batch_size:
                        if not self._put((self._stack(batch), pending)):
                            return
                        batch, pending = [], 0
                self.rows.append(distinct)
                pending += 1
            if batch or pending:
                if not self._put((self._stack(batch) if batch else None, pending)):
                    return
            self._put(self._DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consuming thread, which raises it
            self._put(error)
        finally:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()


class _ImageFeatures(torch.nn.Module):
    """`get_image_features` as a module with one tensor output, the graph the ONNX backends export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixel_values))


def _onnx_cache_root(cache_dir: str | os.PathLike | None) -> str:
    if cache_dir is not None:
        return os.fspath(cache_dir)
    if os.environ.get("RGNET_HF_ONNX_CACHE"):
        return os.environ["RGNET_HF_ONNX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rgnet_hf", "onnx")


def _image_encoder_key(model) -> str:
    """A digest of what the exported graph depends on: the model class, its vision configuration, every weight
    outside the text tower, and the torch version (the exporter). Two folders holding the same encoder share it."""
    import hashlib
    import json

    digest = hashlib.sha256()
    vision_config = model.config.vision_config.to_dict()
    header = {"class": type(model).__name__, "vision_config": vision_config, "torch": torch.__version__}
    if hasattr(model.config, "projection_dim"):
        header["projection_dim"] = model.config.projection_dim
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(("text_model.", "text_projection.", "logit_")):
            continue
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


class _OnnxImageEncoder:
    """
    The image encoder of a CLIP / SigLIP model run by ONNX Runtime (float32, or with int8 dynamic quantisation).

    The graph is exported once per encoder (`torch.onnx.export`, a dynamic batch axis; frames keep the processor's
    fixed size) into `<cache>/<key>/image_encoder.onnx`, and quantised into `image_encoder.int8.onnx` for `onnx-int8`;
    each file is written under a temporary name and renamed, so a file found there is complete. Runs on the CUDA
    provider when the model is on a GPU and onnxruntime has it, else on the CPU.
    """

    def __init__(self, model, backend: str, cache_dir: str | os.PathLike | None = None):
        try:
            import onnxruntime
        except ImportError as error:
            raise FeatureEncoderError(
                f"the {backend!r} encoder backend needs onnxruntime and onnx: pip install 'rgnet-hf[onnx]' (or "
                "onnxruntime onnx), or use the default pytorch backend"
            ) from error
        parameter = next(model.parameters())
        if parameter.dtype != torch.float32:
            raise FeatureEncoderError(
                f"the {backend!r} encoder backend exports the float32 image encoder, but the model is {parameter.dtype}"
            )
        self.backend = backend
        folder = os.path.join(_onnx_cache_root(cache_dir), _image_encoder_key(model))
        float_path = os.path.join(folder, "image_encoder.onnx")
        if not os.path.isfile(float_path):
            self._export(model, float_path)
        path = float_path
        if backend == "onnx-int8":
            path = os.path.join(folder, "image_encoder.int8.onnx")
            if not os.path.isfile(path):
                self._quantize(float_path, path)
        self.path = path
        providers = ["CPUExecutionProvider"]
        if parameter.device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(path, sess_options=options, providers=providers)
        self._input = self.session.get_inputs()[0].name

    @staticmethod
    def _temporary(path: str) -> str:
        return f"{path}.tmp-{os.getpid()}"

    @classmethod
    def _export(cls, model, path: str) -> None:
        size = model.config.vision_config.image_size
        parameter = next(model.parameters())
        example = torch.zeros(2, model.config.vision_config.num_channels, size, size, device=parameter.device)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = cls._temporary(path)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the exporter's tracer warnings are about shapes fixed on purpose
                torch.onnx.export(
                    _ImageFeatures(model).eval(),
                    (example,),
                    temporary,
                    input_names=["pixel_values"],
                    output_names=["image_features"],
                    dynamic_axes={"pixel_values": {0: "batch"}, "image_features": {0: "batch"}},
                    opset_version=17,
                    dynamo=False,  # the TorchScript exporter: no onnxscript needed
                )
        except BaseException as error:
            if os.path.exists(temporary):
                os.remove(temporary)
            if isinstance(error, Exception):
                raise FeatureEncoderError(f"could not export the image encoder to ONNX ({error})") from error
            raise
        os.replace(temporary, path)

    @classmethod
    def _quantize(cls, float_path: str, path: str) -> None:
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        temporary = cls._temporary(path)
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)  # its advice to pre-process the graph, printed to the root logger
        try:
            # Matrix products only: they are nearly all of a ViT's work (the patch convolution is one layer).
            quantize_dynamic(
                float_path, temporary, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8
            )
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise
        finally:
            logging.disable(previous)
        os.replace(temporary, path)

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(N, 3, H, W)` -> `(N, D)` float32 on the CPU."""
        inputs = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        (features,) = self.session.run(None, {self._input: inputs})
        return torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))


def load_feature_encoder(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 64,
    backend: str | None = None,
    onnx_cache_dir: str | os.PathLike | None = None,
) -> VideoTextEncoder:
    """[`VideoTextEncoder.from_pretrained`]: a CLIP or SigLIP checkpoint (Hub id or folder) as an encoder."""
    return VideoTextEncoder.from_pretrained(
        name_or_path, device=device, dtype=dtype, batch_size=batch_size, backend=backend, onnx_cache_dir=onnx_cache_dir
    )


def feature_encoder_for_model(
    config,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 64,
    backend: str | None = None,
    onnx_cache_dir: str | os.PathLike | None = None,
) -> VideoTextEncoder:
    """The encoder named by an RGNet config's `feature_encoder`, checked to fit the model's feature sizes.

    `backend` defaults to the config's `feature_encoder_backend` when it names one (a model folder can ask for
    `"onnx-int8"` in its `config.json`), else `"pytorch"`.

    Raises [`FeatureEncoderError`] when the config names none (Ego4D presets: EgoVLP has no transformers model) or
    when the encoder's sizes differ from the model's.
    """
    name = getattr(config, "feature_encoder", None)
    if not name:
        raise FeatureEncoderError(
            "this model's config names no feature encoder (`feature_encoder` is None), so it cannot read video files "
            "or raw text. Models on the Ego4D presets read EgoVLP video features, and EgoVLP has no transformers "
            "model: extract the features with EgoVLP's own code and pass them as `video_features` / "
            "`text_features` (or `rgnet-hf ground --features FILE.h5`). A model trained on CLIP or SigLIP features "
            f"names its encoder in `config.feature_encoder` (e.g. {MAD_FEATURE_ENCODER!r})."
        )
    if backend is None:
        backend = getattr(config, "feature_encoder_backend", None)
    encoder = load_feature_encoder(
        name, device=device, dtype=dtype, batch_size=batch_size, backend=backend, onnx_cache_dir=onnx_cache_dir
    )
    encoder.check_fits(config)
    return encoder
