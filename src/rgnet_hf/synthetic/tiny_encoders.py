"""Tiny random CLIP encoders built offline: a real `CLIPModel`, tokenizer and image processor, nothing downloaded.

They stand in for `openai/clip-vit-base-patch32` where a run must stay offline and fast (the demo, tests): the
folder loads with `load_feature_encoder(folder)` like a Hub checkpoint and is named by a model's `feature_encoder`.
The tokenizer is CLIP's BPE on a vocabulary made from the words of the given sentences (one merge chain per word),
so those sentences tokenise into whole words.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789.,?!'"


def tiny_clip_tokenizer(sentences: Iterable[str], context: int):
    """A `CLIPTokenizer` whose merges spell every word of `sentences` (lower case) as one token."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    merges: list[tuple[str, str]] = []
    for character in _CHARACTERS:
        vocab.setdefault(character, len(vocab))
        vocab.setdefault(character + "</w>", len(vocab))
    words = sorted({word for sentence in sentences for word in re.findall(r"[a-z]+|[^a-z\s]", sentence.lower())})
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for piece in pieces[1:]:
            if (left, piece) not in merges:
                merges.append((left, piece))
            left = left + piece
            vocab.setdefault(left, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=context)


def build_tiny_clip(
    folder: str | os.PathLike,
    sentences: Iterable[str],
    *,
    seed: int = 0,
    text_hidden_size: int = 32,
    vision_hidden_size: int = 32,
    projection_dim: int = 24,
    context: int = 16,
    image_size: int = 32,
    patch_size: int = 8,
    calibration_images: Sequence[np.ndarray] | None = None,
    calibration_sentences: Sequence[str] | None = None,
) -> Path:
    """Save a random CLIP (model, BPE tokenizer, image processor) to `folder` and return it.

    Feature sizes: frames and sentences `projection_dim`, tokens `text_hidden_size`; `context` tokens per sentence;
    frames resized and cropped to `image_size` x `image_size`.

    `calibration_images` (`(H, W, 3)` uint8 RGB frames of the footage the encoder will see): the image features of a
    random CLIP are nearly collinear (cosine about 0.99 between any two frames), which leaves a model trained on them
    almost nothing to learn from. With calibration images, the visual projection and the last layer norm's bias are
    set so that the frame features of those images have zero mean and unit variance in every dimension.
    `calibration_sentences` (sentences of the training data) do the same for the token features, through the text
    transformer's final layer norm: random token features share most of their direction too (mean cosine about 0.8
    on the demo corpus). Either way the encoder stays an ordinary CLIP checkpoint.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = Path(folder)
    tokenizer = tiny_clip_tokenizer(sentences, context)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": text_hidden_size,
            "intermediate_size": 2 * text_hidden_size,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": context,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": vision_hidden_size,
            "intermediate_size": 2 * vision_hidden_size,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    if calibration_images is not None:
        _standardize_image_features(model, image_processor, calibration_images)
    if calibration_sentences is not None:
        _standardize_token_features(model, tokenizer, calibration_sentences)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    return folder


def _standardize_image_features(model, image_processor, images: Sequence[np.ndarray]) -> None:
    """Rescale `visual_projection` and shift `post_layernorm`'s bias so the images' features are standardized.

    The image feature is `P @ (w * z + b)` with `z` the normalized pooled token: dividing the rows of `P` by the
    features' standard deviations scales each dimension, and `b -> b - pinv(P') @ (mean / std)` removes the mean
    exactly, because `P'` (projection_dim x hidden, projection_dim < hidden) has full row rank.
    """
    import torch

    if len(images) < 2:
        raise ValueError(f"calibration needs at least 2 images, got {len(images)}")
    with torch.no_grad():
        pixel_values = image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        features = model.get_image_features(pixel_values=pixel_values)
        features = getattr(features, "pooler_output", features)
        mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
        projection = model.visual_projection.weight / std[:, None]
        model.visual_projection.weight.copy_(projection)
        shift = torch.linalg.pinv(projection) @ (mean / std)
        model.vision_model.post_layernorm.bias.sub_(shift)


def _standardize_token_features(model, tokenizer, sentences: Sequence[str]) -> None:
    """Set the text transformer's final layer norm so that the token features of the sentences, as the CLIP feature
    encoder makes them (the query cleaned up, the start and end tokens dropped), have zero mean and unit variance in
    every dimension: a per-dimension affine map of the layer norm's output, folded into its weight and bias."""
    import torch

    from ..video_text_encoders import clean_query

    if len(sentences) < 2:
        raise ValueError(f"calibration needs at least 2 sentences, got {len(sentences)}")
    with torch.no_grad():
        batch = tokenizer([clean_query(sentence) for sentence in sentences], padding=True, return_tensors="pt")
        words = batch["attention_mask"].bool()
        words[:, 0] = False
        words[torch.arange(len(words)), batch["attention_mask"].sum(1) - 1] = False
        states = model.text_model(**batch).last_hidden_state[words]
        mean, std = states.mean(0), states.std(0).clamp_min(1e-6)
        norm = model.text_model.final_layer_norm
        norm.weight.div_(std)
        norm.bias.sub_(mean).div_(std)


__all__ = ["build_tiny_clip", "tiny_clip_tokenizer"]
