"""Sliding windows over a long video, and conversions between seconds, feature frames and windows.

RGNet cuts a video of `T` pre-extracted features ("frames") into overlapping windows of `window_length` frames and
scores every window for every query. This module holds the window grid of the official implementation and the small
conversions that the data, training and inference code share:

- seconds -> frames: `frame = seconds / seconds_per_feature`, kept fractional, optionally clamped to `[0, T]`;
- frames -> seconds: `seconds = frame * seconds_per_feature`;
- the window grid ([`window_bounds`]): stride `window_length // 2` by default, `W = ceil(T / stride) + 1` windows,
  window `i` covering `[max((i - 1) * stride, 0), min((i - 1) * stride + window_length, T))`, so window 0 is a half
  window and the last one or two windows are short but never empty;
- the grid of one video as views of its zero-padded frames ([`WindowGrid`]), which the grounding engine encodes;
- the windows that overlap a ground-truth moment ([`ground_truth_windows`]): `floor(s / stride) ... ceil(e / stride)`
  inclusive, with `s` and `e` in frames, as the official window-recall evaluation and training loader compute them;
- a window's predicted (centre, width) spans -> seconds in the video ([`window_spans_to_seconds`]), and a moment ->
  the (centre, width) training target inside one window ([`moment_to_window_target`]).

This file is copied flat into Hugging Face remote-code folders: it imports only the standard library, numpy and torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "WindowGrid",
    "cut_windows",
    "default_window_stride",
    "frame_runs_of_windows",
    "frames_to_seconds",
    "ground_truth_window_mask",
    "ground_truth_window_range",
    "ground_truth_windows",
    "moment_to_window_target",
    "num_windows",
    "resolve_window_stride",
    "seconds_to_frames",
    "window_bounds",
    "window_spans_to_seconds",
]


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} ({value!r}).")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")
    return int(value)


def _check_seconds_per_feature(seconds_per_feature: float) -> float:
    if isinstance(seconds_per_feature, bool) or not isinstance(seconds_per_feature, numbers.Real):
        raise ValueError(f"`seconds_per_feature` must be a number > 0, got {seconds_per_feature!r}.")
    seconds_per_feature = float(seconds_per_feature)
    if not math.isfinite(seconds_per_feature) or seconds_per_feature <= 0:
        raise ValueError(f"`seconds_per_feature` must be a finite number > 0, got {seconds_per_feature}.")
    return seconds_per_feature


def default_window_stride(window_length: int) -> int:
    """The official stride, `window_length // 2` (450 for MAD's 900-frame windows, 45 for Ego4D's 90)."""
    window_length = _check_positive_int(window_length, "window_length")
    if window_length < 2:
        raise ValueError("`window_length` must be >= 2 to derive the default stride (window_length // 2), got 1.")
    return window_length // 2


def resolve_window_stride(window_length: int, stride: int | None) -> int:
    """`stride`, or the official default `window_length // 2`; checked to be in `[1, window_length)`."""
    window_length = _check_positive_int(window_length, "window_length")
    if stride is None:
        return default_window_stride(window_length)
    stride = _check_positive_int(stride, "stride")
    if stride >= window_length:
        # Window 0 covers [0, window_length - stride): it would be empty.
        raise ValueError(f"`stride` ({stride}) must be smaller than `window_length` ({window_length}).")
    return stride


def num_windows(num_frames: int, stride: int) -> int:
    """Number of windows of a video of `num_frames` features: `ceil(num_frames / stride) + 1` (the official count)."""
    num_frames = _check_positive_int(num_frames, "num_frames")
    stride = _check_positive_int(stride, "stride")
    return -(-num_frames // stride) + 1


def window_bounds(num_frames: int, window_length: int, stride: int | None = None) -> torch.LongTensor:
    """
    The official window grid of a video.

    Args:
        num_frames (`int`): number of features `T` of the video (>= 1). Always the length of the feature array, never
            derived from the annotated duration.
        window_length (`int`): frames per window (`max_v_l`: 900 for MAD, 90 for Ego4D).
        stride (`int`, *optional*): frames between consecutive window starts; defaults to `window_length // 2`.

    Returns:
        `torch.LongTensor` of shape `(W, 2)`, with `W = ceil(T / stride) + 1`: `[start, end)` frames of each window.
        Window `i` covers `[max((i - 1) * stride, 0), min((i - 1) * stride + window_length, T))`: window 0 is the
        leading half window `[0, window_length - stride)`, window 1 is `[0, window_length)`, and the last one or two
        windows are cut at `T` (never empty).

    Example: `window_bounds(310, 40)` has 17 windows, `[[0, 20], [0, 40], [20, 60], ..., [280, 310], [300, 310]]`.
    """
    num_frames = _check_positive_int(num_frames, "num_frames")
    stride = resolve_window_stride(window_length, stride)
    nominal_starts = (torch.arange(num_windows(num_frames, stride), dtype=torch.long) - 1) * stride
    starts = nominal_starts.clamp(min=0)
    ends = (nominal_starts + window_length).clamp(max=num_frames)
    return torch.stack([starts, ends], dim=1)


def cut_windows(
    features: torch.Tensor,
    bounds: torch.Tensor,
    windows: torch.Tensor | None = None,
    length: int | None = None,
) -> tuple[torch.Tensor, torch.BoolTensor]:
    """
    Cut windows out of a video's features: the one place where windows are gathered and zero-padded.

    Args:
        features (`torch.Tensor` of shape `(T, D)`): the whole video.
        bounds (`torch.LongTensor` of shape `(W, 2)`): `[start, end)` frames of every window ([`window_bounds`]).
        windows (`torch.LongTensor` of shape `(K,)`, *optional*): the windows to cut (all by default).
        length (`int`, *optional*): padded length of every window; defaults to the longest window of `bounds`,
            which is `min(window_length, T)` for the official grid.

    Returns:
        `(windows, mask)`: `(K, length, D)` features in the dtype and on the device of `features`, zero after each
        window's end, and the `torch.BoolTensor` `(K, length)` of valid frames.
    """
    bounds = torch.as_tensor(bounds)
    if length is None:
        length = int((bounds[:, 1] - bounds[:, 0]).max())
    if windows is not None:
        bounds = bounds[torch.as_tensor(windows, device=bounds.device)]
    bounds = bounds.to(features.device)
    index = bounds[:, :1] + torch.arange(length, device=features.device)[None]
    mask = index < bounds[:, 1:]
    gathered = features[index.clamp(max=features.shape[0] - 1)]
    return gathered * mask[..., None].to(gathered.dtype), mask


def frame_runs_of_windows(bounds: np.ndarray) -> np.ndarray:
    """
    `(W, 2)` `[start, end)` frame bounds of some windows of one video -> `(R, 2)` sorted, disjoint runs of frames
    covering their union (overlapping or touching windows merge into one run). Vectorised: no loop over windows.
    """
    bounds = np.asarray(bounds, dtype=np.int64).reshape(-1, 2)
    if len(bounds) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    bounds = bounds[np.lexsort((bounds[:, 1], bounds[:, 0]))]
    reach = np.maximum.accumulate(bounds[:, 1])
    first = np.ones(len(bounds), dtype=bool)
    first[1:] = bounds[1:, 0] > reach[:-1]
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(bounds)) - 1
    return np.stack([bounds[starts, 0], reach[ends]], axis=1)


def window_span(index: int, num_frames: int, window_length: int, stride: int) -> tuple[int, int]:
    """`[start, end)` frames of window `index` (plain Python, for per-sample code; [`window_bounds`] gives them
    all)."""
    nominal_start = (index - 1) * stride
    return max(nominal_start, 0), min(nominal_start + window_length, num_frames)


def moment_windows(start_frame: float, end_frame: float, stride: int, num_windows: int) -> range:
    """The windows overlapping a moment `[start_frame, end_frame]` given in fractional frames: `floor(s / stride) ...
    ceil(e / stride)`, clamped to `[0, W - 1]` (plain Python; [`ground_truth_window_range`] takes seconds)."""
    first = min(max(math.floor(start_frame / stride), 0), num_windows - 1)
    last = min(max(math.ceil(end_frame / stride), 0), num_windows - 1)
    return range(first, last + 1)


def seconds_to_frames(
    seconds: float | Sequence[float] | np.ndarray | torch.Tensor,
    seconds_per_feature: float,
    num_frames: int | None = None,
) -> torch.DoubleTensor:
    """
    Seconds -> fractional feature index, `seconds / seconds_per_feature` in float64 (the official loader keeps it
    fractional).

    Args:
        seconds: any shape.
        seconds_per_feature (`float`): the official `clip_length` (0.2 for MAD, 0.535 for Ego4D).
        num_frames (`int`, *optional*): when given, the result is clamped to `[0, num_frames]`. The official loader
            clamps to `<= T`; the lower clamp at 0 is ours (a rare negative annotated start would otherwise give the
            non-existent window -1).

    Returns:
        `torch.DoubleTensor` of the same shape as `seconds`.

    Raises:
        ValueError: on NaN or infinite seconds.
    """
    seconds_per_feature = _check_seconds_per_feature(seconds_per_feature)
    seconds = torch.as_tensor(seconds, dtype=torch.float64)
    if not torch.isfinite(seconds).all():
        raise ValueError("`seconds` contains NaN or infinite values.")
    frames = seconds / seconds_per_feature
    if num_frames is not None:
        frames = frames.clamp(min=0.0, max=float(_check_positive_int(num_frames, "num_frames")))
    return frames


def frames_to_seconds(
    frames: float | Sequence[float] | np.ndarray | torch.Tensor, seconds_per_feature: float
) -> torch.Tensor:
    """Feature index (fractional or not) -> seconds, `frames * seconds_per_feature`. Keeps a floating input's dtype."""
    seconds_per_feature = _check_seconds_per_feature(seconds_per_feature)
    frames = torch.as_tensor(frames)
    if not frames.is_floating_point():
        frames = frames.to(torch.float64)
    return frames * seconds_per_feature


