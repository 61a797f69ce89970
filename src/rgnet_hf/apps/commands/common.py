"""What several `rgnet-hf` sub-commands share: reading feature arrays, checking options, printing moments."""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def load_array(path: str | Path, key: str | None = None) -> np.ndarray:
    """Read a feature array from `.npy`, `.npz`, `.pt` / `.pth` or `.h5` / `.hdf5` (`key` selects an entry)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such feature file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return _pick(dict(archive), key, path)
    if suffix in (".pt", ".pth"):
        import torch

        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{path} was refused: it holds objects other than tensors, which could run code when unpickled "
                "(only tensors and dicts / lists of tensors are read)"
            ) from error
        except (RuntimeError, EOFError) as error:
            raise ValueError(f"{path} is not a readable PyTorch file ({error})") from error
        if isinstance(value, dict):
            value = _pick(value, key, path)
        return value.float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as handle:
            names = list(handle.keys())
            if key is None and len(names) != 1:
                raise ValueError(
                    f"{path} holds {len(names)} entries; choose one with a key ({', '.join(names[:5])}...)"
                )
            name = key if key is not None else names[0]
            if name not in handle:
                raise KeyError(f"{path} has no entry {name!r}")
            return handle[name][()]
    raise ValueError(f"Unsupported feature file type {suffix!r} ({path}); use .npy, .npz, .pt or .h5")


def _pick(mapping: dict, key: str | None, path: Path):
    if key is None:
        if len(mapping) != 1:
            raise ValueError(
                f"{path} holds {len(mapping)} entries; choose one with a key ({', '.join(list(mapping)[:5])})"
            )
        return next(iter(mapping.values()))
    if key not in mapping:
        raise KeyError(f"{path} has no entry {key!r}")
    return mapping[key]


def format_table(rankings: list[list[dict]], names: list[str]) -> str:
    lines = []
    for name, moments in zip(names, rankings):
        lines.append(f"{name}")
        lines.append(f"  {'rank':>4}  {'start (s)':>10}  {'end (s)':>10}  {'score':>7}")
        for rank, moment in enumerate(moments, 1):
            lines.append(f"  {rank:>4}  {moment['start']:>10.2f}  {moment['end']:>10.2f}  {moment['score']:>7.3f}")
    return "\n".join(lines)


FEATURE_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".h5", ".hdf5")


def check_seconds_per_feature(seconds: float | None) -> None:
    """`--seconds-per-feature` must be > 0 when given: 0 must not fall back to a default."""
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"--seconds-per-feature: seconds_per_feature must be a finite number > 0, got {seconds}")


# The choices of `video_text_encoders.ENCODER_BACKENDS`, spelled here so that `--help` does not import torch.
ENCODER_BACKEND_CHOICES = ("pytorch", "onnx", "onnx-int8")


def add_frame_encoder_arguments(parser) -> None:
    """The options of commands that encode video files (`extract`, `prepare`): which encoder (`--encoder` or a
    `--model`'s), at what rate, in what batches, on what device, dtype and backend."""
    parser.add_argument(
        "--encoder", default=None, help="CLIP or SigLIP Hub id or folder, e.g. openai/clip-vit-base-patch32"
    )
    parser.add_argument("--model", default=None, help="an RGNet folder: use its config's feature_encoder and rate")
    parser.add_argument(
        "--seconds-per-feature", type=float, default=None, help="sampling interval (default: the model's, or 0.2)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="frames per forward pass")
    parser.add_argument("--device", default=None, help="default: this process's accelerate device")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    add_decode_workers_argument(parser)
    add_encoder_backend_argument(parser)


def add_decode_workers_argument(parser) -> None:
    """`--decode-workers`: processes that decode a video file (`VideoTextEncoder.decode_workers`); checked by
    [`check_decode_workers`]."""
    parser.add_argument(
        "--decode-workers",
        default="auto",
        help="processes that decode and pre-process each video's keyframe segments in parallel (same features as "
        "1; a file without keyframe timestamps or under two segments long is decoded by one). Default 'auto': 1 "
        "with the encoder on the CPU, one per CPU but one (at most 16) with it on a GPU",
    )


def check_decode_workers(args) -> None:
    """Turn `args.decode_workers` into an int >= 1 or 'auto'; a ValueError naming the option otherwise."""
    value = args.decode_workers
    if value != "auto":
        try:
            value = int(value)
        except (TypeError, ValueError):
            value = 0
        if value < 1:
            raise ValueError(f"--decode-workers must be 'auto' or an integer >= 1, got {args.decode_workers!r}")
    args.decode_workers = value


def check_frame_encoder_arguments(args) -> None:
    """Refuse the options of [`add_frame_encoder_arguments`] that do not fit, before any work."""
    if (args.encoder is None) == (args.model is None):
        raise ValueError("give the encoder with --encoder (Hub id or folder) or take it from an RGNet --model")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {args.batch_size}")
    check_seconds_per_feature(args.seconds_per_feature)
    check_device(args.device)
    check_decode_workers(args)


def add_encoder_backend_argument(parser) -> None:
    """`--encoder-backend`: how frames are encoded (default: the model folder's `feature_encoder_backend`, else
    pytorch)."""
    parser.add_argument(
        "--encoder-backend",
        default=None,
        choices=ENCODER_BACKEND_CHOICES,
        help="how frames are encoded: pytorch (the default, exact), onnx (ONNX Runtime, float32) or onnx-int8 (ONNX "
        "Runtime with int8 matrix products: faster on CPUs, close to float32); the ONNX ones need "
        "pip install 'rgnet-hf[onnx]' and a float32 encoder, export it once into ~/.cache/rgnet_hf/onnx "
        "($RGNET_HF_ONNX_CACHE) and are recorded in feature caches, which refuse to mix backends. Default: the "
        "model folder's feature_encoder_backend, else pytorch",
    )


ALLOW_TRUNCATED_HELP = (
    "ground / encode the decoded part of a truncated video file (its frames stop before the duration its container "
    "declares) with a warning, instead of refusing it"
)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Print the warnings a command means for its user (truncated videos) as `warning: ...` lines on stderr."""
    from ...video_decoding import TruncatedVideoWarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", TruncatedVideoWarning)
        warnings.showwarning = show
        yield


def process_state():
    """accelerate's process state: this process's rank and device under `accelerate launch`, one process without."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState does not read ACCELERATE_USE_CPU itself; without it, CPU processes would each run alone.
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def lock_output_for_run(stack: contextlib.ExitStack, output: str | Path, state) -> None:
    """Lock the feature cache `output` for this run, its processes included: the main process takes the lock (held
    until `stack` closes), and every process raises `OutputLockedError` if another run holds it, so that all stop
    together before any encoder is loaded."""
    from ...data.feature_cache import OutputLockedError, lock_output

    problem = None
    if state.is_main_process:
        try:
            stack.enter_context(lock_output(output))
        except OutputLockedError as error:
            problem = str(error)
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        problem = broadcast_object_list([problem], from_process=0)[0]
    if problem is not None:
        raise OutputLockedError(problem)


def looks_like_a_path(name: str) -> bool:
    """A local folder name rather than a Hub id (`owner/name`)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def check_device(device: str | None) -> None:
    """Refuse a device that this machine does not have, before the model is loaded."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"--device {device!r} is not a device name (e.g. cpu, cuda, cuda:1, mps)") from error
    if parsed.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available == 0:
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= available:
            raise ValueError(f"--device {device}: this machine has {available} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine")


def _one_line(error: BaseException, model: str) -> str:
    # Transformers' loading errors span several lines; the CLI prints one, naming the model once.
    text = " ".join(str(error).split())
    return text.removeprefix(f"{model}: ")


def _folder_file(model: str, name: str) -> str | None:
    """The local path of `name` in a model folder or Hub repository, None when it has no such file."""
    from transformers.utils import cached_file

    return cached_file(model, name, _raise_exceptions_for_missing_entries=False)


def _folder_code(model: str) -> tuple[type, object | None, type]:
    """`--trust-remote-code`: the model class, the processor and the pipeline class of the code a folder carries."""
    import json

    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    from ...configuration_rgnet import RGNetConfig
    from ...hub.model_folder import PIPELINE_TASK

    config, _ = RGNetConfig.get_config_dict(model)
    model_ref = (config.get("auto_map") or {}).get("AutoModel")
    pipeline_ref = (config.get("custom_pipelines") or {}).get(PIPELINE_TASK, {}).get("impl")
    if model_ref is None or pipeline_ref is None:
        lacking = "auto_map.AutoModel" if model_ref is None else f"custom_pipelines.{PIPELINE_TASK}"
        raise ValueError(
            f"--trust-remote-code needs the folder's own code, but its config.json has no {lacking}; leave the "
            "option out to use the installed rgnet_hf (or save the folder with save_model_folder(..., "
            "remote_pipeline=True))"
        )
    load = lambda reference: get_class_from_dynamic_module(reference, model)  # noqa: E731
    processor = None
    processor_file = _folder_file(model, "processor_config.json")
    if processor_file is not None:
        with open(processor_file, encoding="utf-8") as handle:
            saved = json.load(handle)
        processor_ref = (saved.get("auto_map") or {}).get("AutoProcessor")
        extractor = saved.get("feature_extractor") or {}
        extractor_ref = (extractor.get("auto_map") or {}).get("AutoFeatureExtractor")
        if processor_ref is None or extractor_ref is None:
            raise ValueError(
                f"--trust-remote-code: {processor_file} names no processor or feature extractor code (auto_map); "
                "leave the option out to use the installed rgnet_hf"
            )
        # Built from the folder's classes: `from_pretrained` would pick the installed feature extractor.
        processor = load(processor_ref)(feature_extractor=load(extractor_ref).from_dict(extractor))
    return load(model_ref), processor, load(pipeline_ref)


def load_grounding_pipeline(
    model: str, device: str | None = None, progress: bool = True, trust_remote_code: bool = False
):
    """
    The `video-grounding` pipeline of an RGNet folder or Hub id, for `rgnet-hf ground` and `rgnet-hf app`.

    By default the model, its processor and the pipeline are the installed rgnet_hf classes, whatever code the folder
    carries, so no code from the folder runs (a folder saved with `remote_pipeline=True` loads without
    `trust_remote_code`). With `trust_remote_code=True` all of them come from the code in the folder instead.

    Loading errors (a missing folder, another model type, NaN weights, a broken processor file) are raised as
    `ValueError` / `OSError` with one line that names the model and the reason.
    """
    from transformers import pipeline

    from ...modeling_rgnet import RGNetForVideoGrounding
    from ...pipeline_rgnet import VideoGroundingPipeline
    from ...processing_rgnet import RGNetProcessor

    if looks_like_a_path(model) and not Path(model).is_dir():
        raise FileNotFoundError(f"cannot load the model {model}: no such model folder")
    try:
        if trust_remote_code:
            model_class, processor, pipeline_class = _folder_code(model)
        else:
            model_class, processor, pipeline_class = RGNetForVideoGrounding, None, VideoGroundingPipeline
            processor_file = _folder_file(model, "processor_config.json")
            if processor_file is not None:
                try:
                    processor = RGNetProcessor.from_pretrained(model)
                except (OSError, ValueError, TypeError, KeyError) as error:
                    raise ValueError(f"{processor_file} is not a readable RGNet processor: {error}") from error
        instance = model_class.from_pretrained(model)
    except OSError as error:  # a missing file or an unknown Hub id
        raise OSError(f"cannot load the model {model}: {_one_line(error, model)}") from error
    except ValueError as error:  # another model type, damaged weights, a broken processor
        raise ValueError(f"cannot load the model {model}: {_one_line(error, model)}") from error
    # An instance and an explicit class: transformers neither reloads the folder nor looks for its pipeline code.
    return pipeline(
        "video-grounding",
        model=instance,
        processor=processor,
        feature_extractor=processor.feature_extractor if processor is not None else None,
        pipeline_class=pipeline_class,
        device=device,
        progress=progress,
    )
