"""A prepared dataset: your videos and sentences turned into RGNet's inputs by `rgnet-hf prepare`.

Layout of the output folder:

- `video_features.h5`: frame features `[T, Dv]` per video, keyed by the file's stem (the `rgnet-hf extract` cache,
  resumable; raw, not normalised);
- `text_features.h5`, `sentence_features.h5`: token features `[L, Dt]` and sentence features `[Dc]` per query id,
  from the same encoder (raw, as MAD ships them; the loaders normalise them), each with the sentence it encodes;
- `annotations/{train,validation,test}.jsonl`: the query rows of each split (MAD's columns: `query_id, query,
  video_id, clip_id, duration, timestamps`), every video in exactly one split;
- `manifest.json`: encoder, seconds per feature, feature sizes, counts, the split rule, hashes of the inputs and the
  annotation report; written last, so a folder without it is an unfinished run;
- `README.md`: the dataset card.

A rerun after a kill, or with new rows, encodes only what is missing: videos already in the cache (or in its finished
parts) and sentences already encoded are kept. [`load_prepared`] reads the folder back as a [`GroundingDatasetDict`]
with lazy features, as [`load_mad`] does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..windowing import _check_seconds_per_feature
from .annotations import DataReport, SplitReport
from .feature_stores import FeatureSources
from .loaders import GroundingDatasetDict, _build
from .own_annotations import (
    SPLIT_NAMES,
    AnnotationError,
    AnnotationReport,
    CheckedQuery,
    _hash_file,
    check_annotations,
    parse_column_map,
    read_annotation_table,
)

__all__ = [
    "DEFAULT_SPLITS",
    "MANIFEST_NAME",
    "InvalidAnnotationsError",
    "PreparedDatasetError",
    "assign_splits",
    "check_model_fits_manifest",
    "load_manifest",
    "load_prepared",
    "parse_split_ratios",
    "prepare_dataset",
    "prepared_model_settings",
]

MANIFEST_NAME = "manifest.json"
PREVIOUS_MANIFEST_NAME = "manifest.previous.json"
MANIFEST_FORMAT = "rgnet-prepared-dataset"
MANIFEST_VERSION = 1
VIDEO_FEATURES, TEXT_FEATURES, SENTENCE_FEATURES = "video_features.h5", "text_features.h5", "sentence_features.h5"
ANNOTATIONS_DIR = "annotations"
DEFAULT_SPLITS = {"train": 0.8, "validation": 0.1, "test": 0.1}
TEXT_BATCH = 256


class PreparedDatasetError(ValueError):
    """A prepared folder that is unfinished, damaged, or written with other settings than asked for."""


class InvalidAnnotationsError(AnnotationError):
    """Rows failed the checks and `skip_invalid` was not given. `report` lists them."""

    def __init__(self, message: str, report: AnnotationReport):
        super().__init__(message)
        self.report = report


@dataclass
class PrepareResult:
    """What [`prepare_dataset`] did: the manifest it wrote, and the videos / sentences encoded in this run."""

    manifest: dict
    report: AnnotationReport
    videos_encoded: list[str] = field(default_factory=list)
    videos_reused: list[str] = field(default_factory=list)
    sentences_encoded: int = 0
    sentences_reused: int = 0


# ----------------------------------------------------------------------------------------------------------------------
# Splits


def parse_split_ratios(text: str | Mapping[str, float] | None) -> dict[str, float]:
    """`"train=0.8,validation=0.1,test=0.1"` -> `{split: fraction}` (fractions >= 0 summing to 1)."""
    if text is None:
        return dict(DEFAULT_SPLITS)
    if isinstance(text, Mapping):
        items = list(text.items())
    else:
        items = [item.partition("=")[::2] for item in text.split(",") if item.strip()]
    ratios: dict[str, float] = {}
    for name, value in items:
        name = str(name).strip()
        if name not in SPLIT_NAMES:
            raise ValueError(f"--splits: unknown split {name!r}; use {', '.join(SPLIT_NAMES)}")
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            message = f"--splits: {name}={value!r} is not a number (e.g. train=0.8,validation=0.1,test=0.1)"
            raise ValueError(message) from None
        if not math.isfinite(fraction) or fraction < 0:
            raise ValueError(f"--splits: {name}={value} must be a fraction >= 0")
        ratios[name] = fraction
    if not ratios or not math.isclose(sum(ratios.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"--splits: the fractions must add up to 1, got {ratios}")
    if ratios.get("train", 0) <= 0:
        raise ValueError("--splits: give the train split a fraction > 0")
    return ratios


def _video_order_key(stem: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{stem}".encode()).hexdigest()


def _split_targets(num_videos: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Videos per split: the largest-remainder rounding of the fractions, with at least one video in every split of
    fraction > 0 when there are enough videos (taken from the largest split)."""
    exact = {name: fraction * num_videos for name, fraction in ratios.items()}
    targets = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(ratios, key=lambda name: (exact[name] - targets[name], ratios[name]), reverse=True)
    for name in by_remainder[: num_videos - sum(targets.values())]:
        targets[name] += 1
    wanted = [name for name, fraction in ratios.items() if fraction > 0]
    if num_videos >= len(wanted):
        for name in wanted:
            if targets[name] == 0:
                largest = max(targets, key=targets.get)
                targets[largest] -= 1
                targets[name] += 1
    return targets


