"""Window grid and seconds <-> frames <-> windows conversions (`rgnet_hf.windowing`)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from rgnet_hf.windowing import (
    WindowGrid,
    default_window_stride,
    frames_to_seconds,
    ground_truth_window_mask,
    ground_truth_window_range,
    ground_truth_windows,
    moment_to_window_target,
    num_windows,
    seconds_to_frames,
    window_bounds,
    window_spans_to_seconds,
)

FIXTURE_DIR = Path(__file__).parent / "fixtures"
FIXTURE_NAMES = ["mad_tiny", "ego4d_tiny", "ego4d_pretrain_tiny"]


@pytest.fixture(scope="module", params=FIXTURE_NAMES)
def simulation(request):
    return torch.load(FIXTURE_DIR / f"{request.param}.pt", weights_only=True)["inference_simulation"]


def test_window_bounds_match_fixture(simulation):
    window_length = simulation["opt_used"]["max_v_l"]
    bounds = window_bounds(simulation["n_frames"], window_length)
    assert bounds.dtype == torch.long
    assert bounds.tolist() == simulation["windows"]
    assert default_window_stride(window_length) == simulation["stride"]
    # The evaluation batch stores the same grid as first frame + valid length.
    assert bounds[:, 0].tolist() == simulation["batch"]["video_start"].tolist()
    assert (bounds[:, 1] - bounds[:, 0]).tolist() == simulation["batch"]["video_length"].tolist()


def test_window_bounds_documented_examples():
    assert window_bounds(310, 40).shape == (17, 2)
    assert window_bounds(900, 90).shape == (21, 2)  # an 8 min Ego4D clip
    assert window_bounds(36000, 900).shape == (81, 2)  # a 2 h MAD movie
    assert window_bounds(310, 40)[[0, 1, -2, -1]].tolist() == [[0, 20], [0, 40], [280, 310], [300, 310]]


@pytest.mark.parametrize("num_frames", [1, 2, 19, 20, 21, 39, 40, 41, 60, 99, 100, 101, 310])
@pytest.mark.parametrize(("window_length", "stride"), [(40, None), (41, None), (40, 10), (40, 30), (7, 3)])
def test_window_bounds_properties(num_frames, window_length, stride):
    bounds = window_bounds(num_frames, window_length, stride)
    step = window_length // 2 if stride is None else stride
    assert bounds.shape[0] == num_windows(num_frames, step) == int(np.ceil(num_frames / step)) + 1
    starts, ends = bounds[:, 0], bounds[:, 1]
    assert (ends > starts).all(), "no window is empty"
    assert (ends - starts <= window_length).all()
    assert (starts >= 0).all() and (ends <= num_frames).all()
    # Window 0 is the leading part of window 1: [0, window_length - stride).
    assert bounds[0].tolist() == [0, min(window_length - step, num_frames)]
    assert bounds[1].tolist() == [0, min(window_length, num_frames)]
    # Every frame is covered and the last window reaches the end of the video.
    covered = torch.zeros(num_frames, dtype=torch.bool)
    for start, end in bounds.tolist():
        covered[start:end] = True
    assert covered.all()
    assert ends[-1].item() == num_frames


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_frames": 0, "window_length": 40}, ValueError, "num_frames"),
        ({"num_frames": -5, "window_length": 40}, ValueError, "num_frames"),
        ({"num_frames": 10, "window_length": 0}, ValueError, "window_length"),
        ({"num_frames": 10, "window_length": 1}, ValueError, "window_length"),
        ({"num_frames": 10, "window_length": 40, "stride": 0}, ValueError, "stride"),
        ({"num_frames": 10, "window_length": 40, "stride": 40}, ValueError, "stride"),
        ({"num_frames": 10, "window_length": 40, "stride": 41}, ValueError, "stride"),
        ({"num_frames": 10.0, "window_length": 40}, TypeError, "num_frames"),
        ({"num_frames": 10, "window_length": True}, TypeError, "window_length"),
    ],
)
def test_window_bounds_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        window_bounds(**kwargs)


def test_ground_truth_windows_match_fixture(simulation):
    clip_length, stride = simulation["clip_length"], simulation["stride"]
    total_windows = len(simulation["windows"])
    starts = [query["timestamps"][0] for query in simulation["queries"]]
    ends = [query["timestamps"][1] for query in simulation["queries"]]
    for query, start, end in zip(simulation["queries"], starts, ends, strict=True):
        expected = simulation["ground_truth_windows"][query["query_id"]]
        assert ground_truth_windows(start, end, clip_length, stride, total_windows) == expected
        assert ground_truth_windows(start, end, clip_length, stride, total_windows, simulation["n_frames"]) == expected
    mask = ground_truth_window_mask(starts, ends, clip_length, stride, total_windows)
    assert mask.shape == (len(starts), total_windows)
    for row, query in zip(mask, simulation["queries"], strict=True):
        assert torch.nonzero(row).flatten().tolist() == simulation["ground_truth_windows"][query["query_id"]]


def test_ground_truth_windows_hand_examples():
    # 24.4 s / 0.2 = frame 122.00000000000001 -> window 6; 29.0 s -> frame 145 -> ceil(7.25) = 8.
    assert ground_truth_windows(24.4, 29.0, 0.2, 20, 17) == [6, 7, 8]
    # Moment boundaries on the grid: floor and ceil coincide.
    assert ground_truth_windows(4.0, 8.0, 0.2, 20, 17) == [1, 2]
    # A zero-length moment inside one stride still has its floor and ceil windows.
    assert ground_truth_windows(5.0, 5.0, 0.2, 20, 17) == [1, 2]
    assert ground_truth_windows(4.0, 4.0, 0.2, 20, 17) == [1]


def test_ground_truth_windows_clamping_and_reversed_moments():
    # T = 310 frames (62 s at 0.2 s), stride 20, 17 windows.
    # A moment running past the end of the video: the last window index is W - 1.
    assert ground_truth_windows(60.0, 70.0, 0.2, 20, 17) == [15, 16]
    assert ground_truth_windows(60.0, 70.0, 0.2, 20, 17, num_frames=310) == [15, 16]
    # A moment starting after the end: clamping the frames to T (the official rule) gives windows 15 and 16, while
    # clamping only the indices would give window 16 alone.
    assert ground_truth_windows(80.0, 90.0, 0.2, 20, 17, num_frames=310) == [15, 16]
    assert ground_truth_windows(80.0, 90.0, 0.2, 20, 17) == [16]
    # A negative start is clamped to window 0, never the non-existent window -1.
    assert ground_truth_windows(-1.0, 3.0, 0.2, 20, 17) == [0, 1]
    # Reversed moments (NaQ) are swapped, as the official loader does.
    assert ground_truth_windows(29.0, 24.4, 0.2, 20, 17) == [6, 7, 8]
    window_range = ground_truth_window_range([24.4, 80.0], [29.0, 90.0], 0.2, 20, 17, num_frames=310)
    assert window_range.tolist() == [[6, 8], [15, 16]]


def test_ground_truth_windows_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        ground_truth_windows(float("nan"), 3.0, 0.2, 20, 17)
    with pytest.raises(ValueError, match="seconds_per_feature"):
        ground_truth_windows(1.0, 3.0, 0.0, 20, 17)
    with pytest.raises(ValueError, match="num_windows"):
        ground_truth_windows(1.0, 3.0, 0.2, 20, 0)
    with pytest.raises(ValueError, match="same shape"):
        ground_truth_window_range([1.0, 2.0], [3.0], 0.2, 20, 17)


def test_seconds_frames_round_trip():
    frames = seconds_to_frames([0.0, 0.535, 46.545, 200.0], 0.535)
    assert frames.dtype == torch.float64
    assert torch.allclose(frames, torch.tensor([0.0, 1.0, 87.0, 200.0 / 0.535], dtype=torch.float64))
    assert torch.allclose(frames_to_seconds(frames, 0.535), torch.tensor([0.0, 0.535, 46.545, 200.0]).double())
    # Clamped to [0, T] when the video length is given; kept fractional.
    assert seconds_to_frames([-1.0, 10.1, 99.0], 0.2, num_frames=310).tolist() == [0.0, 10.1 / 0.2, 310.0]
    assert frames_to_seconds(torch.tensor([3]), 0.2).tolist() == pytest.approx([0.6])
    with pytest.raises(ValueError, match="NaN"):
        seconds_to_frames([1.0, float("inf")], 0.2)


def test_window_spans_to_seconds_reproduces_fixture_rows(simulation):
    """The recorded raw spans of the kept rows, turned into seconds, give the spans of `per_window_predictions`."""
    kept_rows = simulation["kept_rows"]
    windows_per_query = len(simulation["windows"])
    window_index = kept_rows % windows_per_query
    spans = simulation["raw_model_outputs"]["pred_spans"][kept_rows]
    seconds = window_spans_to_seconds(
        spans,
        simulation["batch"]["video_start"][window_index],
        simulation["batch"]["video_length"][window_index],
        simulation["clip_length"],
    )
    assert seconds.shape == (len(kept_rows), spans.shape[1], 2)
    recorded = torch.tensor([window["pred_relevant_windows"] for window in simulation["per_window_predictions"]])
    # The recorded rows are sorted by proposal score within each window; compare each window's spans as a set.
    recorded_spans = recorded[..., :2].double()
    for computed, expected in zip(seconds.double(), recorded_spans, strict=True):
        computed = computed[torch.argsort(computed[:, 0])]
        expected = expected[torch.argsort(expected[:, 0])]
        torch.testing.assert_close(computed, expected, rtol=0, atol=1e-3)


def test_window_spans_to_seconds_hand_example():
    spans = torch.tensor([[[0.5, 0.5], [0.0, 0.2]]])
    seconds = window_spans_to_seconds(spans, torch.tensor([20]), torch.tensor([40]), 0.2)
    # (0.25 * 40 + 20) * 0.2 = 6.0, (0.75 * 40 + 20) * 0.2 = 10.0; the second span starts before the window (not
    # clipped): (-0.1 * 40 + 20) * 0.2 = 3.2.
    torch.testing.assert_close(seconds, torch.tensor([[[6.0, 10.0], [3.2, 4.8]]]))
    with pytest.raises(ValueError, match="one entry per window"):
        window_spans_to_seconds(spans, torch.tensor([0, 20]), torch.tensor([40, 40]), 0.2)
    with pytest.raises(ValueError, match=r"\(B, N, 2\)"):
        window_spans_to_seconds(spans[0], torch.tensor([0]), torch.tensor([40]), 0.2)


def test_moment_to_window_target():
    # T = 310, window length 40, stride 20. Window 6 covers [100, 140).
    centre, width = moment_to_window_target(110.0, 120.0, 6, 40, 310)
    assert (centre, width) == pytest.approx((0.375, 0.25))
    # The moment is clipped to the window: [90, 150] -> [100, 140] -> the whole window.
    assert moment_to_window_target(90.0, 150.0, 6, 40, 310) == pytest.approx((0.5, 1.0))
    # Window 0 is the half window [0, 20): its nominal start is -20, its valid length 20.
    assert moment_to_window_target(5.0, 30.0, 0, 40, 310) == pytest.approx((0.625, 0.75))
    # The last window [300, 310) is normalised by its valid length 10.
    assert moment_to_window_target(305.0, 310.0, 16, 40, 310) == pytest.approx((0.75, 0.5))
    # Reversed moments are swapped.
    assert moment_to_window_target(120.0, 110.0, 6, 40, 310) == pytest.approx((0.375, 0.25))
    with pytest.raises(ValueError, match="window_index"):
        moment_to_window_target(1.0, 2.0, 17, 40, 310)


def test_window_grid_views_share_memory():
    grid = WindowGrid.for_video(310, 40, 20, torch.device("cpu"), torch.float32)
    frames = torch.randn(grid.padded_length(), 3)
    views = grid.cut(frames)
    assert views.untyped_storage().data_ptr() == frames.untyped_storage().data_ptr()
    assert grid.num_windows == 17 and grid.distinct_masks.shape[0] == len(torch.unique(grid.lengths))
    for window, (start, end) in enumerate(grid.bounds.tolist()):
        row = views[grid.view_index[window]]
        torch.testing.assert_close(row[: end - start], frames[start:end], rtol=0, atol=0)
        assert grid.mask[window].sum() == end - start
        assert torch.equal(grid.distinct_masks[grid.length_index[window]], grid.mask[window])
