"""The window grid chosen from a dataset's moment and video lengths."""

from __future__ import annotations

import datasets
import pytest

from rgnet_hf.data.window_rule import MIN_WINDOW_FEATURES, choose_window_grid, choose_window_grid_for_split


def test_each_term_of_the_rule_can_decide():
    # Long-tailed moments: 2 x p90 decides (p90 20 s -> 40 s -> 200 features at 0.2 s; 8 x median is 8 s).
    choice = choose_window_grid([1.0] * 8 + [20.0, 20.0], [600.0], 0.2)
    assert choice.window_seconds == pytest.approx(40.0)
    assert (choice.window_length, choice.window_stride) == (200, 100)
    # Equal short moments: 8 x median decides (8 x 3 s = 24 s).
    choice = choose_window_grid([3.0] * 20, [600.0] * 3, 0.5)
    assert (choice.window_length, choice.window_stride) == (48, 24)
    # Very long videos: median video / 64 decides (7200 / 64 = 112.5 s).
    choice = choose_window_grid([2.0] * 5, [7200.0], 0.2)
    assert choice.window_length == round(112.5 / 0.2)
    # Never longer than the median video; never shorter than MIN_WINDOW_FEATURES.
    assert choose_window_grid([30.0], [40.0], 1.0).window_length == 40
    assert choose_window_grid([0.1], [1.0], 0.5).window_length == MIN_WINDOW_FEATURES


def test_moments_longer_than_half_a_window_are_counted():
    # p90 of [1]*9 + [100] lies at 10.9 s -> 2 x p90 = 21.8 s; the 100 s moment never fits inside one window.
    choice = choose_window_grid([1.0] * 9 + [100.0], [600.0], 1.0)
    assert choice.window_length == 22 and choice.moments_longer_than_half_window == 1
    assert "1 moment(s) are longer than half a window" in choice.describe()


def test_bad_statistics_are_refused():
    with pytest.raises(ValueError, match="training split is empty"):
        choose_window_grid([], [10.0], 0.2)
    with pytest.raises(ValueError, match="finite and positive"):
        choose_window_grid([float("nan")], [10.0], 0.2)
    with pytest.raises(ValueError, match="finite and positive"):
        choose_window_grid([1.0], [0.0], 0.2)
    with pytest.raises(ValueError, match="seconds_per_feature must be positive"):
        choose_window_grid([1.0], [10.0], 0.0)


def test_a_split_counts_each_video_once():
    # Video a (100 s) has three queries, video b (10 s) one: the median video is 55 s, not 100 s.
    split = datasets.Dataset.from_dict(
        {
            "clip_id": ["a", "a", "a", "b"],
            "duration": [100.0, 100.0, 100.0, 10.0],
            "timestamps": [[0.0, 5.0], [10.0, 15.0], [20.0, 25.0], [1.0, 6.0]],
        }
    )
    choice = choose_window_grid_for_split(split, 1.0)
    assert choice.video_median_s == pytest.approx(55.0) and choice.num_moments == 4
    assert choice.window_length == 40  # 8 x 5 s
