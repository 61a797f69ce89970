"""The web app's logic without a browser: queries, clips, the timeline, errors, and grounding through the pipeline.

The browser test (tests/test_app_browser.py) drives the same app through its page."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the web app needs the app extra (gradio)")

from raw_video_utils import PALETTE, build_tiny_clip, build_tiny_rgnet, make_not_a_video, make_test_video  # noqa: E402

from rgnet_hf.apps.web_app import (  # noqa: E402
    GroundingApp,
    GroundingResult,
    cut_clip,
    example_videos,
    parse_queries,
    render_timeline,
)


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("app_models")
    clip = build_tiny_clip(root / "clip")
    return {
        "with_encoder": build_tiny_rgnet(root / "rgnet", clip),
        "without_encoder": build_tiny_rgnet(root / "rgnet_no_encoder", clip, feature_encoder=None),
    }


@pytest.fixture(scope="module")
def app(model_folders):
    return GroundingApp(model_folders["with_encoder"], device="cpu")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("app_videos") / "colors.mp4", colors=PALETTE[:6], fps=10)


def _frame_colors(path) -> tuple[list[np.ndarray], list[float]]:
    import av

    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        # The right two thirds of a test frame hold its colour (the left third is black).
        colors = [frame.to_ndarray(format="rgb24")[:, frame.width // 2 :].reshape(-1, 3).mean(0) for frame in frames]
        return colors, [float(frame.time) for frame in frames]


def test_parse_queries_one_per_line():
    assert parse_queries("  a man opens the door.\n\n the car drives away \n") == [
        "a man opens the door.",
        "the car drives away",
    ]
    for empty in (None, "", " \n\t\n"):
        with pytest.raises(ValueError, match="at least one query"):
            parse_queries(empty)


def test_cut_clip_holds_the_frames_of_the_moment(video, tmp_path):
    import av

    clip = cut_clip(video, 2.25, 4.0, tmp_path / "clip.mp4")
    colors, times = _frame_colors(clip)
    # At 10 fps the frames shown during [2.25, 4.0) are those stamped 2.2, 2.3, ..., 3.9.
    assert len(colors) == 18
    np.testing.assert_allclose(times, np.arange(18) / 10, atol=1e-6)
    expected = [PALETTE[2]] * 8 + [PALETTE[3]] * 10
    np.testing.assert_allclose(np.stack(colors), np.array(expected, dtype=float), atol=12)
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"


def test_cut_clip_moment_shorter_than_a_frame_and_at_the_end(video, tmp_path):
    colors, _ = _frame_colors(cut_clip(video, 1.53, 1.53, tmp_path / "instant.mp4"))
    assert len(colors) == 1
    np.testing.assert_allclose(colors[0], PALETTE[1], atol=12)
    colors, times = _frame_colors(cut_clip(video, 5.5, 6.0, tmp_path / "end.mp4"))
    assert len(colors) == 5
    np.testing.assert_allclose(np.stack(colors), np.array([PALETTE[5]] * 5, dtype=float), atol=12)


def test_cut_clip_is_upright_even_sided_and_bounded(tmp_path):
    import av

    rotated = make_test_video(tmp_path / "phone.mp4", colors=PALETTE[:2], size=(64, 48), rotation=90)
    with av.open(str(cut_clip(rotated, 0.0, 1.0, tmp_path / "upright.mp4"))) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (48, 64)
    image = frame.to_ndarray(format="rgb24").astype(float)
    # Turned a quarter counter-clockwise, the black left third of the frame lies along the bottom.
    assert image[-5:].mean() < 20 and image[:20].mean() > 60
    big = make_test_video(tmp_path / "big.mp4", colors=PALETTE[:1], size=(250, 130), fps=5)
    with av.open(str(cut_clip(big, 0.0, 1.0, tmp_path / "small.mp4", max_height=65))) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (124, 64)


def test_render_timeline_carries_every_moment():
    rankings = [
        [{"start": 1.0, "end": 3.0, "score": 0.9}, {"start": 5.0, "end": 6.5, "score": 0.4}],
        [{"start": 0.0, "end": 10.0, "score": 0.7}],
    ]
    result = GroundingResult("v.mp4", 10.0, ["a <b>door</b> opens", "the end"], rankings)
    page = render_timeline(result)
    assert html.escape("a <b>door</b> opens") in page and "<b>door</b>" not in page
    found = re.findall(r'data-rank="(\d+)" data-start="([\d.]+)" data-end="([\d.]+)" data-score="([\d.]+)"', page)
    assert found == [
        ("1", "1.0000", "3.0000", "0.900000"),
        ("2", "5.0000", "6.5000", "0.400000"),
        ("1", "0.0000", "10.0000", "0.700000"),
    ]
    # Positions are shares of the video; each rank has its own lane.
    spans = re.findall(r"left:min\(([\d.]+)%, calc\(100% - 14px\)\);width:max\(([\d.]+)%, 14px\);top:(\d+)px", page)
    assert spans == [("10.000", "20.000", "2"), ("50.000", "15.000", "18"), ("0.000", "100.000", "2")]
    assert [choice for _, choice in result.moment_choices()] == ["0:0", "0:1", "1:0"]
    assert result.moment("0:1") == rankings[0][1]


def test_example_videos(tmp_path, video):
    (tmp_path / "b.mp4").write_bytes(b"")
    (tmp_path / "a.mkv").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("no")
    assert [path.name for path in example_videos([tmp_path, video])] == ["a.mkv", "b.mp4", "colors.mp4"]
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        example_videos([tmp_path / "missing.mp4"])


def test_app_grounds_through_the_pipeline(app, video):
    queries = ["a man opens the door.", "the car drives down the street at night."]
    result = app.ground(str(video), "\n".join(queries) + "\n", top_k=3)
    direct = app.pipe({"video": str(video), "text": queries}, top_k=3)
    assert result.queries == queries
    assert result.duration == pytest.approx(6.0, abs=1e-6)
    assert len(result.rankings) == 2
    for mine, theirs, query in zip(result.rankings, direct, queries):
        assert 1 <= len(mine) <= 3 and len(mine) == len(theirs)
        for moment, reference in zip(mine, theirs):
            assert moment["query"] == query
            assert 0.0 <= moment["start"] <= moment["end"] <= result.duration
            np.testing.assert_allclose(
                [moment["start"], moment["end"], moment["score"]],
                [reference["start"], reference["end"], reference["score"]],
                rtol=1e-5,
                atol=1e-6,
            )
    clip = app.clip(result, "1:0")
    moment = result.rankings[1][0]
    colors, _ = _frame_colors(clip)
    assert len(colors) >= 1 and len(colors) <= round((moment["end"] - moment["start"]) * 10) + 1


@pytest.mark.parametrize(
    ("video_kind", "queries", "top_k", "message"),
    [
        ("none", "a man opens the door.", 5, "upload one"),
        ("good", "  \n ", 5, "at least one query"),
        ("good", "a man opens the door.", 0, "between 1 and 20"),
        ("missing", "a man opens the door.", 5, "No such video file"),
        ("text", "a man opens the door.", 5, "not a readable video"),
    ],
)
def test_app_rejects_bad_inputs(app, video, tmp_path, video_kind, queries, top_k, message):
    path = {
        "none": None,
        "good": str(video),
        "missing": str(tmp_path / "missing.mp4"),
        "text": str(make_not_a_video(tmp_path / "notes.mp4")),
    }[video_kind]
    with pytest.raises(ValueError, match=message):
        app.ground(path, queries, top_k)


def test_model_without_encoder_is_explained(model_folders, video):
    app = GroundingApp(model_folders["without_encoder"], device="cpu")
    assert "names no feature encoder" in app.encoder_problem()
    with pytest.raises(ValueError, match="names no feature encoder"):
        app.ground(str(video), "a man opens the door.", 5)


def test_cli_has_the_app_command():
    from rgnet_hf.apps.cli import build_parser

    args = build_parser().parse_args(["app", "--model", "m", "--port", "7999", "--examples", "a.mp4", "clips"])
    assert (args.model, args.host, args.port, args.share, args.examples) == (
        "m",
        "127.0.0.1",
        7999,
        False,
        ["a.mp4", "clips"],
    )


def test_ci_installs_the_browser_before_the_tests():
    from pathlib import Path

    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    install = ci.index("apt-get install -y -qq chromium chromium-driver")
    assert install < ci.index(".venv/bin/python -m pytest -q")


def test_cli_app_names_a_model_it_cannot_load(tmp_path, capsys):
    from rgnet_hf.apps.cli import main

    assert main(["app", "--model", str(tmp_path / "no_such_model")]) == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_app_keeps_only_the_newest_clips(app, video):
    from rgnet_hf.apps.web_app import KEPT_CLIPS

    result = GroundingResult(str(video), 6.0, ["q"], [[{"start": 1.0, "end": 1.5, "score": 1.0, "query": "q"}]])
    clips = [app.clip(result, "0:0") for _ in range(KEPT_CLIPS + 3)]
    kept = set(app.clip_folder.glob("*.mp4"))
    assert len(kept) == KEPT_CLIPS and clips[-1] in kept and clips[0] not in kept


def test_new_queries_on_the_same_video_reuse_its_features(model_folders, video, monkeypatch):
    app = GroundingApp(model_folders["with_encoder"], device="cpu")
    encoder = app.pipe.feature_encoder
    calls = []
    encode_video = encoder.encode_video
    monkeypatch.setattr(
        encoder, "encode_video", lambda *args, **kwargs: calls.append(args) or encode_video(*args, **kwargs)
    )
    app.ground(str(video), "a man opens the door.", 2)
    app.ground(str(video), "a dog runs across the park.\nhe closes the window slowly.", 2)
    assert len(calls) == 1


def test_a_truncated_upload_is_refused_unless_the_app_allows_it(model_folders, tmp_path):
    from rgnet_hf.video_decoding import TruncatedVideoWarning

    whole = make_test_video(tmp_path / "whole.mkv", PALETTE, seconds_per_color=2.0, fps=5)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    strict = GroundingApp(model_folders["with_encoder"], device="cpu")
    with pytest.raises(ValueError, match="is truncated: its container declares 20.0 s"):
        strict.ground(str(cut), "a man opens the door.")

    lenient = GroundingApp(model_folders["with_encoder"], device="cpu", allow_truncated=True)
    with pytest.warns(TruncatedVideoWarning):
        result = lenient.ground(str(cut), "a man opens the door.")
    assert result.declared_duration == pytest.approx(20.0) and result.duration < 19.0
    assert all(moment["end"] <= result.duration + 1e-6 for moment in result.rankings[0])
    _, _, _, status, _ = lenient.submit(str(cut), "a man opens the door.", 3)
    assert "The file is truncated: its container declares 20.0 s" in status
    assert f"grounded in a {result.duration:.1f} s video" in status
    # A whole file after the truncated one is grounded on its own length, with no note.
    assert lenient.ground(str(whole), "a man opens the door.").declared_duration is None


def test_app_clip_folder_goes_with_the_app(model_folders, video):
    import gc

    result = GroundingResult(str(video), 6.0, ["q"], [[{"start": 1.0, "end": 1.5, "score": 1.0, "query": "q"}]])
    closed = GroundingApp(model_folders["with_encoder"], device="cpu")
    assert closed.clip(result, "0:0").is_file()
    closed.close()
    assert not closed.clip_folder.exists()
    dropped = GroundingApp(model_folders["with_encoder"], device="cpu")
    folder = dropped.clip_folder
    assert dropped.clip(result, "0:0").is_file()
    del dropped
    gc.collect()
    assert not folder.exists()
