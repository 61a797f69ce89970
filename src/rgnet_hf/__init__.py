"""rgnet_hf: RGNet for long-video temporal grounding, Hugging Face native."""

from .configuration_rgnet import RGNetConfig

__version__ = "0.1.0"

__all__ = ["RGNetConfig", "__version__"]
