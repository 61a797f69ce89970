"""`rgnet-hf app --index`: the library page's logic (search, per-video timelines, clips, errors) and the files its
server gives out (only clips of the videos the results point to)."""

from __future__ import annotations

import contextlib
import html
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the web app needs the app extra (gradio)")
pytest.importorskip("faiss", reason="library search needs the search extra (faiss-cpu)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "search"))

from conftest import free_port  # noqa: E402
from library_utils import random_videos, write_cache  # noqa: E402
from raw_video_utils import CLIP_PROJECTION_DIM, PALETTE, build_tiny_clip, build_tiny_rgnet, make_test_video  # noqa: E402

from rgnet_hf import RGNetForVideoGrounding  # noqa: E402
from rgnet_hf.apps.cli import main as cli_main  # noqa: E402
from rgnet_hf.apps.library_app import LibrarySearchApp, render_library_timeline  # noqa: E402
from rgnet_hf.apps.web_app import launch  # noqa: E402
from rgnet_hf.search import LibraryIndex, VideoLibrary  # noqa: E402

SECRET = "not for the web app's clients"
QUERIES = ["a red door opens", "a car drives by"]
# Frames at 0.5 s: kitchen and street have their video files, garden's file is missing.
LENGTHS = {"kitchen": 24, "street": 16, "garden": 20}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library_app")
    clip = build_tiny_clip(root / "clip")
    model = build_tiny_rgnet(root / "rgnet", clip)
    make_test_video(root / "kitchen.mp4", colors=PALETTE[:6], seconds_per_color=2.0, fps=10)
    make_test_video(root / "street.mp4", colors=PALETTE[:4], seconds_per_color=2.0, fps=10)
    (root / "notes.txt").write_text(SECRET)  # beside the library's videos
    # The cache records each source as `<key>.mp4`, relative to its own folder.
    cache = write_cache(
        root / "features.h5",
        random_videos(3, LENGTHS, size=CLIP_PROJECTION_DIM),
        encoder=str(clip.resolve()),
        rate=0.5,
    )
    LibraryIndex.update(root / "index", [cache], RGNetForVideoGrounding.from_pretrained(model).config)
    app = LibrarySearchApp(root / "index", model, device="cpu")
    return root, model, app


@contextlib.contextmanager
def every_window_decoded(app):
    """Enough windows decoded that every video of the library has moments (the missing one included)."""
    app.pipe.engine.top_k_windows = 100
    try:
        yield
    finally:
        app.pipe.engine.top_k_windows = 4


def test_search_gives_the_library_moments_grouped_by_video(library):
    root, model, app = library
    with every_window_decoded(app):
        hits = app.search("\n".join(QUERIES), top_k=20, depth=50, exhaustive=True)
    library_search = VideoLibrary.from_folders(root / "index", model)
    library_search.engine.top_k_windows = 100
    expected = library_search.search(QUERIES, top_k=20, exhaustive=True)
    for moments, result in zip(hits.rankings, expected):
        assert [(m["key"], m["query"]) for m in moments] == [(m.key, m.query) for m in result.moments]
        np.testing.assert_allclose([m["score"] for m in moments], [m.score for m in result.moments], atol=1e-5)
    assert set(hits.videos) == set(LENGTHS)
    assert hits.videos["kitchen"].exists and hits.videos["kitchen"].path == root / "kitchen.mp4"
    assert not hits.videos["garden"].exists
    assert hits.videos["kitchen"].duration == pytest.approx(12.0)

    page = render_library_timeline(hits)
    blocks = re.findall(r'<div class="rgnet-query rgnet-video" data-key="(\w+)"[^>]*data-missing="(\w+)"', page)
    best_key = min(
        ((rank, query, moment["key"]) for query, ms in enumerate(hits.rankings) for rank, moment in enumerate(ms))
    )[2]
    assert blocks[0][0] == best_key and dict(blocks) == {"kitchen": "false", "street": "false", "garden": "true"}
    assert "is not on disk" in page and html.escape(str(root / "garden.mp4")) in page
    # every moment on a timeline, once, labelled with its query and rank
    marks = re.findall(r'data-query-index="(\d+)" data-rank="(\d+)"[^>]*>Q(\d+) #(\d+)</div>', page)
    assert len(marks) == sum(len(moments) for moments in hits.rankings)
    assert all(int(q) + 1 == int(label_q) and rank == label_rank for q, rank, label_q, label_rank in marks)


def test_moments_play_as_clips_of_their_video_and_missing_videos_say_so(library):
    _, _, app = library
    with every_window_decoded(app):
        hits = app.search(QUERIES[0], top_k=20, exhaustive=True)
    choices = dict((hits.moment(value)["key"], value) for _, value in reversed(hits.moment_choices()))
    import av

    clip = app.clip(hits, choices["kitchen"])
    assert clip.parent == app.clip_folder
    moment = hits.moment(choices["kitchen"])
    with av.open(str(clip)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= max(1, int((moment["end"] - moment["start"]) * 10) - 1)
    with pytest.raises(ValueError, match="garden.*is not on disk"):
        app.clip(hits, choices["garden"])


def test_submit_and_user_errors(library):
    import gradio as gr

    _, _, app = library
    with every_window_decoded(app):
        timeline, dropdown, clip, status, hits = app.submit("\n".join(QUERIES), 20, 20, True)
    assert "rgnet-video" in timeline and clip is not None and Path(clip).is_file()
    # the clip is the best moment of a video on disk: moments of the missing video before it are skipped
    choices = [value for _, value in hits.moment_choices()]
    playable = [value for value in choices if hits.videos[hits.moment(value)["key"]].exists]
    assert dropdown.value == playable[0] and len(playable) < len(choices)
    assert status.startswith("2 queries searched in 3 videos")
    for arguments, message in [
        (("  \n", 3, 20, False), "at least one query"),
        (("a door", 0, 20, False), "between 1 and"),
        (("a door", 3, 0, False), "depth"),
    ]:
        with pytest.raises(gr.Error, match=message):
            app.submit(*arguments)


def test_an_index_for_another_model_and_bad_options_are_refused(library, tmp_path, capsys):
    root, _, _ = library
    other = build_tiny_rgnet(tmp_path / "other", root / "clip", seconds_per_feature=1.0)
    with pytest.raises(ValueError, match="1.0 s per feature"):
        LibrarySearchApp(root / "index", other, device="cpu")
    with pytest.raises(FileNotFoundError, match="is not a library index"):
        LibrarySearchApp(tmp_path, other, device="cpu")
    base = ["app", "--model", str(root / "rgnet")]
    assert cli_main([*base, "--index", str(tmp_path / "none")]) == 2
    assert "no such index folder" in capsys.readouterr().err
    assert cli_main([*base, "--index", str(root / "index"), "--examples", str(root / "kitchen.mp4")]) == 2
    assert "--examples and --index do not go together" in capsys.readouterr().err


def test_central_segment_windows_reach_the_library_search(library, capsys):
    root, model, app = library
    central = LibrarySearchApp(root / "index", model, pipe=app.pipe, segment_windows="central")
    hits = central.search(QUERIES[0], top_k=5, depth=3)
    expected = VideoLibrary.from_folders(root / "index", model, segment_windows="central").search(
        QUERIES[:1], top_k=5, depth=3
    )[0]
    assert [(m["key"], m["start"]) for m in hits.rankings[0]] == [(m.key, m.start) for m in expected.moments]
    central.close()
    with pytest.raises(ValueError, match="segment_windows"):
        LibrarySearchApp(root / "index", model, pipe=app.pipe, segment_windows="nearest")
    assert cli_main(["app", "--model", str(root / "rgnet"), "--segment-windows", "central"]) == 2
    assert "--segment-windows applies to a library page" in capsys.readouterr().err


def _status(base_url: str, path) -> tuple[int, bytes]:
    url = base_url.rstrip("/") + "/gradio_api/file=" + urllib.parse.quote(str(path))
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_the_server_gives_out_clips_and_no_library_file(library):
    from gradio_client import Client

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    root, _, app = library
    page = launch(app, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    try:
        client = Client(page.local_url, verbose=False, analytics_enabled=False)
        with every_window_decoded(app):
            timeline, _, clip, status = client.predict(QUERIES[0], 20, 20, True, api_name="/submit")
        assert "rgnet-video" in timeline and "1 query searched" in status
        clip = clip["video"] if isinstance(clip, dict) else clip  # gradio_client versions differ
        assert Path(clip).is_file() and Path(clip).stat().st_size > 0  # the clip, downloaded from the server
        for path in (
            root / "notes.txt",
            root / "kitchen.mp4",
            root / "features.h5",
            root / "index" / "manifest.json",
            root / "rgnet" / "config.json",
        ):
            code, body = _status(page.local_url, path)
            assert code in (403, 404), f"{path.name} answered {code}"
            assert SECRET.encode() not in body
    finally:
        page.close()
