"""Loaders of MAD and Ego4D-NLQ (official releases and the CONE/RGNet jsonl + lmdb variant) as `datasets.DatasetDict`.

Rows hold the annotations only; the features stay on disk and are attached lazily with `Dataset.with_transform`:
indexing a row adds

- `video_features`: a [`LazyVideoFeatures`] handle of the whole `(T, Dv)` video (`row["video_features"][a:b]` reads
  only rows `a..b`);
- `text_features`: the `(Lq, Dt)` float32 token features of the query (raw: not truncated, not normalised);
- `sentence_features`: the `(Dc,)` float32 sentence feature, or None where the split has none.

A saved dataset (`save_to_disk`) holds no features: a `rgnet_data.json` next to it records the feature paths, and
[`load_grounding_dataset`] re-attaches them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import datasets
import numpy as np

from ..configuration_rgnet import EGO4D_SECONDS_PER_FEATURE, MAD_SECONDS_PER_FEATURE
from ..windowing import _check_seconds_per_feature
from .annotations import (
    MAD_SPLIT_FILES,
    DataReport,
    SplitReport,
    ego4d_split_files,
    filter_rows,
    parse_cone_jsonl,
    parse_ego4d_nlq,
    parse_mad,
)
from .feature_stores import FeatureError, FeatureSources, LazyVideoFeatures

logger = logging.getLogger("rgnet_hf.data")

__all__ = [
    "FeatureTransform",
    "GroundingDatasetDict",
    "attach_features",
    "cone_variant_files",
    "format_summary",
    "get_feature_sources",
    "load_cone_variant",
    "load_ego4d_nlq",
    "load_grounding_dataset",
    "load_mad",
    "summarize",
]

SIDECAR_NAME = "rgnet_data.json"
SIDECAR_VERSION = 1
DEFAULT_SECONDS_PER_FEATURE = {"mad": MAD_SECONDS_PER_FEATURE, "ego4d": EGO4D_SECONDS_PER_FEATURE}
PathLike = str | os.PathLike
SplitPaths = PathLike | Mapping[str, PathLike] | None

_PAIR = datasets.List(datasets.Value("float64"), length=2)
_COMMON_FEATURES = {
    "query_id": datasets.Value("string"),
    "query": datasets.Value("string"),
    "video_id": datasets.Value("string"),
    "clip_id": datasets.Value("string"),
    "duration": datasets.Value("float64"),
    "timestamps": _PAIR,
}
_EXTRA_FEATURES = {
    "mad": {"ext_timestamps": _PAIR},
    "ego4d": {
        "annotation_uid": datasets.Value("string"),
        "query_idx": datasets.Value("int32"),
        "video_start_sec": datasets.Value("float64"),
        "video_end_sec": datasets.Value("float64"),
    },
}


def query_features(dataset_name: str) -> datasets.Features:
    """The Arrow schema of the query rows of `"mad"` or `"ego4d"`."""
    if dataset_name not in _EXTRA_FEATURES:
        raise ValueError(f"dataset_name must be 'mad' or 'ego4d', got {dataset_name!r}")
    return datasets.Features({**_COMMON_FEATURES, **_EXTRA_FEATURES[dataset_name]})


# ----------------------------------------------------------------------------------------------------------------------
# Lazy features


class FeatureTransform:
    """The `with_transform` function that adds lazy features to a batch of query rows.

    It is a picklable object (not a closure) so that DataLoader workers receive it, and so that
    [`get_feature_sources`] can find the sources of a dataset.
    """

    def __init__(self, sources: FeatureSources):
        self.sources = sources

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if "clip_id" not in batch or "query_id" not in batch:
            raise KeyError("lazy features need the 'clip_id' and 'query_id' columns")
        output = dict(batch)
        output["video_features"] = [LazyVideoFeatures(self.sources, clip_id) for clip_id in batch["clip_id"]]
        text_store = self.sources.text_store()
        if text_store is not None:
            with_sentence = self.sources.has_sentence_features
            read = [text_store.read(query_id, with_sentence=with_sentence) for query_id in batch["query_id"]]
            output["text_features"] = [tokens for tokens, _ in read]
            output["sentence_features"] = [sentence for _, sentence in read]
        return output


def attach_features(dataset: datasets.Dataset, sources: FeatureSources) -> datasets.Dataset:
    """A view of `dataset` whose rows carry lazy `video_features` / `text_features` / `sentence_features`."""
    return dataset.with_transform(FeatureTransform(sources))


def get_feature_sources(dataset: datasets.Dataset) -> FeatureSources | None:
    """The [`FeatureSources`] attached by [`attach_features`] (kept through `select`, `shuffle`, `filter`)."""
    transform = dataset.format.get("format_kwargs", {}).get("transform")
    return transform.sources if isinstance(transform, FeatureTransform) else None


class GroundingDatasetDict(datasets.DatasetDict):
    """A `datasets.DatasetDict` of query rows with lazily attached features.

    Attributes:
        dataset_name (`str`): `"mad"` or `"ego4d"`.
        seconds_per_feature (`float`): seconds between two video features (0.2 MAD, 0.535 Ego4D EgoVLP).
        report ([`DataReport`]): what the loader dropped or fixed, per split and reason, with the query ids.

    `save_to_disk` saves the rows (no features) plus `rgnet_data.json` (feature paths, report);
    [`load_grounding_dataset`] loads both back and re-attaches the features.
    """

    dataset_name: str = ""
    seconds_per_feature: float = 0.0
    report: DataReport | None = None

    def feature_sources(self, split: str) -> FeatureSources | None:
        return get_feature_sources(self[split])

    def without_features(self) -> datasets.DatasetDict:
        """A plain `DatasetDict` of the rows, without the lazy transform (what `save_to_disk` / `push_to_hub` get)."""
        return datasets.DatasetDict({name: split.with_format(None) for name, split in self.items()})

    def sidecar(self) -> dict:
        """The content of `rgnet_data.json`."""
        sources = {name: self.feature_sources(name) for name in self}
        return {
            "format_version": SIDECAR_VERSION,
            "dataset_name": self.dataset_name,
            "seconds_per_feature": self.seconds_per_feature,
            "feature_sources": {name: (s.to_dict() if s is not None else None) for name, s in sources.items()},
            "report": self.report.to_dict() if self.report is not None else None,
        }

    def save_to_disk(self, dataset_dict_path: PathLike, **kwargs) -> None:
        """Saves the rows with `datasets` and writes `rgnet_data.json` next to them."""
        self.without_features().save_to_disk(dataset_dict_path, **kwargs)
        with open(Path(dataset_dict_path) / SIDECAR_NAME, "w", encoding="utf-8") as file:
            json.dump(self.sidecar(), file, indent=1)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Pushes the rows (never the features) and uploads `rgnet_data.json` (report, feature sizes, local paths)
        to the dataset repository. Keyword arguments go to `datasets.DatasetDict.push_to_hub`."""
        from huggingface_hub import HfApi

        commit = self.without_features().push_to_hub(repo_id, **kwargs)
        HfApi(token=kwargs.get("token")).upload_file(
            path_or_fileobj=json.dumps(self.sidecar(), indent=1).encode("utf-8"),
            path_in_repo=SIDECAR_NAME,
            repo_id=repo_id,
            repo_type="dataset",
            revision=kwargs.get("revision"),
        )
        return commit


