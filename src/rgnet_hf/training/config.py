"""Training recipes: [`TrainingConfig`] (checked whole before the first step) and the data spec it names."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..configuration_rgnet import RGNetConfig
from ..evaluation.model_evaluation import evaluation_metric_names

logger = logging.getLogger(__name__)


# Fields a resumed run must share with the run that wrote the checkpoint: the optimiser, scheduler and data order
# restored from it follow them, so a changed value would be silently ignored or would make another run.
RESUME_FIXED_FIELDS = (
    "preset",
    "model",
    "init_from",
    "train_split",
    "learning_rate",
    "weight_decay",
    "lr_drop_epochs",
    "lr_drop_factor",
    "max_grad_norm",
    "batch_size",
    "gradient_accumulation_steps",
    "mixed_precision",
    "shuffle",
    "seed",
)


def _close_match(name: str, choices) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_number(config, name: str, minimum: float, strict: bool = False, optional: bool = False) -> None:
    value = getattr(config, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r} ({type(value).__name__})")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")


def _check_integer(config, name: str, minimum: int, optional: bool = False) -> None:
    value = getattr(config, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")


def _is_local_path(name: str) -> bool:
    """A local folder name rather than a Hub id (`owner/name`), as the command line tells them apart."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def _check_model_keys(model: Any) -> None:
    if not isinstance(model, dict):
        raise ValueError(f"model must be a mapping of RGNetConfig fields, got {type(model).__name__}")
    known = set(inspect.signature(RGNetConfig.__init__).parameters) - {"self", "kwargs"}
    known |= set(RGNetConfig().to_dict())  # the base configuration's own fields (e.g. `dtype`)
    known.add("initializer_range")  # the older name of `learned_embedding_init_std`, still accepted
    for key in model:
        if key not in known:
            raise ValueError(f"unknown model option {key!r}{_close_match(str(key), known)}: not an RGNetConfig field")


