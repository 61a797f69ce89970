"""A synthetic long-video grounding benchmark written in the official MAD release layout.

[`make_synthetic_mad`] writes `annotations/MAD_{train,val,test}.json` and the CLIP-named HDF5 feature files, so that
`rgnet_hf.data.load_mad` (and every tool built on it) reads the benchmark exactly as it reads MAD. The content is
generated so that grounding has to be *learned*:

- **Videos** are long sequences of features at 5 fps made of piecewise-constant "scenes" (exponential lengths, mean
  `scene_seconds`) with a slow drift inside each scene and per-frame noise. Scene directions mix a direction shared by
  every video, a direction per video and a direction per scene, so frames are strongly correlated (as CLIP frame
  features are), and rows are not normalised: their norms spread around `background_norm` (with 5, the standard
  preset's frame norms run from about 4 to 8).
- **Queries** are sequences of L2-normalised token features drawn from a seeded vocabulary; a fraction
  (`shared_vocab_fraction`) of the tokens of a video's queries comes from that video's own small sub-vocabulary, so
  queries of one video resemble each other.
- **Moments** (lengths log-normal, median `moment_median_s`, clipped to `moment_range_s`, like MAD's short moments)
  carry a signal `signal_amplitude * background_norm * g(text)`, added to the frames of the moment. `g` is a fixed
  random (seeded) nonlinear map from the mean text token to the video space: a one-hidden-layer tanh MLP, output
  normalised. It is not a copy of any input, so a model must learn it from training pairs.
- **Distractors**: for every query, `distractors_per_query` segments elsewhere in the same video carry
  `distractor_amplitude * signal_amplitude * background_norm * g(text')`, where `text'` keeps each query token with
  probability `distractor_similarity` and replaces the others with tokens of the video's sub-vocabulary (a partial
  match).
- **Sentence features** (the `[Dv]` features used by the CONE feature-matching score and the zero-shot baseline) are
  `normalize(a * g(text) + sqrt(1 - a**2) * u)` with `a = sentence_alignment` and `u` the unit part, orthogonal to
  `g(text)`, of another fixed random projection `P` of the pooled text: with a small `a`, cosine matching between the
  sentence and the frames is weak (it does not reveal the moment), as zero-shot CLIP is weak on MAD.

Everything is deterministic given `seed`: the shared parts (vocabulary, `g`, `P`, the common direction) come from
`numpy.random.default_rng([seed, 0])` and video `i` (its features and queries) from `default_rng([seed, 1, i])`.
Videos are generated and written one at a time, so memory holds one video, whatever the benchmark's size.

See `docs/synthetic_benchmark.md` for the parameters, the presets and measured baselines.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..configuration_rgnet import MAD_SECONDS_PER_FEATURE

__all__ = [
    "COMPARISON_MODEL",
    "SYNTHETIC_PRESETS",
    "SyntheticMADConfig",
    "SyntheticWorld",
    "load_synthetic_mad",
    "make_synthetic_mad",
    "read_synthetic_config",
    "synthetic_mad_paths",
    "write_signal_features",
]

BENCHMARK_FORMAT_VERSION = 1
CONFIG_NAME = "synthetic_benchmark.json"
VIDEO_FEATURES_NAME = "CLIP_B32_frames_features_5fps.h5"
TEXT_FEATURES_NAME = "CLIP_B32_language_tokens_features.h5"
# One file per split, named like MAD's test file, plus one with every query (what `load_mad` takes).
SENTENCE_FEATURES_NAME = "CLIP_B32_language_features_MAD_{split}.h5"
ALL_SENTENCE_FEATURES_NAME = "CLIP_B32_language_features_MAD_all.h5"
SIGNAL_FEATURES_NAME = "oracle_signal_features.h5"
SPLIT_NAMES = ("train", "val", "test")

# Fixed shape of the background (not parameters: the difficulty knobs are in SyntheticMADConfig).
_COMMON_WEIGHT, _VIDEO_WEIGHT, _SCENE_WEIGHT = 0.7, 0.4, 0.6  # mix of the scene directions
_SCENE_NORM_LOG_STD = 0.15  # spread of the per-scene feature norm around background_norm
_SCENE_DRIFT = 0.25  # drift across a scene, relative to its norm
_SIGNAL_HIDDEN_SIZE = 256  # hidden units of g
_SIGNAL_BIAS_STD = 0.5  # std of g's hidden bias
_EXT_MIN_SECONDS = 2.0  # ext_timestamps stretch moments shorter than this (as MAD's ext_timestamps are said to)
_DISTRACTOR_TRIES = 20  # placements tried per distractor before giving up on it
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


# The RGNet that the synthetic comparisons train (benchmarks/synthetic_comparison.py): a reduced model for 512-d
# features: 30-second windows (150 features at 5 fps), hidden size 128, 3 decoder layers.
COMPARISON_MODEL = {
    "hidden_size": 128,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "window_length": 150,
    "num_decoder_layers": 3,
    "input_dropout": 0.1,
    "top_k_windows": 20,
}


def _range(value: float | tuple[float, float] | list[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low = high = float(value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        low, high = float(value[0]), float(value[1])
    else:
        raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{name} must be finite with min <= max, got {value!r}")
    return low, high


@dataclass(frozen=True)
class SyntheticMADConfig:
    """Every parameter of the synthetic MAD-format benchmark.

    Size:
        num_videos (`int`): videos ("movies") in all splits together.
        splits (`dict[str, int | float]`): videos per split, for `"train"`, `"val"`, `"test"` (a split may be
            missing). Ints are counts and must sum to `num_videos`; floats are fractions of `num_videos` (rounded
            by largest remainder; a split with a positive fraction gets at least one video).
        video_minutes (`float` or `(min, max)`): length of each video, drawn uniformly in the range.
        queries_per_video (`int`): queries (moments) per video.
        video_feature_size (`int`): `Dv`, size of the frame features and of the sentence features.
        text_feature_size (`int`): `Dt`, size of the token features.
        num_tokens (`(min, max)`): tokens per query, drawn uniformly (inclusive).
        seconds_per_feature (`float`): seconds between frame features (0.2 = 5 fps, as MAD).
        dtype (`str`): `"float32"` or `"float16"` storage of the frame features (the loaders return float32).
        seed (`int`): everything is a deterministic function of the config (seed included).

    Text:
        vocab_size (`int`): tokens in the shared vocabulary.
        video_vocab_size (`int`): tokens of each video's own sub-vocabulary (drawn from the shared one).
        shared_vocab_fraction (`float` in [0, 1]): fraction of a query's tokens drawn from its video's sub-vocabulary
            (the rest from the whole vocabulary). Higher: queries of one video look more alike (harder).

    Moments:
        moment_median_s (`float`), moment_log_std (`float`): log-normal moment lengths in seconds (MAD's moments
            average about 4.1 s: the defaults give a median of 3.4 s and a mean of about 4.1 s).
        moment_range_s (`(min, max)`): lengths are clipped to this range (seconds).

    Difficulty:
        signal_amplitude (`float` > 0): norm of the moment signal relative to `background_norm` (lower: harder).
        text_nonlinearity (`float` >= 0): gain `k` of `g`'s hidden layer `(tanh(k x + b) - tanh(b)) / k` (0: its
            linear limit, so `g` is a linear map followed by a normalisation; higher: more nonlinear, harder).
        distractors_per_query (`int` >= 0): partly matching segments per query elsewhere in its video.
        distractor_similarity (`float` in [0, 1]): probability that a query token is kept in a distractor's text
            (1: the distractor carries exactly the query's signal; higher: harder).
        distractor_amplitude (`float` >= 0): amplitude of a distractor relative to `signal_amplitude`.
        sentence_alignment (`float` in [0, 1]): cosine between the sentence feature and `g(text)`. 0: the sentence
            tells nothing about the moment's content; 1: the sentence is the signal's direction (a planted copy).
        noise (`float` >= 0): norm of the per-frame Gaussian noise relative to `background_norm`.
        background_norm (`float` > 0): typical norm of a frame feature (CLIP frame features are not normalised).
        scene_seconds (`float` > 0): mean length of a background scene.
    """

    num_videos: int = 60
    splits: Mapping[str, int | float] = field(default_factory=lambda: {"train": 40, "val": 10, "test": 10})
    video_minutes: float | tuple[float, float] = (20.0, 30.0)
    queries_per_video: int = 60
    video_feature_size: int = 512
    text_feature_size: int = 512
    num_tokens: tuple[int, int] = (6, 16)
    seconds_per_feature: float = MAD_SECONDS_PER_FEATURE
    dtype: str = "float32"
    vocab_size: int = 1000
    video_vocab_size: int = 40
    shared_vocab_fraction: float = 0.5
    moment_median_s: float = 3.4
    moment_log_std: float = 0.6
    moment_range_s: tuple[float, float] = (1.0, 30.0)
    signal_amplitude: float = 0.6
    text_nonlinearity: float = 1.0
    distractors_per_query: int = 2
    distractor_similarity: float = 0.5
    distractor_amplitude: float = 0.7
    sentence_alignment: float = 0.1
    noise: float = 0.3
    background_norm: float = 5.0
    scene_seconds: float = 8.0
    seed: int = 0

    def __post_init__(self):
        def integer(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")

        def number(name: str, minimum: float, maximum: float = math.inf, strict: bool = False) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            low_ok = value > minimum if strict else value >= minimum
            if not (math.isfinite(value) and low_ok and value <= maximum):
                bound = f"> {minimum}" if strict else f">= {minimum}"
                upper = "" if maximum == math.inf else f" and <= {maximum}"
                raise ValueError(f"{name} must be {bound}{upper}, got {value!r}")

        for name, minimum in (
            ("num_videos", 1),
            ("queries_per_video", 1),
            ("video_feature_size", 1),
            ("text_feature_size", 1),
            ("vocab_size", 1),
            ("video_vocab_size", 1),
            ("distractors_per_query", 0),
            ("seed", 0),
        ):
            integer(name, minimum)
        for name in ("seconds_per_feature", "signal_amplitude", "background_norm", "scene_seconds", "moment_median_s"):
            number(name, 0.0, strict=True)
        for name in ("moment_log_std", "text_nonlinearity", "distractor_amplitude", "noise"):
            number(name, 0.0)
        for name in ("shared_vocab_fraction", "distractor_similarity", "sentence_alignment"):
            number(name, 0.0, 1.0)
        if self.video_vocab_size > self.vocab_size:
            raise ValueError(f"video_vocab_size ({self.video_vocab_size}) must be <= vocab_size ({self.vocab_size})")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {self.dtype!r}")
        minutes = _range(self.video_minutes, "video_minutes")
        lengths = _range(self.moment_range_s, "moment_range_s")
        if lengths[0] <= 0:
            raise ValueError(f"moment_range_s must be positive, got {self.moment_range_s!r}")
        if lengths[1] > minutes[0] * 60:
            raise ValueError(
                f"the longest moment ({lengths[1]} s) must fit in the shortest video ({minutes[0]} min): lower "
                "moment_range_s or raise video_minutes"
            )
        if minutes[0] * 60 / self.seconds_per_feature < 1:
            raise ValueError(f"video_minutes {self.video_minutes!r} gives videos without a single feature")
        tokens = self.num_tokens
        if (
            not isinstance(tokens, (tuple, list))
            or len(tokens) != 2
            or not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in tokens)
            or not 1 <= tokens[0] <= tokens[1]
        ):
            raise ValueError(f"num_tokens must be a (min, max) pair of ints with 1 <= min <= max, got {tokens!r}")
        self.split_counts()  # validates `splits`

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SyntheticMADConfig:
        """The preset `name` of [`SYNTHETIC_PRESETS`] with some fields changed (`from_preset("demo", seed=3)`)."""
        if name not in SYNTHETIC_PRESETS:
            raise ValueError(f"unknown synthetic preset {name!r}; choose one of {sorted(SYNTHETIC_PRESETS)}")
        return SYNTHETIC_PRESETS[name].replace(**overrides)

    def replace(self, **overrides: Any) -> SyntheticMADConfig:
        """A copy with some fields changed (validated). Changing `num_videos` alone rescales integer `splits`."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown synthetic benchmark parameter(s) {unknown}; valid: {sorted(names)}")
        if "num_videos" in overrides and "splits" not in overrides and _all_ints(self.splits):
            total = sum(self.splits.values())
            overrides["splits"] = {name: count / total for name, count in self.splits.items()}
        return dataclasses.replace(self, **overrides)

    def split_counts(self) -> dict[str, int]:
        """Videos per split, `{"train": n, "val": n, "test": n}` (splits absent from `splits` get none)."""
        splits = dict(self.splits)
        unknown = sorted(set(splits) - set(SPLIT_NAMES))
        if unknown or not splits:
            raise ValueError(f"splits must map some of {list(SPLIT_NAMES)} to video counts, got {splits!r}")
        values = list(splits.values())
        if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) for v in values):
            raise ValueError(f"splits values must be counts (int) or fractions (float), got {splits!r}")
        if any(v < 0 for v in values) or sum(values) <= 0:
            raise ValueError(f"splits values must be >= 0 with a positive total, got {splits!r}")
        if _all_ints(splits):
            if sum(values) != self.num_videos:
                raise ValueError(f"split counts {splits} sum to {sum(values)}, but num_videos is {self.num_videos}")
            counts = {name: int(v) for name, v in splits.items()}
        else:
            positive = [name for name, v in splits.items() if v > 0]
            if len(positive) > self.num_videos:
                raise ValueError(f"{self.num_videos} videos cannot fill the {len(positive)} splits {positive}")
            total = float(sum(values))
            exact = {name: self.num_videos * v / total for name, v in splits.items()}
            counts = {name: max(int(math.floor(x)), 1 if splits[name] > 0 else 0) for name, x in exact.items()}
            while sum(counts.values()) > self.num_videos:  # the minimum of one video overshot: take from the largest
                largest = max(counts, key=lambda n: (counts[n], n))
                counts[largest] -= 1
            remainders = sorted(splits, key=lambda n: (-(exact[n] - math.floor(exact[n])), SPLIT_NAMES.index(n)))
            for name in remainders[: self.num_videos - sum(counts.values())]:
                counts[name] += 1
        return {name: counts.get(name, 0) for name in SPLIT_NAMES}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (what `synthetic_benchmark.json` records)."""
        values = dataclasses.asdict(self)
        values["splits"] = dict(self.splits)
        for name in ("video_minutes", "num_tokens", "moment_range_s"):
            if isinstance(values[name], (tuple, list)):
                values[name] = list(values[name])
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SyntheticMADConfig:
        values = dict(values)
        for name in ("video_minutes", "num_tokens", "moment_range_s"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)


def _all_ints(splits: Mapping[str, Any]) -> bool:
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in splits.values())


SYNTHETIC_PRESETS: dict[str, SyntheticMADConfig] = {
    # Tiny and easy enough to be learned by a small RGNet on two CPU cores in about two minutes (64-d features,
    # windows of a few dozen frames): for the demo and the tests of the training loop.
    "demo": SyntheticMADConfig(
        num_videos=36,
        splits={"train": 24, "val": 6, "test": 6},
        video_minutes=(4.0, 6.0),
        queries_per_video=16,
        video_feature_size=64,
        text_feature_size=64,
        num_tokens=(4, 10),
        vocab_size=300,
        video_vocab_size=24,
        shared_vocab_fraction=0.3,
        signal_amplitude=1.5,
        text_nonlinearity=0.5,
        distractors_per_query=1,
        distractor_amplitude=0.4,
        sentence_alignment=0.2,
        noise=0.1,
    ),
    # Long videos, MAD's feature sizes, 3,600 queries: the benchmark of the documentation's results table.
    "standard": SyntheticMADConfig(dtype="float16"),
}


# ----------------------------------------------------------------------------------------------------------------------
# The fixed random "world": vocabulary, signal map g, sentence projection


def _unit(array: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64 in, float64 out)."""
    norm = np.linalg.norm(array, axis=-1, keepdims=True)
    return array / np.maximum(norm, 1e-12)


