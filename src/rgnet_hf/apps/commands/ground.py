"""`rgnet-hf ground`: queries in, ranked moments of a video file or of its features out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import (
    ALLOW_TRUNCATED_HELP,
    FEATURE_SUFFIXES,
    add_decode_workers_argument,
    add_encoder_backend_argument,
    check_decode_workers,
    check_device,
    check_seconds_per_feature,
    format_table,
    load_array,
    load_grounding_pipeline,
    warnings_as_lines,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("ground", help="ground queries in a video file or in its pre-extracted features")
    parser.add_argument("--model", default=None, help="a saved RGNet folder or Hub id")
    parser.add_argument(
        "--zero-shot",
        action="store_true",
        help="no RGNet: rank sliding windows by the cosine of the sentence and the frames of --encoder (or of the "
        "encoder --model names), the zero-shot baseline; needs --query and a video file (or its --features cache)",
    )
    parser.add_argument("--encoder", default=None, help="with --zero-shot: a CLIP or SigLIP Hub id or folder")
    parser.add_argument("--video", default=None, help="a video file, or its features (T, D) as .npy, .npz, .pt or .h5")
    parser.add_argument("--video-key", default=None, help="entry of the feature file to read (npz / pt dict / h5)")
    parser.add_argument(
        "--features",
        default=None,
        help="a frame-feature cache (.h5, as written by `rgnet-hf extract`): read the video's entry (its file stem or "
        "--video-key); with --video, a missing entry is encoded and added",
    )
    parser.add_argument("--query", action="append", default=None, help="a query sentence (repeat for several)")
    parser.add_argument("--text", default=None, help="query token features (Lq, Dt) or (Q, Lq, Dt), instead of --query")
    parser.add_argument("--text-key", default=None)
    parser.add_argument("--sentence", default=None, help="sentence features (Dc,) or (Q, Dc), for the matching score")
    parser.add_argument("--sentence-key", default=None)
    parser.add_argument("--seconds-per-feature", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model folder's own code (model, processor, pipeline) instead of the installed rgnet_hf",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON: a list with one {index, query, moments} object per query"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while a video is encoded")
    parser.add_argument("--allow-truncated", action="store_true", help=ALLOW_TRUNCATED_HELP)
    add_encoder_backend_argument(parser)
    add_decode_workers_argument(parser)
    parser.set_defaults(handler=run)
    return parser


def _video_inputs(args: argparse.Namespace, pipe) -> tuple[dict, float | None]:
    """`--video` (a video file, or a feature file as before) and `--features` (a cache) -> (the pipeline's video key,
    the decoded duration the moments are clipped to, when the command knows it)."""
    video_is_features = args.video is not None and Path(args.video).suffix.lower() in FEATURE_SUFFIXES
    seconds_per_feature = args.seconds_per_feature or pipe.model.config.seconds_per_feature
    if args.features is None:
        if args.video is None:
            raise ValueError("give --video (a video file or a feature file) or --features")
        if video_is_features:
            return {"video_features": load_array(args.video, args.video_key)}, None
        pipe.feature_encoder.decode_workers = args.decode_workers
        if args.allow_truncated:
            # Encoded here, not by the pipeline, so that a truncated file is decoded as far as it goes.
            encoded = pipe.feature_encoder.encode_video(
                args.video, seconds_per_feature, progress=not args.no_progress, allow_truncated=True
            )
            return {"video_features": encoded.features}, encoded.duration
        return {"video": args.video}, None
    if video_is_features:
        raise ValueError("--features is the feature file; give --video a video file (or leave it out)")
    key = args.video_key or (Path(args.video).stem if args.video else None)
    features = Path(args.features)
    encoded_now = False
    if key is not None and args.video is not None and features.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        cached = False
        if features.exists():
            with h5py.File(features, "r") as handle:
                cached = key in handle
                recorded = dict(handle[key].attrs) if cached else {}
            if cached:
                from ...data.feature_cache import entry_source_problem

                problem = entry_source_problem(Path(args.video), recorded)
                if problem is not None:
                    raise ValueError(f"{features}: {problem}")
        if not cached:
            # Encode the video once and keep it in the cache for the next queries.
            from ...data.feature_cache import extract_video_features, lock_output

            with lock_output(features):  # the same lock as `rgnet-hf extract` on this cache
                report = extract_video_features(
                    pipe.feature_encoder,
                    [args.video],
                    features,
                    seconds_per_feature,
                    progress=not args.no_progress,
                    allow_truncated=args.allow_truncated,
                )
            if report.failed:
                raise ValueError(report.failed[key])
            encoded_now = True
    duration = None
    if features.suffix.lower() in (".h5", ".hdf5") and features.is_file():
        import h5py

        from ...data.feature_cache import check_cache_entry_fits

        if key is None:
            with h5py.File(features, "r") as handle:
                names = list(handle.keys())
            key = names[0] if len(names) == 1 else None
        if key is not None:
            check_cache_entry_fits(
                features, key, pipe.model.config, args.seconds_per_feature, backend=_expected_backend(args, pipe)
            )
            with h5py.File(features, "r") as handle:
                attrs = dict(handle[key].attrs)
            duration = float(attrs["duration"]) if "duration" in attrs else None
            if attrs.get("truncated"):
                where = f"{features} [{key}] holds the features of a truncated file"
                declared = float(attrs["declared_duration"])
                span = f"{duration:.1f} s decoded of the {declared:.1f} s its container declares"
                if not args.allow_truncated:
                    raise ValueError(f"{where} ({span}); pass --allow-truncated to ground it anyway")
                if not encoded_now:  # a fresh entry was announced by the decoder already
                    print(f"warning: {where}: {span}; grounding the decoded part", file=sys.stderr)
    return {"video_features": load_array(features, key)}, duration


def _expected_backend(args: argparse.Namespace, pipe) -> str:
    """The encoder backend of the features this command grounds: the option's, else the model folder's, else
    pytorch; a cache entry made by another backend is refused rather than read as if it were this one's."""
    return args.encoder_backend or getattr(pipe.model.config, "feature_encoder_backend", None) or "pytorch"