def ground_truth_window_range(
    start_seconds: float | Sequence[float] | np.ndarray | torch.Tensor,
    end_seconds: float | Sequence[float] | np.ndarray | torch.Tensor,
    seconds_per_feature: float,
    stride: int,
    num_windows: int,
    num_frames: int | None = None,
) -> torch.LongTensor:
    """
    First and last window (inclusive) that overlap each ground-truth moment: `floor(s / stride)` and
    `ceil(e / stride)`, with `s` and `e` the moment in fractional frames.

    Args:
        start_seconds, end_seconds: moment bounds in seconds, shape `(Q,)` (or scalars).
        seconds_per_feature (`float`): seconds per feature.
        stride (`int`): window stride in frames.
        num_windows (`int`): windows of the video (`W`); indices are clamped to `[0, W - 1]`.
        num_frames (`int`, *optional*): features of the video (`T`); when given, `s` and `e` are first clamped to
            `[0, T]` as the official loader does (this matters only for a moment that starts at or after `T`).

    Returns:
        `torch.LongTensor` of shape `(Q, 2)` (or `(2,)` for scalar inputs): `[first_window, last_window]`.

    A reversed moment (start > end, seen in NaQ-augmented training data) is swapped, as the official training loader
    does. NaN or infinite times raise a `ValueError`.
    """
    stride = _check_positive_int(stride, "stride")
    num_windows = _check_positive_int(num_windows, "num_windows")
    start_frames = seconds_to_frames(start_seconds, seconds_per_feature, num_frames)
    end_frames = seconds_to_frames(end_seconds, seconds_per_feature, num_frames)
    if start_frames.shape != end_frames.shape:
        raise ValueError(
            f"`start_seconds` and `end_seconds` must have the same shape, got {tuple(start_frames.shape)} and "
            f"{tuple(end_frames.shape)}."
        )
    lower = torch.minimum(start_frames, end_frames)
    upper = torch.maximum(start_frames, end_frames)
    first = torch.floor(lower / stride).long().clamp(min=0, max=num_windows - 1)
    last = torch.ceil(upper / stride).long().clamp(min=0, max=num_windows - 1)
    return torch.stack([first, last], dim=-1)


