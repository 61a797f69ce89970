"""Decode a video file with PyAV into RGB frames sampled at the feature rate, streaming.

**Sampling rule.** Feature `i` stands for time `t_i = i * seconds_per_feature`, measured from the first decoded frame
(so a container whose first frame is stamped 1.4 s still starts at 0). It is computed from the frame on screen at
`t_i`: the last decoded frame whose presentation time is `<= t_i`. The video covers `[0, end)`, where `end` is the
last frame's time plus its duration, and a feature is produced for every `t_i < end`, so a video of `end` seconds
gives `ceil(end / seconds_per_feature)` features. Frame times come from the presentation timestamps, so
variable-frame-rate files are sampled at the right moments; a frame rate below the feature rate repeats frames.

**Orientation.** Frames are turned upright with the display-matrix rotation the container carries (phone videos).

**Memory.** Frames are decoded one at a time; the sampler holds the frame on screen and converts a frame to an array
only when a feature needs it, so memory does not grow with the video's length (the caller batches what it receives).

This file is copied flat into Hugging Face remote-code folders: it imports only the standard library, numpy and
PyAV (imported when a file is opened).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "TruncatedVideoWarning",
    "VideoDecodingError",
    "VideoInfo",
    "probe_video",
    "decode_frames",
    "sample_frames",
    "iter_sampled_frames",
    "num_features",
]


class VideoDecodingError(ValueError):
    """A video file is missing, is not a video, has no video stream, has no frames or cannot be decoded."""


class TruncatedVideoWarning(UserWarning):
    """A truncated file decoded on request (`allow_truncated=True`): its features cover only the decoded frames."""


@dataclass
class VideoInfo:
    """What the container says about a video before decoding.

    Attributes:
        path (`str`): the file.
        duration (`float` or None): seconds, from the video stream (or the container) when declared.
        width (`int`), height (`int`): coded frame size (before rotation).
        average_rate (`float` or None): declared frames per second.
        num_frames (`int` or None): declared frame count (0 or None when the container does not say).
        rotation (`int`): display rotation in degrees, counter-clockwise.
    """

    path: str
    duration: float | None
    width: int
    height: int
    average_rate: float | None
    num_frames: int | None
    rotation: int


def _import_av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - av is a dependency
        raise ImportError("decoding video files needs PyAV: pip install av") from error
    return av


def _open(path: str | os.PathLike):
    av = _import_av()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoDecodingError(f"No such video file: {path}")
    if os.path.isdir(path):
        raise VideoDecodingError(f"{path} is a folder, not a video file")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise VideoDecodingError(f"{path} is not a readable video file ({error})") from error
    if not container.streams.video:
        kinds = sorted({stream.type for stream in container.streams}) or ["none"]
        container.close()
        raise VideoDecodingError(f"{path} has no video stream (streams: {', '.join(kinds)})")
    return container


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's declared properties without decoding it. Raises [`VideoDecodingError`] on a bad file."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        duration = _container_duration(container, stream)
        rotation = 0
        for frame in _frames_of(container, stream, os.fspath(path)):
            rotation = int(frame.rotation or 0)
            break
        return VideoInfo(
            path=os.fspath(path),
            duration=duration,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            average_rate=float(stream.average_rate) if stream.average_rate else None,
            num_frames=stream.frames or None,
            rotation=rotation,
        )
    finally:
        container.close()


def _frames_of(container, stream, path: str) -> Iterator[Any]:
    av = _import_av()
    stream.thread_type = "AUTO"
    decoded = 0
    try:
        for frame in container.decode(stream):
            decoded += 1
            yield frame
    except av.error.FFmpegError as error:
        raise VideoDecodingError(f"{path}: decoding failed after {decoded} frames ({error})") from error


def decode_frames(path: str | os.PathLike) -> Iterator[tuple[float, Any, float | None]]:
    """Decoded frames in presentation order as `(time_s, av.VideoFrame, duration_s or None)`.

    `time_s` is the frame's presentation time in seconds (None-stamped frames are placed one frame period after the
    previous one). Raises [`VideoDecodingError`] for a missing file, a file that is not a video, a file without a
    video stream and a decoding error.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        time_base = stream.time_base
        period = 1.0 / float(stream.average_rate) if stream.average_rate else None
        previous = None
        for frame in _frames_of(container, stream, os.fspath(path)):
            if frame.pts is not None and time_base is not None:
                time = float(frame.pts * time_base)
            elif previous is not None:
                time = previous + (period or 0.0)
            else:
                time = 0.0
            duration = float(frame.duration * time_base) if frame.duration and time_base is not None else None
            previous = time
            yield time, frame, duration
    finally:
        container.close()


