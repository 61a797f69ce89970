"""`rgnet-hf index`: build or extend the search index of a video library from feature caches."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import looks_like_a_path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "index", help="index the videos of feature caches for library search (rgnet-hf search)"
    )
    parser.add_argument(
        "--features",
        action="append",
        required=True,
        help="a feature cache (.h5, as written by `rgnet-hf extract`); repeat for several. Every entry is indexed",
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
        "--reindex-changed",
        action="store_true",
        help="replace the segments of videos whose features changed since they were indexed (refused otherwise)",
    )
    parser.set_defaults(handler=run)
    return parser


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
    if looks_like_a_path(args.model) and not Path(args.model).is_dir():
        raise FileNotFoundError(f"--model {args.model}: no such model folder")
    config = RGNetConfig.from_pretrained(args.model)
    index, update = LibraryIndex.update(
        args.output,
        args.features,
        config,
        index_type=args.index_type,
        flat_limit=args.flat_limit or FLAT_LIMIT,
        nlist=args.nlist,
        nprobe=args.nprobe,
        segment_seconds=args.segment_seconds,
        reindex_changed=args.reindex_changed,
        training_points_per_cell=args.training_points_per_cell,
        pq_bytes=args.pq_bytes,
    )
    print(
        f"{index.folder}: {len(index.videos)} videos, {index.backend.size} segments of {index.segment_frames} "
        f"features, {index.spec.describe()} index; added {len(update.added)}, re-indexed {len(update.reindexed)}, "
        f"unchanged {len(update.unchanged)}"
    )
    return 0
