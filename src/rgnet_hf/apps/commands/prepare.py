"""`rgnet-hf prepare`: your videos and annotations -> a prepared dataset (features, splits, manifest, card)."""

from __future__ import annotations

import argparse
import math
import sys

from .common import add_frame_encoder_arguments, check_frame_encoder_arguments, lock_output_for_run, process_state


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prepare",
        help="check annotations of your own videos and write a dataset RGNet trains on (resumable)",
        description=(
            "Read annotations (one row per query: video, sentence, start/end or a [start, end] span; optionally "
            "split, query_id, duration), check every row against its video file, encode the videos and sentences "
            "with one encoder, split by video and write OUTPUT (features, annotations per split, manifest.json, "
            "README.md). A rerun encodes only what is missing."
        ),
    )
    parser.add_argument(
        "--annotations",
        required=True,
        help="a .jsonl/.json/.csv/.tsv/.parquet file, a folder written by save_to_disk, or a Hub dataset id",
    )
    parser.add_argument("--videos", required=True, help="the folder of the video files (searched recursively)")
    add_frame_encoder_arguments(parser)
    parser.add_argument("--output", required=True, help="the prepared dataset folder to create or complete")
    parser.add_argument(
        "--columns",
        default=None,
        help="field=column pairs, e.g. video=video_id,sentence=question,span=correct_interval (ExtremeWhenBench)",
    )
    parser.add_argument(
        "--splits",
        default=None,
        help="fractions of videos per split, e.g. train=0.8,validation=0.1,test=0.1 (the default); ignored when the "
        "rows have a split column",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split by video")
    parser.add_argument(
        "--skip-invalid", action="store_true", help="leave rows that fail a check out (they stay in the report)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import contextlib
    from pathlib import Path

    from ...data.own_annotations import parse_column_map
    from ...data.prepared import VIDEO_FEATURES, PreparedDatasetError, parse_split_ratios

    check_frame_encoder_arguments(args)
    # Option errors before the encoder is loaded.
    parse_column_map(args.columns)
    parse_split_ratios(args.splits)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise PreparedDatasetError(f"--output {output} is a file: give a folder")
    state = process_state()
    created = not output.exists()
    try:
        with contextlib.ExitStack() as stack:
            # The lock `rgnet-hf extract` takes on the same feature file: two runs on one folder would delete each
            # other's parts and interleave the manifest.
            lock_output_for_run(stack, output / VIDEO_FEATURES, state)
            return _run_locked(args, state)
    finally:
        if created and state.is_main_process and output.is_dir() and not any(output.iterdir()):
            output.rmdir()  # a run that stopped before writing anything leaves no empty folder behind


def _run_locked(args: argparse.Namespace, state) -> int:
    import torch

    from ...data.prepared import InvalidAnnotationsError, prepare_dataset
    from ...video_text_encoders import feature_encoder_for_model, load_feature_encoder

    device = args.device or state.device
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else None
    seconds_per_feature = args.seconds_per_feature
    if args.model is not None:
        from ...configuration_rgnet import RGNetConfig

        config = RGNetConfig.from_pretrained(args.model)
        if seconds_per_feature is not None and not math.isclose(seconds_per_feature, config.seconds_per_feature):
            raise ValueError(
                f"--seconds-per-feature {seconds_per_feature} differs from the model's {config.seconds_per_feature} s "
                "per feature: the model would read these features at wrong times; leave the option out"
            )
        seconds_per_feature = config.seconds_per_feature

        def encoder():
            built = feature_encoder_for_model(
                config, device=device, dtype=dtype, batch_size=args.batch_size, backend=args.encoder_backend
            )
            built.decode_workers = args.decode_workers
            return built

    else:

        def encoder():
            built = load_feature_encoder(
                args.encoder, device=device, dtype=dtype, batch_size=args.batch_size, backend=args.encoder_backend
            )
            built.decode_workers = args.decode_workers
            return built

    try:
        result = prepare_dataset(
            args.annotations,
            args.videos,
            args.output,
            encoder,
            seconds_per_feature or 0.2,
            columns=args.columns,
            splits=args.splits,
            seed=args.seed,
            skip_invalid=args.skip_invalid,
            progress=not args.no_progress and state.is_local_main_process,
            process_index=state.process_index,
            num_processes=state.num_processes,
            barrier=state.wait_for_everyone,
        )
    except InvalidAnnotationsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"interrupted: videos and sentences already encoded in {args.output} are kept; a rerun of the same "
            "command resumes",
            file=sys.stderr,
        )
        return 130
    if not state.is_main_process:
        return 0
    manifest = result.manifest
    share = " by the main process" if state.num_processes > 1 else ""
    print(
        f"{args.output}: {len(result.videos_encoded)} video(s) encoded{share}, {len(result.videos_reused)} reused; "
        f"{result.sentences_encoded} sentence(s) encoded, {result.sentences_reused} reused"
    )
    for split, counts in manifest["counts"].items():
        print(f"  {split:<10} {counts['videos']:>5} videos {counts['hours']:>8.3f} h {counts['queries']:>7} queries")
    if manifest["truncated_queries"]:
        print(f"  {len(manifest['truncated_queries'])} sentence(s) longer than the text encoder's context were cut")
    return 0
