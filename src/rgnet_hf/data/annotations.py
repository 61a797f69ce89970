"""Annotation files -> flat query rows, the official training filters, and the report of what was dropped or fixed.

Row layout (one dict per query; the Arrow schema is in `loaders.py`):

- `query_id` (str): MAD: the JSON key; Ego4D: `f"{annotation_uid}_{query_idx}"` (the index before skipping).
- `query` (str), `video_id` (str: movie / `video_uid`), `clip_id` (str: the feature key, movie / `clip_uid`).
- `duration` (float, seconds): MAD `movie_duration`; Ego4D the clip length `video_end_sec - video_start_sec`
  (the CONE jsonl stores it rounded to an int).
- `timestamps` ([start, end] seconds, or None for the Ego4D test split). Ego4D uses the clip-relative pair.
- MAD: `ext_timestamps`; Ego4D: `annotation_uid`, `query_idx`, `video_start_sec`, `video_end_sec` (the clip on the
  video timeline).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("rgnet_hf.data")

__all__ = [
    "AnnotationError",
    "DROP_REASONS",
    "DataReport",
    "FIX_REASONS",
    "SplitReport",
    "ego4d_split_files",
    "training_filter_reason",
]

MAD_SPLIT_FILES = {"train": "MAD_train.json", "validation": "MAD_val.json", "test": "MAD_test.json"}

# The official filter of Ego4D training queries compares the start with `duration * 479.895 / 480`.
EGO4D_END_GUARD = 479.895 / 480
# "No negative window": a moment starting in the first 120 s and ending in the last 60 s of a clip.
EGO4D_NO_NEGATIVE_START, EGO4D_NO_NEGATIVE_END_MARGIN = 120.0, 60.0

DROP_REASONS = {
    "missing_query": "the query text is missing, null or empty (every official consumer skips it)",
    "duplicate_query_id": "a query id already seen in the same split (the first occurrence is kept)",
    "missing_video_features": "the video features file has no entry for the clip / movie",
    "missing_text_features": "the text features file has no entry for the query id",
    "negative_start": "training filter (MAD): start < 0 s",
    "start_at_or_after_end": (
        "training filter: start >= duration (MAD); start >= duration * 479.895/480, duration rounded as in the CONE "
        "jsonl (Ego4D)"
    ),
    "zero_length": "training filter: start == end",
    "no_negative_window": "training filter (Ego4D): start < 120 s and end > duration - 60 s (no negative window)",
    "zero_length_rounded": "RGNet's Ego4D validation conversion: round(end, 1) == round(start, 1)",
    "moment_after_features_end": (
        "training split: the moment starts at or after the end of the video features (frames x seconds per "
        "feature), so no window holds any of it"
    ),
}
FIX_REASONS = {
    "reversed_timestamps": "start > end (NaQ narrations): swapped, as the official training loader does",
}


class AnnotationError(ValueError):
    """A malformed annotation file or row. The message names the file and the row."""


@dataclass
class SplitReport:
    """What happened to the queries of one split: dropped (by reason) and fixed (by reason), with their query ids."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)
    fixed: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, query_id: str) -> None:
        if reason not in DROP_REASONS:
            raise KeyError(f"unknown drop reason {reason!r}")
        self.dropped.setdefault(reason, []).append(query_id)

    def fix(self, reason: str, query_id: str) -> None:
        if reason not in FIX_REASONS:
            raise KeyError(f"unknown fix reason {reason!r}")
        self.fixed.setdefault(reason, []).append(query_id)

    @property
    def num_dropped(self) -> int:
        return sum(len(ids) for ids in self.dropped.values())

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": {reason: list(ids) for reason, ids in self.dropped.items()},
            "fixed": {reason: list(ids) for reason, ids in self.fixed.items()},
        }

    @classmethod
    def from_dict(cls, values: dict) -> SplitReport:
        return cls(
            source=values["source"],
            rows_read=values["rows_read"],
            rows_kept=values["rows_kept"],
            dropped={k: list(v) for k, v in values.get("dropped", {}).items()},
            fixed={k: list(v) for k, v in values.get("fixed", {}).items()},
        )


