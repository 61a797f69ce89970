"""rgnet_hf: RGNet (unified clip retrieval and grounding for long videos), Hugging Face native.

Importing the package registers the `rgnet` model type with the transformers Auto classes.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_rgnet import RGNetConfig
from .feature_extraction_rgnet import RGNetFeatureExtractor
from .hub.model_folder import push_model_folder_to_hub, save_model_folder
from .inference_rgnet import RGNetGroundingEngine, VideoGroundingResult
from .memory_planning import GroundingMemoryPlan, GroundingMemoryPlanner
from .modeling_rgnet import (
    RGNetEncoderOutput,
    RGNetForVideoGrounding,
    RGNetGroundingOutput,
    RGNetModel,
    RGNetModelOutput,
    RGNetPreTrainedModel,
    RGNetVideoGroundingOutput,
)
from .pipeline_rgnet import VideoGroundingPipeline
from .processing_rgnet import RGNetProcessor
from .windowing import WindowGrid

__version__ = "0.1.0"

AutoConfig.register("rgnet", RGNetConfig, exist_ok=True)
# RGNet has no task-specific Auto class in transformers: AutoModel gives the full grounding model (heads included);
# `RGNetModel.from_pretrained` loads the backbone alone from the same folder.
AutoModel.register(RGNetConfig, RGNetForVideoGrounding, exist_ok=True)
AutoFeatureExtractor.register(RGNetConfig, RGNetFeatureExtractor, exist_ok=True)
AutoProcessor.register(RGNetConfig, RGNetProcessor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "video-grounding", pipeline_class=VideoGroundingPipeline, pt_model=AutoModel, type="multimodal"
)
# Saved folders carry the modelling code and an `auto_map`, so they load with `trust_remote_code=True` where
# rgnet_hf is not installed (`save_model_folder` adds the processor's code and, on request, the pipeline's).
RGNetConfig.register_for_auto_class()
RGNetForVideoGrounding.register_for_auto_class("AutoModel")
RGNetFeatureExtractor.register_for_auto_class()
RGNetProcessor.register_for_auto_class()

__all__ = [
    "RGNetConfig",
    "RGNetModel",
    "RGNetForVideoGrounding",
    "RGNetPreTrainedModel",
    "RGNetEncoderOutput",
    "RGNetModelOutput",
    "RGNetVideoGroundingOutput",
    "RGNetGroundingOutput",
    "RGNetFeatureExtractor",
    "RGNetProcessor",
    "RGNetGroundingEngine",
    "VideoGroundingResult",
    "GroundingMemoryPlan",
    "GroundingMemoryPlanner",
    "WindowGrid",
    "VideoGroundingPipeline",
    "push_model_folder_to_hub",
    "save_model_folder",
    "__version__",
]
