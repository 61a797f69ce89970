"""Decode-only throughput of sampled frames with one and several decoding workers. Prints JSON.

A synthetic H.264 video (moving gradient, `--seconds` long, `--width` x `--height` at `--fps`, a keyframe every
`--gop` frames) is written with PyAV, then sampled at `1 / --seconds-per-feature`:

- `sequential`: `iter_sampled_frames`, one process (today's path, FFmpeg's own decoder threads on);
- `workers_N`: `iter_sampled_frames_parallel` with a pool of N worker processes (started before timing) decoding the
  keyframe segments with one decoder thread each (`workers_1` is one such process: the baseline of
  `ratio_vs_1_worker`), with its ratio to `sequential` measured in the same run and a check that it yields the same
  indices and frames.

    python benchmarks/bench_decoding.py --seconds 120 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from rgnet_hf.synthetic.video_files import moving_gradient_frames, write_rgb_video


def write_video(path: Path, seconds: float, fps: int, width: int, height: int, gop: int) -> None:
    frames = moving_gradient_frames(seconds, fps, width, height)
    write_rgb_video(path, frames, fps=fps, size=(width, height), options={"preset": "veryfast", "g": str(gop)})


def _digest(frames) -> tuple[list[int], list[float]]:
    indices, sums = [], []
    for index, rgb in frames:
        indices.append(index)
        sums.append(float(rgb[::7, ::7].sum()))
    return indices, sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=250, help="frames between keyframes (x264's default)")
    parser.add_argument("--seconds-per-feature", type=float, default=0.2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from rgnet_hf.video_decoding import _pool, iter_sampled_frames, iter_sampled_frames_parallel

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.mp4"
        write_video(path, args.seconds, args.fps, args.width, args.height, args.gop)
        start = time.perf_counter()
        reference = _digest(iter_sampled_frames(path, args.seconds_per_feature))
        sequential_s = time.perf_counter() - start
        results = {
            "sequential": {
                "seconds": round(sequential_s, 3),
                "frames_per_s": round(len(reference[0]) / sequential_s, 1),
            }
        }
        for workers in args.workers:
            pool = _pool(workers)
            list(pool.map(abs, range(workers)))  # start the processes before timing
            start = time.perf_counter()
            digest = _digest(
                iter_sampled_frames_parallel(path, args.seconds_per_feature, workers=workers, executor=pool)
            )
            seconds = time.perf_counter() - start
            pool.shutdown()
            results[f"workers_{workers}"] = {
                "seconds": round(seconds, 3),
                "frames_per_s": round(len(digest[0]) / seconds, 1),
                "ratio_vs_sequential": round(sequential_s / seconds, 2),
                "identical": digest == reference,
            }
        one = results.get("workers_1")
        if one is not None:
            for workers in args.workers:
                entry = results[f"workers_{workers}"]
                entry["ratio_vs_1_worker"] = round(one["seconds"] / entry["seconds"], 2)
    print(
        json.dumps(
            {
                "video": f"{args.seconds:g} s {args.width}x{args.height} h264 {args.fps} fps",
                "keyframe_every_frames": args.gop,
                "seconds_per_feature": args.seconds_per_feature,
                "sampled_frames": len(reference[0]),
                "cpu_count": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
