"""`rgnet-hf convert`: an official RGNet checkpoint into a model folder with numerically identical outputs."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("convert", help="convert an official RGNet checkpoint")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--preset", default=None, choices=["mad", "ego4d", "ego4d_pretrain"])
    parser.add_argument("--official-batch-mask", action="store_true")
    parser.add_argument("--force", action="store_true", help="replace an existing, non-empty --output folder")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ...hub.convert_original_checkpoint import main as convert_main

    forwarded = ["--checkpoint", args.checkpoint, "--output", args.output]
    if args.preset:
        forwarded += ["--preset", args.preset]
    if args.official_batch_mask:
        forwarded.append("--official-batch-mask")
    if args.force:
        forwarded.append("--force")
    return convert_main(forwarded)
