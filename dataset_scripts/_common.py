"""Shared command-line plumbing of the dataset scripts: argument helpers, summary printing, saving, pushing."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rgnet_hf.data import GroundingDatasetDict, format_summary, summarize


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True, type=Path, help="where save_to_disk writes the dataset")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also push the rows (no features) to this dataset repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.add_argument(
        "--on-missing-features",
        choices=["raise", "drop"],
        default="raise",
        help="queries whose features are missing: fail (default) or drop them and list them in the report",
    )
    parser.add_argument(
        "--no-training-filters", action="store_true", help="keep every training query (no official filter)"
    )


def split_paths(values: list[str] | None) -> str | dict[str, str] | None:
    """`["PATH"]` -> "PATH"; `["train=A", "validation=B"]` -> {"train": "A", "validation": "B"}."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    mapping = {}
    for value in values:
        split, separator, path = value.partition("=")
        if not separator or not split or not path:
            raise SystemExit(f"expected SPLIT=PATH, got {value!r}")
        mapping[split] = path
    return mapping


def finish(dataset: GroundingDatasetDict, args: argparse.Namespace) -> dict:
    """Prints the report and the summary, saves the dataset (+ summary.json), pushes it if asked."""
    summary = summarize(dataset)
    print(dataset.report)
    print()
    print(format_summary(summary))
    dataset.save_to_disk(args.output_dir)
    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"\nsaved to {args.output_dir} (rows + rgnet_data.json; features stay where they are)")
    print(f"load it back with: rgnet_hf.data.load_grounding_dataset({str(args.output_dir)!r})")
    if args.push_to_hub:
        dataset.push_to_hub(args.push_to_hub, private=args.private)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return summary


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
