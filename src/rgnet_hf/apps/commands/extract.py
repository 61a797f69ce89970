"""`rgnet-hf extract`: encode video files into a frame-feature cache (resumable; data-parallel under accelerate)."""

from __future__ import annotations

import argparse
import math
import sys

from .common import (
    ALLOW_TRUNCATED_HELP,
    add_frame_encoder_arguments,
    check_frame_encoder_arguments,
    lock_output_for_run,
    process_state,
    warnings_as_lines,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "extract",
        help="encode video files into a frame-feature HDF5 file in MAD's layout (resumable; accelerate launch ok)",
    )
    add_frame_encoder_arguments(parser)
    parser.add_argument("--video", required=True, help="a video file or a folder of video files")
    parser.add_argument("--output", required=True, help="the .h5 file to create or complete (one entry per stem)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--allow-truncated", action="store_true", help=ALLOW_TRUNCATED_HELP)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import contextlib

    from ...data.feature_cache import check_output

    check_frame_encoder_arguments(args)
    check_output(args.output)
    if args.no_progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # the encoder's "Loading weights" bar
    state = process_state()
    with contextlib.ExitStack() as stack:
        lock_output_for_run(stack, args.output, state)
        with warnings_as_lines():
            return _run_locked(args, state)


def _run_locked(args: argparse.Namespace, state) -> int:
    import torch

    from ...data.feature_cache import entries_not_listed, extract_video_features, list_videos
    from ...video_text_encoders import feature_encoder_for_model, load_feature_encoder

    videos = list_videos(args.video)
    if state.is_main_process:
        for reason, names in entries_not_listed(args.video).items():
            print(f"{args.video}: skipped {len(names)} {reason}: {', '.join(names)}")
    device = args.device or state.device
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else None
    seconds_per_feature = args.seconds_per_feature
    if args.model is not None:
        from ...configuration_rgnet import RGNetConfig

        config = RGNetConfig.from_pretrained(args.model)
        encoder = feature_encoder_for_model(
            config, device=device, dtype=dtype, batch_size=args.batch_size, backend=args.encoder_backend
        )
        if seconds_per_feature is not None and not math.isclose(seconds_per_feature, config.seconds_per_feature):
            raise ValueError(
                f"--seconds-per-feature {seconds_per_feature} differs from the model's {config.seconds_per_feature} s "
                "per feature: the model would read these features at wrong times; leave the option out, or give "
                "--encoder instead of --model for a cache at another rate"
            )
        seconds_per_feature = seconds_per_feature or config.seconds_per_feature
    else:
        encoder = load_feature_encoder(
            args.encoder, device=device, dtype=dtype, batch_size=args.batch_size, backend=args.encoder_backend
        )
    encoder.decode_workers = args.decode_workers
    try:
        report = extract_video_features(
            encoder,
            videos,
            args.output,
            seconds_per_feature or 0.2,
            process_index=state.process_index,
            num_processes=state.num_processes,
            progress=not args.no_progress and state.is_local_main_process,
            barrier=state.wait_for_everyone,
            allow_truncated=args.allow_truncated,
        )
    except KeyboardInterrupt:
        # Ctrl-C is a request, not a crash: one line, and the shell's status for SIGINT.
        print(
            f"interrupted: {args.output} is unchanged; videos already encoded are kept and a rerun of the same "
            "command skips them",
            file=sys.stderr,
        )
        return 130
    prefix = f"[process {state.process_index}] " if state.num_processes > 1 else ""
    print(
        f"{prefix}{report.output}: {len(report.written)} video(s) encoded, {len(report.skipped)} already done, "
        f"{len(report.failed)} failed"
    )
    for key, message in report.failed.items():
        print(f"{prefix}failed {key}: {message}", file=sys.stderr)
    return 1 if report.failed else 0
