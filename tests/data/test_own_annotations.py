"""Annotations of your own videos: every format through `datasets`, the column map, every per-row check."""

from __future__ import annotations

import json

import datasets
import pytest
from raw_video_utils import PALETTE, make_not_a_video, make_test_video

from rgnet_hf.data.own_annotations import (
    EXTREMEWHENBENCH_COLUMNS,
    AnnotationError,
    check_annotations,
    parse_column_map,
    read_annotation_table,
)

# ExtremeWhenBench's column names (one row per question).
EWB_ROWS = [
    {"qid": "q0", "video_id": "alpha", "question": "a man opens the door.", "correct_interval": [0.5, 2.0],
     "video_duration_s": 6.0},
    {"qid": "q1", "video_id": "beta", "question": "a dog runs across the park.", "correct_interval": [3.0, 5.5],
     "video_duration_s": 6.0},
    {"qid": "q2", "video_id": "alpha", "question": "he closes the window slowly.", "correct_interval": [4.0, 6.0],
     "video_duration_s": 6.0},
]  # fmt: skip


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_videos")
    make_test_video(root / "alpha.mp4", PALETTE[:6], fps=5)
    make_test_video(root / "beta.mkv", PALETTE[:6], fps=5)
    (root / "more").mkdir()
    make_test_video(root / "more" / "gamma.mp4", PALETTE[:4], fps=5)
    make_not_a_video(root / "broken.mp4")
    return root


def _write_all_formats(folder, rows):
    """The same rows as JSONL, JSON, CSV, TSV, Parquet and a save_to_disk folder."""
    folder.mkdir()
    paths = {}
    with open(folder / "rows.jsonl", "w") as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)
    paths["jsonl"] = folder / "rows.jsonl"
    (folder / "rows.json").write_text(json.dumps(rows))
    paths["json"] = folder / "rows.json"
    table = datasets.Dataset.from_list(rows)
    flat = table.map(lambda row: {"correct_interval": json.dumps(row["correct_interval"])})
    flat.to_csv(folder / "rows.csv", index=False)
    paths["csv"] = folder / "rows.csv"
    flat.to_csv(folder / "rows.tsv", index=False, sep="\t")
    paths["tsv"] = folder / "rows.tsv"
    table.to_parquet(folder / "rows.parquet")
    paths["parquet"] = folder / "rows.parquet"
    datasets.DatasetDict({"test": table}).save_to_disk(folder / "saved")
    paths["saved"] = folder / "saved"
    return paths


def test_every_format_reads_the_same_rows_with_the_extremewhenbench_mapping(tmp_path, videos):
    paths = _write_all_formats(tmp_path / "tables", EWB_ROWS)
    columns = parse_column_map(EXTREMEWHENBENCH_COLUMNS)
    results = {}
    for kind, path in paths.items():
        rows, fingerprint = read_annotation_table(path)
        assert fingerprint and len(rows) == 3, kind
        checked, report = check_annotations(rows, videos, columns, source=str(path))
        assert not report.failed, (kind, str(report))
        results[kind] = [(q.query_id, q.sentence, q.video_path.name, q.start, q.end) for q in checked]
    assert all(result == results["jsonl"] for result in results.values())
    assert results["jsonl"][1] == ("q1", "a dog runs across the park.", "beta.mkv", 3.0, 5.5)
    # A saved DatasetDict keeps the name of the split each row came from.
    rows, _ = read_annotation_table(paths["saved"])
    assert {row["source_split"] for row in rows} == {"test"}


def test_start_and_end_columns_and_default_query_ids_are_stable(tmp_path, videos):
    rows = [{"video": "alpha.mp4", "sentence": "a man opens the door.", "start": 1, "end": 2}]
    first, _ = check_annotations(rows, videos)
    again, _ = check_annotations([{"video": "beta", "sentence": "x y", "start": 0, "end": 1}] + rows, videos)
    assert first[0].query_id == again[1].query_id  # content ids do not depend on the row's position
    assert first[0].video_path.name == "alpha.mp4"
    # A path to a file inside the videos folder also names it; a file outside it does not.
    inside = dict(rows[0], video=str(videos / "more" / "gamma.mp4"))
    outside = dict(rows[0], video=str(tmp_path / "elsewhere.mp4"))
    make_test_video(tmp_path / "elsewhere.mp4", PALETTE[:2], fps=5)
    checked, report = check_annotations([inside, outside], videos)
    assert [q.video_path.name for q in checked] == ["gamma.mp4"] and report.counts() == {"missing_video": 1}


def test_column_map_errors_name_the_field():
    with pytest.raises(AnnotationError, match="unknown field 'vidoe'"):
        parse_column_map("vidoe=video_id")
    with pytest.raises(AnnotationError, match="give a column name for 'sentence'"):
        parse_column_map("sentence=")
    assert "start" not in parse_column_map("span=interval")