class SyntheticWorld:
    """The shared random parts of a benchmark, fixed by the seed: the token vocabulary, the signal map `g` and the
    sentence projection.

    Attributes:
        vocabulary (`np.ndarray (vocab_size, Dt)` float32): L2-normalised token features.
        words (`list[str]`): a pronounceable pseudo-word per token (the annotation sentences are made of them).
        common_direction (`np.ndarray (Dv,)`): the background direction shared by every video.
    """

    def __init__(self, config: SyntheticMADConfig):
        self.config = config
        rng = np.random.default_rng([config.seed, 0])
        dt, dv = config.text_feature_size, config.video_feature_size
        self.vocabulary = _unit(rng.standard_normal((config.vocab_size, dt))).astype(np.float32)
        self.words = self._make_words(rng, config.vocab_size)
        self._w1 = rng.standard_normal((dt, _SIGNAL_HIDDEN_SIZE))
        self._b1 = rng.standard_normal(_SIGNAL_HIDDEN_SIZE) * _SIGNAL_BIAS_STD
        self._w2 = rng.standard_normal((_SIGNAL_HIDDEN_SIZE, dv)) / math.sqrt(_SIGNAL_HIDDEN_SIZE)
        self._sentence_projection = rng.standard_normal((dt, dv))
        self.common_direction = _unit(rng.standard_normal(dv))

    @staticmethod
    def _make_words(rng: np.random.Generator, count: int) -> list[str]:
        words, seen = [], set()
        while len(words) < count:
            word = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
            while word in seen:
                word += str(rng.choice(_SYLLABLES))
            seen.add(word)
            words.append(word)
        return words

    def pooled_text(self, token_ids: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Unit mean token feature of each query.

        Args:
            token_ids: one `(L_i,)` int array per query (or a single one).

        Returns:
            `np.ndarray (N, Dt)` float64 (or `(Dt,)` for a single query).
        """
        single = isinstance(token_ids, np.ndarray) and token_ids.ndim == 1
        groups = [token_ids] if single else list(token_ids)
        pooled = _unit(np.stack([self.vocabulary[np.asarray(ids)].astype(np.float64).mean(0) for ids in groups]))
        return pooled[0] if single else pooled

    def signal_direction(self, pooled: np.ndarray) -> np.ndarray:
        """`g(text)`: the unit direction a query's moment carries, from its pooled text `(N, Dt)` (or `(Dt,)`).

        Returns:
            `np.ndarray (N, Dv)` (or `(Dv,)`) float64, unit rows.
        """
        pre_activation = pooled @ self._w1  # entries ~ N(0, 1) for a unit pooled text
        gain = self.config.text_nonlinearity
        if gain == 0:  # the limit gain -> 0: the tanh's tangent at the bias, a linear map
            hidden = (1.0 - np.tanh(self._b1) ** 2) * pre_activation
        else:  # centred so that g(0) = 0, scaled so that every gain has the same slope at 0
            hidden = (np.tanh(gain * pre_activation + self._b1) - np.tanh(self._b1)) / gain
        return _unit(hidden @ self._w2)

    def sentence_feature(self, pooled: np.ndarray) -> np.ndarray:
        """The unit sentence feature `(N, Dv)` (or `(Dv,)`): `sentence_alignment` of `g(text)` plus an orthogonal
        part made from the fixed random projection of the pooled text."""
        alignment = self.config.sentence_alignment
        signal = self.signal_direction(pooled)
        projected = _unit(pooled @ self._sentence_projection)
        # Remove the signal's component from the projection so that cos(sentence, g(text)) is exactly `alignment`.
        orthogonal = _unit(projected - (projected * signal).sum(-1, keepdims=True) * signal)
        return _unit(alignment * signal + math.sqrt(max(0.0, 1.0 - alignment**2)) * orthogonal)


# ----------------------------------------------------------------------------------------------------------------------
# One video


@dataclass
class _Query:
    token_ids: np.ndarray
    timestamps: tuple[float, float]
    distractors: list[tuple[float, float]]


def _frame_range(start: float, end: float, seconds_per_feature: float, num_frames: int) -> tuple[int, int]:
    """Frames `[a, b)` overlapping `[start, end]` s (frame i covers `[i, i + 1) * seconds_per_feature`), >= 1 frame."""
    first = min(max(int(math.floor(start / seconds_per_feature + 1e-9)), 0), num_frames - 1)
    last = min(max(int(math.ceil(end / seconds_per_feature - 1e-9)), first + 1), num_frames)
    return first, last


def _background(rng: np.random.Generator, config: SyntheticMADConfig, world: SyntheticWorld, num_frames: int):
    """Scenes: per-frame `(T, Dv)` float32 background, before noise and signals."""
    dv = config.video_feature_size
    spf = config.seconds_per_feature
    mean_frames = config.scene_seconds / spf
    lengths: list[np.ndarray] = []
    covered = 0
    while covered < num_frames:
        draw = np.maximum(np.round(rng.exponential(mean_frames, size=int(num_frames / mean_frames) + 8)), 1)
        lengths.append(draw.astype(np.int64))
        covered += int(draw.sum())
    scene_lengths = np.concatenate(lengths)
    ends = np.cumsum(scene_lengths)
    num_scenes = int(np.searchsorted(ends, num_frames) + 1)
    scene_lengths = scene_lengths[:num_scenes]
    starts = np.concatenate([[0], np.cumsum(scene_lengths)[:-1]])

    video_direction = _unit(rng.standard_normal(dv))
    scene_directions = _unit(
        _COMMON_WEIGHT * world.common_direction
        + _VIDEO_WEIGHT * video_direction
        + _SCENE_WEIGHT * _unit(rng.standard_normal((num_scenes, dv)))
    )
    norms = config.background_norm * np.exp(_SCENE_NORM_LOG_STD * rng.standard_normal(num_scenes))
    drifts = _SCENE_DRIFT * _unit(rng.standard_normal((num_scenes, dv)))
    scene_of_frame = np.repeat(np.arange(num_scenes), scene_lengths)[:num_frames]
    position = (np.arange(num_frames) - starts[scene_of_frame]) / scene_lengths[scene_of_frame] - 0.5
    scene_rows = (norms[:, None] * scene_directions).astype(np.float32)
    drift_rows = (norms[:, None] * drifts).astype(np.float32)
    return scene_rows[scene_of_frame] + position[:, None].astype(np.float32) * drift_rows[scene_of_frame]


def _moment_length(rng: np.random.Generator, config: SyntheticMADConfig) -> float:
    low, high = _range(config.moment_range_s, "moment_range_s")
    length = config.moment_median_s * math.exp(config.moment_log_std * rng.standard_normal())
    return float(min(max(length, low), high))


def _draw_tokens(rng: np.random.Generator, config: SyntheticMADConfig, video_vocab: np.ndarray) -> np.ndarray:
    count = int(rng.integers(config.num_tokens[0], config.num_tokens[1] + 1))
    from_video = int(rng.binomial(count, config.shared_vocab_fraction))
    own = rng.choice(video_vocab, size=from_video, replace=from_video > video_vocab.size)
    shared = rng.choice(config.vocab_size, size=count - from_video, replace=count - from_video > config.vocab_size)
    tokens = np.concatenate([own, shared]).astype(np.int64)
    return tokens[rng.permutation(count)]


def _make_video(
    config: SyntheticMADConfig, world: SyntheticWorld, index: int
) -> tuple[np.ndarray, list[_Query], float]:
    """One video: features `(T, Dv)` float32, its queries, its duration (s)."""
    rng = np.random.default_rng([config.seed, 1, index])
    spf = config.seconds_per_feature
    low, high = _range(config.video_minutes, "video_minutes")
    num_frames = max(int(round(rng.uniform(low, high) * 60 / spf)), 1)
    duration = round(num_frames * spf, 6)
    features = _background(rng, config, world, num_frames)
    video_vocab = rng.choice(config.vocab_size, size=config.video_vocab_size, replace=False)

    queries: list[_Query] = []
    for _ in range(config.queries_per_video):
        token_ids = _draw_tokens(rng, config, video_vocab)
        length = min(_moment_length(rng, config), duration)
        start = round(float(rng.uniform(0.0, duration - length)), 2)
        end = round(min(start + length, duration), 2)
        queries.append(_Query(token_ids, (start, end), []))

    amplitude = config.signal_amplitude * config.background_norm
    signals = world.signal_direction(world.pooled_text([q.token_ids for q in queries])).astype(np.float32)
    for query, signal in zip(queries, signals):
        first, last = _frame_range(*query.timestamps, spf, num_frames)
        features[first:last] += amplitude * signal

    # Distractors: a partial match of the query's text, elsewhere in the video.
    distractor_texts = []
    for query in queries:
        start, end = query.timestamps
        for _ in range(config.distractors_per_query):
            keep = rng.random(query.token_ids.size) < config.distractor_similarity
            replaced = rng.choice(video_vocab, size=query.token_ids.size)
            token_ids = np.where(keep, query.token_ids, replaced)
            length = min(_moment_length(rng, config), duration)
            for _ in range(_DISTRACTOR_TRIES):
                d_start = float(rng.uniform(0.0, duration - length))
                if d_start + length <= start or d_start >= end:  # never overlaps the query's own moment
                    query.distractors.append((d_start, d_start + length))
                    distractor_texts.append(token_ids)
                    break
    if distractor_texts:
        distractor_signals = world.signal_direction(world.pooled_text(distractor_texts)).astype(np.float32)
        spans = [span for query in queries for span in query.distractors]
        scale = config.distractor_amplitude * amplitude
        for (d_start, d_end), signal in zip(spans, distractor_signals, strict=True):
            first, last = _frame_range(d_start, d_end, spf, num_frames)
            features[first:last] += scale * signal

    if config.noise > 0:
        noise_scale = config.noise * config.background_norm / math.sqrt(config.video_feature_size)
        features += rng.standard_normal(features.shape, dtype=np.float32) * np.float32(noise_scale)
    return features, queries, duration


# ----------------------------------------------------------------------------------------------------------------------
# Writing


def synthetic_mad_paths(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The files of a benchmark written in `output_dir` (they need not exist yet).

    Returns:
        `{"root", "annotations_dir", "video_features", "text_features", "sentence_features" (every query),
        "sentence_features_by_split" ({"train": path, ...}), "config", "signal_features"}` (the last one is written
        only by [`write_signal_features`]).
    """
    root = Path(output_dir)
    features = root / "features"
    return {
        "root": root,
        "annotations_dir": root / "annotations",
        "video_features": features / VIDEO_FEATURES_NAME,
        "text_features": features / TEXT_FEATURES_NAME,
        "sentence_features": features / ALL_SENTENCE_FEATURES_NAME,
        "sentence_features_by_split": {s: features / SENTENCE_FEATURES_NAME.format(split=s) for s in SPLIT_NAMES},
        "config": root / CONFIG_NAME,
        "signal_features": features / SIGNAL_FEATURES_NAME,
    }


def make_synthetic_mad(
    output_dir: str | os.PathLike,
    config: SyntheticMADConfig | str = "standard",
    **overrides: Any,
) -> dict[str, Any]:
    """Writes a synthetic benchmark in the official MAD layout (see the module docstring for what it contains).

    Files written under `output_dir`:

    - `annotations/MAD_{train,val,test}.json`: a dict keyed by query id (digit strings, unique over the splits), each
      `{"movie", "movie_duration", "sentence", "timestamps", "ext_timestamps", "tokens"}`; `timestamps` `[start, end]`
      in seconds, `ext_timestamps` the same with moments shorter than 2 s stretched to 2 s (within the video);
      `tokens` the pseudo-words of the sentence.
    - `features/CLIP_B32_frames_features_5fps.h5`: one dataset per movie id, `[T, Dv]`, not normalised.
    - `features/CLIP_B32_language_tokens_features.h5`: one dataset per query id, `[L, Dt]`, rows L2-normalised.
    - `features/CLIP_B32_language_features_MAD_{split}.h5` for every split and `..._MAD_all.h5` with every query:
      one dataset per query id, `[Dv]` (the sentence feature of the matching score has the size of the frames).
    - `synthetic_benchmark.json`: the parameters and the format version.

    Args:
        output_dir: the release root (created; existing benchmark files are overwritten).
        config: a [`SyntheticMADConfig`] or the name of a preset of [`SYNTHETIC_PRESETS`] (`"demo"`, `"standard"`).
        overrides: fields of [`SyntheticMADConfig`] to change (e.g. `seed=1`, `num_videos=10`).

    Returns:
        the paths of [`synthetic_mad_paths`] (pass them to [`load_synthetic_mad`] or to `rgnet_hf.data.load_mad`).
    """
    import h5py

    if isinstance(config, str):
        config = SyntheticMADConfig.from_preset(config, **overrides)
    elif isinstance(config, SyntheticMADConfig):
        config = config.replace(**overrides) if overrides else config
    else:
        raise TypeError(f"config must be a SyntheticMADConfig or a preset name, got {type(config).__name__}")
    paths = synthetic_mad_paths(output_dir)
    paths["annotations_dir"].mkdir(parents=True, exist_ok=True)
    paths["video_features"].parent.mkdir(parents=True, exist_ok=True)
    world = SyntheticWorld(config)
    counts = config.split_counts()
    video_split = [name for name in SPLIT_NAMES for _ in range(counts[name])]
    annotations: dict[str, dict[str, dict]] = {name: {} for name in SPLIT_NAMES if counts[name] > 0}
    query_counter = 0
    # Until the config is written again, the folder is not a complete benchmark (load_synthetic_mad refuses it).
    paths["config"].unlink(missing_ok=True)
    paths["signal_features"].unlink(missing_ok=True)  # would describe the earlier benchmark

    with (
        h5py.File(paths["video_features"], "w") as video_file,
        h5py.File(paths["text_features"], "w") as text_file,
        h5py.File(paths["sentence_features"], "w") as all_sentence_file,
    ):
        sentence_files = {name: h5py.File(paths["sentence_features_by_split"][name], "w") for name in annotations}
        try:
            for index, split in enumerate(video_split):
                movie = f"{2000 + index}_SYNTHETIC_MOVIE_{index:04d}"
                features, queries, duration = _make_video(config, world, index)
                video_file.create_dataset(movie, data=features.astype(config.dtype, copy=False))
                pooled = world.pooled_text([q.token_ids for q in queries])
                sentences = (world.sentence_feature(pooled) * config.background_norm).astype(np.float32)
                for query, sentence in zip(queries, sentences, strict=True):
                    query_id = str(query_counter)
                    query_counter += 1
                    start, end = query.timestamps
                    words = [world.words[t] for t in query.token_ids]
                    annotations[split][query_id] = {
                        "movie": movie,
                        "movie_duration": duration,
                        "sentence": " ".join(words).capitalize() + ".",
                        "timestamps": [start, end],
                        "ext_timestamps": [start, round(min(max(end, start + _EXT_MIN_SECONDS), duration), 2)],
                        "tokens": words,
                    }
                    text_file.create_dataset(query_id, data=world.vocabulary[query.token_ids])
                    all_sentence_file.create_dataset(query_id, data=sentence)
                    sentence_files[split].create_dataset(query_id, data=sentence)
        finally:
            for file in sentence_files.values():
                file.close()

    for name in SPLIT_NAMES:
        path = paths["annotations_dir"] / f"MAD_{name}.json"
        if name in annotations:
            path.write_text(json.dumps(annotations[name]), encoding="utf-8")
        else:  # a split of an earlier benchmark in the same folder
            path.unlink(missing_ok=True)
            paths["sentence_features_by_split"][name].unlink(missing_ok=True)
    paths["config"].write_text(
        json.dumps({"format_version": BENCHMARK_FORMAT_VERSION, "config": config.to_dict()}, indent=1),
        encoding="utf-8",
    )
    return paths


def load_synthetic_mad(output_dir: str | os.PathLike, **load_mad_kwargs: Any):
    """`rgnet_hf.data.load_mad` on a benchmark written by [`make_synthetic_mad`] in `output_dir`, with the sentence
    features of every split attached.

    Returns:
        a `GroundingDatasetDict` with the splits `train`, `validation`, `test` that were written.
    """
    from ..data import load_mad

    paths = synthetic_mad_paths(output_dir)
    if not paths["config"].is_file():
        raise FileNotFoundError(f"{paths['config']} not found: is {output_dir} a benchmark made by make_synthetic_mad?")
    return load_mad(
        paths["annotations_dir"],
        paths["video_features"],
        paths["text_features"],
        sentence_features=paths["sentence_features"],
        **load_mad_kwargs,
    )


def read_synthetic_config(output_dir: str | os.PathLike) -> SyntheticMADConfig:
    """The [`SyntheticMADConfig`] recorded in a benchmark folder."""
    path = synthetic_mad_paths(output_dir)["config"]
    recorded = json.loads(path.read_text(encoding="utf-8"))
    if recorded.get("format_version") != BENCHMARK_FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {recorded.get('format_version')!r}")
    return SyntheticMADConfig.from_dict(recorded["config"])


def write_signal_features(output_dir: str | os.PathLike) -> Path:
    """Writes the *oracle* feature of every query of a benchmark: its unit signal direction `g(text)` `[Dv]`, keyed by
    query id, in `features/oracle_signal_features.h5`.

    This is what a model that learned `g` perfectly would look for. Given as `sentence_features` to `load_mad` (or
    `rgnet_hf.evaluation.evaluate_zero_shot`), it gives an upper reference for cosine matching: the benchmark is
    solvable from the text, and what remains hard (distractors, queries of the same video, boundaries) shows. It is a
    diagnostic, never an input of a model.

    Returns:
        the path of the file.
    """
    import h5py

    paths = synthetic_mad_paths(output_dir)
    config = read_synthetic_config(output_dir)
    world = SyntheticWorld(config)
    word_ids = {word: index for index, word in enumerate(world.words)}
    with h5py.File(paths["signal_features"], "w") as file:
        for split in SPLIT_NAMES:
            path = paths["annotations_dir"] / f"MAD_{split}.json"
            if not path.is_file():
                continue
            records = json.loads(path.read_text(encoding="utf-8"))
            if not records:
                continue
            token_ids = [np.array([word_ids[word] for word in record["tokens"]]) for record in records.values()]
            signals = world.signal_direction(world.pooled_text(token_ids)).astype(np.float32)
            for query_id, signal in zip(records, signals, strict=True):
                file.create_dataset(query_id, data=signal)
    return paths["signal_features"]
