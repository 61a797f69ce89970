"""`PixelTransform`: the image processor's steps for one frame, bit for bit the processor's result."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from transformers import CLIPImageProcessor, SiglipImageProcessor

from rgnet_hf.video_text_encoders import PixelTransform

SIZES = [(360, 640), (720, 1280), (480, 360), (100, 90), (224, 224), (225, 301), (31, 47)]


def _processed(processor, frame: np.ndarray) -> np.ndarray:
    return processor(images=[frame], return_tensors="np")["pixel_values"][0]


@pytest.mark.parametrize(
    "processor",
    [
        CLIPImageProcessor(),
        SiglipImageProcessor(),
        CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 36}),
        CLIPImageProcessor(image_mean=0.5, image_std=0.25, resample=2),
    ],
    ids=["clip", "siglip", "clip-small-crop", "clip-bilinear-scalar-mean"],
)
def test_the_direct_steps_equal_the_processor_bit_for_bit(processor):
    transform = pickle.loads(pickle.dumps(PixelTransform(processor)))  # as decoding workers receive it
    assert transform.direct
    generator = np.random.default_rng(0)
    for height, width in SIZES:
        for _ in range(3):  # the first frame of a size is checked against the processor, the next ones are direct
            frame = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
            pixels, expected = transform(frame), _processed(processor, frame)
            assert pixels.dtype == np.float32 and pixels.shape == expected.shape
            np.testing.assert_array_equal(pixels, expected)
        assert transform._direct_by_size[(height, width)]


def test_a_processor_it_does_not_know_goes_through_the_processor():
    for processor in (
        CLIPImageProcessor(do_normalize=False),
        CLIPImageProcessor(size={"shortest_edge": 64, "longest_edge": 80}),
        CLIPImageProcessor(do_resize=False, do_center_crop=False),
    ):
        transform = PixelTransform(processor)
        assert not transform.direct
        frame = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
        np.testing.assert_array_equal(transform(frame), _processed(processor, frame))
    # a frame that is not 3-channel uint8 also goes to the processor
    processor = CLIPImageProcessor()
    transform = PixelTransform(processor)
    grey = np.random.default_rng(2).integers(0, 256, (50, 70, 1), dtype=np.uint8)
    np.testing.assert_array_equal(transform(grey), _processed(processor, grey))
    assert transform._direct_by_size == {}


def test_a_size_whose_first_frame_differs_stays_with_the_processor(monkeypatch):
    processor = CLIPImageProcessor()
    transform = PixelTransform(processor)
    plan = transform._plan
    monkeypatch.setattr(type(plan), "__call__", lambda self, frame: np.zeros((3, 224, 224), np.float32))
    generator = np.random.default_rng(3)
    for _ in range(3):
        frame = generator.integers(0, 256, (90, 160, 3), dtype=np.uint8)
        np.testing.assert_array_equal(transform(frame), _processed(processor, frame))
    assert transform._direct_by_size == {(90, 160): False}