def ground_truth_windows(
    start_seconds: float,
    end_seconds: float,
    seconds_per_feature: float,
    stride: int,
    num_windows: int,
    num_frames: int | None = None,
) -> list[int]:
    """
    The windows that overlap one ground-truth moment, `floor(s / stride) ... ceil(e / stride)` inclusive (`s`, `e` in
    frames): the positive-window candidates of training and the ground truth of window recall.

    See [`ground_truth_window_range`] for the arguments, the clamping and reversed moments; use that function or
    [`ground_truth_window_mask`] for many queries at once.

    Example: a moment at [24.4 s, 29.0 s] with 0.2 s per feature is frames [122, 145]; with stride 20 its windows
    are `[6, 7, 8]`.
    """
    first, last = ground_truth_window_range(
        start_seconds, end_seconds, seconds_per_feature, stride, num_windows, num_frames
    ).tolist()
    return list(range(first, last + 1))


def ground_truth_window_mask(
    start_seconds: Sequence[float] | np.ndarray | torch.Tensor,
    end_seconds: Sequence[float] | np.ndarray | torch.Tensor,
    seconds_per_feature: float,
    stride: int,
    num_windows: int,
    num_frames: int | None = None,
) -> torch.BoolTensor:
    """
    Vectorised [`ground_truth_windows`]: `mask[q, w]` is True when window `w` overlaps the moment of query `q`.

    Returns:
        `torch.BoolTensor` of shape `(Q, W)` for `(Q,)` inputs.
    """
    window_range = ground_truth_window_range(
        start_seconds, end_seconds, seconds_per_feature, stride, num_windows, num_frames
    ).reshape(-1, 2)
    window_index = torch.arange(num_windows, dtype=torch.long)
    return (window_index >= window_range[:, :1]) & (window_index <= window_range[:, 1:])