def _per_split(value: SplitPaths, split: str):
    if isinstance(value, Mapping):
        return value.get(split)
    return value


def load_grounding_dataset(
    dataset_dict_path: PathLike,
    video_features: SplitPaths = None,
    text_features: SplitPaths = None,
    sentence_features: SplitPaths = None,
) -> GroundingDatasetDict:
    """Loads a dataset saved by [`GroundingDatasetDict.save_to_disk`] and re-attaches its features.

    Args:
        dataset_dict_path: the folder given to `save_to_disk`.
        video_features, text_features, sentence_features: new locations of the features when they moved: one path
            for every split, or `{split: path}`. By default the paths recorded in `rgnet_data.json` are used.
    """
    dataset_dict_path = Path(dataset_dict_path)
    sidecar_path = dataset_dict_path / SIDECAR_NAME
    if not sidecar_path.is_file():
        raise FileNotFoundError(f"{sidecar_path} not found: was the dataset saved with GroundingDatasetDict?")
    with open(sidecar_path, encoding="utf-8") as file:
        sidecar = json.load(file)
    if sidecar.get("format_version") != SIDECAR_VERSION:
        raise ValueError(f"{sidecar_path}: unsupported format_version {sidecar.get('format_version')!r}")
    plain = datasets.load_from_disk(str(dataset_dict_path))
    result = GroundingDatasetDict()
    for name, split in plain.items():
        recorded = sidecar["feature_sources"].get(name)
        if recorded is None:
            result[name] = split
            continue
        changes = {}
        if _per_split(video_features, name) is not None:
            changes.update(video_path=str(_per_split(video_features, name)), video_format="auto")
        if _per_split(text_features, name) is not None:
            changes.update(text_path=str(_per_split(text_features, name)), text_format="auto")
        if _per_split(sentence_features, name) is not None:
            changes.update(sentence_path=str(_per_split(sentence_features, name)))
        result[name] = attach_features(split, FeatureSources.from_dict({**recorded, **changes}))
    result.dataset_name = sidecar["dataset_name"]
    result.seconds_per_feature = sidecar["seconds_per_feature"]
    result.report = DataReport.from_dict(sidecar["report"]) if sidecar.get("report") else None
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Shared build steps