def assign_splits(
    videos: Sequence[str], ratios: Mapping[str, float], seed: int, previous: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each video (stem) -> a split, by video, seeded; never by query.

    The number of videos per split follows the fractions ([`_split_targets`]); videos are taken in an order fixed by
    `(seed, stem)` and each goes to the split furthest below its number. Videos in `previous` (the last run, same
    fractions and seed) keep their split, so a rerun with new videos moves no known video into another split.
    """
    known = set(videos)
    assignment = {stem: split for stem, split in (previous or {}).items() if stem in known and split in ratios}
    targets = _split_targets(len(known), ratios)
    counts = {name: 0 for name in ratios}
    for split in assignment.values():
        counts[split] += 1
    for stem in sorted((s for s in known if s not in assignment), key=lambda s: _video_order_key(s, seed)):
        best = max(ratios, key=lambda name: (targets[name] - counts[name], ratios[name]))
        assignment[stem] = best
        counts[best] += 1
    return assignment


# ----------------------------------------------------------------------------------------------------------------------
# Text features


def _encode_text(encoder, queries: list[CheckedQuery], folder: Path, progress: bool) -> tuple[int, int, list[str]]:
    """Token and sentence features of every query, reusing the entries that hold the same sentence.

    Both files are rewritten under temporary names and renamed into place, so a kill leaves the old ones whole.
    Returns (encoded, reused, truncated query ids).
    """
    import h5py
    from tqdm.auto import tqdm

    tokens_path, sentences_path = folder / TEXT_FEATURES, folder / SENTENCE_FEATURES
    wanted = {query.query_id: query.sentence for query in queries}
    kept: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
    if tokens_path.exists() and sentences_path.exists():
        with h5py.File(tokens_path, "r") as tokens, h5py.File(sentences_path, "r") as sentences:
            same_encoder = tokens.attrs.get("encoder") == encoder.name
            for key in tokens if same_encoder else []:
                entry = tokens[key]
                # Both files name the sentence: a kill between their two renames cannot pair two sentences.
                sentence = wanted.get(key)
                if key in sentences and sentence == entry.attrs.get("sentence") == sentences[key].attrs.get("sentence"):
                    kept[key] = (entry[()], sentences[key][()], bool(entry.attrs.get("truncated", False)))
    missing = [query_id for query_id in wanted if query_id not in kept]
    fresh: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
    for begin in tqdm(range(0, len(missing), TEXT_BATCH), desc="encoding sentences", disable=not progress):
        ids = missing[begin : begin + TEXT_BATCH]
        encoded = encoder.encode_queries([wanted[query_id] for query_id in ids])
        for query_id, query in zip(ids, encoded):
            fresh[query_id] = (query.token_features, query.sentence_features, query.truncated)
    if missing or set(kept) != set(_keys(tokens_path)):
        temporary = [path.with_name(path.name + ".tmp") for path in (tokens_path, sentences_path)]
        try:
            with h5py.File(temporary[0], "w") as tokens, h5py.File(temporary[1], "w") as sentences:
                for handle in (tokens, sentences):
                    handle.attrs["encoder"] = encoder.name
                for query_id in sorted(wanted):
                    token_features, sentence_features, truncated = kept.get(query_id) or fresh[query_id]
                    entry = tokens.create_dataset(query_id, data=np.asarray(token_features, dtype=np.float32))
                    entry.attrs["sentence"] = wanted[query_id]
                    entry.attrs["truncated"] = truncated
                    vector = sentences.create_dataset(query_id, data=np.asarray(sentence_features, dtype=np.float32))
                    vector.attrs["sentence"] = wanted[query_id]
        except BaseException:
            for path in temporary:
                path.unlink(missing_ok=True)
            raise
        os.replace(temporary[0], tokens_path)
        os.replace(temporary[1], sentences_path)
    truncated = sorted(query_id for query_id, (_, _, cut) in {**kept, **fresh}.items() if cut)
    return len(missing), len(kept), truncated


def _keys(path: Path) -> set[str]:
    import h5py

    if not path.exists():
        return set()
    with h5py.File(path, "r") as handle:
        return set(handle.keys())


# ----------------------------------------------------------------------------------------------------------------------
# Statistics and the card


def _statistics(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "mean_s": float(statistics.fmean(values)),
        "median_s": float(statistics.median(values)),
        "min_s": float(min(values)),
        "max_s": float(max(values)),
    }


def _split_counts(rows: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    counts = {}
    for split, split_rows in rows.items():
        durations = {row["clip_id"]: row["duration"] for row in split_rows}
        lengths = [row["timestamps"][1] - row["timestamps"][0] for row in split_rows]
        counts[split] = {
            "queries": len(split_rows),
            "videos": len(durations),
            "hours": sum(durations.values()) / 3600.0,
            "moment_length": _statistics(lengths),
            "video_length": _statistics(list(durations.values())),
        }
    return counts


def _format_stats(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "-"
    return f"{stats['mean_s']:.1f} / {stats['median_s']:.1f} / {stats['min_s']:.1f} / {stats['max_s']:.1f}"


def dataset_card(manifest: dict) -> str:
    """The `README.md` of a prepared folder: YAML metadata, then what it holds and how to use it."""
    counts = manifest["counts"]
    lines = [
        "---",
        "license: other  # set the licence of your videos and annotations here",
        "task_categories:",
        "- video-text-to-text",
        "tags:",
        "- temporal-grounding",
        "- rgnet",
        "---",
        "",
        "# RGNet grounding dataset",
        "",
        "Query sentences with the moments they describe in long videos, and the features RGNet reads, written by "
        "`rgnet-hf prepare`.",
        "",
        f"- Encoder: `{manifest['encoder']}` ({manifest['seconds_per_feature']} s per feature; video features "
        f"{manifest['video_feature_size']}-d, token features {manifest['text_feature_size']}-d, sentence features "
        f"{manifest['sentence_feature_size']}-d)",
        f"- Splits: {manifest['split_rule']['description']}",
        "- Licence: to be set by the owner of the videos and annotations.",
        "",
        "| split | videos | hours | queries | moment length (s) mean / median / min / max | video length (s) mean / "
        "median / min / max |",
        "|---|---|---|---|---|---|",
    ]
    for split, row in counts.items():
        lines.append(
            f"| {split} | {row['videos']} | {row['hours']:.2f} | {row['queries']} | "
            f"{_format_stats(row['moment_length'])} | {_format_stats(row['video_length'])} |"
        )
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from rgnet_hf.data import load_prepared",
        "",
        'dataset = load_prepared("path/to/this/folder")  # a DatasetDict with lazy features',
        "```",
        "",
        "Train with `data: {format: prepared, path: path/to/this/folder}` in a training recipe.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Manifest


def load_manifest(folder: str | os.PathLike) -> dict:
    """The `manifest.json` of a prepared folder; refuses an unfinished or foreign one."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise PreparedDatasetError(
            f"{path} not found: {folder} is not a prepared dataset, or `rgnet-hf prepare` did not finish there "
            "(rerun the same command: it resumes)"
        )
    return _read_manifest(path)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise PreparedDatasetError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise PreparedDatasetError(f"{path} is not the manifest of a prepared RGNet dataset")
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise PreparedDatasetError(f"{path}: unsupported format_version {manifest.get('format_version')!r}")
    return manifest