def _check_data_keys(data: Any) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"data must be a mapping, got {type(data).__name__}")
    if not data:
        return  # the dataset is handed to `train` directly
    loaders = _data_loaders()
    kind = data.get("format")
    if kind not in loaders:
        raise ValueError(f"data.format must be one of {', '.join(loaders)}, got {kind!r}")
    parameters = inspect.signature(loaders[kind]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in set(data) - {"format"}:
        if key not in parameters:
            raise ValueError(
                f"unknown data option {key!r} for format {kind!r}{_close_match(str(key), parameters)}; "
                f"options: {', '.join(parameters)}"
            )


@dataclass
class TrainingConfig:
    """Everything a training run reads. The recipes in `examples/configs/*.yaml` set these fields.

    Data (`data`): `{"format": "mad" | "ego4d_nlq" | "cone" | "saved" | "prepared", ...loader arguments}` (see
    [`load_data_from_spec`]). [`TrainingConfig.validate`] checks every field, the `model` and `data` keys and the
    metric names of `best_metric` before anything runs.
    """

    output_dir: str = "outputs/rgnet"
    data: dict = field(default_factory=dict)
    train_split: str = "train"
    eval_split: str | None = "validation"
    preset: str = "mad"
    model: dict = field(default_factory=dict)  # RGNetConfig overrides
    init_from: str | None = None  # a saved RGNet folder whose weights start the run (Ego4D fine-tuning)
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    lr_drop_epochs: list[int] = field(default_factory=lambda: [25])
    lr_drop_factor: float = 0.1
    max_grad_norm: float | None = 0.1  # None or 0: no clipping
    num_epochs: int = 35
    max_steps: int | None = None  # stop after this many optimiser steps (tests, demos)
    batch_size: int = 8  # queries per process and step (in-batch pairs: batch_size ** 2 windows)
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16" (autocast through Accelerate)
    fused_adamw: bool = True  # the fused AdamW kernel when training on CUDA; other devices keep the default AdamW
    gradient_checkpointing: bool = False  # recompute layer activations in the backward pass: less memory, more time
    shuffle: bool = True
    seed: int = 2020
    num_workers: int = 2
    eval_every_epochs: int = 1  # 0: never
    eval_max_videos: int | None = None
    eval_memory_budget_bytes: int = 2 * 2**30
    best_metric: list[str] = field(default_factory=lambda: ["R@1 IoU=0.3", "R@1 IoU=0.5"])
    checkpoint_every_steps: int = 0  # 0: at the end of every epoch
    keep_checkpoints: int = 2  # 0: keep all
    resume: str | None = "auto"  # "auto": the newest intact checkpoint of output_dir; a path; or None
    log_with: str | None = "tensorboard"
    log_every_steps: int = 10
    push_to_hub: str | None = None
    # Test hook: the process kills itself (SIGKILL) right after this optimiser step, as a crash would.
    kill_after_step: int | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        if not isinstance(values, Mapping):
            raise ValueError(
                f"a training recipe must be a mapping of TrainingConfig fields (name: value), got a "
                f"{type(values).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            hints = ", ".join(f"{key}{_close_match(key, known)}" for key in unknown)
            raise ValueError(f"unknown training options: {hints}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Check the whole configuration; every message names the field."""
        for name in ("output_dir", "train_split", "preset"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise ValueError(f"output_dir {self.output_dir} is a file, not a folder: choose another output_dir")
        if self.preset not in RGNetConfig.preset_names():
            raise ValueError(f"preset must be one of {', '.join(RGNetConfig.preset_names())}, got {self.preset!r}")
        for name in ("batch_size", "gradient_accumulation_steps", "num_epochs", "log_every_steps"):
            _check_integer(self, name, 1)
        for name in ("num_workers", "eval_every_epochs", "checkpoint_every_steps", "keep_checkpoints", "seed"):
            _check_integer(self, name, 0)
        _check_integer(self, "eval_memory_budget_bytes", 1)
        for name in ("max_steps", "eval_max_videos", "kill_after_step"):
            _check_integer(self, name, 1, optional=True)
        _check_number(self, "learning_rate", 0.0, strict=True)
        _check_number(self, "weight_decay", 0.0)
        _check_number(self, "lr_drop_factor", 0.0, strict=True)
        _check_number(self, "max_grad_norm", 0.0, optional=True)
        if not isinstance(self.lr_drop_epochs, list) or not all(
            isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in self.lr_drop_epochs
        ):
            raise ValueError(f"lr_drop_epochs must be a list of epochs (integers >= 0), got {self.lr_drop_epochs!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")
        for name in ("shuffle", "fused_adamw", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if (
            not isinstance(self.best_metric, list)
            or not self.best_metric
            or not all(isinstance(name, str) for name in self.best_metric)
        ):
            raise ValueError(f"best_metric must be a non-empty list of metric names, got {self.best_metric!r}")
        dataset_name = RGNetConfig.from_preset(self.preset).dataset_name
        if isinstance(self.model, dict) and isinstance(self.model.get("dataset_name"), str):
            dataset_name = self.model["dataset_name"]
        check_best_metric(self.best_metric, dataset_name)
        for name in ("eval_split", "init_from", "resume", "log_with", "push_to_hub"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or null, got {value!r}")
        if self.init_from is not None and _is_local_path(self.init_from) and not Path(self.init_from).is_dir():
            raise ValueError(
                f"init_from {self.init_from}: no such model folder (a saved RGNet folder, or a Hub id owner/name)"
            )
        _check_model_keys(self.model)
        _check_data_keys(self.data)


# ------------------------------------------------------------------------------------------------------------------
# data


def _data_loaders() -> dict:
    from .. import data as rgnet_data

    return {
        "mad": rgnet_data.load_mad,
        "ego4d_nlq": rgnet_data.load_ego4d_nlq,
        "cone": rgnet_data.load_cone_variant,
        "saved": rgnet_data.load_grounding_dataset,
        "prepared": rgnet_data.load_prepared,
    }


def load_data_from_spec(spec: dict[str, Any]):
    """A [`GroundingDatasetDict`] from a data spec: `format` selects the loader, the other keys are its arguments."""
    _check_data_keys(spec)
    spec = dict(spec)
    kind = spec.pop("format", None)
    loaders = _data_loaders()
    if kind not in loaders:
        raise ValueError(f"data.format must be one of {', '.join(loaders)}, got {kind!r}")
    return loaders[kind](**spec)


def check_best_metric(best_metric: list[str], dataset_name: str) -> None:
    """Refuse a `best_metric` that evaluation will not produce, before the first step rather than after an epoch."""
    available = evaluation_metric_names(dataset_name)
    for name in best_metric:
        if name not in available:
            raise ValueError(
                f"best_metric names {name!r}{_close_match(name, available)}, which evaluation does not produce; "
                f"metrics: {', '.join(available)}"
            )


def selection_score(metrics: dict[str, float], keys: list[str]) -> float:
    """The official model-selection criterion: the mean of the named metrics (R@1 at IoU 0.3 and 0.5)."""
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise KeyError(f"best_metric names metrics that evaluation did not produce: {missing}")
    return float(np.mean([metrics[k] for k in keys]))


__all__ = [
    "RESUME_FIXED_FIELDS",
    "TrainingConfig",
    "check_best_metric",
    "load_data_from_spec",
    "selection_score",
]
