"""`rgnet-hf` command line. Each sub-command lives in `rgnet_hf.apps.commands.<name>` with `add_parser` and `run`;
building the parser imports neither torch nor transformers (`import rgnet_hf` is lazy too), so `--help` answers at
once and each command imports what it needs in `run`."""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-commands, in the order `rgnet-hf --help` lists them.
COMMANDS = ("ground", "extract", "prepare", "evaluate", "demo", "convert", "app", "index", "search")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rgnet-hf", description="RGNet long-video temporal grounding")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, KeyError, OSError) as error:
        # OSError: missing or unreadable files, and models transformers cannot find.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
