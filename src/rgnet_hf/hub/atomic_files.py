"""Folder writes that never lose data: write next to the target, then swap it in with renames."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def _sibling(folder: Path, tag: str) -> Path:
    return folder.with_name(f".{folder.name}.{tag}")


def restore_interrupted_replace(folder: str | os.PathLike) -> None:
    """Put back `folder` when a replacement was interrupted between its two renames (the previous copy is kept as
    `.{name}.previous` until the new one is in place)."""
    folder = Path(folder)
    previous = _sibling(folder, "previous")
    if previous.is_dir():
        if folder.exists():
            shutil.rmtree(previous)
        else:
            os.replace(previous, folder)


def write_folder_atomically(folder: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = True) -> Path:
    """Call `write(partial)` on an empty temporary folder next to `folder`, then swap it in.

    The old `folder` (if any) is moved aside, the new one renamed into place, and only then is the old one deleted: a
    crash or an error at any point leaves either the old or the new complete folder (an interrupted swap is undone by
    the next call). With `overwrite=False`, an existing non-empty `folder` raises `FileExistsError` before anything
    is written.
    """
    folder = Path(folder)
    restore_interrupted_replace(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    if not overwrite and folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} already exists and is not empty (use --force to replace it)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = _sibling(folder, "partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        write(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    previous = _sibling(folder, "previous")
    if folder.exists():
        os.replace(folder, previous)
    try:
        os.replace(partial, folder)
    except BaseException:
        if previous.exists() and not folder.exists():
            os.replace(previous, folder)
        raise
    if previous.exists():
        shutil.rmtree(previous)
    return folder


__all__ = ["restore_interrupted_replace", "write_folder_atomically"]