def _use_encoder_backend(args: argparse.Namespace, pipe) -> None:
    """`--encoder-backend`: hand the pipeline a frame encoder of that backend (before it loads its own)."""
    if args.encoder_backend is None:
        return
    if args.trust_remote_code:
        raise ValueError(
            "--encoder-backend does not go with --trust-remote-code (the folder's code loads its own encoder): name "
            "the backend in the folder's config.json (feature_encoder_backend) instead"
        )
    from ...video_text_encoders import feature_encoder_for_model

    pipe._feature_encoder = feature_encoder_for_model(
        pipe.model.config, device=pipe.device, backend=args.encoder_backend
    )


def _clip(rankings: list[list[dict]], duration: float) -> list[list[dict]]:
    # The pipeline clips feature inputs to whole features; the decoded duration is the video's real end.
    clipped = lambda time: min(max(time, 0.0), duration)  # noqa: E731
    return [[{**m, "start": clipped(m["start"]), "end": clipped(m["end"])} for m in moments] for moments in rankings]


def as_json(rankings: list[list[dict]], queries: list[str | None]) -> list[dict]:
    """`--json`: one object per query, whatever their number: its index, its text (None for features), its moments."""
    return [
        {
            "index": index,
            "query": query,
            "moments": [{key: value for key, value in moment.items() if key != "query"} for moment in moments],
        }
        for index, (query, moments) in enumerate(zip(queries, rankings))
    ]


def _print_rankings(args, rankings: list[list[dict]], queries: list, names: list[str], duration: float | None) -> int:
    """Clip the moments to the decoded duration when it is known, then print them as a table or `--json`."""
    if duration is not None:
        rankings = _clip(rankings, duration)
    print(json.dumps(as_json(rankings, queries), indent=2) if args.json else format_table(rankings, names))
    return 0


def _zero_shot_features(args: argparse.Namespace, encoder, seconds_per_feature: float) -> tuple:
    """The frame features of the zero-shot baseline: `--video` encoded, or its entry of a `--features` cache made
    by the same encoder at the same rate. Returns `(features (T, D), the decoded duration or None)`."""
    from types import SimpleNamespace

    if args.features is None:
        if args.video is None or Path(args.video).suffix.lower() in FEATURE_SUFFIXES:
            raise ValueError("--zero-shot needs --video VIDEO_FILE (or its --features cache of --encoder)")
        encoder.decode_workers = args.decode_workers
        encoded = encoder.encode_video(
            args.video, seconds_per_feature, progress=not args.no_progress, allow_truncated=args.allow_truncated
        )
        return encoded.features, encoded.duration
    from ...data.feature_cache import check_cache_entry_fits

    key = args.video_key or (Path(args.video).stem if args.video else None)
    if key is None:
        raise ValueError("--features needs --video-key (or --video) to name the entry")
    reader = SimpleNamespace(
        seconds_per_feature=seconds_per_feature,
        feature_encoder=encoder.name,
        video_feature_size=encoder.video_feature_size,
    )
    check_cache_entry_fits(args.features, key, reader, backend=encoder.backend)
    return load_array(args.features, key), None


