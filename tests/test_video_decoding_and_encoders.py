"""Raw inputs: PyAV decoding and sampling, CLIP / SigLIP encoders, the feature cache, the pipeline and CLI on files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import torch
from conftest import accelerate_launch_command
from raw_video_utils import (
    CLIP_CONTEXT,
    PALETTE,
    build_tiny_clip,
    build_tiny_rgnet,
    build_tiny_siglip,
    make_audio_only,
    make_not_a_video,
    make_test_video,
)

from rgnet_hf import RGNetConfig
from rgnet_hf.apps.cli import main as cli_main
from rgnet_hf.data.feature_cache import extract_video_features, list_videos
from rgnet_hf.feature_extraction_rgnet import l2_normalize
from rgnet_hf.video_decoding import VideoDecodingError, iter_sampled_frames, probe_video, sample_frames
from rgnet_hf.video_text_encoders import (
    FeatureEncoderError,
    clean_query,
    feature_encoder_for_model,
    load_feature_encoder,
)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw_video")
    clip = build_tiny_clip(root / "clip")
    siglip = build_tiny_siglip(root / "siglip")
    return {
        "root": root,
        "clip": clip,
        "siglip": siglip,
        "rgnet": build_tiny_rgnet(root / "rgnet", clip),
        # 4 colours, one per second, 10 fps.
        "video": make_test_video(root / "four_seconds.mp4"),
        # 20 s: 10 colours, two seconds each, 5 fps.
        "long_video": make_test_video(root / "twenty_seconds.mp4", PALETTE, seconds_per_color=2.0, fps=5),
    }


@pytest.fixture(scope="module")
def encoders(assets):
    return {family: load_feature_encoder(assets[family]) for family in ("clip", "siglip")}


def _reference_frames(path) -> list[tuple[float, np.ndarray]]:
    """Every frame of a file with its presentation time, decoded by PyAV directly."""
    with av.open(str(path)) as container:
        return [(float(frame.time), frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def _frame_at(frames, time: float) -> np.ndarray:
    """The documented rule: the last frame whose time is <= `time`."""
    return [image for frame_time, image in frames if frame_time <= time + 1e-9][-1]


def _colour_index(image: np.ndarray) -> int:
    """Which palette colour the right two thirds of a test frame show."""
    colour = image[:, image.shape[1] // 2 :].reshape(-1, 3).mean(0)
    return int(np.argmin([np.abs(colour - np.array(c)).sum() for c in PALETTE]))


# decoding ------------------------------------------------------------------------------------------------------


def test_sampling_rule_on_a_constant_frame_rate(assets):
    report = {}
    sampled = list(iter_sampled_frames(assets["video"], 0.25, report=report))
    assert report["duration"] == pytest.approx(4.0)
    assert len(sampled) == report["num_features"] == 16 == math.ceil(4.0 / 0.25)
    assert [index for index, _ in sampled] == list(range(16))
    # Feature i stands for time i * 0.25; the colour changes every second.
    assert [_colour_index(image) for _, image in sampled] == [int(i * 0.25) for i in range(16)]
    reference = _reference_frames(assets["video"])
    for index, image in sampled:
        np.testing.assert_array_equal(image, _frame_at(reference, index * 0.25))


def test_sampling_rule_on_a_variable_frame_rate(tmp_path):
    times = [0.0, 0.1, 0.7, 0.8, 1.9, 2.0, 3.3, 3.6]
    path = make_test_video(tmp_path / "vfr.mp4", PALETTE[:4], frame_times=times)
    report = {}
    sampled = list(iter_sampled_frames(path, 0.5, report=report))
    # t = 0, 0.5, 1.0, 1.5 show the frames of 0.0, 0.1, 0.8, 0.8 (colour 0); 2.0-3.0 the one of 2.0; 3.5 of 3.3.
    assert [_colour_index(image) for _, image in sampled] == [0, 0, 0, 0, 2, 2, 2, 3]
    assert report["duration"] == pytest.approx(3.7)  # the last frame (3.6 s) lasts one frame period


@pytest.mark.parametrize("rotation", [90, -90])
def test_rotation_metadata_turns_frames_upright(tmp_path, rotation):
    path = make_test_video(tmp_path / "rotated.mp4", PALETTE[:1], size=(64, 48), rotation=rotation)
    assert probe_video(path).rotation == rotation
    _, image = next(iter_sampled_frames(path, 0.5))
    assert image.shape == (64, 48, 3)  # portrait after the turn
    # The black left third of the coded frame ends at the bottom (counter-clockwise turn) or the top.
    rows = image.mean(axis=(1, 2))
    dark, bright = (rows[-10:], rows[:10]) if rotation == 90 else (rows[:10], rows[-10:])
    assert dark.max() < 20 and bright.min() > 60


def test_bad_video_files_get_clear_errors(assets, tmp_path):
    with pytest.raises(VideoDecodingError, match="No such video file"):
        list(iter_sampled_frames(tmp_path / "missing.mp4", 0.5))
    with pytest.raises(VideoDecodingError, match="not a readable video"):
        list(iter_sampled_frames(make_not_a_video(tmp_path / "text.mp4"), 0.5))
    with pytest.raises(VideoDecodingError, match="no video stream"):
        list(iter_sampled_frames(make_audio_only(tmp_path / "audio.m4a"), 0.5))
    with av.open(str(tmp_path / "empty.avi"), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoDecodingError, match="no video frames"):
        list(iter_sampled_frames(tmp_path / "empty.avi", 0.5))
    with pytest.raises(VideoDecodingError, match="no video frames"):
        list(sample_frames(iter([]), 0.5))
    data = Path(assets["video"]).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodingError):
        list(iter_sampled_frames(tmp_path / "truncated.mp4", 0.5))
    with pytest.raises(ValueError, match="seconds_per_feature"):
        list(iter_sampled_frames(assets["video"], 0))


def test_a_video_with_audio_is_sampled_from_its_video_stream(tmp_path):
    path = make_test_video(tmp_path / "with_audio.mp4", PALETTE[:2], with_audio=True)
    assert [_colour_index(image) for _, image in iter_sampled_frames(path, 0.5)] == [0, 0, 1, 1]


# encoders ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_frame_features_equal_the_encoder_on_the_frames_at_the_documented_times(assets, encoders, family):
    encoder = encoders[family]
    encoded = encoder.encode_video(assets["video"], 0.5, progress=False)
    assert encoded.features.shape == (8, encoder.video_feature_size) and encoded.duration == pytest.approx(4.0)
    reference = _reference_frames(assets["video"])
    frames = [_frame_at(reference, i * 0.5) for i in range(8)]
    with torch.no_grad():
        pixels = encoder.image_processor(images=frames, return_tensors="pt")["pixel_values"]
        expected = encoder.model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(torch.from_numpy(encoded.features), expected, rtol=1e-5, atol=1e-5)


def test_clip_text_features_equal_the_hand_computation(encoders):
    encoder = encoders["clip"]
    queries = ["A man opens the door", "a dog runs across the park?"]
    encoded = encoder.encode_queries(queries)
    with torch.no_grad():
        for query, result in zip(queries, encoded):
            assert result.cleaned == clean_query(query)
            ids = encoder.tokenizer(result.cleaned, return_tensors="pt")["input_ids"]
            assert ids[0, 0] == encoder.tokenizer.bos_token_id and ids[0, -1] == encoder.tokenizer.eos_token_id
            hidden = encoder.model.text_model(input_ids=ids).last_hidden_state[0]
            # Token features: the final layer norm's output at the query's tokens, start and end dropped.
            torch.testing.assert_close(torch.from_numpy(result.token_features), hidden[1:-1], rtol=1e-5, atol=1e-5)
            # Sentence feature: the end-of-text state through the text projection.
            sentence = encoder.model.text_projection(hidden[-1])
            torch.testing.assert_close(torch.from_numpy(result.sentence_features), sentence, rtol=1e-5, atol=1e-5)


def test_siglip_text_features_equal_the_hand_computation(encoders):
    encoder = encoders["siglip"]
    query = "she picks up the phone"
    (result,) = encoder.encode_queries(query)
    ids = encoder.tokenizer(result.cleaned)["input_ids"]
    assert ids[-1] == encoder.tokenizer.eos_token_id
    padded = encoder.tokenizer(result.cleaned, padding="max_length", max_length=encoder.context_length)["input_ids"]
    with torch.no_grad():
        output = encoder.model.text_model(input_ids=torch.tensor([padded]))
    torch.testing.assert_close(
        torch.from_numpy(result.token_features), output.last_hidden_state[0, : len(ids) - 1], rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        torch.from_numpy(result.sentence_features), output.pooler_output[0], rtol=1e-5, atol=1e-5
    )


def test_query_clean_up_empty_and_long_queries(encoders):
    assert clean_query("What is he doing?") == "What is he doing."
    assert clean_query("a man opens the door.") == "a man opens the door."
    assert clean_query("  The Door  ", lowercase=True) == "the door."
    for empty in ["", "   ", "?.", "..."]:
        with pytest.raises(FeatureEncoderError, match="empty query"):
            encoders["clip"].encode_queries(empty)
    long_query = " ".join(["a man opens the door"] * 10)
    with pytest.warns(UserWarning, match="truncated"):
        (result,) = encoders["clip"].encode_queries(long_query)
    assert result.truncated and result.token_features.shape[0] == CLIP_CONTEXT - 2


def test_encoder_errors(assets, encoders, tmp_path):
    with pytest.raises(FeatureEncoderError, match="EgoVLP"):
        feature_encoder_for_model(RGNetConfig.from_preset("ego4d"))
    assert RGNetConfig.from_preset("mad").feature_encoder == "openai/clip-vit-base-patch32"
    assert RGNetConfig.from_preset("ego4d_pretrain").feature_encoder is None
    misfit = RGNetConfig.from_preset("mad", video_feature_size=16, feature_encoder=str(assets["clip"]))
    with pytest.raises(FeatureEncoderError, match=r"frame features: encoder 24, model 16"):
        feature_encoder_for_model(misfit)
    with pytest.raises(FeatureEncoderError, match="cannot load the feature encoder"):
        load_feature_encoder(tmp_path / "no_such_encoder")
    with pytest.raises(ValueError, match="feature_encoder"):
        RGNetConfig(feature_encoder=3)


# the feature cache -----------------------------------------------------------------------------------------------


def test_extract_writes_mads_layout_and_resumes(assets, encoders, tmp_path, monkeypatch):
    from rgnet_hf.data.feature_stores import FeatureSources

    folder = tmp_path / "videos"
    folder.mkdir()
    for name, colours in (("a", PALETTE[:2]), ("b", PALETTE[2:5]), ("c", PALETTE[5:6])):
        make_test_video(folder / f"{name}.mp4", colours, fps=5)
    make_audio_only(folder / "d.mp4")
    output = tmp_path / "cache" / "features.h5"
    encoder = encoders["clip"]
    calls = []
    original = type(encoder).encode_video

    def counting(self, path, *args, **kwargs):
        calls.append(Path(path).stem)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(type(encoder), "encode_video", counting)
    videos = list_videos(folder)
    # A run killed before the merge: one finished part and a half-written temporary file are left behind.
    first = extract_video_features(encoder, videos[:1], output, 0.5, progress=False, merge=False)
    assert first.written == ["a"] and not output.exists()
    (output.parent / "features.h5.parts" / ".b.h5.tmp-12345").write_bytes(b"half written")
    calls.clear()
    report = extract_video_features(encoder, videos, output, 0.5, progress=False)
    assert calls == ["b", "c", "d"] and report.skipped == ["a"] and report.written == ["b", "c"]
    assert "no video stream" in report.failed["d"]
    assert not (output.parent / "features.h5.parts").exists()
    with h5py.File(output, "r") as handle:
        assert sorted(handle) == ["a", "b", "c"]
        assert handle["b"].shape == (6, encoder.video_feature_size) and handle["b"].dtype == np.float32
        assert handle["b"].attrs["seconds_per_feature"] == 0.5 and handle["b"].attrs["source"] == "b.mp4"
        assert handle.attrs["encoder"] == encoder.name
    # The loaders read the entries as MAD's release, and they are the encoder's raw features.
    store = FeatureSources(video_path=str(output), seconds_per_feature=0.5).video_store()
    expected = original(encoder, folder / "b.mp4", 0.5, progress=False).features
    np.testing.assert_array_equal(store.read("b"), expected)
    # Everything done: a rerun encodes nothing; another rate is refused.
    calls.clear()
    again = extract_video_features(encoder, videos[:3], output, 0.5, progress=False)
    assert calls == [] and again.skipped == ["a", "b", "c"]
    with pytest.raises(ValueError, match="s per feature"):
        extract_video_features(encoder, videos[:3], output, 0.2, progress=False)


def test_extract_data_parallel_with_two_cpu_processes(assets, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for index in range(3):
        make_test_video(folder / f"movie{index}.mp4", PALETTE[index : index + 2], fps=5)
    output = tmp_path / "features.h5"
    command = accelerate_launch_command(
        2,
        "-m",
        "rgnet_hf.apps.cli",
        "extract",
        "--encoder",
        str(assets["clip"]),
        "--video",
        str(folder),
        "--output",
        str(output),
        "--seconds-per-feature",
        "0.5",
        "--no-progress",
    )
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[process 0]" in run.stdout and "[process 1]" in run.stdout
    encoded = sorted(int(line.split(": ")[1].split()[0]) for line in run.stdout.splitlines() if "[process" in line)
    assert encoded == [1, 2]  # the three videos split over the two processes
    encoder = load_feature_encoder(assets["clip"])
    with h5py.File(output, "r") as handle:
        assert sorted(handle) == ["movie0", "movie1", "movie2"]
        for key in handle:
            expected = encoder.encode_video(folder / f"{key}.mp4", 0.5, progress=False).features
            torch.testing.assert_close(torch.from_numpy(handle[key][()]), torch.from_numpy(expected))


def test_a_two_hour_video_extracts_with_bounded_memory_and_a_progress_bar(assets):
    # 2 hours of 96 x 96 frames at 1 frame per second, sampled every second: 7200 features. Holding every frame
    # would take 7200 * 27.6 kB = 199 MB; the extraction holds one batch at a time.
    script = textwrap.dedent(
        f"""
        import resource, sys
        import av, numpy as np
        from rgnet_hf.video_text_encoders import load_feature_encoder
        from rgnet_hf.video_decoding import sample_frames

        def frames(seconds):
            for second in range(seconds):
                image = np.full((96, 96, 3), second % 251, dtype=np.uint8)
                yield float(second), av.VideoFrame.from_ndarray(image, format="rgb24"), 1.0

        encoder = load_feature_encoder({str(assets["clip"])!r}, batch_size=64)
        warm = encoder.encode_frames(sample_frames(frames(300), 1.0), total=300, progress=False)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        features = encoder.encode_frames(sample_frames(frames(7200), 1.0), total=7200, description="two hours")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(features.shape[0], features.shape[1], before, after)
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    count, size, before_kib, after_kib = map(int, run.stdout.split())
    assert (count, size) == (7200, 24)
    assert (after_kib - before_kib) / 1024 < 60, f"peak RSS grew by {(after_kib - before_kib) / 1024:.0f} MiB"
    assert "two hours" in run.stderr and "7200/7200" in run.stderr


