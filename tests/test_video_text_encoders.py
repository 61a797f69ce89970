"""The frame encoder's pipeline: decoding and the image processor in a thread, ahead of the encoder."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from raw_video_utils import build_tiny_clip, make_test_video

from rgnet_hf.video_decoding import iter_sampled_frames
from rgnet_hf.video_text_encoders import load_feature_encoder


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoder_pipeline")
    return load_feature_encoder(build_tiny_clip(root / "clip"), batch_size=4)


def _frames(count: int, repeat_every: int = 3) -> list[tuple[int, np.ndarray]]:
    """`count` indexed frames; every `repeat_every`-th index repeats the previous frame object (a still scene)."""
    generator = np.random.default_rng(0)
    frames, image = [], None
    for index in range(count):
        if image is None or index % repeat_every:
            image = generator.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        frames.append((index, image))
    return frames


def _sequential_reference(encoder, frames) -> np.ndarray:
    """The same batches encoded one after the other in this thread: distinct frames in groups of `batch_size`."""
    distinct, rows = [], []
    for _, image in frames:
        if not distinct or image is not distinct[-1]:
            distinct.append(image)
        rows.append(len(distinct) - 1)
    pixels = [encoder.image_processor(images=[image], return_tensors="pt")["pixel_values"][0] for image in distinct]
    batches = [torch.stack(pixels[i : i + encoder.batch_size]) for i in range(0, len(pixels), encoder.batch_size)]
    features = np.concatenate([encoder._encode_pixels(batch).numpy() for batch in batches])
    return features[np.array(rows)]


def _pipeline_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "rgnet-frame-batches"]


@pytest.mark.parametrize("prefetch_batches", [1, 2, 5])
def test_the_pipelined_encoder_equals_encoding_one_batch_after_the_other(encoder, prefetch_batches):
    frames = _frames(23)
    features = encoder.encode_frames(frames, progress=False, prefetch_batches=prefetch_batches)
    np.testing.assert_allclose(features, _sequential_reference(encoder, frames), rtol=1e-5, atol=1e-6)
    assert features.shape == (23, encoder.video_feature_size) and features.dtype == np.float32
    assert not _pipeline_threads()


def test_a_video_file_through_the_pipeline_equals_its_frames_encoded_directly(encoder, tmp_path):
    video = make_test_video(tmp_path / "four.mp4")
    frames = list(iter_sampled_frames(video, 0.25))
    features = encoder.encode_video(video, 0.25, progress=False).features
    np.testing.assert_allclose(features, _sequential_reference(encoder, frames), rtol=1e-5, atol=1e-6)


def test_an_error_while_reading_frames_is_raised_by_the_encoder(encoder):
    def broken():
        yield from _frames(9)
        raise RuntimeError("decoder failed at frame 9")

    with pytest.raises(RuntimeError, match="decoder failed at frame 9"):
        encoder.encode_frames(broken(), progress=False)
    with pytest.raises(ValueError, match="frame indices must run 0, 1"):
        encoder.encode_frames([(0, _frames(1)[0][1]), (2, _frames(1)[0][1])], progress=False)
    assert not _pipeline_threads()


def test_an_encoder_error_stops_the_reader_and_closes_the_frames(encoder, monkeypatch):
    """Leaving early (an encoder failure, or Ctrl-C in the encoding thread) stops the reading thread and closes the
    frame source, so a video file is not left open and nothing keeps decoding."""
    closed, produced = threading.Event(), []

    def endless():
        try:
            index = 0
            while True:
                produced.append(index)
                yield index, np.full((8, 8, 3), index % 256, dtype=np.uint8)
                index += 1
        finally:
            closed.set()

    def failing(pixel_values, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(encoder, "_encode_pixels", failing)
    source = endless()  # held here, so only an explicit close (not garbage collection) runs its `finally`
    with pytest.raises(KeyboardInterrupt):
        encoder.encode_frames(source, progress=False, prefetch_batches=2)
    assert closed.is_set() and not _pipeline_threads()
    # The reader ran ahead by at most the prefetched batches (and the one it was filling), not without end.
    assert len(produced) <= (2 + 2) * encoder.batch_size + 1


def test_prefetch_batches_must_be_positive(encoder):
    with pytest.raises(ValueError, match="prefetch_batches must be >= 1"):
        encoder.encode_frames(_frames(2), progress=False, prefetch_batches=0)
