"""Speed of turning a video file into RGNet features, next to the time grounding then takes. Prints JSON.

A synthetic H.264 video (moving gradient, `--seconds` long, `--width` x `--height` at `--fps`) is written with PyAV,
then, on the CPU and on CUDA when available:

- `decode`: PyAV decoding and sampling at the feature rate alone (features per second of wall time);
- `encode_only`: the image encoder alone on the sampled frames, already through the image processor, in batches
  (the limit the extraction can reach);
- `image_processor` / `pixel_transform`: milliseconds per frame of the `CLIPImageProcessor` call and of the
  encoder's `PixelTransform` (the same steps without the call's overhead, which the extraction runs), and their
  largest difference (0: bit-identical);
- `sequential_extract`: decoding, the image processor and the encoder one after the other in one thread (baseline);
- `extract`: the whole extraction as `rgnet-hf extract` runs it (reading and the image processor in a background
  thread, ahead of the encoder);
- `decode_workers` (with `--decode-workers N ...`): the same with decoding and the image processor in N worker
  processes (`rgnet-hf extract --decode-workers N`), with the largest difference to the one-process features;
- `ground`: `RGNetGroundingEngine.ground` on the extracted features with one query (MAD preset, full size).

`*_video_hours_per_hour` give each stage's speed as hours of video per hour of wall time, and `bound` names the
slower of decoding and encoding (what limits the whole path). `--skip-cpu` measures CUDA only (the GPU check);
`--cpu-bfloat16` adds a CPU run in bfloat16. A bfloat16 run reports `cosine_to_float32_min` (its features against
the float32 run's on the same device) and `speedup_over_float32` (whole extraction, same run).

The image encoder is a CLIP with the ViT-B/32 architecture (`CLIPConfig()` defaults: 224 x 224, patch 32, 12 layers,
512-d embeddings) and the `CLIPImageProcessor` defaults, built offline with random weights: the speed of
`openai/clip-vit-base-patch32` without downloading it (`--encoder NAME` measures a real checkpoint instead).

    python benchmarks/bench_extraction.py --seconds 60
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rgnet_hf.synthetic.video_files import moving_gradient_frames, write_rgb_video


def write_video(path: Path, seconds: float, fps: int, width: int, height: int) -> None:
    frames = moving_gradient_frames(seconds, fps, width, height)
    write_rgb_video(path, frames, fps=fps, size=(width, height))


def build_encoder(name: str | None, device: str, dtype: torch.dtype | None, batch_size: int):
    from rgnet_hf.video_text_encoders import CLIPVideoTextEncoder, load_feature_encoder

    if name is not None:
        return load_feature_encoder(name, device=device, dtype=dtype, batch_size=batch_size)
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).to(device)
    if dtype is not None:
        model = model.to(dtype)
    return CLIPVideoTextEncoder(
        model, None, CLIPImageProcessor(), name="random CLIP ViT-B/32 architecture", batch_size=batch_size
    )


def measure(video: Path, device: str, dtype: torch.dtype | None, args) -> dict:
    from rgnet_hf import RGNetConfig, RGNetForVideoGrounding, RGNetGroundingEngine
    from rgnet_hf.video_decoding import iter_sampled_frames

    spf = args.seconds_per_feature
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    decoded = sum(1 for _ in iter_sampled_frames(video, spf))
    decode_s = time.perf_counter() - start

    encoder = build_encoder(args.encoder, device, dtype, args.batch_size)
    encoder.encode_video(video, spf, progress=False)  # warm-up (allocations, kernels)
    synchronize()

    # The image encoder alone: the distinct sampled frames, already through the image processor, in batches.
    distinct = []
    for _, frame in iter_sampled_frames(video, spf):
        if not distinct or frame is not distinct[-1]:
            distinct.append(frame)
    start = time.perf_counter()
    pixels = [encoder.image_processor(images=[frame], return_tensors="pt")["pixel_values"][0] for frame in distinct]
    processor_s = time.perf_counter() - start
    # The pixel transform the extraction runs (the processor's steps without its per-call overhead).
    transform = encoder.pixel_transform()
    start = time.perf_counter()
    transformed = [transform(frame) for frame in distinct]
    transform_s = time.perf_counter() - start
    transform_difference = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(transformed, pixels))
    del transformed
    batches = [torch.stack(pixels[i : i + args.batch_size]) for i in range(0, len(pixels), args.batch_size)]
    del pixels
    start = time.perf_counter()
    for batch in batches:
        encoder._encode_pixels(batch)
    synchronize()
    encode_only_s = time.perf_counter() - start
    del batches

    # Baseline: decode, image processor and encoder one after the other in one thread.
    start = time.perf_counter()
    batch, previous = [], None
    for _, frame in iter_sampled_frames(video, spf):
        if frame is not previous:
            previous = frame
            batch.append(encoder.image_processor(images=[frame], return_tensors="pt")["pixel_values"][0])
            if len(batch) == args.batch_size:
                encoder._encode_pixels(torch.stack(batch))
                batch = []
    if batch:
        encoder._encode_pixels(torch.stack(batch))
    synchronize()
    sequential_s = time.perf_counter() - start

    # The whole extraction as `rgnet-hf extract` runs it (reading and the image processor in a thread).
    start = time.perf_counter()
    encoded = encoder.encode_video(video, spf, progress=False)
    synchronize()
    extract_s = time.perf_counter() - start

    workers = {}
    for count in args.decode_workers:
        # Decoding and the image processor in `count` worker processes; the pool's start and the workers' imports
        # are a warm-up, as a long run pays them once.
        encoder.decode_workers = count
        encoder.encode_video(video, spf, progress=False)
        start = time.perf_counter()
        parallel = encoder.encode_video(video, spf, progress=False)
        synchronize()
        parallel_s = time.perf_counter() - start
        encoder._decode_pool.shutdown()
        encoder._decode_pool, encoder.decode_workers = None, 1
        workers[str(count)] = {
            "extract_s": round(parallel_s, 3),
            "extract_features_per_s": round(len(parallel.features) / parallel_s, 1),
            "extract_over_encode_only_throughput": round(encode_only_s / parallel_s, 3),
            "speedup_over_one_process_extract": round(extract_s / parallel_s, 3),
            "max_abs_difference_to_one_process": float(np.abs(parallel.features - encoded.features).max()),
        }

    torch.manual_seed(0)
    config = RGNetConfig.from_preset("mad", video_feature_size=encoder.video_feature_size)
    model = RGNetForVideoGrounding(config).to(device).eval()
    engine = RGNetGroundingEngine(model)
    features = torch.from_numpy(encoded.features)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.nn.functional.normalize(torch.randn(1, 12, config.text_feature_size, generator=generator), dim=-1)
    sentence = torch.randn(1, config.sentence_feature_size, generator=generator)
    engine.ground(features, tokens, sentence_features=sentence)
    synchronize()
    start = time.perf_counter()
    engine.ground(features, tokens, sentence_features=sentence)
    synchronize()
    ground_s = time.perf_counter() - start

    num_features = len(encoded.features)
    per_second = num_features / extract_s
    return {
        "device": device,
        "dtype": str(dtype or torch.float32).replace("torch.", ""),
        "features": num_features,
        "decode_s": round(decode_s, 3),
        "decode_features_per_s": round(decoded / decode_s, 1),
        "image_processor_ms_per_frame": round(1000 * processor_s / len(distinct), 2),
        "pixel_transform_ms_per_frame": round(1000 * transform_s / len(distinct), 2),
        "pixel_transform_direct": transform.direct,
        "pixel_transform_max_abs_difference_to_processor": transform_difference,
        "encode_only_s": round(encode_only_s, 3),
        "encode_only_features_per_s": round(len(distinct) / encode_only_s, 1),
        "sequential_extract_s": round(sequential_s, 3),
        "extract_s": round(extract_s, 3),
        "extract_features_per_s": round(per_second, 1),
        "extract_over_encode_only_throughput": round(encode_only_s / extract_s, 3),
        "extract_speedup_over_sequential": round(sequential_s / extract_s, 3),
        # decoding and the image processor in worker processes (`--decode-workers`)
        "decode_workers": workers,
        "video_seconds_per_wall_second": round(num_features * spf / extract_s, 2),
        # hours of video per hour of wall time, for each stage alone and for the whole path
        "decode_video_hours_per_hour": round(decoded * spf / decode_s, 1),
        "encode_only_video_hours_per_hour": round(len(distinct) * spf / encode_only_s, 1),
        "extract_video_hours_per_hour": round(num_features * spf / extract_s, 1),
        "bound": "decode" if decode_s > encode_only_s else "encode",
        "ground_s_one_query": round(ground_s, 3),
        "extract_over_ground": round(extract_s / ground_s, 1),
        "two_hour_movie_extract_min_estimate": round(2 * 3600 / spf / per_second / 60, 1),
        "_features": encoded.features,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the synthetic video")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--seconds-per-feature", type=float, default=0.2, help="0.2 = MAD's 5 features per second")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--encoder", default=None, help="a CLIP / SigLIP Hub id or folder (default: random B/32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--decode-workers",
        type=int,
        nargs="*",
        default=[],
        help="also measure the extraction with this many decoding workers (they run the image processor too)",
    )
    parser.add_argument("--skip-cpu", action="store_true", help="measure CUDA only (the GPU check)")
    parser.add_argument(
        "--cpu-bfloat16",
        action="store_true",
        help="also measure the CPU in bfloat16 (fast with AVX-512 BF16 or AMX), with its cosine to float32",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        video = Path(scratch) / "synthetic.mp4"
        write_video(video, args.seconds, args.fps, args.width, args.height)
        if not (args.skip_cpu and torch.cuda.is_available()):
            runs.append(measure(video, "cpu", None, args))
            if args.cpu_bfloat16:
                runs.append(measure(video, "cpu", torch.bfloat16, args))
        if torch.cuda.is_available():
            runs.append(measure(video, "cuda", None, args))
            runs.append(measure(video, "cuda", torch.bfloat16, args))
    # a reduced-precision run's features against the float32 run's on the same device
    reference = {run["device"]: run["_features"] for run in runs if run["dtype"] == "float32"}
    for run in runs:
        features = run.pop("_features")
        if run["dtype"] != "float32" and run["device"] in reference:
            exact = reference[run["device"]]
            cosine = (features * exact).sum(1) / (np.linalg.norm(features, axis=1) * np.linalg.norm(exact, axis=1))
            run["cosine_to_float32_min"] = round(float(cosine.min()), 6)
            run["speedup_over_float32"] = round(
                next(r for r in runs if r["device"] == run["device"] and r["dtype"] == "float32")["extract_s"]
                / run["extract_s"],
                2,
            )
    result = {
        "video": {"seconds": args.seconds, "fps": args.fps, "size": [args.width, args.height], "codec": "h264"},
        "seconds_per_feature": args.seconds_per_feature,
        "encoder": args.encoder or "random CLIP ViT-B/32 architecture",
        "batch_size": args.batch_size,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "runs": runs,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
