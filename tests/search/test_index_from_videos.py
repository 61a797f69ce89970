"""`rgnet-hf index --videos` (encode, then index; resumable) and `--features PREPARED_DIR`, and their refusals."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

pytest.importorskip("faiss", reason="library search needs the search extra (faiss-cpu)")
pytest.importorskip("av")

from raw_video_utils import PALETTE, build_tiny_clip, build_tiny_rgnet, make_test_video  # noqa: E402

from rgnet_hf.apps.cli import main as cli_main  # noqa: E402
from rgnet_hf.data.own_annotations import EXTREMEWHENBENCH_COLUMNS  # noqa: E402
from rgnet_hf.search import LibraryIndex  # noqa: E402
from rgnet_hf.video_text_encoders import load_feature_encoder  # noqa: E402

SPF = 0.5  # build_tiny_rgnet's rate


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("index_videos")
    clip = build_tiny_clip(root / "clip")
    model = build_tiny_rgnet(root / "rgnet", clip)
    videos = root / "videos"
    videos.mkdir()
    for number in range(3):
        make_test_video(videos / f"video{number}.mp4", PALETTE[number : number + 4], seconds_per_color=2.0, fps=5)
    return {"root": root, "clip": clip, "model": model, "videos": videos}


def _entries(path):
    with h5py.File(path, "r") as handle:
        return {key: handle[key][()] for key in handle}


def test_index_videos_encodes_with_the_model_encoder_then_indexes_and_resumes(tmp_path, assets, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("video0.mp4", "video1.mp4"):
        (folder / name).write_bytes((assets["videos"] / name).read_bytes())
    index = tmp_path / "library"
    command = ["index", "--videos", str(folder), "--model", str(assets["model"]), "--output", str(index)]
    assert cli_main([*command, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 video(s) encoded, 0 already done, 0 failed" in printed and "2 videos" in printed
    cache = index / "video_features.h5"
    encoder = load_feature_encoder(assets["clip"])
    features = _entries(cache)
    assert sorted(features) == ["video0", "video1"]
    for key, value in features.items():
        expected = encoder.encode_video(folder / f"{key}.mp4", SPF, progress=False).features
        np.testing.assert_allclose(value, expected, atol=1e-5, rtol=0)
    library = LibraryIndex.open(index)
    assert {video.key: video.source for video in library.videos} == {
        key: str((folder / f"{key}.mp4").resolve()) for key in features
    }

    # one more video in the folder: only it is encoded, and added without rebuilding
    (folder / "video2.mp4").write_bytes((assets["videos"] / "video2.mp4").read_bytes())
    assert cli_main([*command, "--no-progress", "--decode-workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "1 video(s) encoded, 2 already done" in printed and "added 1, re-indexed 0, unchanged 2" in printed
    assert sorted(video.key for video in LibraryIndex.open(index).videos) == ["video0", "video1", "video2"]
    np.testing.assert_array_equal(_entries(cache)["video0"], features["video0"])

    search = ["search", "--index", str(index), "--model", str(assets["model"]), "--query", "a red door", "--json"]
    assert cli_main(search) == 0
    moments = json.loads(capsys.readouterr().out)[0]
    assert moments and {m["path"] for m in moments} <= {str((folder / f"video{n}.mp4").resolve()) for n in range(3)}


def test_index_videos_with_a_file_that_fails_indexes_the_rest_and_says_so(tmp_path, assets, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "good.mp4").write_bytes((assets["videos"] / "video0.mp4").read_bytes())
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    index = tmp_path / "library"
    features_output = tmp_path / "elsewhere" / "features.h5"
    command = ["index", "--videos", str(folder), "--model", str(assets["model"]), "--output", str(index)]
    assert cli_main([*command, "--features-output", str(features_output), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "1 video(s) encoded, 0 already done, 1 failed" in captured.out and "failed broken" in captured.err
    assert "1 video(s) of --videos failed and are not indexed" in captured.err
    assert [video.key for video in LibraryIndex.open(index).videos] == ["good"] and sorted(
        _entries(features_output)
    ) == ["good"]


def test_a_prepared_dataset_folder_indexes_its_video_features(tmp_path, assets, capsys):
    rows = [
        {"qid": f"q{n}", "video_id": f"video{n}", "question": "a red door opens", "correct_interval": [0.5, 2.0]}
        for n in range(3)
    ]
    annotations = tmp_path / "rows.jsonl"
    annotations.write_text("".join(json.dumps({**row, "video_duration_s": 8.0}) + "\n" for row in rows))
    prepared = tmp_path / "data"
    prepare = [
        "prepare", "--annotations", str(annotations), "--videos", str(assets["videos"]), "--model",
        str(assets["model"]), "--output", str(prepared), "--columns",
        EXTREMEWHENBENCH_COLUMNS,
        "--splits", "train=0.34,validation=0.33,test=0.33", "--no-progress",
    ]  # fmt: skip
    assert cli_main(prepare) == 0, capsys.readouterr()
    base = ["index", "--model", str(assets["model"])]
    assert cli_main([*base, "--features", str(prepared), "--output", str(tmp_path / "a")]) == 0
    from_cache = ["--features", str(prepared / "video_features.h5"), "--output", str(tmp_path / "b")]
    assert cli_main([*base, *from_cache]) == 0
    capsys.readouterr()
    one, two = LibraryIndex.open(tmp_path / "a"), LibraryIndex.open(tmp_path / "b")
    assert [v.key for v in one.videos] == [v.key for v in two.videos] == ["video0", "video1", "video2"]
    assert [v.content_hash for v in one.videos] == [v.content_hash for v in two.videos]
    # an unfinished prepare run (no manifest) is refused, naming the folder
    (tmp_path / "unfinished").mkdir()
    assert cli_main([*base, "--features", str(tmp_path / "unfinished"), "--output", str(tmp_path / "c")]) == 2
    assert "unfinished" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_index_refusals_come_before_any_encoding(tmp_path, assets, capsys):
    base = ["index", "--model", str(assets["model"])]
    assert cli_main([*base, "--output", str(tmp_path / "x")]) == 2
    assert "give what to index" in capsys.readouterr().err
    videos = ["--videos", str(assets["videos"])]
    features_output = ["--features-output", str(tmp_path / "f.h5")]
    assert (
        cli_main([*base, "--features", str(tmp_path / "c.h5"), "--output", str(tmp_path / "x"), *features_output]) == 2
    )
    assert "--features-output is where --videos are encoded" in capsys.readouterr().err
    assert cli_main([*base, *videos, "--output", str(tmp_path / "x"), "--decode-workers", "0"]) == 2
    assert "--decode-workers must be 'auto' or an integer >= 1" in capsys.readouterr().err
    # an --output folder that holds something else: refused before the videos are encoded into it
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert cli_main([*base, *videos, "--output", str(taken), "--no-progress"]) == 2
    assert "is not a library index (it holds notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]


def test_index_videos_under_accelerate_launch_shares_the_encoding_and_writes_one_index(tmp_path, assets):
    import os
    import subprocess

    from conftest import accelerate_launch_command

    folder = tmp_path / "videos"
    folder.mkdir()
    for number in range(3):
        (folder / f"video{number}.mp4").write_bytes((assets["videos"] / f"video{number}.mp4").read_bytes())
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    index = tmp_path / "library"
    command = accelerate_launch_command(
        2, "-m", "rgnet_hf.apps.cli", "index", "--videos", str(folder), "--model", str(assets["model"]),
        "--output", str(index), "--no-progress",
    )  # fmt: skip
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1, run.stderr[-3000:]  # one video failed: named, the others indexed
    lines = [line for line in run.stdout.splitlines() if line.startswith("[process")]
    assert sorted(int(line.split(": ")[1].split()[0]) for line in lines) == [1, 2]  # 4 videos over 2 processes
    assert "failed broken" in run.stderr and "1 video(s) of --videos failed and are not indexed" in run.stderr
    assert run.stdout.count("3 videos") == 1  # the main process alone wrote the index
    # the same index as one process builds
    alone = tmp_path / "alone"
    assert cli_main(["index", "--videos", str(folder), "--model", str(assets["model"]), "--output", str(alone),
                     "--no-progress"]) == 1  # fmt: skip
    shared, single = LibraryIndex.open(index), LibraryIndex.open(alone)
    assert [v.key for v in shared.videos] == [v.key for v in single.videos] == ["video0", "video1", "video2"]
    assert [v.num_frames for v in shared.videos] == [v.num_frames for v in single.videos]
    single_features = _entries(alone / "video_features.h5")
    for key, value in _entries(index / "video_features.h5").items():
        np.testing.assert_allclose(value, single_features[key], atol=1e-5, rtol=0)
