#!/usr/bin/env python
"""Build the MAD query dataset from the official MAD release.

Expects the release as MAD's downloader leaves it:

    RELEASE/annotations/MAD_{train,val,test}.json
    RELEASE/features/CLIP_B32_frames_features_5fps.h5          (or CLIP_L14_..., or the old CLIP_frames_...)
    RELEASE/features/CLIP_B32_language_tokens_features.h5
    RELEASE/features/CLIP_B32_language_features_MAD_test.h5    (optional, test sentence features)

Example:
    python dataset_scripts/build_mad.py --release-dir /data/MAD --output-dir /data/rgnet/mad
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import add_output_arguments, finish, setup_logging

from rgnet_hf.data import load_mad


def _first_existing(*paths: Path) -> Path | None:
    return next((path for path in paths if path.exists()), None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release-dir", type=Path, help="root of the MAD release (annotations/ and features/)")
    parser.add_argument("--model", choices=["B32", "L14"], default="B32", help="CLIP features to use (default B32)")
    parser.add_argument("--annotations-dir", type=Path, help="folder of MAD_{train,val,test}.json")
    parser.add_argument("--video-features", type=Path, help="frame-feature HDF5 file (5 fps)")
    parser.add_argument("--text-features", type=Path, help="token-feature HDF5 file (or a CONE text lmdb)")
    parser.add_argument("--sentence-features", type=Path, help="test sentence-feature HDF5 file")
    parser.add_argument("--splits", nargs="+", choices=["train", "validation", "test"], help="default: all present")
    add_output_arguments(parser)
    args = parser.parse_args(argv)

    release = args.release_dir
    features = release / "features" if release else None
    annotations_dir = args.annotations_dir or (release / "annotations" if release else None)
    video = args.video_features or (
        features
        and _first_existing(
            features / f"CLIP_{args.model}_frames_features_5fps.h5",
            *([features / "CLIP_frames_features_5fps.h5"] if args.model == "B32" else []),
        )
    )
    text = args.text_features or (
        features
        and _first_existing(
            features / f"CLIP_{args.model}_language_tokens_features.h5",
            *([features / "CLIP_language_tokens_features.h5"] if args.model == "B32" else []),
        )
    )
    sentence = args.sentence_features or (
        features
        and args.model == "B32"
        and _first_existing(
            features / "CLIP_B32_language_features_MAD_test.h5", features / "CLIP_language_features_MAD_test.h5"
        )
    )
    for name, value in (("annotations dir", annotations_dir), ("video features", video), ("text features", text)):
        if not value:
            parser.error(f"cannot find the {name}: pass --release-dir or the explicit path")

    setup_logging()
    dataset = load_mad(
        annotations_dir,
        video,
        text,
        sentence_features=sentence or None,
        splits=args.splits,
        apply_training_filters=not args.no_training_filters,
        on_missing_features=args.on_missing_features,
    )
    return finish(dataset, args)


if __name__ == "__main__":
    main(sys.argv[1:])
