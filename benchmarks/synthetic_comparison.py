"""RGNet against a zero-shot cosine baseline and a two-stage (disjoint) pipeline on the synthetic benchmark.

    python benchmarks/synthetic_comparison.py --output outputs/comparison [--preset standard] [--epochs 6]

All three learned systems use the same architecture, data, number of epochs and batch size:
- RGNet: one model trained with all of its losses (grounding and the in-batch window-retrieval InfoNCE);
- two-stage: a window retriever trained with the retrieval loss alone, and a grounder trained with the grounding
  losses alone on positive windows; at inference the retriever ranks the windows and the grounder decodes the top-k
  (each stage gets the full budget, so the pipeline uses twice RGNet's training compute);
- zero-shot cosine: sliding-window proposals ranked by their cosine with the sentence feature.
Prints one JSON object with the test metrics of each system and writes `results.json` and `results.md`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rgnet_hf import RGNetForVideoGrounding
from rgnet_hf.apps.demo import DEMO_MODEL
from rgnet_hf.data import EvaluationVideoDataset
from rgnet_hf.evaluation import evaluate_model
from rgnet_hf.evaluation.baselines import evaluate_zero_shot
from rgnet_hf.synthetic.benchmark import (
    COMPARISON_MODEL,
    load_synthetic_mad,
    make_synthetic_mad,
    read_synthetic_config,
    synthetic_mad_paths,
)
from rgnet_hf.training import TrainingConfig, train

NO_GROUNDING = {
    "span_loss_coefficient": 0.0,
    "giou_loss_coefficient": 0.0,
    "label_loss_coefficient": 0.0,
    "saliency_loss_coefficient": 0.0,
}
SYSTEMS = {
    "rgnet": {},
    "retriever": NO_GROUNDING,
    "grounder": {"in_batch_window_pairs": False, "window_retrieval_loss_coefficient": 0.0},
}
KEYS = ["R@1 IoU=0.3", "R@1 IoU=0.5", "R@5 IoU=0.3", "R@5 IoU=0.5", "window R@1", "window R@5"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--data", default=None, help="benchmark folder (written if missing)")
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lr-drop-epoch", type=int, default=None, help="learning rate x 0.1 after it (epochs - 1)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--max-test-videos", type=int, default=None)
    parser.add_argument("--rgnet-only", action="store_true", help="train and evaluate RGNet alone (and zero-shot)")
    parser.add_argument(
        "--model",
        default="reduced",
        choices=["reduced", "demo"],
        help="reduced: hidden 128, 30-s windows (standard preset); demo: the model of rgnet-hf demo --features",
    )
    args = parser.parse_args()

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data) if args.data else output / "data"
    if not synthetic_mad_paths(data_dir)["config"].is_file():
        make_synthetic_mad(data_dir, args.preset)
    dataset = load_synthetic_mad(data_dir)
    model_config = dict(DEMO_MODEL) if args.model == "demo" else dict(COMPARISON_MODEL)
    synthetic = read_synthetic_config(data_dir)
    sizes = {
        "video_feature_size": synthetic.video_feature_size,
        "text_feature_size": synthetic.text_feature_size,
        "sentence_feature_size": synthetic.video_feature_size,
    }
    test_videos = EvaluationVideoDataset(dataset["test"], max_text_length=model_config.get("max_text_length", 25))
    results, timings = {}, {}

    models = {}
    systems = {"rgnet": SYSTEMS["rgnet"]} if args.rgnet_only else SYSTEMS
    for name, overrides in systems.items():
        started = time.perf_counter()
        recipe = dict(
            output_dir=str(output / name),
            preset="mad",
            model={**model_config, **sizes, **overrides},
            eval_split=None,
            learning_rate=args.learning_rate,
            num_epochs=args.epochs,
            lr_drop_epochs=[args.lr_drop_epoch or max(1, args.epochs - 1)],
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            log_with=None,
            seed=2020,
            resume=None,
        )
        summary = train(TrainingConfig.from_dict(recipe), dataset=dataset)
        timings[name] = {"train_seconds": round(time.perf_counter() - started, 1), "steps": summary["global_step"]}
        device = "cuda" if torch.cuda.is_available() else "cpu"
        models[name] = RGNetForVideoGrounding.from_pretrained(summary["final_model"]).to(device).eval()

    started = time.perf_counter()
    results["RGNet"] = evaluate_model(models["rgnet"], test_videos, max_videos=args.max_test_videos)
    timings["rgnet_eval_seconds"] = round(time.perf_counter() - started, 1)
    if not args.rgnet_only:
        results["two-stage (retriever + grounder)"] = evaluate_model(
            models["grounder"], test_videos, max_videos=args.max_test_videos, window_scorer=models["retriever"]
        )
    results["zero-shot cosine"] = evaluate_zero_shot(dataset["test"], "mad")

    lines = ["| system | " + " | ".join(KEYS) + " |", "|" + "---|" * (len(KEYS) + 1)]
    for name, metrics in results.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{100 * metrics[k]:.1f}" if k in metrics else "-" for k in KEYS) + " |"
        )
    table = "\n".join(lines)
    record = {
        "preset": args.preset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "model": model_config,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "results": results,
        "timings": timings,
    }
    (output / "results.json").write_text(json.dumps(record, indent=2, default=float))
    (output / "results.md").write_text(table + "\n")
    print(table)
    print(json.dumps(record, default=float))


if __name__ == "__main__":
    main()
