"""The CONE/RGNet pre-processed variant: jsonl (no trailing newline, int durations) + lmdb of npz archives."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from rgnet_hf.data import (
    AnnotationError,
    FeatureError,
    cone_variant_files,
    get_feature_sources,
    load_cone_variant,
)
from rgnet_hf.synthetic.mini_releases import encode_npz, write_jsonl, write_lmdb

DIM, TEXT_DIM = 10, 7


def _ego_row(query_id, clip, timestamps=None, start_end=(100, 580), query="what did I eat?"):
    row = {
        "query": query,
        "query_id": query_id,
        "duration": start_end[1] - start_end[0],  # an int, as CONE's converter writes it
        "clip_id": clip,
        "video_id": f"video-of-{clip}",
        "clip_video_start_end": list(start_end),
    }
    if timestamps is not None:
        row["timestamps"] = timestamps
    return row


EGO_TRAIN = [
    _ego_row("ann1_0", "clipA", [12.5, 18.0]),
    _ego_row("ann1_2", "clipA", [50.0, 50.0]),  # zero length
    _ego_row("ann1_3", "clipA", [300.0, 200.0]),  # reversed: filtered on the raw values, then swapped
    _ego_row("ann1_4", "clipA", [479.9, 480.0]),  # start >= 480 * 479.895/480
    _ego_row("ann2_0", "clipB", [10.0, 95.0], start_end=(0, 150)),  # no negative window (short clip)
    _ego_row("vid_clipA_5", "clipA", [30.0, 31.0]),  # NaQ-style id: annotation_uid has underscores
]
EGO_VALIDATION = [_ego_row("ann3_0", "clipB", [1.0, 1.0], start_end=(0, 150)), _ego_row("ann3_1", "clipB", [2, 9])]
EGO_TEST = [_ego_row("ann4_0", "clipA"), _ego_row("ann4_1", "clipB", start_end=(0, 150))]


@pytest.fixture
def ego_variant(tmp_path):
    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    write_jsonl(data / "ego_train.jsonl", EGO_TRAIN)
    write_jsonl(data / "ego_val.jsonl", EGO_VALIDATION)
    write_jsonl(data / "ego_test.jsonl", EGO_TEST)
    videos = {"clipA": rng.standard_normal((896, DIM)).astype(np.float32) * 4, "clipB": rng.standard_normal((279, DIM))}
    videos["clipB"] = videos["clipB"].astype(np.float32)
    texts = {}
    for row in EGO_TRAIN + EGO_VALIDATION + EGO_TEST:
        texts[row["query_id"]] = (rng.standard_normal((5, TEXT_DIM)).astype(np.float32), rng.standard_normal(DIM))
    lmdb_dir = data / "ego4d_nlq_data_for_cone" / "offline_lmdb"
    video_lmdb = write_lmdb(
        lmdb_dir / "egovlp_video_feature_1.87fps", {k: encode_npz({"features": v}) for k, v in videos.items()}
    )
    text_values = {}
    for index, (query_id, (tokens, cls)) in enumerate(texts.items()):
        # Alternate the sentence-feature conventions that readers must accept.
        if index % 3 == 0:
            members = {"token_features": tokens, "cls_features": cls.astype(np.float32)}
        elif index % 3 == 1:
            members = {"token_features": tokens, "cls_features": cls.astype(np.float32)[None, :]}  # 2-D: row 0
        else:
            members = {"token_features": tokens, "eot_features": cls.astype(np.float32)}  # no cls: EOT fallback
        text_values[query_id] = encode_npz(members, stray_allow_pickle=index % 2 == 0)
    text_lmdb = write_lmdb(lmdb_dir / "egovlp_clip_text_features", text_values)
    return data, video_lmdb, text_lmdb, videos, texts


def _load(data, video_lmdb, text_lmdb, **kwargs):
    return load_cone_variant(cone_variant_files(data, "ego4d"), video_lmdb, text_lmdb, dataset_name="ego4d", **kwargs)


def test_jsonl_has_no_trailing_newline_and_is_ascii(ego_variant):
    data, *_ = ego_variant
    text = (data / "ego_train.jsonl").read_text(encoding="utf-8")
    assert not text.endswith("\n") and text.isascii()


def test_ego4d_rows_filters_and_fixes(ego_variant):
    data, video_lmdb, text_lmdb, _, _ = ego_variant
    dataset = _load(data, video_lmdb, text_lmdb)
    assert list(dataset) == ["train", "validation", "test"]
    train = dataset["train"].with_format(None)
    assert train["query_id"] == ["ann1_0", "ann1_3", "vid_clipA_5"]
    rows = {row["query_id"]: row for row in train}
    assert rows["ann1_3"]["timestamps"] == [200.0, 300.0]
    assert (rows["vid_clipA_5"]["annotation_uid"], rows["vid_clipA_5"]["query_idx"]) == ("vid_clipA", 5)
    assert rows["ann1_0"]["duration"] == 480.0 and rows["ann1_0"]["video_start_sec"] == 100.0
    report = dataset.report.splits["train"]
    assert report.dropped == {
        "zero_length": ["ann1_2"],
        "start_at_or_after_end": ["ann1_4"],
        "no_negative_window": ["ann2_0"],
    }
    assert report.fixed == {"reversed_timestamps": ["ann1_3"]}
    assert dataset["validation"].num_rows == 2
    assert dataset["test"].with_format(None)["timestamps"] == [None, None]


def test_lmdb_reads_and_member_conventions(ego_variant):
    data, video_lmdb, text_lmdb, videos, texts = ego_variant
    dataset = _load(data, video_lmdb, text_lmdb)
    all_rows = [row for split in dataset.values() for row in split]
    assert len(all_rows) == 7
    for row in all_rows:
        tokens, cls = texts[row["query_id"]]
        np.testing.assert_array_equal(row["text_features"], tokens)
        np.testing.assert_allclose(row["sentence_features"], cls.astype(np.float32))
        np.testing.assert_array_equal(row["video_features"][90:180], videos[row["clip_id"]][90:180])
    store = get_feature_sources(dataset["train"]).video_store()
    clone = pickle.loads(pickle.dumps(store))
    assert clone._opened is None
    np.testing.assert_array_equal(clone.read("clipB", 0, 5), videos["clipB"][:5])


def test_cone_nested_layout_and_mad(tmp_path):
    rng = np.random.default_rng(4)
    folder = tmp_path / "data" / "mad_data"
    rows = [
        {
            "query_id": 17,
            "query": "He sits. \U0001f600",
            "duration": 120.4,
            "clip_id": "m1",
            "video_id": "m1",
            "timestamps": [0.0, 3.2],
        },
        {"query_id": "18", "query": "She runs.", "duration": 120.4, "clip_id": "m1", "timestamps": [-1.0, 3.0]},
        {"query_id": "19", "query": "Night.", "duration": 120.4, "clip_id": "m1", "timestamps": [119.0, 121.0]},
    ]
    write_jsonl(folder / "train_v1.jsonl", rows)
    write_jsonl(folder / "train.jsonl", rows[:1])
    write_jsonl(folder / "val.jsonl", rows[2:])
    files = cone_variant_files(tmp_path / "data", "mad")
    assert files == {"train": folder / "train_v1.jsonl", "validation": folder / "val.jsonl"}
    video = write_lmdb(tmp_path / "v", {"m1": encode_npz({"features": rng.standard_normal((601, 4))})})
    text = write_lmdb(
        tmp_path / "t", {q: encode_npz({"token_features": rng.standard_normal((3, 5))}) for q in ("17", "18", "19")}
    )
    dataset = load_cone_variant(files, video, text, dataset_name="mad")
    assert dataset.seconds_per_feature == 0.2
    train = dataset["train"].with_format(None)
    assert train["query_id"] == ["17", "19"]  # int ids become strings
    assert train["query"][0] == "He sits. \U0001f600"
    assert train["video_id"] == ["m1", "m1"]  # defaults to clip_id when absent
    assert dataset.report.splits["train"].dropped == {"negative_start": ["18"]}
    with pytest.raises(FileNotFoundError, match="no ego4d jsonl"):
        cone_variant_files(tmp_path / "data", "ego4d")


def test_malformed_lines_and_archives(tmp_path, ego_variant):
    data, video_lmdb, text_lmdb, videos, _ = ego_variant
    lines = (data / "ego_val.jsonl").read_text(encoding="utf-8").split("\n")
    (data / "ego_val.jsonl").write_text("\n".join([lines[0], "{broken", lines[1]]), encoding="utf-8")
    with pytest.raises(AnnotationError, match="ego_val.jsonl: line 2: not valid JSON"):
        _load(data, video_lmdb, text_lmdb)
    (data / "ego_val.jsonl").write_text(json.dumps({"query_id": "x_1", "query": "q", "clip_id": "clipA"}))
    with pytest.raises(AnnotationError, match="line 1 \\(query_id 'x_1'\\): missing field 'duration'"):
        _load(data, video_lmdb, text_lmdb)
    (data / "ego_val.jsonl").write_text(json.dumps(_ego_row("noindex", "clipA", [1, 2])))
    with pytest.raises(AnnotationError, match="<annotation_uid>_<query_idx>"):
        _load(data, video_lmdb, text_lmdb)
    (data / "ego_val.jsonl").write_text("\n".join(lines))

    no_member = write_lmdb(tmp_path / "bad_video", {"clipA": encode_npz({"feats": videos["clipA"]}), "clipB": b"zz"})
    dataset = _load(data, video_lmdb, text_lmdb)
    sources = get_feature_sources(dataset["train"]).replace(video_path=str(no_member))
    with pytest.raises(FeatureError, match="no 'features' member"):
        sources.video_store().read("clipA")
    with pytest.raises(FeatureError, match="not a readable npz"):
        sources.video_store().read("clipB")
    with pytest.raises(FeatureError, match="no data.mdb"):
        load_cone_variant({"train": data / "ego_train.jsonl"}, tmp_path, text_lmdb, dataset_name="ego4d")


def test_split_specific_feature_paths(tmp_path, ego_variant):
    data, video_lmdb, text_lmdb, videos, _ = ego_variant
    shifted = write_lmdb(tmp_path / "naq_video", {k: encode_npz({"features": v + 5}) for k, v in videos.items()})
    dataset = _load(data, {"train": shifted, "validation": video_lmdb, "test": video_lmdb}, text_lmdb)
    np.testing.assert_array_equal(dataset["train"][0]["video_features"][0:2], videos["clipA"][:2] + 5)
    np.testing.assert_array_equal(dataset["test"][0]["video_features"][0:2], videos["clipA"][:2])
    with pytest.raises(ValueError, match="no video features given for split 'test'"):
        _load(data, {"train": shifted, "validation": video_lmdb}, text_lmdb)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, queries):
        self.queries = queries

    def __len__(self):
        return len(self.queries)

    def __getitem__(self, index):
        row = self.queries[index]
        return row["query_id"], torch.from_numpy(row["video_features"][0:4]), torch.from_numpy(row["text_features"])


def test_lmdb_in_forked_workers_after_the_parent_read(ego_variant):
    data, video_lmdb, text_lmdb, videos, texts = ego_variant
    train = _load(data, video_lmdb, text_lmdb)["train"]
    assert train[0]["text_features"].shape == (5, TEXT_DIM)  # the parent has both environments open now
    loader = torch.utils.data.DataLoader(_Rows(train), batch_size=None, num_workers=2)
    for query_id, video, tokens in loader:
        clip = train.with_format(None)[train.with_format(None)["query_id"].index(query_id)]["clip_id"]
        np.testing.assert_array_equal(video.numpy(), videos[clip][:4])
        np.testing.assert_array_equal(tokens.numpy(), texts[query_id][0])
    assert train[1]["text_features"].shape == (5, TEXT_DIM)  # and the parent still reads
