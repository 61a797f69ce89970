from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
PARITY_NAMES = ("mad_tiny", "ego4d_tiny", "ego4d_pretrain_tiny")

# Keep every Hub / module cache of the test run out of the user's home.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def parity_fixtures() -> dict[str, dict]:
    return {name: torch.load(FIXTURES / f"{name}.pt", weights_only=True) for name in PARITY_NAMES}


def tiny_config(**overrides):
    from rgnet_hf import RGNetConfig

    values = dict(
        video_feature_size=24, text_feature_size=16, sentence_feature_size=24, hidden_size=32, num_attention_heads=4,
        intermediate_size=64, window_length=40, max_text_length=7, num_queries=5, top_k_windows=10,
    )  # fmt: skip
    values.update(overrides)
    return RGNetConfig(**values)