def _check_features(
    rows: list[dict],
    sources: FeatureSources,
    report: SplitReport,
    split: str,
    on_missing: str,
    training: bool = False,
    seconds_per_feature: float | None = None,
) -> list[dict]:
    """Checks that every row has video and text features (raise, or drop and report), and fixes the feature sizes.

    Video features of every clip are checked non-empty (HDF5 and `.pt` shapes are cheap to read; lmdb is checked on
    read). In a training split, a moment that starts at or after the end of its clip's features is dropped and
    reported (`moment_after_features_end`): it would otherwise become a zero-width target."""
    video_store = sources.video_store()
    checks = [("missing_video_features", "clip_id", video_store.keys(), sources.video_path)]
    text_store = sources.text_store()
    if text_store is not None:
        checks.append(("missing_text_features", "query_id", text_store.keys(), sources.text_path))
    for reason, column, available, path in checks:
        missing = [row for row in rows if row[column] not in available]
        if not missing:
            continue
        examples = sorted({row[column] for row in missing})[:5]
        if on_missing == "raise":
            raise FeatureError(
                f"{len(missing)} of {len(rows)} queries of split {split!r} have no features in {path} "
                f"({column} e.g. {examples}); pass on_missing_features='drop' to drop and report them"
            )
        missing_ids = {row["query_id"] for row in missing}
        for row in missing:
            report.drop(reason, row["query_id"])
        rows = [row for row in rows if row["query_id"] not in missing_ids]
        logger.warning("split %s: dropped %d queries without features in %s", split, len(missing), path)
    if not rows:
        return rows

    # Feature sizes: inferred from the data when not given, then enforced on every read.
    clips = sorted({row["clip_id"] for row in rows})
    # HDF5 shapes are metadata and `.pt` files are memory-mapped: check every clip. lmdb is checked on read.
    frames_per_clip = {}
    for clip in clips if sources.video_format in ("h5", "pt") else clips[:1]:
        num_frames, dim = video_store.shape(clip)
        frames_per_clip[clip] = num_frames
        if num_frames < 1:
            raise FeatureError(f"{sources.video_path}: video features of {clip!r} are empty (shape {num_frames}x{dim})")
        if sources.video_feature_dim is None:
            sources.video_feature_dim = dim
        elif dim != sources.video_feature_dim:
            raise FeatureError(
                f"{sources.video_path}: video features of {clip!r} have feature size {dim}, expected "
                f"{sources.video_feature_dim}"
            )
    if text_store is not None:
        tokens, sentence = text_store.read(rows[0]["query_id"], with_sentence=sources.has_sentence_features)
        if sources.text_feature_dim is None:
            sources.text_feature_dim = tokens.shape[1]
        elif tokens.shape[1] != sources.text_feature_dim:
            raise FeatureError(
                f"{sources.text_path}: text features of {rows[0]['query_id']!r} have feature size {tokens.shape[1]}, "
                f"expected {sources.text_feature_dim}"
            )
        if sources.has_sentence_features and sentence is None:
            # MAD ships sentence features for the test split only: look for a query that has one.
            sentence_keys = text_store.sentence_keys()
            first = next((row["query_id"] for row in rows if row["query_id"] in sentence_keys), None)
            sentence = None if first is None else text_store.read(first, with_sentence=True)[1]
        if sentence is not None:
            if sources.sentence_feature_dim is None:
                sources.sentence_feature_dim = sentence.shape[0]
            elif sentence.shape[0] != sources.sentence_feature_dim:
                raise FeatureError(
                    f"sentence features have size {sentence.shape[0]}, expected {sources.sentence_feature_dim}"
                )
    if training and seconds_per_feature and sources.video_format in ("h5", "pt"):
        beyond = {
            row["query_id"]
            for row in rows
            if row["timestamps"] is not None
            and min(row["timestamps"]) >= frames_per_clip[row["clip_id"]] * seconds_per_feature
        }
        if beyond:
            for row in rows:
                if row["query_id"] in beyond:
                    report.drop("moment_after_features_end", row["query_id"])
            rows = [row for row in rows if row["query_id"] not in beyond]
            logger.warning("split %s: dropped %d moments after the end of their video features", split, len(beyond))
    sources.reset_stores()  # reopen with the sizes to enforce
    return rows


