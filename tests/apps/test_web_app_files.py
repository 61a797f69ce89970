"""The web app serves exactly the files it needs: its example videos, the clips it cut and the uploads it received.

Files beside an example, in or above the working folder, and reached through a symbolic link are refused."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request

import pytest

pytest.importorskip("gradio", reason="the web app needs the app extra (gradio)")

from conftest import free_port  # noqa: E402
from raw_video_utils import PALETTE, build_tiny_clip, build_tiny_rgnet, make_test_video  # noqa: E402

from rgnet_hf.apps.web_app import GroundingApp, launch  # noqa: E402

SECRET = "not for the web app's clients"


def _status(base_url: str, path) -> tuple[int, bytes]:
    url = base_url.rstrip("/") + "/gradio_api/file=" + urllib.parse.quote(str(path))
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    root = tmp_path_factory.mktemp("app_files")
    model = build_tiny_rgnet(root / "rgnet", build_tiny_clip(root / "clip"))
    videos = root / "videos"
    videos.mkdir()
    example = make_test_video(videos / "street.mp4", colors=PALETTE[:4], fps=10, size=(64, 48))
    (videos / "id_rsa").write_text(SECRET)
    (root / "above.txt").write_text(SECRET)
    (videos / "link.mp4").symlink_to(root / "above.txt")
    working = root / "working"
    working.mkdir()
    (working / "notes.txt").write_text(SECRET)
    previous = os.getcwd()
    os.chdir(working)
    app = GroundingApp(model, device="cpu", examples=[example])
    page = launch(app, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    try:
        yield page.local_url, root, example
    finally:
        page.close()
        os.chdir(previous)


def test_the_example_video_is_served(served):
    url, _, example = served
    status, body = _status(url, example)
    assert status == 200 and body == example.read_bytes()


@pytest.mark.parametrize(
    "relative",
    ["videos/id_rsa", "above.txt", "videos/link.mp4", "working/notes.txt", "videos/../above.txt", "rgnet/config.json"],
)
def test_other_files_are_refused(served, relative):
    url, root, _ = served
    status, body = _status(url, root / relative)
    assert status in (403, 404), f"{relative} answered {status}"
    assert SECRET.encode() not in body
