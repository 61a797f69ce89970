"""Write generated RGB frames to a real video file with PyAV (H.264 by default), for demos, tests and benchmarks.

Every frame carries its own presentation time (millisecond time base), so constant- and variable-frame-rate files
are written the same way, and the file decodes back through `rgnet_hf.video_decoding` like any user's video.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["moving_gradient_frames", "write_rgb_video", "write_silence"]

TIME_BASE = Fraction(1, 1000)


def write_rgb_video(
    path: str | Path,
    frames: Iterable[tuple[float, np.ndarray]],
    *,
    fps: float,
    size: tuple[int, int],
    options: dict[str, str] | None = None,
    codec: str = "libx264",
    rotation: int | None = None,
    silent_audio_seconds: float | None = None,
) -> Path:
    """
    Encode `(time_s, (height, width, 3) uint8 RGB)` frames, in presentation order, into `path` (its extension picks
    the container: `.mp4`, `.mkv`, ...).

    Args:
        fps: the stream's declared frame rate (the frames' own times are what decoders sample by).
        size: `(width, height)` of every frame.
        options: encoder options, e.g. `{"crf": "18", "g": "10", "bf": "0"}`.
        rotation: display rotation in degrees (counter-clockwise) stored in the container, as phones do.
        silent_audio_seconds: add a silent mono AAC track of this length.
    """
    import av

    path = Path(path)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = TIME_BASE
        stream.options = dict(options or {})
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = container.add_stream("aac", rate=16000) if silent_audio_seconds is not None else None
        for time, image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image, dtype=np.uint8), format="rgb24")
            frame.pts = int(round(time / TIME_BASE))
            frame.time_base = TIME_BASE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            write_silence(audio, container, silent_audio_seconds)
    return path


def write_silence(stream, container, seconds: float) -> None:
    """Encode `seconds` of silence into an open audio `stream` of `container` and flush it."""
    import av

    samples = int(seconds * stream.rate)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), dtype=np.float32), format="fltp", layout="mono")
    frame.sample_rate = stream.rate
    frame.pts = 0
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def moving_gradient_frames(seconds: float, fps: float, width: int, height: int) -> Iterable[tuple[float, np.ndarray]]:
    """`(time_s, image)` frames of a colour gradient that moves every frame (no two frames alike): the content of the
    decoding and extraction benchmarks."""
    y, x = np.mgrid[0:height, 0:width]
    for index in range(int(seconds * fps)):
        image = np.stack([(x + 3 * index) % 256, (y + 2 * index) % 256, (x + y + index) % 256], -1)
        yield index / fps, image.astype(np.uint8)
