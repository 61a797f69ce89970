"""`rgnet-hf demo`: prepare a corpus of video files, train and evaluate a small RGNet on it offline, ground a held-out
file and draw its timeline (`--features`: the feature-level demo)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="write a small corpus of video files with sentences, prepare it, train and evaluate a small RGNet on it "
        "and ground a held-out file (offline, CPU, a few minutes)",
    )
    parser.add_argument("--output", default="rgnet-demo", help="folder for the data, the model and the results")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus (or of the synthetic benchmark)")
    parser.add_argument(
        "--query",
        action="append",
        default=None,
        help="a sentence to ground in the held-out video (repeatable; default: its annotated sentences)",
    )
    parser.add_argument(
        "--features",
        action="store_true",
        help="run the feature-level demo instead: a synthetic benchmark in MAD's file format, no video files",
    )
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo, run_feature_demo

    if args.features:
        if args.query:
            raise SystemExit("rgnet-hf demo: --query needs the video demo; leave out --features")
        run_feature_demo(args.output, num_epochs=args.epochs, seed=args.seed)
    else:
        run_demo(args.output, num_epochs=args.epochs, seed=args.seed, queries=args.query)
    return 0
