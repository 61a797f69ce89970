"""Model card (README.md) written next to every saved RGNet checkpoint.

The card's metadata is `huggingface_hub`'s `ModelCardData`: the licence, the datasets, the base model and, when the
folder was evaluated, the results in the Hub's `model-index` format (one `EvalResult` per metric), so the Hub shows
them and `huggingface_hub.ModelCard.load(folder).data.eval_results` reads them back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..configuration_rgnet import RGNetConfig

# The licence of the official RGNet checkpoints, and so of every model converted or fine-tuned from them.
OFFICIAL_WEIGHTS_LICENSE = "cc-by-nc-nd-4.0"


@dataclass
class ModelEvaluation:
    """Results that go into a model card's `model-index`.

    Attributes:
        dataset_name (`str`): what the data is called (e.g. `"MAD"`, a prepared folder's name).
        dataset_type (`str`): a Hub dataset id when there is one, else a short identifier (`"mad"`, `"prepared"`).
        split (`str`): the split the metrics were measured on.
        metrics (`dict[str, float]`): `"R@{K} IoU={t}"` and `"mIoU"` as fractions in [0, 1] (other keys are left
            out of the card).
    """

    dataset_name: str
    dataset_type: str
    split: str
    metrics: dict[str, float] = field(default_factory=dict)

    def eval_results(self, model_name: str) -> list:
        from huggingface_hub import EvalResult

        results = []
        for name, value in self.metrics.items():
            if not (name.startswith("R@") and " IoU=" in name) and name != "mIoU":
                continue
            results.append(
                EvalResult(
                    task_type="video-grounding",
                    task_name="Long-video temporal grounding",
                    dataset_type=self.dataset_type,
                    dataset_name=self.dataset_name,
                    dataset_split=self.split,
                    metric_type="mean_iou" if name == "mIoU" else "recall",
                    metric_name=name,
                    metric_value=round(float(value), 6),
                )
            )
        return results


def license_of_model_folder(name_or_path: str | os.PathLike) -> str | None:
    """The `license` of a local model folder's card (None when it has no card or no licence). A model trained from
    one inherits its licence terms, which is why `init_from` reads it."""
    card = Path(name_or_path) / "README.md"
    if not card.is_file():
        return None
    from huggingface_hub import ModelCard

    return ModelCard.load(card).data.license


# (dataset_name, in-batch pairs, negative windows) -> (recipe, the features the released recipe reads:
# feature_encoder, seconds per feature, video feature size).
_RECIPES = {
    ("mad", True, False): ("MAD", ("movies, CLIP B/32 features at 5 fps", "openai/clip-vit-base-patch32", 0.2, 512)),
    ("ego4d", True, False): ("Ego4D-NLQ pre-training on NaQ", ("EgoVLP features at 1.87 fps", None, 0.535, 256)),
    ("ego4d", False, True): ("Ego4D-NLQ fine-tuning", ("EgoVLP features at 1.87 fps", None, 0.535, 256)),
}


def _recipe(config: RGNetConfig) -> str:
    """The training recipe, and the features only where they are the released recipe's: a model trained on other
    features (its own videos, `rgnet-hf prepare`) is described by its own encoder and rate."""
    known = _RECIPES.get((config.dataset_name, config.in_batch_window_pairs, config.use_negative_window_loss))
    if known is None:
        return "a custom recipe"
    name, (features, encoder, seconds, size) = known
    encoder_now = getattr(config, "feature_encoder", None)
    if (
        encoder_now == encoder
        and abs(config.seconds_per_feature - seconds) < 1e-9
        and config.video_feature_size == size
    ):
        return f"{name} ({features})"
    source = f"`{encoder_now}`" if encoder_now else "pre-extracted"
    return f"{name}'s training recipe, on {source} features every {config.seconds_per_feature:g} s"


def _license_section(license: str | None, base_model: str | None) -> str:
    if license != OFFICIAL_WEIGHTS_LICENSE:
        return ""
    origin = f" (`{base_model}`)" if base_model else ""
    return f"""
## Licence

These weights derive from the official RGNet checkpoints{origin}, released under CC BY-NC-ND 4.0: they may not be
used commercially, and adapted versions (this one included, if it was fine-tuned) may not be shared. Train from
scratch on your own data (`rgnet-hf prepare`, then a recipe without `init_from`) for weights you may share.
"""


def _evaluation_section(evaluation: ModelEvaluation | None) -> str:
    if evaluation is None or not evaluation.metrics:
        return ""
    keys = [k for k in evaluation.metrics if (k.startswith("R@") and " IoU=" in k) or k == "mIoU"]
    rows = "\n".join(f"| {key} | {100 * float(evaluation.metrics[key]):.2f} |" for key in keys)
    return f"""
## Evaluation

{evaluation.dataset_name}, split `{evaluation.split}` (in %; the official metric of `rgnet_hf.evaluation`):

| metric | value |
|---|---|
{rows}
"""


def model_card_metadata(
    config: RGNetConfig,
    model_name: str = "RGNet",
    evaluation: ModelEvaluation | None = None,
    license: str | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
):
    """The card's metadata as `huggingface_hub.ModelCardData`."""
    from huggingface_hub import ModelCardData

    return ModelCardData(
        library_name="transformers",
        license=license,
        base_model=base_model,
        datasets=datasets,
        tags=["rgnet", "video-grounding", "temporal-grounding", "long-video"],
        pipeline_tag="video-grounding",
        model_name=model_name if evaluation is not None else None,
        eval_results=evaluation.eval_results(model_name) if evaluation is not None else None,
    )


def generate_model_card(
    config: RGNetConfig,
    model_name: str = "RGNet",
    parameter_count: int | None = None,
    remote_pipeline: bool = False,
    evaluation: ModelEvaluation | None = None,
    license: str | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
) -> str:
    """The README.md of a model folder; `remote_pipeline` says whether the folder carries the pipeline's code.

    `evaluation` adds the results (card metadata in the `model-index` format and a table), `license` the licence of
    the weights (the official checkpoints' `cc-by-nc-nd-4.0` adds what it means for sharing), `base_model` the model
    these weights were fine-tuned from (a Hub id), `datasets` Hub dataset ids.
    """
    metadata = model_card_metadata(config, model_name, evaluation, license, base_model, datasets)
    recipe = _recipe(config)
    window_seconds = config.window_length * config.seconds_per_feature
    parameters = f"{parameter_count / 1e6:.2f} M parameters" if parameter_count else "parameters: see the weights"
    if remote_pipeline:
        without_package = (
            "Without `rgnet_hf` installed, pass `trust_remote_code=True` to `pipeline` or\n"
            "`AutoModel.from_pretrained`: the modelling and pipeline code is stored with the weights."
        )
    else:
        without_package = (
            "Without `rgnet_hf` installed, `AutoModel.from_pretrained(..., trust_remote_code=True)` loads the model\n"
            "from the modelling code stored with the weights; the pipeline needs `rgnet_hf`."
        )
    return f"""---
{metadata.to_yaml()}
---

# {model_name}

RGNet (Hannan et al., "RGNet: A Unified Clip Retrieval and Grounding Network for Long Videos", ECCV 2024,
arXiv 2312.06729) finds the moment of a long video that a sentence describes. This checkpoint was saved by
[rgnet_hf](https://pypi.org/project/rgnet-hf/) ({parameters}).

- Recipe: {recipe}.
- Inputs: pre-extracted video features of size {config.video_feature_size} every {config.seconds_per_feature} s,
  text-token features of size {config.text_feature_size} (at most {config.max_text_length} tokens), and a sentence
  feature of size {config.sentence_feature_size} for the feature-matching score.
- Windows of {config.window_length} features ({window_seconds:g} s) with a stride of {config.window_stride}; the
  {config.top_k_windows} best windows of a video are decoded into {config.num_queries} moments each.

## Use

```python
import rgnet_hf  # registers the model type and the "video-grounding" pipeline
from transformers import pipeline

pipe = pipeline("video-grounding", model="path/or/repo")
pipe({{"video_features": video, "text_features": tokens, "sentence_features": sentence}}, top_k=5)
```

{without_package}
{_evaluation_section(evaluation)}{_license_section(license, base_model)}"""
