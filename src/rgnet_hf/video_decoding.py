"""Decode a video file with PyAV into RGB frames sampled at the feature rate, streaming.

**Sampling rule.** Feature `i` stands for time `t_i = i * seconds_per_feature`, measured from the first decoded frame
(so a container whose first frame is stamped 1.4 s still starts at 0). It is computed from the frame on screen at
`t_i`: the last decoded frame whose presentation time is `<= t_i`. The video covers `[0, end)`, where `end` is the
last frame's time plus its duration, and a feature is produced for every `t_i < end`, so a video of `end` seconds
gives `ceil(end / seconds_per_feature)` features. Frame times come from the presentation timestamps, so
variable-frame-rate files are sampled at the right moments; a frame rate below the feature rate repeats frames.

**Orientation.** Frames are turned upright with the display-matrix rotation the container carries (phone videos).

**Parallel decoding.** [`iter_sampled_frames_parallel`] cuts the timeline at keyframes (found by demuxing, without
decoding) into segments of a few seconds, decodes them in worker processes and yields exactly what
[`iter_sampled_frames`] yields: each worker starts at its segment's keyframe, keeps the frames whose time falls in its
segment, decodes one frame past the end to know how long its last frame stays on screen, and converts only the frames
a feature samples. Files without keyframe timestamps or too short to split fall back to the sequential path. A
`transform` (for an encoder, its image processor) runs on each sampled frame in the worker that decoded it, so the
pre-processing is spread over the workers too and what crosses to the parent is its (usually smaller) output.
[`iter_videos_sampled_frames_parallel`] decodes a list of videos with one pool, the next videos' segments while an
earlier video is consumed, so a folder of short videos keeps the workers busy too.

**Memory.** Frames are decoded one at a time; the sampler holds the frame on screen and converts a frame to an array
only when a feature needs it, so memory does not grow with the video's length (the caller batches what it receives).

This file is copied flat into Hugging Face remote-code folders: it imports only the standard library, numpy and
PyAV (imported when a file is opened).
"""

from __future__ import annotations

import math
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
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
    "iter_sampled_frames_parallel",
    "iter_videos_sampled_frames_parallel",
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


# Parallel decoding --------------------------------------------------------------------------------------------------

# Segments are at least this long (seconds) so that a worker's start-up seek and one frame decoded past the end stay
# small next to the segment, and short enough that a few in flight hold little memory.
MIN_SEGMENT_SECONDS = 8.0


def _first_index(time: float, seconds_per_feature: float) -> int:
    """How many sample times `i * spf` lie strictly before `time - 1e-9`: the sequential sampler's comparison."""
    index = max(0, math.ceil((time - 1e-9) / seconds_per_feature) - 1)
    while index * seconds_per_feature < time - 1e-9:
        index += 1
    while index > 0 and (index - 1) * seconds_per_feature >= time - 1e-9:
        index -= 1
    return index


