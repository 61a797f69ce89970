"""The parallel sampled-frame decoder yields exactly what the sequential one yields."""

from __future__ import annotations

import itertools
import os
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from rgnet_hf.synthetic.video_files import write_rgb_video  # noqa: E402
from rgnet_hf.video_decoding import (  # noqa: E402
    VideoDecodingError,
    _decode_segment,
    _keyframe_plan,
    _pool,
    _segments,
    _take_frames,
    iter_sampled_frames,
    iter_sampled_frames_parallel,
)


def _write(path: Path, frame_times: list[float], *, gop: int = 6, bframes: int = 2, size=(48, 32)) -> Path:
    """An h264 mp4 whose every frame differs (a moving gradient), keyframes every `gop` frames, with B-frames."""
    width, height = size

    def frames():
        for number, frame_time in enumerate(frame_times):
            image = np.zeros((height, width, 3), dtype=np.uint8)
            image[:, :, 0] = (np.arange(width)[None, :] * 5 + number * 7) % 256
            image[:, :, 1] = (number * 13) % 256
            yield frame_time, image

    options = {"crf": "18", "g": str(gop), "keyint_min": str(gop), "bf": str(bframes), "sc_threshold": "0"}
    return write_rgb_video(path, frames(), fps=25, size=size, options=options)


@pytest.fixture(scope="module")
def pool():
    executor = _pool(2)
    yield executor
    executor.shutdown()


def _both(path, spf, pool, min_segment_seconds=0.5):
    seq_report, par_report = {}, {}
    sequential = [(i, rgb.copy()) for i, rgb in iter_sampled_frames(path, spf, report=seq_report)]
    parallel = list(
        iter_sampled_frames_parallel(
            path, spf, report=par_report, workers=2, executor=pool, min_segment_seconds=min_segment_seconds
        )
    )
    return sequential, parallel, seq_report, par_report


def _assert_same(sequential, parallel, seq_report, par_report):
    assert [i for i, _ in parallel] == [i for i, _ in sequential]
    for (_, a), (_, b) in zip(sequential, parallel):
        np.testing.assert_array_equal(a, b)
    assert par_report == seq_report


@pytest.mark.parametrize("spf", [0.2, 0.08, 0.5])
def test_constant_rate_same_frames_and_report(tmp_path, pool, spf):
    path = _write(tmp_path / "cfr.mp4", [i / 25 for i in range(75)])
    keyframes, _, _ = _keyframe_plan(str(path))
    assert len(_segments(keyframes, Fraction(1, 1000), 0.0, 0.5)) >= 3  # really split
    _assert_same(*_both(path, spf, pool))


def test_variable_rate_same_frames(tmp_path, pool):
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.uniform(0.04, 0.2, size=60))
    times = [0.0] + [float(round(t, 3)) for t in times]
    path = _write(tmp_path / "vfr.mp4", times, gop=5)
    _assert_same(*_both(path, 0.1, pool, min_segment_seconds=0.3))


def test_sampling_points_on_segment_boundaries(tmp_path, pool):
    # Keyframes every 5 frames at 25 fps: every 0.2 s, so with spf 0.2 every segment starts on a sample time.
    path = _write(tmp_path / "edge.mp4", [i / 25 for i in range(50)], gop=5, bframes=0)
    _assert_same(*_both(path, 0.2, pool, min_segment_seconds=0.2))
    _assert_same(*_both(path, 0.04, pool, min_segment_seconds=0.2))


def test_short_file_falls_back(tmp_path, pool):
    path = _write(tmp_path / "short.mp4", [i / 25 for i in range(10)], gop=50)
    _assert_same(*_both(path, 0.1, pool, min_segment_seconds=8.0))


def test_truncated_file_still_refused(tmp_path, pool):
    whole = _write(tmp_path / "whole.mkv", [i / 25 for i in range(100)], bframes=0)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.4)])
    with pytest.raises(VideoDecodingError, match="truncated"):
        list(iter_sampled_frames(cut, 0.2))
    with pytest.raises(VideoDecodingError, match="truncated"):
        list(iter_sampled_frames_parallel(cut, 0.2, workers=2, executor=pool, min_segment_seconds=0.2))
    # Allowed explicitly, both give the decoded part with the same report.
    with pytest.warns(UserWarning, match="truncated"):
        _assert_same(*_both_allowed(cut, pool))


