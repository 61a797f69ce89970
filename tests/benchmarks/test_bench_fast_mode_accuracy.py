"""The comparison of benchmarks/bench_fast_mode_accuracy.py: recall differences in points, the goal flag and the
agreement figures, on hand-made rankings whose answers are known, and the modes' engines on a tiny model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from rgnet_hf import RGNetForVideoGrounding

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_fast_mode_accuracy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_fast_mode_accuracy", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(moments, window_order, reference, gt_windows):
    window_order = np.asarray(window_order)
    scores = np.empty(len(window_order))
    scores[window_order] = np.linspace(0.9, 0.1, len(window_order))  # best first
    return {
        "moments": np.asarray(moments, dtype=np.float64),
        "window_order": window_order,
        "window_scores": scores,
        "reference": list(reference),
        "gt_windows": list(gt_windows),
    }


def _exact_records():
    # Four queries, each with its true moment ranked first and its true window (window 1) first.
    return [_record([[10 * q, 10 * q + 4], [50, 54]], [1, 0, 2, 3], [10 * q, 10 * q + 4], [1]) for q in range(4)]


def test_identical_rankings_are_within_any_goal(bench):
    exact = _exact_records()
    report = bench.compare_modes(exact, _exact_records(), "mad", goal_points=0.0, top_k_windows=2)
    assert report["within_goal"] and report["max_abs_recall_diff_points"] == 0
    assert set(report["diff_points"].values()) == {0.0}
    assert report["queries_with_changed_hits"] == 0
    assert report["top1_window_agreement"] == report["decoded_windows_agreement"] == 1.0
    assert report["top1_moment_iou"]["min"] == 1.0
    assert report["window_score_rank_correlation"]["spearman_min"] == pytest.approx(1.0)
    assert report["metrics_points"]["R@1 IoU=0.5"] == 100.0


def test_one_changed_query_moves_recall_by_its_share(bench):
    exact = _exact_records()
    fast = _exact_records()
    # Query 2: the true moment drops to rank 2 and the true window to rank 3 (windows 0 and 2 swap at ranks 2 and 3).
    fast[2] = _record([[50, 54], [20, 24]], [0, 2, 1, 3], [20, 24], [1])
    report = bench.compare_modes(exact, fast, "mad", goal_points=0.1, top_k_windows=2)
    assert report["diff_points"]["R@1 IoU=0.5"] == -25.0 and report["diff_points"]["R@5 IoU=0.5"] == 0.0
    assert report["diff_points"]["window R@1"] == -25.0 and report["diff_points"]["window R@5"] == 0.0
    assert report["diff_points"]["mIoU"] == -25.0  # mIoU is reported but is not an R@K
    assert report["max_abs_recall_diff_points"] == 25.0 and not report["within_goal"]
    assert bench.compare_modes(exact, fast, "mad", goal_points=25.0, top_k_windows=2)["within_goal"]
    assert report["queries_with_changed_hits"] == 1
    assert report["top1_window_agreement"] == 0.75
    assert report["decoded_windows_agreement"] == 0.75  # {1, 0} against {0, 2}
    assert report["top1_moment_iou"]["min"] == 0.0 and report["top1_moment_iou"]["fraction_at_least_0.5"] == 0.75
    assert report["window_score_rank_correlation"]["spearman_min"] < 1.0


def test_mismatched_queries_are_refused(bench):
    fast = _exact_records()
    fast[0]["reference"] = [1.0, 2.0]
    with pytest.raises(ValueError, match="same queries"):
        bench.compare_modes(_exact_records(), fast, "mad", goal_points=0.1, top_k_windows=2)
    with pytest.raises(ValueError, match="same, non-zero number"):
        bench.compare_modes(_exact_records(), _exact_records()[:3], "mad", goal_points=0.1, top_k_windows=2)


def test_mode_engines_leave_the_float32_model_alone(bench):
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    video = torch.randn(150, model.config.video_feature_size)
    text = torch.nn.functional.normalize(torch.randn(3, 5, model.config.text_feature_size), dim=-1)

    def records(mode):
        engine = bench.engine_for_mode(model, mode)
        results = engine.ground(video, text)
        return engine, [bench.query_record(r, [1.0, 3.0], [0]) for r in results]

    exact_engine, exact = records("exact")
    for record in exact:  # scores are indexed by window: read in window order they never increase
        assert (np.diff(record["window_scores"][record["window_order"]]) <= 0).all()
    bf16_engine, fast = records("bf16")
    assert exact_engine.model.dtype == model.dtype == torch.float32 and bf16_engine.model.dtype == torch.bfloat16
    assert exact_engine.model is not model
    repeated = bench.compare_modes(exact, records("exact")[1], "mad", goal_points=0.0, top_k_windows=4)
    assert repeated["within_goal"] and repeated["max_window_score_diff"] == 0.0
    report = bench.compare_modes(exact, fast, "mad", goal_points=0.1, top_k_windows=4)
    assert 0 < report["max_window_score_diff"] < 0.1  # bfloat16 rounding, not another model
    with pytest.raises(ValueError, match="unknown mode"):
        bench.engine_for_mode(model, "fp8")
