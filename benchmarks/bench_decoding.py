"""Decode-only throughput of sampled frames with one and several decoding workers. Prints JSON.

A synthetic H.264 video (moving gradient, `--seconds` long, `--width` x `--height` at `--fps`, a keyframe every
`--gop` frames) is written with PyAV, then sampled at `1 / --seconds-per-feature`:

- `sequential`: `iter_sampled_frames`, one process (today's path, FFmpeg's own decoder threads on);
- `workers_N`: `iter_sampled_frames_parallel` with a pool of N worker processes (started before timing) decoding the
  keyframe segments with one decoder thread each (`workers_1` is one such process: the baseline of
  `ratio_vs_1_worker`), with its ratio to `sequential` measured in the same run and a check that it yields the same
  indices and frames.
- `decoders_alone[N]`: N processes decoding their contiguous shares of the segments at the same time, with no
  consumer, against the first share decoded alone; `ratio` is how far N decoders scale on this machine by
  themselves, the ceiling of `ratio_vs_1_worker`.
- `with_image_processor` (with `--image-processor`): the same for decoding followed by CLIP's image processor
  (`CLIPImageProcessor()` defaults, 224 x 224), run in the process that decodes (the workers, for `workers_N`):
  how many processed frames per second the CPU side of an extraction can hand an encoder.
- `folder_of_short_videos` (with `--short-videos N`): N videos of `--short-seconds` each (one segment apiece, at the
  same size, rate and keyframe spacing), decoded one after the other in one process against one pool of workers for
  the whole folder (`iter_videos_sampled_frames_parallel`: the next videos decoded while one is consumed), with a
  check that every video yields the same indices and frames (`..._with_image_processor`: followed by the image
  processor, in the workers).
- `first_segment_memory`: the peak resident set of a fresh worker process decoding the first segment, its decoded
  and sampled frames and the sampled frames' RGB size.

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

import numpy as np

from rgnet_hf.synthetic.video_files import moving_gradient_frames, write_rgb_video


def write_video(path: Path, seconds: float, fps: int, width: int, height: int, gop: int) -> None:
    frames = moving_gradient_frames(seconds, fps, width, height)
    write_rgb_video(path, frames, fps=fps, size=(width, height), options={"preset": "veryfast", "g": str(gop)})


def _digest(frames) -> tuple[list[int], list[float]]:
    indices, sums = [], []
    for index, rgb in frames:
        indices.append(index)
        sums.append(float(rgb[..., ::7, ::7].sum()))
    return indices, sums


def _decode_share(path: str, segments: list, first_time: float, seconds_per_feature: float, first: int) -> float:
    """Seconds for one process to decode and sample `segments` (its share), frames taken out and dropped."""
    from rgnet_hf.video_decoding import _decode_segment, _take_frames

    start = time.perf_counter()
    for number, (begin, stop) in enumerate(segments, first):
        _take_frames(_decode_segment(path, begin, stop, first_time, seconds_per_feature, number == 0))
    return time.perf_counter() - start


def _segment_peak_rss(path: str, begin: int, stop: int | None, first_time: float, seconds_per_feature: float) -> dict:
    import resource

    from rgnet_hf.video_decoding import _decode_segment, _take_frames

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = _decode_segment(path, begin, stop, first_time, seconds_per_feature, True)
    decoded = result["num_decoded_frames"]
    frames = _take_frames(result)
    return {
        "rss_before_mb": round(before / 1024, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "decoded_frames": decoded,
        "sampled_frames": len(frames),
        "sampled_rgb_mb": round(sum(rgb.nbytes for _, _, rgb in frames) / 2**20, 1),
    }


def segment_memory(path: Path, seconds_per_feature: float) -> dict:
    """Peak resident set of a fresh worker process decoding the first segment, with the size of its sampled RGB
    frames (held in the worker, then in shared memory) for scale."""
    from rgnet_hf.video_decoding import MIN_SEGMENT_SECONDS, _keyframe_plan, _pool, _segments

    keyframes, first_time, time_base = _keyframe_plan(str(path))
    begin, stop = _segments(keyframes, time_base, first_time, MIN_SEGMENT_SECONDS)[0]
    pool = _pool(1)
    try:
        return pool.submit(_segment_peak_rss, str(path), begin, stop, first_time, seconds_per_feature).result()
    finally:
        pool.shutdown()


def decoder_scaling(path: Path, seconds_per_feature: float, workers: int) -> dict:
    """The decoders alone, without the parent consuming frames in order: `workers` processes each decode a
    contiguous share of the segments at once, against the first process's share decoded while the others idle.
    `ratio` = workers x alone / wall: the ceiling of `ratio_vs_1_worker` on this machine."""
    from rgnet_hf.video_decoding import MIN_SEGMENT_SECONDS, _keyframe_plan, _pool, _segments

    keyframes, first_time, time_base = _keyframe_plan(str(path))
    segments = _segments(keyframes, time_base, first_time, MIN_SEGMENT_SECONDS)
    size = -(-len(segments) // workers)
    starts = range(0, len(segments), size)
    shares = [(str(path), segments[i : i + size], first_time, seconds_per_feature, i) for i in starts]
    pool = _pool(workers)
    try:
        list(pool.map(abs, range(workers)))
        alone = pool.submit(_decode_share, *shares[0]).result()
        start = time.perf_counter()
        each = [future.result() for future in [pool.submit(_decode_share, *share) for share in shares]]
        wall = time.perf_counter() - start
    finally:
        pool.shutdown()
    return {
        "segments": len(segments),
        "first_share_alone_s": round(alone, 3),
        "each_share_at_once_s": [round(seconds, 3) for seconds in each],
        "wall_s": round(wall, 3),
        "ratio": round(len(shares) * alone / wall, 2),
    }


def throughput(path: Path, seconds_per_feature: float, worker_counts: list[int], transform) -> dict:
    """Sampled (and, with `transform`, transformed) frames per second: one process, then pools of each size."""
    from rgnet_hf.video_decoding import _pool, _transform_each, iter_sampled_frames, iter_sampled_frames_parallel

    start = time.perf_counter()
    frames = iter_sampled_frames(path, seconds_per_feature)
    reference = _digest(frames if transform is None else _transform_each(frames, transform))
    sequential_s = time.perf_counter() - start
    results = {
        "sequential": {
            "seconds": round(sequential_s, 3),
            "frames": len(reference[0]),
            "frames_per_s": round(len(reference[0]) / sequential_s, 1),
        }
    }
    for workers in worker_counts:
        pool = _pool(workers)
        # Start the processes (and, with a transform, import its libraries there) before timing.
        list(pool.map(abs, range(workers)))
        if transform is not None:
            list(pool.map(transform, [np.zeros((16, 16, 3), np.uint8)] * workers))
        start = time.perf_counter()
        digest = _digest(
            iter_sampled_frames_parallel(path, seconds_per_feature, workers=workers, executor=pool, transform=transform)
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
        for workers in worker_counts:
            entry = results[f"workers_{workers}"]
            entry["ratio_vs_1_worker"] = round(one["seconds"] / entry["seconds"], 2)
    return results


def folder_throughput(paths: list[Path], seconds_per_feature: float, worker_counts: list[int], transform) -> dict:
    """Sampled (and, with `transform`, transformed) frames per second over a folder of videos: one after the other
    in one process, then one pool of each size for the whole folder."""
    from rgnet_hf.video_decoding import _pool, _transform_each, iter_sampled_frames, iter_videos_sampled_frames_parallel

    def one(path):
        frames = iter_sampled_frames(path, seconds_per_feature)
        return _digest(frames if transform is None else _transform_each(frames, transform))

    start = time.perf_counter()
    reference = [one(path) for path in paths]
    sequential_s = time.perf_counter() - start
    frames = sum(len(indices) for indices, _ in reference)
    results = {
        "videos": len(paths),
        "sequential": {"seconds": round(sequential_s, 3), "frames_per_s": round(frames / sequential_s, 1)},
    }
    for workers in worker_counts:
        pool = _pool(workers)
        list(pool.map(abs, range(workers)))
        if transform is not None:
            list(pool.map(transform, [np.zeros((16, 16, 3), np.uint8)] * workers))
        start = time.perf_counter()
        digests = [
            _digest(video_frames)
            for _, video_frames, _ in iter_videos_sampled_frames_parallel(
                paths, seconds_per_feature, workers=workers, executor=pool, transform=transform
            )
        ]
        seconds = time.perf_counter() - start
        pool.shutdown()
        results[f"workers_{workers}"] = {
            "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 1),
            "ratio_vs_sequential": round(sequential_s / seconds, 2),
            "identical": digests == reference,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=250, help="frames between keyframes (x264's default)")
    parser.add_argument("--seconds-per-feature", type=float, default=0.2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--image-processor", action="store_true", help="also measure decoding followed by CLIP's image processor"
    )
    parser.add_argument("--short-videos", type=int, default=0, help="also measure a folder of this many short videos")
    parser.add_argument("--short-seconds", type=float, default=6.0, help="length of each short video")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.mp4"
        write_video(path, args.seconds, args.fps, args.width, args.height, args.gop)
        results = throughput(path, args.seconds_per_feature, args.workers, None)
        extra = {}
        if args.image_processor:
            from transformers import CLIPImageProcessor

            from rgnet_hf.video_text_encoders import PixelTransform

            transform = PixelTransform(CLIPImageProcessor())
            extra["with_image_processor"] = throughput(path, args.seconds_per_feature, args.workers, transform)
        if args.short_videos:
            shorts = [Path(folder) / f"short{number}.mp4" for number in range(args.short_videos)]
            for short in shorts:
                write_video(short, args.short_seconds, args.fps, args.width, args.height, args.gop)
            extra["folder_of_short_videos"] = folder_throughput(shorts, args.seconds_per_feature, args.workers, None)
            if args.image_processor:
                extra["folder_of_short_videos_with_image_processor"] = folder_throughput(
                    shorts, args.seconds_per_feature, args.workers, transform
                )
        scaling = {workers: decoder_scaling(path, args.seconds_per_feature, workers) for workers in args.workers}
        memory = segment_memory(path, args.seconds_per_feature)
    print(
        json.dumps(
            {
                "video": f"{args.seconds:g} s {args.width}x{args.height} h264 {args.fps} fps",
                "keyframe_every_frames": args.gop,
                "seconds_per_feature": args.seconds_per_feature,
                "sampled_frames": results["sequential"]["frames"],
                "cpu_count": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "results": results,
                **extra,
                "decoders_alone": scaling,
                "first_segment_memory": memory,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