def window_spans_to_seconds(
    spans: torch.Tensor,
    window_start: torch.Tensor,
    window_valid_length: torch.Tensor,
    seconds_per_feature: float,
) -> torch.Tensor:
    """
    Predicted (centre, width) spans, normalised by the window's valid length, -> `[start, end]` seconds in the video:
    `[(c - w / 2) * n + window_start, (c + w / 2) * n + window_start] * seconds_per_feature`.

    The spans are not clipped, as in the official inference: they can start before 0 or end after the video.

    Args:
        spans (`torch.Tensor` of shape `(B, N, 2)`): (centre, width) per window and moment query.
        window_start (`torch.Tensor` of shape `(B,)`): first frame of each window.
        window_valid_length (`torch.Tensor` of shape `(B,)`): valid (unpadded) frames of each window, `n`.
        seconds_per_feature (`float`): seconds per feature.

    Returns:
        `torch.Tensor` of shape `(B, N, 2)`, `[start_s, end_s]`, in the floating dtype of `spans`.
    """
    seconds_per_feature = _check_seconds_per_feature(seconds_per_feature)
    if spans.ndim != 3 or spans.shape[-1] != 2:
        raise ValueError(f"`spans` must have shape (B, N, 2), got {tuple(spans.shape)}.")
    dtype = spans.dtype if spans.is_floating_point() else torch.float32
    spans = spans.to(dtype)
    valid_length = torch.as_tensor(window_valid_length, device=spans.device).to(dtype).reshape(-1, 1)
    start = torch.as_tensor(window_start, device=spans.device).to(dtype).reshape(-1, 1)
    if valid_length.shape[0] != spans.shape[0] or start.shape[0] != spans.shape[0]:
        raise ValueError(
            f"`window_start` ({start.shape[0]}) and `window_valid_length` ({valid_length.shape[0]}) must have one "
            f"entry per window of `spans` ({spans.shape[0]})."
        )
    centre, width = spans[..., 0], spans[..., 1]
    span_start = (centre - width / 2) * valid_length + start
    span_end = (centre + width / 2) * valid_length + start
    return torch.stack([span_start, span_end], dim=-1) * seconds_per_feature


def moment_to_window_target(
    start_frame: float,
    end_frame: float,
    window_index: int,
    window_length: int,
    num_frames: int,
    stride: int | None = None,
) -> tuple[float, float]:
    """
    The training target of a moment inside one window, as the official loader builds it: the moment is clipped to
    the window's nominal extent `[ws, ws + window_length]` with `ws = (window_index - 1) * stride` (not clamped at 0),
    shifted to the window's first frame `vs`, normalised by the window's valid length, and returned as
    (centre, width).

    Args:
        start_frame, end_frame (`float`): the moment in fractional frames (already clamped to `[0, T]`; swapped if
            reversed).
        window_index (`int`): index of the window in the grid of [`window_bounds`].
        window_length (`int`): frames per window.
        num_frames (`int`): features of the video `T`.
        stride (`int`, *optional*): defaults to `window_length // 2`.

    Returns:
        `(centre, width)`, both normalised by the window's valid length. The width is negative when the moment does
        not overlap the window (callers pick overlapping windows, see [`ground_truth_windows`]).
    """
    stride = resolve_window_stride(window_length, stride)
    bounds = window_bounds(num_frames, window_length, stride)
    if not 0 <= window_index < bounds.shape[0]:
        raise ValueError(f"`window_index` must be in [0, {bounds.shape[0] - 1}], got {window_index}.")
    window_first, window_end = bounds[window_index].tolist()
    valid_length = window_end - window_first
    nominal_start = (window_index - 1) * stride
    lower = min(start_frame, end_frame)
    upper = max(start_frame, end_frame)
    # Normalise the [start, end] pair first, then convert to (centre, width): the official order of operations.
    normalised_start = (max(nominal_start, lower) - window_first) / valid_length
    normalised_end = (min(nominal_start + window_length, upper) - window_first) / valid_length
    return (normalised_start + normalised_end) / 2, normalised_end - normalised_start


