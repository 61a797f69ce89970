"""Training checkpoints: saving, finding the newest intact one, and what a resumed run must share with it."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import torch

from ..hub.atomic_files import write_folder_atomically
from ..hub.model_folder import save_model_folder
from ..modeling_rgnet import RGNetForVideoGrounding
from .config import RESUME_FIXED_FIELDS, TrainingConfig

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _all_finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _scheduler_state(scheduler) -> dict:
    """The scheduler's few numbers as JSON (its milestones `Counter` as pairs); never a pickle."""
    state = dict(scheduler.state_dict())
    state["milestones"] = sorted([int(k), int(v)] for k, v in state["milestones"].items())
    return state


def _load_scheduler_state(scheduler, state: dict) -> None:
    state = dict(state)
    state["milestones"] = Counter({int(k): int(v) for k, v in state["milestones"]})
    scheduler.load_state_dict(state)


def _save_checkpoint(accelerator, output_dir: Path, state: dict, keep: int) -> Path:
    """Write `checkpoint-<step>` atomically: everything goes to a temporary folder that is renamed at the end. Older
    checkpoints are rotated away only once the new one is complete."""
    final = output_dir / f"checkpoint-{state['global_step']}"
    partial = output_dir / f".checkpoint-{state['global_step']}.partial"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        with open(partial / STATE_FILE, "w") as handle:
            json.dump(state, handle, indent=2, default=str)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in _checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from, or None when it looks intact (the load itself is the final check)."""
    pickles = sorted(p.name for p in folder.glob("custom_checkpoint_*.pkl"))
    if pickles:
        # Written by an older version (the scheduler registered with Accelerate); never unpickled.
        return f"it holds {', '.join(pickles)}, a pickle this version does not load"
    try:
        with open(folder / STATE_FILE) as handle:
            state = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        return f"{STATE_FILE} is missing or unreadable ({error})"
    missing = {"epoch", "batches_done_in_epoch", "global_step"} - set(state if isinstance(state, dict) else {})
    if missing:
        return f"{STATE_FILE} lacks {', '.join(sorted(missing))}"
    return None


def _resume_candidates(config: TrainingConfig, output_dir: Path) -> list[Path]:
    """Checkpoints to try, best first: the one named by `resume`, or every checkpoint of `output_dir`, newest first."""
    if not config.resume:
        return []
    if config.resume == "auto":
        return _checkpoints(output_dir)[::-1]
    path = Path(config.resume)
    if not path.is_dir():
        raise FileNotFoundError(f"cannot resume from {path}: no such checkpoint folder")
    return [path]


def _changed_hyperparameters(saved: dict | None, config: TrainingConfig) -> list[str]:
    if saved is None:
        return []
    # Compared as they read back from JSON (tuples become lists, paths strings).
    current = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return [
        f"{name}: {saved[name]!r} in the checkpoint, {current[name]!r} now"
        for name in RESUME_FIXED_FIELDS
        if name in saved and saved[name] != current[name]
    ]


def _save_model_atomically(model: RGNetForVideoGrounding, folder: Path, **card) -> None:
    """Replace `folder` with a saved copy of `model` (weights, processor, card); a complete copy always exists.
    `card`: `evaluation`, `license`, `base_model` of [`save_model_folder`]."""
    write_folder_atomically(folder, lambda partial: save_model_folder(model, partial, **card))


__all__ = [
    "STATE_FILE",
]
