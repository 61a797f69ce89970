"""Annotations of your own videos: any table `datasets` reads -> checked query rows, and the report of what failed.

One row per query: the video (a file name, a path relative to the videos folder, or a file stem), the sentence, the
moment (`start` and `end` in seconds, or one `[start, end]` column), and optionally a split, a query id and the
video's duration. Tables are read with `datasets` itself: JSONL / JSON, CSV / TSV and Parquet files
(`load_dataset("json" | "csv" | "parquet", data_files=...)`), a folder written by `save_to_disk` (`load_from_disk`) or
a Hub dataset id (`load_dataset(id)`). Column names are mapped with [`parse_column_map`]:
`video=video_id,sentence=question,span=correct_interval,query_id=qid` reads ExtremeWhenBench as published.

Every row is checked against its video file before anything is encoded ([`check_annotations`]); the rows that fail
are listed in an [`AnnotationReport`] (count per reason, examples), and nothing is dropped without being reported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..video_decoding import VideoDecodingError, _declared_duration
from ..video_text_encoders import FeatureEncoderError, clean_query
from .annotations import AnnotationError
from .feature_cache import VIDEO_EXTENSIONS

__all__ = [
    "ANNOTATION_FIELDS",
    "AnnotationError",
    "CHECK_REASONS",
    "EXTREMEWHENBENCH_COLUMNS",
    "SPLIT_NAMES",
    "AnnotationReport",
    "CheckedQuery",
    "check_annotations",
    "find_videos",
    "parse_column_map",
    "read_annotation_table",
]

# Canonical fields of a row; `--columns` maps them to the table's column names.
ANNOTATION_FIELDS = ("video", "sentence", "start", "end", "span", "split", "query_id", "duration")
DEFAULT_COLUMNS = {name: name for name in ANNOTATION_FIELDS if name != "span"}
# ExtremeWhenBench as published (one row per question).
EXTREMEWHENBENCH_COLUMNS = (
    "video=video_id,sentence=question,span=correct_interval,query_id=qid,duration=video_duration_s"
)
SPLIT_NAMES = ("train", "validation", "test")
# A folder written by `save_to_disk` holds one of these files.
_SAVED_MARKERS = ("dataset_dict.json", "state.json")
_TABLE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}

CHECK_REASONS = {
    "missing_video": "no video file under the videos folder has this name or stem",
    "ambiguous_video": "several files match the name (same stem, other folder or extension): name the file exactly",
    "video_stem_clash": "two different video files with the same stem are used (features are keyed by the stem)",
    "unreadable_video": "the video file does not open as a video",
    "empty_sentence": "the sentence is missing, empty or only punctuation",
    "invalid_moment": "start / end are missing or not finite numbers (or the span is not a [start, end] pair)",
    "start_not_before_end": "start >= end",
    "moment_outside_video": "start < 0 or end after the end of the video (more than the tolerance)",
    "duration_mismatch": "the row's duration differs from the video file's (is it the right file?)",
    "duplicate_query_id": "a query id already used by an earlier row (the first one is kept)",
    "invalid_query_id": "the query id holds a '/' or is '.' (ids are keys of the feature files)",
    "unknown_split": f"the split is not one of {', '.join(SPLIT_NAMES)}",
    "video_in_two_splits": "the split column puts queries of one video in two splits (a video belongs to one split)",
    "video_not_decoded": "the video's frames could not be decoded when its features were extracted",
}


@dataclass
class AnnotationReport:
    """The rows that failed a check: reason -> list of `(row number, query id, detail)`. `str()` is the report."""

    source: str
    rows_read: int = 0
    failed: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    clipped: list[tuple[int, str, str]] = field(default_factory=list)  # ends within the tolerance after the video

    def add(self, reason: str, row: int, query_id: str, detail: str) -> None:
        if reason not in CHECK_REASONS:
            raise KeyError(f"unknown check reason {reason!r}")
        self.failed.setdefault(reason, []).append((row, query_id, detail))

    @property
    def failed_rows(self) -> set[int]:
        return {row for entries in self.failed.values() for row, _, _ in entries}

    @property
    def rows_kept(self) -> int:
        return self.rows_read - len(self.failed_rows)

    def counts(self) -> dict[str, int]:
        return {reason: len(entries) for reason, entries in self.failed.items()}

    def to_dict(self, max_examples: int = 20) -> dict:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "failed": {
                reason: {"count": len(entries), "examples": [list(e) for e in entries[:max_examples]]}
                for reason, entries in self.failed.items()
            },
            "ends_clipped_to_video": {"count": len(self.clipped), "examples": [list(e) for e in self.clipped[:20]]},
        }

    def __str__(self) -> str:
        lines = [f"annotation check of {self.source}: {self.rows_read} rows read, {self.rows_kept} valid"]
        for reason, entries in self.failed.items():
            lines.append(f"  {len(entries):>7}  {reason}: {CHECK_REASONS[reason]}")
            for row, query_id, detail in entries[:3]:
                lines.append(f"           row {row} (query {query_id}): {detail}")
            if len(entries) > 3:
                lines.append(f"           ... and {len(entries) - 3} more")
        if self.clipped:
            lines.append(f"  {len(self.clipped):>7}  ends clipped to the video's end (within the tolerance), e.g.")
            lines.extend(f"           row {row} (query {qid}): {detail}" for row, qid, detail in self.clipped[:3])
        return "\n".join(lines)


@dataclass
class CheckedQuery:
    """One valid row. `start`, `end`, `duration` in seconds; `video_path` the resolved file; `split` or None."""

    row: int
    query_id: str
    sentence: str
    video: str
    video_path: Path
    start: float
    end: float
    duration: float | None
    split: str | None


# ----------------------------------------------------------------------------------------------------------------------
# Reading


def parse_column_map(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """`"video=video_id,sentence=question,span=correct_interval"` -> `{field: column}`, over the default names.

    Fields: `video`, `sentence`, `start`, `end` (or `span`: one `[start, end]` column), `split`, `query_id`,
    `duration`. Unmapped fields keep their own name as the column name.
    """
    columns = dict(DEFAULT_COLUMNS)
    if text is None:
        return columns
    pairs = text.items() if isinstance(text, Mapping) else [item.partition("=")[::2] for item in text.split(",")]
    for name, column in pairs:
        name, column = name.strip(), column.strip()
        if name not in ANNOTATION_FIELDS:
            raise AnnotationError(f"--columns: unknown field {name!r}; fields: {', '.join(ANNOTATION_FIELDS)}")
        if not column:
            raise AnnotationError(f"--columns: give a column name for {name!r}, as in {name}=my_column")
        columns[name] = column
    if "span" in columns:
        columns.pop("start"), columns.pop("end")
    return columns


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in _SAVED_MARKERS)


def read_annotation_table(source: str | os.PathLike) -> tuple[list[dict], str]:
    """The rows of an annotation source, read by `datasets`, and a fingerprint of the source (for the manifest).

    A `DatasetDict` (a saved folder, a Hub dataset) is read whole; each row gets a `source_split` column holding the
    name of the split it came from (map it with `split=source_split` to use it).
    """
    import datasets

    text = os.fspath(source)
    path = Path(text)
    # A local table is read in a blink: no "Generating train split" bar (a Hub download keeps its bars).
    quiet = path.exists() and datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        return _read_table(text, path)
    finally:
        if quiet:
            datasets.enable_progress_bars()


def _read_table(text: str, path: Path) -> tuple[list[dict], str]:
    import datasets

    with tempfile.TemporaryDirectory(prefix="rgnet-annotations-") as cache:
        if _is_saved_dataset(path):
            loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
            fingerprint = "sha256:" + _hash_folder(path)
        elif path.is_file():
            builder = _TABLE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise AnnotationError(
                    f"{path}: unknown annotation file type {path.suffix!r}; give a {', '.join(_TABLE_BUILDERS)} file, "
                    "a folder written by save_to_disk, or a Hub dataset id"
                )
            kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            try:
                loaded = datasets.load_dataset(
                    builder, data_files=str(path), cache_dir=cache, keep_in_memory=True, **kwargs
                )
            except Exception as error:  # datasets raises many kinds on a malformed file
                raise AnnotationError(f"{path}: cannot be read as a {builder} table ({error})") from error
            fingerprint = "sha256:" + _hash_file(path)
        elif path.exists():
            raise AnnotationError(
                f"{path} is a folder but not one written by save_to_disk (no {' or '.join(_SAVED_MARKERS)}); "
                "give the annotation file itself"
            )
        elif text.count("/") == 1 and not text.startswith((".", "/", "~")):
            try:
                loaded = datasets.load_dataset(text)
            except Exception as error:
                raise AnnotationError(f"cannot load the Hub dataset {text!r} ({error})") from error
            fingerprint = "hub:" + text + ":" + "+".join(split._fingerprint for split in loaded.values())
        else:
            raise FileNotFoundError(f"annotation source not found: {text} (a file, a save_to_disk folder or a Hub id)")
        if isinstance(loaded, datasets.DatasetDict):
            rows = []
            # A file read by load_dataset lands in a split named "train" that the user never chose: no source_split.
            from_file = path.is_file()
            for split_name, split in loaded.items():
                for row in split.to_list():
                    if not from_file:
                        row.setdefault("source_split", split_name)
                    rows.append(row)
        else:
            rows = loaded.to_list()
    return rows, fingerprint


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_folder(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode("utf-8") + b"\0" + _hash_file(file).encode("ascii"))
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# Videos


def find_videos(videos_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """Every video file under `videos_dir` (sub-folders included), indexed by relative path, file name and stem."""
    root = Path(videos_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--videos {root}: no such folder")
    index: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        relative = path.relative_to(root).as_posix()
        for key in {relative, path.name, path.stem}:
            index.setdefault(key, []).append(path)
    return index


def _resolve_video(value: str, index: dict[str, list[Path]], root: Path) -> tuple[Path | None, str]:
    """(the file, "") or (None, the reason) for a row's video value: a path relative to the videos folder, a file
    name or a stem; or a path (absolute, or relative to the working directory) of a file inside the videos folder."""
    normalized = value.replace("\\", "/")
    while normalized.startswith("./"):
        normalized = normalized[2:]
    candidates = index.get(normalized) or index.get(value)
    if not candidates and Path(value).is_file():
        try:
            candidates = index.get(Path(value).resolve().relative_to(root.resolve()).as_posix())
        except ValueError:  # a file outside the videos folder
            candidates = None
    if not candidates:
        return None, "missing_video"
    if len(candidates) > 1:
        return None, "ambiguous_video"
    return candidates[0], ""


# ----------------------------------------------------------------------------------------------------------------------
# Checks


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _span(value: Any) -> tuple[float | None, float | None]:
    if isinstance(value, str):  # CSV holds a span as text: "[12.5, 30.0]"
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None, None
    return _number(value[0]), _number(value[1])


def _content_id(video: str, sentence: str, start: Any, end: Any) -> str:
    """A query id from the row's content: stable when rows are added, reordered or removed."""
    digest = hashlib.sha256(json.dumps([video, sentence, start, end]).encode("utf-8")).hexdigest()[:16]
    return f"{Path(video).stem}-{digest}"


