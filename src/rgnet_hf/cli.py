"""`rgnet-hf` command line: `ground` (a video or its features in, moments out), `extract`, `demo`, `convert`."""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from pathlib import Path

import numpy as np


def load_array(path: str | Path, key: str | None = None) -> np.ndarray:
    """Read a feature array from `.npy`, `.npz`, `.pt` / `.pth` or `.h5` / `.hdf5` (`key` selects an entry)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such feature file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return _pick(dict(archive), key, path)
    if suffix in (".pt", ".pth"):
        import torch

        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{path} was refused: it holds objects other than tensors, which could run code when unpickled "
                "(only tensors and dicts / lists of tensors are read)"
            ) from error
        except (RuntimeError, EOFError) as error:
            raise ValueError(f"{path} is not a readable PyTorch file ({error})") from error
        if isinstance(value, dict):
            value = _pick(value, key, path)
        return value.float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as handle:
            names = list(handle.keys())
            if key is None and len(names) != 1:
                raise ValueError(
                    f"{path} holds {len(names)} entries; choose one with a key ({', '.join(names[:5])}...)"
                )
            name = key if key is not None else names[0]
            if name not in handle:
                raise KeyError(f"{path} has no entry {name!r}")
            return handle[name][()]
    raise ValueError(f"Unsupported feature file type {suffix!r} ({path}); use .npy, .npz, .pt or .h5")


def _pick(mapping: dict, key: str | None, path: Path):
    if key is None:
        if len(mapping) != 1:
            raise ValueError(
                f"{path} holds {len(mapping)} entries; choose one with a key ({', '.join(list(mapping)[:5])})"
            )
        return next(iter(mapping.values()))
    if key not in mapping:
        raise KeyError(f"{path} has no entry {key!r}")
    return mapping[key]


def _format_table(rankings: list[list[dict]], names: list[str]) -> str:
    lines = []
    for name, moments in zip(names, rankings):
        lines.append(f"{name}")
        lines.append(f"  {'rank':>4}  {'start (s)':>10}  {'end (s)':>10}  {'score':>7}")
        for rank, moment in enumerate(moments, 1):
            lines.append(f"  {rank:>4}  {moment['start']:>10.2f}  {moment['end']:>10.2f}  {moment['score']:>7.3f}")
    return "\n".join(lines)


FEATURE_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".h5", ".hdf5")


def _video_inputs(args: argparse.Namespace, pipe) -> dict:
    """`--video` (a video file, or a feature file as before) and `--features` (a cache) -> the pipeline's video key."""
    video_is_features = args.video is not None and Path(args.video).suffix.lower() in FEATURE_SUFFIXES
    if args.features is None:
        if args.video is None:
            raise ValueError("give --video (a video file or a feature file) or --features")
        if video_is_features:
            return {"video_features": load_array(args.video, args.video_key)}
        return {"video": args.video}
    if video_is_features:
        raise ValueError("--features is the feature file; give --video a video file (or leave it out)")
    key = args.video_key or (Path(args.video).stem if args.video else None)
    features = Path(args.features)
    if key is not None and args.video is not None and features.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        cached = False
        if features.exists():
            with h5py.File(features, "r") as handle:
                cached = key in handle
        if not cached:
            # Encode the video once and keep it in the cache for the next queries.
            from .feature_cache import extract_video_features

            spf = args.seconds_per_feature or pipe.model.config.seconds_per_feature
            report = extract_video_features(
                pipe.feature_encoder, [args.video], features, spf, progress=not args.no_progress
            )
            if report.failed:
                raise ValueError(report.failed[key])
    return {"video_features": load_array(features, key)}


