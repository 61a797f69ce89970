#!/usr/bin/env python
"""Write the synthetic long-video benchmark in the official MAD layout, load it back with `load_mad` and summarise it.

The benchmark (see docs/synthetic_benchmark.md) is written as a MAD release:

    OUTPUT/annotations/MAD_{train,val,test}.json
    OUTPUT/features/CLIP_B32_frames_features_5fps.h5
    OUTPUT/features/CLIP_B32_language_tokens_features.h5
    OUTPUT/features/CLIP_B32_language_features_MAD_{train,val,test,all}.h5
    OUTPUT/synthetic_benchmark.json                            (the parameters)
    OUTPUT/summary.json                                        (what this script prints)

Examples:
    python dataset_scripts/make_synthetic_benchmark.py --preset standard --output /data/rgnet/synthetic_standard
    python dataset_scripts/make_synthetic_benchmark.py --preset demo --output /tmp/demo --seed 1 --zero-shot test
    python dataset_scripts/make_synthetic_benchmark.py --preset standard --output /tmp/hard \\
        --set signal_amplitude=0.4 noise=0.5
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
import time
from pathlib import Path

from _common import setup_logging

from rgnet_hf.data import format_summary, summarize
from rgnet_hf.synthetic.benchmark import (
    SYNTHETIC_PRESETS,
    SyntheticMADConfig,
    load_synthetic_mad,
    make_synthetic_mad,
)

# Parameters with their own option; every field of SyntheticMADConfig can also be set with --set NAME=VALUE.
_OPTIONS = {
    "num_videos": int,
    "queries_per_video": int,
    "video_feature_size": int,
    "text_feature_size": int,
    "signal_amplitude": float,
    "distractors_per_query": int,
    "distractor_similarity": float,
    "sentence_alignment": float,
    "noise": float,
}


def _minutes(value: str) -> float | tuple[float, float]:
    """`"20"` -> 20.0; `"20,30"` -> (20.0, 30.0)."""
    parts = [float(part) for part in value.split(",")]
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise argparse.ArgumentTypeError(f"expected MINUTES or MIN,MAX, got {value!r}")


def _assignment(value: str) -> tuple[str, object]:
    name, separator, raw = value.partition("=")
    fields = {field.name for field in dataclasses.fields(SyntheticMADConfig)}
    if not separator or name not in fields:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {sorted(fields)}, got {value!r}")
    try:
        parsed = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        parsed = raw  # a plain string, e.g. dtype=float16
    return name, parsed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(SYNTHETIC_PRESETS), default="standard")
    parser.add_argument("--output", required=True, type=Path, help="folder of the benchmark (the MAD release root)")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    parser.add_argument("--video-minutes", type=_minutes, help="video length in minutes, or MIN,MAX")
    for name, kind in _OPTIONS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, dest=name)
    parser.add_argument(
        "--set",
        nargs="+",
        type=_assignment,
        default=[],
        metavar="NAME=VALUE",
        help='any other parameter, e.g. --set noise=0.5 \'splits={"train": 8, "test": 2}\'',
    )
    parser.add_argument(
        "--zero-shot",
        nargs="*",
        choices=["train", "validation", "test"],
        help="also evaluate the zero-shot cosine baseline on these splits (default when given alone: test)",
    )
    args = parser.parse_args(argv)

    overrides: dict = dict(args.set)
    for name in ("seed", "video_minutes", *_OPTIONS):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    try:
        config = SyntheticMADConfig.from_preset(args.preset, **overrides)
    except (TypeError, ValueError) as error:
        parser.error(str(error))

    setup_logging()
    started = time.perf_counter()
    make_synthetic_mad(args.output, config)
    elapsed = time.perf_counter() - started
    dataset = load_synthetic_mad(args.output)
    summary = summarize(dataset)
    print(
        f"synthetic benchmark (preset {args.preset!r}, seed {config.seed}) written in {elapsed:.1f} s to {args.output}"
    )
    print(
        f"features: video {config.video_feature_size}-d at {config.seconds_per_feature} s per feature, text "
        f"{config.text_feature_size}-d tokens, sentence {config.video_feature_size}-d"
    )
    print()
    print(format_summary(summary))
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")

    if args.zero_shot is not None:
        from rgnet_hf.evaluation.baselines import evaluate_zero_shot

        print()
        for split in args.zero_shot or ["test"]:
            metrics = evaluate_zero_shot(dataset[split])
            values = "  ".join(
                f"{key} {100 * metrics[key]:.2f}"
                for key in ("R@1 IoU=0.3", "R@1 IoU=0.5", "R@5 IoU=0.3", "R@5 IoU=0.5")
            )
            print(f"zero-shot cosine baseline, {split} ({metrics['num_queries']} queries): {values}")
    print(f"\nload it with: rgnet_hf.synthetic.benchmark.load_synthetic_mad({str(args.output)!r})")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
