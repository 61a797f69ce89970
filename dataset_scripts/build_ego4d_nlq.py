#!/usr/bin/env python
"""Build the Ego4D-NLQ query dataset from the official NLQ annotations and EgoVLP clip features.

Expects:

    ANNOTATIONS/nlq_train.json, nlq_val.json, nlq_test_unannotated.json   (v2: nlq_*_v2.json)
    ANNOTATIONS/nlq_aug_naq_train.json                                    (optional, NaQ-augmented train -> train_naq)
    VIDEO_FEATURES/{clip_uid}.pt                                          (EgoVLP [T, 256] at 1.87 fps)
    TEXT_FEATURES: a CONE/RGNet text lmdb keyed by f"{annotation_uid}_{query_idx}" (or an HDF5 file of tokens)

Example:
    python dataset_scripts/build_ego4d_nlq.py --annotations-dir /data/ego4d/v1/annotations \\
        --video-features-dir /data/ego4d/egovlp --text-features /data/cone/offline_lmdb/egovlp_clip_text_features \\
        --output-dir /data/rgnet/ego4d_nlq
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import add_output_arguments, finish, setup_logging

from rgnet_hf.configuration_rgnet import EGO4D_SECONDS_PER_FEATURE
from rgnet_hf.data import load_ego4d_nlq


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations-dir", type=Path, required=True, help="folder of the nlq_*.json files")
    parser.add_argument("--video-features-dir", type=Path, required=True, help="folder of {clip_uid}.pt files")
    parser.add_argument("--text-features", type=Path, help="text lmdb or HDF5 file keyed by query id")
    parser.add_argument("--naq-video-features-dir", type=Path, help="video features of train_naq (default: same)")
    parser.add_argument("--naq-text-features", type=Path, help="text features of train_naq (default: same)")
    parser.add_argument("--version", choices=["v1", "v2"], default="v1")
    parser.add_argument("--splits", nargs="+", choices=["train", "validation", "test", "train_naq"])
    parser.add_argument(
        "--features-per", choices=["clip", "video"], default="clip", help="video: {video_uid}.pt files cut to clips"
    )
    parser.add_argument(
        "--seconds-per-feature",
        type=float,
        default=EGO4D_SECONDS_PER_FEATURE,
        help=f"{EGO4D_SECONDS_PER_FEATURE} (EgoVLP at 1.87 fps)",
    )
    parser.add_argument(
        "--drop-zero-length-validation",
        action="store_true",
        help="drop validation queries with round(end, 1) == round(start, 1), as RGNet's ego_val.jsonl",
    )
    add_output_arguments(parser)
    args = parser.parse_args(argv)

    setup_logging()
    dataset = load_ego4d_nlq(
        args.annotations_dir,
        args.video_features_dir,
        args.text_features,
        version=args.version,
        splits=args.splits,
        naq_video_features_dir=args.naq_video_features_dir,
        naq_text_features=args.naq_text_features,
        features_per=args.features_per,
        seconds_per_feature=args.seconds_per_feature,
        apply_training_filters=not args.no_training_filters,
        drop_zero_length_validation=args.drop_zero_length_validation,
        on_missing_features=args.on_missing_features,
    )
    return finish(dataset, args)


if __name__ == "__main__":
    main(sys.argv[1:])
