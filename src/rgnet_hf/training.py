"""Training RGNet with Accelerate: the released recipes, resumable, on one GPU, many GPUs or CPU processes.

`examples/train.py` is the command line around [`train`]; `rgnet-hf demo` calls it too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configuration_rgnet import RGNetConfig
from .feature_extraction_rgnet import pad_sequences
from .grounding_metrics import EVALUATION_PRESETS, compute_grounding_metrics, window_recall
from .inference_rgnet import RGNetGroundingEngine
from .model_folder import push_model_folder_to_hub, save_model_folder
from .modeling_rgnet import RGNetForVideoGrounding
from .windowing import ground_truth_windows

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


@dataclass
class TrainingConfig:
    """Everything a training run reads. The recipes in `examples/configs/*.yaml` set these fields.

    Data (`data`): `{"format": "mad" | "ego4d_nlq" | "cone" | "saved", ...loader arguments}` (see
    [`load_data_from_spec`]).
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
    max_grad_norm: float = 0.1
    num_epochs: int = 35
    max_steps: int | None = None  # stop after this many optimiser steps (tests, demos)
    batch_size: int = 8  # queries per process and step (in-batch pairs: batch_size ** 2 windows)
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    shuffle: bool = True
    seed: int = 2020
    num_workers: int = 2
    eval_every_epochs: int = 1  # 0: never
    eval_max_videos: int | None = None
    eval_memory_budget_bytes: int = 2 * 2**30
    best_metric: list[str] = field(default_factory=lambda: ["R@1 IoU=0.3", "R@1 IoU=0.5"])
    checkpoint_every_steps: int = 0  # 0: at the end of every epoch
    keep_checkpoints: int = 2
    resume: str | None = "auto"  # "auto": the newest checkpoint of output_dir; a path; or None
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
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1 or self.num_epochs < 1:
            raise ValueError("batch_size, gradient_accumulation_steps and num_epochs must be >= 1")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")


# ------------------------------------------------------------------------------------------------------------------
# data


def load_data_from_spec(spec: dict[str, Any]):
    """A [`GroundingDatasetDict`] from a data spec: `format` selects the loader, the other keys are its arguments."""
    from . import data as rgnet_data

    spec = dict(spec)
    kind = spec.pop("format", None)
    loaders = {
        "mad": rgnet_data.load_mad,
        "ego4d_nlq": rgnet_data.load_ego4d_nlq,
        "cone": rgnet_data.load_cone_variant,
        "saved": rgnet_data.load_grounding_dataset,
    }
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


@torch.no_grad()
def evaluate_model(
    model: RGNetForVideoGrounding,
    videos,
    accelerator=None,
    memory_budget_bytes: int = 2 * 2**30,
    max_videos: int | None = None,
    window_scorer: RGNetForVideoGrounding | None = None,
) -> dict[str, float]:
    """Ground every query of `videos` (an [`EvaluationVideoDataset`]) and score the fused rankings with the
    official metric (and window recall). Videos are split across processes; every process gets the metrics.
    `window_scorer` ranks the windows with another model (a two-stage pipeline)."""
    was_training = model.training
    model.eval()
    config = model.config
    engine = RGNetGroundingEngine(model, memory_budget_bytes=memory_budget_bytes, window_scorer=window_scorer)
    indices = list(range(len(videos) if max_videos is None else min(max_videos, len(videos))))
    if accelerator is not None:
        indices = indices[accelerator.process_index :: accelerator.num_processes]
    records = []
    for index in indices:
        video = videos[index]
        if video["timestamps"] is None:
            raise ValueError(f"video {video['video_id']} has no ground truth: evaluate on an annotated split")
        text_features, text_mask = pad_sequences(video["text_features"], "text_features")
        results = engine.ground(video["video_features"], text_features, text_mask, video["sentence_features"])
        num_windows = len(results[0].window_order)
        for query_id, result, timestamps in zip(video["query_ids"], results, video["timestamps"]):
            windows = ground_truth_windows(
                float(timestamps[0]),
                float(timestamps[1]),
                config.seconds_per_feature,
                config.window_stride,
                num_windows,
            )
            records.append(
                {
                    "query_id": query_id,
                    "moments": result.moments.tolist(),
                    "reference": [float(t) for t in timestamps],
                    "window_order": result.window_order.tolist(),
                    "gt_windows": list(windows),
                }
            )
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        records = gather_object(records)
    records = list({r["query_id"]: r for r in records}.values())  # gather may pad with repeats
    if was_training:
        model.train()
    if not records:
        return {}
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