# the pipeline and the command line ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(assets):
    from transformers import pipeline

    return pipeline("video-grounding", model=str(assets["rgnet"]), progress=False)


def assert_same_moments(actual: list[dict], expected: list[dict]) -> None:
    assert [m["query"] for m in actual] == [m["query"] for m in expected]
    for key, tolerance in (("start", 2e-4), ("end", 2e-4), ("score", 1e-5)):
        np.testing.assert_allclose([m[key] for m in actual], [m[key] for m in expected], rtol=1e-5, atol=tolerance)


def test_pipeline_on_a_video_file_and_texts(assets, encoders, pipe, monkeypatch):
    queries = ["a man opens the door", "the camera pans over the city"]
    encoder = pipe.feature_encoder
    calls = []
    original = type(encoder).encode_video
    monkeypatch.setattr(
        type(encoder), "encode_video", lambda self, *a, **k: calls.append(a[0]) or original(self, *a, **k)
    )
    pipe.processor._video_cache = None
    both = pipe({"video": str(assets["long_video"]), "text": queries}, top_k=100)
    assert len(calls) == 1  # decoded and encoded once for both queries
    one = pipe({"video": str(assets["long_video"]), "text": queries[0]}, top_k=100)
    assert len(calls) == 1  # the same file again: reused
    assert_same_moments(one, both[0])  # another batch shape: equal up to fp32 and the 4-decimal rounding
    for query, moments in zip(queries, both):
        assert moments and all(set(m) == {"start", "end", "score", "query"} and m["query"] == query for m in moments)
        assert all(0.0 <= m["start"] <= m["end"] <= 20.0 for m in moments)

    # The same as the feature path: the raw frame features and the text features normalised once, as the loaders do.
    video = encoder.encode_video(assets["long_video"], 0.5, progress=False)
    texts = encoder.encode_queries(queries)
    tokens = [l2_normalize(t.token_features) for t in texts]
    sentences = l2_normalize(np.stack([t.sentence_features for t in texts]))
    inputs = pipe.preprocess({"video": str(assets["long_video"]), "text": queries})
    np.testing.assert_array_equal(inputs["video_features"].numpy(), video.features)
    for row, expected in zip(inputs["text_features"], tokens):
        np.testing.assert_array_equal(row[: len(expected)].numpy(), expected)
    # Rankings are the engine's; only the seconds are clipped to the video.
    np.testing.assert_array_equal(inputs["sentence_features"].numpy(), sentences)
    results = pipe.engine.ground(
        inputs["video_features"],
        inputs["text_features"],
        inputs["text_mask"],
        inputs["sentence_features"],
        seconds_per_feature=0.5,
    )
    for result, moments in zip(results, both):
        engine = result.to_list(100)
        assert [m["score"] for m in moments] == [m["score"] for m in engine]
        assert [m["start"] for m in moments] == [min(max(m["start"], 0.0), 20.0) for m in engine]
        assert [m["end"] for m in moments] == [min(max(m["end"], 0.0), 20.0) for m in engine]
    features_path = pipe({"video_features": video.features, "text": queries}, top_k=100)
    assert features_path == both


