"""Training RGNet with Accelerate: the released recipes, resumable, on one GPU, many GPUs or CPU processes.

`examples/train.py` is the command line around [`train`]; `rgnet-hf demo` calls it too.
"""

from __future__ import annotations

import dataclasses
import difflib
import heapq
import inspect
import json
import logging
import math
import os
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configuration_rgnet import RGNetConfig
from .feature_extraction_rgnet import pad_sequences
from .file_utils import restore_interrupted_replace, write_folder_atomically
from .grounding_metrics import (
    EVALUATION_PRESETS,
    compute_grounding_metrics,
    recall_key,
    window_recall,
    window_recall_key,
)
from .inference_rgnet import RGNetGroundingEngine
from .model_folder import push_model_folder_to_hub, save_model_folder
from .modeling_rgnet import RGNetForVideoGrounding
from .windowing import ground_truth_windows, num_windows, resolve_window_stride

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


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

    Data (`data`): `{"format": "mad" | "ego4d_nlq" | "cone" | "saved", ...loader arguments}` (see
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
        _check_model_keys(self.model)
        _check_data_keys(self.data)


# ------------------------------------------------------------------------------------------------------------------
# data


def _data_loaders() -> dict:
    from . import data as rgnet_data

    return {
        "mad": rgnet_data.load_mad,
        "ego4d_nlq": rgnet_data.load_ego4d_nlq,
        "cone": rgnet_data.load_cone_variant,
        "saved": rgnet_data.load_grounding_dataset,
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


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation that depends only on (seed, epoch), so a resumed run sees the same order.

    The method is deliberately not called `set_epoch`: Accelerate's data loader calls `set_epoch` with its own
    iteration counter, which restarts at 0 in a resumed run.
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True):
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


# ------------------------------------------------------------------------------------------------------------------
# evaluation


def balanced_video_assignment(costs: list[float], num_processes: int) -> list[list[int]]:
    """Split videos across processes with balanced work: greedy longest-processing-time assignment.

    Videos go in order of decreasing cost (ties: lower index first) to the process with the least work so far (ties:
    lower process index), so every process computes the same split. The busiest process gets at most 4/3 of the
    optimal split's largest load. Returns, per process, the indices of its videos in increasing order.
    """
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be an integer >= 1, got {num_processes!r}")
    for index, cost in enumerate(costs):
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
            raise ValueError(f"the cost of video {index} must be a finite number >= 0, got {cost!r}")
    loads = [(0.0, process) for process in range(num_processes)]  # already a heap
    assignment: list[list[int]] = [[] for _ in range(num_processes)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, process = heapq.heappop(loads)
        assignment[process].append(index)
        heapq.heappush(loads, (load + costs[index], process))
    return [sorted(indices) for indices in assignment]


def _evaluation_cost(videos, index: int, stride: int) -> float:
    """Windows x queries of a video, from the feature store's shape (no features read); 1 when unknown."""
    counts = getattr(videos, "num_frames_and_queries", None)
    if counts is None:
        return 1.0
    num_frames, num_queries = counts(index)
    return float(num_windows(max(num_frames, 1), stride) * num_queries)


def ground_evaluation_video(engine: RGNetGroundingEngine, video: dict[str, Any]) -> list[tuple[Any, list[int]]]:
    """Ground every query of one [`EvaluationVideoDataset`] item: per query, the engine's
    [`VideoGroundingResult`] and the windows its ground-truth moment overlaps (for window recall)."""
    config = engine.model.config
    text_features, text_mask = pad_sequences(video["text_features"], "text_features")
    results = engine.ground(video["video_features"], text_features, text_mask, video["sentence_features"])
    num_video_windows = len(results[0].window_order)
    return [
        (
            result,
            ground_truth_windows(
                float(timestamps[0]),
                float(timestamps[1]),
                config.seconds_per_feature,
                config.window_stride,
                num_video_windows,
            ),
        )
        for result, timestamps in zip(results, video["timestamps"])
    ]


@torch.no_grad()
def evaluate_model(
    model: RGNetForVideoGrounding,
    videos,
    accelerator=None,
    memory_budget_bytes: int = 2 * 2**30,
    max_videos: int | None = None,
    window_scorer: RGNetForVideoGrounding | None = None,
    throughput: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Ground every query of `videos` (an [`EvaluationVideoDataset`]) and score the fused rankings with the
    official metric (and window recall). Every process gets the metrics.

    With several processes, the videos are assigned by [`balanced_video_assignment`] on windows x queries, and the
    results of all processes are gathered once at the end. `window_scorer` ranks the windows with another model (a
    two-stage pipeline). A `throughput` dict is filled with each process's windows (windows x queries), seconds and
    windows/s: `{"per_process": [...], "windows_per_second": total windows / slowest process's seconds}`.
    """
    was_training = model.training
    model.eval()
    config = model.config
    engine = RGNetGroundingEngine(model, memory_budget_bytes=memory_budget_bytes, window_scorer=window_scorer)
    indices = list(range(len(videos) if max_videos is None else min(max_videos, len(videos))))
    num_processes = 1 if accelerator is None else accelerator.num_processes
    if num_processes > 1:
        stride = resolve_window_stride(config.window_length, config.window_stride)
        costs = [_evaluation_cost(videos, index, stride) for index in indices]
        indices = [indices[i] for i in balanced_video_assignment(costs, num_processes)[accelerator.process_index]]
    records = []
    windows_done = 0
    started = time.perf_counter()
    for index in indices:
        video = videos[index]
        if video["timestamps"] is None:
            raise ValueError(f"video {video['video_id']} has no ground truth: evaluate on an annotated split")
        grounded = ground_evaluation_video(engine, video)
        windows_done += len(grounded[0][0].window_order) * len(grounded)
        for query_id, (result, windows), timestamps in zip(video["query_ids"], grounded, video["timestamps"]):
            records.append(
                {
                    "video_index": index,
                    "query_id": query_id,
                    "moments": result.moments.tolist(),
                    "reference": [float(t) for t in timestamps],
                    "window_order": result.window_order.tolist(),
                    "gt_windows": list(windows),
                }
            )
    seconds = time.perf_counter() - started
    process_index = 0 if accelerator is None else accelerator.process_index
    shard = {
        "process": process_index,
        "videos": len(indices),
        "windows": windows_done,
        "seconds": seconds,
        "windows_per_second": windows_done / seconds if seconds > 0 else 0.0,
        "records": records,
    }
    shards = [shard]
    if num_processes > 1:
        from accelerate.utils import gather_object

        shards = gather_object([shard])  # the one collective of the evaluation
    shards = sorted({s["process"]: s for s in shards}.values(), key=lambda s: s["process"])  # gather may pad
    # The single-process order (by video), so the metrics are summed in the same order however many processes ran.
    records = sorted((record for s in shards for record in s.pop("records")), key=lambda r: r["video_index"])
    if was_training:
        model.train()
    slowest = max(s["seconds"] for s in shards)
    total_windows = sum(s["windows"] for s in shards)
    if throughput is not None:
        throughput.clear()
        throughput["per_process"] = shards
        throughput["windows_per_second"] = total_windows / slowest if slowest > 0 else 0.0
    logger.info(
        "evaluation: %d windows in %.2f s; windows/s per process: %s",
        total_windows,
        slowest,
        ", ".join(f"{s['process']}: {s['windows_per_second']:.1f}" for s in shards),
    )
    if not records:
        return {}
    records = list({r["query_id"]: r for r in records}.values())
    preset = config.dataset_name
    metrics = compute_grounding_metrics(
        [r["moments"] for r in records], [r["reference"] for r in records], preset=preset
    )
    metrics.update(
        window_recall(
            [r["window_order"] for r in records],
            [r["gt_windows"] for r in records],
            ks=EVALUATION_PRESETS[preset].window_ks,
        )
    )
    metrics["num_queries"] = len(records)
    return metrics


def evaluation_metric_names(dataset_name: str) -> list[str]:
    """The keys [`evaluate_model`] returns for a dataset (`"mad"` or `"ego4d"`)."""
    preset = EVALUATION_PRESETS[dataset_name]
    names = [recall_key(k, t) for k in preset.ks for t in preset.iou_thresholds] + ["mIoU"]
    return names + [window_recall_key(k) for k in preset.window_ks] + ["num_queries"]


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


# ------------------------------------------------------------------------------------------------------------------
# checkpoints


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


def _save_model_atomically(model: RGNetForVideoGrounding, folder: Path) -> None:
    """Replace `folder` with a saved copy of `model` (weights, processor, card); a complete copy always exists."""
    write_folder_atomically(folder, lambda partial: save_model_folder(model, partial))


# ------------------------------------------------------------------------------------------------------------------
# the loop


def build_model(config: TrainingConfig) -> RGNetForVideoGrounding:
    if config.init_from:
        model = RGNetForVideoGrounding.from_pretrained(config.init_from, **config.model)
    else:
        model = RGNetForVideoGrounding(RGNetConfig.from_preset(config.preset, **config.model))
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def enable_gradient_checkpointing(model: RGNetForVideoGrounding, use_reentrant: bool = False) -> None:
    """Recompute the text-to-video, encoder and decoder layers' activations in the backward pass.

    The non-reentrant variant (the default) works under DDP and with inputs that do not require gradients.
    """
    kwargs = {"use_reentrant": use_reentrant}
    if hasattr(model, "activation_checkpointing_enable"):  # the newer transformers name; the older one warns there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class NonFiniteTrainingError(FloatingPointError):
    """The loss, the gradients or the weights became NaN or infinite: the run stops without saving them."""


class _TrainingRun:
    """One training run: setup, the epoch loop, evaluation and model selection, checkpoints, the final save."""

    def __init__(self, config: TrainingConfig, accelerator=None, dataset=None):
        config.validate()
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.accelerator, self.log_with = self._make_accelerator(accelerator)
        from accelerate.utils import set_seed

        set_seed(config.seed)
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            restore_interrupted_replace(self.output_dir / "final")
            restore_interrupted_replace(self.output_dir / "best")
        self.accelerator.wait_for_everyone()

        dataset = dataset if dataset is not None else load_data_from_spec(config.data)
        model = build_model(config)
        check_best_metric(config.best_metric, model.config.dataset_name)
        self._build_data(dataset, model.config)
        self._build_optimization(model)
        self.state = {
            "epoch": 0,
            "batches_done_in_epoch": 0,
            "global_step": 0,
            "best_score": None,
            "best_metrics": None,
            "training_config": dataclasses.asdict(config),
        }
        self._resume()
        self.total_steps = config.num_epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.metrics_log = self.output_dir / "metrics.jsonl"
        self.last_loss, self.last_metrics = None, {}

    # ---------------------------------------------------------------- setup
    def _make_accelerator(self, accelerator):
        config = self.config
        log_with = config.log_with
        if log_with == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                logger.warning("tensorboard is not installed: logging to metrics.jsonl only")
                log_with = None
        if accelerator is None:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs

            accelerator = Accelerator(
                mixed_precision=config.mixed_precision,
                gradient_accumulation_steps=config.gradient_accumulation_steps,
                log_with=log_with,
                project_dir=str(self.output_dir),
                # Parameters without a gradient in some recipes: the sampler in eval passes, the retrieval head when
                # its loss weight is 0.
                kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            )
        return accelerator, log_with

    def _build_data(self, dataset, model_config) -> None:
        from .data import EvaluationVideoDataset, RGNetTrainingCollator, RGNetTrainingDataset

        config, accelerator = self.config, self.accelerator
        if config.train_split not in dataset:
            raise ValueError(f"the data has no split {config.train_split!r} (splits: {', '.join(dataset)})")
        self.train_set = RGNetTrainingDataset.from_config(dataset[config.train_split], model_config, seed=config.seed)
        per_step = config.batch_size * accelerator.num_processes
        if len(self.train_set) < per_step:
            # The short last batch is dropped, as officially: the run would make no step and save an untrained model.
            raise ValueError(
                f"batch_size {config.batch_size} x {accelerator.num_processes} process(es) needs at least {per_step} "
                f"training queries, but split {config.train_split!r} has {len(self.train_set)}"
            )
        self.sampler = EpochShuffleSampler(len(self.train_set), config.seed, config.shuffle)
        self.loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=config.batch_size,
            sampler=self.sampler,
            collate_fn=RGNetTrainingCollator(negative_windows=model_config.use_negative_window_loss),
            num_workers=config.num_workers,
            drop_last=True,  # the official loop skips the short last batch
            # Its own generator: creating an iterator must not draw from the global RNG, or a resumed run (which
            # creates its iterator after restoring the RNG) would see other dropout and sampler noise.
            generator=torch.Generator().manual_seed(config.seed),
        )
        self.eval_set = None
        if config.eval_split and config.eval_every_epochs:
            if config.eval_split not in dataset:
                raise ValueError(f"the data has no split {config.eval_split!r} (splits: {', '.join(dataset)})")
            self.eval_set = EvaluationVideoDataset(
                dataset[config.eval_split], max_text_length=model_config.max_text_length
            )

    def _build_optimization(self, model) -> None:
        config = self.config
        # AdamW over the parameters that train; the step-decay schedule runs per epoch (not per optimiser step).
        # The fused kernel needs the parameters on the device when the optimiser is built.
        fused = config.fused_adamw and self.accelerator.device.type == "cuda"
        if fused:
            model.to(self.accelerator.device)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay, **({"fused": True} if fused else {})
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=config.lr_drop_epochs, gamma=config.lr_drop_factor
        )
        # The scheduler is not registered with Accelerate (which pickles it): its state goes to the JSON state file.
        self.model, self.optimizer, self.loader = self.accelerator.prepare(model, optimizer, self.loader)
        self.steps_per_epoch = max(1, len(self.loader) // config.gradient_accumulation_steps)

    def _resume(self) -> None:
        """Load the newest intact checkpoint; a corrupt or unreadable newer one is skipped and named."""
        skipped = []
        for folder in _resume_candidates(self.config, self.output_dir):
            problem = _checkpoint_problem(folder)
            if problem is None:
                try:
                    self.accelerator.load_state(str(folder))
                except Exception as error:  # noqa: BLE001 - any failure to read a checkpoint means it is damaged
                    problem = f"it could not be loaded ({type(error).__name__}: {error})"
            if problem is not None:
                if self.config.resume != "auto":
                    raise ValueError(f"cannot resume from {folder}: {problem}")
                skipped.append(f"{folder.name} ({problem})")
                logger.warning("not resuming from %s: %s", folder, problem)
                continue
            with open(folder / STATE_FILE) as handle:
                state = json.load(handle)
            changed = _changed_hyperparameters(state.get("training_config"), self.config)
            if changed:
                raise ValueError(
                    f"cannot resume from {folder} with other hyper-parameters ({'; '.join(changed)}): the optimiser, "
                    "schedule and data order come from the checkpoint. Use the original values, or start a new run "
                    "(another output_dir, or resume: null)."
                )
            if "scheduler" in state:
                _load_scheduler_state(self.scheduler, state["scheduler"])
            else:  # a checkpoint without it: the schedule advances once per finished epoch
                self.scheduler.last_epoch = state["epoch"]
            state["training_config"] = dataclasses.asdict(self.config)
            self.state = state
            note = f" (skipped: {'; '.join(skipped)})" if skipped else ""
            self.accelerator.print(f"Resumed from {folder}: epoch {state['epoch']}, step {state['global_step']}{note}")
            return
        if skipped:
            raise ValueError(
                f"no intact checkpoint to resume from in {self.output_dir}: {'; '.join(skipped)}. Remove them or set "
                "resume: null to start over."
            )

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        config, accelerator, state = self.config, self.accelerator, self.state
        if self.log_with:
            accelerator.init_trackers(
                "rgnet",
                config={k: v for k, v in dataclasses.asdict(config).items() if isinstance(v, (int, float, str, bool))},
            )
        self.progress = tqdm(
            total=self.total_steps,
            initial=state["global_step"],
            disable=not accelerator.is_local_main_process,
            mininterval=1.0,
            desc="training",
        )
        started = time.perf_counter()
        done = state["global_step"] >= self.total_steps
        while state["epoch"] < config.num_epochs and not done:
            done = self._train_epoch()
            epoch_finished = not done or state["batches_done_in_epoch"] >= len(self.loader)
            if epoch_finished:
                self.scheduler.step()
                state["epoch"] += 1
                state["batches_done_in_epoch"] = 0
            if self.eval_set is not None and (
                epoch_finished and (state["epoch"] % config.eval_every_epochs == 0) or done
            ):
                self._evaluate_and_select()
            if not config.checkpoint_every_steps and epoch_finished:
                self._checkpoint()
        self.progress.close()
        return self._finish(time.perf_counter() - started)

    def _train_epoch(self) -> bool:
        """Run the rest of the current epoch; True when the run reached its last step."""
        config, accelerator, state, model = self.config, self.accelerator, self.state, self.model
        epoch = state["epoch"]
        self.train_set.set_epoch(epoch)
        self.sampler.use_epoch(epoch)
        model.train()
        skipped = state["batches_done_in_epoch"]
        epoch_loader = accelerator.skip_first_batches(self.loader, skipped) if skipped else self.loader
        # Accelerate's loaders pass their own iteration counter to `dataset.set_epoch` when they start; a resumed
        # run's counter restarts at 0, so pin it to the real epoch.
        for prepared in {id(self.loader): self.loader, id(epoch_loader): epoch_loader}.values():
            if hasattr(prepared, "set_epoch"):
                prepared.set_epoch(epoch)
        running = []
        for batch in epoch_loader:
            output = self._forward_backward(batch)
            state["batches_done_in_epoch"] += 1
            running.append(float(output.loss.detach()))
            if not accelerator.sync_gradients:
                continue
            state["global_step"] += 1
            self.progress.update(1)
            self.last_loss = float(np.mean(running))
            running = []
            if state["global_step"] % config.log_every_steps == 0 or state["global_step"] == 1:
                terms = {f"train/{k}": float(v.detach()) for k, v in output.loss_dict.items()}
                self._log({"train/loss": self.last_loss, "train/lr": self.scheduler.get_last_lr()[0], **terms})
            if config.checkpoint_every_steps and state["global_step"] % config.checkpoint_every_steps == 0:
                self._checkpoint()
            if config.kill_after_step is not None and state["global_step"] == config.kill_after_step:
                os.kill(os.getpid(), signal.SIGKILL)
            if state["global_step"] >= self.total_steps:
                return True
        return False

    def _forward_backward(self, batch):
        config, accelerator, model = self.config, self.accelerator, self.model
        with accelerator.accumulate(model):
            output = model(**batch)
            loss = output.loss
            if not torch.isfinite(loss.detach()):
                self._stop_non_finite(f"the loss is {float(loss.detach())}")
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                # Synchronised gradients: every process sees the same norm and stops together. Under fp16 the
                # gradient scaler skips overflowing steps itself.
                norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm or float("inf"))
                if config.mixed_precision != "fp16" and norm is not None and not torch.isfinite(torch.as_tensor(norm)):
                    self._stop_non_finite(f"the gradient norm is {float(norm)}")
            self.optimizer.step()
            self.optimizer.zero_grad()
        return output

    def _stop_non_finite(self, what: str) -> None:
        state = self.state
        checkpoints = _checkpoints(self.output_dir)
        last = f"the last checkpoint, {checkpoints[-1]}, is untouched" if checkpoints else "no checkpoint was written"
        raise NonFiniteTrainingError(
            f"{what} at step {state['global_step'] + 1} (epoch {state['epoch']}, batch "
            f"{state['batches_done_in_epoch']}): the run diverged and stops without saving; {last}. Lower the "
            "learning rate or max_grad_norm, or check the data for extreme values."
        )

    def _log(self, values: dict[str, float]) -> None:
        if self.log_with:
            self.accelerator.log(values, step=self.state["global_step"])
        if self.accelerator.is_main_process:
            with open(self.metrics_log, "a") as handle:
                handle.write(json.dumps({"step": self.state["global_step"], **values}) + "\n")

    def _unwrapped_finite_model(self, purpose: str) -> RGNetForVideoGrounding:
        model = self.accelerator.unwrap_model(self.model)
        if not _all_finite(model):
            raise NonFiniteTrainingError(
                f"the weights hold NaN or infinite values at step {self.state['global_step']}: {purpose} is not "
                "written, so no finite checkpoint or model is replaced"
            )
        return model

    def _checkpoint(self) -> None:
        self._unwrapped_finite_model("the checkpoint")
        self.state["scheduler"] = _scheduler_state(self.scheduler)
        _save_checkpoint(self.accelerator, self.output_dir, self.state, self.config.keep_checkpoints)

    def _evaluate_and_select(self) -> None:
        config, accelerator, state = self.config, self.accelerator, self.state
        self.last_metrics = evaluate_model(
            accelerator.unwrap_model(self.model),
            self.eval_set,
            accelerator,
            config.eval_memory_budget_bytes,
            config.eval_max_videos,
        )
        self._log({f"eval/{k}": v for k, v in self.last_metrics.items()})
        score = selection_score(self.last_metrics, config.best_metric)
        if state["best_score"] is None or score > state["best_score"]:
            state["best_score"], state["best_metrics"] = score, self.last_metrics
            if accelerator.is_main_process:
                _save_model_atomically(self._unwrapped_finite_model("best/"), self.output_dir / "best")
        accelerator.print(
            f"epoch {state['epoch']}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in self.last_metrics.items() if k.startswith("R@1 ") or k == "mIoU")
        )

    def _finish(self, seconds: float) -> dict[str, Any]:
        config, accelerator, state = self.config, self.accelerator, self.state
        in_sync = parameters_in_sync(accelerator, self.model)
        accelerator.wait_for_everyone()
        final_dir = self.output_dir / "final"
        if accelerator.is_main_process:
            final_model = self._unwrapped_finite_model("final/")
            _save_model_atomically(final_model, final_dir)
            if config.push_to_hub:
                push_model_folder_to_hub(
                    final_model, config.push_to_hub, commit_message="Upload RGNet trained with rgnet_hf"
                )
        accelerator.wait_for_everyone()
        if self.log_with:
            accelerator.end_training()
        summary = {
            "global_step": state["global_step"],
            "epochs": state["epoch"],
            "last_loss": self.last_loss,
            "best_score": state["best_score"],
            "best_metrics": state["best_metrics"],
            "last_metrics": self.last_metrics,
            "num_processes": accelerator.num_processes,
            "parameters_in_sync": in_sync,
            "seconds": seconds,
            "final_model": str(final_dir),
            "best_model": str(self.output_dir / "best") if state["best_score"] is not None else None,
        }
        if accelerator.is_main_process:
            with open(self.output_dir / "summary.json", "w") as handle:
                json.dump(summary, handle, indent=2, default=float)
        return summary


def train(config: TrainingConfig, accelerator=None, dataset=None) -> dict[str, Any]:
    """Run a training recipe. Returns a summary: steps, last loss, best score, final metrics, output folders.

    The whole configuration is checked before the first step. A NaN or infinite loss, gradient norm or weight stops
    the run with [`NonFiniteTrainingError`] before anything non-finite is saved. `resume: auto` continues from the
    newest intact checkpoint, naming any newer one it skipped; resuming with other optimiser or data hyper-parameters
    (`RESUME_FIXED_FIELDS`) is refused.
    """
    return _TrainingRun(config, accelerator, dataset).run()


def parameters_in_sync(accelerator, model) -> bool:
    """Whether every process holds the same parameters (a checksum gathered from all processes)."""
    unwrapped = accelerator.unwrap_model(model)
    checksum = torch.stack([p.detach().double().sum() for p in unwrapped.parameters()]).sum().reshape(1)
    gathered = accelerator.gather(checksum.to(accelerator.device))
    return bool(torch.allclose(gathered, gathered[0].expand_as(gathered), rtol=0, atol=0)) and not math.isnan(
        float(gathered[0])
    )


__all__ = [
    "NonFiniteTrainingError",
    "TrainingConfig",
    "balanced_video_assignment",
    "enable_gradient_checkpointing",
    "evaluate_model",
    "evaluation_metric_names",
    "ground_evaluation_video",
    "load_data_from_spec",
    "selection_score",
    "train",
]
