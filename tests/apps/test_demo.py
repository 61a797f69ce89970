"""`rgnet-hf demo`: the whole path (synthetic benchmark, training, metric, grounding, picture) on a short run."""

from __future__ import annotations

from rgnet_hf import RGNetForVideoGrounding
from rgnet_hf.apps.cli import main as cli_main


def test_demo_writes_picture_table_and_model(tmp_path, capsys):
    assert cli_main(["demo", "--output", str(tmp_path / "demo"), "--epochs", "1"]) == 0
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
