"""A complete RGNet model folder: the weights plus the processor, the model card and, on request, the pipeline code.

`model.save_pretrained(folder)` writes what transformers writes for any model: `config.json`, the weights and the
code that `AutoModel.from_pretrained(folder, trust_remote_code=True)` needs (`configuration_rgnet.py`,
`modeling_rgnet.py`, `loss_rgnet.py`, `windowing.py`). [`save_model_folder`] adds what a user of the checkpoint
wants next to it:

- the default processor derived from the config (`processor_config.json`, with its code), unless the folder has one;
- a generated model card (`README.md`), unless the folder has one;
- with `remote_pipeline=True`, the `video-grounding` pipeline's code and a `custom_pipelines` entry in `config.json`,
  so that `pipeline(model=folder, trust_remote_code=True)` works where rgnet_hf is not installed. Transformers then
  asks for `trust_remote_code=True` even where rgnet_hf is installed, which is why local folders go without it.

[`push_model_folder_to_hub`] writes such a folder (with the remote pipeline) and uploads it with the public
`huggingface_hub.HfApi`. The converter, the training loop and the command line use these two functions.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi
from transformers.dynamic_module_utils import custom_object_save

from ..pipeline_rgnet import VideoGroundingPipeline
from ..processing_rgnet import RGNetProcessor
from .model_card import ModelEvaluation, generate_model_card

PIPELINE_TASK = "video-grounding"
REMOTE_PIPELINE_ENTRY = {
    PIPELINE_TASK: {
        "impl": "pipeline_rgnet.VideoGroundingPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "multimodal",
    }
}

__all__ = ["push_model_folder_to_hub", "save_model_folder"]


def save_model_folder(
    model,
    save_directory: str | os.PathLike,
    processor: RGNetProcessor | None = None,
    remote_pipeline: bool = False,
    evaluation: ModelEvaluation | None = None,
    license: str | None = None,
    base_model: str | None = None,
    **save_pretrained_kwargs,
) -> Path:
    """
    `model.save_pretrained(save_directory)`, then the processor, the model card and (optionally) the pipeline code.

    Args:
        model ([`RGNetPreTrainedModel`]): the model to save.
        save_directory (`str` or `os.PathLike`): the folder (created when missing).
        processor ([`RGNetProcessor`], *optional*): saved when given; otherwise the default processor of the config
            is saved, unless the folder already has a `processor_config.json`.
        remote_pipeline (`bool`, defaults to `False`): also store the pipeline's code and its `custom_pipelines`
            entry (for folders used where rgnet_hf is not installed, e.g. on the Hub).
        evaluation ([`ModelEvaluation`], *optional*): results for the card (`model-index` metadata and a table).
        license (`str`, *optional*): the licence of the weights (`"cc-by-nc-nd-4.0"` for weights converted or
            fine-tuned from the official checkpoints; the card then says what it means for sharing them).
        base_model (`str`, *optional*): the Hub id the weights were fine-tuned from.
        save_pretrained_kwargs: passed to `model.save_pretrained` (e.g. `safe_serialization`, `is_main_process`).

    Returns:
        `Path` of the folder. A card already in the folder keeps its text; the given metadata is written into it.
    """
    folder = Path(save_directory)
    model.save_pretrained(folder, **save_pretrained_kwargs)
    if not save_pretrained_kwargs.get("is_main_process", True):
        return folder
    if processor is not None:
        processor.save_pretrained(folder)
    elif not (folder / "processor_config.json").exists():
        RGNetProcessor.from_model_config(model.config).save_pretrained(folder)
    card = folder / "README.md"
    if not card.exists():
        parameters = model.num_parameters()
        text = generate_model_card(
            model.config,
            parameter_count=parameters,
            remote_pipeline=remote_pipeline,
            evaluation=evaluation,
            license=license,
            base_model=base_model,
        )
        card.write_text(text, encoding="utf-8")
    elif evaluation is not None or license is not None or base_model is not None:
        from huggingface_hub import ModelCard

        existing = ModelCard.load(card)
        if license is not None:
            existing.data.license = license
        if base_model is not None:
            existing.data.base_model = base_model
        if evaluation is not None:
            existing.data.model_name = existing.data.model_name or "RGNet"
            existing.data.eval_results = evaluation.eval_results(existing.data.model_name)
        existing.save(card)
    if remote_pipeline:
        _add_remote_pipeline(folder)
    return folder


def _add_remote_pipeline(folder: Path) -> None:
    """Copy the pipeline's code into `folder` and declare it in `config.json` (the model object is left unchanged)."""
    custom_object_save(VideoGroundingPipeline, folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["custom_pipelines"] = REMOTE_PIPELINE_ENTRY
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def push_model_folder_to_hub(
    model,
    repo_id: str,
    processor: RGNetProcessor | None = None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    evaluation: ModelEvaluation | None = None,
    license: str | None = None,
    base_model: str | None = None,
    **save_pretrained_kwargs,
) -> CommitInfo:
    """
    Upload the weights, the configuration, the modelling and pipeline code, the processor and a generated model card
    to the Hub repository `repo_id` (created when missing).

    Args:
        model ([`RGNetPreTrainedModel`]): the model to upload.
        repo_id (`str`): `"user/name"` or `"org/name"`.
        processor ([`RGNetProcessor`], *optional*): defaults to the processor derived from the config.
        commit_message, private, token, revision, create_pr: as in `huggingface_hub.HfApi.upload_folder` /
            `create_repo`; `revision` names a branch, created when missing.
        evaluation, license, base_model: the card's metadata, as in [`save_model_folder`].
        save_pretrained_kwargs: passed to `model.save_pretrained`.

    Returns:
        The `huggingface_hub.CommitInfo` of the upload.
    """
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        save_model_folder(
            model,
            folder,
            processor=processor,
            remote_pipeline=True,
            evaluation=evaluation,
            license=license,
            base_model=base_model,
            **save_pretrained_kwargs,
        )
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or "Upload RGNet model",
            revision=revision,
            create_pr=create_pr,
        )