@dataclass
class WindowGrid:
    """The official window grid of one video, and the windows as views of its zero-padded frames.

    Window `i >= 1` starts at frame `(i - 1) * stride`; window 0, the leading half window, covers the first frames
    of window 1 (same row, shorter mask). [`WindowGrid.cut`] therefore returns `W - 1` strided views and
    `view_index` maps each window to its view.

    Attributes:
        bounds (`torch.LongTensor` of shape `(W, 2)`): `[start, end)` frames of each window (CPU).
        window_length (`int`): frames per window row, `min(config.window_length, T)`.
        stride (`int`): frames between consecutive window starts.
        mask (`torch.Tensor` of shape `(W, window_length)`): 1 = valid frame (on the model's device, in its dtype).
        view_index (`torch.LongTensor` of shape `(W,)`): the view of [`WindowGrid.cut`] holding each window.
        length_index (`torch.LongTensor` of shape `(W,)`): each window's row in `distinct_masks`.
        distinct_masks (`torch.Tensor` of shape `(U, window_length)`): one mask per distinct valid length (a long
            video has only 2 or 3: full windows, the leading half window and the cut last ones).
    """

    bounds: torch.Tensor
    window_length: int
    stride: int
    mask: torch.Tensor
    view_index: torch.Tensor
    length_index: torch.Tensor
    distinct_masks: torch.Tensor

    @classmethod
    def for_video(
        cls, num_frames: int, window_length: int, stride: int, device: torch.device, dtype: torch.dtype
    ) -> WindowGrid:
        bounds = window_bounds(num_frames, window_length, stride)
        lengths = bounds[:, 1] - bounds[:, 0]
        row_length = int(min(window_length, num_frames))
        mask = (torch.arange(row_length)[None] < lengths[:, None]).to(dtype)
        distinct_lengths, length_index = torch.unique(lengths, return_inverse=True)
        distinct_masks = (torch.arange(row_length)[None] < distinct_lengths[:, None]).to(dtype)
        view_index = (torch.arange(len(bounds)) - 1).clamp(min=0)
        return cls(
            bounds=bounds,
            window_length=row_length,
            stride=stride,
            mask=mask.to(device),
            view_index=view_index,
            length_index=length_index.to(device),
            distinct_masks=distinct_masks.to(device),
        )

    @classmethod
    def for_rows(cls, bounds: torch.Tensor, window_length: int, device: torch.device, dtype: torch.dtype) -> WindowGrid:
        """A grid of explicit windows: `bounds` `(R, 2)` `[start, end)` in a table of frames gathered from one or
        more videos (rows of `window_length` frames, each valid up to its own end). Its windows are read by
        `bounds` ([`cut_windows`]), not as strided views: `stride` is 0 and [`WindowGrid.cut`] does not apply."""
        bounds = torch.as_tensor(bounds, dtype=torch.long).reshape(-1, 2)
        lengths = bounds[:, 1] - bounds[:, 0]
        mask = (torch.arange(window_length)[None] < lengths[:, None]).to(dtype)
        distinct_lengths, length_index = torch.unique(lengths, return_inverse=True)
        distinct_masks = (torch.arange(window_length)[None] < distinct_lengths[:, None]).to(dtype)
        return cls(
            bounds=bounds,
            window_length=int(window_length),
            stride=0,
            mask=mask.to(device),
            view_index=torch.arange(len(bounds)),
            length_index=length_index.to(device),
            distinct_masks=distinct_masks.to(device),
        )

    @property
    def num_windows(self) -> int:
        return self.bounds.shape[0]

    @property
    def starts(self) -> torch.Tensor:
        return self.bounds[:, 0]

    @property
    def lengths(self) -> torch.Tensor:
        return self.bounds[:, 1] - self.bounds[:, 0]

    def padded_length(self) -> int:
        return max((self.num_windows - 2) * self.stride + self.window_length, self.window_length)

    def cut(self, padded_frames: torch.Tensor) -> torch.Tensor:
        """`(padded_length, D)` frames, zero-padded at the end -> `(W - 1, window_length, D)` views (no copy)."""
        return padded_frames.unfold(0, self.window_length, self.stride).transpose(1, 2)
