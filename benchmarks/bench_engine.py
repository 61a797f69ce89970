"""Long-video inference speed and memory of the engine's modes, measured side by side in one run.

    python benchmarks/bench_engine.py [--preset mad] [--minutes 120] [--queries 8] [--device cuda] [--threads N]
        [--modes baseline,reference,exact,bf16] [--repeats 3] [--compile]

Modes (same random weights, same random features):
    reference  eager attention, float32, every (query, window) row through the whole model (the reference path);
    baseline   the same rows with the sdpa attention: the engine as it was before the shared video work;
    exact      the default engine: sdpa, float32, query-independent work once per video, retrieval-only scoring;
    bf16       the exact mode's engine on a bfloat16 model (on CUDA also TF32 matmuls for what stays float32);
    fp16       the exact mode's engine on a float16 model (closer to float32 than bf16: see bench_fast_mode_accuracy);
    bf16_rescored, fp16_rescored
               a bfloat16 / float16 copy scores every window, the float32 model re-scores the best top-k + 10 and
               decodes the best top-k (`RGNetGroundingEngine.with_reduced_precision_scoring`): float32's moments;
    compile    the exact mode with `torch.compile` (only with --compile).

Repeats are interleaved (mode after mode) so that a busy machine slows every mode alike; the best repeat counts.
Prints one JSON object: per mode windows/s ((query, window) rows per second), seconds per query, CPU seconds (the
process's CPU time, less sensitive to other load than wall time), peak memory (GPU: allocated; CPU: resident set
growth during the call), the largest difference of the window scores and of the fused rankings to the reference,
whether the window orders agree, and the ratio of windows/s to the baseline.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import numpy as np
import torch

from rgnet_hf import RGNetConfig, RGNetForVideoGrounding, RGNetGroundingEngine
from rgnet_hf.evaluation.resources import PeakResidentMemory

MODES = ("reference", "baseline", "exact", "bf16", "fp16", "bf16_rescored", "fp16_rescored", "compile")
REDUCED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def build_engines(config: RGNetConfig, modes: list[str], device: torch.device, budget: int) -> dict:
    torch.manual_seed(0)
    base = RGNetForVideoGrounding(copy.deepcopy(config)).eval().to(device)
    engines = {}
    for mode in modes:
        model = RGNetForVideoGrounding(copy.deepcopy(config)).eval()
        model.load_state_dict(base.state_dict())
        model.set_attn_implementation("eager" if mode == "reference" else "sdpa")
        if mode.endswith("_rescored"):
            engines[mode] = RGNetGroundingEngine.with_reduced_precision_scoring(
                model.to(device), REDUCED_DTYPES[mode.split("_")[0]], memory_budget_bytes=budget
            )
            continue
        model = model.to(device=device, dtype=REDUCED_DTYPES.get(mode, torch.float32))
        engines[mode] = RGNetGroundingEngine(
            model,
            memory_budget_bytes=budget,
            share_video_work=mode not in ("reference", "baseline"),
            compile=mode == "compile",
        )
    return engines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mad", choices=RGNetConfig.preset_names())
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--modes", default="reference,baseline,exact,bf16")
    parser.add_argument("--compile", action="store_true", help="add the compile mode")
    parser.add_argument("--memory-budget-gib", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # only the float32 leftovers of the bf16 mode; exact modes below
    modes = [m for m in args.modes.split(",") if m] + (["compile"] if args.compile else [])
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    config = RGNetConfig.from_preset(args.preset)
    engines = build_engines(config, modes, device, int(args.memory_budget_gib * 2**30))

    generator = torch.Generator().manual_seed(1)
    num_frames = int(args.minutes * 60 / config.seconds_per_feature)
    video = torch.randn(num_frames, config.video_feature_size, generator=generator)
    text = torch.randn(args.queries, config.max_text_length, config.text_feature_size, generator=generator)
    text = torch.nn.functional.normalize(text, dim=-1)
    sentence = torch.nn.functional.normalize(
        torch.randn(args.queries, config.sentence_feature_size, generator=generator), dim=-1
    )
    if device.type == "cuda":  # device-resident inputs, as in a serving loop
        video, text, sentence = video.to(device), text.to(device), sentence.to(device)

    def run(mode: str):
        engine = engines[mode]
        torch.backends.cuda.matmul.allow_tf32 = mode == "bf16"  # the rescored modes' float32 work stays exact
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        wall, cpu = time.perf_counter(), time.process_time()
        with PeakResidentMemory() as memory:
            results = engine.ground(video, text, sentence_features=sentence)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else memory.peak
        return results, wall, cpu, peak

    for mode in modes:  # warm-up (and compilation)
        run(mode)
    measured = {mode: {"wall": [], "cpu": [], "peak": []} for mode in modes}
    outputs = {}
    for _ in range(args.repeats):
        for mode in modes:
            outputs[mode], wall, cpu, peak = run(mode)
            measured[mode]["wall"].append(wall)
            measured[mode]["cpu"].append(cpu)
            measured[mode]["peak"].append(peak)

    num_windows = len(outputs[modes[0]][0].window_order)
    rows = num_windows * args.queries
    report = {
        "benchmark": "engine",
        "device": _device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__,
        "preset": args.preset,
        "video_minutes": args.minutes,
        "num_frames": num_frames,
        "num_windows": num_windows,
        "queries": args.queries,
        "top_k_windows": config.top_k_windows,
        "repeats": args.repeats,
        "modes": {},
    }
    reference = outputs.get("reference")
    for mode in modes:
        wall, cpu = min(measured[mode]["wall"]), min(measured[mode]["cpu"])
        entry = {
            "windows_per_second": round(rows / wall, 2),
            "seconds_per_query": round(wall / args.queries, 4),
            "seconds_best": round(wall, 4),
            "seconds_median": round(float(np.median(measured[mode]["wall"])), 4),
            "cpu_seconds_best": round(cpu, 4),
            "peak_memory_mib": round(max(measured[mode]["peak"]) / 2**20, 1),
        }
        if reference is not None:
            entry["max_window_score_diff"] = float(
                max(np.abs(a.window_scores - b.window_scores).max() for a, b in zip(reference, outputs[mode]))
            )
            entry["max_fused_ranking_diff"] = float(
                max(
                    np.abs(a.rankings["fused"] - b.rankings["fused"]).max()
                    if a.rankings["fused"].shape == b.rankings["fused"].shape
                    else float("inf")
                    for a, b in zip(reference, outputs[mode])
                )
            )
            entry["window_orders_equal"] = all(
                np.array_equal(a.window_order, b.window_order) for a, b in zip(reference, outputs[mode])
            )
            entry["top1_window_equal"] = float(
                np.mean([a.window_order[0] == b.window_order[0] for a, b in zip(reference, outputs[mode])])
            )
        report["modes"][mode] = entry
    if "baseline" in modes:
        base_wall = min(measured["baseline"]["wall"])
        base_cpu = min(measured["baseline"]["cpu"])
        for mode in modes:
            report["modes"][mode]["speedup_vs_baseline"] = round(base_wall / min(measured[mode]["wall"]), 3)
            report["modes"][mode]["cpu_speedup_vs_baseline"] = round(base_cpu / min(measured[mode]["cpu"]), 3)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
