"""Training-step time and memory of the released recipes (forward + backward + AdamW step, full-size model), the
reference and the fast modes side by side.

    python benchmarks/bench_training_step.py [--recipe mad|ego4d_pretrain|ego4d] [--batch-size N] [--device cuda]
        [--modes reference,exact,bf16,checkpointing]

Modes: `reference` (eager attention, float32, AdamW), `exact` (sdpa attention, float32, fused AdamW on CUDA), `bf16`
(sdpa, bfloat16 autocast, fused AdamW on CUDA), `checkpointing` (`exact` with gradient checkpointing: less memory,
more time). Prints one JSON object per recipe and mode: queries per step, windows
through the encoder, seconds per step (best of the timed steps), peak GPU memory, the first step's loss and its
difference to the reference mode's. Random weights and features of the recipe's sizes, dropout off so that the
modes compute the same function.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from rgnet_hf import RGNetConfig, RGNetForVideoGrounding
from rgnet_hf.training import enable_gradient_checkpointing

RELEASED_BATCH = {"mad": 8, "ego4d_pretrain": 16, "ego4d": 32}


def _batch(config: RGNetConfig, batch_size: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    length = config.window_length
    lengths = torch.randint(length // 2, length + 1, (batch_size,), generator=generator)
    video_mask = (torch.arange(length)[None] < lengths[:, None]).float()
    text_mask = torch.ones(batch_size, config.max_text_length)
    labels = []
    for n in lengths.tolist():
        labels.append(
            {
                "spans": torch.tensor([[0.5, 0.1]]),
                "saliency_positive_frames": torch.tensor([n // 2]),
                "saliency_negative_frames": torch.tensor([0]),
            }
        )
    video = torch.randn(batch_size, length, config.video_feature_size, generator=generator) * video_mask[..., None]
    text = torch.randn(batch_size, config.max_text_length, config.text_feature_size, generator=generator)
    batch = {
        "video_features": video,
        "video_mask": video_mask,
        "text_features": torch.nn.functional.normalize(text, dim=-1),
        "text_mask": text_mask,
        "labels": [{k: v.to(device) for k, v in label.items()} for label in labels],
    }
    if config.use_negative_window_loss:
        batch["negative_video_features"] = torch.randn(
            batch_size, length, config.video_feature_size, generator=generator
        )
        batch["negative_video_mask"] = torch.ones(batch_size, length)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def measure(recipe: str, batch_size: int, device: torch.device, mode: str, steps: int) -> dict:
    torch.manual_seed(0)
    config = RGNetConfig.from_preset(recipe, dropout=0.0, input_dropout=0.0)
    config._attn_implementation = "eager" if mode == "reference" else "sdpa"
    model = RGNetForVideoGrounding(config).to(device).train()
    if mode == "checkpointing":
        enable_gradient_checkpointing(model)
    fused = device.type == "cuda" and mode != "reference"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, fused=fused or None)
    batch = _batch(config, batch_size, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16")
    losses = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        torch.manual_seed(1)  # the same sampler noise in every mode
        with autocast:
            loss = model(**batch).loss
        losses.append(float(loss.detach()))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    encoder_windows = (
        batch_size * batch_size
        if config.in_batch_window_pairs
        else 2 * batch_size
        if config.use_negative_window_loss
        else batch_size
    )
    return {
        "benchmark": "training_step",
        "recipe": recipe,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "mode": mode,
        "attn_implementation": config._attn_implementation,
        "fused_adamw": fused,
        "gradient_checkpointing": mode == "checkpointing",
        "first_loss": losses[0],
        "queries_per_step": batch_size,
        "encoder_windows_per_step": encoder_windows,
        "window_length": config.window_length,
        "seconds_per_step_best": round(min(times[1:]), 4),
        "seconds_per_step_mean": round(sum(times[1:]) / steps, 4),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", choices=list(RELEASED_BATCH), default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="queries per step (default: the released one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", default="reference,exact,bf16,checkpointing")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    for recipe in args.recipe or list(RELEASED_BATCH):
        batch_size = args.batch_size or RELEASED_BATCH[recipe]
        results = [
            measure(recipe, batch_size, torch.device(args.device), mode, args.steps) for mode in args.modes.split(",")
        ]
        reference = next((r for r in results if r["mode"] == "reference"), None)
        for result in results:
            if reference is not None:
                result["first_loss_diff_to_reference"] = abs(result["first_loss"] - reference["first_loss"])
                result["speedup_vs_reference"] = round(
                    reference["seconds_per_step_best"] / result["seconds_per_step_best"], 3
                )
            print(json.dumps(result))


if __name__ == "__main__":
    main()