def _write_json_atomically(path: Path, value: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _check_previous_manifest(output: Path, encoder_name: str, seconds_per_feature: float) -> dict | None:
    """The manifest of the last finished run (or of the run a kill interrupted), checked to share the encoder and rate.

    A run sets the manifest aside (`manifest.previous.json`) before it changes anything, so that a folder whose rerun
    was killed is unfinished (refused by [`load_prepared`]) until a rerun completes it, and that rerun still sees the
    last split assignment."""
    current, aside = output / MANIFEST_NAME, output / PREVIOUS_MANIFEST_NAME
    if current.is_file():
        previous = load_manifest(output)
    elif aside.is_file():
        previous = _read_manifest(aside)
    else:
        return None
    if previous["encoder"] != encoder_name or not math.isclose(previous["seconds_per_feature"], seconds_per_feature):
        raise PreparedDatasetError(
            f"{output} was prepared with encoder {previous['encoder']!r} at {previous['seconds_per_feature']} s per "
            f"feature, not {encoder_name!r} at {seconds_per_feature}: give another --output"
        )
    if current.is_file():
        os.replace(current, aside)
    return previous


# ----------------------------------------------------------------------------------------------------------------------
# prepare


def prepare_dataset(
    annotations: str | os.PathLike,
    videos_dir: str | os.PathLike,
    output: str | os.PathLike,
    encoder,
    seconds_per_feature: float,
    *,
    columns: str | Mapping[str, str] | None = None,
    splits: str | Mapping[str, float] | None = None,
    seed: int = 0,
    skip_invalid: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    process_index: int = 0,
    num_processes: int = 1,
    barrier: Callable[[], None] | None = None,
) -> PrepareResult:
    """Check the annotations, encode the videos and sentences with `encoder`, split by video, write the folder.

    Args:
        annotations: a JSONL / JSON / CSV / TSV / Parquet file, a `save_to_disk` folder or a Hub dataset id.
        videos_dir: the folder of the video files (searched recursively).
        output: the prepared folder (created or completed).
        encoder: a [`VideoTextEncoder`] (on this process's device), or a function without arguments that loads it
            (called only once every row passed its checks).
        seconds_per_feature: the feature rate the video features are sampled at.
        columns: the column map (see [`parse_column_map`]).
        splits: `{split: fraction}` or `"train=0.8,..."`; ignored when the rows have a split column. Default
            train 0.8, validation 0.1, test 0.1.
        seed: seed of the split by video.
        skip_invalid: leave failed rows out (they stay listed in the report and the manifest) instead of raising
            [`InvalidAnnotationsError`].
        log: where the report and progress lines go.
        process_index, num_processes, barrier: data-parallel video extraction (see `extract_video_features`); the
            main process alone encodes the sentences and writes the rest.
    """
    from .feature_cache import extract_video_features

    seconds_per_feature = _check_seconds_per_feature(seconds_per_feature)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise PreparedDatasetError(f"--output {output} is a file: give a folder")
    ours = (MANIFEST_NAME, PREVIOUS_MANIFEST_NAME, VIDEO_FEATURES, VIDEO_FEATURES + ".parts")
    held = {VIDEO_FEATURES + ".lock"}  # the CLI's lock on this folder
    others = output.is_dir() and any(path.name not in held for path in output.iterdir())
    if others and not any((output / name).exists() for name in ours):
        # Its README.md and annotations/ would be overwritten.
        raise PreparedDatasetError(
            f"--output {output} is a folder that holds other files and no prepared dataset: give a new or empty folder"
        )
    column_map = parse_column_map(columns)
    ratios = parse_split_ratios(splits)

    table, fingerprint = read_annotation_table(annotations)
    queries, report = check_annotations(table, videos_dir, column_map, source=str(annotations))

    def stop_if_invalid(stage: str) -> None:
        if report.failed and not skip_invalid:
            raise InvalidAnnotationsError(
                f"{len(report.failed_rows)} of {report.rows_read} rows failed the checks {stage} (report above): fix "
                "them, or pass --skip-invalid to leave them out (they stay listed in manifest.json)",
                report,
            )

    if process_index == 0:
        log(str(report))
    stop_if_invalid("before encoding")
    if not queries:
        raise AnnotationError(f"{annotations}: no valid row left")

    if not hasattr(encoder, "encode_video"):
        encoder = encoder()  # a loader: the encoder is loaded only once the rows passed their checks
    encoder_name = encoder.name or type(encoder).__name__
    # The main process alone sets the manifest aside; the extraction refuses another encoder or rate in every process.
    previous = _check_previous_manifest(output, encoder_name, seconds_per_feature) if process_index == 0 else None
    output.mkdir(parents=True, exist_ok=True)
    videos = sorted({query.video_path for query in queries}, key=lambda path: path.stem)
    extraction = extract_video_features(
        encoder,
        videos,
        output / VIDEO_FEATURES,
        seconds_per_feature,
        process_index=process_index,
        num_processes=num_processes,
        progress=progress,
        barrier=barrier,
    )
    if process_index != 0:
        return PrepareResult(manifest={}, report=report, videos_encoded=extraction.written)
    failed_before = len(report.failed_rows)
    for stem, message in extraction.failed.items():
        for query in queries:
            if query.video_path.stem == stem:
                report.add("video_not_decoded", query.row, query.query_id, message)

    # The decoded length is what the features cover: every moment is checked against it once more.
    import h5py

    decoded: dict[str, float] = {}
    with h5py.File(output / VIDEO_FEATURES, "r") as handle:
        for video in videos:
            if video.stem in handle and video.stem not in extraction.failed:
                entry = handle[video.stem]
                decoded[video.stem] = float(entry.attrs.get("duration", entry.shape[0] * seconds_per_feature))
    kept: list[CheckedQuery] = []
    for query in queries:
        length = decoded.get(query.video_path.stem)
        if length is None:
            continue  # reported as video_not_decoded
        if query.start >= length or query.end > length + 0.5:
            detail = f"moment {query.start}..{query.end} s, decoded video {length:.2f} s ({query.video})"
            report.add("moment_outside_video", query.row, query.query_id, detail)
            continue
        if query.end > length:
            report.clipped.append((query.row, query.query_id, f"end {query.end} s -> {length:.3f} s (decoded end)"))
            query.end = length
        kept.append(query)
    if len(report.failed_rows) > failed_before:
        log(str(report))
    try:
        stop_if_invalid("after decoding the videos")
        if not kept:
            raise AnnotationError(f"{annotations}: no valid row left after decoding the videos")
    except AnnotationError:
        # Only new video features were added: the last finished run's folder is whole again.
        if not (output / MANIFEST_NAME).exists() and (output / PREVIOUS_MANIFEST_NAME).exists():
            os.replace(output / PREVIOUS_MANIFEST_NAME, output / MANIFEST_NAME)
        raise

    sentences_encoded, sentences_reused, truncated = _encode_text(encoder, kept, output, progress)

    # Splits: the rows' own split column, or by video with the fractions and seed.
    stems = sorted({query.video_path.stem for query in kept})
    if any(query.split is not None for query in kept):
        video_splits = {query.video_path.stem: query.split for query in kept}
        split_rule = {"source": "column", "column": column_map["split"]}
        split_rule["description"] = f"from the annotation column {column_map['split']!r}"
    else:
        same_rule = (
            previous is not None
            and previous["split_rule"].get("source") == "ratios"
            and previous["split_rule"].get("ratios") == ratios
            and previous["split_rule"].get("seed") == seed
        )
        video_splits = assign_splits(stems, ratios, seed, previous["video_splits"] if same_rule else None)
        description = ", ".join(f"{name} {fraction:g}" for name, fraction in ratios.items())
        split_rule = {"source": "ratios", "ratios": ratios, "seed": seed}
        split_rule["description"] = f"by video ({description}; seed {seed})"
    rows: dict[str, list[dict]] = {name: [] for name in SPLIT_NAMES}
    for query in sorted(kept, key=lambda q: q.row):
        stem = query.video_path.stem
        rows[video_splits[stem]].append(
            {
                "query_id": query.query_id,
                "query": query.sentence,
                "video_id": query.video,
                "clip_id": stem,
                "duration": decoded[stem],
                "timestamps": [query.start, query.end],
                "ext_timestamps": None,
            }
        )
    rows = {name: split_rows for name, split_rows in rows.items() if split_rows}
    _write_annotations(output, rows)

    with h5py.File(output / TEXT_FEATURES, "r") as tokens, h5py.File(output / SENTENCE_FEATURES, "r") as sentences:
        first = next(iter(tokens))
        text_size, sentence_size = int(tokens[first].shape[-1]), int(sentences[first].shape[-1])
    with h5py.File(output / VIDEO_FEATURES, "r") as handle:
        video_size = int(handle[stems[0]].shape[-1])
    previous_videos = previous["inputs"].get("videos", {}) if previous is not None else {}
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "encoder": encoder_name,
        "encoder_family": getattr(encoder, "family", ""),
        "encoder_backend": getattr(encoder, "backend", "pytorch"),
        "seconds_per_feature": seconds_per_feature,
        "video_feature_size": video_size,
        "text_feature_size": text_size,
        "sentence_feature_size": sentence_size,
        "files": {
            "video_features": VIDEO_FEATURES,
            "text_features": TEXT_FEATURES,
            "sentence_features": SENTENCE_FEATURES,
            "annotations": {name: f"{ANNOTATIONS_DIR}/{name}.jsonl" for name in rows},
        },
        "counts": _split_counts(rows),
        "split_rule": split_rule,
        "video_splits": {stem: video_splits[stem] for stem in stems},
        "inputs": {
            "annotations": {"source": str(annotations), "fingerprint": fingerprint},
            "columns": column_map,
            "videos_dir": str(Path(videos_dir).resolve()),
            "videos": {
                video.stem: _file_identity(video, previous_videos.get(video.stem))
                for video in videos
                if video.stem in decoded
            },
        },
        "truncated_queries": truncated,
        "report": report.to_dict(),
    }
    (output / "README.md").write_text(dataset_card(manifest), encoding="utf-8")
    _write_json_atomically(output / MANIFEST_NAME, manifest)
    (output / PREVIOUS_MANIFEST_NAME).unlink(missing_ok=True)
    return PrepareResult(
        manifest=manifest,
        report=report,
        videos_encoded=extraction.written,
        videos_reused=extraction.skipped,
        sentences_encoded=sentences_encoded,
        sentences_reused=sentences_reused,
    )


