"""The window grid a model trained on a new dataset uses, chosen from the data's moment and video lengths.

RGNet cuts a video into windows of `window_length` features every `window_stride` (half a window): its retrieval
token ranks the windows and its decoder grounds inside the best ones. The official settings (MAD: 180 s windows for
moments of a few seconds in 2-hour movies; Ego4D-NLQ: about 48 s for moments of about ten seconds in 8-minute clips)
fit those datasets; a dataset of other footage needs its own. The rule, in seconds:

    window = max(2 x p90(moment length), 8 x median(moment length), median(video length) / 64)
    window = min(window, median(video length))

- `2 x p90(moment)`: with a stride of half a window, every moment up to half a window lies wholly inside at least one
  window, so nine moments in ten do;
- `8 x median(moment)`: the typical moment is a small part of its window, as in both official datasets, which leaves
  the decoder room to place it and the retrieval token context around it;
- `median(video) / 64`: at most about 128 windows for the median video, which bounds the cost of a query (every
  window is scored) and keeps retrieval among few enough candidates;
- `min(..., median(video))`: no window longer than the typical video.

The window is then `round(window / seconds_per_feature)` features (at least `MIN_WINDOW_FEATURES`) and the stride half
of it. The lengths come from the training split. A recipe that sets `model.window_length` (and `window_stride`)
keeps its own, and so does a model fine-tuned with `init_from`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

MIN_WINDOW_FEATURES = 8
"""The shortest window the rule gives, in features."""


@dataclasses.dataclass(frozen=True)
class WindowGridChoice:
    """The window grid chosen for a dataset, with the statistics it came from (seconds)."""

    window_length: int
    window_stride: int
    window_seconds: float
    moment_p90_s: float
    moment_median_s: float
    video_median_s: float
    moments_longer_than_half_window: int
    num_moments: int

    def describe(self) -> str:
        return (
            f"window_length {self.window_length} features ({self.window_seconds:.1f} s), stride {self.window_stride}, "
            f"from {self.num_moments} moments (median {self.moment_median_s:.1f} s, p90 {self.moment_p90_s:.1f} s) "
            f"in videos of median length {self.video_median_s:.1f} s; {self.moments_longer_than_half_window} moment(s) "
            "are longer than half a window and never lie wholly inside one"
        )


def choose_window_grid(
    moment_lengths_s: Sequence[float], video_lengths_s: Sequence[float], seconds_per_feature: float
) -> WindowGridChoice:
    """Apply the module's rule.

    Args:
        moment_lengths_s: `end - start` of every moment of the training split, in seconds.
        video_lengths_s: the length of every video of the training split (one per video), in seconds.
        seconds_per_feature: seconds between two video features.
    """
    moments = np.asarray(moment_lengths_s, dtype=np.float64)
    videos = np.asarray(video_lengths_s, dtype=np.float64)
    if moments.size == 0 or videos.size == 0:
        raise ValueError("cannot choose a window grid from no moments or no videos: the training split is empty")
    if not (np.isfinite(moments).all() and np.isfinite(videos).all()) or (moments <= 0).any() or (videos <= 0).any():
        raise ValueError("moment and video lengths must be finite and positive to choose a window grid")
    if not seconds_per_feature > 0:
        raise ValueError(f"seconds_per_feature must be positive, got {seconds_per_feature}")
    p90 = float(np.quantile(moments, 0.9))
    median_moment = float(np.median(moments))
    median_video = float(np.median(videos))
    seconds = min(max(2.0 * p90, 8.0 * median_moment, median_video / 64.0), median_video)
    length = max(MIN_WINDOW_FEATURES, round(seconds / seconds_per_feature))
    stride = length // 2
    half_window_s = (length - stride) * seconds_per_feature
    return WindowGridChoice(
        window_length=length,
        window_stride=stride,
        window_seconds=length * seconds_per_feature,
        moment_p90_s=p90,
        moment_median_s=median_moment,
        video_median_s=median_video,
        moments_longer_than_half_window=int((moments > half_window_s).sum()),
        num_moments=int(moments.size),
    )


def choose_window_grid_for_split(split, seconds_per_feature: float) -> WindowGridChoice:
    """[`choose_window_grid`] on a split of query rows (`timestamps` `[start, end]`, `duration`, `clip_id`)."""
    columns = split.with_format(None)  # the rows alone: no lazy features attached or read
    timestamps = np.asarray(columns["timestamps"], dtype=np.float64).reshape(-1, 2)
    durations: dict[str, float] = {}
    for clip, duration in zip(columns["clip_id"], columns["duration"]):
        durations[clip] = float(duration)
    return choose_window_grid(timestamps[:, 1] - timestamps[:, 0], list(durations.values()), seconds_per_feature)
