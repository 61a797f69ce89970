"""How long `rgnet-hf` takes to answer `--help`, next to `python -c "import torch"` in the same run. Prints JSON.

Each command runs in a fresh interpreter (`sys.executable`), `--repeats` times, taking turns so that a busy machine
slows them alike; the figures are the best and the median wall time of each. `ratio_to_import_torch` is the median
against `import torch`'s median: below 1 means the command answers before torch could even be imported.

- `import torch`, `import rgnet_hf` (lazy: no torch), `import rgnet_hf; rgnet_hf.RGNetModel` (the first use of a
  model class imports torch and transformers' modeling);
- `rgnet-hf --help` and `rgnet-hf SUB --help` for every sub-command.

    python benchmarks/bench_cli_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time


def _commands() -> dict[str, list[str]]:
    from rgnet_hf.apps.cli import COMMANDS

    python = [sys.executable]
    commands = {
        "import torch": python + ["-c", "import torch"],
        "import rgnet_hf": python + ["-c", "import rgnet_hf"],
        "rgnet_hf.RGNetModel": python + ["-c", "import rgnet_hf; rgnet_hf.RGNetModel"],
        "rgnet-hf --help": python + ["-m", "rgnet_hf.apps.cli", "--help"],
    }
    for name in COMMANDS:
        commands[f"rgnet-hf {name} --help"] = python + ["-m", "rgnet_hf.apps.cli", name, "--help"]
    return commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    commands = _commands()
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, argv in commands.items():
            start = time.perf_counter()
            result = subprocess.run(argv, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if result.returncode != 0:
                raise SystemExit(f"{name!r} failed ({result.returncode}): {result.stderr[-2000:]}")
            times[name].append(elapsed)

    torch_median = statistics.median(times["import torch"])
    runs = [
        {
            "command": name,
            "best_s": round(min(values), 3),
            "median_s": round(statistics.median(values), 3),
            "ratio_to_import_torch": round(statistics.median(values) / torch_median, 3),
        }
        for name, values in times.items()
    ]
    print(
        json.dumps(
            {"python": platform.python_version(), "machine": platform.machine(), "repeats": args.repeats, "runs": runs},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