def _to_dataset(rows: list[dict], dataset_name: str) -> datasets.Dataset:
    schema = query_features(dataset_name)
    columns = {name: [row.get(name) for row in rows] for name in schema}
    return datasets.Dataset.from_dict(columns, features=schema)


def _build(
    dataset_name: str,
    splits: list[tuple[str, list[dict], SplitReport, FeatureSources, bool]],
    *,
    seconds_per_feature: float,
    apply_training_filters: bool,
    drop_zero_length_validation: bool,
    on_missing_features: str,
) -> GroundingDatasetDict:
    if on_missing_features not in ("raise", "drop"):
        raise ValueError(f"on_missing_features must be 'raise' or 'drop', got {on_missing_features!r}")
    # A rate <= 0 would silently drop every training moment as starting after the end of its features.
    seconds_per_feature = _check_seconds_per_feature(seconds_per_feature)
    report = DataReport(dataset_name)
    result = GroundingDatasetDict()
    for split, rows, split_report, sources, training in splits:
        rows = filter_rows(
            rows,
            split_report,
            dataset_name,
            training=training and apply_training_filters,
            drop_zero_length_rounded=drop_zero_length_validation and split == "validation",
        )
        rows = _check_features(
            rows,
            sources,
            split_report,
            split,
            on_missing_features,
            training=training,
            seconds_per_feature=seconds_per_feature,
        )
        split_report.rows_kept = len(rows)
        report.splits[split] = split_report
        result[split] = attach_features(_to_dataset(rows, dataset_name), sources)
    result.dataset_name = dataset_name
    result.seconds_per_feature = seconds_per_feature
    result.report = report
    logger.info("%s", report)
    return result


