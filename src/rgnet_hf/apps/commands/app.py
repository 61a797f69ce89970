"""`rgnet-hf app`: the web app (Gradio): ground sentences in a video and play the moments."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("app", help="a web app: ground sentences in a video and play the moments (Gradio)")
    parser.add_argument("--model", required=True, help="a saved RGNet folder or Hub id whose config names an encoder")
    parser.add_argument(
        "--examples", nargs="+", default=None, help="example videos, or folders of videos, to pick from"
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
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ValueError(f"the web app needs the app extra: pip install 'rgnet_hf[app]' ({error})") from error
    from ..web_app import GroundingApp, launch
    from .common import check_device, load_grounding_pipeline

    check_device(args.device)
    # The same loader as `rgnet-hf ground`: the installed classes unless --trust-remote-code.
    pipe = load_grounding_pipeline(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    app = GroundingApp(args.model, examples=args.examples, pipe=pipe)
    launch(app, args.host, args.port, args.share)
    return 0
