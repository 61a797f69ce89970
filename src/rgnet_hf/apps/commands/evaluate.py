"""`rgnet-hf evaluate`: a saved RGNet on a dataset split, the official Recall@K at IoU and mIoU, next to the zero-shot
baseline on the same queries; as a table or JSON."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate", help="score a saved RGNet on a dataset split (R@K at IoU, mIoU) next to the zero-shot baseline"
    )
    parser.add_argument("--model", required=True, help="a saved RGNet folder or Hub id")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--data", help="a dataset folder: prepared by `rgnet-hf prepare`, or saved by GroundingDatasetDict"
    )
    data.add_argument("--config", help="a training recipe (YAML) whose `data` section locates the dataset")
    parser.add_argument("--split", default="test", help="the split to evaluate (default: test)")
    parser.add_argument("--ks", default="1,5,10,50,100", help="K values of R@K, comma-separated")
    parser.add_argument("--iou-thresholds", default="0.1,0.3,0.5,0.7", help="IoU thresholds, comma-separated")
    parser.add_argument("--no-baseline", action="store_true", help="skip the zero-shot sentence-to-frame baseline")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1")
    parser.add_argument("--memory-budget-gib", type=float, default=2.0, help="memory the grounding engine may use")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--output", default=None, help="also write the report as JSON to this file")
    parser.set_defaults(handler=run)
    return parser


def _numbers(text: str, kind: type, option: str) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{option} is empty")
    return values


def _load_dataset(args: argparse.Namespace):
    from ...data import load_grounding_dataset
    from ...data.loaders import SIDECAR_NAME

    if args.config is not None:
        import yaml

        from ...training import load_data_from_spec

        with open(args.config, encoding="utf-8") as handle:
            recipe = yaml.safe_load(handle)
        if not isinstance(recipe, dict) or not isinstance(recipe.get("data"), dict):
            raise ValueError(f"{args.config}: the recipe has no `data` mapping that locates the dataset")
        return load_data_from_spec(recipe["data"])
    folder = Path(args.data)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {folder}: no such dataset folder")
    if (folder / "manifest.json").is_file():
        from ...data.prepared import load_prepared

        return load_prepared(folder)
    if (folder / SIDECAR_NAME).is_file():
        return load_grounding_dataset(folder)
    raise ValueError(
        f"--data {folder} is neither a folder written by `rgnet-hf prepare` nor one saved by "
        f"GroundingDatasetDict.save_to_disk (no {SIDECAR_NAME}); give a recipe with --config for MAD or Ego4D-NLQ"
    )


def run(args: argparse.Namespace) -> int:
    import json

    from transformers.utils import logging as transformers_logging

    from ...evaluation.report import evaluate_split, format_report_table
    from ...modeling_rgnet import RGNetForVideoGrounding
    from .common import check_device, looks_like_a_path

    transformers_logging.disable_progress_bar()
    ks = _numbers(args.ks, int, "--ks")
    iou_thresholds = _numbers(args.iou_thresholds, float, "--iou-thresholds")
    if args.memory_budget_gib <= 0:
        raise ValueError(f"--memory-budget-gib must be > 0, got {args.memory_budget_gib}")
    check_device(args.device)
    if looks_like_a_path(args.model) and not Path(args.model).is_dir():
        raise FileNotFoundError(f"--model {args.model}: no such model folder")
    dataset = _load_dataset(args)
    if args.split not in dataset:
        raise KeyError(f"--split {args.split!r} is not in the dataset; its splits: {', '.join(dataset)}")
    model = RGNetForVideoGrounding.from_pretrained(args.model)
    manifest = getattr(dataset, "manifest", None)
    if manifest is not None:
        from ...data.prepared import check_model_fits_manifest

        check_model_fits_manifest(model.config, manifest, model=f"--model {args.model}", data=str(args.data))
    if args.device:
        model = model.to(args.device)
    report = evaluate_split(
        model.eval(),
        dataset[args.split],
        ks=ks,
        iou_thresholds=iou_thresholds,
        baseline=not args.no_baseline,
        memory_budget_bytes=int(args.memory_budget_gib * 2**30),
    )
    report = {"model": args.model, "split": args.split, **report}
    if args.output:
        output = Path(args.output)
        partial = output.with_name(output.name + ".tmp")
        partial.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        partial.replace(output)  # a reader never sees half a report
    print(json.dumps(report, indent=2) if args.json else format_report_table(report))
    return 0
