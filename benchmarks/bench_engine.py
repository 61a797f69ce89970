"""Long-video inference speed: the engine (top-k decoding) against decoding every window, in the same run.

    python benchmarks/bench_engine.py [--preset mad] [--minutes 120] [--queries 8] [--device cuda] [--dtype bf16]

Prints one JSON object: the model, the video, windows per second of the encoder+decoder pass, seconds per query for
the whole video, and the ratio of the engine (decoding only the top-k windows) to the decode-every-window baseline.
Random weights and random features: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from rgnet_hf import RGNetConfig, RGNetForVideoGrounding, RGNetGroundingEngine


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mad", choices=RGNetConfig.preset_names())
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--memory-budget-gib", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    config = RGNetConfig.from_preset(args.preset)
    model = RGNetForVideoGrounding(config).eval().to(device=device, dtype=dtype)
    num_frames = int(args.minutes * 60 / config.seconds_per_feature)
    video = torch.randn(num_frames, config.video_feature_size, device=device)
    text = torch.nn.functional.normalize(
        torch.randn(args.queries, config.max_text_length, config.text_feature_size, device=device), dim=-1
    )
    sentence = torch.nn.functional.normalize(
        torch.randn(args.queries, config.sentence_feature_size, device=device), dim=-1
    )
    engine = RGNetGroundingEngine(model, memory_budget_bytes=int(args.memory_budget_gib * 2**30))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    top_k = _time(lambda: engine.ground(video, text, sentence_features=sentence), device, args.repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    every = _time(
        lambda: engine.ground(video, text, sentence_features=sentence, decode_all_windows=True), device, args.repeats
    )
    num_windows = len(engine.ground(video, text[:1], sentence_features=sentence[:1])[0].window_order)
    rows = num_windows * args.queries
    print(
        json.dumps(
            {
                "benchmark": "engine",
                "device": torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else platform.processor() or "cpu",
                "threads": torch.get_num_threads(),
                "dtype": args.dtype,
                "preset": args.preset,
                "video_minutes": args.minutes,
                "num_frames": num_frames,
                "num_windows": num_windows,
                "queries": args.queries,
                "top_k_windows": config.top_k_windows,
                "engine_seconds": round(top_k, 4),
                "engine_seconds_per_query": round(top_k / args.queries, 4),
                "engine_windows_per_second": round(rows / top_k, 1),
                "decode_all_seconds": round(every, 4),
                "decode_all_windows_per_second": round(rows / every, 1),
                "speedup_vs_decode_all": round(every / top_k, 3),
                "peak_gpu_memory_gib": round(peak, 2) if peak is not None else None,
            }
        )
    )


if __name__ == "__main__":
    main()
