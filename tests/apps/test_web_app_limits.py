"""What one submission may cost the web app: its upload size and video duration limits, checked before any decoding,
and the bounded queue with concurrency limits that keeps one user's request from starving the others.

The app runs on a stand-in pipeline that records its calls, so a refused video is shown to cost no grounding."""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from types import SimpleNamespace

import pytest

gr = pytest.importorskip("gradio", reason="the web app needs the app extra (gradio)")

from app_videos import make_stamped_video  # noqa: E402
from conftest import free_port  # noqa: E402
from raw_video_utils import PALETTE, make_test_video  # noqa: E402

from rgnet_hf.apps.web_app import DEFAULT_MAX_QUEUE, MIB, GroundingApp, launch  # noqa: E402

WAIT_S = 30


class RecordingPipe:
    """A `video-grounding` pipeline stand-in: one moment per query, and a record of every call."""

    def __init__(self):
        self.model = SimpleNamespace(config=SimpleNamespace(feature_encoder="tiny-clip"), name_or_path="tiny-rgnet")
        self.calls = []

    def __call__(self, inputs, top_k=5):
        self.calls.append(inputs["video"])
        return [[{"start": 0.5, "end": 1.5, "score": 0.9, "query": query}] for query in inputs["text"]]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("app_limits")
    return {
        "short": make_test_video(root / "short.mp4", colors=PALETTE[:3], fps=5, size=(64, 48)),
        "twenty_hours": make_stamped_video(root / "twenty_hours.mp4", 20 * 3600),
    }


def test_a_video_stamped_twenty_hours_is_refused_before_any_decoding(videos):
    pipe = RecordingPipe()
    app = GroundingApp(pipe=pipe, max_video_minutes=240)
    assert os.path.getsize(videos["twenty_hours"]) < 4096  # tiny on disk: only its declared duration tells
    with pytest.raises(gr.Error) as refused:
        app.submit(str(videos["twenty_hours"]), "a man opens the door.", 5)
    message = str(refused.value)
    assert "twenty_hours.mp4 lasts 1200.0 minutes" in message
    assert "limit of 240 minutes" in message and "--max-video-minutes" in message
    assert pipe.calls == []
    # Within the limit the same app grounds.
    timeline, _, _, status, result = app.submit(str(videos["short"]), "a man opens the door.", 5)
    assert pipe.calls == [str(videos["short"])]
    assert "1 query grounded in a 3.0 s video" in status and 'data-start="0.5000"' in timeline
    assert result.duration == pytest.approx(3.0, abs=1e-6)


def test_a_file_over_the_size_limit_is_refused_before_any_decoding(videos):
    pipe = RecordingPipe()
    size_mb = os.path.getsize(videos["short"]) / MIB
    app = GroundingApp(pipe=pipe, max_upload_mb=size_mb / 2)
    with pytest.raises(gr.Error) as refused:
        app.submit(str(videos["short"]), "a man opens the door.", 5)
    message = str(refused.value)
    assert f"short.mp4 is {size_mb:.1f} MB" in message
    assert f"limit of {size_mb / 2:g} MB" in message and "--max-upload-mb" in message
    assert pipe.calls == []
    app.max_upload_mb = size_mb * 2
    app.submit(str(videos["short"]), "a man opens the door.", 5)
    assert pipe.calls == [str(videos["short"])]


def test_a_video_that_declares_no_duration_is_refused_under_a_duration_limit(videos, monkeypatch):
    import rgnet_hf.video_decoding

    monkeypatch.setattr(rgnet_hf.video_decoding, "_declared_duration", lambda path: None)
    pipe = RecordingPipe()
    with pytest.raises(gr.Error, match="does not declare its duration"):
        GroundingApp(pipe=pipe).submit(str(videos["short"]), "a man opens the door.", 5)
    assert pipe.calls == []
    GroundingApp(pipe=pipe, max_video_minutes=None).submit(str(videos["short"]), "a man opens the door.", 5)
    assert pipe.calls == [str(videos["short"])]


def test_a_still_image_is_refused(tmp_path):
    from PIL import Image

    picture = tmp_path / "frame.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(picture)
    pipe = RecordingPipe()
    with pytest.raises(gr.Error, match="still image"):
        GroundingApp(pipe=pipe).submit(str(picture), "a man opens the door.", 5)
    assert pipe.calls == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_upload_mb", 0),
        ("max_upload_mb", float("nan")),
        ("max_video_minutes", -1.0),
        ("max_video_minutes", float("inf")),
        ("max_queue", 0),
        ("max_queue", 2.5),
        ("max_queue", "4"),
        ("concurrency", None),
    ],
)
def test_bad_limits_are_refused(option, value):
    with pytest.raises(ValueError, match=f"`{option}`"):
        GroundingApp(pipe=RecordingPipe(), **{option: value})