def _run_zero_shot(args: argparse.Namespace) -> int:
    from ...evaluation.baselines import zero_shot_cosine_baseline
    from ...video_text_encoders import load_feature_encoder

    if not args.query:
        raise ValueError("--zero-shot takes the queries as sentences (--query, repeatable)")
    if args.text is not None or args.sentence is not None:
        raise ValueError("--zero-shot encodes the --query sentences itself; leave out --text and --sentence")
    encoder_name, seconds_per_feature, backend = args.encoder, args.seconds_per_feature, args.encoder_backend
    if args.model is not None:
        from ...configuration_rgnet import RGNetConfig

        config = RGNetConfig.from_pretrained(args.model)
        if encoder_name is None and config.feature_encoder is None:
            raise ValueError(f"--model {args.model} names no feature_encoder; give --encoder")
        encoder_name = encoder_name or config.feature_encoder
        seconds_per_feature = seconds_per_feature or config.seconds_per_feature
        backend = backend or getattr(config, "feature_encoder_backend", None)
    if encoder_name is None:
        raise ValueError("--zero-shot needs --encoder (a CLIP or SigLIP Hub id or folder) or --model")
    if seconds_per_feature is None:
        from ...configuration_rgnet import MAD_SECONDS_PER_FEATURE

        seconds_per_feature = MAD_SECONDS_PER_FEATURE
    encoder = load_feature_encoder(encoder_name, device=args.device, backend=backend)
    with warnings_as_lines():
        features, duration = _zero_shot_features(args, encoder, seconds_per_feature)
    queries = list(args.query)
    sentences = [query.sentence_features for query in encoder.encode_queries(queries)]
    ranked = zero_shot_cosine_baseline(features, sentences, seconds_per_feature, top_k=args.top_k)
    rankings = [
        [{"start": float(s), "end": float(e), "score": float(score), "query": query} for s, e, score in rows]
        for query, rows in zip(queries, ranked)
    ]
    return _print_rankings(args, rankings, queries, queries, duration)


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    if args.top_k <= 0:
        raise ValueError(f"--top-k must be > 0, got {args.top_k}")
    check_seconds_per_feature(args.seconds_per_feature)
    check_decode_workers(args)
    if args.zero_shot:
        check_device(args.device)
        return _run_zero_shot(args)
    if args.model is None:
        raise ValueError("give --model (a saved RGNet folder or Hub id), or --zero-shot --encoder ENCODER")
    if args.encoder is not None:
        raise ValueError("--encoder goes with --zero-shot; an RGNet model reads the encoder its config names")
    if (args.text is None) == (not args.query):
        raise ValueError("give the queries as text (--query, repeatable) or as token features (--text)")
    check_device(args.device)
    pipe = load_grounding_pipeline(
        args.model, device=args.device, progress=not args.no_progress, trust_remote_code=args.trust_remote_code
    )
    _use_encoder_backend(args, pipe)
    with warnings_as_lines():
        inputs, duration = _video_inputs(args, pipe)
    if args.query:
        inputs["text"] = args.query if len(args.query) > 1 else args.query[0]
        many, names = len(args.query) > 1, list(args.query)
        queries = list(args.query)
    else:
        text = load_array(args.text, args.text_key)
        inputs["text_features"] = list(text) if text.ndim == 3 else text
        many = text.ndim == 3
        names = [f"query {index}" for index in range(len(text) if many else 1)]
        queries = [None] * len(names)
        if args.sentence:
            inputs["sentence_features"] = load_array(args.sentence, args.sentence_key)
    if args.seconds_per_feature is not None:
        inputs["seconds_per_feature"] = args.seconds_per_feature
    result = pipe(inputs, top_k=args.top_k)
    rankings = result if many else [result]
    return _print_rankings(args, rankings, queries, names, duration)
