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
        status = args.handler(args)
        shut_down_process_group()
        return status
    except (ValueError, KeyError, OSError) as error:
        # OSError: missing or unreadable files, and models transformers cannot find.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


def shut_down_process_group() -> None:
    """After a command that ran under `accelerate launch` (several processes): every process waits for the others,
    then the process group is destroyed. Left to the interpreter's exit, the collective backend's threads can abort a
    process whose peers have already gone ("terminate called without an active exception")."""
    distributed = sys.modules.get("torch.distributed")  # never imported here for a command that did not need it
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.barrier()
        distributed.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