def _ground(args: argparse.Namespace) -> int:
    from transformers import pipeline
    from transformers.utils import logging as transformers_logging

    import rgnet_hf  # noqa: F401 - registers the pipeline

    transformers_logging.disable_progress_bar()

    if args.top_k <= 0:
        raise ValueError(f"--top-k must be > 0, got {args.top_k}")
    if (args.text is None) == (not args.query):
        raise ValueError("give the queries as text (--query, repeatable) or as token features (--text)")
    _check_seconds_per_feature(args.seconds_per_feature)
    _check_device(args.device)
    if _looks_like_a_path(args.model) and not Path(args.model).is_dir():
        raise FileNotFoundError(f"--model {args.model}: no such model folder")
    pipe = pipeline("video-grounding", model=args.model, device=args.device, progress=not args.no_progress)
    inputs = _video_inputs(args, pipe)
    if args.query:
        inputs["text"] = args.query if len(args.query) > 1 else args.query[0]
        many, names = len(args.query) > 1, list(args.query)
    else:
        text = load_array(args.text, args.text_key)
        inputs["text_features"] = list(text) if text.ndim == 3 else text
        many = text.ndim == 3
        names = [f"query {index}" for index in range(len(text) if many else 1)]
        if args.sentence:
            inputs["sentence_features"] = load_array(args.sentence, args.sentence_key)
    if args.seconds_per_feature is not None:
        inputs["seconds_per_feature"] = args.seconds_per_feature
    result = pipe(inputs, top_k=args.top_k)
    rankings = result if many else [result]
    if args.json:
        print(json.dumps(rankings if many else rankings[0], indent=2))
    else:
        print(_format_table(rankings, names))
    return 0


def _check_seconds_per_feature(seconds: float | None) -> None:
    """`--seconds-per-feature` must be > 0 when given: 0 must not fall back to a default."""
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"--seconds-per-feature: seconds_per_feature must be a finite number > 0, got {seconds}")


def _looks_like_a_path(name: str) -> bool:
    """A local folder name rather than a Hub id (`owner/name`)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def _check_device(device: str | None) -> None:
    """Refuse a device that this machine does not have, before the model is loaded."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"--device {device!r} is not a device name (e.g. cpu, cuda, cuda:1, mps)") from error
    if parsed.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available == 0:
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= available:
            raise ValueError(f"--device {device}: this machine has {available} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine")


def _extract(args: argparse.Namespace) -> int:
    import torch
    from accelerate import PartialState

    from .feature_cache import extract_video_features, list_videos
    from .feature_encoders import feature_encoder_for_model, load_feature_encoder

    if (args.encoder is None) == (args.model is None):
        raise ValueError("give the encoder with --encoder (Hub id or folder) or take it from an RGNet --model")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {args.batch_size}")
    _check_seconds_per_feature(args.seconds_per_feature)
    _check_device(args.device)
    from accelerate.utils import parse_flag_from_env

    # PartialState does not read ACCELERATE_USE_CPU itself; without it, CPU processes would each run alone.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    videos = list_videos(args.video)
    device = args.device or state.device
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else None
    seconds_per_feature = args.seconds_per_feature
    if args.model is not None:
        from .configuration_rgnet import RGNetConfig

        config = RGNetConfig.from_pretrained(args.model)
        encoder = feature_encoder_for_model(config, device=device, dtype=dtype, batch_size=args.batch_size)
        seconds_per_feature = seconds_per_feature or config.seconds_per_feature
    else:
        encoder = load_feature_encoder(args.encoder, device=device, dtype=dtype, batch_size=args.batch_size)
    report = extract_video_features(
        encoder,
        videos,
        args.output,
        seconds_per_feature or 0.2,
        process_index=state.process_index,
        num_processes=state.num_processes,
        progress=not args.no_progress and state.is_local_main_process,
        barrier=state.wait_for_everyone,
    )
    prefix = f"[process {state.process_index}] " if state.num_processes > 1 else ""
    print(
        f"{prefix}{report.output}: {len(report.written)} video(s) encoded, {len(report.skipped)} already done, "
        f"{len(report.failed)} failed"
    )
    for key, message in report.failed.items():
        print(f"{prefix}failed {key}: {message}", file=sys.stderr)
    return 1 if report.failed else 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.output, num_epochs=args.epochs, seed=args.seed)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .convert_original_checkpoint import main as convert_main

    forwarded = ["--checkpoint", args.checkpoint, "--output", args.output]
    if args.preset:
        forwarded += ["--preset", args.preset]
    if args.official_batch_mask:
        forwarded.append("--official-batch-mask")
    if args.force:
        forwarded.append("--force")
    return convert_main(forwarded)


