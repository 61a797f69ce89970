"""Builders for tests on raw inputs: tiny random CLIP / SigLIP encoders, a tiny RGNet folder, short test videos.

Everything is built offline from configs (nothing is downloaded) and is deterministic for a given seed. Other test
modules import these (the web app's tests too), so the signatures are kept stable:

- `build_tiny_clip(folder)` -> the folder: a random `CLIPModel` with a BPE `tokenizer.json` (CLIP's tokenizer on a
  vocabulary and merges made from the words of `SENTENCES`) and a `CLIPImageProcessor` (32 x 32 crops). Sizes:
  frame and sentence features `CLIP_PROJECTION_DIM`, token features `CLIP_TEXT_HIDDEN`; context `CLIP_CONTEXT`
  tokens.
- `build_tiny_siglip(folder)` -> the folder: a random `SiglipModel` with a sentencepiece model trained on
  `SENTENCES` and a `SiglipImageProcessor`. Sizes: frame features `SIGLIP_VISION_HIDDEN`, token and sentence
  features `SIGLIP_TEXT_HIDDEN`; context `SIGLIP_CONTEXT` tokens.
- `build_tiny_rgnet(folder, encoder_folder, **config_overrides)` -> the folder: a random, small
  `RGNetForVideoGrounding` saved with `save_pretrained`, whose config `feature_encoder` names `encoder_folder` (as an
  absolute path) and whose feature sizes fit it (`seconds_per_feature` 0.5, windows of 16 features by default).
- `make_test_video(path, colors, seconds_per_color=1.0, fps=10, ...)` -> the path: an mp4 (H.264) whose frames are
  `colors[k]` (RGB) during second range `[k * seconds_per_color, (k + 1) * seconds_per_color)`.
- `make_audio_only(path)`, `make_not_a_video(path)`: files for the error tests.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rgnet_hf.synthetic.tiny_encoders import build_tiny_clip as _build_tiny_clip
from rgnet_hf.synthetic.video_files import write_rgb_video, write_silence

SENTENCES = [
    "a man opens the door.",
    "a woman walks into the room.",
    "the car drives down the street at night.",
    "a dog runs across the park.",
    "two people talk in the kitchen?",
    "she picks up the phone and smiles.",
    "the camera pans over the city.",
    "he closes the window slowly.",
]

CLIP_TEXT_HIDDEN = 32
CLIP_PROJECTION_DIM = 24
CLIP_CONTEXT = 16
SIGLIP_TEXT_HIDDEN = 32
SIGLIP_VISION_HIDDEN = 24
SIGLIP_CONTEXT = 48
IMAGE_SIZE = 32

# Distinct colours, one per second of a test video.
PALETTE = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 255, 255),
    (0, 0, 0),
    (128, 64, 0),
    (0, 128, 64),
]


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """A random CLIP saved to `folder` (model, BPE tokenizer, image processor). Returns the folder."""
    return _build_tiny_clip(
        folder,
        SENTENCES,
        seed=seed,
        text_hidden_size=CLIP_TEXT_HIDDEN,
        vision_hidden_size=32,
        projection_dim=CLIP_PROJECTION_DIM,
        context=CLIP_CONTEXT,
        image_size=IMAGE_SIZE,
    )


def build_tiny_siglip(folder: str | Path, seed: int = 0) -> Path:
    """A random SigLIP saved to `folder` (model, sentencepiece tokenizer, image processor). Returns the folder."""
    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as scratch:
        prefix = str(Path(scratch) / "spiece")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(SENTENCES * 4),
            model_prefix=prefix,
            vocab_size=48,
            hard_vocab_limit=False,
            model_type="unigram",
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            character_coverage=1.0,
            num_threads=1,
            minloglevel=2,
        )
        tokenizer = SiglipTokenizer(vocab_file=prefix + ".model", model_max_length=SIGLIP_CONTEXT)
    config = SiglipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": SIGLIP_TEXT_HIDDEN,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": SIGLIP_CONTEXT,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
        },
        vision_config={
            "hidden_size": SIGLIP_VISION_HIDDEN,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
        },
    )
    torch.manual_seed(seed)
    SiglipModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder


def build_tiny_rgnet(folder: str | Path, encoder_folder: str | Path, seed: int = 0, **config_overrides) -> Path:
    """A random small RGNet saved to `folder`, reading the features of the tiny encoder in `encoder_folder`."""
    from transformers import AutoConfig

    from rgnet_hf import RGNetConfig, RGNetForVideoGrounding

    encoder_config = AutoConfig.from_pretrained(encoder_folder)
    if encoder_config.model_type == "clip":
        projection = encoder_config.projection_dim
        sizes = {"video_feature_size": projection, "sentence_feature_size": projection}
    else:
        sizes = {
            "video_feature_size": encoder_config.vision_config.hidden_size,
            "sentence_feature_size": encoder_config.text_config.hidden_size,
        }
    values = {
        **sizes,
        "text_feature_size": encoder_config.text_config.hidden_size,
        "hidden_size": 32,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "num_decoder_layers": 2,
        "window_length": 16,
        "seconds_per_feature": 0.5,
        "top_k_windows": 4,
        "feature_encoder": str(Path(encoder_folder).resolve()),
    }
    values.update(config_overrides)
    torch.manual_seed(seed)
    model = RGNetForVideoGrounding(RGNetConfig.from_preset("mad", **values)).eval()
    model.save_pretrained(folder)
    return Path(folder)


def make_test_video(
    path: str | Path,
    colors: Sequence[tuple[int, int, int]] = PALETTE[:4],
    seconds_per_color: float = 1.0,
    fps: float = 10,
    size: tuple[int, int] = (64, 48),
    *,
    codec: str = "libx264",
    rotation: int | None = None,
    frame_times: Sequence[float] | None = None,
    with_audio: bool = False,
) -> Path:
    """Write an mp4 whose frames show `colors[k]` during `[k * seconds_per_color, (k + 1) * seconds_per_color)`.

    Args:
        size: `(width, height)`.
        rotation: display rotation (degrees, counter-clockwise) stored in the container, e.g. 90.
        frame_times: explicit frame times in seconds (a variable frame rate); default: every `1 / fps` seconds.
        with_audio: add a silent AAC track.
    The left third of every frame is black, so the orientation can be checked after rotation.
    """
    path = Path(path)
    width, height = size
    total = len(colors) * seconds_per_color
    if frame_times is None:
        frame_times = [i / fps for i in range(int(round(total * fps)))]

    def frames():
        for time in frame_times:
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[:] = colors[min(int(time / seconds_per_color), len(colors) - 1)]
            image[:, : width // 3] = 0
            yield time, image

    options = {"crf": "10", "g": "5", "bf": "0"}
    return write_rgb_video(
        path,
        frames(),
        fps=fps,
        size=size,
        options=options,
        codec=codec,
        rotation=rotation,
        silent_audio_seconds=total if with_audio else None,
    )


def make_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """An m4a file with one silent AAC track and no video stream."""
    import av

    path = Path(path)
    with av.open(str(path), "w", format="mp4") as container:
        write_silence(container.add_stream("aac", rate=16000), container, seconds)
    return path


def make_not_a_video(path: str | Path) -> Path:
    """A text file with a video's extension."""
    path = Path(path)
    path.write_text("this is not a video\n" * 20)
    return path
