"""The demo's corpus of video files and the calibrated tiny CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rgnet_hf.synthetic.tiny_encoders import build_tiny_clip
from rgnet_hf.synthetic.video_corpus import COLOURS, VideoCorpusConfig, corpus_sentences, write_video_corpus
from rgnet_hf.video_decoding import decode_frames, probe_video, sample_frames
from rgnet_hf.video_text_encoders import load_feature_encoder

SMALL = VideoCorpusConfig(num_videos=3, video_seconds=(30.0, 36.0), events_per_video=(2, 3), event_seconds=(3.0, 6.0))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_video_corpus(folder, SMALL)


def test_corpus_files_and_annotations_agree(corpus):
    folder, summary = corpus
    rows = [json.loads(line) for line in (folder / "annotations.jsonl").read_text().splitlines()]
    assert summary["num_videos"] == 3 and summary["num_queries"] == len(rows)
    assert {path.suffix for path in (folder / "videos").iterdir()} == {".mp4", ".mkv"}
    assert len({row["query_id"] for row in rows}) == len(rows)
    for video in {row["video"] for row in rows}:
        info = probe_video(folder / "videos" / video)
        events = [row for row in rows if row["video"] == video]
        assert 2 <= len(events) <= 3
        colours = [row["sentence"] for row in events]
        assert len({next(c for c in COLOURS if c in sentence) for sentence in colours}) == len(events)
        for row in events:
            assert 0 <= row["start"] < row["end"] <= row["duration"]
            assert info.duration is None or row["duration"] == pytest.approx(info.duration, abs=0.51)
            assert row["sentence"] in corpus_sentences()
        spans = sorted((row["start"], row["end"]) for row in events)
        assert all(left[1] <= right[0] for left, right in zip(spans, spans[1:]))


def test_shapes_are_on_screen_exactly_during_their_moments(corpus):
    folder, _ = corpus
    row = json.loads((folder / "annotations.jsonl").read_text().splitlines()[0])
    frames = dict(sample_frames(decode_frames(folder / "videos" / row["video"]), 0.5))
    colour = np.array(COLOURS[next(c for c in COLOURS if c in row["sentence"])], dtype=np.float32)

    def coloured_pixels(index: int) -> int:
        return int((np.abs(frames[index].astype(np.float32) - colour).max(-1) < 40).sum())

    inside = int((row["start"] + row["end"]) / 2 / 0.5)
    outside = int(max(row["start"] - 1.5, 0) / 0.5) if row["start"] >= 1.5 else int((row["end"] + 1.5) / 0.5)
    assert coloured_pixels(inside) > 200 and coloured_pixels(outside) < 20


def test_corpus_config_is_checked():
    with pytest.raises(ValueError, match="events_per_video"):
        VideoCorpusConfig(events_per_video=(1, len(COLOURS) + 1))
    with pytest.raises(ValueError, match="cannot hold"):
        VideoCorpusConfig(video_seconds=(20.0, 30.0), events_per_video=(4, 4), event_seconds=(4.0, 8.0))


def test_calibrated_clip_standardizes_the_frame_features(corpus, tmp_path):
    folder, _ = corpus
    images = []
    for video in sorted((folder / "videos").iterdir()):
        images.extend(image for _, image in sample_frames(decode_frames(video), 1.0))
    plain = load_feature_encoder(build_tiny_clip(tmp_path / "plain", corpus_sentences()))
    calibrated = load_feature_encoder(
        build_tiny_clip(tmp_path / "calibrated", corpus_sentences(), calibration_images=images)
    )
    before, after = plain.encode_images(images).numpy(), calibrated.encode_images(images).numpy()
    np.testing.assert_allclose(after.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(after.std(0, ddof=1), 1.0, atol=1e-3)

    def mean_cosine(features: np.ndarray) -> float:
        unit = features / np.linalg.norm(features, axis=1, keepdims=True)
        return float((unit @ unit.T).mean())

    assert mean_cosine(before) > 0.9 and mean_cosine(after) < 0.3
    # The text side is untouched: the same sentence features as the uncalibrated encoder.
    sentence = corpus_sentences()[0]
    np.testing.assert_allclose(
        plain.encode_queries(sentence)[0].sentence_features, calibrated.encode_queries(sentence)[0].sentence_features
    )
    with pytest.raises(ValueError, match="at least 2 images"):
        build_tiny_clip(tmp_path / "one", corpus_sentences(), calibration_images=images[:1])


def test_calibrated_clip_standardizes_the_token_features(tmp_path):
    sentences = corpus_sentences()
    training, held_out = sentences[::2], sentences[1::2]
    plain = load_feature_encoder(build_tiny_clip(tmp_path / "plain", sentences))
    calibrated = load_feature_encoder(
        build_tiny_clip(tmp_path / "calibrated", sentences, calibration_sentences=training)
    )

    def tokens(encoder, batch):
        return np.concatenate([query.token_features for query in encoder.encode_queries(batch)])

    after = tokens(calibrated, training)
    # The query tokens of the calibration sentences are standardized.
    np.testing.assert_allclose(after.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(after.std(0), 1.0, atol=1e-2)
    # Other sentences of the same vocabulary are spread apart too; the uncalibrated features are not standardized.
    before = tokens(plain, held_out)
    assert np.abs(before.std(0) - 1).mean() > 0.3 and np.abs(tokens(calibrated, held_out).std(0) - 1).mean() < 0.3
    # The image side is untouched.
    image = np.full((32, 32, 3), 128, dtype=np.uint8)
    np.testing.assert_allclose(plain.encode_images([image]).numpy(), calibrated.encode_images([image]).numpy())
    with pytest.raises(ValueError, match="at least 2 sentences"):
        build_tiny_clip(tmp_path / "one", sentences, calibration_sentences=training[:1])