def _save_checkpoint(accelerator, output_dir: Path, state: dict, keep: int) -> Path:
    """Write `checkpoint-<step>` atomically: everything goes to a temporary folder that is renamed at the end."""
    final = output_dir / f"checkpoint-{state['global_step']}"
    partial = output_dir / f".checkpoint-{state['global_step']}.partial"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        with open(partial / STATE_FILE, "w") as handle:
            json.dump(state, handle, indent=2)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in _checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _resolve_resume(config: TrainingConfig, output_dir: Path) -> Path | None:
    if not config.resume:
        return None
    if config.resume == "auto":
        checkpoints = _checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(config.resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    return path


def _save_model_atomically(model: RGNetForVideoGrounding, folder: Path) -> None:
    partial = folder.with_name(f".{folder.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    save_model_folder(model, partial)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)


# ------------------------------------------------------------------------------------------------------------------
# the loop


def build_model(config: TrainingConfig) -> RGNetForVideoGrounding:
    if config.init_from:
        model = RGNetForVideoGrounding.from_pretrained(config.init_from, **config.model)
    else:
        model = RGNetForVideoGrounding(RGNetConfig.from_preset(config.preset, **config.model))
    return model


def train(config: TrainingConfig, accelerator=None, dataset=None) -> dict[str, Any]:
    """Run a training recipe. Returns a summary: steps, last loss, best score, final metrics, output folders."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from tqdm.auto import tqdm

    from .data import EvaluationVideoDataset, RGNetTrainingCollator, RGNetTrainingDataset

    config.validate()
    output_dir = Path(config.output_dir)
    log_with = config.log_with
    if log_with == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            logger.warning("tensorboard is not installed: logging to metrics.jsonl only")
            log_with = None
    if accelerator is None:
        accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=log_with,
            project_dir=str(output_dir),
            # Parameters without a gradient in some recipes: the sampler in eval passes, the retrieval head when
            # its loss weight is 0.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
    set_seed(config.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    dataset = dataset if dataset is not None else load_data_from_spec(config.data)
    model = build_model(config)
    model_config = model.config
    if config.train_split not in dataset:
        raise ValueError(f"the data has no split {config.train_split!r} (splits: {', '.join(dataset)})")
    train_set = RGNetTrainingDataset.from_config(dataset[config.train_split], model_config, seed=config.seed)
    sampler = EpochShuffleSampler(len(train_set), config.seed, config.shuffle)
    collator = RGNetTrainingCollator(negative_windows=model_config.use_negative_window_loss)
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=collator,
        num_workers=config.num_workers,
        drop_last=True,  # the official loop skips the short last batch
        # Its own generator: creating an iterator must not draw from the global RNG, or a resumed run (which
        # creates its iterator after restoring the RNG) would see other dropout and sampler noise.
        generator=torch.Generator().manual_seed(config.seed),
    )
    eval_set = None
    if config.eval_split and config.eval_every_epochs:
        if config.eval_split not in dataset:
            raise ValueError(f"the data has no split {config.eval_split!r} (splits: {', '.join(dataset)})")
        eval_set = EvaluationVideoDataset(dataset[config.eval_split], max_text_length=model_config.max_text_length)

    # AdamW over the parameters that train; the step-decay schedule runs per epoch (not per optimiser step).
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=config.lr_drop_epochs, gamma=config.lr_drop_factor
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)

    steps_per_epoch = max(1, len(loader) // config.gradient_accumulation_steps)
    state = {"epoch": 0, "batches_done_in_epoch": 0, "global_step": 0, "best_score": None, "best_metrics": None}
    resume_from = _resolve_resume(config, output_dir)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        with open(resume_from / STATE_FILE) as handle:
            state = json.load(handle)
        accelerator.print(f"Resumed from {resume_from}: epoch {state['epoch']}, step {state['global_step']}")
    if log_with:
        accelerator.init_trackers(
            "rgnet",
            config={k: v for k, v in dataclasses.asdict(config).items() if isinstance(v, (int, float, str, bool))},
        )
    total_steps = config.num_epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    progress = tqdm(
        total=total_steps,
        initial=state["global_step"],
        disable=not accelerator.is_local_main_process,
        mininterval=1.0,
        desc="training",
    )
    metrics_log = output_dir / "metrics.jsonl"
    last_loss, last_metrics = None, {}
    started = time.perf_counter()

    def log(values: dict[str, float]) -> None:
        if log_with:
            accelerator.log(values, step=state["global_step"])
        if accelerator.is_main_process:
            with open(metrics_log, "a") as handle:
                handle.write(json.dumps({"step": state["global_step"], **values}) + "\n")

    done = state["global_step"] >= total_steps
    while state["epoch"] < config.num_epochs and not done:
        epoch = state["epoch"]
        train_set.set_epoch(epoch)
        sampler.use_epoch(epoch)
        model.train()
        skipped = state["batches_done_in_epoch"]
        epoch_loader = accelerator.skip_first_batches(loader, skipped) if skipped else loader
        # Accelerate's loaders pass their own iteration counter to `dataset.set_epoch` when they start; a resumed
        # run's counter restarts at 0, so pin it to the real epoch.
        for prepared in {id(loader): loader, id(epoch_loader): epoch_loader}.values():
            if hasattr(prepared, "set_epoch"):
                prepared.set_epoch(epoch)
        running = []
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                output = model(**batch)
                accelerator.backward(output.loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            state["batches_done_in_epoch"] += 1
            running.append(float(output.loss.detach()))
            if not accelerator.sync_gradients:
                continue
            state["global_step"] += 1
            progress.update(1)
            last_loss = float(np.mean(running))
            running = []
            if state["global_step"] % config.log_every_steps == 0 or state["global_step"] == 1:
                terms = {f"train/{k}": float(v.detach()) for k, v in output.loss_dict.items()}
                log({"train/loss": last_loss, "train/lr": scheduler.get_last_lr()[0], **terms})
            if config.checkpoint_every_steps and state["global_step"] % config.checkpoint_every_steps == 0:
                _save_checkpoint(accelerator, output_dir, state, config.keep_checkpoints)
            if config.kill_after_step is not None and state["global_step"] == config.kill_after_step:
                os.kill(os.getpid(), signal.SIGKILL)
            if state["global_step"] >= total_steps:
                done = True
                break
        epoch_finished = not done or state["batches_done_in_epoch"] >= len(loader)
        if epoch_finished:
            scheduler.step()
            state["epoch"] += 1
            state["batches_done_in_epoch"] = 0
        if eval_set is not None and (epoch_finished and (state["epoch"] % config.eval_every_epochs == 0) or done):
            last_metrics = evaluate_model(
                accelerator.unwrap_model(model),
                eval_set,
                accelerator,
                config.eval_memory_budget_bytes,
                config.eval_max_videos,
            )
            log({f"eval/{k}": v for k, v in last_metrics.items()})
            score = selection_score(last_metrics, config.best_metric)
            if state["best_score"] is None or score > state["best_score"]:
                state["best_score"], state["best_metrics"] = score, last_metrics
                if accelerator.is_main_process:
                    _save_model_atomically(accelerator.unwrap_model(model), output_dir / "best")
            accelerator.print(
                f"epoch {state['epoch']}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in last_metrics.items() if k.startswith("R@1 ") or k == "mIoU")
            )
        if not config.checkpoint_every_steps and epoch_finished:
            _save_checkpoint(accelerator, output_dir, state, config.keep_checkpoints)
    progress.close()

    in_sync = parameters_in_sync(accelerator, model)
    accelerator.wait_for_everyone()
    final_dir = output_dir / "final"
    if accelerator.is_main_process:
        final_model = accelerator.unwrap_model(model)
        _save_model_atomically(final_model, final_dir)
        if config.push_to_hub:
            push_model_folder_to_hub(
                final_model, config.push_to_hub, commit_message="Upload RGNet trained with rgnet_hf"
            )
    accelerator.wait_for_everyone()
    if log_with:
        accelerator.end_training()
    summary = {
        "global_step": state["global_step"],
        "epochs": state["epoch"],
        "last_loss": last_loss,
        "best_score": state["best_score"],
        "best_metrics": state["best_metrics"],
        "last_metrics": last_metrics,
        "num_processes": accelerator.num_processes,
        "parameters_in_sync": in_sync,
        "seconds": time.perf_counter() - started,
        "final_model": str(final_dir),
        "best_model": str(output_dir / "best") if state["best_score"] is not None else None,
    }
    if accelerator.is_main_process:
        with open(output_dir / "summary.json", "w") as handle:
            json.dump(summary, handle, indent=2, default=float)
    return summary


def parameters_in_sync(accelerator, model) -> bool:
    """Whether every process holds the same parameters (a checksum gathered from all processes)."""
    unwrapped = accelerator.unwrap_model(model)
    checksum = torch.stack([p.detach().double().sum() for p in unwrapped.parameters()]).sum().reshape(1)
    gathered = accelerator.gather(checksum.to(accelerator.device))
    return bool(torch.allclose(gathered, gathered[0].expand_as(gathered), rtol=0, atol=0)) and not math.isnan(
        float(gathered[0])
    )


__all__ = ["TrainingConfig", "train", "evaluate_model", "load_data_from_spec", "selection_score"]
