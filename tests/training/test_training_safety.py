"""Training that fails fails loudly: configuration checked before the first step, no non-finite weights saved, safe
and robust resume, folders replaced without a moment of absence."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_SIZES

from rgnet_hf import RGNetForVideoGrounding
from rgnet_hf.hub.atomic_files import restore_interrupted_replace, write_folder_atomically
from rgnet_hf.synthetic.mini_releases import make_mad_release
from rgnet_hf.training import NonFiniteTrainingError, TrainingConfig, load_data_from_spec, train

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = dict(
    **TINY_SIZES,
    window_length=64,
    max_text_length=8,
    top_k_windows=5,
    num_decoder_layers=2,
)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("mad_release")
    paths = make_mad_release(
        root, num_movies=3, frames_per_movie=(300, 400), queries_per_movie=8, feature_dim=24, text_dim=16
    )
    spec = dict(format="mad", **{key: str(value) for key, value in paths.items()})
    return spec, load_data_from_spec(spec)


def _config(release, output_dir, **overrides) -> TrainingConfig:
    spec, _ = release
    values = dict(
        output_dir=str(output_dir),
        preset="mad",
        model=dict(TINY_MODEL),
        data=spec,
        eval_split=None,
        num_epochs=5,
        max_steps=2,
        batch_size=2,
        num_workers=0,
        log_with=None,
        log_every_steps=1,
        checkpoint_every_steps=1,
        keep_checkpoints=2,
        seed=3,
    )
    values.update(overrides)
    return TrainingConfig.from_dict(values)


def _train(release, output_dir, **overrides) -> dict:
    return train(_config(release, output_dir, **overrides), dataset=release[1])


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def _finite(folder: Path) -> bool:
    from safetensors.torch import load_file

    return all(bool(torch.isfinite(t).all()) for t in load_file(folder / "model.safetensors").values())


# --------------------------------------------------------------------------------------------------------------------
# the whole configuration is checked before the first step


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": dict(TINY_MODEL, hiden_size=32)}, r"unknown model option 'hiden_size' \(did you mean 'hidden_size'"),
        ({"data_extra": {"video_feature": "x.h5"}}, r"unknown data option 'video_feature'.*did you mean"),
        ({"best_metric": ["R@1 IoU=0.7"]}, r"best_metric names 'R@1 IoU=0.7'.*does not produce"),
        ({"best_metric": "R@1 IoU=0.3"}, "best_metric must be a non-empty list"),
        ({"max_grad_norm": -0.1}, "max_grad_norm must be >= 0"),
        ({"learning_rate": "1e-4"}, r"learning_rate must be a finite number, got '1e-4'"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
        ({"lr_drop_epochs": 25}, "lr_drop_epochs must be a list"),
        ({"batch_size": "8"}, "batch_size must be an integer"),
        ({"keep_checkpoints": -1}, "keep_checkpoints"),
        ({"preset": "charades"}, "preset must be one of"),
        ({"gradient_checkpointing": "yes"}, "gradient_checkpointing must be true or false"),
        ({"fused_adamw": 1}, "fused_adamw must be true or false"),
    ],
)
def test_training_config_is_validated_before_anything_runs(release, tmp_path, change, message):
    change = dict(change)
    if "data_extra" in change:
        change["data"] = dict(release[0], **change.pop("data_extra"))
    with pytest.raises(ValueError, match=message):
        _config(release, tmp_path / "run", **change)
    assert not (tmp_path / "run").exists()


def test_recipe_lists_files_and_missing_folders_get_clear_errors(release, tmp_path):
    with pytest.raises(ValueError, match="a training recipe must be a mapping of TrainingConfig fields.*got a list"):
        TrainingConfig.from_dict([{"output_dir": str(tmp_path)}])
    with pytest.raises(ValueError, match="model must be a mapping"):
        _config(release, tmp_path / "run", model=[dict(TINY_MODEL)])
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="output_dir .*a_file is a file, not a folder"):
        _config(release, tmp_path / "a_file")
    with pytest.raises(ValueError, match="init_from .*no-such-run/final: no such model folder"):
        _config(release, tmp_path / "run", init_from=str(tmp_path / "no-such-run" / "final"))
    assert not (tmp_path / "run").exists()
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from train import parse_config
    finally:
        sys.path.pop(0)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump([dict(output_dir=str(tmp_path / "o"))]))
    with pytest.raises(SystemExit, match="recipe.yaml: a recipe maps TrainingConfig fields to values, got a list"):
        parse_config(["--config", str(recipe)])
    recipe.write_text(yaml.safe_dump(dict(output_dir=str(tmp_path / "o"), data=release[0], model=[1])))
    with pytest.raises(SystemExit, match="model must be a mapping to take --model.hidden_size"):
        parse_config(["--config", str(recipe), "--model.hidden_size", "64"])


def test_unknown_top_level_option_suggests_the_field(release, tmp_path):
    with pytest.raises(ValueError, match=r"unknown training options: learning_rat \(did you mean 'learning_rate'"):
        _config(release, tmp_path, learning_rat=1e-3)


def test_command_line_typo_in_a_model_key_is_an_error(release, tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from train import parse_config
    finally:
        sys.path.pop(0)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(dict(output_dir=str(tmp_path / "o"), data=release[0], model=dict(TINY_MODEL))))
    with pytest.raises(SystemExit, match="unknown model option 'hiden_size'.*hidden_size"):
        parse_config(["--config", str(recipe), "--model.hiden_size", "64"])


def test_batch_larger_than_the_training_set_is_refused(release, tmp_path):
    num_train = len(release[1]["train"])
    with pytest.raises(ValueError, match=f"needs at least {num_train + 1} training queries.*has {num_train}"):
        _train(release, tmp_path / "run", batch_size=num_train + 1)
    assert not (tmp_path / "run" / "final").exists()


# --------------------------------------------------------------------------------------------------------------------
# non-finite runs stop and never replace finite weights


def _poison_forward(monkeypatch, after_calls: int):
    """The training forward returns a NaN loss from its `after_calls + 1`-th call on."""
    original = RGNetForVideoGrounding.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        if self.training and output.loss is not None:
            calls["n"] += 1
            if calls["n"] > after_calls:
                output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(RGNetForVideoGrounding, "forward", forward)


def test_nan_loss_stops_the_run_and_keeps_the_finite_checkpoints(release, tmp_path, monkeypatch):
    output = tmp_path / "run"
    first = _train(release, output, max_steps=2)
    assert first["global_step"] == 2
    final_digest = _digest(output / "final")
    _poison_forward(monkeypatch, after_calls=1)  # step 3 is finite, step 4 diverges
    with pytest.raises(NonFiniteTrainingError, match=r"the loss is nan at step 4.*checkpoint-3"):
        _train(release, output, max_steps=6)
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert all(_finite(p) for p in output.glob("checkpoint-*"))
    assert _digest(output / "final") == final_digest, "final/ of the finite run is untouched"


def test_non_finite_weights_are_never_saved(release, tmp_path, monkeypatch):
    original_step = torch.optim.AdamW.step
    steps = {"n": 0}

    def step(self, *args, **kwargs):
        result = original_step(self, *args, **kwargs)
        steps["n"] += 1
        if steps["n"] == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    output = tmp_path / "run"
    with pytest.raises(NonFiniteTrainingError, match="weights hold NaN or infinite values at step 2"):
        _train(release, output, max_steps=3)
    assert [p.name for p in output.glob("checkpoint-*")] == ["checkpoint-1"] and _finite(output / "checkpoint-1")
    assert not (output / "final").exists()


# --------------------------------------------------------------------------------------------------------------------
# resume


def test_resume_keeps_the_scheduler_in_json_and_refuses_changed_hyperparameters(release, tmp_path):
    output = tmp_path / "run"
    _train(release, output, max_steps=2, lr_drop_epochs=[0])
    checkpoint = output / "checkpoint-2"
    assert not list(checkpoint.glob("custom_checkpoint_*"))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["scheduler"]["milestones"] == [[0, 1]] and state["training_config"]["learning_rate"] == 1e-4
    with pytest.raises(ValueError, match=r"learning_rate: 0.0001 in the checkpoint, 0.001 now"):
        _train(release, output, max_steps=3, lr_drop_epochs=[0], learning_rate=1e-3)
    with pytest.raises(ValueError, match=r"lr_drop_epochs"):
        _train(release, output, max_steps=3, lr_drop_epochs=[4])
    # Changing only the length of the run is fine.
    assert _train(release, output, max_steps=3, lr_drop_epochs=[0])["global_step"] == 3


class _RunsCode:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {_RunsCode.marker}",))


def test_resume_never_unpickles_a_checkpoint_pickle(release, tmp_path, capsys):
    output = tmp_path / "run"
    _train(release, output, max_steps=2)
    marker = tmp_path / "code-ran"
    _RunsCode.marker = str(marker)
    with open(output / "checkpoint-2" / "custom_checkpoint_0.pkl", "wb") as handle:
        pickle.dump(_RunsCode(), handle)
    torch.save({"state": _RunsCode()}, output / "checkpoint-1" / "custom_checkpoint_0.pkl")
    with pytest.raises(ValueError, match=r"cannot resume from .*checkpoint-2: it holds custom_checkpoint_0.pkl"):
        _train(release, output, max_steps=3, resume=str(output / "checkpoint-2"))
    with pytest.raises(ValueError, match="no intact checkpoint to resume from"):
        _train(release, output, max_steps=3)
    assert not marker.exists(), "a pickle from the checkpoint ran"


def test_resume_auto_skips_a_corrupt_newest_checkpoint(release, tmp_path, capsys):
    output = tmp_path / "run"
    _train(release, output, max_steps=3, keep_checkpoints=3)
    weights = output / "checkpoint-3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])  # a half-written file
    (output / "checkpoint-2" / "trainer_state.json").write_text('{"epoch": 0, "glob')
    capsys.readouterr()
    summary = _train(release, output, max_steps=4, keep_checkpoints=3)
    printed = capsys.readouterr().out
    assert "Resumed from" in printed and "checkpoint-1: epoch" in printed
    assert "skipped: checkpoint-3 (it could not be loaded" in printed and "checkpoint-2 (trainer_state.json" in printed
    assert summary["global_step"] == 4


# --------------------------------------------------------------------------------------------------------------------
# folders replaced without a moment of absence


def _write(text: str):
    def write(folder: Path) -> None:
        (folder / "model.txt").write_text(text)

    return write


def test_replacing_a_folder_never_leaves_none(tmp_path, monkeypatch):
    final = tmp_path / "final"
    write_folder_atomically(final, _write("old"))
    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(source, target):
        calls["n"] += 1
        if calls["n"] == 2:  # moving the new folder into place fails (e.g. the disk is gone)
            raise OSError("rename failed")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_folder_atomically(final, _write("new"))
    monkeypatch.setattr(os, "replace", real_replace)
    assert (final / "model.txt").read_text() == "old"

    def crash(folder: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder_atomically(final, crash)
    assert (final / "model.txt").read_text() == "old" and not list(tmp_path.glob(".final.*"))
    # A process killed between the two renames leaves only `.final.previous`: the next write (or run) restores it.
    os.replace(final, tmp_path / ".final.previous")
    restore_interrupted_replace(final)
    assert (final / "model.txt").read_text() == "old"
    with pytest.raises(FileExistsError, match="already exists"):
        write_folder_atomically(final, _write("new"), overwrite=False)
    write_folder_atomically(final, _write("new"))
    assert (final / "model.txt").read_text() == "new" and not list(tmp_path.glob(".final.*"))