def check_annotations(
    rows: list[dict],
    videos_dir: str | os.PathLike,
    columns: Mapping[str, str] | None = None,
    *,
    source: str = "annotations",
    end_tolerance_s: float = 0.5,
    duration_tolerance: float = 0.02,
) -> tuple[list[CheckedQuery], AnnotationReport]:
    """Check every row against its video file; returns the valid rows and the report of the others.

    Args:
        rows: the table's rows (dicts), e.g. from [`read_annotation_table`].
        videos_dir: the folder of the video files (searched recursively).
        columns: `{field: column}` from [`parse_column_map`] (default: the field names themselves).
        end_tolerance_s: an end at most this far after the video's end is clipped to it (rounded annotations);
            further is `moment_outside_video`.
        duration_tolerance: a row's `duration` may differ from the file's by `max(1 s, this fraction)`.

    The video's length here is the one its container declares (no frame is decoded); when a container declares
    none, the moment is checked later against the decoded length.
    """
    columns = dict(columns) if columns is not None else parse_column_map(None)
    report = AnnotationReport(source=source, rows_read=len(rows))
    has_split_column = False
    if rows:
        present = set().union(*(row.keys() for row in rows))
        has_split_column = columns["split"] in present
        required = ["video", "sentence"] + (["span"] if "span" in columns else ["start", "end"])
        missing = [f"{name}={columns[name]}" for name in required if columns[name] not in present]
        if missing:
            raise AnnotationError(
                f"{source}: no column for {', '.join(missing)} (columns present: {sorted(present)}); map them with "
                "--columns, e.g. --columns video=video_id,sentence=question,span=correct_interval"
            )
    index = find_videos(videos_dir)
    durations: dict[Path, float | None] = {}
    unreadable: dict[Path, str] = {}
    checked: list[CheckedQuery] = []
    seen_ids: dict[str, int] = {}
    for number, row in enumerate(rows):
        video_value = row.get(columns["video"])
        video_value = "" if video_value is None else str(video_value).strip()
        sentence = row.get(columns["sentence"])
        if "span" in columns:
            raw_start, raw_end = _span(row.get(columns["span"]))
        else:
            raw_start, raw_end = _number(row.get(columns["start"])), _number(row.get(columns["end"]))
        query_id = row.get(columns["query_id"])
        if query_id is None or str(query_id).strip() == "":
            query_id = _content_id(video_value, str(sentence), raw_start, raw_end)
        query_id = str(query_id).strip()

        def fail(reason: str, detail: str, number: int = number, query_id: str = query_id) -> None:
            report.add(reason, number, query_id, detail)

        problems_before = len(report.failed_rows)
        if "/" in query_id or query_id == ".":
            fail("invalid_query_id", f"query id {query_id!r}: use ids without '/'")
        elif query_id in seen_ids:
            fail("duplicate_query_id", f"query id {query_id!r} was first used by row {seen_ids[query_id]}")
        else:
            seen_ids[query_id] = number
        try:
            if not isinstance(sentence, str):
                raise FeatureEncoderError("not a string")
            clean_query(sentence)
        except FeatureEncoderError:
            fail("empty_sentence", f"sentence {sentence!r}")
        split = None
        if has_split_column:
            split = row.get(columns["split"])
            split = "" if split is None else str(split).strip()
            if split not in SPLIT_NAMES:
                fail("unknown_split", f"split {split!r}; use one of {', '.join(SPLIT_NAMES)}")
        path, reason = _resolve_video(video_value, index, Path(videos_dir)) if video_value else (None, "missing_video")
        if path is None:
            matches = ", ".join(str(p) for p in index.get(video_value, [])[:3])
            detail = f"video {video_value!r}" + (f" matches {matches}" if matches else f" not under {videos_dir}")
            fail(reason, detail)
        declared = None
        if path is not None:
            if path not in durations and path not in unreadable:
                try:
                    durations[path] = _declared_duration(path)
                except VideoDecodingError as error:
                    unreadable[path] = str(error)
            if path in unreadable:
                fail("unreadable_video", unreadable[path])
                path = None
            else:
                declared = durations[path]
        if raw_start is None or raw_end is None:
            fail("invalid_moment", f"moment {raw_start!r}..{raw_end!r} from the row's moment columns")
        elif raw_start >= raw_end:
            fail("start_not_before_end", f"start {raw_start} s >= end {raw_end} s")
        elif raw_start < 0 or (
            declared is not None and (raw_start >= declared or raw_end > declared + end_tolerance_s)
        ):
            fail("moment_outside_video", f"moment {raw_start}..{raw_end} s, video {declared} s ({video_value})")
        row_duration = _number(row.get(columns["duration"])) if columns["duration"] in row else None
        if row_duration is not None and declared is not None:
            if abs(row_duration - declared) > max(1.0, duration_tolerance * declared):
                fail("duration_mismatch", f"row says {row_duration} s, {path.name} declares {declared:.2f} s")
        if len(report.failed_rows) > problems_before:
            continue
        end = raw_end
        if declared is not None and raw_end > declared:
            end = declared
            report.clipped.append((number, query_id, f"end {raw_end} s -> {declared:.3f} s (the video's end)"))
        checked.append(
            CheckedQuery(number, query_id, sentence, video_value, path, raw_start, end, declared, split or None)
        )
    checked = _check_video_consistency(checked, report)
    return checked, report


def _check_video_consistency(checked: list[CheckedQuery], report: AnnotationReport) -> list[CheckedQuery]:
    """Two files with one stem, and one video in two splits of the split column: every row concerned fails."""
    files_per_stem: dict[str, set[Path]] = {}
    splits_per_video: dict[Path, set[str]] = {}
    for query in checked:
        files_per_stem.setdefault(query.video_path.stem, set()).add(query.video_path)
        if query.split is not None:
            splits_per_video.setdefault(query.video_path, set()).add(query.split)
    kept = []
    for query in checked:
        files = files_per_stem[query.video_path.stem]
        if len(files) > 1:
            others = ", ".join(sorted(str(p) for p in files))
            report.add("video_stem_clash", query.row, query.query_id, f"stem {query.video_path.stem!r}: {others}")
            continue
        splits = splits_per_video.get(query.video_path, set())
        if len(splits) > 1:
            detail = f"{query.video_path.name} is in {', '.join(sorted(splits))}"
            report.add("video_in_two_splits", query.row, query.query_id, detail)
            continue
        kept.append(query)
    return kept
