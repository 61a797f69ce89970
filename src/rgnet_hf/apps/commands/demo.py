"""`rgnet-hf demo`: train and evaluate a small RGNet offline and draw its timeline."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="train and evaluate a small RGNet on a synthetic long-video benchmark (offline, CPU)"
    )
    parser.add_argument("--output", default="rgnet-demo", help="folder for the data, the model and the results")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic benchmark")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.output, num_epochs=args.epochs, seed=args.seed)
    return 0
