"""Training samples (official positive-window weighting, clipped spans, saliency, negative windows), their
reproducibility across DataLoader workers, the collator's output, and the evaluation items."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from rgnet_hf import RGNetConfig
from rgnet_hf.data import (
    EvaluationVideoDataset,
    RGNetTrainingCollator,
    RGNetTrainingDataset,
    iter_evaluation_videos,
    load_mad,
    positive_window_probabilities,
    sample_training_window,
)
from rgnet_hf.synthetic.mini_releases import write_h5
from rgnet_hf.windowing import moment_windows, window_span
from rgnet_hf.windowing import num_windows as count_windows

L, STRIDE, SPF = 40, 20, 0.2  # the parity fixtures' grid: windows of 40 frames, stride 20


def _reference_target(index, s, e, num_frames, window_length=L, stride=STRIDE):
    """The official target rule (docs/prepare_data.md, training samples), written out independently."""
    nominal = (index - 1) * stride
    first, last = max(nominal, 0), min(nominal + window_length, num_frames)
    valid = last - first
    a, b = max(nominal, s) - first, min(nominal + window_length, e) - first
    return first, last, (a + b) / 2 / valid, (b - a) / valid, a, b


def _draw(num_frames, timestamps, seed, **kwargs):
    return sample_training_window(
        num_frames,
        timestamps,
        seconds_per_feature=SPF,
        window_length=L,
        window_stride=STRIDE,
        rng=np.random.default_rng(seed),
        **kwargs,
    )


def test_positive_window_weights_are_the_official_ones():
    expected = norm.pdf(np.array([3, 4, 5, 6]) - 4.5)
    np.testing.assert_allclose(positive_window_probabilities([3, 4, 5, 6]), expected / expected.sum(), rtol=1e-12)
    np.testing.assert_allclose(positive_window_probabilities(range(6, 9)), [0.274068619, 0.451862762, 0.274068619])
    assert positive_window_probabilities([7]).tolist() == [1.0]


def test_positive_window_distribution_empirically():
    # Frames [500, 1300] with stride 20 on 2000 frames: candidates 25 ... 65 (41 windows).
    num_frames, timestamps = 2000, (100.0, 260.0)
    candidates = list(moment_windows(500.0, 1300.0, STRIDE, count_windows(num_frames, STRIDE)))
    assert candidates == list(range(25, 66))
    rng = np.random.default_rng(0)
    draws = [
        sample_training_window(num_frames, timestamps, seconds_per_feature=SPF, window_length=L, rng=rng).window_index
        for _ in range(20_000)
    ]
    counts = np.bincount(np.array(draws) - 25, minlength=41) / len(draws)
    exact = norm.pdf(np.arange(25, 66) - 45.0)
    exact /= exact.sum()
    assert set(draws) <= set(candidates)
    np.testing.assert_allclose(counts, exact, atol=0.012)  # > 4 standard deviations for every window
    assert counts[20] > 0.35 and counts[:15].sum() < 1e-3  # central windows dominate, tails almost never


def test_hand_computed_spans_for_each_candidate():
    # 310 frames (17 windows); [24.4 s, 29.0 s] = frames [122, 145] -> windows 6, 7, 8.
    expected = {6: (100, 140, 0.775, 0.45), 7: (120, 160, 0.3375, 0.575), 8: (140, 180, 0.0625, 0.125)}
    seen = {}
    for seed in range(200):
        window = _draw(310, (24.4, 29.0), seed)
        seen[window.window_index] = window
    assert set(seen) == {6, 7, 8}
    for index, (start, end, centre, width) in expected.items():
        window = seen[index]
        assert (window.window_start, window.window_end) == (start, end)
        assert window.span == pytest.approx((centre, width))
        assert window.candidate_windows == (6, 7, 8)


@pytest.mark.parametrize(
    ("num_frames", "timestamps", "expected"),
    [
        # Window 0 is a half window [0, 20); window 1 is [0, 40).
        (310, (0.0, 2.0), {0: (0, 20, 0.25, 0.5), 1: (0, 40, 0.125, 0.25)}),
        # A moment ending at T: the last window [300, 310) is covered entirely.
        (310, (60.0, 62.0), {15: (280, 310, 25 / 30, 10 / 30), 16: (300, 310, 0.5, 1.0)}),
        # Ends past the features (frames 305..315 clamped to 310).
        (310, (61.0, 63.0), {15: (280, 310, 27.5 / 30, 5 / 30), 16: (300, 310, 0.75, 0.5)}),
        # A video shorter than one window: windows 0 and 1 are both [0, 15).
        (15, (1.0, 2.0), {0: (0, 15, 0.5, 1 / 3), 1: (0, 15, 0.5, 1 / 3)}),
        # Zero length and shorter than one feature.
        (310, (2.0, 2.0), {0: (0, 20, 0.5, 0.0), 1: (0, 40, 0.25, 0.0)}),
        (310, (2.01, 2.05), {0: (0, 20, 0.5075, 0.01), 1: (0, 40, 0.25375, 0.005)}),
    ],
)
def test_edge_spans(num_frames, timestamps, expected):
    seen = {}
    for seed in range(100):
        window = _draw(num_frames, timestamps, seed)
        seen.setdefault(window.window_index, window)
    assert set(seen) == set(expected)
    for index, (start, end, centre, width) in expected.items():
        window = seen[index]
        assert (window.window_start, window.window_end) == (start, end)
        assert window.span == pytest.approx((centre, width), abs=1e-9)
        valid = end - start
        positive = int(window.saliency_positive_frames[0])
        assert 0 <= positive < valid
        assert window.saliency_fallback == (width == 1.0)


def test_random_moments_follow_the_rule():
    rng = np.random.default_rng(5)
    for trial in range(400):
        num_frames = int(rng.integers(5, 700))
        start = float(rng.uniform(-1.0, num_frames * SPF + 1.0))
        end = start + float(rng.choice([0.0, 0.05, rng.uniform(0, 40)]))
        timestamps = (end, start) if trial % 7 == 0 else (start, end)  # some reversed
        if start / SPF >= num_frames:  # no window holds any of the moment: refused, not a zero-width target
            with pytest.raises(ValueError, match="after the end of the video features"):
                _draw(num_frames, timestamps, trial, saliency_pairs=3)
            continue
        window = _draw(num_frames, timestamps, trial, saliency_pairs=3)
        s = min(max(min(timestamps) / SPF, 0.0), num_frames)
        e = min(max(max(timestamps) / SPF, 0.0), num_frames)
        first = math.floor(s / STRIDE)
        last = min(math.ceil(e / STRIDE), count_windows(num_frames, STRIDE) - 1)
        assert window.candidate_windows == tuple(range(first, last + 1))
        start_frame, end_frame, centre, width, a, b = _reference_target(window.window_index, s, e, num_frames)
        assert (window.window_start, window.window_end) == (start_frame, end_frame)
        assert window.span == pytest.approx((centre, width), abs=1e-12)
        assert 0 <= a <= b <= end_frame - start_frame
        positives, negatives = window.saliency_positive_frames, window.saliency_negative_frames
        assert positives.shape == negatives.shape == (3,) and positives.dtype == np.int64
        low, high = min(math.floor(a), end_frame - start_frame - 1), max(math.ceil(b), math.floor(a) + 1)
        assert ((positives >= low) & (positives < high)).all()
        if not window.saliency_fallback:
            assert (((negatives < low) | (negatives >= high)) & (negatives >= 0)).all()
            assert (negatives < end_frame - start_frame).all()


def test_saliency_frames_are_uniform():
    positives, negatives = [], []
    for seed in range(3000):
        window = _draw(310, (24.4, 29.0), seed)
        if window.window_index == 7:  # window [120, 160)
            positives.append(int(window.saliency_positive_frames[0]))
            negatives.append(int(window.saliency_negative_frames[0]))
    # In floating point 24.4 / 0.2 = 121.99999999999999 (as in the official code), so the span starts at frame
    # 1.99999... of the window and the positive range is range(floor(1.999), ceil(25.0)) = 1 ... 24.
    assert 24.4 / 0.2 < 122
    assert set(positives) == set(range(1, 25))
    assert set(negatives) == {0} | set(range(25, 40))
    counts = np.bincount(positives, minlength=25)[1:]
    assert counts.min() > 0.5 * counts.mean()


def test_negative_window_is_uniform_among_the_others():
    draws = []
    for seed in range(7000):
        window = _draw(310, (24.4, 29.0), seed, negative_window=True)
        without = _draw(310, (24.4, 29.0), seed)
        assert window.window_index == without.window_index  # drawn last: the positive draws do not change
        assert window.span == without.span
        assert (window.negative_window_start, window.negative_window_end) == window_span(
            window.negative_window_index, 310, L, STRIDE
        )
        draws.append(window.negative_window_index)
    others = [index for index in range(17) if index not in (6, 7, 8)]
    assert set(draws) == set(others)
    frequencies = np.array([draws.count(index) for index in others]) / len(draws)
    np.testing.assert_allclose(frequencies, 1 / len(others), atol=0.02)
    with pytest.raises(ValueError, match="no negative window"):
        _draw(15, (1.0, 2.0), 0, negative_window=True)


def test_private_grid_matches_rgnet_hf_windowing():
    windowing = pytest.importorskip("rgnet_hf.windowing")
    for num_frames in (1, 15, 19, 20, 21, 310, 900, 36_000):
        for window_length in (40, 90, 900):
            stride = window_length // 2
            bounds = windowing.window_bounds(num_frames, window_length).tolist()
            assert bounds == [
                list(window_span(i, num_frames, window_length, stride))
                for i in range(count_windows(num_frames, stride))
            ]
    for start, end in ((24.4, 29.0), (0.0, 2.0), (60.0, 62.0), (2.0, 2.0)):
        windows = windowing.ground_truth_windows(start, end, SPF, STRIDE, 17, num_frames=310)
        assert windows == list(moment_windows(start / SPF, end / SPF, STRIDE, 17))


# ----------------------------------------------------------------------------------------------------------------------
# The torch dataset, the collator and the evaluation items on a small MAD-like release

MOVIES = {"m_long": (1000, 200.2), "m_mid": (310, 62.0), "m_short": (15, 3.0)}
DIM, TEXT_DIM = 12, 10


@pytest.fixture
def mad_like(tmp_path):
    rng = np.random.default_rng(9)
    records, tokens, sentences = {}, {}, {}
    for index in range(24):
        movie = list(MOVIES)[index % 3]
        rows, duration = MOVIES[movie]
        start = round(float(rng.uniform(0, duration - 1.5)), 2)
        records[str(index)] = {
            "movie": movie,
            "sentence": f"query {index}",
            "timestamps": [start, round(start + float(rng.uniform(0.1, 1.5)), 2)],
            "movie_duration": duration,
        }
        tokens[str(index)] = (rng.standard_normal((3 + index, TEXT_DIM)) * 4).astype(np.float32)
        sentences[str(index)] = (rng.standard_normal(TEXT_DIM) * 3).astype(np.float32)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "MAD_train.json").write_text(json.dumps(records))
    test_records = {f"t{k}": v for k, v in list(records.items())[:4]}
    (tmp_path / "annotations" / "MAD_test.json").write_text(json.dumps(test_records))
    tokens.update({f"t{k}": tokens[k] for k in list(records)[:4]})
    sentences.update({f"t{k}": sentences[k] for k in list(records)[:4]})
    frames = {movie: (rng.standard_normal((rows, DIM)) * 3).astype(np.float32) for movie, (rows, _) in MOVIES.items()}
    dataset = load_mad(
        tmp_path / "annotations",
        write_h5(tmp_path / "frames.h5", frames),
        write_h5(tmp_path / "tokens.h5", tokens),
        sentence_features=write_h5(tmp_path / "sentences.h5", sentences),
    )
    return dataset, frames, tokens, sentences


def _config(**overrides):
    values = dict(video_feature_size=DIM, text_feature_size=TEXT_DIM, window_length=L, max_text_length=7)
    values.update(overrides)
    return RGNetConfig(**values)


def test_items_and_collated_batch(mad_like):
    dataset, frames, tokens, _ = mad_like
    train = RGNetTrainingDataset.from_config(dataset["train"], _config(), seed=11)
    assert len(train) == 24 and not train.negative_windows
    items = [train[index] for index in range(5)]
    for item in items:
        meta = item["metadata"]
        start, end = meta["window_start"], meta["window_end"]
        raw = frames[meta["clip_id"]][start:end]
        torch.testing.assert_close(item["video_features"], torch.from_numpy(raw))  # raw: never normalised
        expected_tokens = tokens[meta["query_id"]][:7]
        expected_tokens = expected_tokens / (np.linalg.norm(expected_tokens, axis=-1, keepdims=True) + 1e-5)
        torch.testing.assert_close(item["text_features"], torch.from_numpy(expected_tokens.astype(np.float32)))
        assert "negative_video_features" not in item

    batch = RGNetTrainingCollator()(items)
    assert set(batch) == {"video_features", "video_mask", "text_features", "text_mask", "labels"}
    lengths = [item["video_features"].shape[0] for item in items]
    assert batch["video_features"].shape == (5, max(lengths), DIM)
    assert batch["video_features"].dtype == batch["video_mask"].dtype == torch.float32
    assert batch["video_mask"].sum(1).tolist() == lengths
    assert batch["text_features"].shape == (5, 7, TEXT_DIM)  # cut to max_text_length, padded to the longest
    assert batch["text_mask"].sum(1).tolist() == [3, 4, 5, 6, 7]
    for row, item in enumerate(items):
        n = lengths[row]
        torch.testing.assert_close(batch["video_features"][row, :n], item["video_features"])
        assert batch["video_features"][row, n:].abs().sum() == 0 and batch["video_mask"][row, n:].sum() == 0
        label = batch["labels"][row]
        assert set(label) == {"spans", "saliency_positive_frames", "saliency_negative_frames"}
        assert label["spans"].shape == (1, 2) and label["spans"].dtype == torch.float32
        assert label["saliency_positive_frames"].shape == (1,) and label["saliency_positive_frames"].dtype == torch.long
        assert label["saliency_negative_frames"].shape == (1,)
        assert 0 <= label["saliency_positive_frames"].item() < n
    assert "metadata" in RGNetTrainingCollator(return_metadata=True)(items)
    assert RGNetTrainingCollator(max_text_length=4)(items)["text_mask"].sum(1).tolist() == [3, 4, 4, 4, 4]
    with pytest.raises(ValueError, match="negative_windows=True"):
        RGNetTrainingCollator(negative_windows=True)(items)


def test_negative_windows_in_batch(mad_like):
    dataset, frames, _, _ = mad_like
    queries = dataset["train"].filter(lambda row: row["clip_id"] != "m_short")  # a 15-frame movie has no negative
    train = RGNetTrainingDataset.from_config(queries, _config(use_negative_window_loss=True), seed=2)
    assert train.negative_windows
    items = [train[index] for index in range(6)]
    batch = RGNetTrainingCollator(negative_windows=True)(items)
    assert set(batch) == {
        "video_features",
        "video_mask",
        "text_features",
        "text_mask",
        "labels",
        "negative_video_features",
        "negative_video_mask",
    }
    negative_lengths = [item["negative_video_features"].shape[0] for item in items]
    assert batch["negative_video_features"].shape == (6, max(negative_lengths), DIM)
    assert batch["negative_video_mask"].sum(1).tolist() == negative_lengths
    for item in items:
        meta = item["metadata"]
        assert meta["negative_window_index"] not in _draw_candidates(meta, frames)
        raw = frames[meta["clip_id"]][meta["negative_window_start"] : meta["negative_window_end"]]
        torch.testing.assert_close(item["negative_video_features"], torch.from_numpy(raw))
    short = RGNetTrainingDataset.from_config(dataset["train"], _config(use_negative_window_loss=True))
    index = dataset["train"].with_format(None)["clip_id"].index("m_short")
    with pytest.raises(ValueError, match="query '2' \\(clip 'm_short'\\): no negative window"):
        short[index]


def _draw_candidates(meta, frames):
    start, end = meta["timestamps"]
    num_frames = frames[meta["clip_id"]].shape[0]
    return list(moment_windows(start / SPF, min(end / SPF, num_frames), STRIDE, count_windows(num_frames, STRIDE)))


def test_samples_depend_only_on_seed_epoch_index(mad_like):
    dataset, _, _, _ = mad_like
    train = RGNetTrainingDataset.from_config(dataset["train"], _config(), seed=4)
    first = [train.plan(index) for index in range(24)]
    assert [train.plan(index) for index in range(24)] == first
    train.set_epoch(1)
    second = [train.plan(index) for index in range(24)]
    assert second != first
    train.set_epoch(0)

    def batches(num_workers):
        loader = torch.utils.data.DataLoader(
            train,
            batch_size=4,
            num_workers=num_workers,
            collate_fn=RGNetTrainingCollator(return_metadata=True),
        )
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 6
    for one, two in zip(serial, parallel, strict=True):
        torch.testing.assert_close(one["video_features"], two["video_features"], rtol=0, atol=0)
        torch.testing.assert_close(one["text_features"], two["text_features"], rtol=0, atol=0)
        for label_one, label_two in zip(one["labels"], two["labels"], strict=True):
            for key in label_one:
                torch.testing.assert_close(label_one[key], label_two[key], rtol=0, atol=0)
        assert one["metadata"] == two["metadata"]

    # Two "distributed" ranks see disjoint indices and get the single-process samples for them.
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(train, num_replicas=2, rank=rank, shuffle=True, seed=0)
        for index in sampler:
            assert train.plan(index) == first[index]


def test_from_config_checks(mad_like):
    dataset, _, _, _ = mad_like
    with pytest.raises(ValueError, match="0.535 s per feature|0.2 s per feature"):
        RGNetTrainingDataset.from_config(dataset["train"], _config(seconds_per_feature=0.535))
    with pytest.raises(ValueError, match="video features have size 12 but config expects 512"):
        RGNetTrainingDataset.from_config(dataset["train"], _config(video_feature_size=512))
    with pytest.raises(ValueError, match="no timestamps"):
        RGNetTrainingDataset(dataset["test"].map(lambda row: {"timestamps": None}), window_length=L)
    with pytest.raises(ValueError, match="no features attached"):
        RGNetTrainingDataset(dataset["train"].with_format(None), window_length=L)


def test_evaluation_items(mad_like):
    dataset, frames, tokens, sentences = mad_like
    videos = EvaluationVideoDataset(dataset["train"], max_text_length=5)
    assert len(videos) == 3 and videos.video_ids == ["m_long", "m_mid", "m_short"]
    item = videos[1]
    assert set(item) == {
        "video_id",
        "video_features",
        "duration",
        "query_ids",
        "queries",
        "text_features",
        "sentence_features",
        "timestamps",
        "query_metadata",
    }
    assert item["video_id"] == "m_mid" and item["duration"] == 62.0
    np.testing.assert_array_equal(item["video_features"], frames["m_mid"])
    assert item["video_features"].dtype == np.float32
    assert item["query_ids"] == [str(i) for i in range(1, 24, 3)]
    assert item["queries"][0] == "query 1"
    assert len(item["text_features"]) == 8 and item["text_features"][0].shape == (4, TEXT_DIM)
    assert item["text_features"][5].shape == (5, TEXT_DIM)  # cut to max_text_length
    np.testing.assert_allclose(np.linalg.norm(item["text_features"][5], axis=-1), 1.0, atol=1e-4)
    assert item["sentence_features"].shape == (8, TEXT_DIM)
    expected = sentences["1"] / (np.linalg.norm(sentences["1"]) + 1e-5)
    np.testing.assert_allclose(item["sentence_features"][0], expected, rtol=1e-6)
    rows = dataset["train"].with_format(None)
    assert item["timestamps"].shape == (8, 2)
    np.testing.assert_array_equal(item["timestamps"][0], rows[1]["timestamps"])
    assert item["query_metadata"][0]["video_id"] == "m_mid"

    no_answers = dataset["test"].map(lambda row: {"timestamps": None})
    test_items = list(iter_evaluation_videos(no_answers))
    assert [v["video_id"] for v in test_items] == ["m_long", "m_mid", "m_short"]
    assert all(v["timestamps"] is None for v in test_items)
    loader = torch.utils.data.DataLoader(videos, batch_size=None, num_workers=2, collate_fn=lambda video: video)
    assert [video["video_id"] for video in loader] == videos.video_ids
