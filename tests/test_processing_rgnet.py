"""RGNetProcessor: the one entry point of raw inputs (a video file, query sentences) and of pre-extracted features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from raw_video_utils import build_tiny_clip, build_tiny_rgnet, make_test_video

from rgnet_hf import RGNetConfig, RGNetForVideoGrounding, RGNetGroundingEngine, RGNetProcessor
from rgnet_hf.feature_extraction_rgnet import l2_normalize
from rgnet_hf.video_text_encoders import FeatureEncoderError, load_feature_encoder


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("processing")
    clip = build_tiny_clip(root / "clip")
    rgnet = build_tiny_rgnet(root / "rgnet", clip)
    return {
        "clip": clip,
        "config": RGNetConfig.from_pretrained(rgnet),
        "video": make_test_video(root / "four_seconds.mp4"),
    }


def test_raw_inputs_are_encoded_normalised_and_padded(assets):
    processor = RGNetProcessor.from_model_config(assets["config"])
    queries = ["a man opens the door", "a red car"]
    raw = processor.encode_raw_inputs(video=assets["video"], text=queries, seconds_per_feature=0.5)
    encoder = load_feature_encoder(assets["clip"])
    expected_video = encoder.encode_video(assets["video"], 0.5, progress=False)
    expected_text = encoder.encode_queries(queries)
    np.testing.assert_allclose(raw.video_features, expected_video.features, rtol=1e-5, atol=1e-6)
    assert raw.duration == pytest.approx(expected_video.duration)
    assert raw.queries == queries and raw.truncated == [False, False]
    for tokens, query in zip(raw.text_features, expected_text):
        np.testing.assert_allclose(tokens, l2_normalize(query.token_features), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(tokens, axis=-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(raw.sentence_features, axis=-1), 1.0, atol=1e-4)

    batch = processor(video=assets["video"], text=queries, seconds_per_feature=0.5, return_tensors="pt")
    assert batch["text_features"].shape[0] == 2 and batch["sentence_features"].shape[0] == 2
    lengths = [len(tokens) for tokens in raw.text_features]
    assert batch["text_mask"].sum(1).tolist() == lengths
    np.testing.assert_allclose(batch["text_features"][1, : lengths[1]].numpy(), raw.text_features[1], atol=1e-6)
    np.testing.assert_allclose(batch["video_features"][0].numpy(), raw.video_features, atol=1e-6)


def test_the_last_video_is_reused_until_the_file_changes(assets, tmp_path, monkeypatch):
    processor = RGNetProcessor.from_model_config(assets["config"])
    encoder = processor.feature_encoder
    calls = []
    original = type(encoder).encode_video
    monkeypatch.setattr(
        type(encoder), "encode_video", lambda self, *a, **k: calls.append(a[0]) or original(self, *a, **k)
    )
    video = make_test_video(tmp_path / "clip.mp4")
    processor.encode_video(video)
    processor.encode_video(video)
    assert len(calls) == 1
    make_test_video(video, seconds_per_color=2.0)  # rewritten: another size and time stamp
    processor.encode_video(video)
    assert len(calls) == 2


def test_bad_raw_inputs_are_refused_with_the_reason(assets, tmp_path):
    processor = RGNetProcessor.from_model_config(assets["config"])
    with pytest.raises(FeatureEncoderError, match="empty query"):
        processor(text=["a door", "  ?. "])
    with pytest.raises(FeatureEncoderError, match="non-empty list of query strings"):
        processor(text=[])
    with pytest.raises(ValueError, match="either `text` or `text_features`"):
        processor(text="a door", text_features=np.zeros((3, 16), np.float32))
    with pytest.raises(ValueError, match="either `video` or `video_features`"):
        processor(video=assets["video"], video_features=np.zeros((3, 16), np.float32))
    with pytest.raises(FileNotFoundError, match="No such video file"):
        processor(video=tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="is a folder, not a video file"):
        processor(video=tmp_path)
    with pytest.raises(ValueError, match="seconds_per_feature"):
        processor(video=assets["video"], seconds_per_feature=0.0)


def test_a_processor_without_encoder_explains_what_to_do():
    bare = RGNetProcessor.from_model_config(RGNetConfig.from_preset("mad", feature_encoder=None))
    with pytest.raises(FeatureEncoderError, match="names no feature encoder"):
        bare(text="a man opens the door")
    loaded = RGNetProcessor(RGNetProcessor.from_model_config(RGNetConfig()).feature_extractor)
    with pytest.raises(ValueError, match="has no feature encoder for raw inputs"):
        loaded.encode_raw_inputs(text="a man opens the door")
    # features need no encoder
    assert loaded(text_features=np.ones((4, 512), np.float32))["text_mask"].shape == (1, 4)


def test_the_encoder_is_not_saved_with_the_processor(assets, tmp_path):
    processor = RGNetProcessor.from_model_config(assets["config"])
    processor.encode_raw_inputs(text="a door")  # loads the encoder
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert not {"feature_encoder", "_feature_encoder", "_video_cache", "_model_config"} & set(saved)
    assert not {"feature_encoder", "_feature_encoder"} & set(saved.get("feature_extractor", {}))
    reloaded = RGNetProcessor.from_pretrained(tmp_path)
    assert reloaded.feature_extractor.window_length == assets["config"].window_length
    assert processor.feature_encoder is not None  # still usable after saving


def test_engine_takes_unpadded_queries():
    torch.manual_seed(0)
    config = RGNetConfig.from_preset(
        "mad", video_feature_size=24, text_feature_size=16, sentence_feature_size=24, hidden_size=32,
        num_attention_heads=4, intermediate_size=64, window_length=40, top_k_windows=4,
    )  # fmt: skip
    engine = RGNetGroundingEngine(RGNetForVideoGrounding(config).eval())
    video = torch.randn(150, 24)
    queries = [torch.randn(3, 16), torch.randn(7, 16)]
    padded = torch.zeros(2, 7, 16)
    mask = torch.zeros(2, 7)
    for index, tokens in enumerate(queries):
        padded[index, : len(tokens)], mask[index, : len(tokens)] = tokens, 1
    sentence = torch.randn(2, 24)
    for a, b in zip(
        engine.ground(video, padded, mask, sentence), engine.ground(video, queries, sentence_features=sentence)
    ):
        np.testing.assert_array_equal(a.window_order, b.window_order)
        np.testing.assert_allclose(a.moments, b.moments, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="a list of queries is padded here"):
        engine.ground(video, queries, torch.ones(2, 7))
    with pytest.raises(ValueError, match="no query given"):
        engine.ground(video, [])