def _both_allowed(path, pool):
    seq_report, par_report = {}, {}
    sequential = [(i, rgb.copy()) for i, rgb in iter_sampled_frames(path, 0.2, seq_report, allow_truncated=True)]
    parallel = list(
        iter_sampled_frames_parallel(
            path, 0.2, par_report, allow_truncated=True, workers=2, executor=pool, min_segment_seconds=0.2
        )
    )
    return sequential, parallel, seq_report, par_report


class _Scale:
    """A picklable frame transform that changes shape and dtype, as an image processor does."""

    def __call__(self, rgb):
        return (rgb.transpose(2, 0, 1)[:, ::2, ::2] / 255.0).astype(np.float32)


@pytest.mark.parametrize("min_segment_seconds", [0.3, 8.0])  # split over the workers, and the sequential fallback
def test_transform_runs_once_per_sampled_frame_in_the_workers(tmp_path, pool, min_segment_seconds):
    path = _write(tmp_path / "cfr.mp4", [i / 25 for i in range(75)])
    # spf 0.02 samples frames more often than they change: repeats must stay one object, transformed once.
    spf = 0.02
    sequential = list(iter_sampled_frames(path, spf))
    transformed = list(
        iter_sampled_frames_parallel(
            path, spf, workers=2, executor=pool, min_segment_seconds=min_segment_seconds, transform=_Scale()
        )
    )
    assert [i for i, _ in transformed] == [i for i, _ in sequential]
    for (_, rgb), (_, output) in zip(sequential, transformed):
        assert output.dtype == np.float32 and output.shape == (3, rgb.shape[0] // 2, rgb.shape[1] // 2)
        np.testing.assert_array_equal(output, _Scale()(rgb))
    distinct = lambda pairs: sum(1 for n, (_, a) in enumerate(pairs) if n == 0 or a is not pairs[n - 1][1])  # noqa: E731
    assert distinct(transformed) == distinct(sequential) < len(sequential)


def test_a_transform_that_does_not_return_an_array_is_refused(tmp_path, pool):
    path = _write(tmp_path / "cfr.mp4", [i / 25 for i in range(50)])
    with pytest.raises(TypeError, match="numpy array"):
        list(iter_sampled_frames_parallel(path, 0.2, workers=2, executor=pool, min_segment_seconds=0.3, transform=str))


class _CountingProcessor:
    """An image processor that counts its calls in the process that makes them."""

    def __init__(self, processor):
        self.processor, self.calls = processor, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.processor(*args, **kwargs)


def test_extraction_features_equal_with_workers(tmp_path):
    from raw_video_utils import build_tiny_clip

    from rgnet_hf.video_text_encoders import load_feature_encoder

    path = _write(tmp_path / "video.mp4", [i / 25 for i in range(60)])
    encoder = load_feature_encoder(str(build_tiny_clip(tmp_path / "clip")), device="cpu", batch_size=4)
    one = encoder.encode_video(path, 0.2, progress=False)
    encoder.image_processor = _CountingProcessor(encoder.image_processor)
    encoder.decode_workers = 2
    # Segments of 8 s would not split this 2.4 s file: force short ones through the module default.
    import rgnet_hf.video_decoding as decoding

    default, decoding.MIN_SEGMENT_SECONDS = decoding.MIN_SEGMENT_SECONDS, 0.5
    try:
        two = encoder.encode_video(path, 0.2, progress=False)
    finally:
        decoding.MIN_SEGMENT_SECONDS = default
        encoder._decode_pool.shutdown()
    assert encoder.image_processor.calls == 0  # every frame went through the processor in a decoding worker
    assert two.features.shape == one.features.shape == (12, encoder.video_feature_size)
    np.testing.assert_allclose(two.features, one.features, atol=1e-6, rtol=0)
    assert two.duration == one.duration


def test_extract_command_decode_workers(tmp_path, capsys, monkeypatch):
    import h5py
    from raw_video_utils import build_tiny_clip

    import rgnet_hf.video_decoding as decoding
    from rgnet_hf.apps.cli import main as cli_main

    monkeypatch.setattr(decoding, "MIN_SEGMENT_SECONDS", 0.5)  # split this 2.4 s file into segments
    video = _write(tmp_path / "clip.mp4", [i / 25 for i in range(60)])
    clip = str(build_tiny_clip(tmp_path / "clip"))
    base = ["extract", "--video", str(video), "--encoder", clip, "--no-progress", "--seconds-per-feature", "0.2"]
    assert cli_main(base + ["--output", str(tmp_path / "one.h5")]) == 0
    assert cli_main(base + ["--output", str(tmp_path / "two.h5"), "--decode-workers", "2"]) == 0
    with h5py.File(tmp_path / "one.h5", "r") as one, h5py.File(tmp_path / "two.h5", "r") as two:
        assert one["clip"].shape == two["clip"].shape == (12, one["clip"].shape[1])
        np.testing.assert_allclose(two["clip"][()], one["clip"][()], atol=1e-6, rtol=0)
    capsys.readouterr()
    assert cli_main(base + ["--output", str(tmp_path / "bad.h5"), "--decode-workers", "0"]) == 2
    assert "--decode-workers" in capsys.readouterr().err


def test_ground_command_decode_workers(tmp_path, capsys, monkeypatch):
    from raw_video_utils import build_tiny_clip, build_tiny_rgnet

    import rgnet_hf.video_decoding as decoding
    from rgnet_hf.apps.cli import main as cli_main

    monkeypatch.setattr(decoding, "MIN_SEGMENT_SECONDS", 0.5)
    video = _write(tmp_path / "clip.mp4", [i / 25 for i in range(60)])
    model = build_tiny_rgnet(tmp_path / "rgnet", build_tiny_clip(tmp_path / "clip"))
    base = ["ground", "--model", str(model), "--video", str(video), "--query", "a door", "--no-progress"]
    capsys.readouterr()
    assert cli_main(base) == 0
    one = capsys.readouterr().out
    assert cli_main(base + ["--decode-workers", "2"]) == 0
    assert capsys.readouterr().out == one
    assert cli_main(base + ["--decode-workers", "0"]) == 2
    assert "--decode-workers" in capsys.readouterr().err


def _shared_blocks() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory is listed in /dev/shm on Linux only")
def test_frames_come_back_through_shared_memory_and_nothing_is_left(tmp_path, pool):
    path = _write(tmp_path / "cfr.mp4", [i / 25 for i in range(100)])
    before = _shared_blocks()
    _assert_same(*_both(path, 0.08, pool))
    assert _shared_blocks() == before
    # A consumer that stops early: the segments still in flight unlink their blocks when they finish.
    frames = iter_sampled_frames_parallel(path, 0.08, workers=2, executor=pool, min_segment_seconds=0.3)
    assert [index for index, _ in itertools.islice(frames, 3)] == [0, 1, 2]
    frames.close()
    deadline = time.monotonic() + 10
    while _shared_blocks() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _shared_blocks() == before


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory is listed in /dev/shm on Linux only")
def test_a_segment_hands_its_frames_over_in_one_block_that_the_receiver_unlinks(tmp_path):
    path = _write(tmp_path / "cfr.mp4", [i / 25 for i in range(50)])
    result = _decode_segment(str(path), 0, None, 0.0, 0.2, True)
    assert result["frames_block"] in _shared_blocks()
    assert all(isinstance(offset, int) for _, _, offset, _, _ in result["runs"])  # no frame travels in the result
    frames = _take_frames(result)
    assert result["frames_block"] not in _shared_blocks()
    sequential = [rgb for _, rgb in iter_sampled_frames(path, 0.2)]
    # One run per sampled frame; the last one's stop is left to the caller (it may end the video before it).
    assert [begin for begin, _, _ in frames[:-1]] == list(range(len(sequential))) and frames[-1][1] is None
    for (_, _, rgb), reference in zip(frames, sequential):
        np.testing.assert_array_equal(rgb, reference)


def test_decode_workers_auto_and_its_checks(tmp_path, monkeypatch):
    from raw_video_utils import build_tiny_clip

    import rgnet_hf.video_text_encoders as encoders

    encoder = encoders.load_feature_encoder(str(build_tiny_clip(tmp_path / "clip")), device="cpu", batch_size=4)
    encoder.decode_workers = "auto"
    assert encoder.decode_workers == 1  # on the CPU the encoder's matrix products use the cores
    monkeypatch.setattr(encoders.os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert encoders.auto_decode_workers("cuda") == 5 and encoders.auto_decode_workers("cpu") == 1
    monkeypatch.setattr(encoders.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert encoders.auto_decode_workers("cuda:0") == encoders.MAX_AUTO_DECODE_WORKERS
    monkeypatch.setattr(encoders.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert encoders.auto_decode_workers("cuda") == 1
    for bad in (0, -2, 1.5, "two", True):
        with pytest.raises(ValueError, match="decode_workers must be an int >= 1 or 'auto'"):
            encoder.decode_workers = bad
    # a pool of one size is not kept for another count
    path = _write(tmp_path / "video.mp4", [i / 25 for i in range(60)])
    monkeypatch.setattr(encoders, "iter_sampled_frames_parallel", _recording_parallel(encoders))
    encoder.decode_workers = 2
    encoder.encode_video(path, 0.2, progress=False)
    first_pool = encoder._decode_pool
    assert first_pool is not None
    encoder.decode_workers = 2
    assert encoder._decode_pool is first_pool
    encoder.decode_workers = 3
    assert encoder._decode_pool is None and first_pool._shutdown_thread
    encoder.close()


def _recording_parallel(encoders):
    original = encoders.iter_sampled_frames_parallel

    def parallel(*args, **kwargs):
        assert kwargs["transform"] is not None and kwargs["workers"] == kwargs["executor"]._max_workers
        return original(*args, **kwargs)

    return parallel


class _RecordingExecutor:
    """A process pool that records the video of every segment submitted to it."""

    def __init__(self, pool):
        self.pool, self.submitted = pool, []

    def submit(self, function, path, *args):
        self.submitted.append(Path(path).name)
        return self.pool.submit(function, path, *args)


def _library_of_videos(tmp_path):
    long = _write(tmp_path / "long.mp4", [i / 25 for i in range(50)])  # keyframes every 0.24 s: several segments
    short = _write(tmp_path / "short.mp4", [i / 25 for i in range(10)], gop=50)  # one segment
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    rng = np.random.default_rng(1)
    times = [0.0] + [float(round(t, 3)) for t in np.cumsum(rng.uniform(0.04, 0.2, size=30))]
    variable = _write(tmp_path / "vfr.mp4", times, gop=5)
    return [long, short, broken, variable]


def test_several_videos_decoded_by_one_pool_equal_each_decoded_alone(tmp_path, pool):
    from rgnet_hf.video_decoding import iter_videos_sampled_frames_parallel

    paths = _library_of_videos(tmp_path)
    executor = _RecordingExecutor(pool)
    videos = iter_videos_sampled_frames_parallel(paths, 0.1, workers=2, executor=executor, min_segment_seconds=0.3)
    seen = []
    for path, frames, report in videos:
        seen.append(Path(path).name)
        if Path(path).name == "broken.mp4":
            with pytest.raises(VideoDecodingError):
                next(frames)
            continue
        got, next_video_started = [], False
        for frame in frames:
            got.append(frame)
            next_video_started = next_video_started or "short.mp4" in executor.submitted
        if Path(path).name == "long.mp4":
            # while the first video is read, the workers already decode the next one
            assert next_video_started
        expected_report = {}
        expected = list(iter_sampled_frames(path, 0.1, report=expected_report))
        assert [i for i, _ in got] == [i for i, _ in expected]
        for (_, a), (_, b) in zip(got, expected):
            np.testing.assert_array_equal(a, b)
        assert report == expected_report
    assert seen == ["long.mp4", "short.mp4", "broken.mp4", "vfr.mp4"]
    assert executor.submitted.count("short.mp4") == 1  # one segment, decoded whole by a worker
    assert "broken.mp4" not in executor.submitted


def test_a_video_left_unread_is_skipped_and_the_next_one_is_whole(tmp_path, pool):
    from rgnet_hf.video_decoding import iter_videos_sampled_frames_parallel

    paths = _library_of_videos(tmp_path)
    videos = iter_videos_sampled_frames_parallel(paths, 0.1, workers=2, executor=pool, min_segment_seconds=0.3)
    _, frames, _ = next(videos)
    next(frames)  # the first video read only in part
    path, frames, _ = next(videos)
    assert Path(path).name == "short.mp4"
    assert [i for i, _ in frames] == [i for i, _ in iter_sampled_frames(path, 0.1)]
    videos.close()


def test_a_segment_longer_than_the_limit_is_decoded_in_this_process(tmp_path, pool, monkeypatch):
    import rgnet_hf.video_decoding as decoding

    paths = _library_of_videos(tmp_path)
    executor = _RecordingExecutor(pool)
    monkeypatch.setattr(decoding, "MAX_SEGMENT_SECONDS", 0.3)  # the short video's one segment is 0.4 s
    videos = decoding.iter_videos_sampled_frames_parallel(
        paths[1:2], 0.1, workers=2, executor=executor, min_segment_seconds=0.3
    )
    for path, frames, _ in videos:
        assert [i for i, _ in frames] == [i for i, _ in iter_sampled_frames(path, 0.1)]
    assert executor.submitted == []


def test_encode_videos_with_workers_equals_encode_video_and_reports_failures(tmp_path):
    from raw_video_utils import build_tiny_clip

    from rgnet_hf.video_text_encoders import load_feature_encoder

    paths = _library_of_videos(tmp_path)
    encoder = load_feature_encoder(str(build_tiny_clip(tmp_path / "clip")), device="cpu", batch_size=4)
    alone = dict(encoder.encode_videos(paths, 0.1, progress=False))
    assert isinstance(alone[str(paths[2])], VideoDecodingError)
    import rgnet_hf.video_decoding as decoding

    default, decoding.MIN_SEGMENT_SECONDS = decoding.MIN_SEGMENT_SECONDS, 0.3
    try:
        encoder.decode_workers = 2
        together = list(encoder.encode_videos(paths, 0.1, progress=False))
    finally:
        decoding.MIN_SEGMENT_SECONDS = default
        encoder.close()
    assert [path for path, _ in together] == [str(path) for path in paths]
    for path, encoded in together:
        if path == str(paths[2]):
            assert isinstance(encoded, VideoDecodingError) and "broken.mp4" in str(encoded)
            continue
        np.testing.assert_allclose(encoded.features, alone[path].features, atol=1e-6, rtol=0)
        assert encoded.duration == alone[path].duration


_TWO_HOUR_SCRIPT = """
import os, resource, sys
import numpy as np
from rgnet_hf.synthetic.video_files import write_rgb_video
from rgnet_hf.video_text_encoders import load_feature_encoder


def write(path, seconds):
    def frames():
        for second in range(seconds):
            image = np.empty((96, 96, 3), np.uint8)
            image[:] = (second * 7) % 251
            image[:, :10] = second % 13
            yield float(second), image

    options = {"g": "10", "keyint_min": "10", "bf": "0"}
    return write_rgb_video(path, frames(), fps=1, size=(96, 96), options=options)


def peak_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])


if __name__ == "__main__":  # the workers' start method imports this file again
    folder, clip = sys.argv[1], sys.argv[2]
    short, long = write(os.path.join(folder, "short.mp4"), 300), write(os.path.join(folder, "long.mp4"), 7200)
    encoder = load_feature_encoder(clip, batch_size=64)
    encoder.decode_workers = 2
    encoder.encode_video(short, 1.0, progress=False)  # warm-up: the workers start and import their libraries
    workers = sorted(encoder._decode_pool._processes)
    before = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss] + [peak_kib(pid) for pid in workers]
    features = encoder.encode_video(long, 1.0, progress=False).features
    after = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss] + [peak_kib(pid) for pid in workers]
    encoder.close()
    print(features.shape[0], *(a - b for a, b in zip(after, before)))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the workers' peak memory from /proc (Linux)")
def test_a_two_hour_video_decoded_by_workers_keeps_memory_bounded(tmp_path):
    """Memory of the parallel path does not grow with the video: a 2-hour file (7,200 sampled frames, 720 segments)
    after a 5-minute warm-up, the encoder's process and each worker measured by their peak resident sets."""
    import subprocess
    import sys

    from raw_video_utils import build_tiny_clip

    script = tmp_path / "two_hours.py"
    script.write_text(_TWO_HOUR_SCRIPT)
    clip = build_tiny_clip(tmp_path / "clip")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(clip)], capture_output=True, text=True, timeout=300, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    count, *growth_kib = map(int, run.stdout.split())
    assert count == 7200 and len(growth_kib) == 3
    assert max(growth_kib) / 1024 < 60, f"peak RSS grew by {[round(g / 1024) for g in growth_kib]} MiB"