def _keyframe_plan(path: str) -> tuple[list[int], float, Any] | None:
    """Keyframe pts (sorted, unique), the first decoded frame's time and the stream's time base; None when the file
    cannot be split (a packet without pts, no keyframe index)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        time_base = stream.time_base
        if time_base is None or not stream.average_rate:
            return None
        keyframes = set()
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet at the end
            if packet.pts is None:
                return None
            if packet.is_keyframe:
                keyframes.add(packet.pts)
    finally:
        container.close()
    first_time = None
    for time, _, _ in decode_frames(path):
        first_time = time
        break
    if first_time is None or not keyframes:
        return None
    return sorted(keyframes), first_time, time_base


def _decode_segment(
    path: str,
    start_pts: int,
    stop_pts: int | None,
    first_time: float,
    seconds_per_feature: float,
    is_first: bool,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Decode the frames whose pts lie in `[start_pts, stop_pts)` (from the keyframe at `start_pts`) and sample them.

    Returns `runs`: `(first_index, stop_index, byte_offset, shape, dtype)` for each sampled frame, in order (the last
    frame's stop is None when `stop_pts` is None: the caller ends the video), the frames themselves (`(H, W, 3)`
    uint8, or what `transform` makes of each) in the shared-memory block named `frames_block` (see
    [`_take_frames`]); `next_time` (the first frame time past the segment, None at the end); `last_time`,
    `last_duration`, `previous_time` (the last kept frame, its duration and the frame before it in the segment, for
    the end of the video); `num_decoded_frames`."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        time_base = stream.time_base
        stream.thread_count = 1  # the processes are the parallelism; decoder threads would only oversubscribe
        if not is_first:
            container.seek(start_pts, stream=stream, backward=True, any_frame=False)
        runs: list[tuple[int, int | None, np.ndarray]] = []
        # The last kept frame waits for the next one, whose time ends its run of sample indices; only frames with a
        # non-empty run are converted, and no decoded frame is held longer (FFmpeg reuses its buffers).
        held: tuple[float, Any, int] | None = None
        last_time = last_duration = previous_time = None
        next_time = None
        decoded = kept = 0

        def release(stop: int | None) -> None:
            time, frame, begin = held
            if stop is None or stop > begin:
                rgb = _to_rgb(frame)
                runs.append((begin, stop, rgb if transform is None else _transformed(transform, rgb)))

        for frame in _frames_of(container, stream, path):
            if frame.pts is None:
                raise VideoDecodingError(f"{path}: a frame without a timestamp; decode it with one worker")
            if not is_first and frame.pts < start_pts:
                continue  # leading frames of an open GOP belong to the previous segment
            time = float(frame.pts * time_base) - first_time
            if stop_pts is not None and frame.pts >= stop_pts:
                if held is None or time > held[0]:
                    next_time = time
                    break
                continue
            decoded += 1
            if held is not None and time <= held[0]:
                continue  # broken timestamps: dropped as the sequential sampler drops them
            begin = 0 if is_first and kept == 0 else _first_index(time, seconds_per_feature)
            if held is not None:
                release(_first_index(time, seconds_per_feature))
            previous_time, last_time = last_time, time
            last_duration = float(frame.duration * time_base) if frame.duration else None
            held = (time, frame, begin)
            kept += 1
        if held is not None:
            release(None if next_time is None else _first_index(next_time, seconds_per_feature))
            held = None
    finally:
        container.close()
    block, runs = _share_frames(runs)
    return {
        "runs": runs,
        "frames_block": block,
        "next_time": next_time,
        "last_time": last_time,
        "last_duration": last_duration,
        "previous_time": previous_time,
        "num_decoded_frames": decoded,
    }


def _transformed(transform: Callable[[np.ndarray], np.ndarray], rgb: np.ndarray) -> np.ndarray:
    """`transform(rgb)` as a C-contiguous array (what is copied into shared memory)."""
    array = transform(rgb)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"a frame transform must return a numpy array, got {type(array).__name__}")
    return np.ascontiguousarray(array)


def _share_frames(runs: list[tuple[int, int | None, np.ndarray]]) -> tuple[str | None, list]:
    """Copy a segment's sampled frames into one shared-memory block: a pipe would pickle and copy each frame several
    times, which costs the parent more CPU than the decoding saves. Returns the block's name (None without frames)
    and the runs with `(byte_offset, shape, dtype)` in place of the frames; the receiver unlinks the block."""
    total = sum(array.nbytes for _, _, array in runs)
    if total == 0:
        return None, [(begin, stop, 0, array.shape, array.dtype.str) for begin, stop, array in runs]
    block = shared_memory.SharedMemory(create=True, size=total)
    shared, offset = [], 0
    try:
        for begin, stop, array in runs:
            np.ndarray(array.shape, array.dtype, buffer=block.buf, offset=offset)[...] = array
            shared.append((begin, stop, offset, array.shape, array.dtype.str))
            offset += array.nbytes
    except BaseException:
        block.unlink()
        raise
    finally:
        block.close()
    return block.name, shared


def _take_frames(result: dict) -> list[tuple[int, int | None, np.ndarray]]:
    """The `(first_index, stop_index, frame)` runs of a `_decode_segment` result, copied out of its shared-memory
    block, which is then unlinked."""
    name = result.get("frames_block")
    if name is None:
        return [(begin, stop, np.zeros(shape, dtype)) for begin, stop, _, shape, dtype in result["runs"]]
    block = shared_memory.SharedMemory(name=name)
    try:
        return [
            (begin, stop, np.ndarray(shape, dtype, buffer=block.buf, offset=offset).copy())
            for begin, stop, offset, shape, dtype in result["runs"]
        ]
    finally:
        block.close()
        block.unlink()


def _discard_frames(future: Any) -> None:
    """Unlink the shared-memory block of a segment whose frames are no longer wanted (an early stop or an error)."""
    if future.cancelled() or future.exception() is not None:
        return
    name = future.result().get("frames_block")
    if name is not None:
        try:
            block = shared_memory.SharedMemory(name=name)
        except FileNotFoundError:
            return
        block.close()
        block.unlink()


def _segments(keyframes: list[int], time_base: Any, first_time: float, min_seconds: float) -> list[tuple[int, int]]:
    """`(start_pts, stop_pts or None)` segments that start at keyframes and last at least `min_seconds`."""
    starts = [keyframes[0]]
    for pts in keyframes[1:]:
        if float(pts * time_base) - float(starts[-1] * time_base) >= min_seconds:
            starts.append(pts)
    return [(start, starts[i + 1] if i + 1 < len(starts) else None) for i, start in enumerate(starts)]


def _transform_each(
    frames: Iterator[tuple[int, np.ndarray]], transform: Callable[[np.ndarray], np.ndarray]
) -> Iterator[tuple[int, np.ndarray]]:
    """`(index, transform(frame))`, transforming a frame repeated for consecutive indices once."""
    previous = output = None
    try:
        for index, frame in frames:
            if frame is not previous:
                previous, output = frame, _transformed(transform, frame)
            yield index, output
    finally:
        frames.close()


def _pool(workers: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork would copy a parent holding threads (the encoder's producer, torch's pools); forkserver/spawn start clean.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def iter_sampled_frames_parallel(
    path: str | os.PathLike,
    seconds_per_feature: float,
    report: dict | None = None,
    allow_truncated: bool = False,
    *,
    workers: int = 2,
    executor: Any = None,
    min_segment_seconds: float | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """[`iter_sampled_frames`] with the decoding split at keyframes over `workers` processes: the same indices,
    frames, `report` and errors. At most `2 * workers` segments are in flight, so memory stays bounded by the segment
    length, not the video's. `executor` (a `concurrent.futures` process pool) can be shared across videos; without
    it one is started for this call. Segments last at least `min_segment_seconds` (default
    `MIN_SEGMENT_SECONDS`). Falls back to the sequential decoder for `workers <= 1` without an `executor` (with
    one, its processes decode the segments: a one-worker pool is the baseline parallel decoding is measured
    against), a file without keyframe timestamps, one too short for two segments, or one with a segment longer
    than `MAX_SEGMENT_SECONDS` (keyframes too far apart to hold a segment's frames in memory).

    `transform` (a picklable callable, `(H, W, 3)` uint8 -> numpy array) is applied to each sampled frame once, in
    the worker that decoded it, and its output is yielded in place of the frame (the same object for consecutive
    indices, as frames are); on the sequential fallback it runs in this process."""
    if not seconds_per_feature > 0:
        raise ValueError(f"seconds_per_feature must be > 0, got {seconds_per_feature}")
    if workers <= 1 and executor is None:
        frames = iter_sampled_frames(path, seconds_per_feature, report=report, allow_truncated=allow_truncated)
        yield from frames if transform is None else _transform_each(frames, transform)
        return
    videos = iter_videos_sampled_frames_parallel(
        [path],
        seconds_per_feature,
        allow_truncated,
        workers=workers,
        executor=executor,
        min_segment_seconds=min_segment_seconds,
        transform=transform,
        split_single_segment=False,
    )
    try:
        for _, frames, video_report in videos:
            try:
                yield from frames
            finally:
                frames.close()
                if report is not None:
                    report.update(video_report)
    finally:
        videos.close()


# Videos with one segment are decoded in a worker (whole) only up to this length; longer ones, and videos with a
# longer segment, are decoded in the consuming process, whose memory holds one frame at a time, not a segment.
MAX_SEGMENT_SECONDS = 120.0


@dataclass
class _VideoPlan:
    """How one video of a parallel decode is read: `segments` for the workers, or `sequential`, or `error`."""

    path: str
    declared: float | None = None
    first_time: float = 0.0
    segments: list[tuple[int, int | None]] | None = None
    error: BaseException | None = None

    @property
    def sequential(self) -> bool:
        return self.error is None and self.segments is None


class _SegmentScheduler:
    """Segments of a list of videos, submitted in video order and consumed in the same order, at most `limit` in
    flight: the workers decode the next videos while the consumer is still on an earlier one."""

    def __init__(self, paths, seconds_per_feature, executor, limit, min_segment_seconds, transform, split_single):
        self.paths = paths
        self.seconds_per_feature = seconds_per_feature
        self.executor = executor
        self.limit = limit
        self.min_segment_seconds = min_segment_seconds
        self.transform = transform
        self.split_single = split_single
        self.plans: list[_VideoPlan] = []
        self.next_video = self.next_segment = 0
        self.pending: deque = deque()  # (video number, segment number, future), in submission order

    def plan(self, number: int) -> _VideoPlan:
        while len(self.plans) <= number:
            self.plans.append(self._make_plan(self.paths[len(self.plans)]))
        return self.plans[number]

    def _make_plan(self, path: str) -> _VideoPlan:
        plan = _VideoPlan(path)
        try:
            plan.declared = _declared_duration(path)
            keyframes = _keyframe_plan(path)
        except (ValueError, OSError) as error:  # raised when the consumer reaches this video, not before
            plan.error = error
            return plan
        if keyframes is None:
            return plan
        keyframe_pts, plan.first_time, time_base = keyframes
        segments = _segments(keyframe_pts, time_base, plan.first_time, self.min_segment_seconds)
        if len(segments) < 2 and not self.split_single:
            return plan
        ends = [float(pts * time_base) for pts, _ in segments[1:]]
        ends.append(plan.declared if plan.declared is not None else math.inf)
        starts = [float(pts * time_base) for pts, _ in segments]
        if max(end - start for start, end in zip(starts, ends)) > MAX_SEGMENT_SECONDS:
            return plan
        plan.segments = segments
        return plan

    def top_up(self) -> None:
        while len(self.pending) < self.limit and self.next_video < len(self.paths):
            plan = self.plan(self.next_video)
            if plan.segments is None or self.next_segment >= len(plan.segments):
                self.next_video, self.next_segment = self.next_video + 1, 0
                continue
            start, stop = plan.segments[self.next_segment]
            args = (plan.path, start, stop, plan.first_time, self.seconds_per_feature, self.next_segment == 0)
            future = self.executor.submit(_decode_segment, *args, self.transform)
            self.pending.append((self.next_video, self.next_segment, future))
            self.next_segment += 1

    def results(self, number: int) -> Iterator[tuple[dict, list]]:
        """The decoded segments of video `number`, in order, as `(result, runs)`; leaving early discards the rest."""
        try:
            for segment in range(len(self.plans[number].segments)):
                self.top_up()
                video, position, future = self.pending.popleft()
                assert (video, position) == (number, segment)
                result = future.result()
                runs = _take_frames(result)
                self.top_up()
                yield result, runs
        finally:
            self.drop(number)

    def drop(self, number: int) -> None:
        """Abandon what is left of video `number`: its segments in flight unlink their frames when they finish."""
        while self.pending and self.pending[0][0] == number:
            _abandon(self.pending.popleft()[2])
        if self.next_video == number:
            self.next_video, self.next_segment = number + 1, 0

    def close(self) -> None:
        while self.pending:
            _abandon(self.pending.popleft()[2])


def _abandon(future: Any) -> None:
    if not future.cancel():
        future.add_done_callback(_discard_frames)


def iter_videos_sampled_frames_parallel(
    paths: Iterable[str | os.PathLike],
    seconds_per_feature: float,
    allow_truncated: bool = False,
    *,
    workers: int = 2,
    executor: Any = None,
    min_segment_seconds: float | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    split_single_segment: bool = True,
) -> Iterator[tuple[str, Iterator[tuple[int, np.ndarray]], dict]]:
    """Several videos decoded by one pool of `workers` processes: yields `(path, frames, report)` per video, in
    order, where `frames` and `report` are what [`iter_sampled_frames_parallel`] gives for that video (the report
    is complete once `frames` is exhausted). Read each video's frames before asking for the next video (a video
    left unread is skipped, its segments discarded). The segments of the following videos are decoded while a
    video is consumed, up to `2 * workers` in flight, so a folder of short videos keeps every worker busy; a video
    of a single segment is decoded whole by one worker (`split_single_segment=False`: in this process, as
    [`iter_sampled_frames_parallel`] does) when it is at most `MAX_SEGMENT_SECONDS` long. A video that cannot be
    opened raises its [`VideoDecodingError`] from its `frames`, and the other videos are still decoded."""
    if not seconds_per_feature > 0:
        raise ValueError(f"seconds_per_feature must be > 0, got {seconds_per_feature}")
    paths = [os.fspath(path) for path in paths]
    own = executor is None
    executor = _pool(workers) if own else executor
    scheduler = _SegmentScheduler(
        paths,
        seconds_per_feature,
        executor,
        2 * max(1, workers),
        MIN_SEGMENT_SECONDS if min_segment_seconds is None else min_segment_seconds,
        transform,
        split_single_segment,
    )
    try:
        for number, path in enumerate(paths):
            scheduler.plan(number)
            scheduler.top_up()
            report: dict = {}
            frames = _video_frames(scheduler, number, report, allow_truncated)
            try:
                yield path, frames, report
            finally:
                frames.close()
                scheduler.drop(number)  # frames never started (the consumer skipped the video) hold its segments
    finally:
        scheduler.close()
        if own:
            executor.shutdown(wait=True, cancel_futures=True)


def _video_frames(
    scheduler: _SegmentScheduler, number: int, report: dict, allow_truncated: bool
) -> Iterator[tuple[int, np.ndarray]]:
    """The sampled frames of video `number` of `scheduler`, from its decoded segments (or, for a video the workers
    do not split, from the sequential decoder), with the end of the video and the truncation check of
    [`iter_sampled_frames`]."""
    plan = scheduler.plans[number]
    path, seconds_per_feature = plan.path, scheduler.seconds_per_feature
    if plan.error is not None:
        scheduler.drop(number)
        raise plan.error
    if plan.sequential:
        scheduler.drop(number)
        frames = iter_sampled_frames(path, seconds_per_feature, report=report, allow_truncated=allow_truncated)
        yield from frames if scheduler.transform is None else _transform_each(frames, scheduler.transform)
        return
    index = decoded = 0
    last_time = previous_time = last_duration = None
    for result, runs in scheduler.results(number):
        decoded += result["num_decoded_frames"]
        if result["last_time"] is not None:
            previous_time = result["previous_time"] if result["previous_time"] is not None else last_time
            last_time, last_duration = result["last_time"], result["last_duration"]
        for begin, stop, frame in runs:
            if stop is None:  # the video's last frame: on screen for its duration
                step = last_duration or (last_time - previous_time if previous_time is not None else None)
                end = last_time + (step or seconds_per_feature)
                stop = _first_index(end, seconds_per_feature)
                report["duration"] = end
            for index in range(begin, stop):
                yield index, frame
            index = stop
    if "duration" not in report:
        raise VideoDecodingError(f"{path} has no video frames")
    report.update(num_decoded_frames=decoded, num_features=index)
    declared, decoded_end = plan.declared, report.get("duration")
    if declared is not None and decoded_end is not None and declared - decoded_end > max(1.0, 0.02 * declared):
        message = f"{path} is truncated: its container declares {declared:.1f} s but its frames stop at "
        if not allow_truncated:
            raise VideoDecodingError(
                f"{message}{decoded_end:.1f} s (an interrupted download or copy?); fetch or copy the file again, or "
                "allow a truncated file explicitly (--allow-truncated) to use the decoded part"
            )
        report.update(truncated=True, declared_duration=declared)
        warnings.warn(f"{message}{decoded_end:.1f} s; using the {decoded_end:.1f} s decoded", TruncatedVideoWarning, 2)
