"""Train RGNet with Accelerate.

    accelerate launch examples/train.py --config examples/configs/mad.yaml [--learning_rate 2e-4 --batch_size 4 ...]

Every field of the recipe (a YAML file mapping `rgnet_hf.training.TrainingConfig` fields) can be overridden on the
command line: `--field value` for scalars and lists (YAML syntax: `--lr_drop_epochs "[120, 170]"`), and
`--data.KEY value` / `--model.KEY value` for entries of the `data` and `model` sections.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import yaml

from rgnet_hf.apps.cli import shut_down_process_group
from rgnet_hf.training import NonFiniteTrainingError, TrainingConfig, train


def parse_config(argv: list[str] | None = None) -> TrainingConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="recipe YAML (examples/configs/*.yaml)")
    args, rest = parser.parse_known_args(argv)
    with open(args.config) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise SystemExit(
            f"error: {args.config}: a recipe maps TrainingConfig fields to values, got a {type(values).__name__}"
        )
    fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    if len(rest) % 2:
        raise SystemExit(f"overrides come in pairs (--name value); got {rest}")
    for flag, raw in zip(rest[::2], rest[1::2]):
        if not flag.startswith("--"):
            raise SystemExit(f"expected an option name, got {flag!r}")
        name = flag[2:]
        value = yaml.safe_load(raw)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "2e-4" (no dot) as a string
                value = float(raw)
            except ValueError:
                pass
        section, _, key = name.partition(".")
        if key and section in ("data", "model"):
            if not isinstance(values.setdefault(section, {}), dict):
                raise SystemExit(f"error: {args.config}: {section} must be a mapping to take {flag}")
            values[section][key] = value
        elif name in fields:
            values[name] = value
        else:
            raise SystemExit(f"unknown option {flag}; fields: {', '.join(sorted(fields))}")
    try:
        return TrainingConfig.from_dict(values)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    try:
        summary = train(config)
    except (NonFiniteTrainingError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "best_metrics"}, indent=2, default=float))
    # Under `accelerate launch` the processes meet once more and the process group goes before the interpreter
    # exits, so that no collective thread outlives its peers.
    shut_down_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
