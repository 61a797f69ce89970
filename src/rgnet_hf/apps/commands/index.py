"""`rgnet-hf index`: build or extend the search index of a video library from feature caches or video files
(their encoding data-parallel under `accelerate launch`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    ALLOW_TRUNCATED_HELP,
    add_decode_workers_argument,
    add_encoder_backend_argument,
    check_decode_workers,
    check_device,
    lock_output_for_run,
    looks_like_a_path,
    process_state,
    warnings_as_lines,
)

VIDEO_FEATURES_NAME = "video_features.h5"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "index", help="index the videos of feature caches, prepared datasets or video files for library search"
    )
    parser.add_argument(
        "--features",
        action="append",
        default=[],
        help="a feature cache (.h5, as written by `rgnet-hf extract`) or a prepared dataset folder (`rgnet-hf "
        "prepare`: its video features); repeat for several. Every entry is indexed",
    )
    parser.add_argument(
        "--videos",
        action="append",
        default=[],
        help="a video file or a folder of video files, encoded first with the model's feature encoder into "
        "--features-output (resumable: videos already there are not encoded again); repeat for several",
    )
    parser.add_argument(
        "--features-output",
        default=None,
        help=f"the feature cache --videos are encoded into (default OUTPUT/{VIDEO_FEATURES_NAME})",
    )
    parser.add_argument("--model", required=True, help="the RGNet model folder or Hub id the library is searched with")
    parser.add_argument("--output", required=True, help="the index folder: created, or extended when it exists")
    parser.add_argument(
        "--index-type",
        choices=("auto", "flat", "ivf", "ivfsq8", "ivfpq"),
        default="auto",
        help="vector index of a new library; auto: exact flat search below --flat-limit segments, IVF from it on, "
        "with 8-bit codes (ivfsq8) while they fit in 4 GiB and product-quantised codes (ivfpq) beyond; ivf keeps the "
        "float32 vectors",
    )
    parser.add_argument("--flat-limit", type=int, default=None, help="segments from which auto picks IVF (1,000,000)")
    parser.add_argument("--nlist", type=int, default=None, help="IVF cells (default 4 * sqrt(segments), a power of 2)")
    parser.add_argument("--nprobe", type=int, default=None, help="IVF cells searched per query (nlist / 8, >= 16)")
    parser.add_argument(
        "--pq-bytes",
        type=int,
        default=None,
        help="ivfpq: bytes per segment code, a divisor of the feature size (one per 4 dimensions: 128 for 512-d)",
    )
    parser.add_argument(
        "--training-points-per-cell",
        type=int,
        default=None,
        help="IVF: vectors k-means samples per cell (FAISS's 256); fewer build faster and recall less",
    )
    parser.add_argument("--segment-seconds", type=float, default=4.0, help="seconds per segment vector (4)")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="after adding what is given (if anything), rebuild the vector index as --index-type (default auto: the "
        "rule, for the library's current size) and --nlist / --nprobe / --pq-bytes set it, from the features in the "
        "caches: for a library grown past the size its first build chose the index for",
    )
    parser.add_argument(
        "--reindex-changed",
        action="store_true",
        help="replace the segments of videos whose features changed since they were indexed (refused otherwise)",
    )
    encoding = parser.add_argument_group("encoding --videos")
    encoding.add_argument("--batch-size", type=int, default=64, help="frames per forward pass")
    encoding.add_argument("--device", default=None, help="default: this process's accelerate device")
    encoding.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    add_decode_workers_argument(encoding)
    add_encoder_backend_argument(encoding)
    encoding.add_argument("--allow-truncated", action="store_true", help=ALLOW_TRUNCATED_HELP)
    encoding.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)
    return parser


def _feature_files(args: argparse.Namespace) -> list[Path]:
    """`--features` as cache files: a prepared dataset folder stands for its video features (a finished run)."""
    from ...data.prepared import VIDEO_FEATURES, load_manifest

    files = []
    for given in args.features:
        path = Path(given)
        if path.is_dir():
            load_manifest(path)  # refuses a folder that is not a finished `rgnet-hf prepare` run, naming it
            path = path / VIDEO_FEATURES
        files.append(path)
    return files


def _encode_videos(args: argparse.Namespace, config, cache: Path, state) -> list[tuple[str, str]]:
    """Encode `--videos` into `cache` with the model's feature encoder, this process's share of them under
    `accelerate launch`; the `(key, error)` of every video that failed, in all the processes."""
    import contextlib

    import torch

    from ...data.feature_cache import check_output, entries_not_listed, extract_video_features, list_videos
    from ...video_text_encoders import feature_encoder_for_model

    check_output(cache)
    videos = []
    for given in args.videos:
        videos.extend(list_videos(given))
        if state.is_main_process:
            for reason, names in entries_not_listed(given).items():
                print(f"{given}: skipped {len(names)} {reason}: {', '.join(names)}")
    with contextlib.ExitStack() as stack:
        lock_output_for_run(stack, cache, state)
        device = args.device or state.device
        dtype = torch.bfloat16 if args.dtype == "bfloat16" else None
        encoder = feature_encoder_for_model(
            config, device=device, dtype=dtype, batch_size=args.batch_size, backend=args.encoder_backend
        )
        encoder.decode_workers = args.decode_workers
        try:
            with warnings_as_lines():
                report = extract_video_features(
                    encoder,
                    videos,
                    cache,
                    config.seconds_per_feature,
                    process_index=state.process_index,
                    num_processes=state.num_processes,
                    progress=not args.no_progress and state.is_local_main_process,
                    barrier=state.wait_for_everyone,
                    allow_truncated=args.allow_truncated,
                )
        finally:
            encoder.close()
    prefix = f"[process {state.process_index}] " if state.num_processes > 1 else ""
    print(
        f"{prefix}{report.output}: {len(report.written)} video(s) encoded, {len(report.skipped)} already done, "
        f"{len(report.failed)} failed"
    )
    for key, message in report.failed.items():
        print(f"{prefix}failed {key}: {message}", file=sys.stderr)
    failed = list(report.failed.items())
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        failed = gather_object(failed)
    return failed


def run(args: argparse.Namespace) -> int:
    from ...configuration_rgnet import RGNetConfig
    from ...search.backends import FLAT_LIMIT, require_faiss
    from ...search.index import LibraryIndex

    require_faiss()

    for name in ("flat_limit", "nlist", "nprobe", "training_points_per_cell", "pq_bytes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not args.segment_seconds > 0:
        raise ValueError(f"--segment-seconds must be > 0, got {args.segment_seconds}")
    if not args.features and not args.videos and not args.rebuild:
        raise ValueError(
            "give what to index: --features CACHE.h5 (or a prepared dataset folder) or --videos PATH (or --rebuild "
            "an existing index)"
        )
    if args.rebuild and not (Path(args.output) / "manifest.json").is_file() and not (args.features or args.videos):
        raise FileNotFoundError(f"--rebuild: {args.output} is not a library index (no manifest.json) to rebuild")
    if args.features_output is not None and not args.videos:
        raise ValueError("--features-output is where --videos are encoded: give --videos too")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {args.batch_size}")
    check_device(args.device)
    check_decode_workers(args)
    if looks_like_a_path(args.model) and not Path(args.model).is_dir():
        raise FileNotFoundError(f"--model {args.model}: no such model folder")
    feature_files = _feature_files(args)
    config = RGNetConfig.from_pretrained(args.model)
    state = process_state()
    failed = 0
    if args.videos:
        if args.no_progress:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        cache = Path(args.features_output or Path(args.output) / VIDEO_FEATURES_NAME)
        # The output and the model are checked before hours of encoding, not after.
        LibraryIndex.check_output(args.output, config, [*feature_files, cache])
        failed = len(_encode_videos(args, config, cache, state))
        if cache.exists():
            feature_files.append(cache)
        elif not feature_files:
            raise ValueError("no video of --videos could be encoded, so there is nothing to index (see above)")
    if not state.is_main_process:
        # Under `accelerate launch` the processes share the encoding of --videos; the main process alone writes the
        # index (one writer per folder).
        return 0
    flat_limit = args.flat_limit or FLAT_LIMIT
    if feature_files:
        index, update = LibraryIndex.update(
            args.output,
            feature_files,
            config,
            index_type=args.index_type,
            flat_limit=flat_limit,
            nlist=args.nlist,
            nprobe=args.nprobe,
            segment_seconds=args.segment_seconds,
            reindex_changed=args.reindex_changed,
            training_points_per_cell=args.training_points_per_cell,
            pq_bytes=args.pq_bytes,
        )
        print(
            f"{index.folder}: {len(index.videos)} videos, {index.backend.size} segments of {index.segment_frames} "
            f"features, {index.spec.describe()} index; added {len(update.added)}, re-indexed "
            f"{len(update.reindexed)}, unchanged {len(update.unchanged)}"
        )
    if args.rebuild:
        before = LibraryIndex.open(args.output).spec
        index = LibraryIndex.rebuild(
            args.output,
            config,
            index_type=args.index_type,
            flat_limit=flat_limit,
            nlist=args.nlist,
            nprobe=args.nprobe,
            training_points_per_cell=args.training_points_per_cell,
            pq_bytes=args.pq_bytes,
        )
        print(
            f"{index.folder}: rebuilt {index.backend.size} segments of {len(index.videos)} videos as a "
            f"{index.spec.describe()} index (was {before.describe()})"
        )
    elif (rule := index.outgrown(flat_limit)) is not None:
        print(
            f"note: at {index.backend.size} segments the index rule picks {rule.describe()}, but this index is "
            f"{index.spec.describe()} (fixed when it was built); add --rebuild to rebuild it for its size"
        )
    if failed:
        print(f"{failed} video(s) of --videos failed and are not indexed (listed above)", file=sys.stderr)
    return 1 if failed else 0
