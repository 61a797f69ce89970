"""rgnet_hf: RGNet (unified clip retrieval and grounding for long videos), Hugging Face native.

Importing the package registers the `rgnet` model type with the transformers Auto classes.
"""

from transformers import AutoConfig, AutoModel

from .configuration_rgnet import RGNetConfig
from .modeling_rgnet import (
    RGNetEncoderOutput,
    RGNetForVideoGrounding,
    RGNetGroundingOutput,
    RGNetModel,
    RGNetModelOutput,
    RGNetPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register("rgnet", RGNetConfig, exist_ok=True)
# RGNet has no task-specific Auto class in transformers: AutoModel gives the full grounding model (heads included);
# `RGNetModel.from_pretrained` loads the backbone alone from the same folder.
AutoModel.register(RGNetConfig, RGNetForVideoGrounding, exist_ok=True)
# Saved folders carry the modelling code and an `auto_map`, so they load with `trust_remote_code=True` where
# rgnet_hf is not installed.
RGNetConfig.register_for_auto_class()
RGNetForVideoGrounding.register_for_auto_class("AutoModel")

__all__ = [
    "RGNetConfig",
    "RGNetModel",
    "RGNetForVideoGrounding",
    "RGNetPreTrainedModel",
    "RGNetEncoderOutput",
    "RGNetModelOutput",
    "RGNetGroundingOutput",
    "__version__",
]
