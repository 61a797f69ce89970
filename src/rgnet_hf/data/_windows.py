"""Private window-grid helpers of the data pipeline (pure Python, per-sample speed).

They follow the official grid (rgnet_reference.md section 3): stride `window_length // 2` by default,
`W = ceil(T / stride) + 1` windows, window `i` covering `[max((i - 1) * stride, 0), min((i - 1) * stride + L, T))`,
and the windows of a moment `floor(s / stride) ... ceil(e / stride)` inclusive. `rgnet_hf.windowing` holds the same
grid as torch functions; the tests check that both agree.
"""

from __future__ import annotations

import math


def resolve_stride(window_length: int, window_stride: int | None) -> int:
    """`window_stride`, or the official default `window_length // 2`."""
    if isinstance(window_length, bool) or not isinstance(window_length, int) or window_length < 2:
        raise ValueError(f"window_length must be an int >= 2, got {window_length!r}")
    stride = window_length // 2 if window_stride is None else window_stride
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= window_length:
        raise ValueError(f"window_stride must be an int in [1, window_length={window_length}], got {stride!r}")
    return stride


def count_windows(num_frames: int, stride: int) -> int:
    """`ceil(T / stride) + 1`, the official number of windows of a video of `T >= 1` features."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one feature, got {num_frames}")
    return -(-num_frames // stride) + 1


def window_span(index: int, num_frames: int, window_length: int, stride: int) -> tuple[int, int]:
    """`[start, end)` frames of window `index`."""
    nominal_start = (index - 1) * stride
    return max(nominal_start, 0), min(nominal_start + window_length, num_frames)


def moment_windows(start_frame: float, end_frame: float, stride: int, num_windows: int) -> range:
    """The windows overlapping a moment `[start_frame, end_frame]` (fractional frames, `0 <= start <= end <= T`)."""
    first = min(max(math.floor(start_frame / stride), 0), num_windows - 1)
    last = min(max(math.ceil(end_frame / stride), 0), num_windows - 1)
    return range(first, last + 1)
