"""`rgnet-hf evaluate` and `evaluate_split`: RGNet's table next to the zero-shot baseline, and the refusals."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import tiny_config

from rgnet_hf import RGNetForVideoGrounding
from rgnet_hf.apps.cli import main as cli_main
from rgnet_hf.data import EvaluationVideoDataset, load_mad
from rgnet_hf.evaluation import compute_grounding_metrics, evaluate_model, evaluate_zero_shot
from rgnet_hf.evaluation.report import evaluate_split, format_report_table
from rgnet_hf.synthetic.mini_releases import make_mad_release


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_report")
    release = make_mad_release(
        root / "release", num_movies=6, frames_per_movie=(300, 500), queries_per_movie=5, feature_dim=24, text_dim=24
    )
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config(max_predictions=20, text_feature_size=24)).eval()
    model.save_pretrained(root / "model")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"format": "mad", **{k: str(v) for k, v in release.items()}}}))
    dataset = load_mad(**{k: str(v) for k, v in release.items()})
    dataset.save_to_disk(str(root / "saved"))
    return {"root": root, "release": release, "model": model, "recipe": recipe, "dataset": dataset}


def test_the_report_holds_the_official_cells_and_the_baseline_on_the_same_queries(setup):
    model, split = setup["model"], setup["dataset"]["test"]
    report = evaluate_split(model, split)
    videos = EvaluationVideoDataset(split, max_text_length=model.config.max_text_length)
    official = evaluate_model(model, videos)
    # The MAD table's cells (IoU 0.1 / 0.3 / 0.5) are the official evaluation's; IoU 0.7 is added.
    for key, value in official.items():
        if key.startswith("R@") and "IoU" in key or key == "mIoU":
            assert report["rgnet"][key] == pytest.approx(value, abs=1e-12), key
    assert {"R@1 IoU=0.7", "R@100 IoU=0.7"} <= set(report["rgnet"])
    baseline = evaluate_zero_shot(videos, "mad")
    for key in ("R@1 IoU=0.1", "R@5 IoU=0.3", "mIoU"):
        assert report["zero_shot"][key] == pytest.approx(baseline[key], abs=1e-12)
    assert report["num_queries"] == official["num_queries"] == len(split)
    table = format_report_table(report)
    assert "RGNet" in table and "zero-shot" in table and "\n0.7 " in table and "R@100" in table


def test_evaluate_command_from_a_recipe_and_a_saved_folder(setup, tmp_path, capsys):
    model_dir = str(setup["root"] / "model")
    output = tmp_path / "report.json"
    assert (
        cli_main(
            ["evaluate", "--model", model_dir, "--config", str(setup["recipe"]), "--json", "--output", str(output)]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(output.read_text())
    assert printed["split"] == "test" and printed["zero_shot"] is not None
    expected = evaluate_split(setup["model"], setup["dataset"]["test"])
    assert printed["rgnet"]["R@5 IoU=0.5"] == pytest.approx(expected["rgnet"]["R@5 IoU=0.5"], abs=1e-12)

    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                model_dir,
                "--data",
                str(setup["root"] / "saved"),
                "--split",
                "validation",
                "--ks",
                "1,5",
                "--iou-thresholds",
                "0.3,0.5",
                "--no-baseline",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "R@5" in table and "R@10" not in table and "\n0.5 " in table and "zero-shot" not in table


def test_evaluate_refusals_name_the_problem(setup, tmp_path, capsys):
    model_dir = str(setup["root"] / "model")

    def error(*argv) -> str:
        assert cli_main(["evaluate", "--model", model_dir, *argv]) == 2
        return capsys.readouterr().err

    assert "no such dataset folder" in error("--data", str(tmp_path / "missing"))
    (tmp_path / "plain").mkdir()
    assert "neither a folder written by `rgnet-hf prepare`" in error("--data", str(tmp_path / "plain"))
    assert "'final' is not in the dataset; its splits: train, validation, test" in error(
        "--config", str(setup["recipe"]), "--split", "final"
    )
    assert "--ks must be comma-separated numbers" in error("--config", str(setup["recipe"]), "--ks", "1,five")
    # Features at another rate than the model's would put every moment at the wrong time: refused.
    other_rate = RGNetForVideoGrounding(tiny_config(seconds_per_feature=0.5, text_feature_size=24))
    other_rate.save_pretrained(tmp_path / "half_hertz")
    assert cli_main(["evaluate", "--model", str(tmp_path / "half_hertz"), "--config", str(setup["recipe"])]) == 2
    assert "0.2 s apart but the model reads 0.5 s per feature" in capsys.readouterr().err


def test_compute_grounding_metrics_is_what_the_report_uses_for_a_custom_table(setup):
    report = evaluate_split(setup["model"], setup["dataset"]["test"], ks=(1,), iou_thresholds=(0.7,), baseline=False)
    assert set(report["rgnet"]) >= {"R@1 IoU=0.7", "mIoU"} and report["zero_shot"] is None
    assert report["zero_shot_skipped"] is None
    assert compute_grounding_metrics([[[0.0, 1.0]]], [[0.0, 1.0]], ks=(1,), iou_thresholds=(0.7,))["R@1 IoU=0.7"] == 1