def _to_rgb(frame: Any) -> np.ndarray:
    """`(H, W, 3)` uint8, turned upright by the frame's display rotation. Arrays pass through."""
    if isinstance(frame, np.ndarray):
        return frame
    image = frame.to_ndarray(format="rgb24")
    quarter_turns = round((frame.rotation or 0) / 90) % 4
    if quarter_turns:
        # The display matrix rotates counter-clockwise by `rotation` degrees; np.rot90 turns counter-clockwise too.
        image = np.ascontiguousarray(np.rot90(image, k=quarter_turns))
    return image


def sample_frames(
    frames: Iterable[tuple[float, Any, float | None]],
    seconds_per_feature: float,
    *,
    source: str = "video",
    report: dict | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Apply the sampling rule of this module to a stream of `(time_s, frame, duration_s or None)`.

    Frames may be `av.VideoFrame`s or `(H, W, 3)` uint8 arrays. Yields `(feature_index, (H, W, 3) uint8)` for
    `feature_index = 0, 1, ...`; the same frame object is yielded for consecutive indices it covers. Frames whose time
    does not increase are dropped (broken timestamps). Raises [`VideoDecodingError`] when there is no frame.
    When the stream is exhausted, `report` (if given) receives `duration` (the video's `end` in seconds),
    `num_decoded_frames` and `num_features`.
    """
    if not seconds_per_feature > 0:
        raise ValueError(f"seconds_per_feature must be > 0, got {seconds_per_feature}")
    held = held_time = held_rgb = None
    held_duration = None
    first_time = None
    last_step = None
    index = decoded = 0
    for time, frame, duration in frames:
        decoded += 1
        if first_time is None:
            first_time = time
        time = time - first_time
        if held is not None:
            if time <= held_time:
                continue
            last_step = time - held_time
            # Every sample time before this frame's time shows the held frame.
            while index * seconds_per_feature < time - 1e-9:
                if held_rgb is None:
                    held_rgb = _to_rgb(held)
                yield index, held_rgb
                index += 1
        held, held_time, held_duration, held_rgb = frame, time, duration, None
    if held is None:
        raise VideoDecodingError(f"{source} has no video frames")
    step = held_duration or last_step or seconds_per_feature
    end = held_time + step
    while index * seconds_per_feature < end - 1e-9:
        if held_rgb is None:
            held_rgb = _to_rgb(held)
        yield index, held_rgb
        index += 1
    if report is not None:
        report.update(duration=end, num_decoded_frames=decoded, num_features=index)


def num_features(duration_s: float, seconds_per_feature: float) -> int:
    """Features a video of `duration_s` seconds gives under the sampling rule: `ceil(duration / spf)`."""
    return max(0, math.ceil(duration_s / seconds_per_feature - 1e-9))


def iter_sampled_frames(
    path: str | os.PathLike, seconds_per_feature: float, report: dict | None = None, allow_truncated: bool = False
) -> Iterator[tuple[int, np.ndarray]]:
    """The frames of a video file at the feature rate: `(feature_index, (H, W, 3) uint8 RGB)`, upright.

    See [`sample_frames`] for `report`. Raises [`VideoDecodingError`] for a still image, and, once the frames run
    out, for a truncated file: one whose frames stop more than `max(1 s, 2 %)` before the duration its container
    declares (an interrupted download or copy), so that its features are never taken for the whole video. With
    `allow_truncated=True` such a file gives a [`TruncatedVideoWarning`] instead, and `report` also receives
    `truncated=True` and `declared_duration` (its `duration` stays the decoded one)."""
    declared = _declared_duration(path)
    report = report if report is not None else {}
    yield from sample_frames(decode_frames(path), seconds_per_feature, source=os.fspath(path), report=report)
    decoded = report.get("duration")
    if declared is not None and decoded is not None and declared - decoded > max(1.0, 0.02 * declared):
        message = f"{os.fspath(path)} is truncated: its container declares {declared:.1f} s but its frames stop at "
        if not allow_truncated:
            raise VideoDecodingError(
                f"{message}{decoded:.1f} s (an interrupted download or copy?); fetch or copy the file again, or "
                "allow a truncated file explicitly (--allow-truncated) to use the decoded part"
            )
        report.update(truncated=True, declared_duration=declared)
        warnings.warn(f"{message}{decoded:.1f} s; using the {decoded:.1f} s decoded", TruncatedVideoWarning, 2)


# Demuxers of single pictures and picture sequences: PyAV opens them as one-frame "videos".
IMAGE_FORMATS = ("image2", "image2pipe")


def _declared_duration(path: str | os.PathLike) -> float | None:
    """The duration the container declares, in seconds; refuses still images."""
    container = _open(path)
    try:
        names = set((container.format.name or "").split(","))
        if names & set(IMAGE_FORMATS) or any(name.endswith("_pipe") for name in names):
            raise VideoDecodingError(
                f"{os.fspath(path)} is a still image ({container.format.name}), not a video; give a video file"
            )
        return _container_duration(container, container.streams.video[0])
    finally:
        container.close()


def _container_duration(container, stream) -> float | None:
    """The duration the video stream (else the container) declares, in seconds; None when neither does."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration is not None else None
