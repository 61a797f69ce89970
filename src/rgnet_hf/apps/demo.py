"""`rgnet-hf demo`: see RGNet learn, offline, on two CPU cores in a few minutes.

It writes a small synthetic long-video benchmark in MAD's file format, trains a small RGNet on it with the real
training loop, evaluates it with the real metric next to the zero-shot cosine baseline, grounds the queries of a test
video, and writes a timeline picture and the metric table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

# A small RGNet for the 64-d features of the "demo" benchmark: windows of 64 frames (12.8 s at 5 fps).
DEMO_MODEL = {
    "video_feature_size": 64,
    "text_feature_size": 64,
    "sentence_feature_size": 64,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "window_length": 64,
    "max_text_length": 10,
    "num_decoder_layers": 3,
    "input_dropout": 0.1,
    "top_k_windows": 10,
}

DEMO_TRAINING = {
    "preset": "mad",
    "learning_rate": 1e-3,
    "lr_drop_epochs": [15],
    "num_epochs": 18,
    "batch_size": 8,
    "num_workers": 0,
    "eval_every_epochs": 0,
    "log_with": None,
    "log_every_steps": 10,
    "seed": 2020,
    "resume": None,
}


def _table(rows: dict[str, dict[str, float]], keys: list[str]) -> str:
    header = "| method | " + " | ".join(keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 1)]
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * metrics[k]:.1f}" for k in keys) + " |")
    return "\n".join(lines)


def run_demo(
    output_dir: str | Path = "rgnet-demo", num_epochs: int | None = None, seed: int = 0, num_queries_shown: int = 6
) -> dict[str, Any]:
    """Run the demo; returns the paths of the picture and the table and the metrics."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    from ..data import EvaluationVideoDataset
    from ..evaluation import evaluate_model
    from ..evaluation.baselines import evaluate_zero_shot
    from ..inference_rgnet import RGNetGroundingEngine
    from ..modeling_rgnet import RGNetForVideoGrounding
    from ..synthetic.benchmark import load_synthetic_mad, make_synthetic_mad
    from ..training import TrainingConfig, train
    from .timeline import plot_timeline

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    print(f"[1/5] Writing the synthetic benchmark (MAD file format) to {output_dir / 'data'}")
    make_synthetic_mad(output_dir / "data", "demo", seed=seed)
    dataset = load_synthetic_mad(output_dir / "data")
    print("      " + ", ".join(f"{name}: {len(split)} queries" for name, split in dataset.items()))

    recipe = dict(DEMO_TRAINING, model=dict(DEMO_MODEL), output_dir=str(output_dir / "run"), eval_split=None)
    if num_epochs is not None:
        recipe["num_epochs"] = num_epochs
    print(f"[2/5] Training a small RGNet ({recipe['num_epochs']} epochs) with rgnet_hf.training.train")
    summary = train(TrainingConfig.from_dict(recipe), dataset=dataset)
    model_dir = summary["best_model"] or summary["final_model"]
    model = RGNetForVideoGrounding.from_pretrained(model_dir).eval()

    print("[3/5] Evaluating on the test split (the official Recall@K at IoU)")
    test_videos = EvaluationVideoDataset(dataset["test"], max_text_length=model.config.max_text_length)
    rgnet_metrics = evaluate_model(model, test_videos)
    zero_shot_metrics = evaluate_zero_shot(dataset["test"], "mad")
    keys = ["R@1 IoU=0.3", "R@1 IoU=0.5", "R@5 IoU=0.3", "R@5 IoU=0.5"]
    table = _table({"RGNet (trained in this demo)": rgnet_metrics, "zero-shot cosine": zero_shot_metrics}, keys)
    table_path = output_dir / "metrics.md"
    table_path.write_text(
        f"Test split of the synthetic demo benchmark ({rgnet_metrics['num_queries']} queries), in %.\n\n{table}\n"
    )
    with open(output_dir / "metrics.json", "w") as handle:
        json.dump(
            {"rgnet": rgnet_metrics, "zero_shot_cosine": zero_shot_metrics, "training": summary},
            handle,
            indent=2,
            default=float,
        )

    print("[4/5] Grounding the queries of a test video")
    video = test_videos[0]
    shown = slice(0, num_queries_shown)
    engine = RGNetGroundingEngine(model)
    text = list(video["text_features"][shown])
    results = engine.ground(video["video_features"], text, sentence_features=video["sentence_features"][shown])
    picture = plot_timeline(
        output_dir / "timeline.png",
        video["duration"],
        [r.moments for r in results],
        ground_truth=video["timestamps"][shown],
        labels=video["queries"][shown],
        scores=[r.scores for r in results],
        title=f"{video['video_id']}: true moments (green) and RGNet's top-3 predictions (orange)",
    )
    for query, result, truth in zip(video["queries"][shown], results, video["timestamps"][shown]):
        best = result.moments[0]
        print(
            f"      {query[:48]:<48} true [{truth[0]:7.1f}, {truth[1]:7.1f}] s   "
            f"predicted [{best[0]:7.1f}, {best[1]:7.1f}] s"
        )

    print(f"[5/5] Done in {time.perf_counter() - started:.0f} s.\n\n{table}\n")
    print(f"Timeline picture: {picture}")
    print(f"Metric table:     {table_path}")
    print(f"Trained model:    {model_dir}  (rgnet-hf ground --model {model_dir} ...)")
    return {
        "picture": str(picture),
        "table": str(table_path),
        "rgnet": rgnet_metrics,
        "zero_shot_cosine": zero_shot_metrics,
        "model": model_dir,
    }


__all__ = ["run_demo", "DEMO_MODEL", "DEMO_TRAINING"]
