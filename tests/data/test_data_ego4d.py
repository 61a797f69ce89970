"""Ego4D-NLQ from the official JSON layout (+ NaQ, test, v2, per-video features): rows, oddities, filters, reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rgnet_hf.data import AnnotationError, FeatureError, get_feature_sources, load_ego4d_nlq
from rgnet_hf.synthetic.mini_releases import (
    _ego4d_query,  # noqa: E402
    encode_npz,
    write_lmdb,
    write_pt_dir,
)

DIM, TEXT_DIM = 12, 6


def _query(start, end, query="where is the cup?", clip_start=0.0):
    return _ego4d_query(start, end, query, clip_start)


def _clip(clip_uid, start, end, annotations):
    return {
        "clip_uid": clip_uid,
        "video_start_sec": start,
        "video_end_sec": end,
        "video_start_frame": int(start * 30),
        "video_end_frame": int(end * 30),
        "clip_start_sec": 0,
        "clip_end_sec": end - start,
        "clip_start_frame": 0,
        "clip_end_frame": int((end - start) * 30),
        "source_clip_uid": "source",
        "annotations": [{"annotation_uid": uid, "language_queries": queries} for uid, queries in annotations],
    }


def _file(videos):
    return {"version": "1", "date": "2022", "description": "NLQ", "manifest": "", "videos": videos}


# Clip c1: 479.6 s long on the video timeline (10.4 .. 490.0); the CONE jsonl rounds its duration to 480.
TRAIN = _file(
    [
        {
            "video_uid": "v1",
            "split": "train",
            "clips": [
                _clip(
                    "c1",
                    10.4,
                    490.0,
                    [
                        (
                            "a1",
                            [
                                _query(12.0, 20.5),
                                _query(22.0, 25.0, query=None),  # null query: skipped, index kept
                                _query(30.0, 30.0),  # zero length
                                _query(100.0, 419.8),  # end > 479.6 - 60 but not > 480 - 60: kept (rounded duration)
                                _query(100.0, 420.5),  # no negative window
                                _query(479.9, 480.3),  # start >= 480 * 479.895 / 480
                                _query(0.0, 2.0),  # starts at 0
                            ],
                        ),
                        ("a2", [_query(470.0, 480.2), _query(1.0, 2.0, query="")]),  # end past the clip; empty
                    ],
                ),
                # A clip shorter than 180 s: queries ending in its last minute and starting before 120 s go.
                _clip("c2", 0.0, 100.0, [("a3", [_query(10.0, 20.0), _query(10.0, 50.0)])]),
            ],
        }
    ]
)
VALIDATION = _file(
    [
        {
            "video_uid": "v2",
            "split": "val",
            "clips": [_clip("c3", 5.0, 485.0, [("a4", [_query(5.0, 5.0), _query(6.0, 9.04), _query(7.01, 7.04)])])],
        }
    ]
)
TEST = _file(
    [
        {
            "video_uid": "v3",
            "split": "test",
            "clips": [
                {
                    **_clip("c4", 0.0, 480.0, []),
                    "annotations": [
                        {"annotation_uid": "a5", "language_queries": [{"query": "what?"}, {"query": None}]}
                    ],
                }
            ],
        }
    ]
)
# NaQ: top level holds only "videos"; clips only clip_uid + video_* times; annotation_uid = f"{video_uid}_{clip_uid}".
NAQ = {
    "videos": [
        {
            "video_uid": "v1",
            "clips": [
                {
                    "clip_uid": "c1",
                    "video_start_sec": 10.4,
                    "video_end_sec": 490.0,
                    "video_start_frame": 312,
                    "video_end_frame": 14700,
                    "annotations": [
                        {
                            "annotation_uid": "v1_c1",
                            "language_queries": [
                                {
                                    "clip_start_sec": 50.0,
                                    "clip_end_sec": 40.0,
                                    "video_start_sec": 60.4,
                                    "video_end_sec": 50.4,
                                    "query": "C cuts the onion",
                                },  # reversed window
                                {
                                    "clip_start_sec": 60.0,
                                    "clip_end_sec": 65.0,
                                    "video_start_sec": 70.4,
                                    "video_end_sec": 75.4,
                                    "query": "C opens the fridge",
                                },
                            ],
                        }
                    ],
                }
            ],
        }
    ]
}
TEXT_IDS = ["a1_0", "a1_2", "a1_3", "a1_4", "a1_5", "a1_6", "a2_0", "a3_0", "a3_1", "a4_0", "a4_1", "a4_2", "a5_0"]
NAQ_IDS = ["v1_c1_0", "v1_c1_1"]


def _write_annotations(folder, suffix=""):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (
        ("nlq_train", TRAIN),
        ("nlq_val", VALIDATION),
        ("nlq_test_unannotated", TEST),
        ("nlq_aug_naq_train", NAQ),
    ):
        (folder / f"{name}{suffix}.json").write_text(json.dumps(content), encoding="utf-8")


@pytest.fixture
def ego4d_release(tmp_path):
    rng = np.random.default_rng(1)
    _write_annotations(tmp_path / "annotations")
    # EgoVLP at 1.87 fps: about floor(duration / 0.535) rows; c1 has one row less than that.
    clips = {"c1": 895, "c2": 186, "c3": 896, "c4": 897}
    features = {clip: (rng.standard_normal((rows, DIM)) * 3).astype(np.float32) for clip, rows in clips.items()}
    texts, values = {}, {}
    for query_id in TEXT_IDS + NAQ_IDS:
        tokens = rng.standard_normal((4, TEXT_DIM)).astype(np.float32)
        cls = rng.standard_normal(DIM).astype(np.float32)
        texts[query_id] = (tokens, cls)
        values[query_id] = encode_npz({"token_features": tokens, "cls_features": cls})  # + stray allow_pickle
    paths = {
        "annotations_dir": tmp_path / "annotations",
        "video_features_dir": write_pt_dir(tmp_path / "egovlp", features),
        "text_features": write_lmdb(tmp_path / "text_lmdb", values),
    }
    return paths, features, texts


def _load(paths, **kwargs):
    return load_ego4d_nlq(paths["annotations_dir"], paths["video_features_dir"], paths["text_features"], **kwargs)


def test_rows_ids_and_filter_report(ego4d_release):
    paths, _, _ = ego4d_release
    dataset = _load(paths)
    assert list(dataset) == ["train", "validation", "test", "train_naq"]
    assert dataset.seconds_per_feature == 0.535
    train = dataset["train"].with_format(None)
    assert train["query_id"] == ["a1_0", "a1_3", "a1_6", "a2_0", "a3_0"]
    rows = {row["query_id"]: row for row in train}
    assert rows["a1_6"]["query_idx"] == 6 and rows["a1_6"]["annotation_uid"] == "a1"  # numbering keeps skipped ones
    assert rows["a2_0"]["timestamps"] == [470.0, 480.2]  # past the clip end, kept as annotated
    assert rows["a1_0"]["duration"] == pytest.approx(479.6)
    assert (rows["a1_0"]["video_start_sec"], rows["a1_0"]["video_end_sec"]) == (10.4, 490.0)
    assert rows["a1_0"]["video_id"] == "v1" and rows["a1_0"]["clip_id"] == "c1"

    report = dataset.report.splits["train"]
    assert report.rows_read == 11 and report.rows_kept == 5
    assert report.dropped == {
        "missing_query": ["a1_1", "a2_1"],
        "zero_length": ["a1_2"],
        "no_negative_window": ["a1_4", "a3_1"],
        "start_at_or_after_end": ["a1_5"],
    }

    validation = dataset["validation"].with_format(None)
    assert validation["query_id"] == ["a4_0", "a4_1", "a4_2"]  # no filter on validation by default
    test = dataset["test"].with_format(None)
    assert test["query_id"] == ["a5_0"] and test["timestamps"] == [None]
    assert dataset.report.splits["test"].dropped == {"missing_query": ["a5_1"]}


def test_naq_reversed_windows_are_swapped_and_reported(ego4d_release):
    paths, _, _ = ego4d_release
    naq = _load(paths, splits=["train_naq"])
    rows = naq["train_naq"].with_format(None)
    assert rows["query_id"] == ["v1_c1_0", "v1_c1_1"]
    assert rows["annotation_uid"] == ["v1_c1", "v1_c1"] and rows["query_idx"] == [0, 1]
    assert rows["timestamps"] == [[40.0, 50.0], [60.0, 65.0]]
    assert naq.report.splits["train_naq"].fixed == {"reversed_timestamps": ["v1_c1_0"]}


def test_rgnet_validation_zero_length_filter(ego4d_release):
    paths, _, _ = ego4d_release
    dataset = _load(paths, splits=["validation"], drop_zero_length_validation=True)
    assert dataset["validation"].with_format(None)["query_id"] == ["a4_1"]
    assert dataset.report.splits["validation"].dropped == {"zero_length_rounded": ["a4_0", "a4_2"]}


def test_features_clip_pt_and_text_lmdb(ego4d_release):
    paths, features, texts = ego4d_release
    dataset = _load(paths)
    row = dataset["train"][0]
    assert row["video_features"].shape == (895, DIM)
    np.testing.assert_array_equal(row["video_features"][45:135], features["c1"][45:135])
    np.testing.assert_array_equal(row["text_features"], texts["a1_0"][0])
    np.testing.assert_array_equal(row["sentence_features"], texts["a1_0"][1])
    sources = get_feature_sources(dataset["train"])
    assert (sources.video_format, sources.text_format) == ("pt", "lmdb")
    assert (sources.video_feature_dim, sources.text_feature_dim, sources.sentence_feature_dim) == (DIM, TEXT_DIM, DIM)
    # Every split shares the one lmdb environment of the process.
    np.testing.assert_array_equal(dataset["test"][0]["text_features"], texts["a5_0"][0])


def test_naq_features_elsewhere(tmp_path, ego4d_release):
    paths, features, texts = ego4d_release
    naq_features = {"c1": features["c1"] + 1.0}
    naq_dir = write_pt_dir(tmp_path / "egovlp_naq", naq_features)
    naq_text = write_lmdb(
        tmp_path / "text_naq", {q: encode_npz({"token_features": texts[q][0] * 2}) for q in NAQ_IDS + TEXT_IDS}
    )
    dataset = _load(paths, naq_video_features_dir=naq_dir, naq_text_features=naq_text)
    np.testing.assert_array_equal(dataset["train_naq"][0]["video_features"][0:3], features["c1"][:3] + 1.0)
    np.testing.assert_array_equal(dataset["train_naq"][0]["text_features"], texts["v1_c1_0"][0] * 2)
    assert dataset["train_naq"][0]["sentence_features"] is None  # that lmdb has no cls_features
    np.testing.assert_array_equal(dataset["train"][0]["video_features"][0:3], features["c1"][:3])


def test_version_two_file_names(tmp_path, ego4d_release):
    paths, _, _ = ego4d_release
    _write_annotations(tmp_path / "v2", suffix="_v2")
    dataset = load_ego4d_nlq(tmp_path / "v2", paths["video_features_dir"], paths["text_features"], version="v2")
    assert list(dataset) == ["train", "validation", "test", "train_naq"]
    assert dataset.report.splits["train"].source.endswith("nlq_train_v2.json")
    with pytest.raises(FileNotFoundError, match="nlq_train.json"):
        load_ego4d_nlq(tmp_path / "v2", paths["video_features_dir"], None)  # v1 names are not there
    with pytest.raises(ValueError, match="version"):
        load_ego4d_nlq(tmp_path / "v2", paths["video_features_dir"], None, version="v3")


def test_per_video_features_are_cut_to_clips(tmp_path, ego4d_release):
    paths, _, _ = ego4d_release
    rng = np.random.default_rng(2)
    seconds_per_feature = 16 / 30  # the official SlowFast features
    videos = {video: rng.standard_normal((1000, DIM)).astype(np.float32) for video in ("v1", "v2", "v3")}
    video_dir = write_pt_dir(tmp_path / "per_video", videos)
    dataset = load_ego4d_nlq(
        paths["annotations_dir"],
        video_dir,
        paths["text_features"],
        splits=["train"],
        features_per="video",
        seconds_per_feature=seconds_per_feature,
    )
    rows = dataset["train"].with_format(None)
    c1 = dataset["train"][rows["clip_id"].index("c1")]["video_features"]
    # Clip c1 spans 10.4 .. 490.0 s of video v1: rows floor(10.4 / (16/30)) = 19 .. ceil(490 / (16/30)) + 1 = 920.
    np.testing.assert_array_equal(np.asarray(c1), videos["v1"][19:920])
    c2 = dataset["train"][rows["clip_id"].index("c2")]["video_features"]
    np.testing.assert_array_equal(c2[0:10], videos["v1"][0:10])  # c2 spans 0 .. 100 s


def test_errors_name_file_and_place(tmp_path, ego4d_release):
    paths, features, _ = ego4d_release
    broken = json.loads(json.dumps(TRAIN))
    del broken["videos"][0]["clips"][0]["annotations"][1]["annotation_uid"]
    (paths["annotations_dir"] / "nlq_train.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"nlq_train.json: videos\[0\].clips\[0\].annotations\[1\]"):
        _load(paths, splits=["train"])

    broken = json.loads(json.dumps(TRAIN))
    del broken["videos"][0]["clips"][1]["annotations"][0]["language_queries"][1]["clip_end_sec"]
    (paths["annotations_dir"] / "nlq_train.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"language_queries\[1\] \(clip 'c2'\): missing field 'clip_end_sec'"):
        _load(paths, splits=["train"])

    (paths["annotations_dir"] / "nlq_val.json").write_text(json.dumps({"clips": []}), encoding="utf-8")
    with pytest.raises(AnnotationError, match="'videos' list"):
        _load(paths, splits=["validation"])

    (paths["video_features_dir"] / "c4.pt").unlink()
    with pytest.raises(FeatureError, match="no features in .*egovlp.*c4"):
        _load(paths, splits=["test"])
    torch.save({"features": torch.zeros(10, DIM + 1)}, paths["video_features_dir"] / "c4.pt")
    with pytest.raises(FeatureError, match=f"feature size {DIM + 1}, expected {DIM}"):
        _load(paths, splits=["test"], video_feature_dim=DIM)
    bad = features["c4"].copy()
    bad[5, 0] = np.inf
    write_pt_dir(paths["video_features_dir"], {"c4": bad})
    row = _load(paths, splits=["test"])["test"][0]
    np.testing.assert_array_equal(row["video_features"][10:20], features["c4"][10:20])
    with pytest.raises(FeatureError, match="NaN or infinite"):
        row["video_features"][0:10]


def test_duplicate_query_ids_are_reported(ego4d_release):
    paths, _, _ = ego4d_release
    duplicated = json.loads(json.dumps(VALIDATION))
    clip = duplicated["videos"][0]["clips"][0]
    clip["annotations"].append({"annotation_uid": "a4", "language_queries": [_query(50.0, 60.0)]})
    (paths["annotations_dir"] / "nlq_val.json").write_text(json.dumps(duplicated), encoding="utf-8")
    dataset = _load(paths, splits=["validation"])
    rows = dataset["validation"].with_format(None)
    assert rows["query_id"] == ["a4_0", "a4_1", "a4_2"]
    assert rows["timestamps"][0] == [5.0, 5.0]  # the first occurrence is kept
    assert dataset.report.splits["validation"].dropped == {"duplicate_query_id": ["a4_0"]}


def test_empty_clip_feature_file_fails_at_load(ego4d_release):
    paths, _, _ = ego4d_release
    torch.save(torch.zeros(0, DIM), paths["video_features_dir"] / "c2.pt")  # not the first clip of the split
    with pytest.raises(FeatureError, match="video features of 'c2' are empty"):
        _load(paths, splits=["train"])


def test_pickled_objects_in_a_clip_feature_file_are_refused(ego4d_release, tmp_path):
    import os

    paths, _, _ = ego4d_release
    marker = tmp_path / "code-ran"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"features": RunsCode()}, paths["video_features_dir"] / "c2.pt")
    with pytest.raises(FeatureError, match=r"c2.pt: refused, the file holds objects other than tensors"):
        _load(paths, splits=["train"])
    assert not marker.exists()
