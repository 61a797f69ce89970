from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
PARITY_NAMES = ("mad_tiny", "ego4d_tiny", "ego4d_pretrain_tiny")

# Keep every Hub / module cache of the test run out of the user's home.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_launch_command(num_processes: int, *program: str) -> list[str]:
    """`accelerate launch` of `program` (a script path or `-m module` and its arguments) on `num_processes` local
    processes; run it with `ACCELERATE_USE_CPU=1` in the environment for CPU processes."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        *program,
    ]


@pytest.fixture(scope="session")
def parity_fixtures() -> dict[str, dict]:
    return {name: torch.load(FIXTURES / f"{name}.pt", weights_only=True) for name in PARITY_NAMES}


# Feature and layer sizes of every tiny test model (the data builders write 24-d video and 16-d text features).
TINY_SIZES = dict(
    video_feature_size=24,
    text_feature_size=16,
    sentence_feature_size=24,
    hidden_size=32,
    num_attention_heads=4,
    intermediate_size=64,
)


def tiny_config(**overrides):
    from rgnet_hf import RGNetConfig

    values = dict(
        **TINY_SIZES,
        window_length=40,
        max_text_length=7,
        num_queries=5,
        top_k_windows=10,
    )
    values.update(overrides)
    return RGNetConfig(**values)


def run_without_rgnet_hf(script: str, hf_home, timeout: int = 300):
    """Run `script` in a fresh Python process where importing rgnet_hf fails (a machine without the package), with
    its own HF cache and no Hub access."""
    import subprocess
    import sys
    import textwrap

    blocker = textwrap.dedent(
        """
        import importlib.abc, sys
        class _BlockRGNet(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "rgnet_hf" or name.startswith("rgnet_hf."):
                    raise ImportError("rgnet_hf is blocked in this test")
        sys.meta_path.insert(0, _BlockRGNet())
        """
    )
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


# The official released sizes per configuration (what the converter and the presets must reproduce).
RELEASED_SIZES = {
    "mad": {
        "hidden_dim": 256,
        "nheads": 8,
        "dim_feedforward": 2048,
        "max_v_l": 900,
        "max_q_l": 25,
        "v_motion_feat_dim": 512,
        "v_appear_feat_dim": 512,
        "t_feat_dim": 512,
    },
    "ego4d": {
        "hidden_dim": 256,
        "nheads": 8,
        "dim_feedforward": 2048,
        "max_v_l": 90,
        "max_q_l": 20,
        "v_motion_feat_dim": 256,
        "v_appear_feat_dim": 256,
        "t_feat_dim": 512,
    },
}


def random_grounding_inputs(config, batch_size: int = 3, num_frames: int = 12, num_tokens: int = 4):
    """Random `(batch, frames, D)` inputs with some padded frames and tokens, for forward passes."""
    generator = torch.Generator().manual_seed(1)
    video_mask = torch.ones(batch_size, num_frames)
    video_mask[1:, num_frames - 3 :] = 0
    text_mask = torch.ones(batch_size, num_tokens)
    text_mask[0, -1] = 0
    return {
        "video_features": torch.randn(batch_size, num_frames, config.video_feature_size, generator=generator)
        * video_mask[..., None],
        "video_mask": video_mask,
        "text_features": torch.randn(batch_size, num_tokens, config.text_feature_size, generator=generator),
        "text_mask": text_mask,
    }
