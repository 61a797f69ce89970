"""Frame-feature caches in MAD's layout: `rgnet-hf extract` turns video files into one HDF5 file.

The output holds one float32 dataset `[T, D]` per video, keyed by the file's stem, exactly as
`rgnet_hf.data.load_mad` reads MAD's `CLIP_B32_frames_features_5fps.h5` (feature `i` stands for time
`i * seconds_per_feature`; raw, not normalised). Each dataset records `seconds_per_feature`, `encoder`, `duration` and
`source` as attributes, and the file root records `encoder` and `seconds_per_feature`.

**Encoder backends.** Entries and the root also record `encoder_backend`, the encoder's backend (`pytorch`, `onnx` or
`onnx-int8`, see `video_text_encoders`); a cache written before backends were recorded counts as `pytorch`. A run
with another backend than the existing output's is refused like one with another encoder, so int8 features are
never mixed silently with float32 ones; [`check_cache_entry_fits`] can refuse an entry of another backend too.

**Resuming without corrupt entries.** HDF5 files are not crash-safe while open for writing, so nothing writes into
the output directly while videos are encoded:

1. each finished video is written to its own small file `OUTPUT.parts/<stem>.h5`, first under a temporary name and
   then renamed (a rename is atomic, so a part that exists is complete);
2. when every video is done, the parts and the previous output's entries are written to `OUTPUT.tmp`, which is
   renamed over the output; then the parts are removed.

A kill at any moment leaves the output either as it was or complete; a rerun skips the videos whose entry is in the
output or whose part exists, and redoes only the rest. Runs with another encoder or feature rate than the existing
output's are refused.

**One run per output.** `rgnet-hf extract` (and `rgnet-hf ground --features`, when it adds a video) holds an
exclusive OS lock (`fcntl.flock`) on `OUTPUT.lock` for the whole run, see [`lock_output`]: a second run on the same
output stops at once with an error that names the output and the process holding it, instead of deleting the first
run's parts. The OS releases the lock when the holder exits or is killed, so a lock file left by a killed run does
not block the next one; a run that ends normally removes the file.

**Data-parallel.** Under `accelerate launch` (one process per GPU, or CPU processes), process `r` of `n` takes the
`r`-th, `(r + n)`-th, ... of the sorted videos and encodes those not done yet, on its own device, and writes only
its own parts (HDF5 has one writer per file); after a barrier, the main process alone merges. Without a launcher it
runs as one process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "VIDEO_EXTENSIONS",
    "ExtractionReport",
    "OutputLockedError",
    "check_cache_entry_fits",
    "entries_not_listed",
    "entry_source_problem",
    "extract_video_features",
    "list_videos",
    "lock_output",
    "merge_parts",
]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


@dataclass
class ExtractionReport:
    """What one `extract_video_features` call did.

    Attributes:
        written (`list[str]`): keys encoded by this process in this run.
        skipped (`list[str]`): keys already done (in the output or in a part) before this run.
        failed (`dict[str, str]`): key -> error message for videos this process could not encode (not written).
        output (`Path`): the HDF5 file.
    """

    output: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def list_videos(path: str | os.PathLike) -> list[Path]:
    """A video file, or the video files (by extension, sorted) directly inside a folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No such video file or folder: {path}")
    if path.is_file():
        return [path]
    videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise ValueError(f"{path} holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
    stems: dict[str, Path] = {}
    for video in videos:
        if video.stem in stems:
            raise ValueError(f"{stems[video.stem].name} and {video.name} would share the key {video.stem!r}")
        stems[video.stem] = video
    return videos


def entries_not_listed(path: str | os.PathLike) -> dict[str, list[str]]:
    """What `list_videos` leaves out of a folder, so that a run can say so: reason -> sorted names."""
    path = Path(path)
    if not path.is_dir():
        return {}
    skipped: dict[str, list[str]] = {}
    for entry in sorted(path.iterdir()):
        if entry.is_dir():
            reason = "folders (only the files directly inside are read)"
        elif not entry.is_file() or entry.suffix.lower() not in VIDEO_EXTENSIONS:
            reason = f"not a video by extension ({', '.join(VIDEO_EXTENSIONS)})"
        else:
            continue
        skipped.setdefault(reason, []).append(_display_name(entry.name))
    return skipped


def check_output(output: str | os.PathLike) -> Path:
    """Refuse an `--output` that cannot be a feature cache, before any encoder is loaded or video decoded."""
    import h5py

    output = Path(output)
    if output.suffix.lower() not in (".h5", ".hdf5"):
        raise ValueError(f"--output must be an .h5 file, got {output}")
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder: give the path of an .h5 file")
    if output.exists() and not h5py.is_hdf5(output):
        raise ValueError(
            f"--output {output} exists and is not an HDF5 file: it would be overwritten; "
            "give another --output or move that file away"
        )
    return output


class OutputLockedError(ValueError):
    """Another run holds the lock of the output (see [`lock_output`])."""


def _lock_file(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


@contextlib.contextmanager
def lock_output(output: str | os.PathLike) -> Iterator[Path]:
    """
    Hold an exclusive OS lock on `OUTPUT.lock` (beside `output`) for the block: the parts and the merge of one output
    belong to one run.

    Raises [`OutputLockedError`] at once (no waiting) when another process holds it, naming the output and that
    process's id (recorded in the lock file). The lock is `fcntl.flock`: the OS drops it when its holder exits or is
    killed, so a lock file left behind by a killed run is taken over. On leaving the block the file is removed.
    Without `fcntl` (Windows) the block runs unlocked, with a warning.

    Yields:
        `Path` of the lock file.
    """
    output = Path(output)
    path = _lock_file(output)
    try:
        import fcntl
    except ImportError:
        warnings.warn(f"no fcntl on this platform: {output} is not locked against a second run", stacklevel=3)
        yield path
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode("ascii", "replace").strip()
            os.close(descriptor)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise OutputLockedError(
                f"{output} is being written by another run ({who}, lock file {path}); wait for it to finish, or "
                "give another --output"
            ) from None
        # The previous holder removes the file before it unlocks: a lock on a file no longer at `path` guards nothing.
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(descriptor)
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            break
        os.close(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode("ascii"))
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(descriptor)


def _parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _recorded_backend(attrs) -> str:
    # Caches written before backends were recorded were all made by PyTorch.
    return str(attrs.get("encoder_backend", "pytorch"))


def _check_settings(path: Path, encoder: str, seconds_per_feature: float, backend: str = "pytorch") -> None:
    import h5py

    with h5py.File(path, "r") as handle:
        recorded_encoder = handle.attrs.get("encoder")
        recorded_rate = handle.attrs.get("seconds_per_feature")
        recorded_backend = _recorded_backend(handle.attrs)
    if recorded_encoder is not None and str(recorded_encoder) != encoder:
        raise ValueError(f"{path} holds features of encoder {str(recorded_encoder)!r}, not {encoder!r}")
    if recorded_backend != backend:
        raise ValueError(
            f"{path} holds features made with the {recorded_backend!r} encoder backend, not {backend!r}: features "
            f"of two backends differ and must not be mixed in one cache; rerun with --encoder-backend "
            f"{recorded_backend} or write to another --output"
        )
    if recorded_rate is not None and not np.isclose(float(recorded_rate), seconds_per_feature):
        raise ValueError(
            f"{path} holds features at {float(recorded_rate)} s per feature, not {seconds_per_feature}; "
            "write to another file"
        )


def _done_keys(output: Path, encoder: str, seconds_per_feature: float, backend: str = "pytorch") -> dict[str, dict]:
    """Keys already extracted (in the output or in a part) -> the attributes recorded with them."""
    import h5py

    done: dict[str, dict] = {}
    if output.exists():
        _check_settings(output, encoder, seconds_per_feature, backend)
        with h5py.File(output, "r") as handle:
            done.update({key: dict(handle[key].attrs) for key in handle.keys()})
    parts = _parts_dir(output)
    if parts.is_dir():
        for part in parts.glob("*.h5"):
            _check_settings(part, encoder, seconds_per_feature, backend)
            with h5py.File(part, "r") as handle:
                done[part.stem] = dict(handle[part.stem].attrs) if part.stem in handle else {}
    return done


def _source_attributes(video: Path) -> dict:
    """Where an entry came from: its file's absolute path, size and modification time."""
    stat = video.stat()
    return {"source_path": str(video.resolve()), "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}


def entry_source_problem(video: Path, recorded: dict) -> str | None:
    """Why an existing entry of the same key must not stand for `video` (None: it may)."""
    if "source_path" not in recorded:
        return None  # written before sources were recorded: nothing to compare
    current = _source_attributes(video)
    if str(recorded["source_path"]) != current["source_path"]:
        return (
            f"the cache already holds {video.stem!r} from another file, {recorded['source_path']} (two videos with the "
            "same stem): write this one to another --output"
        )
    if (
        int(recorded.get("source_size", -1)) != current["source_size"]
        or int(recorded.get("source_mtime_ns", -1)) != current["source_mtime_ns"]
    ):
        return f"{video} changed since its features were extracted: remove its entry or write to another --output"
    return None


def _temporary_part(parts: Path, key: str) -> Path:
    return parts / f".{key}.h5.tmp-{os.getpid()}"


def _key_problem(video: Path, parts: Path) -> str | None:
    """Why `video`'s stem cannot be a cache key and part file name, checked before it is encoded; None if it can."""
    key = video.stem
    if key in (".", ".."):
        return f"{video.name}: {key!r} is not a valid HDF5 key; rename the file"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8 (HDF5 keys are UTF-8); rename the file"
    try:
        name_max = os.pathconf(parts, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(_temporary_part(parts, key).name)) > name_max:
        return f"{video.name}: the name is too long for its part file in {parts}; rename the file to a shorter name"
    return None


def _display_name(key: str) -> str:
    # backslashreplace: a name that is not valid UTF-8 still prints.
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def _write_part(parts: Path, key: str, features: np.ndarray, attrs: dict) -> None:
    import h5py

    final = parts / f"{key}.h5"
    temporary = _temporary_part(parts, key)
    try:
        with h5py.File(temporary, "w") as handle:
            handle.attrs["encoder"] = attrs["encoder"]
            handle.attrs["seconds_per_feature"] = attrs["seconds_per_feature"]
            handle.attrs["encoder_backend"] = attrs["encoder_backend"]
            dataset = handle.create_dataset(key, data=features.astype(np.float32, copy=False))
            for name, value in attrs.items():
                dataset.attrs[name] = value
    except BaseException:  # Ctrl-C or a write error: leave no half-written temporary file behind
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, final)


def merge_parts(
    output: str | os.PathLike, encoder: str, seconds_per_feature: float, backend: str = "pytorch"
) -> list[str]:
    """Write the output's entries and every finished part into a new output, atomically; remove the parts.

    `backend` is the encoder backend recorded at the root (the parts were checked to share it).

    Returns the keys added from parts. Does nothing when there are no parts.
    """
    import h5py

    output = Path(output)
    parts_dir = _parts_dir(output)
    parts = sorted(parts_dir.glob("*.h5")) if parts_dir.is_dir() else []
    if not parts:
        if parts_dir.is_dir() and not any(parts_dir.iterdir()):
            parts_dir.rmdir()
        return []
    temporary = output.with_name(output.name + ".tmp")
    added = []
    try:
        with h5py.File(temporary, "w") as merged:
            merged.attrs["encoder"] = encoder
            merged.attrs["seconds_per_feature"] = seconds_per_feature
            merged.attrs["encoder_backend"] = backend
            if output.exists():
                with h5py.File(output, "r") as previous:
                    for key in previous:
                        previous.copy(previous[key], merged, name=key)
            for part in parts:
                with h5py.File(part, "r") as source:
                    if part.stem in merged:
                        del merged[part.stem]
                    source.copy(source[part.stem], merged, name=part.stem)
                    added.append(part.stem)
    except OSError as error:
        # A half-written merge is useless; the output and the parts are untouched, so a rerun can merge again.
        temporary.unlink(missing_ok=True)
        reason = "the disk is full" if error.errno == errno.ENOSPC else str(error)
        raise OSError(
            error.errno,
            f"could not write {output} ({reason}): it is unchanged and the finished videos are kept in "
            f"{parts_dir}; free space (or fix the cause) and rerun the same extract to merge them",
        ) from error
    os.replace(temporary, output)
    shutil.rmtree(parts_dir)
    return added


def extract_video_features(
    encoder,
    videos: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    seconds_per_feature: float,
    *,
    process_index: int = 0,
    num_processes: int = 1,
    progress: bool = True,
    barrier=None,
    merge: bool = True,
    allow_truncated: bool = False,
) -> ExtractionReport:
    """Encode `videos` with `encoder` (a [`VideoTextEncoder`]) into the HDF5 cache `output` (see the module doc).

    Args:
        encoder: the frame encoder, already on this process's device.
        videos: video files; their stems are the keys.
        output: the `.h5` file to create or complete.
        seconds_per_feature: sampling interval (0.2 for MAD).
        process_index, num_processes: this process's share of the videos (data-parallel runs).
        progress: show a tqdm bar per video.
        barrier: called after this process's share, before the merge (`PartialState().wait_for_everyone`).
        merge: merge the parts into `output` (on process 0) when done.
        allow_truncated: encode the decoded part of a truncated file (with a `TruncatedVideoWarning`) instead of
            failing it; its entry records `truncated=True` and the container's `declared_duration`.

    Returns:
        [`ExtractionReport`]. Videos that fail (unreadable, no frames) are reported in `failed` and not written;
        the others are still extracted and merged.
    """
    if not seconds_per_feature > 0:
        raise ValueError(f"seconds_per_feature must be > 0, got {seconds_per_feature}")
    output = check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    name = encoder.name or type(encoder).__name__
    backend = str(getattr(encoder, "backend", "pytorch"))
    done = _done_keys(output, name, seconds_per_feature, backend)
    keys = [Path(video).stem for video in videos]
    if len(set(keys)) != len(keys):
        raise ValueError("two videos share a file stem (the key of their features)")
    report = ExtractionReport(output=output)
    for video, key in zip(videos, keys):
        if key in done:
            problem = entry_source_problem(Path(video), done[key])
            if problem is None:
                report.skipped.append(key)
            elif process_index == 0:
                report.failed[key] = problem
    parts = _parts_dir(output)
    parts.mkdir(exist_ok=True)
    # Shares are cut from the full list, so they do not depend on when each process looked at the parts.
    mine = [Path(video) for video, key in list(zip(videos, keys))[process_index::num_processes] if key not in done]
    try:
        to_encode = []
        for video in mine:
            problem = _key_problem(video, parts)
            if problem is not None:
                report.failed[_display_name(video.stem)] = problem
            else:
                to_encode.append(video)
        # One after the other, or with decoding workers the next videos decoded while one is encoded.
        encoded_videos = encoder.encode_videos(
            to_encode, seconds_per_feature, progress=progress, allow_truncated=allow_truncated
        )
        for video, (_, encoded) in zip(to_encode, encoded_videos):
            if isinstance(encoded, ValueError):  # VideoDecodingError and bad inputs; other errors stop the run
                report.failed[video.stem] = str(encoded)
                continue
            attrs = {
                "encoder": name,
                "encoder_backend": backend,
                "seconds_per_feature": seconds_per_feature,
                "duration": encoded.duration,
                "source": video.name,
                **_source_attributes(video),
            }
            if encoded.declared_duration is not None:
                attrs.update(truncated=True, declared_duration=encoded.declared_duration)
            _write_part(parts, video.stem, encoded.features, attrs)
            report.written.append(video.stem)
    except KeyboardInterrupt:
        # Finished parts stay for the rerun; an empty parts folder is only clutter. With several processes,
        # another one may still write into it.
        if num_processes == 1 and not any(parts.iterdir()):
            parts.rmdir()
        raise
    if barrier is not None:
        barrier()
    if merge and process_index == 0:
        merge_parts(output, name, seconds_per_feature, backend)
    return report


def check_cache_entry_fits(
    path: str | os.PathLike,
    key: str,
    config,
    seconds_per_feature: float | None = None,
    backend: str | None = None,
) -> None:
    """
    Refuse a cache entry made for another model: another feature rate, encoder or feature size (or, when `backend`
    is given, another encoder backend).

    Reading features at the wrong rate puts every moment at the wrong time (a 0.2 s cache read as 0.5 s per feature
    reports moments 2.5x too late), so a mismatch is an error that says which command makes a fitting cache.

    Args:
        path: the HDF5 cache written by `rgnet-hf extract`.
        key: the video's entry.
        config ([`RGNetConfig`]): the model that will read the features.
        seconds_per_feature (`float`, *optional*): the rate the caller asks for; defaults to the model's.
        backend (`str`, *optional*): the encoder backend the caller asks for (`pytorch`, `onnx`, `onnx-int8`); None
            accepts an entry of any backend.
    """
    import h5py

    path = Path(path)
    expected_rate = float(seconds_per_feature or config.seconds_per_feature)
    with h5py.File(path, "r") as handle:
        if key not in handle:
            raise KeyError(f"{path} has no entry {key!r}")
        entry = handle[key]
        rate = entry.attrs.get("seconds_per_feature", handle.attrs.get("seconds_per_feature"))
        encoder = entry.attrs.get("encoder", handle.attrs.get("encoder"))
        recorded_backend = _recorded_backend(entry.attrs if "encoder_backend" in entry.attrs else handle.attrs)
        size = int(entry.shape[-1]) if entry.ndim == 2 else None
    remedy = "make a fitting cache with `rgnet-hf extract --model MODEL --video VIDEO --output NEW.h5`"
    if rate is not None and not np.isclose(float(rate), expected_rate):
        raise ValueError(
            f"{path} [{key}] holds features at {float(rate)} s per feature, but the model reads {expected_rate} s per "
            f"feature: its moments would be at wrong times; {remedy}"
        )
    model_encoder = getattr(config, "feature_encoder", None)
    if encoder is not None and model_encoder and str(encoder) != str(model_encoder):
        raise ValueError(
            f"{path} [{key}] holds features of encoder {str(encoder)!r}, but the model was trained on "
            f"{str(model_encoder)!r} features; {remedy}"
        )
    if backend is not None and recorded_backend != backend:
        raise ValueError(
            f"{path} [{key}] holds features made with the {recorded_backend!r} encoder backend, but "
            f"{backend!r} was asked for; give --encoder-backend {recorded_backend} to read them, or make a cache with "
            f"`rgnet-hf extract --encoder-backend {backend} ...` into another --output"
        )
    if size is not None and size != config.video_feature_size:
        raise ValueError(
            f"{path} [{key}] holds {size}-d features, but the model reads {config.video_feature_size}-d video "
            f"features; {remedy}"
        )
