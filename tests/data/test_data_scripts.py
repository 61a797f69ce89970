"""The dataset_scripts command-line tools on generated mini releases: summary, save, reload with features."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rgnet_hf.data import load_grounding_dataset

SCRIPTS = Path(__file__).resolve().parents[2] / "dataset_scripts"


def _script(name: str):
    sys.path.insert(0, str(SCRIPTS))  # the scripts import their `_common` helpers
    try:
        spec = importlib.util.spec_from_file_location(f"dataset_script_{name}", SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def test_build_mad(tmp_path, capsys):
    _script("make_mini_release").main(["--kind", "mad", "--output-dir", str(tmp_path / "release")])
    summary = _script("build_mad").main(
        ["--release-dir", str(tmp_path / "release"), "--output-dir", str(tmp_path / "out")]
    )
    printed = capsys.readouterr().out
    assert "mad data report" in printed and "zero_length" in printed and "queries" in printed
    assert summary["train"]["queries"] == 15 and summary["validation"]["queries"] == 6
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    loaded = load_grounding_dataset(tmp_path / "out")
    assert loaded["train"][0]["video_features"][0:900].shape[1] == 512
    assert loaded["test"][0]["sentence_features"].shape == (512,)
    assert loaded.report.splits["train"].dropped["negative_start"]


def test_build_ego4d_nlq(tmp_path):
    release = _script("make_mini_release").main(["--kind", "ego4d", "--output-dir", str(tmp_path / "release")])
    arguments = [
        "--annotations-dir",
        str(release["annotations_dir"]),
        "--video-features-dir",
        str(release["video_features_dir"]),
        "--text-features",
        str(release["text_features"]),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    summary = _script("build_ego4d_nlq").main(arguments)
    assert set(summary) == {"train", "validation", "test", "train_naq"}
    assert summary["test"]["moments"] is None
    loaded = load_grounding_dataset(tmp_path / "out")
    assert loaded["train"][0]["text_features"].shape[1] == 512
    assert loaded.report.splits["train_naq"].fixed["reversed_timestamps"]


def test_build_cone_variant(tmp_path):
    _script("make_mini_release").main(["--kind", "cone-ego4d", "--output-dir", str(tmp_path / "release")])
    data_dir = tmp_path / "release" / "data"
    summary = _script("build_cone_variant").main(
        ["--dataset", "ego4d", "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out")]
    )
    assert set(summary) == {"train", "validation", "test", "train_naq"}
    sidecar = json.loads((tmp_path / "out" / "rgnet_data.json").read_text())
    assert sidecar["feature_sources"]["train_naq"]["video_path"].endswith("egovlp_video_feature_naq")
    assert sidecar["feature_sources"]["train"]["video_path"].endswith("egovlp_video_feature_1.87fps")
    loaded = load_grounding_dataset(tmp_path / "out")
    row = loaded["validation"][0]
    assert np.asarray(row["video_features"]).shape[1] == 256

    with pytest.raises(SystemExit):
        _script("build_cone_variant").main(["--dataset", "mad", "--output-dir", str(tmp_path / "x")])


def test_push_to_hub_sends_rows_and_sidecar(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    pushed, uploaded = [], []

    def fake_push(self, repo_id, **kwargs):
        pushed.append((repo_id, {name: split.format["type"] for name, split in self.items()}, kwargs))

    def fake_upload(self, **kwargs):
        uploaded.append(kwargs)

    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", fake_push)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_file", fake_upload)
    _script("make_mini_release").main(["--kind", "mad", "--output-dir", str(tmp_path / "release")])
    _script("build_mad").main(
        [
            "--release-dir",
            str(tmp_path / "release"),
            "--output-dir",
            str(tmp_path / "out"),
            "--push-to-hub",
            "someone/mad-rows",
            "--private",
        ]
    )
    assert pushed == [("someone/mad-rows", {"train": None, "validation": None, "test": None}, {"private": True})]
    assert uploaded[0]["path_in_repo"] == "rgnet_data.json" and uploaded[0]["repo_type"] == "dataset"
    assert json.loads(uploaded[0]["path_or_fileobj"])["dataset_name"] == "mad"
