"""Tiny models and small generated feature caches for the library-search tests."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from conftest import tiny_config

ENCODER = "tiny-encoder"


@functools.cache
def tiny_model(**overrides):
    """A random tiny RGNet reading 24-d `ENCODER` features at 0.2 s per feature (40-frame windows)."""
    from rgnet_hf import RGNetForVideoGrounding

    torch.manual_seed(0)
    values = {"feature_encoder": ENCODER, "top_k_windows": 4, **overrides}
    return RGNetForVideoGrounding(tiny_config(**values)).eval()


def write_cache(path: Path, videos: dict[str, np.ndarray], encoder: str = ENCODER, rate: float = 0.2) -> Path:
    """An HDF5 cache in the layout `rgnet-hf extract` writes."""
    import h5py

    with h5py.File(path, "w") as handle:
        handle.attrs["encoder"] = encoder
        handle.attrs["seconds_per_feature"] = rate
        for key, features in videos.items():
            dataset = handle.create_dataset(key, data=features.astype(np.float32))
            dataset.attrs.update(
                {
                    "encoder": encoder,
                    "seconds_per_feature": rate,
                    "duration": len(features) * rate,
                    "source": f"{key}.mp4",
                }
            )
    return path


def random_videos(seed: int, lengths: dict[str, int], size: int = 24) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(seed)
    return {key: generator.normal(size=(length, size)).astype(np.float32) for key, length in lengths.items()}


def random_queries(seed: int, num_queries: int = 2, tokens: int = 5):
    generator = np.random.default_rng(seed)
    text = generator.normal(size=(num_queries, tokens, 16)).astype(np.float32)
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    sentence = generator.normal(size=(num_queries, 24)).astype(np.float32)
    return text, sentence / np.linalg.norm(sentence, axis=-1, keepdims=True)
