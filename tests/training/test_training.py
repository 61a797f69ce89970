"""Training with Accelerate: one process, two CPU processes (DDP over gloo), kill and resume, the Trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_SIZES, accelerate_launch_command

from rgnet_hf.synthetic.mini_releases import make_mad_release

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = dict(
    **TINY_SIZES,
    window_length=64,
    max_text_length=8,
    top_k_windows=5,
)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("mad_release")
    paths = make_mad_release(
        root, num_movies=6, frames_per_movie=(600, 900), queries_per_movie=8, feature_dim=24, text_dim=16
    )
    return {key: str(value) for key, value in paths.items()}


def _recipe(release, output_dir, **overrides) -> dict:
    recipe = dict(
        output_dir=str(output_dir),
        preset="mad",
        model=dict(TINY_MODEL),
        data=dict(format="mad", **release),
        eval_split="validation",
        num_epochs=3,
        batch_size=3,
        num_workers=0,
        log_with=None,
        log_every_steps=1,
        seed=7,
    )
    recipe.update(overrides)
    return recipe


def _run_train_script(
    recipe: dict, tmp_path: Path, extra: list[str] = (), processes: int = 1, script: str = "train.py"
):
    config = tmp_path / f"recipe_{len(list(tmp_path.glob('recipe_*')))}.yaml"
    config.write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    if processes == 1:
        command = [sys.executable, str(ROOT / "examples" / script), "--config", str(config), *extra]
    else:
        env["ACCELERATE_USE_CPU"] = "1"
        command = accelerate_launch_command(
            processes,
            str(ROOT / "examples" / script),
            "--config",
            str(config),
            *extra,
        )
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_single_process_training_learns_saves_and_evaluates(release, tmp_path):
    from rgnet_hf import RGNetForVideoGrounding
    from rgnet_hf.training import TrainingConfig, load_data_from_spec, train

    num_train = len(load_data_from_spec(dict(format="mad", **release))["train"])
    summary = train(TrainingConfig.from_dict(_recipe(release, tmp_path / "run", num_epochs=4)))
    assert summary["global_step"] == 4 * (num_train // 3) and summary["epochs"] == 4  # the short last batch is skipped
    assert summary["parameters_in_sync"] and summary["best_score"] is not None
    assert "R@1 IoU=0.3" in summary["last_metrics"] and summary["last_metrics"]["num_queries"] > 0
    losses = [
        json.loads(line)["train/loss"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in line
    ]
    assert losses[-1] < losses[0], "the loss should go down on the training data"
    model = RGNetForVideoGrounding.from_pretrained(tmp_path / "run" / "final")
    assert model.config.window_length == 64
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "final" / "README.md").is_file()
    assert len(list((tmp_path / "run").glob("checkpoint-*"))) == 2  # keep_checkpoints
    assert not list((tmp_path / "run").glob(".*partial"))

    # examples/evaluate.py on the final model reproduces the last validation of the run.
    import importlib.util

    # Loaded by path: the module name `evaluate` belongs to the Hugging Face package.
    spec = importlib.util.spec_from_file_location("rgnet_examples_evaluate", ROOT / "examples" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    evaluate_main = module.main
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(release, tmp_path / "run")))
    output = tmp_path / "metrics.json"
    assert (
        evaluate_main(["--model", str(tmp_path / "run" / "final"), "--config", str(recipe), "--output", str(output)])
        == 0
    )
    metrics = json.loads(output.read_text())
    throughput = metrics.pop("throughput")
    assert metrics == pytest.approx(summary["last_metrics"])
    assert len(throughput["per_process"]) == 1 and throughput["per_process"][0]["windows"] > 0


def test_two_cpu_processes_stay_in_sync(release, tmp_path):
    recipe = _recipe(release, tmp_path / "ddp", max_steps=3, eval_split="validation", num_epochs=2)
    result = _run_train_script(recipe, tmp_path, processes=2)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "terminate called" not in result.stderr  # the process group went before the interpreters exited
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["num_processes"] == 2
    assert summary["parameters_in_sync"] is True
    assert summary["global_step"] == 3
    assert summary["last_metrics"]["num_queries"] == 16  # both processes' videos gathered


def test_kill_and_resume_continues_exactly(release, tmp_path):
    recipe = _recipe(
        release, tmp_path / "full", max_steps=7, checkpoint_every_steps=2, eval_split=None, keep_checkpoints=5
    )
    assert _run_train_script(recipe, tmp_path).returncode == 0
    killed = dict(recipe, output_dir=str(tmp_path / "killed"), kill_after_step=5)
    result = _run_train_script(killed, tmp_path)
    assert result.returncode == -9, "the run must die by SIGKILL after step 5"
    checkpoints = sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"] and not list((tmp_path / "killed").glob(".*partial"))
    resumed = dict(recipe, output_dir=str(tmp_path / "killed"))
    result = _run_train_script(resumed, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Resumed from" in result.stdout and "checkpoint-4" in result.stdout

    from safetensors.torch import load_file

    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    again = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    for name, tensor in full.items():
        torch.testing.assert_close(again[name], tensor, rtol=0, atol=1e-6, msg=name)

    def losses(folder):
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return {row["step"]: row["train/loss"] for row in rows if "train/loss" in row}

    full_losses, resumed_losses = losses(tmp_path / "full"), losses(tmp_path / "killed")
    for step in (5, 6, 7):  # step 5 ran twice in the killed folder: before the kill and after resuming
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-6, abs=1e-7)


def test_command_line_overrides(release, tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from train import parse_config
    finally:
        sys.path.pop(0)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe(release, tmp_path / "o")))
    config = parse_config(
        [
            "--config",
            str(path),
            "--learning_rate",
            "2e-4",
            "--lr_drop_epochs",
            "[120, 170]",
            "--model.hidden_size",
            "64",
            "--data.sentence_features",
            "null",
        ]
    )
    assert config.learning_rate == 2e-4 and config.lr_drop_epochs == [120, 170]
    assert config.model["hidden_size"] == 64 and config.data["sentence_features"] is None
    with pytest.raises(SystemExit, match="unknown option --lr"):
        parse_config(["--config", str(path), "--lr", "1"])


def test_trainer_compatibility(release, tmp_path):
    from transformers import Trainer, TrainingArguments

    from rgnet_hf import RGNetConfig, RGNetForVideoGrounding
    from rgnet_hf.data import RGNetTrainingCollator, RGNetTrainingDataset
    from rgnet_hf.training import load_data_from_spec

    dataset = load_data_from_spec(dict(format="mad", **release))
    model = RGNetForVideoGrounding(RGNetConfig.from_preset("mad", **TINY_MODEL))
    train_set = RGNetTrainingDataset.from_config(dataset["train"], model.config)
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=2,
        per_device_train_batch_size=3,
        remove_unused_columns=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=train_set, data_collator=RGNetTrainingCollator())
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))


def test_gradient_accumulation_and_bf16(release, tmp_path):
    from rgnet_hf.training import TrainingConfig, build_model, load_data_from_spec, train

    for enabled in (False, True):
        model = build_model(TrainingConfig.from_dict(_recipe(release, tmp_path, gradient_checkpointing=enabled)))
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules()) == enabled

    num_batches = len(load_data_from_spec(dict(format="mad", **release))["train"]) // 3
    accumulated = train(
        TrainingConfig.from_dict(
            _recipe(release, tmp_path / "acc", num_epochs=1, eval_split=None, gradient_accumulation_steps=2)
        )
    )
    assert accumulated["global_step"] == num_batches // 2
    # Accelerate fixes the precision once per process: run bf16 in its own process, with gradient checkpointing.
    recipe = _recipe(
        release, tmp_path / "bf16", max_steps=2, eval_split=None, mixed_precision="bf16", gradient_checkpointing=True
    )
    result = _run_train_script(recipe, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    mixed = json.loads((tmp_path / "bf16" / "summary.json").read_text())
    assert mixed["global_step"] == 2 and mixed["last_loss"] == mixed["last_loss"]  # not NaN
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainingConfig.from_dict(_recipe(release, tmp_path / "x", mixed_precision="fp8"))
    with pytest.raises(ValueError, match="unknown training options: lr"):
        TrainingConfig.from_dict(dict(_recipe(release, tmp_path / "x"), lr=1.0))


def test_balanced_video_assignment():
    from itertools import product

    from rgnet_hf.evaluation import balanced_video_assignment

    generator = torch.Generator().manual_seed(0)
    for trial in range(30):
        num_videos, num_processes = 1 + trial % 7, 1 + trial % 3
        costs = torch.randint(1, 50, (num_videos,), generator=generator).tolist()
        assignment = balanced_video_assignment(costs, num_processes)
        assert assignment == balanced_video_assignment(list(costs), num_processes)  # deterministic
        assert len(assignment) == num_processes
        assert sorted(i for indices in assignment for i in indices) == list(range(num_videos))  # each video once
        largest = max(sum(costs[i] for i in indices) for indices in assignment)
        optimal = min(  # brute force over every split
            max(sum(c for c, p in zip(costs, split) if p == process) for process in range(num_processes))
            for split in product(range(num_processes), repeat=num_videos)
        )
        assert largest <= optimal * 4 / 3 - optimal / (3 * num_processes) + 1e-9  # the greedy bound
    # Long videos go to different processes; the short ones fill in.
    assert balanced_video_assignment([10, 1, 9, 1, 1], 2) == [[0, 3], [1, 2, 4]]
    assert balanced_video_assignment([], 3) == [[], [], []]
    with pytest.raises(ValueError, match="num_processes"):
        balanced_video_assignment([1.0], 0)
    with pytest.raises(ValueError, match="video 1"):
        balanced_video_assignment([1.0, float("nan")], 2)


def test_evaluate_with_two_processes_equals_one(release, tmp_path):
    from rgnet_hf import RGNetConfig, RGNetForVideoGrounding

    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    RGNetForVideoGrounding(RGNetConfig.from_preset("mad", **TINY_MODEL)).save_pretrained(model_dir)
    recipe = _recipe(release, tmp_path / "unused")
    outputs = {}
    for processes in (1, 2):
        output = tmp_path / f"metrics_{processes}.json"
        result = _run_train_script(
            recipe, tmp_path, ["--model", str(model_dir), "--output", str(output)], processes, script="evaluate.py"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[processes] = json.loads(output.read_text())
        assert "windows/s" in result.stdout
    one, two = (outputs[p].pop("throughput") for p in (1, 2))
    assert outputs[2] == outputs[1] and outputs[1]["num_queries"] > 0  # identical metrics
    assert [shard["process"] for shard in two["per_process"]] == [0, 1]
    assert all(shard["videos"] > 0 and shard["windows_per_second"] > 0 for shard in two["per_process"])
    assert sum(shard["windows"] for shard in two["per_process"]) == one["per_process"][0]["windows"]