@dataclass
class DataReport:
    """The report of a loader: one [`SplitReport`] per split. `str(report)` is a readable summary."""

    dataset_name: str
    splits: dict[str, SplitReport] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"dataset_name": self.dataset_name, "splits": {k: v.to_dict() for k, v in self.splits.items()}}

    @classmethod
    def from_dict(cls, values: dict) -> DataReport:
        return cls(
            dataset_name=values["dataset_name"],
            splits={name: SplitReport.from_dict(split) for name, split in values.get("splits", {}).items()},
        )

    def counts(self) -> dict[str, dict[str, Any]]:
        """`{split: {"read", "kept", "dropped": {reason: n}, "fixed": {reason: n}}}`."""
        return {
            name: {
                "read": split.rows_read,
                "kept": split.rows_kept,
                "dropped": {reason: len(ids) for reason, ids in split.dropped.items()},
                "fixed": {reason: len(ids) for reason, ids in split.fixed.items()},
            }
            for name, split in self.splits.items()
        }

    def __str__(self) -> str:
        lines = [f"{self.dataset_name} data report"]
        seen: dict[str, str] = {}
        for name, split in self.splits.items():
            lines.append(f"  {name}: {split.rows_read} queries read, {split.rows_kept} kept  ({split.source})")
            for action, reasons, descriptions in (
                ("dropped", split.dropped, DROP_REASONS),
                ("fixed", split.fixed, FIX_REASONS),
            ):
                for reason, ids in reasons.items():
                    example = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
                    lines.append(f"    {action:<7} {len(ids):>7}  {reason:<24} e.g. {example}")
                    seen[reason] = descriptions[reason]
        if seen:
            lines.append("  reasons:")
            lines.extend(f"    {reason}: {description}" for reason, description in seen.items())
        return "\n".join(lines)


def ego4d_split_files(version: str = "v1") -> dict[str, str]:
    """File names of the official NLQ release: `{"train", "validation", "test", "train_naq"} -> file name`."""
    if version not in ("v1", "v2"):
        raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
    suffix = "" if version == "v1" else "_v2"
    return {
        "train": f"nlq_train{suffix}.json",
        "validation": f"nlq_val{suffix}.json",
        "test": f"nlq_test_unannotated{suffix}.json",
        "train_naq": f"nlq_aug_naq_train{suffix}.json",
    }


# ----------------------------------------------------------------------------------------------------------------------
# Value checks