def _app(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ValueError(f"the web app needs the app extra: pip install 'rgnet_hf[app]' ({error})") from error
    from .app import GroundingApp, launch

    try:
        app = GroundingApp(args.model, device=args.device, examples=args.examples)
    except OSError as error:  # a missing folder or an unknown Hub id
        raise ValueError(f"cannot load the model {args.model!r}: {error}") from error
    launch(app, args.host, args.port, args.share)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rgnet-hf", description="RGNet long-video temporal grounding")
    commands = parser.add_subparsers(dest="command", required=True)

    ground = commands.add_parser("ground", help="ground queries in a video file or in its pre-extracted features")
    ground.add_argument("--model", required=True, help="a saved RGNet folder or Hub id")
    ground.add_argument("--video", default=None, help="a video file, or its features (T, D) as .npy, .npz, .pt or .h5")
    ground.add_argument("--video-key", default=None, help="entry of the feature file to read (npz / pt dict / h5)")
    ground.add_argument(
        "--features",
        default=None,
        help="a frame-feature cache (.h5, as written by `rgnet-hf extract`): read the video's entry (its file stem or "
        "--video-key); with --video, a missing entry is encoded and added",
    )
    ground.add_argument("--query", action="append", default=None, help="a query sentence (repeat for several)")
    ground.add_argument("--text", default=None, help="query token features (Lq, Dt) or (Q, Lq, Dt), instead of --query")
    ground.add_argument("--text-key", default=None)
    ground.add_argument("--sentence", default=None, help="sentence features (Dc,) or (Q, Dc), for the matching score")
    ground.add_argument("--sentence-key", default=None)
    ground.add_argument("--seconds-per-feature", type=float, default=None)
    ground.add_argument("--top-k", type=int, default=5)
    ground.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1")
    ground.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ground.add_argument("--no-progress", action="store_true", help="no progress bar while a video is encoded")
    ground.set_defaults(handler=_ground)

    extract = commands.add_parser(
        "extract",
        help="encode video files into a frame-feature HDF5 file in MAD's layout (resumable; accelerate launch ok)",
    )
    extract.add_argument(
        "--encoder", default=None, help="CLIP or SigLIP Hub id or folder, e.g. openai/clip-vit-base-patch32"
    )
    extract.add_argument("--model", default=None, help="an RGNet folder: use its config's feature_encoder and rate")
    extract.add_argument("--video", required=True, help="a video file or a folder of video files")
    extract.add_argument("--output", required=True, help="the .h5 file to create or complete (one entry per stem)")
    extract.add_argument(
        "--seconds-per-feature", type=float, default=None, help="sampling interval (default: the model's, or 0.2)"
    )
    extract.add_argument("--batch-size", type=int, default=64, help="frames per forward pass")
    extract.add_argument("--device", default=None, help="default: this process's accelerate device")
    extract.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    extract.add_argument("--no-progress", action="store_true", help="no progress bars")
    extract.set_defaults(handler=_extract)

    demo = commands.add_parser(
        "demo", help="train and evaluate a small RGNet on a synthetic long-video benchmark (offline, CPU)"
    )
    demo.add_argument("--output", default="rgnet-demo", help="folder for the data, the model and the results")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo recipe's)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic benchmark")
    demo.set_defaults(handler=_demo)

    convert = commands.add_parser("convert", help="convert an official RGNet checkpoint")
    convert.add_argument("--checkpoint", required=True)
    convert.add_argument("--output", required=True)
    convert.add_argument("--preset", default=None, choices=["mad", "ego4d", "ego4d_pretrain"])
    convert.add_argument("--official-batch-mask", action="store_true")
    convert.add_argument("--force", action="store_true", help="replace an existing, non-empty --output folder")
    convert.set_defaults(handler=_convert)

    app = commands.add_parser("app", help="a web app: ground sentences in a video and play the moments (Gradio)")
    app.add_argument("--model", required=True, help="a saved RGNet folder or Hub id whose config names an encoder")
    app.add_argument("--examples", nargs="+", default=None, help="example videos, or folders of videos, to pick from")
    app.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    app.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    app.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    app.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1")
    app.set_defaults(handler=_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, KeyError, OSError) as error:
        # OSError: missing or unreadable files, and models transformers cannot find.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