def _file_identity(path: Path, previous: Mapping[str, Any] | None = None) -> dict:
    """Path, size, modification time and SHA-256 of a video; the hash of the last run is reused when the file's
    path, size and time are unchanged (hashing reads the whole file)."""
    stat = path.stat()
    identity = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if previous and all(previous.get(key) == value for key, value in identity.items()) and previous.get("sha256"):
        return {**identity, "sha256": previous["sha256"]}
    return {**identity, "sha256": _hash_file(path)}


def _write_annotations(output: Path, rows: dict[str, list[dict]]) -> None:
    """`annotations/{split}.jsonl`, swapped in whole (a kill leaves the previous folder)."""
    final = output / ANNOTATIONS_DIR
    temporary = output / (ANNOTATIONS_DIR + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    for name, split_rows in rows.items():
        with open(temporary / f"{name}.jsonl", "w", encoding="utf-8") as file:
            for row in split_rows:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
    old = output / (ANNOTATIONS_DIR + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(temporary, final)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------
# load


def load_prepared(
    path: str | os.PathLike, *, splits: list[str] | None = None, check_finite: bool = True
) -> GroundingDatasetDict:
    """A folder written by `rgnet-hf prepare` as a [`GroundingDatasetDict`] with lazy features (like [`load_mad`]).

    Args:
        path: the prepared folder.
        splits: split names to load (default: every split the folder has).
        check_finite: raise on NaN / inf in any feature read.

    Returns:
        [`GroundingDatasetDict`] with MAD's columns (`query_id, query, video_id, clip_id (the video's stem),
        duration, timestamps, ext_timestamps`); `seconds_per_feature` and `manifest` (the folder's manifest, whose
        encoder and feature sizes a model must share) are attributes.
    """
    folder = Path(path)
    manifest = load_manifest(folder)
    files = manifest["files"]
    available = files["annotations"]
    if splits is not None:
        unknown = [name for name in splits if name not in available]
        if unknown:
            raise ValueError(f"{folder} has no split(s) {unknown}; it has {list(available)}")
        available = {name: available[name] for name in splits}
    for name in (files["video_features"], files["text_features"], files["sentence_features"]):
        if not (folder / name).is_file():
            raise PreparedDatasetError(f"{folder / name} is missing: rerun `rgnet-hf prepare` for this folder")
    inputs = []
    for split, relative in available.items():
        annotation_file = folder / relative
        if not annotation_file.is_file():
            raise PreparedDatasetError(f"{annotation_file} is missing: rerun `rgnet-hf prepare` for this folder")
        with open(annotation_file, encoding="utf-8") as file:
            split_rows = [json.loads(line) for line in file if line.strip()]
        split_rows = [{**row, "_filter_duration": row["duration"]} for row in split_rows]
        report = SplitReport(str(annotation_file), rows_read=len(split_rows))
        sources = FeatureSources(
            video_path=str(folder / files["video_features"]),
            video_format="h5",
            text_path=str(folder / files["text_features"]),
            text_format="h5",
            sentence_path=str(folder / files["sentence_features"]),
            video_feature_dim=manifest["video_feature_size"],
            text_feature_dim=manifest["text_feature_size"],
            sentence_feature_dim=manifest["sentence_feature_size"],
            seconds_per_feature=manifest["seconds_per_feature"],
            check_finite=check_finite,
        )
        inputs.append((split, split_rows, report, sources, split == "train"))
    result = _build(
        "mad",
        inputs,
        seconds_per_feature=manifest["seconds_per_feature"],
        apply_training_filters=True,
        drop_zero_length_validation=False,
        on_missing_features="raise",
    )
    result.report = DataReport(f"prepared {folder}", result.report.splits)
    result.manifest = manifest
    result.manifest_path = str(folder / MANIFEST_NAME)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Models and prepared data


def prepared_model_settings(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The `RGNetConfig` fields a model trained on a prepared folder takes from its manifest."""
    return {
        "video_feature_size": manifest["video_feature_size"],
        "text_feature_size": manifest["text_feature_size"],
        "sentence_feature_size": manifest["sentence_feature_size"],
        "seconds_per_feature": manifest["seconds_per_feature"],
        "feature_encoder": manifest["encoder"],
    }


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return math.isclose(float(left), float(right), rel_tol=1e-9)
    return left == right


def check_model_fits_manifest(config, manifest: Mapping[str, Any], model: str = "the model", data: str = "") -> None:
    """Refuse a model whose encoder, feature rate or feature sizes are not those of a prepared folder.

    Features read at another rate put every moment at wrong times, and another encoder's features mean nothing to
    the model, so any difference is an error that names each field.
    """
    wrong = [
        f"{name}: model {getattr(config, name, None)!r}, data {value!r}"
        for name, value in prepared_model_settings(manifest).items()
        if not _same(getattr(config, name, None), value)
    ]
    if wrong:
        raise PreparedDatasetError(
            f"{model} does not fit the prepared data {data or manifest.get('encoder', '')}: "
            + "; ".join(wrong)
            + ". Prepare the data for this model with `rgnet-hf prepare --model MODEL_FOLDER ...` (its encoder and "
            "rate), or train a new model on this data (without init_from)"
        )