def _select_splits(available: dict[str, Path], splits: list[str] | None, what: str) -> dict[str, Path]:
    if splits is None:
        present = {name: path for name, path in available.items() if path.is_file()}
        if not present:
            expected = ", ".join(str(path) for path in available.values())
            raise FileNotFoundError(f"no {what} annotation file found (looked for {expected})")
        return present
    unknown = [name for name in splits if name not in available]
    if unknown:
        raise ValueError(f"unknown {what} split(s) {unknown}; available: {list(available)}")
    for name in splits:
        if not available[name].is_file():
            raise FileNotFoundError(f"annotation file of split {name!r} not found: {available[name]}")
    return {name: available[name] for name in splits}


# ----------------------------------------------------------------------------------------------------------------------
# MAD


def load_mad(
    annotations_dir: PathLike,
    video_features: PathLike,
    text_features: PathLike | None,
    *,
    sentence_features: PathLike | None = None,
    splits: list[str] | None = None,
    apply_training_filters: bool = True,
    on_missing_features: Literal["raise", "drop"] = "raise",
    video_feature_dim: int | None = None,
    text_feature_dim: int | None = None,
    seconds_per_feature: float = MAD_SECONDS_PER_FEATURE,
    check_finite: bool = True,
) -> GroundingDatasetDict:
    """MAD from its official release.

    Args:
        annotations_dir: folder of `MAD_train.json`, `MAD_val.json`, `MAD_test.json` (splits `train`, `validation`,
            `test`; the ones present are loaded unless `splits` names them).
        video_features: the frame-feature HDF5 file at 5 fps (`CLIP_B32_frames_features_5fps.h5`, 512-d, or
            `CLIP_L14_frames_features_5fps.h5`, 768-d), keyed by movie.
        text_features: the token-feature HDF5 file (`CLIP_*_language_tokens_features.h5`) keyed by annotation id, or
            a CONE text lmdb; None for annotations only.
        sentence_features: optional sentence-feature HDF5 file (`CLIP_B32_language_features_MAD_test.h5`, test only).
        splits: split names to load (`None`: every file present).
        apply_training_filters: drop training queries with start < 0, start >= duration or start == end (the
            official filter); what is dropped is in `result.report`.
        on_missing_features: `"raise"` (default) or `"drop"` (and report) queries whose features are missing.
        video_feature_dim, text_feature_dim: expected feature sizes (inferred from the files when None).
        seconds_per_feature: 0.2 (5 fps).
        check_finite: raise on NaN / inf in any feature read.

    Returns:
        [`GroundingDatasetDict`] with columns `query_id, query, video_id, clip_id (= movie), duration,
        timestamps, ext_timestamps` and lazy features. Training rows use `timestamps` (not `ext_timestamps`), as
        CONE and RGNet do.
    """
    annotations_dir = Path(annotations_dir)
    files = _select_splits({name: annotations_dir / file for name, file in MAD_SPLIT_FILES.items()}, splits, "MAD")
    inputs = []
    for split, path in files.items():
        report = SplitReport(str(path))
        rows = parse_mad(path, report)
        sources = FeatureSources(
            video_path=str(video_features),
            text_path=None if text_features is None else str(text_features),
            sentence_path=None if sentence_features is None else str(sentence_features),
            video_feature_dim=video_feature_dim,
            text_feature_dim=text_feature_dim,
            seconds_per_feature=seconds_per_feature,
            check_finite=check_finite,
        )
        inputs.append((split, rows, report, sources, split == "train"))
    return _build(
        "mad",
        inputs,
        seconds_per_feature=seconds_per_feature,
        apply_training_filters=apply_training_filters,
        drop_zero_length_validation=False,
        on_missing_features=on_missing_features,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Ego4D-NLQ


def load_ego4d_nlq(
    annotations_dir: PathLike,
    video_features_dir: PathLike,
    text_features: PathLike | None,
    version: str = "v1",
    *,
    splits: list[str] | None = None,
    naq_video_features_dir: PathLike | None = None,
    naq_text_features: PathLike | None = None,
    features_per: Literal["clip", "video"] = "clip",
    apply_training_filters: bool = True,
    drop_zero_length_validation: bool = False,
    on_missing_features: Literal["raise", "drop"] = "raise",
    video_feature_dim: int | None = None,
    text_feature_dim: int | None = None,
    seconds_per_feature: float = EGO4D_SECONDS_PER_FEATURE,
    check_finite: bool = True,
) -> GroundingDatasetDict:
    """Ego4D Natural Language Queries from the official release (+ the NaQ-augmented training file).

    Args:
        annotations_dir: folder of `nlq_train.json`, `nlq_val.json`, `nlq_test_unannotated.json` and optionally
            `nlq_aug_naq_train.json` (v2: the same names with `_v2`). Splits `train`, `validation`, `test`,
            `train_naq`; the ones present are loaded unless `splits` names them.
        video_features_dir: folder of `{clip_uid}.pt` EgoVLP features `[T, 256]` at 1.87 fps (what CONE and RGNet
            use), or of per-video `{video_uid}.pt` files with `features_per="video"` (clips are then cut with
            `floor(start / seconds_per_feature) : ceil(end / seconds_per_feature) + 1`; use seconds_per_feature
            16/30 for the official SlowFast / Omnivore features).
        text_features: the text features keyed by query id `f"{annotation_uid}_{query_idx}"`: a CONE/RGNet text lmdb
            (`egovlp_clip_text_features`, tokens + sentence) or an HDF5 file of tokens; None for annotations only.
        version: `"v1"` or `"v2"` (file names only; the schema is the same).
        naq_video_features_dir, naq_text_features: features of the `train_naq` split when they live elsewhere
            (RGNet's `*_naq` lmdbs); by default the same as the other splits.
        apply_training_filters: the official filter of the training splits (`train`, `train_naq`): drop start >=
            duration * 479.895/480, start == end, and start < 120 s with end > duration - 60 s (no negative window),
            with the duration rounded as in the CONE jsonl.
        drop_zero_length_validation: also drop validation queries with round(end, 1) == round(start, 1), as RGNet's
            `ego_val.jsonl` does (3529 instead of 3874 v1 queries).
        on_missing_features, video_feature_dim, text_feature_dim, seconds_per_feature, check_finite: see
            [`load_mad`]; seconds_per_feature is 0.535 for EgoVLP at 1.87 fps.

    Returns:
        [`GroundingDatasetDict`] with columns `query_id, query, video_id (video_uid), clip_id (clip_uid), duration
        (clip length, s), timestamps (clip-relative [start, end] s; None for test), annotation_uid, query_idx,
        video_start_sec, video_end_sec`. Null or empty queries are skipped (reported) and keep their index numbering;
        reversed NaQ moments are swapped (reported).
    """
    if features_per not in ("clip", "video"):
        raise ValueError(f"features_per must be 'clip' or 'video', got {features_per!r}")
    annotations_dir = Path(annotations_dir)
    names = ego4d_split_files(version)
    files = _select_splits({name: annotations_dir / file for name, file in names.items()}, splits, "Ego4D-NLQ")
    inputs = []
    for split, path in files.items():
        report = SplitReport(str(path))
        rows = parse_ego4d_nlq(path, report, annotated=split != "test")
        is_naq = split == "train_naq"
        video_dir = naq_video_features_dir if is_naq and naq_video_features_dir is not None else video_features_dir
        text = naq_text_features if is_naq and naq_text_features is not None else text_features
        clip_ranges = None
        if features_per == "video":
            clip_ranges = {r["clip_id"]: [r["video_id"], r["video_start_sec"], r["video_end_sec"]] for r in rows}
        sources = FeatureSources(
            video_path=str(video_dir),
            video_format="pt",
            text_path=None if text is None else str(text),
            video_feature_dim=video_feature_dim,
            text_feature_dim=text_feature_dim,
            seconds_per_feature=seconds_per_feature,
            clip_ranges=clip_ranges,
            check_finite=check_finite,
        )
        inputs.append((split, rows, report, sources, split.startswith("train")))
    return _build(
        "ego4d",
        inputs,
        seconds_per_feature=seconds_per_feature,
        apply_training_filters=apply_training_filters,
        drop_zero_length_validation=drop_zero_length_validation,
        on_missing_features=on_missing_features,
    )


# ----------------------------------------------------------------------------------------------------------------------
# CONE / RGNet variant


def cone_variant_files(data_dir: PathLike, dataset_name: str) -> dict[str, Path]:
    """The jsonl files of a CONE/RGNet `data/` folder: `{split: path}` for the files that exist.

    RGNet's flat names are tried first (`ego_train.jsonl`, `ego_val.jsonl`, `naq_train.jsonl`, and `ego_test.jsonl`
    if present;
    `mad_{train,val,test}.jsonl`), then CONE's nested ones (`ego4d_data/` or `mad_data/` with `train_v1.jsonl`
    (preferred) or `train.jsonl`, `val.jsonl`, `test.jsonl`).
    """
    data_dir = Path(data_dir)
    if dataset_name == "ego4d":
        flat = {
            "train": "ego_train.jsonl",
            "validation": "ego_val.jsonl",
            "test": "ego_test.jsonl",
            "train_naq": "naq_train.jsonl",
        }
        nested = "ego4d_data"
    elif dataset_name == "mad":
        flat = {"train": "mad_train.jsonl", "validation": "mad_val.jsonl", "test": "mad_test.jsonl"}
        nested = "mad_data"
    else:
        raise ValueError(f"dataset_name must be 'mad' or 'ego4d', got {dataset_name!r}")
    files = {split: data_dir / name for split, name in flat.items() if (data_dir / name).is_file()}
    if not files:
        folder = data_dir / nested
        candidates = {"train": ["train_v1.jsonl", "train.jsonl"], "validation": ["val.jsonl"], "test": ["test.jsonl"]}
        for split, names in candidates.items():
            for name in names:
                if (folder / name).is_file():
                    files[split] = folder / name
                    break
    if not files:
        raise FileNotFoundError(f"no {dataset_name} jsonl files found in {data_dir} (RGNet or CONE layout)")
    return files


def load_cone_variant(
    data_files: Mapping[str, PathLike],
    video_features: PathLike | Mapping[str, PathLike],
    text_features: PathLike | Mapping[str, PathLike] | None,
    *,
    dataset_name: Literal["mad", "ego4d"],
    training_splits: list[str] | None = None,
    apply_training_filters: bool = True,
    drop_zero_length_validation: bool = False,
    on_missing_features: Literal["raise", "drop"] = "raise",
    video_feature_dim: int | None = None,
    text_feature_dim: int | None = None,
    seconds_per_feature: float | None = None,
    check_finite: bool = True,
) -> GroundingDatasetDict:
    """The CONE/RGNet pre-processed variant: jsonl annotations + lmdb features (npz archives).

    Args:
        data_files: `{split: jsonl path}`, e.g. from [`cone_variant_files`].
        video_features: video lmdb (`egovlp_video_feature_1.87fps`, `CLIP_B32_frames_features_5fps`), one for every
            split or `{split: path}` (NaQ pre-training uses `*_naq` lmdbs for `train_naq`).
        text_features: text lmdb (`egovlp_clip_text_features`, `clip_clip_text_features`), same conventions.
        dataset_name: `"mad"` or `"ego4d"`: selects the training filter and the columns.
        training_splits: splits that get the training filter (default: names starting with "train"). The filter is
            idempotent, so RGNet's already-filtered `train_v1` files lose nothing.
        drop_zero_length_validation: see [`load_ego4d_nlq`].
        seconds_per_feature: default 0.2 (MAD) / 0.535 (Ego4D).
        Other arguments: see [`load_mad`].

    Ego4D durations of this variant are integers (rounded clip lengths, possibly off by one second); the real number
    of features always comes from the feature array.
    """
    if dataset_name not in DEFAULT_SECONDS_PER_FEATURE:
        raise ValueError(f"dataset_name must be 'mad' or 'ego4d', got {dataset_name!r}")
    if seconds_per_feature is None:
        seconds_per_feature = DEFAULT_SECONDS_PER_FEATURE[dataset_name]
    if not data_files:
        raise ValueError("data_files is empty")
    inputs = []
    for split, path in data_files.items():
        report = SplitReport(str(path))
        rows = parse_cone_jsonl(path, dataset_name, report)
        video_path = _per_split(video_features, split)
        if video_path is None:
            raise ValueError(f"no video features given for split {split!r}")
        text_path = _per_split(text_features, split)
        sources = FeatureSources(
            video_path=str(video_path),
            video_format="lmdb",
            text_path=None if text_path is None else str(text_path),
            text_format="lmdb",
            video_feature_dim=video_feature_dim,
            text_feature_dim=text_feature_dim,
            seconds_per_feature=seconds_per_feature,
            check_finite=check_finite,
        )
        training = split.startswith("train") if training_splits is None else split in training_splits
        inputs.append((split, rows, report, sources, training))
    return _build(
        dataset_name,
        inputs,
        seconds_per_feature=seconds_per_feature,
        apply_training_filters=apply_training_filters,
        drop_zero_length_validation=drop_zero_length_validation,
        on_missing_features=on_missing_features,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Summary


def summarize(dataset: datasets.DatasetDict) -> dict[str, dict]:
    """Per split: queries, videos (distinct `clip_id`), hours (sum of their durations), and moment-length statistics
    in seconds (over the queries that have timestamps)."""
    summary = {}
    for name, split in dataset.items():
        rows = split.with_format(None).select_columns(["clip_id", "duration", "timestamps"]).to_dict()
        clip_durations = dict(zip(rows["clip_id"], rows["duration"], strict=True))
        lengths = np.array([end - start for start, end in filter(None, rows["timestamps"])], dtype=np.float64)
        durations = np.array([d for d, t in zip(rows["duration"], rows["timestamps"], strict=True) if t is not None])
        moments = None
        if lengths.size:
            moments = {
                "count": int(lengths.size),
                "mean_s": float(lengths.mean()),
                "median_s": float(np.median(lengths)),
                "min_s": float(lengths.min()),
                "p95_s": float(np.percentile(lengths, 95)),
                "max_s": float(lengths.max()),
                "zero_length": int((lengths == 0).sum()),
                "mean_fraction_of_video": float((lengths / durations).mean()),
            }
        summary[name] = {
            "queries": len(rows["clip_id"]),
            "videos": len(clip_durations),
            "hours": float(sum(clip_durations.values()) / 3600.0),
            "moments": moments,
        }
    return summary


def format_summary(summary: dict[str, dict]) -> str:
    """A text table of [`summarize`]."""
    header = (
        f"{'split':<11} {'queries':>9} {'videos':>7} {'hours':>9} {'mean s':>8} {'median s':>8} {'min s':>7} "
        f"{'p95 s':>7} {'max s':>8} {'zero-len':>8} {'% video':>7}"
    )
    lines = [header]
    for name, row in summary.items():
        moments = row["moments"]
        if moments is None:
            stats = f"{'-':>8} {'-':>8} {'-':>7} {'-':>7} {'-':>8} {'-':>8} {'-':>7}"
        else:
            stats = (
                f"{moments['mean_s']:>8.2f} {moments['median_s']:>8.2f} {moments['min_s']:>7.2f} "
                f"{moments['p95_s']:>7.2f} {moments['max_s']:>8.2f} {moments['zero_length']:>8d} "
                f"{100 * moments['mean_fraction_of_video']:>7.2f}"
            )
        lines.append(f"{name:<11} {row['queries']:>9d} {row['videos']:>7d} {row['hours']:>9.2f} {stats}")
    return "\n".join(lines)
