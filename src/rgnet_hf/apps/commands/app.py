"""`rgnet-hf app`: the web app (Gradio): ground sentences in a video, or search a library index (`--index`), and
play the moments."""

from __future__ import annotations

import argparse

from .common import ALLOW_TRUNCATED_HELP


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("app", help="a web app: ground sentences in a video and play the moments (Gradio)")
    parser.add_argument("--model", required=True, help="a saved RGNet folder or Hub id whose config names an encoder")
    parser.add_argument(
        "--examples", nargs="+", default=None, help="example videos, or folders of videos, to pick from"
    )
    parser.add_argument(
        "--index",
        default=None,
        help="a library's index folder (`rgnet-hf index`): the page searches all its videos instead of grounding one",
    )
    parser.add_argument(
        "--segment-windows",
        default="overlapping",
        choices=["overlapping", "central"],
        help="with --index: candidates of each segment the pre-filter finds (as `rgnet-hf search --segment-windows`)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model folder's own code (model, processor, pipeline) instead of the installed rgnet_hf",
    )
    # Defaults from the app module would import it (and gradio) for `--help`; tests check they agree.
    parser.add_argument(
        "--max-upload-mb",
        type=_positive(float),
        default=500.0,
        help="largest video a submission may ground, in MB of 2**20 bytes (default: 500)",
    )
    parser.add_argument(
        "--max-video-minutes",
        type=_positive(float),
        default=240.0,
        help="longest video a submission may ground, by its container's declared duration (default: 240)",
    )
    parser.add_argument(
        "--max-queue",
        type=_positive(int),
        default=16,
        help="how many submissions may wait; more are refused with a message (default: 16)",
    )
    parser.add_argument(
        "--concurrency", type=_positive(int), default=1, help="how many videos are grounded at once (default: 1)"
    )
    parser.add_argument("--allow-truncated", action="store_true", help=ALLOW_TRUNCATED_HELP)
    parser.set_defaults(handler=run)
    return parser


def _positive(kind: type):
    """An argparse type: a number of `kind` above zero."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ValueError(f"the web app needs the app extra: pip install 'rgnet_hf[app]' ({error})") from error
    from ..web_app import GroundingApp, launch
    from .common import check_device, load_grounding_pipeline

    check_device(args.device)
    if args.index is not None:
        return _run_library(args)
    if args.segment_windows != "overlapping":
        raise ValueError("--segment-windows applies to a library page: give the index with --index")
    # The same loader as `rgnet-hf ground`: the installed classes unless --trust-remote-code.
    pipe = load_grounding_pipeline(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    app = GroundingApp(
        args.model,
        examples=args.examples,
        pipe=pipe,
        max_upload_mb=args.max_upload_mb,
        max_video_minutes=args.max_video_minutes,
        max_queue=args.max_queue,
        concurrency=args.concurrency,
        allow_truncated=args.allow_truncated,
    )
    launch(app, args.host, args.port, args.share)
    return 0


def _run_library(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ...search.backends import require_faiss
    from ...search.index import LibraryIndex
    from ..library_app import LibrarySearchApp
    from ..web_app import launch
    from .common import load_grounding_pipeline

    if args.examples:
        raise ValueError("--examples and --index do not go together: the library page searches the index's videos")
    require_faiss()
    if not Path(args.index).is_dir():
        raise FileNotFoundError(f"--index {args.index}: no such index folder; build one with `rgnet-hf index`")
    LibraryIndex.open(args.index)  # a broken index fails before the model loads
    pipe = load_grounding_pipeline(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    app = LibrarySearchApp(
        args.index,
        args.model,
        pipe=pipe,
        max_queue=args.max_queue,
        concurrency=args.concurrency,
        segment_windows=args.segment_windows,
    )
    launch(app, args.host, args.port, args.share)
    return 0