def test_pipeline_raw_input_errors(assets, pipe, tmp_path):
    from transformers import pipeline

    with pytest.raises(FileNotFoundError, match="No such video file"):
        pipe({"video": str(tmp_path / "missing.mp4"), "text": "a door"})
    with pytest.raises(VideoDecodingError, match="no video stream"):
        pipe({"video": str(make_audio_only(tmp_path / "audio.mp4")), "text": "a door"})
    with pytest.raises(FeatureEncoderError, match="empty query"):
        pipe({"video": str(assets["video"]), "text": " ? "})
    with pytest.raises(FeatureEncoderError, match="non-empty list"):
        pipe({"video": str(assets["video"]), "text": []})
    with pytest.raises(ValueError, match="either `video` or `video_features`"):
        pipe({"video": str(assets["video"]), "video_features": np.zeros((4, 24)), "text": "a door"})
    ego = build_tiny_rgnet(tmp_path / "ego", assets["clip"], feature_encoder=None)
    with pytest.raises(FeatureEncoderError, match="EgoVLP"):
        pipeline("video-grounding", model=str(ego))({"video": str(assets["video"]), "text": "a door"})


def test_ground_command_on_a_video_file_and_a_cache(assets, pipe, tmp_path, capsys):
    queries = ["a man opens the door", "a dog runs"]
    video = str(assets["long_video"])
    arguments = ["ground", "--model", str(assets["rgnet"]), "--top-k", "3", "--json", "--no-progress"]
    assert cli_main(arguments + ["--video", video, "--query", queries[0], "--query", queries[1]]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = pipe({"video": video, "text": queries}, top_k=3)
    assert [(entry["index"], entry["query"]) for entry in printed] == [(0, queries[0]), (1, queries[1])]
    for entry, moments in zip(printed, expected):
        assert entry["moments"] == [{key: m[key] for key in ("start", "end", "score")} for m in moments]
    cache = tmp_path / "cache.h5"
    assert cli_main(arguments + ["--video", video, "--features", str(cache), "--query", queries[0]]) == 0
    assert json.loads(capsys.readouterr().out) == printed[:1]  # one query: the same shape, a list of one
    with h5py.File(cache, "r") as handle:
        assert list(handle) == ["twenty_seconds"]
    # The cache alone (its only entry), without the video file.
    assert cli_main(arguments + ["--features", str(cache), "--query", queries[0]]) == 0
    assert json.loads(capsys.readouterr().out) == printed[:1]
    assert cli_main(["ground", "--model", str(assets["rgnet"]), "--video", video, "--query", queries[0]]) == 0
    table = capsys.readouterr().out
    assert table.startswith(queries[0]) and "rank" in table
    assert cli_main(arguments + ["--video", str(tmp_path / "missing.mp4"), "--query", "a door"]) == 2
    assert "No such video file" in capsys.readouterr().err
    assert cli_main(arguments + ["--video", video]) == 2
    assert "--query" in capsys.readouterr().err
    assert cli_main(arguments + ["--video", str(tmp_path), "--query", "a door"]) == 2
    assert "is a folder, not a video file" in capsys.readouterr().err


def test_bf16_encoder_and_extract_command_options(assets, encoders, tmp_path, capsys):
    bf16 = load_feature_encoder(assets["clip"], dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    features = bf16.encode_video(assets["video"], 0.5, progress=False).features
    assert features.dtype == np.float32
    reference = encoders["clip"].encode_video(assets["video"], 0.5, progress=False).features
    torch.testing.assert_close(torch.from_numpy(features), torch.from_numpy(reference), rtol=0.1, atol=0.1)
    # --model takes the encoder and the feature rate from the RGNet config (0.5 s here).
    output = tmp_path / "features.h5"
    arguments = ["extract", "--video", str(assets["video"]), "--output", str(output), "--no-progress"]
    assert cli_main(arguments + ["--model", str(assets["rgnet"])]) == 0
    with h5py.File(output, "r") as handle:
        assert handle.attrs["seconds_per_feature"] == 0.5 and handle["four_seconds"].shape == (8, 24)
    capsys.readouterr()
    assert cli_main(arguments + ["--model", str(assets["rgnet"]), "--encoder", str(assets["clip"])]) == 2
    assert "--encoder" in capsys.readouterr().err
    assert cli_main(arguments + ["--encoder", str(assets["clip"]), "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
    missing = ["extract", "--video", str(tmp_path / "none"), "--output", str(output), "--encoder", str(assets["clip"])]
    assert cli_main(missing) == 2
    assert "No such video file or folder" in capsys.readouterr().err


def test_a_cache_at_another_rate_or_encoder_is_refused(assets, tmp_path, capsys):
    """A cache made at 0.2 s per feature read by a 0.5 s model would put moments 2.5x too late: refused, named."""
    cache = tmp_path / "other_rate.h5"
    video = str(assets["long_video"])
    extract = ["extract", "--video", video, "--output", str(cache), "--no-progress"]
    assert cli_main(extract + ["--encoder", str(assets["clip"])]) == 0  # the encoder's default rate, 0.2 s
    capsys.readouterr()
    ground = ["ground", "--model", str(assets["rgnet"]), "--features", str(cache), "--query", "a door", "--json"]
    for arguments in (ground, ground + ["--video", video]):
        assert cli_main(arguments) == 2
        error = capsys.readouterr().err
        assert "0.2 s per feature" in error and "0.5 s per" in error and "rgnet-hf extract --model" in error
    other_encoder = tmp_path / "other_encoder.h5"
    assert (
        cli_main(
            ["extract", "--video", video, "--output", str(other_encoder), "--no-progress"]
            + ["--encoder", str(assets["siglip"]), "--seconds-per-feature", "0.5"]
        )
        == 0
    )
    capsys.readouterr()
    assert cli_main(["ground", "--model", str(assets["rgnet"]), "--features", str(other_encoder), "--query", "a"]) == 2
    assert "encoder" in capsys.readouterr().err
    # --model fixes the rate: another --seconds-per-feature is refused rather than silently written.
    assert cli_main(extract[:-1] + ["--model", str(assets["rgnet"]), "--seconds-per-feature", "2.0"]) == 2
    assert "differs from the model's 0.5" in capsys.readouterr().err


def test_a_truncated_file_or_a_still_image_is_refused(assets, tmp_path, capsys):
    """Frames that stop long before the container's declared duration (an interrupted download) are an error, and
    the extract command stores nothing for that file; a still image is not taken for a one-frame video."""
    from PIL import Image

    from rgnet_hf.video_decoding import VideoDecodingError, iter_sampled_frames

    whole = make_test_video(tmp_path / "whole.mkv", PALETTE, seconds_per_color=2.0, fps=5)
    assert sum(1 for _ in iter_sampled_frames(whole, 0.5)) == 40
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    with pytest.raises(VideoDecodingError, match="truncated: its container declares 20.0 s"):
        list(iter_sampled_frames(cut, 0.5))
    output = tmp_path / "cache.h5"
    extract = [
        "extract",
        "--video",
        str(cut),
        "--output",
        str(output),
        "--no-progress",
        "--model",
        str(assets["rgnet"]),
    ]
    assert cli_main(extract) == 1
    assert "truncated" in capsys.readouterr().err
    assert not output.exists() or "cut" not in h5py.File(output, "r")
    still = tmp_path / "still.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(still)
    with pytest.raises(VideoDecodingError, match="still image"):
        list(iter_sampled_frames(still, 0.5))


def test_a_frame_repeated_by_a_timestamp_gap_is_encoded_once(assets, encoders, tmp_path, monkeypatch):
    """A small file whose last frame is stamped an hour in gives 7,201 features at 0.5 s that show 4 distinct frames
    (at 0, 0.5, 0.9 and 3600 s): the encoder runs on those 4, not on 7,201 copies, and each feature equals the
    encoding of the frame it shows."""
    gap = make_test_video(tmp_path / "gap.mp4", PALETTE[:2], frame_times=[i / 10 for i in range(10)] + [3600.0])
    encoder = encoders["clip"]
    encoded_rows = []
    original = encoder._encode_pixels

    def counting(pixels, **kwargs):
        encoded_rows.append(len(pixels))
        return original(pixels, **kwargs)

    monkeypatch.setattr(encoder, "_encode_pixels", counting)
    video = encoder.encode_video(gap, 0.5, progress=False)
    assert video.features.shape[0] == 7201 and sum(encoded_rows) == 4
    monkeypatch.setattr(encoder, "_encode_pixels", original)
    frames = dict(iter_sampled_frames(gap, 0.5))
    for index in (0, 1, 2, 1000, 7200):
        expected = encoder.encode_frames([(0, frames[index])], progress=False)[0]
        np.testing.assert_allclose(video.features[index], expected, rtol=1e-5, atol=1e-5)


def test_two_videos_with_one_stem_never_share_a_cache_entry(assets, tmp_path, capsys):
    """dirA/movie.mp4 then dirB/movie.mp4 into one cache: the second is refused, named, not served dirA's features."""
    for folder in ("dirA", "dirB"):
        (tmp_path / folder).mkdir()
    first = make_test_video(tmp_path / "dirA" / "movie.mp4", PALETTE[:2], fps=5)
    second = make_test_video(tmp_path / "dirB" / "movie.mp4", PALETTE[2:6], fps=5)
    cache = tmp_path / "cache.h5"
    extract = ["extract", "--output", str(cache), "--no-progress", "--model", str(assets["rgnet"])]
    assert cli_main(extract + ["--video", str(first.parent)]) == 0
    capsys.readouterr()
    assert cli_main(extract + ["--video", str(second.parent)]) == 1
    error = capsys.readouterr().err
    assert "from another file" in error and str(first.resolve()) in error
    ground = ["ground", "--model", str(assets["rgnet"]), "--features", str(cache), "--query", "a door"]
    assert cli_main(ground + ["--video", str(second)]) == 2
    assert "from another file" in capsys.readouterr().err
    with h5py.File(cache, "r") as handle:
        assert handle["movie"].attrs["source_path"] == str(first.resolve())
    # The same file again is simply done already.
    assert cli_main(extract + ["--video", str(first)]) == 0
    assert "1 already done" in capsys.readouterr().out


def test_an_output_that_is_not_hdf5_is_refused_before_any_work(assets, tmp_path, capsys):
    notes = tmp_path / "notes.h5"
    notes.write_text("my notes, not a cache")
    arguments = ["extract", "--video", str(assets["long_video"]), "--output", str(notes), "--no-progress"]
    # A missing encoder folder would fail later: the output is checked first.
    assert cli_main(arguments + ["--encoder", str(tmp_path / "no_encoder")]) == 2
    error = capsys.readouterr().err
    assert str(notes) in error and "not an HDF5 file" in error and "Traceback" not in error
    assert notes.read_text() == "my notes, not a cache"


def test_a_full_disk_during_the_merge_keeps_the_previous_cache_and_the_parts(assets, encoders, tmp_path, monkeypatch):
    import errno

    folder = tmp_path / "videos"
    folder.mkdir()
    make_test_video(folder / "a.mp4", PALETTE[:2], fps=5)
    make_test_video(folder / "b.mp4", PALETTE[2:4], fps=5)
    output = tmp_path / "features.h5"
    encoder = encoders["clip"]
    videos = list_videos(folder)
    extract_video_features(encoder, videos[:1], output, 0.5, progress=False)
    before = output.read_bytes()

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Group, "copy", disk_full)
    with pytest.raises(OSError, match="disk is full") as raised:
        extract_video_features(encoder, videos, output, 0.5, progress=False)
    assert str(output) in str(raised.value)
    assert output.read_bytes() == before and not (tmp_path / "features.h5.tmp").exists()
    assert (tmp_path / "features.h5.parts" / "b.h5").exists()
    monkeypatch.undo()
    # The rerun merges the kept part without encoding it again.
    report = extract_video_features(encoder, videos, output, 0.5, progress=False)
    assert report.skipped == ["a", "b"]
    with h5py.File(output, "r") as handle:
        assert sorted(handle) == ["a", "b"]


def test_extract_on_a_folder_names_what_it_skipped(assets, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    make_test_video(folder / "a.mp4", PALETTE[:2], fps=5)
    (folder / "notes.txt").write_text("not a video")
    (folder / "more").mkdir()
    arguments = ["extract", "--video", str(folder), "--output", str(tmp_path / "f.h5"), "--no-progress"]
    assert cli_main(arguments + ["--encoder", str(assets["clip"]), "--seconds-per-feature", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 not a video by extension" in out and "notes.txt" in out
    assert "skipped 1 folders" in out and "more" in out
    assert "1 video(s) encoded" in out


@pytest.mark.parametrize("interrupted_at", ["a", "b"])
def test_ctrl_c_during_extract_leaves_no_clutter_and_keeps_finished_videos(
    assets, encoders, tmp_path, monkeypatch, capsys, interrupted_at
):
    folder = tmp_path / "videos"
    folder.mkdir()
    make_test_video(folder / "a.mp4", PALETTE[:2], fps=5)
    make_test_video(folder / "b.mp4", PALETTE[2:4], fps=5)
    output = tmp_path / "f.h5"
    encoder_class = type(encoders["clip"])
    original = encoder_class.encode_video

    def interrupting(self, path, *args, **kwargs):
        if Path(path).stem == interrupted_at:
            raise KeyboardInterrupt
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(encoder_class, "encode_video", interrupting)
    arguments = ["extract", "--video", str(folder), "--output", str(output), "--no-progress"]
    arguments += ["--encoder", str(assets["clip"]), "--seconds-per-feature", "0.5"]
    assert cli_main(arguments) == 130
    error = capsys.readouterr().err
    assert "interrupted" in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    parts = tmp_path / "f.h5.parts"
    assert not output.exists() and not list(tmp_path.glob("*.tmp"))
    if interrupted_at == "a":
        assert not parts.exists()
    else:
        assert [p.name for p in parts.iterdir()] == ["a.h5"]
    monkeypatch.undo()
    assert cli_main(arguments) == 0
    assert f"{2 if interrupted_at == 'a' else 1} video(s) encoded" in capsys.readouterr().out
    with h5py.File(output, "r") as handle:
        assert sorted(handle) == ["a", "b"]


def test_a_bad_file_name_fails_that_file_alone(assets, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    make_test_video(folder / "good.mp4", PALETTE[:2], fps=5)
    long_name = "x" * 246 + ".mp4"  # 250 characters: fine for the file, too long for its temporary part file
    for name in (b"..mp4", long_name.encode(), b"caf\xe9.mp4"):  # the last is Latin-1, not UTF-8
        make_test_video(folder / "tmp.mp4", PALETTE[2:4], fps=5)
        os.rename(os.fsencode(folder / "tmp.mp4"), os.fsencode(folder) + b"/" + name)
    output = tmp_path / "f.h5"
    arguments = ["extract", "--video", str(folder), "--output", str(output), "--no-progress"]
    assert cli_main(arguments + ["--encoder", str(assets["clip"]), "--seconds-per-feature", "0.5"]) == 1
    captured = capsys.readouterr()
    assert "1 video(s) encoded" in captured.out and "3 failed" in captured.out
    assert "'.' is not a valid HDF5 key" in captured.err and "..mp4" in captured.err
    assert "too long" in captured.err and long_name in captured.err
    assert "not valid UTF-8" in captured.err and "caf\\udce9" in captured.err
    with h5py.File(output, "r") as handle:
        assert sorted(handle) == ["good"]


def test_a_second_run_on_the_same_output_is_refused_and_a_dead_runs_lock_is_not(assets, tmp_path, capsys):
    """Two extract runs on one output would delete each other's parts: the second stops at once, named; the OS drops
    the lock of a killed run, so the file it leaves behind does not block the next run."""
    from rgnet_hf.data.feature_cache import lock_output

    output = tmp_path / "f.h5"
    lock = tmp_path / "f.h5.lock"
    extract = ["extract", "--video", str(assets["video"]), "--output", str(output), "--no-progress"]
    extract += ["--model", str(assets["rgnet"])]
    ground = ["ground", "--model", str(assets["rgnet"]), "--video", str(assets["video"]), "--features", str(output)]
    with lock_output(output):  # held by this process
        for arguments in (extract, ground + ["--query", "a door", "--no-progress"]):
            assert cli_main(arguments) == 2
            error = capsys.readouterr().err
            assert f"{output} is being written by another run (process {os.getpid()}" in error
        assert not output.exists() and not (tmp_path / "f.h5.parts").exists()
    assert not lock.exists()
    # A run killed while holding the lock leaves its lock file, with its process id, but no lock.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom rgnet_hf.data.feature_cache import lock_output\n"
            "held = lock_output(sys.argv[1])\nheld.__enter__()\nprint('locked', flush=True); time.sleep(120)",
            str(output),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli_main(extract) == 2
        assert f"(process {holder.pid}, lock file {lock})" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert lock.read_text().strip() == str(holder.pid)
    assert cli_main(extract) == 0
    assert "1 video(s) encoded" in capsys.readouterr().out and not lock.exists()
    with h5py.File(output, "r") as handle:
        assert list(handle) == ["four_seconds"]


def test_allow_truncated_grounds_the_decoded_part_with_a_warning_and_its_real_duration(assets, tmp_path, capsys):
    """With --allow-truncated a truncated file is a warning, not an error: its features, the cache entry and the
    moments all stop at the decoded duration, and the cache records the truncation."""
    from rgnet_hf.video_decoding import TruncatedVideoWarning

    whole = make_test_video(tmp_path / "whole.mkv", PALETTE, seconds_per_color=2.0, fps=5)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    report = {}
    with pytest.warns(TruncatedVideoWarning, match="truncated: its container declares 20.0 s"):
        sampled = sum(1 for _ in iter_sampled_frames(cut, 0.5, report=report, allow_truncated=True))
    decoded = report["duration"]
    assert report["truncated"] and report["declared_duration"] == pytest.approx(20.0) and decoded < 19.0
    assert sampled == math.ceil(decoded / 0.5 - 1e-9)

    output = tmp_path / "cache.h5"
    extract = [
        "extract",
        "--video",
        str(cut),
        "--output",
        str(output),
        "--no-progress",
        "--model",
        str(assets["rgnet"]),
    ]
    assert cli_main(extract + ["--allow-truncated"]) == 0
    captured = capsys.readouterr()
    assert "1 video(s) encoded" in captured.out
    assert f"warning: {cut} is truncated" in captured.err and f"using the {decoded:.1f} s decoded" in captured.err
    with h5py.File(output, "r") as handle:
        entry = handle["cut"]
        assert entry.attrs["truncated"] and entry.attrs["declared_duration"] == pytest.approx(20.0)
        assert entry.attrs["duration"] == pytest.approx(decoded) and entry.shape[0] == sampled

    ground = [
        "ground",
        "--model",
        str(assets["rgnet"]),
        "--query",
        "a door",
        "--top-k",
        "50",
        "--json",
        "--no-progress",
    ]
    # Reading the cache: refused without the option, a warning with it; the moments stop at the decoded end.
    assert cli_main(ground + ["--features", str(output)]) == 2
    assert "truncated file" in capsys.readouterr().err
    assert cli_main(ground + ["--features", str(output), "--allow-truncated"]) == 0
    captured = capsys.readouterr()
    assert f"{decoded:.1f} s decoded of the 20.0 s its container declares" in captured.err
    from_cache = json.loads(captured.out)[0]["moments"]
    assert from_cache and max(m["end"] for m in from_cache) <= decoded
    # The video file itself: an error without the option; with it, the same moments as from the cache.
    assert cli_main(ground + ["--video", str(cut)]) == 2
    assert "--allow-truncated" in capsys.readouterr().err
    assert cli_main(ground + ["--video", str(cut), "--allow-truncated"]) == 0
    captured = capsys.readouterr()
    assert f"warning: {cut} is truncated" in captured.err
    from_file = json.loads(captured.out)[0]["moments"]
    assert_same_moments([{**m, "query": None} for m in from_file], [{**m, "query": None} for m in from_cache])
