"""MAD from its official release layout: rows, oddities, training filter report, lazy feature reads, errors."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch

from rgnet_hf.data import (
    AnnotationError,
    FeatureError,
    GroundingDatasetDict,
    LazyVideoFeatures,
    get_feature_sources,
    load_grounding_dataset,
    load_mad,
    summarize,
)
from rgnet_hf.synthetic.mini_releases import write_h5

DIM, TEXT_DIM = 16, 8
# Movie A: 1000 feature rows for 200.2 s (one row short of duration * 5); B is shorter than one 900-frame window.
MOVIES = {"A_movie": (1000, 200.2), "B_movie": (300, 60.0), "C_movie": (500, 100.0)}
EMOJI_SENTENCE = "He opens the door.\nShe smiles \u2014 caf\u00e9 \U0001f600"


def _record(movie: str, start: float, end: float, sentence: str | None = "Someone walks in.") -> dict:
    return {
        "movie": movie,
        "sentence": sentence,
        "timestamps": [start, end],
        "ext_timestamps": [start, max(end, start + 2.0)],
        "movie_duration": MOVIES[movie][1],
        "tokens": ["someone"],  # an extra field that readers must ignore
    }


TRAIN = {
    "1": _record("A_movie", 10.0, 14.0),
    "2": _record("A_movie", 0.0, 3.0),  # starts at 0 s
    "3": _record("A_movie", 198.2, 200.2),  # ends exactly at the duration
    "4": _record("A_movie", 20.0, 20.0),  # zero length -> dropped
    "5": _record("A_movie", -0.5, 2.0),  # negative start -> dropped
    "6": _record("A_movie", 200.2, 201.0),  # start at the duration -> dropped
    "7": _record("B_movie", 5.0, 5.1),  # shorter than one feature, on a movie shorter than a window
    "8": _record("A_movie", 50.0, 52.0, sentence=None),  # null sentence -> skipped
    "9": _record("A_movie", 30.0, 33.0, sentence=EMOJI_SENTENCE),
    "11": _record("A_movie", 199.0, 200.8),  # ends past the duration, kept
}
VALIDATION = {"20": _record("B_movie", 0.0, 2.0), "21": _record("B_movie", 1.0, 1.0)}  # zero length kept (no filter)
TEST = {"30": _record("C_movie", 3.0, 6.0), "31": _record("C_movie", 90.0, 95.5)}


@pytest.fixture
def mad_release(tmp_path):
    rng = np.random.default_rng(0)
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    for name, records in (("train", TRAIN), ("val", VALIDATION), ("test", TEST)):
        (annotations / f"MAD_{name}.json").write_text(json.dumps(records), encoding="utf-8")
    # Norms around 10, far from 1, as real CLIP rows.
    frames = {movie: (rng.standard_normal((rows, DIM)) * 2.5).astype(np.float32) for movie, (rows, _) in MOVIES.items()}
    records = {**TRAIN, **VALIDATION, **TEST}
    tokens = {qid: rng.standard_normal((3 + int(qid) % 5, TEXT_DIM)).astype(np.float32) for qid in records}
    sentences = {qid: rng.standard_normal(TEXT_DIM).astype(np.float32) for qid in TEST}
    paths = {
        "annotations_dir": annotations,
        "video_features": write_h5(tmp_path / "features" / "CLIP_B32_frames_features_5fps.h5", frames),
        "text_features": write_h5(tmp_path / "features" / "CLIP_B32_language_tokens_features.h5", tokens),
        "sentence_features": write_h5(tmp_path / "features" / "CLIP_B32_language_features_MAD_test.h5", sentences),
    }
    return paths, frames, tokens, sentences


def _load(paths, **kwargs) -> GroundingDatasetDict:
    return load_mad(
        paths["annotations_dir"],
        paths["video_features"],
        paths["text_features"],
        sentence_features=paths["sentence_features"],
        **kwargs,
    )


def test_rows_timestamps_and_filter_report(mad_release):
    paths, _, _, _ = mad_release
    dataset = _load(paths)
    assert list(dataset) == ["train", "validation", "test"]
    assert dataset.dataset_name == "mad" and dataset.seconds_per_feature == 0.2

    train = dataset["train"].with_format(None)
    assert train["query_id"] == ["1", "2", "3", "7", "9", "11"]
    by_id = {row["query_id"]: row for row in train}
    assert by_id["3"]["timestamps"] == [198.2, 200.2]
    assert by_id["11"]["timestamps"] == [199.0, 200.8]  # kept as annotated (past the end)
    assert by_id["7"]["timestamps"] == [5.0, 5.1]
    assert by_id["9"]["query"] == EMOJI_SENTENCE  # newline, unicode and emoji kept as written
    assert by_id["1"]["clip_id"] == by_id["1"]["video_id"] == "A_movie"
    assert by_id["1"]["duration"] == 200.2
    assert by_id["1"]["ext_timestamps"] == [10.0, 14.0]

    report = dataset.report.splits["train"]
    assert report.rows_read == 10 and report.rows_kept == 6
    assert report.dropped == {
        "missing_query": ["8"],
        "zero_length": ["4"],
        "negative_start": ["5"],
        "start_at_or_after_end": ["6"],
    }
    # Evaluation splits are never filtered: the zero-length validation query stays.
    assert dataset["validation"].with_format(None)["query_id"] == ["20", "21"]
    assert dataset.report.splits["validation"].dropped == {}
    assert "negative_start" in str(dataset.report)

    unfiltered = _load(paths, apply_training_filters=False)
    # Only the null sentence is skipped, and the moment after the end of the features (1000 rows = 200.0 s).
    assert unfiltered["train"].num_rows == 8
    assert unfiltered.report.splits["train"].dropped == {"missing_query": ["8"], "moment_after_features_end": ["6"]}


def test_lazy_features_read_only_the_window(mad_release, monkeypatch):
    paths, frames, tokens, sentences = mad_release
    dataset = _load(paths)
    row = dataset["train"][0]
    video = row["video_features"]
    assert isinstance(video, LazyVideoFeatures)
    assert video.shape == (1000, DIM)  # from the features, not from the duration (1001)

    requested = []
    original = h5py.Dataset.__getitem__

    def spy(self, selection, *args, **kwargs):
        requested.append(selection)
        return original(self, selection, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    window = video[450:900]
    assert requested == [slice(450, 900, None)]  # the HDF5 read is the window, not the movie
    assert window.dtype == np.float32 and window.shape == (450, DIM)
    np.testing.assert_array_equal(window, frames["A_movie"][450:900])
    np.testing.assert_array_equal(video[950:2000], frames["A_movie"][950:])  # clipped at T like a Python slice
    monkeypatch.undo()

    np.testing.assert_array_equal(row["text_features"], tokens["1"])
    assert row["sentence_features"] is None  # MAD ships sentence features for the test split only
    test_row = dataset["test"][1]
    np.testing.assert_array_equal(test_row["sentence_features"], sentences["31"])
    np.testing.assert_array_equal(np.asarray(test_row["video_features"]), frames["C_movie"])
    batch = dataset["train"][1:3]  # batched access through the same transform
    assert [v.key for v in batch["video_features"]] == ["A_movie", "A_movie"]

    sources = get_feature_sources(dataset["train"])
    assert (sources.video_feature_dim, sources.text_feature_dim) == (DIM, TEXT_DIM)
    assert sources.sentence_feature_dim is None  # no train query has one
    assert get_feature_sources(dataset["test"]).sentence_feature_dim == TEXT_DIM
    assert get_feature_sources(dataset["train"].select([1, 0])) is sources  # kept through select


def test_float16_features_are_read_as_float32(tmp_path, mad_release):
    paths, frames, _, _ = mad_release
    half = {movie: array.astype(np.float16) for movie, array in frames.items()}
    paths = {**paths, "video_features": write_h5(tmp_path / "half.h5", half)}
    row = _load(paths)["train"][0]
    window = row["video_features"][0:10]
    assert window.dtype == np.float32
    np.testing.assert_array_equal(window, half["A_movie"][:10].astype(np.float32))


def test_handles_are_per_process(mad_release, monkeypatch):
    paths, frames, _, _ = mad_release
    dataset = _load(paths)
    store = get_feature_sources(dataset["train"]).video_store()
    first = store._handle()
    assert store._handle() is first  # opened once per process
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)  # as seen from a forked worker
    assert store._handle() is not first
    monkeypatch.undo()
    clone = pickle.loads(pickle.dumps(store))
    assert clone._opened is None  # handles never travel with a pickle
    np.testing.assert_array_equal(clone.read("B_movie", 10, 20), frames["B_movie"][10:20])


class _FirstRows(torch.utils.data.Dataset):
    def __init__(self, queries):
        self.queries = queries

    def __len__(self):
        return len(self.queries)

    def __getitem__(self, index):
        row = self.queries[index]
        return torch.from_numpy(row["video_features"][4:9]), os.getpid()


def test_dataloader_workers_read_the_right_rows(mad_release):
    paths, frames, _, _ = mad_release
    train = _load(paths)["train"]
    loader = torch.utils.data.DataLoader(_FirstRows(train), batch_size=None, num_workers=2)
    pids = set()
    for index, (rows, pid) in enumerate(loader):
        clip = train.with_format(None)[index]["clip_id"]
        np.testing.assert_array_equal(rows.numpy(), frames[clip][4:9])
        pids.add(pid)
    assert os.getpid() not in pids


def test_save_and_reattach(tmp_path, mad_release):
    paths, frames, _, _ = mad_release
    dataset = _load(paths)
    dataset.save_to_disk(tmp_path / "saved")
    assert (tmp_path / "saved" / "rgnet_data.json").is_file()
    loaded = load_grounding_dataset(tmp_path / "saved")
    assert loaded.dataset_name == "mad" and loaded.report.splits["train"].dropped["zero_length"] == ["4"]
    np.testing.assert_array_equal(loaded["train"][0]["video_features"][0:5], frames["A_movie"][:5])
    assert summarize(loaded) == summarize(dataset)

    moved = tmp_path / "moved.h5"
    shutil.move(paths["video_features"], moved)
    with pytest.raises(FeatureError, match="cannot open"):
        _ = load_grounding_dataset(tmp_path / "saved")["train"][0]["video_features"].shape
    relocated = load_grounding_dataset(tmp_path / "saved", video_features=moved)
    np.testing.assert_array_equal(relocated["train"][0]["video_features"][0:5], frames["A_movie"][:5])


def test_summary(mad_release):
    paths, _, _, _ = mad_release
    summary = summarize(_load(paths))
    assert summary["train"]["queries"] == 6 and summary["train"]["videos"] == 2
    assert summary["train"]["hours"] == pytest.approx((200.2 + 60.0) / 3600)
    assert summary["train"]["moments"]["max_s"] == pytest.approx(4.0)
    assert summary["validation"]["moments"]["zero_length"] == 1


@pytest.mark.parametrize("value", [-0.2, 0.0, float("nan")])
def test_a_non_positive_feature_rate_is_refused(mad_release, value):
    paths, _, _, _ = mad_release
    with pytest.raises(ValueError, match="`seconds_per_feature` must be a finite number > 0"):
        _load(paths, seconds_per_feature=value)


def test_split_selection_and_missing_files(mad_release):
    paths, _, _, _ = mad_release
    only_test = _load(paths, splits=["test"])
    assert list(only_test) == ["test"]
    (paths["annotations_dir"] / "MAD_val.json").unlink()
    assert list(_load(paths)) == ["train", "test"]
    with pytest.raises(FileNotFoundError, match="MAD_val.json"):
        _load(paths, splits=["validation"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mad(paths["annotations_dir"], paths["annotations_dir"] / "nope.h5", None)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"sentence": "x", "timestamps": [1, 2], "movie_duration": 10.0}, "missing field 'movie'"),
        ({"movie": "A_movie", "sentence": "x", "timestamps": [1], "movie_duration": 10.0}, "timestamps"),
        ({"movie": "A_movie", "sentence": "x", "timestamps": ["a", 2], "movie_duration": 10.0}, "must be a number"),
        ({"movie": "A_movie", "sentence": "x", "timestamps": [1, 2], "movie_duration": 0}, "movie_duration"),
        ({"movie": "A_movie", "sentence": 5, "timestamps": [1, 2], "movie_duration": 10.0}, "must be a string"),
    ],
)
def test_malformed_rows_name_file_and_row(mad_release, record, message):
    paths, _, _, _ = mad_release
    path = paths["annotations_dir"] / "MAD_train.json"
    path.write_text(json.dumps({**TRAIN, "777": record}), encoding="utf-8")
    with pytest.raises(AnnotationError, match=message) as error:
        _load(paths)
    assert "MAD_train.json" in str(error.value) and "'777'" in str(error.value)


def test_not_json_and_wrong_top_level(mad_release):
    paths, _, _, _ = mad_release
    path = paths["annotations_dir"] / "MAD_train.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        _load(paths)
    path.write_text(json.dumps([1, 2]), encoding="utf-8")
    with pytest.raises(AnnotationError, match="keyed by annotation id"):
        _load(paths)


def test_feature_errors(tmp_path, mad_release):
    paths, frames, tokens, _ = mad_release
    with pytest.raises(FeatureError, match="feature size 16, expected 32"):
        _load(paths, video_feature_dim=32)

    broken = dict(frames)
    broken["A_movie"] = frames["A_movie"].copy()
    broken["A_movie"][500, 3] = np.nan
    nan_paths = {**paths, "video_features": write_h5(tmp_path / "nan.h5", broken)}
    row = _load(nan_paths)["train"][0]
    np.testing.assert_array_equal(row["video_features"][0:450], frames["A_movie"][:450])  # clean window reads fine
    with pytest.raises(FeatureError, match="NaN or infinite.*A_movie|A_movie.*NaN or infinite"):
        row["video_features"][450:900]

    without_b = {movie: array for movie, array in frames.items() if movie != "B_movie"}
    missing_paths = {**paths, "video_features": write_h5(tmp_path / "missing.h5", without_b)}
    with pytest.raises(FeatureError, match="no features in .*missing.h5.*B_movie"):
        _load(missing_paths)
    dropped = _load(missing_paths, on_missing_features="drop")
    assert dropped.report.splits["train"].dropped["missing_video_features"] == ["7"]
    assert dropped.report.splits["validation"].dropped["missing_video_features"] == ["20", "21"]
    assert dropped["validation"].num_rows == 0

    no_text = {qid: array for qid, array in tokens.items() if qid != "9"}
    text_paths = {**paths, "text_features": write_h5(tmp_path / "tokens.h5", no_text)}
    with pytest.raises(FeatureError, match="query_id"):
        _load(text_paths)
    assert _load(text_paths, on_missing_features="drop").report.splits["train"].dropped["missing_text_features"] == [
        "9"
    ]

    one_d = {**frames, "C_movie": frames["C_movie"][:, 0]}
    with pytest.raises(FeatureError, match="expected \\[T, D\\]"):
        _load({**paths, "video_features": write_h5(tmp_path / "one_d.h5", one_d)})


def test_duplicated_query_ids_are_reported_not_overwritten(mad_release):
    paths, _, _, _ = mad_release
    first, second = json.dumps(_record("A_movie", 10.0, 14.0)), json.dumps(_record("A_movie", 40.0, 44.0))
    # Two entries with the key "1": plain json keeps the last one silently.
    (paths["annotations_dir"] / "MAD_train.json").write_text(f'{{"1": {first}, "1": {second}}}', encoding="utf-8")
    dataset = _load(paths, splits=["train"])
    rows = dataset["train"].with_format(None)
    assert rows["query_id"] == ["1"] and rows["timestamps"] == [[10.0, 14.0]]  # the first occurrence
    report = dataset.report.splits["train"]
    assert report.rows_read == 2 and report.dropped == {"duplicate_query_id": ["1"]}
    twice = first[:-1] + ', "timestamps": [1.0, 2.0]}'
    (paths["annotations_dir"] / "MAD_train.json").write_text(f'{{"1": {twice}}}', encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"row '1': field\(s\) \['timestamps'\] given more than once"):
        _load(paths, splits=["train"])


def test_moment_after_the_features_end_is_dropped_and_reported(mad_release):
    paths, _, _, _ = mad_release
    # A_movie: 1000 features = 200.0 s, duration 200.2 s; a moment at 200.05 s passes the duration filter.
    records = dict(TRAIN, **{"11": _record("A_movie", 200.05, 200.15)})
    (paths["annotations_dir"] / "MAD_train.json").write_text(json.dumps(records), encoding="utf-8")
    (paths["annotations_dir"] / "MAD_val.json").write_text(json.dumps({"11": records["11"]}), encoding="utf-8")
    dataset = _load(paths, splits=["train", "validation"])
    assert "11" not in dataset["train"].with_format(None)["query_id"]
    assert dataset.report.splits["train"].dropped["moment_after_features_end"] == ["11"]
    assert "moment_after_features_end" in str(dataset.report)
    # Evaluation keeps every query: the ground truth stays, the model just cannot find it.
    assert dataset["validation"].with_format(None)["query_id"] == ["11"]


def test_sampler_refuses_a_moment_after_the_features_end():
    from rgnet_hf.data.sampling import sample_training_window

    with pytest.raises(ValueError, match="starts at or after the end of the video features"):
        sample_training_window(
            1000, [200.05, 200.15], seconds_per_feature=0.2, window_length=900, rng=np.random.default_rng(0)
        )
