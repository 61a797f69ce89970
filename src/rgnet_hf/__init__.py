"""rgnet_hf: RGNet (unified clip retrieval and grounding for long videos), Hugging Face native.

`import rgnet_hf` is lazy, like transformers: it imports neither torch nor transformers, and each public name is
imported on first access. The `rgnet` model type is still registered with the transformers Auto classes and the
`video-grounding` pipeline before either is used: see `_AutoRegistrationHook`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from typing import Any

__version__ = "0.1.0"

# Public name -> the module (relative to this package) that defines it.
_NAME_TO_MODULE = {
    "RGNetConfig": "configuration_rgnet",
    "RGNetModel": "modeling_rgnet",
    "RGNetForVideoGrounding": "modeling_rgnet",
    "RGNetPreTrainedModel": "modeling_rgnet",
    "RGNetEncoderOutput": "modeling_rgnet",
    "RGNetModelOutput": "modeling_rgnet",
    "RGNetVideoGroundingOutput": "modeling_rgnet",
    "RGNetGroundingOutput": "modeling_rgnet",
    "RGNetFeatureExtractor": "feature_extraction_rgnet",
    "RGNetProcessor": "processing_rgnet",
    "RGNetGroundingEngine": "inference_rgnet",
    "BestWindowStates": "inference_rgnet",
    "VideoFrameRuns": "inference_rgnet",
    "VideoGroundingResult": "inference_rgnet",
    "GroundingMemoryPlan": "memory_planning",
    "GroundingMemoryPlanner": "memory_planning",
    "WindowGrid": "windowing",
    "VideoGroundingPipeline": "pipeline_rgnet",
    "push_model_folder_to_hub": "hub.model_folder",
    "save_model_folder": "hub.model_folder",
}

__all__ = [*_NAME_TO_MODULE, "__version__"]


def __getattr__(name: str) -> Any:
    module_name = _NAME_TO_MODULE.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _register_config() -> None:
    from transformers import AutoConfig

    from .configuration_rgnet import RGNetConfig

    AutoConfig.register("rgnet", RGNetConfig, exist_ok=True)


def _register_model() -> None:
    from transformers import AutoModel

    from .configuration_rgnet import RGNetConfig
    from .modeling_rgnet import RGNetForVideoGrounding

    # RGNet has no task-specific Auto class in transformers: AutoModel gives the full grounding model (heads
    # included); `RGNetModel.from_pretrained` loads the backbone alone from the same folder.
    AutoModel.register(RGNetConfig, RGNetForVideoGrounding, exist_ok=True)


def _register_feature_extractor() -> None:
    from transformers import AutoFeatureExtractor

    from .configuration_rgnet import RGNetConfig
    from .feature_extraction_rgnet import RGNetFeatureExtractor

    AutoFeatureExtractor.register(RGNetConfig, RGNetFeatureExtractor, exist_ok=True)


def _register_processor() -> None:
    from transformers import AutoProcessor

    from .configuration_rgnet import RGNetConfig
    from .processing_rgnet import RGNetProcessor

    AutoProcessor.register(RGNetConfig, RGNetProcessor, exist_ok=True)


def _register_pipeline() -> None:
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    from .pipeline_rgnet import VideoGroundingPipeline

    PIPELINE_REGISTRY.register_pipeline(
        "video-grounding", pipeline_class=VideoGroundingPipeline, pt_model=AutoModel, type="multimodal"
    )


# Each registration runs once the transformers module that holds its registry has been imported: nothing can look
# `rgnet` up in a registry before the registry exists. Dicts keep this order, so the config registers first.
_PENDING = {
    "transformers.models.auto.configuration_auto": _register_config,
    "transformers.models.auto.modeling_auto": _register_model,
    "transformers.models.auto.feature_extraction_auto": _register_feature_extractor,
    "transformers.models.auto.processing_auto": _register_processor,
    "transformers.pipelines": _register_pipeline,
}
# While a module under these prefixes is half-imported, registering could import it again through our own modules
# (e.g. `modeling_layers` imports `AutoModel` before it defines the layer class `modeling_rgnet` needs), so the
# registrations wait until the import that is in progress has finished.
_WATCHED = ("transformers", "torch", "rgnet_hf")
_WRAPPABLE_LOADERS = (
    importlib.machinery.SourceFileLoader,
    importlib.machinery.SourcelessFileLoader,
    importlib.machinery.ExtensionFileLoader,
)


class _AutoRegistrationHook(importlib.abc.MetaPathFinder):
    """Registers RGNet with the Auto classes and the pipeline registry right after transformers imports them.

    Registering at `import rgnet_hf` would import transformers' configuration and modelling code, and with it torch
    (seconds), for every user of the package, `rgnet-hf --help` included. Registering on first access to a public
    name would miss `import rgnet_hf; transformers.pipeline("video-grounding", ...)`, which names nothing. So this
    finder, first on `sys.meta_path` until every registration has run, lets the other finders find each module and
    wraps its loader: when an import finishes and no watched module is half-imported, the registrations whose
    transformers module now exists run. Only loaders created for one module are wrapped (a shared loader, such as a
    zip importer or pytest's, is left alone).
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._local = threading.local()  # per thread: how many watched modules are being executed
        self._registering = False

    def find_spec(self, fullname, path, target=None):
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or type(spec.loader) not in _WRAPPABLE_LOADERS:
            return spec
        exec_module = spec.loader.exec_module
        watched = fullname.split(".")[0] in _WATCHED

        def exec_and_register(module) -> None:
            depth = getattr(self._local, "depth", 0)
            self._local.depth = depth + watched
            try:
                exec_module(module)
            finally:
                self._local.depth = depth
            if depth == 0:
                self.register_ready()

        spec.loader.exec_module = exec_and_register
        return spec

    def register_ready(self) -> None:
        """Runs the pending registrations whose transformers module is imported; uninstalls when none is left."""
        with self._lock:
            if self._registering:  # the imports of a registration itself come back here
                return
            self._registering = True
            try:
                for module_name, register in list(_PENDING.items()):
                    if module_name in sys.modules:
                        register()
                        del _PENDING[module_name]
            finally:
                self._registering = False
            if not _PENDING and self in sys.meta_path:
                sys.meta_path.remove(self)


_hook = _AutoRegistrationHook()
sys.meta_path.insert(0, _hook)
# transformers imported before rgnet_hf: register what it already holds now (its cost is paid already).
_hook.register_ready()
