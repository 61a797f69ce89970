#!/usr/bin/env python
"""Build MAD or Ego4D-NLQ from the CONE/RGNet pre-processed variant (jsonl annotations + lmdb features).

With --data-dir (RGNet's `data/` folder), the jsonl files and lmdbs are found at RGNet's paths:

    DATA/ego_train.jsonl, ego_val.jsonl, naq_train.jsonl (, ego_test.jsonl)      (or CONE's ego4d_data/*.jsonl)
    DATA/ego4d_nlq_data_for_cone/offline_lmdb/egovlp_video_feature_1.87fps/     (+ egovlp_video_feature_naq/)
    DATA/ego4d_nlq_data_for_cone/offline_lmdb/egovlp_clip_text_features/        (+ egovlp_clip_text_features_naq/)
    DATA/mad_{train,val,test}.jsonl                                              (or CONE's mad_data/*.jsonl)
    DATA/mad_data_for_cone/offline_lmdb/CLIP_B32_frames_features_5fps/, clip_clip_text_features/

Every path can be given explicitly (--jsonl SPLIT=PATH, --video-lmdb [SPLIT=]PATH, --text-lmdb [SPLIT=]PATH).

Example:
    python dataset_scripts/build_cone_variant.py --dataset ego4d --data-dir /data/RGNet/data --output-dir out/ego4d
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import add_output_arguments, finish, setup_logging, split_paths

from rgnet_hf.data import cone_variant_files, load_cone_variant

LMDB_DIRS = {
    "ego4d": (
        "ego4d_nlq_data_for_cone/offline_lmdb",
        "egovlp_video_feature_1.87fps",
        "egovlp_clip_text_features",
    ),
    "mad": ("mad_data_for_cone/offline_lmdb", "CLIP_B32_frames_features_5fps", "clip_clip_text_features"),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["mad", "ego4d"], required=True)
    parser.add_argument("--data-dir", type=Path, help="RGNet's data/ folder")
    parser.add_argument("--jsonl", action="append", help="SPLIT=PATH (repeat); default: found in --data-dir")
    parser.add_argument("--video-lmdb", action="append", help="PATH, or SPLIT=PATH (repeat)")
    parser.add_argument("--text-lmdb", action="append", help="PATH, or SPLIT=PATH (repeat)")
    parser.add_argument(
        "--drop-zero-length-validation", action="store_true", help="Ego4D: RGNet's validation zero-length filter"
    )
    add_output_arguments(parser)
    args = parser.parse_args(argv)

    data_files = split_paths(args.jsonl)
    if isinstance(data_files, str):
        parser.error("--jsonl takes SPLIT=PATH")
    if data_files is None:
        if args.data_dir is None:
            parser.error("pass --data-dir or --jsonl SPLIT=PATH")
        data_files = cone_variant_files(args.data_dir, args.dataset)
    video, text = split_paths(args.video_lmdb), split_paths(args.text_lmdb)
    if video is None or text is None:
        if args.data_dir is None:
            parser.error("pass --data-dir or both --video-lmdb and --text-lmdb")
        folder, video_name, text_name = LMDB_DIRS[args.dataset]
        lmdb_dir = args.data_dir / folder
        if video is None:
            video = {split: str(lmdb_dir / video_name) for split in data_files}
            if "train_naq" in video and (lmdb_dir / "egovlp_video_feature_naq").is_dir():
                video["train_naq"] = str(lmdb_dir / "egovlp_video_feature_naq")
        if text is None:
            text = {split: str(lmdb_dir / text_name) for split in data_files}
            if "train_naq" in text and (lmdb_dir / f"{text_name}_naq").is_dir():
                text["train_naq"] = str(lmdb_dir / f"{text_name}_naq")

    setup_logging()
    dataset = load_cone_variant(
        data_files,
        video,
        text,
        dataset_name=args.dataset,
        apply_training_filters=not args.no_training_filters,
        drop_zero_length_validation=args.drop_zero_length_validation,
        on_missing_features=args.on_missing_features,
    )
    return finish(dataset, args)


if __name__ == "__main__":
    main(sys.argv[1:])