def _number(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AnnotationError(f"{where}: field {name!r} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: field {name!r} is not finite ({value})")
    return value


def _pair(value: Any, where: str, name: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise AnnotationError(f"{where}: field {name!r} must be a [start, end] pair of seconds, got {value!r}")
    return [_number(value[0], where, f"{name}[0]"), _number(value[1], where, f"{name}[1]")]


def _required(record: dict, name: str, where: str) -> Any:
    if name not in record:
        raise AnnotationError(f"{where}: missing field {name!r} (fields present: {sorted(record)})")
    return record[name]


def _query_text(value: Any, where: str) -> str | None:
    """The query string, or None when missing / null / empty (such queries are skipped and reported)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise AnnotationError(f"{where}: the query must be a string, got {type(value).__name__} {value!r}")
    return value


def _positive_duration(value: Any, where: str, name: str) -> float:
    duration = _number(value, where, name)
    if duration <= 0:
        raise AnnotationError(f"{where}: {name} must be > 0 s, got {duration}")
    return duration


class _JSONObject(dict):
    """A JSON object that remembers its keys in file order, repeats included (`json` keeps only the last one)."""

    pairs: list[tuple[str, Any]]
    duplicate_keys: list[str]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _JSONObject:
        obj = cls(pairs)
        obj.pairs = pairs
        seen: set[str] = set()
        obj.duplicate_keys = [key for key, _ in pairs if key in seen or seen.add(key)]
        return obj


def _no_duplicate_fields(record: Any, where: str) -> None:
    duplicates = getattr(record, "duplicate_keys", None)
    if duplicates:
        raise AnnotationError(f"{where}: field(s) {sorted(set(duplicates))} given more than once")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file, object_pairs_hook=_JSONObject.from_pairs)
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}: not valid JSON ({error})") from error


def _keep_unique(rows: list[dict], report: SplitReport) -> list[dict]:
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row["query_id"] in seen:
            report.drop("duplicate_query_id", row["query_id"])
            continue
        seen.add(row["query_id"])
        unique.append(row)
    return unique


# ----------------------------------------------------------------------------------------------------------------------
# Parsers


def parse_mad(path: str | Path, report: SplitReport) -> list[dict]:
    """`MAD_{split}.json` (a dict `query_id -> {movie, movie_duration, sentence, timestamps, ext_timestamps, ...}`)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object keyed by annotation id, got {type(data).__name__}")
    rows = []
    # Every entry in file order, repeated ids included: `_keep_unique` keeps the first and reports the others.
    for key, record in getattr(data, "pairs", data.items()):
        where = f"{path}: row {key!r}"
        if not isinstance(record, dict):
            raise AnnotationError(f"{where}: expected an object, got {type(record).__name__}")
        _no_duplicate_fields(record, where)
        report.rows_read += 1
        movie = _required(record, "movie", where)
        if not isinstance(movie, str) or not movie:
            raise AnnotationError(f"{where}: field 'movie' must be a non-empty string, got {movie!r}")
        duration = _positive_duration(_required(record, "movie_duration", where), where, "movie_duration")
        timestamps = _pair(_required(record, "timestamps", where), where, "timestamps")
        ext = record.get("ext_timestamps")
        ext = None if ext is None else _pair(ext, where, "ext_timestamps")
        query = _query_text(record.get("sentence"), where)
        if query is None:
            report.drop("missing_query", str(key))
            continue
        rows.append(
            {
                "query_id": str(key),
                "query": query,
                "video_id": movie,
                "clip_id": movie,
                "duration": duration,
                "timestamps": timestamps,
                "ext_timestamps": ext,
                "_filter_duration": duration,
            }
        )
    return _keep_unique(rows, report)


def parse_ego4d_nlq(path: str | Path, report: SplitReport, annotated: bool = True) -> list[dict]:
    """An official NLQ file (`videos -> clips -> annotations -> language_queries`), NaQ-augmented files included.

    With `annotated=False` (the test file) the timestamps are None whatever the file holds.
    """
    path = Path(path)
    data = _read_json(path)
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, list):
        raise AnnotationError(f"{path}: expected an object with a 'videos' list (the NLQ schema)")
    rows = []
    for video_index, video in enumerate(videos):
        where_video = f"{path}: videos[{video_index}]"
        if not isinstance(video, dict):
            raise AnnotationError(f"{where_video}: expected an object, got {type(video).__name__}")
        video_uid = _required(video, "video_uid", where_video)
        for clip_index, clip in enumerate(video.get("clips") or []):
            where_clip = f"{where_video}.clips[{clip_index}]"
            if not isinstance(clip, dict):
                raise AnnotationError(f"{where_clip}: expected an object, got {type(clip).__name__}")
            clip_uid = _required(clip, "clip_uid", where_clip)
            if "video_start_sec" in clip and "video_end_sec" in clip:
                clip_start = _number(clip["video_start_sec"], where_clip, "video_start_sec")
                clip_end = _number(clip["video_end_sec"], where_clip, "video_end_sec")
            else:
                clip_start = _number(_required(clip, "clip_start_sec", where_clip), where_clip, "clip_start_sec")
                clip_end = _number(_required(clip, "clip_end_sec", where_clip), where_clip, "clip_end_sec")
            duration = clip_end - clip_start
            if duration <= 0:
                raise AnnotationError(f"{where_clip} (clip {clip_uid!r}): clip length {duration} s is not > 0")
            # The official filter uses the CONE jsonl duration: int(end + 0.5) - int(start + 0.5).
            rounded_duration = float(int(clip_end + 0.5) - int(clip_start + 0.5))
            for annotation_index, annotation in enumerate(clip.get("annotations") or []):
                where_annotation = f"{where_clip}.annotations[{annotation_index}]"
                annotation_uid = _required(annotation, "annotation_uid", where_annotation)
                for query_idx, language_query in enumerate(_required(annotation, "language_queries", where_annotation)):
                    where = f"{where_annotation}.language_queries[{query_idx}] (clip {clip_uid!r})"
                    if not isinstance(language_query, dict):
                        raise AnnotationError(f"{where}: expected an object, got {type(language_query).__name__}")
                    report.rows_read += 1
                    query_id = f"{annotation_uid}_{query_idx}"
                    query = _query_text(language_query.get("query"), where)
                    if query is None:
                        # Skipped, but the index numbering is kept (query_idx counts skipped entries).
                        report.drop("missing_query", query_id)
                        continue
                    timestamps = None
                    if annotated:
                        timestamps = [
                            _number(_required(language_query, "clip_start_sec", where), where, "clip_start_sec"),
                            _number(_required(language_query, "clip_end_sec", where), where, "clip_end_sec"),
                        ]
                    rows.append(
                        {
                            "query_id": query_id,
                            "query": query,
                            "video_id": str(video_uid),
                            "clip_id": str(clip_uid),
                            "duration": duration,
                            "timestamps": timestamps,
                            "annotation_uid": str(annotation_uid),
                            "query_idx": query_idx,
                            "video_start_sec": clip_start,
                            "video_end_sec": clip_end,
                            "_filter_duration": rounded_duration,
                        }
                    )
    return _keep_unique(rows, report)


def parse_cone_jsonl(path: str | Path, dataset_name: str, report: SplitReport) -> list[dict]:
    """A CONE/RGNet jsonl file (one query per line; no trailing newline; test rows have no `timestamps`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise AnnotationError(f"{where}: not valid JSON ({error})") from error
            if not isinstance(record, dict):
                raise AnnotationError(f"{where}: expected a JSON object, got {type(record).__name__}")
            report.rows_read += 1
            query_id = _required(record, "query_id", where)
            if isinstance(query_id, bool) or not isinstance(query_id, (str, int)):
                raise AnnotationError(f"{where}: query_id must be a string, got {query_id!r}")
            query_id = str(query_id)
            where = f"{where} (query_id {query_id!r})"
            clip_id = _required(record, "clip_id", where)
            if not isinstance(clip_id, str) or not clip_id:
                raise AnnotationError(f"{where}: clip_id must be a non-empty string, got {clip_id!r}")
            duration = _positive_duration(_required(record, "duration", where), where, "duration")
            timestamps = record.get("timestamps")
            timestamps = None if timestamps is None else _pair(timestamps, where, "timestamps")
            query = _query_text(record.get("query"), where)
            if query is None:
                report.drop("missing_query", query_id)
                continue
            row = {
                "query_id": query_id,
                "query": query,
                "video_id": str(record.get("video_id") or clip_id),
                "clip_id": clip_id,
                "duration": duration,
                "timestamps": timestamps,
                "_filter_duration": duration,
            }
            if dataset_name == "mad":
                row["ext_timestamps"] = None
            else:
                annotation_uid, separator, query_idx = query_id.rpartition("_")
                if not separator or not annotation_uid or not query_idx.isdigit():
                    raise AnnotationError(f"{where}: an Ego4D query_id must be '<annotation_uid>_<query_idx>'")
                start_end = record.get("clip_video_start_end")
                if start_end is not None:
                    start_end = _pair(start_end, where, "clip_video_start_end")
                    row["_filter_duration"] = start_end[1] - start_end[0]
                row.update(
                    annotation_uid=annotation_uid,
                    query_idx=int(query_idx),
                    video_start_sec=None if start_end is None else start_end[0],
                    video_end_sec=None if start_end is None else start_end[1],
                )
            rows.append(row)
    return _keep_unique(rows, report)


# ----------------------------------------------------------------------------------------------------------------------
# Filters


def training_filter_reason(start: float, end: float, duration: float, dataset_name: str) -> str | None:
    """The reason the official training filter (`data/process_train_split.py`) drops a query, or None to keep it.

    Args:
        start, end (`float`): the annotated moment in seconds, as written in the file (not swapped).
        duration (`float`): MAD: `movie_duration`; Ego4D: the clip length rounded as in the CONE jsonl,
            `int(video_end_sec + 0.5) - int(video_start_sec + 0.5)`.
        dataset_name (`str`): `"mad"` or `"ego4d"`.
    """
    if dataset_name == "mad":
        if start < 0:
            return "negative_start"
        if start >= duration:
            return "start_at_or_after_end"
        if start == end:
            return "zero_length"
        return None
    if dataset_name == "ego4d":
        # No start < 0 check for Ego4D in the official filter.
        if start >= duration or start >= duration * EGO4D_END_GUARD:
            return "start_at_or_after_end"
        if start == end:
            return "zero_length"
        if start < EGO4D_NO_NEGATIVE_START and end > duration - EGO4D_NO_NEGATIVE_END_MARGIN:
            return "no_negative_window"
        return None
    raise ValueError(f"dataset_name must be 'mad' or 'ego4d', got {dataset_name!r}")


def filter_rows(
    rows: list[dict],
    report: SplitReport,
    dataset_name: str,
    training: bool,
    drop_zero_length_rounded: bool = False,
) -> list[dict]:
    """Applies the training filter (training splits) or RGNet's validation filter, then swaps reversed moments.

    The filters see the timestamps as written in the file, as the official filter script does; reversed moments
    are swapped afterwards (the official loader swaps them when sampling).
    """
    kept = []
    for row in rows:
        timestamps = row["timestamps"]
        if timestamps is not None:
            start, end = timestamps
            reason = None
            if training:
                reason = training_filter_reason(start, end, row["_filter_duration"], dataset_name)
            elif drop_zero_length_rounded and round(end, 1) == round(start, 1):
                reason = "zero_length_rounded"
            if reason is not None:
                report.drop(reason, row["query_id"])
                continue
            if start > end:
                row["timestamps"] = [end, start]
                report.fix("reversed_timestamps", row["query_id"])
        kept.append(row)
    return kept
