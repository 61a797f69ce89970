"""The synthetic long-video benchmark: official MAD layout, read unchanged by the loaders, deterministic, and built so
that the moment's signal is a learned function of the text (not a copy) with partly matching distractors."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from rgnet_hf.data import EvaluationVideoDataset, RGNetTrainingCollator, RGNetTrainingDataset, load_mad
from rgnet_hf.synthetic.benchmark import (
    SYNTHETIC_PRESETS,
    SyntheticMADConfig,
    SyntheticWorld,
    load_synthetic_mad,
    make_synthetic_mad,
    read_synthetic_config,
    synthetic_mad_paths,
    write_signal_features,
)

SCRIPTS = Path(__file__).resolve().parents[2] / "dataset_scripts"
TINY = dict(num_videos=3, splits={"train": 1, "val": 1, "test": 1}, video_minutes=(1.0, 1.5), queries_per_video=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    paths = make_synthetic_mad(root, "demo", **TINY)
    return root, paths


def test_writes_the_official_mad_layout(tiny):
    root, paths = tiny
    config = SyntheticMADConfig.from_preset("demo", **TINY)
    for split in ("train", "val", "test"):
        records = json.loads((root / "annotations" / f"MAD_{split}.json").read_text())
        assert isinstance(records, dict) and len(records) == 8
        for query_id, record in records.items():
            assert query_id.isdigit()
            assert {"movie", "movie_duration", "sentence", "timestamps", "ext_timestamps"} <= set(record)
            start, end = record["timestamps"]
            assert 0 <= start < end <= record["movie_duration"]
            assert 1.0 - 0.011 <= end - start <= 30.0
            ext_start, ext_end = record["ext_timestamps"]
            assert ext_start == start and end <= ext_end <= record["movie_duration"]
            assert ext_end - ext_start >= min(2.0, record["movie_duration"] - start) - 0.011  # rounded to 0.01 s
    with h5py.File(paths["video_features"]) as file:
        assert len(file) == 3
        for movie in file:
            features = file[movie][()]
            assert features.ndim == 2 and features.shape[1] == config.video_feature_size
            assert 60 * 5 <= features.shape[0] <= 90 * 5
            norms = np.linalg.norm(features, axis=1)
            assert 2.5 < np.median(norms) < 8.0  # un-normalised, CLIP-like
    with h5py.File(paths["text_features"]) as tokens, h5py.File(paths["sentence_features"]) as sentences:
        assert len(tokens) == len(sentences) == 24
        for key in tokens:
            assert tokens[key].shape[1] == config.text_feature_size
            assert config.num_tokens[0] <= tokens[key].shape[0] <= config.num_tokens[1]
            np.testing.assert_allclose(np.linalg.norm(tokens[key][()], axis=1), 1.0, atol=1e-5)
            assert sentences[key].shape == (config.video_feature_size,)
    for split, path in paths["sentence_features_by_split"].items():
        with h5py.File(path) as file:
            assert len(file) == 8, split
    assert read_synthetic_config(root) == config


def test_load_mad_reads_it_unchanged_and_training_and_evaluation_items_work(tiny):
    root, paths = tiny
    dataset = load_mad(
        paths["annotations_dir"],
        paths["video_features"],
        paths["text_features"],
        sentence_features=paths["sentence_features"],
    )
    assert set(dataset) == {"train", "validation", "test"}
    assert all(len(dataset[split]) == 8 for split in dataset)
    assert not any(report.dropped or report.fixed for report in dataset.report.splits.values())
    row = dataset["test"][0]
    assert row["sentence_features"].shape == (64,) and row["text_features"].shape[1] == 64

    training = RGNetTrainingDataset(dataset["train"], window_length=64, max_text_length=16)
    batch = RGNetTrainingCollator()([training[i] for i in range(4)])
    assert batch["video_features"].shape[0] == 4 and batch["video_features"].shape[2] == 64
    assert batch["text_features"].shape[2] == 64 and len(batch["labels"]) == 4
    assert all(torch.isfinite(label["spans"]).all() for label in batch["labels"])

    video = EvaluationVideoDataset(dataset["validation"])[0]
    assert video["sentence_features"].shape == (8, 64)
    assert video["timestamps"].shape == (8, 2)
    assert video["video_features"].shape[1] == 64

    same = load_synthetic_mad(root)
    assert same["train"]["query_id"] == dataset["train"]["query_id"]


def test_deterministic_given_the_seed(tmp_path):
    first = make_synthetic_mad(tmp_path / "a", "demo", **TINY)
    second = make_synthetic_mad(tmp_path / "b", "demo", **TINY)
    other = make_synthetic_mad(tmp_path / "c", "demo", **TINY, seed=1)
    for name in ("video_features", "text_features", "sentence_features"):
        with h5py.File(first[name]) as a, h5py.File(second[name]) as b, h5py.File(other[name]) as c:
            assert sorted(a) == sorted(b)
            for key in a:
                np.testing.assert_array_equal(a[key][()], b[key][()])
            key = sorted(a)[0]
            assert key not in c or a[key].shape != c[key].shape or not np.array_equal(a[key][()], c[key][()])
    for split in ("train", "val", "test"):
        assert (first["annotations_dir"] / f"MAD_{split}.json").read_text() == (
            second["annotations_dir"] / f"MAD_{split}.json"
        ).read_text()


def _moment_and_context(features, start, end, seconds_per_feature, context_frames=3):
    first, last = math.floor(start / seconds_per_feature), math.ceil(end / seconds_per_feature)
    before = features[max(first - context_frames, 0) : first]
    after = features[last : last + context_frames]
    return features[first:last], np.concatenate([before, after])


def test_moments_carry_g_of_the_text_and_the_sentence_does_not_reveal_it(tmp_path):
    config = SyntheticMADConfig.from_preset(
        "demo", **TINY, noise=0.0, distractors_per_query=0, sentence_alignment=0.1, scene_seconds=1000.0
    )
    paths = make_synthetic_mad(tmp_path, config)
    world = SyntheticWorld(config)
    vocabulary = world.vocabulary
    records = json.loads((paths["annotations_dir"] / "MAD_train.json").read_text())
    alignments, sentence_alignments = [], []
    with (
        h5py.File(paths["video_features"]) as videos,
        h5py.File(paths["text_features"]) as tokens,
        h5py.File(paths["sentence_features"]) as sentences,
    ):
        for query_id, record in records.items():
            token_features = tokens[query_id][()]
            token_ids = np.array([int(np.argmax(vocabulary @ t)) for t in token_features])
            np.testing.assert_allclose(vocabulary[token_ids], token_features)
            signal = world.signal_direction(world.pooled_text(token_ids))
            inside, outside = _moment_and_context(videos[record["movie"]][()], *record["timestamps"], 0.2)
            difference = inside.mean(0) - outside.mean(0)
            alignments.append(difference @ signal / np.linalg.norm(difference))
            sentence = sentences[query_id][()]
            sentence_alignments.append(sentence @ signal / np.linalg.norm(sentence))
    # One long scene and no noise: the moment differs from its context by (mostly) g(text).
    assert np.median(alignments) > 0.9
    np.testing.assert_allclose(sentence_alignments, 0.1, atol=1e-5)
    # g is not a copy: the signal direction lives in video space and is not the pooled text or the sentence.
    pooled = world.pooled_text(token_ids)
    assert pooled.shape == (config.text_feature_size,)
    signals = world.signal_direction(world.pooled_text([np.array([i]) for i in range(20)]))
    assert np.abs(signals @ signals.T - np.eye(20)).max() < 0.9  # different texts, different signals


def test_distractors_partly_match_the_query():
    config = SyntheticMADConfig.from_preset("demo", distractor_similarity=0.5)
    world = SyntheticWorld(config)
    rng = np.random.default_rng(0)
    similarities, unrelated = [], []
    for _ in range(50):
        tokens = rng.choice(config.vocab_size, size=8, replace=False)
        partial = np.where(rng.random(8) < 0.5, tokens, rng.choice(config.vocab_size, size=8))
        other = rng.choice(config.vocab_size, size=8, replace=False)
        signal = world.signal_direction(world.pooled_text(tokens))
        similarities.append(signal @ world.signal_direction(world.pooled_text(partial)))
        unrelated.append(signal @ world.signal_direction(world.pooled_text(other)))
    assert np.mean(similarities) > np.mean(unrelated) + 0.2


def test_moment_lengths_follow_mad():
    config = SyntheticMADConfig.from_preset("demo")
    rng = np.random.default_rng(0)
    from rgnet_hf.synthetic.benchmark import _moment_length

    lengths = np.array([_moment_length(rng, config) for _ in range(5000)])
    assert 3.6 < lengths.mean() < 4.6  # MAD: about 4.1 s on average
    assert lengths.min() >= 1.0 and lengths.max() <= 30.0
    assert np.percentile(lengths, 95) > 2 * np.median(lengths)  # long tail


def test_presets_and_config_validation():
    assert set(SYNTHETIC_PRESETS) >= {"demo", "standard"}
    standard = SyntheticMADConfig.from_preset("standard")
    assert standard.video_feature_size == 512 and _range_minutes(standard)[0] >= 20
    assert sum(standard.split_counts().values()) == standard.num_videos
    demo = SyntheticMADConfig.from_preset("demo")
    assert demo.split_counts() == {"train": 24, "val": 6, "test": 6}
    assert demo.replace(num_videos=6).split_counts() == {"train": 4, "val": 1, "test": 1}
    assert SyntheticMADConfig(num_videos=7, splits={"train": 0.8, "test": 0.2}).split_counts() == {
        "train": 6,
        "val": 0,
        "test": 1,
    }
    assert SyntheticMADConfig.from_dict(demo.to_dict()) == demo
    bad = [
        dict(num_videos=0),
        dict(splits={"train": 5}),  # counts do not sum to num_videos
        dict(splits={"training": 60}),
        dict(video_minutes=(5.0, 1.0)),
        dict(num_tokens=(0, 3)),
        dict(signal_amplitude=0.0),
        dict(distractor_similarity=1.5),
        dict(sentence_alignment=-0.1),
        dict(video_vocab_size=2000),
        dict(dtype="int8"),
        dict(moment_range_s=(1.0, 4000.0)),
    ]
    for overrides in bad:
        with pytest.raises(ValueError):
            SyntheticMADConfig(**overrides)
    with pytest.raises(TypeError, match="unknown synthetic benchmark parameter"):
        SyntheticMADConfig.from_preset("demo", amplitude=2.0)
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        SyntheticMADConfig.from_preset("huge")


def _range_minutes(config):
    minutes = config.video_minutes
    return minutes if isinstance(minutes, tuple) else (minutes, minutes)


def test_paths_and_missing_benchmark(tmp_path):
    paths = synthetic_mad_paths(tmp_path)
    assert paths["video_features"].name == "CLIP_B32_frames_features_5fps.h5"
    assert paths["sentence_features_by_split"]["test"].name == "CLIP_B32_language_features_MAD_test.h5"
    with pytest.raises(FileNotFoundError, match="make_synthetic_mad"):
        load_synthetic_mad(tmp_path)


def test_script_writes_and_summarises(tmp_path, capsys):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(
            "dataset_script_make_synthetic_benchmark", SCRIPTS / "make_synthetic_benchmark.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    arguments = [
        "--preset",
        "demo",
        "--output",
        str(tmp_path),
        "--num-videos",
        "3",
        "--video-minutes",
        "1",
        "--queries-per-video",
        "5",
        "--zero-shot",
        "test",
    ]
    summary = module.main(arguments)
    printed = capsys.readouterr().out
    assert "queries" in printed and "validation" in printed and "zero-shot" in printed
    assert summary["train"]["queries"] == 5 and summary["test"]["videos"] == 1
    assert json.loads((tmp_path / "summary.json").read_text())["train"]["queries"] == 5


def test_rewriting_a_folder_leaves_no_stale_files(tmp_path):
    make_synthetic_mad(tmp_path, "demo", **TINY)
    signal_path = write_signal_features(tmp_path)
    with h5py.File(signal_path) as file:
        assert len(file) == 24 and file["0"].shape == (64,)
        np.testing.assert_allclose(np.linalg.norm(file["0"][()]), 1.0, rtol=1e-5)
    paths = make_synthetic_mad(tmp_path, "demo", **{**TINY, "splits": {"train": 2, "val": 0, "test": 1}})
    assert not (paths["annotations_dir"] / "MAD_val.json").exists()
    assert not paths["sentence_features_by_split"]["val"].exists()
    assert not signal_path.exists()  # it described the earlier benchmark
    dataset = load_synthetic_mad(tmp_path)
    assert set(dataset) == {"train", "test"} and len(dataset["train"]) == 16