def test_the_built_page_has_a_bounded_queue_and_one_progress_bar():
    app = GroundingApp(pipe=RecordingPipe(), max_queue=3, concurrency=2)
    page = app.build()
    assert page._queue.max_size == 3
    functions = {function.name: function for function in page.fns.values()}
    assert functions["submit"].concurrency_limit == 2
    # Playing a clip has its own limit, so it never waits behind a grounding.
    assert functions["play"].concurrency_limit == 1
    assert functions["play"].concurrency_id != functions["submit"].concurrency_id
    timeline = next(block for block in page.blocks.values() if getattr(block, "elem_id", None) == "rgnet-timeline")
    assert [block._id for block in functions["submit"].show_progress_on] == [timeline._id]
    assert GroundingApp(pipe=RecordingPipe()).build()._queue.max_size == DEFAULT_MAX_QUEUE


def test_cli_passes_the_limits_to_the_app(monkeypatch):
    import rgnet_hf.apps.web_app as web_app
    from rgnet_hf.apps.cli import main

    seen = {}

    class FakeApp:
        def __init__(self, model, **kwargs):
            seen.update(kwargs, model=model)

    monkeypatch.setattr(web_app, "GroundingApp", FakeApp)
    monkeypatch.setattr(web_app, "launch", lambda app, *args, **kwargs: None)
    import rgnet_hf.apps.commands.common as common

    monkeypatch.setattr(common, "load_grounding_pipeline", lambda *args, **kwargs: "a pipeline")
    arguments = ["app", "--model", "m", "--max-upload-mb", "50", "--max-video-minutes", "30.5"]
    assert main([*arguments, "--max-queue", "4", "--concurrency", "2", "--allow-truncated"]) == 0
    assert seen["allow_truncated"] is True
    assert (seen["max_upload_mb"], seen["max_video_minutes"], seen["max_queue"], seen["concurrency"]) == (
        50.0,
        30.5,
        4,
        2,
    )
    assert seen["pipe"] == "a pipeline"


def test_cli_refuses_a_limit_that_is_not_positive(capsys):
    from rgnet_hf.apps.cli import main

    with pytest.raises(SystemExit):
        main(["app", "--model", "m", "--max-video-minutes", "0"])
    assert "--max-video-minutes" in capsys.readouterr().err


def _upload(base_url: str, size: int) -> int:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="video.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        + b"\0" * size
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        base_url.rstrip("/") + "/gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def blocking_app(monkeypatch):
    """The app served with a queue of one and tiny uploads; each grounding waits until `release` is set."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = GroundingApp(pipe=RecordingPipe(), max_upload_mb=64 / 1024, max_queue=1, concurrency=1)
    started, release = threading.Event(), threading.Event()

    def ground(video, queries_text, top_k=5):
        started.set()
        release.wait(WAIT_S)
        raise ValueError("released")

    monkeypatch.setattr(app, "ground", ground)
    page = launch(app, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    try:
        yield page, started, release
    finally:
        release.set()
        page.close()


def test_served_app_refuses_big_uploads_and_a_full_queue(blocking_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    page, started, release = blocking_app
    assert page.max_file_size == 64 * 1024
    assert _upload(page.local_url, 1024) == 200
    assert _upload(page.local_url, 65 * 1024) == 413

    client = Client(page.local_url, verbose=False, analytics_enabled=False)
    running = client.submit(None, "a man opens the door.", 5, api_name="/submit")
    assert started.wait(WAIT_S), "the first submission never started"
    waiting = client.submit(None, "the car drives away.", 5, api_name="/submit")
    deadline = time.monotonic() + WAIT_S
    while len(page._queue) < 1 and time.monotonic() < deadline:  # the second one is in the queue
        time.sleep(0.05)
    assert len(page._queue) == 1
    refused = client.submit(None, "a dog runs.", 5, api_name="/submit")
    with pytest.raises(QueueError, match="Queue is full"):
        refused.result(timeout=WAIT_S)
    release.set()
    for job in (running, waiting):
        with pytest.raises(AppError, match="released"):
            job.result(timeout=WAIT_S)


def test_cli_defaults_are_the_apps():
    import inspect

    from rgnet_hf.apps.cli import build_parser

    defaults = build_parser().parse_args(["app", "--model", "m"])
    parameters = inspect.signature(GroundingApp).parameters
    for name in ("max_upload_mb", "max_video_minutes", "max_queue", "concurrency"):
        assert getattr(defaults, name) == parameters[name].default, name
