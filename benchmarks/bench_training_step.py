"""Training-step time and memory of the released recipes (forward + backward + AdamW step, full-size model).

    python benchmarks/bench_training_step.py [--recipe mad|ego4d_pretrain|ego4d] [--batch-size N] [--device cuda]
        [--mixed-precision bf16]

Prints one JSON object per recipe: queries per step, windows through the encoder, seconds per step (best of the
timed steps) and peak GPU memory. Random weights and features of the recipe's sizes.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from rgnet_hf import RGNetConfig, RGNetForVideoGrounding

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


def measure(recipe: str, batch_size: int, device: torch.device, mixed_precision: str, steps: int) -> dict:
    torch.manual_seed(0)
    config = RGNetConfig.from_preset(recipe)
    model = RGNetForVideoGrounding(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    batch = _batch(config, batch_size, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
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
        "mixed_precision": mixed_precision,
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
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    for recipe in args.recipe or list(RELEASED_BATCH):
        batch_size = args.batch_size or RELEASED_BATCH[recipe]
        print(json.dumps(measure(recipe, batch_size, torch.device(args.device), args.mixed_precision, args.steps)))


if __name__ == "__main__":
    main()