def test_missing_columns_and_unknown_sources_are_refused(tmp_path, videos):
    with pytest.raises(AnnotationError, match=r"no column for .*sentence=question.*--columns"):
        check_annotations([{"video": "alpha", "start": 0, "end": 1}], videos, parse_column_map("sentence=question"))
    (tmp_path / "rows.txt").write_text("a b c")
    with pytest.raises(AnnotationError, match="unknown annotation file type"):
        read_annotation_table(tmp_path / "rows.txt")
    with pytest.raises(FileNotFoundError, match="annotation source not found"):
        read_annotation_table(tmp_path / "absent.jsonl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(AnnotationError, match="not one written by save_to_disk"):
        read_annotation_table(tmp_path / "folder")
    (tmp_path / "bad.jsonl").write_text('{"video": "alpha", \n')
    with pytest.raises(AnnotationError, match="cannot be read as a json table"):
        read_annotation_table(tmp_path / "bad.jsonl")


def test_every_bad_row_is_reported_with_its_reason(tmp_path, videos):
    good = {"video": "alpha", "sentence": "a man opens the door.", "start": 1.0, "end": 2.0}
    rows = [
        dict(good, query_id="ok"),
        dict(good, query_id="no_video", video="missing_one"),
        dict(good, query_id="unreadable", video="broken"),
        dict(good, query_id="empty", sentence="  ?. "),
        dict(good, query_id="null_sentence", sentence=None),
        dict(good, query_id="reversed", start=2.0, end=2.0),
        dict(good, query_id="past_end", start=5.0, end=9.0),
        dict(good, query_id="negative", start=-1.0, end=1.0),
        dict(good, query_id="not_a_number", start="soon"),
        dict(good, query_id="ok"),  # duplicate id
        dict(good, query_id="wrong_duration", duration=60.0),
        dict(good, query_id="clipped", start=5.0, end=6.3),  # within the 0.5 s tolerance
        dict(good, query_id="a/b"),
    ]
    checked, report = check_annotations(rows, videos, source="mine.jsonl")
    failed = {reason: [entry[1] for entry in entries] for reason, entries in report.failed.items()}
    assert failed == {
        "missing_video": ["no_video"],
        "unreadable_video": ["unreadable"],
        "empty_sentence": ["empty", "null_sentence"],
        "start_not_before_end": ["reversed"],
        "moment_outside_video": ["past_end", "negative"],
        "invalid_moment": ["not_a_number"],
        "duplicate_query_id": ["ok"],
        "duration_mismatch": ["wrong_duration"],
        "invalid_query_id": ["a/b"],
    }
    assert [query.query_id for query in checked] == ["ok", "clipped"]
    assert checked[1].end == pytest.approx(6.0) and report.clipped[0][1] == "clipped"
    text = str(report)
    assert "13 rows read, 2 valid" in text and "missing_video" in text and "row 1 (query no_video)" in text
    assert report.to_dict()["failed"]["empty_sentence"]["count"] == 2


def test_split_column_checks(videos):
    base = {"sentence": "a man opens the door.", "start": 0.5, "end": 1.0}
    rows = [
        dict(base, video="alpha", split="train"),
        dict(base, video="alpha", split="test", query_id="leak"),  # the same video in a second split
        dict(base, video="beta", split="dev", query_id="unknown"),
        dict(base, video="gamma", split=None, query_id="missing"),
    ]
    checked, report = check_annotations(rows, videos)
    assert not checked
    assert {reason: len(entries) for reason, entries in report.failed.items()} == {
        "unknown_split": 2,
        "video_in_two_splits": 2,
    }


def test_same_stem_in_two_folders(tmp_path):
    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    make_test_video(root / "a" / "clip.mp4", PALETTE[:3], fps=5)
    make_test_video(root / "b" / "clip.mp4", PALETTE[:3], fps=5)
    base = {"sentence": "a man opens the door.", "start": 0.5, "end": 1.0}
    # A bare stem matches both files; exact paths resolve, but the two videos would share one feature key.
    rows = [dict(base, video="clip"), dict(base, video="a/clip.mp4"), dict(base, video="b/clip.mp4", query_id="b")]
    checked, report = check_annotations(rows, root)
    assert not checked
    assert report.counts() == {"ambiguous_video": 1, "video_stem_clash": 2}
    assert "a/clip.mp4" in str(report) and "b/clip.mp4" in str(report)


def test_a_hub_dataset_id_goes_to_load_dataset(monkeypatch, videos):
    calls = []

    def fake_load_dataset(name, *args, **kwargs):
        calls.append(name)
        return datasets.DatasetDict({"test": datasets.Dataset.from_list(EWB_ROWS)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows, fingerprint = read_annotation_table("someone/extreme-when-bench")
    assert calls == ["someone/extreme-when-bench"] and fingerprint.startswith("hub:someone/extreme-when-bench:")
    assert [row["source_split"] for row in rows] == ["test"] * 3
    columns = parse_column_map(EXTREMEWHENBENCH_COLUMNS + ",split=source_split")
    checked, report = check_annotations(rows, videos, columns)
    assert not report.failed and {query.split for query in checked} == {"test"}
