"""What several `rgnet-hf` sub-commands share: reading feature arrays, checking options, printing moments."""

from __future__ import annotations

import math
import pickle
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
