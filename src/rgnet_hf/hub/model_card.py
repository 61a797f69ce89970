"""Model card (README.md) written next to every saved RGNet checkpoint."""

from __future__ import annotations

from ..configuration_rgnet import RGNetConfig

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


def generate_model_card(
    config: RGNetConfig,
    model_name: str = "RGNet",
    parameter_count: int | None = None,
    remote_pipeline: bool = False,
) -> str:
    """The README.md of a model folder; `remote_pipeline` says whether the folder carries the pipeline's code."""
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
library_name: transformers
tags:
- rgnet
- video-grounding
- temporal-grounding
- long-video
pipeline_tag: video-grounding
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
"""
