"""Evaluate a saved RGNet on a dataset split with the official metric, data-parallel across processes.

    accelerate launch examples/evaluate.py --model outputs/mad/best --config examples/configs/mad.yaml \
        [--split test] [--output metrics.json]

Videos are split across processes with balanced work (windows x queries); the metrics equal a one-process run's.
The printed and written metrics include `throughput`: windows (x queries) per second of each process and overall.
"""

from __future__ import annotations

import argparse
import json

import yaml
from accelerate import Accelerator

from rgnet_hf import RGNetForVideoGrounding
from rgnet_hf.data import EvaluationVideoDataset, check_model_fits_manifest
from rgnet_hf.evaluation import evaluate_model
from rgnet_hf.training import load_data_from_spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved RGNet folder")
    parser.add_argument("--config", required=True, help="recipe YAML whose `data` section locates the dataset")
    parser.add_argument("--split", default=None, help="split to evaluate (default: the recipe's eval_split)")
    parser.add_argument("--max-videos", type=int, default=None)
    parser.add_argument("--memory-budget-gib", type=float, default=2.0)
    parser.add_argument("--output", default=None, help="write the metrics as JSON here")
    args = parser.parse_args(argv)
    with open(args.config) as handle:
        recipe = yaml.safe_load(handle)
    split = args.split or recipe.get("eval_split", "validation")
    accelerator = Accelerator()
    model = RGNetForVideoGrounding.from_pretrained(args.model).to(accelerator.device).eval()
    dataset = load_data_from_spec(recipe["data"])
    if getattr(dataset, "manifest", None) is not None:
        # A prepared folder of another encoder or rate would be read at wrong times: refused.
        check_model_fits_manifest(model.config, dataset.manifest, f"--model {args.model}", dataset.manifest_path)
    videos = EvaluationVideoDataset(dataset[split], max_text_length=model.config.max_text_length)
    throughput: dict = {}
    metrics = evaluate_model(
        model, videos, accelerator, int(args.memory_budget_gib * 2**30), args.max_videos, throughput=throughput
    )
    if accelerator.is_main_process:
        width = max(len(k) for k in metrics)
        for key, value in metrics.items():
            print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
        for shard in throughput["per_process"]:
            print(
                f"process {shard['process']}: {shard['videos']} videos, {shard['windows']} windows in "
                f"{shard['seconds']:.2f} s, {shard['windows_per_second']:.1f} windows/s"
            )
        print(f"windows/s (all processes): {throughput['windows_per_second']:.1f}")
        metrics = {**metrics, "throughput": throughput}
        if args.output:
            with open(args.output, "w") as handle:
                json.dump(metrics, handle, indent=2)
    # Every process waits for the main one's report, then the process group is shut down before the interpreter
    # exits: left to the exit, the collective backend's threads could abort a process after its peers had gone.
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
