#!/usr/bin/env python
"""Write a small synthetic release in an official layout, to try the build scripts without the real data.

    python dataset_scripts/make_mini_release.py --kind mad --output-dir /tmp/mini_mad
    python dataset_scripts/make_mini_release.py --kind ego4d --output-dir /tmp/mini_ego4d
    python dataset_scripts/make_mini_release.py --kind cone-ego4d --output-dir /tmp/mini_cone_ego4d

The data are random; the layout, the field names and the oddities of the real files are not
(see rgnet_hf.synthetic.mini_releases).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rgnet_hf.synthetic.mini_releases import make_cone_release, make_ego4d_release, make_mad_release


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["mad", "ego4d", "cone-mad", "cone-ego4d"], required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.kind == "mad":
        paths = make_mad_release(args.output_dir, seed=args.seed)
    elif args.kind == "ego4d":
        paths = make_ego4d_release(args.output_dir, seed=args.seed)
    else:
        paths = make_cone_release(args.output_dir, args.kind.split("-")[1], seed=args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])
