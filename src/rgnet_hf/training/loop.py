"""The training loop: [`train`] runs a recipe with Accelerate, resumable, on one GPU, many GPUs or CPU processes.

`examples/train.py` is the command line around [`train`]; `rgnet-hf demo` calls it too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configuration_rgnet import RGNetConfig
from ..evaluation.model_evaluation import evaluate_model
from ..hub.atomic_files import restore_interrupted_replace
from ..hub.model_card import ModelEvaluation, license_of_model_folder
from ..hub.model_folder import push_model_folder_to_hub
from ..modeling_rgnet import RGNetForVideoGrounding
from .checkpoints import (
    STATE_FILE,
    _all_finite,
    _changed_hyperparameters,
    _checkpoint_problem,
    _checkpoints,
    _load_scheduler_state,
    _resume_candidates,
    _save_checkpoint,
    _save_model_atomically,
    _scheduler_state,
)
from .config import TrainingConfig, check_best_metric, load_data_from_spec, selection_score

logger = logging.getLogger(__name__)


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


def model_card_terms(config: TrainingConfig) -> dict[str, Any]:
    """`license` and `base_model` for the cards of a run: weights fine-tuned from a model (`init_from`) carry its
    licence (the official checkpoints' CC BY-NC-ND 4.0 forbids sharing adapted weights, which the card then says)."""
    if not config.init_from:
        return {}
    if Path(config.init_from).is_dir():
        return {"license": license_of_model_folder(config.init_from)}
    from huggingface_hub import ModelCard

    try:
        license = ModelCard.load(config.init_from).data.license
    except Exception as error:  # noqa: BLE001 - a card that cannot be read must not stop training
        logger.warning(
            "could not read the model card of %s (%s): its licence is not carried over", config.init_from, error
        )
        license = None
    return {"license": license, "base_model": config.init_from}


def _card_dataset(data: dict[str, Any]) -> tuple[str, str]:
    """(name, type) of the training data for a model card's results."""
    kind = data.get("format")
    named = {"mad": ("MAD", "mad"), "ego4d_nlq": ("Ego4D-NLQ", "ego4d_nlq"), "cone": ("CONE variant", "cone")}
    if kind in named:
        return named[kind]
    path = data.get("path") or data.get("dataset_dict_path") or ""
    return (Path(str(path)).name or str(kind), str(kind))


def build_model(config: TrainingConfig, dataset=None) -> RGNetForVideoGrounding:
    """The model of a recipe. On a prepared dataset (`data: {format: prepared}`), the feature sizes, the rate and
    `feature_encoder` come from its manifest, and an `init_from` model must already have them (else an error)."""
    from ..data.prepared import check_model_fits_manifest, prepared_model_settings

    manifest = getattr(dataset, "manifest", None)
    data_name = getattr(dataset, "manifest_path", "")
    if config.init_from:
        if manifest is not None:
            initial = RGNetConfig.from_pretrained(config.init_from, **config.model)
            check_model_fits_manifest(initial, manifest, f"init_from {config.init_from}", data_name)
        model = RGNetForVideoGrounding.from_pretrained(config.init_from, **config.model)
    else:
        overrides = dict(config.model)
        if manifest is not None:
            for name, value in prepared_model_settings(manifest).items():
                if name in overrides and overrides[name] != value:
                    raise ValueError(
                        f"model.{name} {overrides[name]!r} differs from the prepared data's {value!r} ({data_name}): "
                        "leave it out of the recipe, it is read from the manifest"
                    )
                overrides[name] = value
            if "window_length" not in overrides:
                overrides.update(_window_grid_from_data(config, dataset, overrides.get("window_stride")))
        model = RGNetForVideoGrounding(RGNetConfig.from_preset(config.preset, **overrides))
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def _window_grid_from_data(config: TrainingConfig, dataset, window_stride: int | None) -> dict[str, int]:
    """`window_length` / `window_stride` for a new model on a prepared dataset, by the rule of
    `rgnet_hf.data.window_rule` on the training split (a recipe's own `window_stride` is kept)."""
    from ..data.window_rule import choose_window_grid_for_split

    choice = choose_window_grid_for_split(dataset[config.train_split], dataset.seconds_per_feature)
    logger.info("window grid from the data: %s", choice.describe())
    if window_stride is not None and window_stride >= choice.window_length:
        raise ValueError(
            f"model.window_stride {window_stride} is not smaller than the window chosen from the data "
            f"({choice.window_length} features): set model.window_length too, or leave window_stride out"
        )
    grid = {"window_length": choice.window_length}
    if window_stride is None:
        grid["window_stride"] = choice.window_stride
    return grid


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
        model = build_model(config, dataset)
        self.card = model_card_terms(config)
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
        from ..data import EvaluationVideoDataset, RGNetTrainingCollator, RGNetTrainingDataset

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

    def _card(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        """The model card terms of a saved folder: the licence inherited from `init_from`, and the metrics of the
        evaluation it was selected by."""
        card = dict(self.card)
        dataset_name, dataset_type = _card_dataset(self.config.data)
        if metrics and self.config.eval_split:
            card["evaluation"] = ModelEvaluation(dataset_name, dataset_type, self.config.eval_split, dict(metrics))
        return card

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
                _save_model_atomically(
                    self._unwrapped_finite_model("best/"), self.output_dir / "best", **self._card(self.last_metrics)
                )
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
            card = self._card(self.last_metrics)
            _save_model_atomically(final_model, final_dir, **card)
            if config.push_to_hub:
                push_model_folder_to_hub(
                    final_model, config.push_to_hub, commit_message="Upload RGNet trained with rgnet_hf", **card
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
    "EpochShuffleSampler",
    "NonFiniteTrainingError",
    "build_model",
    "enable_gradient_checkpointing",
    "parameters_in_sync",
    "train",
]
