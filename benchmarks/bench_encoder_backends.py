"""The frame encoder's backends side by side: PyTorch float32, ONNX Runtime float32, ONNX Runtime int8. Prints JSON.

The image encoder is a CLIP with the ViT-B/32 architecture (`CLIPConfig()` defaults: 224 x 224, patch 32, 12 layers,
512-d embeddings) and the `CLIPImageProcessor` defaults, built offline with random weights (seed 0), as in
`bench_extraction.py`: the speed of `openai/clip-vit-base-patch32` without downloading it (`--encoder NAME` measures
a real checkpoint instead). The frames are `--frames` synthetic 320 x 240 images (moving gradients with a coloured
block that changes every second of a 5-features-per-second video), through the image processor once, then encoded in
batches of `--batch-size` by each backend:

- `frames_per_s`: the encoder alone (already processed frames), best of `--repeats` passes; the backends take turns
  within each pass, so a busy machine slows them alike; `speedup_over_pytorch` is the ratio to PyTorch float32's;
- `max_abs_diff`, `cosine_min` / `cosine_mean`: the features against PyTorch float32's, frame by frame;
- `export_s`: the one-time export (and quantisation) into a fresh cache folder;
- `grounding`: the frames' features grounded by a randomly initialised RGNet (MAD preset, seed 0) with `--queries`
  random queries, each backend's rankings against those of PyTorch's features: `top1_same_window` (fraction of
  queries whose best window is the same), `top1_iou_mean` (temporal IoU of the best moments), `top5_recall_iou05`
  (fraction of PyTorch's top-5 moments matched at IoU >= 0.5 in the backend's top 5) and `max_abs_window_score_diff`.
  A random model and random queries measure how much a backend moves the rankings, not their accuracy.

    python benchmarks/bench_encoder_backends.py --frames 160
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np
import torch

BACKENDS = ("pytorch", "onnx", "onnx-int8")


def synthetic_frames(count: int, width: int = 320, height: int = 240) -> list[np.ndarray]:
    """Frames of a 5-features-per-second video: moving gradients and a block whose colour changes every 5 frames."""
    generator = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    colour = generator.integers(0, 256, 3)
    for index in range(count):
        if index % 5 == 0:
            colour = generator.integers(0, 256, 3)
        image = np.stack([(x + 3 * index) % 256, (y + 2 * index) % 256, (x + y + index) % 256], -1)
        left = (7 * index) % (width - 80)
        image[60:160, left : left + 80] = colour
        frames.append(image.astype(np.uint8))
    return frames


def build_encoders(name: str | None, batch_size: int, cache: str) -> tuple[dict, dict]:
    from rgnet_hf.video_text_encoders import CLIPVideoTextEncoder, load_feature_encoder

    encoders, export_s = {}, {}
    if name is None:
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig()).eval()
    for backend in BACKENDS:
        start = time.perf_counter()
        if name is None:
            encoders[backend] = CLIPVideoTextEncoder(
                model,
                None,
                CLIPImageProcessor(),
                name="random CLIP ViT-B/32 architecture",
                batch_size=batch_size,
                backend=backend,
                onnx_cache_dir=cache,
            )
        else:
            encoders[backend] = load_feature_encoder(name, batch_size=batch_size, backend=backend, onnx_cache_dir=cache)
        export_s[backend] = time.perf_counter() - start
    return encoders, export_s


def iou(left: np.ndarray, right: np.ndarray) -> float:
    inter = max(0.0, min(left[1], right[1]) - max(left[0], right[0]))
    union = max(left[1], right[1]) - min(left[0], right[0])
    return inter / union if union > 0 else 0.0


def grounding_effect(features: dict[str, np.ndarray], num_queries: int, seconds_per_feature: float) -> dict:
    from rgnet_hf import RGNetConfig, RGNetForVideoGrounding, RGNetGroundingEngine

    size = features["pytorch"].shape[1]
    torch.manual_seed(0)
    config = RGNetConfig.from_preset("mad", video_feature_size=size, seconds_per_feature=seconds_per_feature)
    engine = RGNetGroundingEngine(RGNetForVideoGrounding(config).eval())
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(num_queries, 12, config.text_feature_size, generator=generator)
    tokens = torch.nn.functional.normalize(tokens, dim=-1)
    sentences = torch.nn.functional.normalize(torch.randn(num_queries, config.sentence_feature_size), dim=-1)
    results = {
        backend: engine.ground(torch.from_numpy(values), tokens, sentence_features=sentences)
        for backend, values in features.items()
    }
    reference = results["pytorch"]
    effect = {}
    for backend in BACKENDS[1:]:
        same_window, top1_iou, recall, score_diff = [], [], [], 0.0
        for ours, theirs in zip(results[backend], reference):
            same_window.append(float(ours.window_order[0] == theirs.window_order[0]))
            top1_iou.append(iou(ours.moments[0], theirs.moments[0]))
            found = [any(iou(moment, mine) >= 0.5 for mine in ours.moments[:5]) for moment in theirs.moments[:5]]
            recall.append(float(np.mean(found)))
            score_diff = max(score_diff, float(np.abs(ours.window_scores - theirs.window_scores).max()))
        effect[backend] = {
            "top1_same_window": round(float(np.mean(same_window)), 3),
            "top1_iou_mean": round(float(np.mean(top1_iou)), 4),
            "top5_recall_iou05": round(float(np.mean(recall)), 3),
            "max_abs_window_score_diff": float(f"{score_diff:.3g}"),
        }
    return {
        "model": "random RGNet, MAD preset (seed 0)",
        "queries": num_queries,
        "windows": int(len(reference[0].window_scores)),
        **effect,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=160, help="frames encoded (5 per second of video)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the frames per backend")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--encoder", default=None, help="a CLIP / SigLIP Hub id or folder (default: random B/32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seconds_per_feature = 0.2

    with tempfile.TemporaryDirectory() as cache:
        encoders, export_s = build_encoders(args.encoder, args.batch_size, cache)
        processor = encoders["pytorch"].image_processor
        pixels = processor(images=synthetic_frames(args.frames), return_tensors="pt")["pixel_values"]
        batches = list(torch.split(pixels, args.batch_size))
        for encoder in encoders.values():
            encoder._encode_pixels(batches[0])  # warm-up
        best = dict.fromkeys(BACKENDS, float("inf"))
        features = {}
        for _ in range(args.repeats):
            for backend, encoder in encoders.items():
                start = time.perf_counter()
                chunks = [encoder._encode_pixels(batch) for batch in batches]
                best[backend] = min(best[backend], time.perf_counter() - start)
                features[backend] = torch.cat(chunks).numpy()

    reference = torch.from_numpy(features["pytorch"])
    runs = []
    for backend in BACKENDS:
        values = torch.from_numpy(features[backend])
        cosine = torch.nn.functional.cosine_similarity(values, reference, dim=-1)
        runs.append(
            {
                "backend": backend,
                "frames_per_s": round(args.frames / best[backend], 2),
                "speedup_over_pytorch": round(best["pytorch"] / best[backend], 2),
                "max_abs_diff": float(f"{(values - reference).abs().max().item():.3g}"),
                "cosine_min": round(cosine.min().item(), 6),
                "cosine_mean": round(cosine.mean().item(), 6),
                "export_s": round(export_s[backend], 1),
            }
        )
    import onnxruntime

    result = {
        "encoder": args.encoder or "random CLIP ViT-B/32 architecture",
        "frames": args.frames,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "runs": runs,
        "grounding": grounding_effect(features, args.queries, seconds_per_feature),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
