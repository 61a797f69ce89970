"""`rgnet-hf demo`: the own-data path on video files (corpus, tiny CLIP, prepare, train, evaluate, pipeline, picture)
and the feature-level demo, on short runs."""

from __future__ import annotations

import json

import pytest

from rgnet_hf import RGNetForVideoGrounding
from rgnet_hf.apps.cli import main as cli_main
from rgnet_hf.apps.demo import run_demo
from rgnet_hf.synthetic.video_corpus import VideoCorpusConfig

SMALL = VideoCorpusConfig(num_videos=6, video_seconds=(40.0, 50.0), events_per_video=(2, 3), event_seconds=(3.0, 6.0))
# One video per split.
TINY = VideoCorpusConfig(num_videos=3, video_seconds=(30.0, 36.0), events_per_video=(2, 2), event_seconds=(3.0, 6.0))


def test_video_demo_prepares_trains_evaluates_and_grounds_a_held_out_file(tmp_path, capsys):
    result = run_demo(tmp_path / "demo", num_epochs=2, corpus=SMALL)
    printed = capsys.readouterr().out
    demo = tmp_path / "demo"
    assert f"Timeline picture: {demo / 'timeline.png'}" in printed
    assert f"rgnet-hf app --model {result['model']}" in printed
    picture = demo / "timeline.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000

    manifest = json.loads((demo / "data" / "manifest.json").read_text())
    test_rows = [json.loads(line) for line in (demo / "data" / "annotations" / "test.jsonl").read_text().splitlines()]
    train_rows = [json.loads(line) for line in (demo / "data" / "annotations" / "train.jsonl").read_text().splitlines()]
    assert {row["clip_id"] for row in test_rows}.isdisjoint(row["clip_id"] for row in train_rows)
    # The grounded file is a held-out test video, with one ranking of 3 moments per annotated sentence.
    held_out = [row for row in test_rows if row["clip_id"] in result["video"]]
    assert held_out and len(result["moments"]) == len(held_out)
    assert all(len(ranking) == 3 for ranking in result["moments"])
    duration = held_out[0]["duration"]
    assert all(0 <= m["start"] < m["end"] <= duration + 1e-6 for ranking in result["moments"] for m in ranking)

    # The model was trained on the prepared features: its encoder, rate and sizes come from the manifest.
    model = RGNetForVideoGrounding.from_pretrained(result["model"])
    assert model.config.feature_encoder == manifest["encoder"]
    assert model.config.video_feature_size == manifest["video_feature_size"] == 24
    report = result["report"]
    assert report["num_queries"] == len(test_rows) and report["zero_shot"] is not None
    assert "zero-shot" in (demo / "metrics.md").read_text()


def test_video_demo_grounds_typed_sentences(tmp_path, capsys):
    result = run_demo(tmp_path / "demo", num_epochs=1, corpus=TINY, queries=["a red circle appears"])
    assert len(result["moments"]) == 1 and result["moments"][0][0]["query"] == "a red circle appears"
    assert "a red circle appears" in capsys.readouterr().out


def test_feature_demo_writes_picture_table_and_model(tmp_path, capsys):
    assert cli_main(["demo", "--features", "--output", str(tmp_path / "demo"), "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    picture = tmp_path / "demo" / "timeline.png"
    table = tmp_path / "demo" / "metrics.md"
    assert f"Timeline picture: {picture}" in printed and f"Metric table:     {table}" in printed
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000
    text = table.read_text()
    assert "RGNet (trained in this demo)" in text and "zero-shot cosine" in text and "R@1 IoU=0.3" in text
    model = RGNetForVideoGrounding.from_pretrained(tmp_path / "demo" / "run" / "final")
    assert model.config.video_feature_size == 64
    assert (tmp_path / "demo" / "metrics.json").is_file()


def test_demo_refuses_typed_sentences_with_the_feature_demo(tmp_path):
    with pytest.raises(SystemExit, match="--query needs the video demo"):
        cli_main(["demo", "--features", "--query", "a red circle", "--output", str(tmp_path / "demo")])
