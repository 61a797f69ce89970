"""Grounding metrics (`rgnet_hf.evaluation.metrics`) and the `evaluate` module in `metrics/long_video_grounding`."""

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from rgnet_hf.evaluation.metrics import (
    EGO4D_PRESET,
    EVALUATION_PRESETS,
    MAD_PRESET,
    compute_grounding_metrics,
    mean_iou_top1,
    per_query_hits,
    recall_at_k,
    recall_key,
    temporal_iou,
    top1_iou,
    window_recall,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures"
FIXTURE_NAMES = ["mad_tiny", "ego4d_tiny", "ego4d_pretrain_tiny"]
METRIC_PATH = "metrics/long_video_grounding"  # relative to the repository root, as the docs load it


def _query_id(record: dict) -> str:
    if "query_id" in record:
        return record["query_id"]
    return f"{record['annotation_uid']}_{record['query_idx']}"


def _ranking_inputs(simulation: dict, ranking: str) -> tuple[list, list]:
    """Recorded ranked predictions of one ranking, and the ground truth of the same queries, in record order."""
    ground_truth = {query["query_id"]: query["timestamps"] for query in simulation["queries"]}
    records = simulation[f"{ranking}_after_nms"]
    predictions = [record["predicted_times"] for record in records]
    references = [ground_truth[_query_id(record)] for record in records]
    return predictions, references


def _expected_recall_matrix(metrics: dict) -> np.ndarray:
    """The recorded recalls as a (K, threshold) matrix: MAD stores recall[K][iou], Ego4D recall[iou][K]."""
    if "recall[K][iou]" in metrics:
        return np.array(metrics["recall[K][iou]"])
    return np.array(metrics["recall[iou][K]"]).T


@pytest.fixture(scope="module", params=FIXTURE_NAMES)
def named_simulation(request):
    fixture = torch.load(FIXTURE_DIR / f"{request.param}.pt", weights_only=True)
    return request.param, fixture["inference_simulation"]


@pytest.fixture(scope="module")
def isolated_evaluate(tmp_path_factory):
    """`evaluate` with its module and metric caches in a temporary folder, run from the repository root."""
    import evaluate

    hf_home = tmp_path_factory.mktemp("hf_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(hf_home))
        patch.setattr(evaluate.config, "HF_MODULES_CACHE", hf_home / "modules")
        patch.setattr(evaluate.config, "HF_METRICS_CACHE", hf_home / "metrics")
        patch.setattr(sys, "path", list(sys.path))  # evaluate appends its module cache to sys.path
        patch.chdir(REPO_ROOT)
        yield evaluate, hf_home


# ----------------------------------------------------------------------------------------------------------------------
# Parity with the official evaluators
# ----------------------------------------------------------------------------------------------------------------------


def test_presets():
    assert MAD_PRESET.ks == EGO4D_PRESET.ks == (1, 5, 10, 50, 100)
    assert MAD_PRESET.iou_thresholds == (0.1, 0.3, 0.5)
    assert EGO4D_PRESET.iou_thresholds == (0.3, 0.5)
    assert MAD_PRESET.window_ks == (1, 5, 10, 30, 50, 100, 200)
    assert EGO4D_PRESET.window_ks == (1, 5, 10, 20, 30, 50)
    assert set(EVALUATION_PRESETS) == {"mad", "ego4d"}
    assert recall_key(1, 0.3) == "R@1 IoU=0.3"


def test_recall_and_miou_match_fixture_for_every_ranking(named_simulation):
    name, simulation = named_simulation
    metrics = simulation["metrics"]
    preset = MAD_PRESET if name == "mad_tiny" else EGO4D_PRESET
    assert tuple(metrics["topK"]) == preset.ks and tuple(metrics["thresholds"]) == preset.iou_thresholds
    for ranking in ("fused", "proposal", "matching"):
        predictions, references = _ranking_inputs(simulation, ranking)
        expected = metrics["per_ranking"][ranking]
        hits = per_query_hits(predictions, references, metrics["topK"], metrics["thresholds"])
        np.testing.assert_array_equal(hits.mean(axis=0), _expected_recall_matrix(expected))
        results = recall_at_k(predictions, references, metrics["topK"], metrics["thresholds"])
        matrix = _expected_recall_matrix(expected)
        for i, k in enumerate(metrics["topK"]):
            for j, threshold in enumerate(metrics["thresholds"]):
                assert results[recall_key(k, threshold)] == matrix[i, j]
        if "mIoU" in expected:
            assert mean_iou_top1(predictions, references) == expected["mIoU"]
    np.testing.assert_array_equal(
        _expected_recall_matrix(metrics["per_ranking"]["fused"]), _expected_recall_matrix(metrics)
    )


def test_window_recall_matches_fixture(named_simulation):
    _, simulation = named_simulation
    query_ids = [query["query_id"] for query in simulation["queries"]]
    expected = simulation["metrics"]["window_recall"]
    results = window_recall(
        [simulation["query_id2windowidx"][q] for q in query_ids],
        [simulation["ground_truth_windows"][q] for q in query_ids],
        expected["topK"],
    )
    assert list(results) == [f"window R@{k}" for k in expected["topK"]]
    assert list(results.values()) == expected["recall"]


def test_evaluate_module_matches_fixture(named_simulation, isolated_evaluate):
    name, simulation = named_simulation
    evaluate, hf_home = isolated_evaluate
    config_name = "mad" if name == "mad_tiny" else "ego4d"
    metric = evaluate.load(METRIC_PATH, config_name, cache_dir=str(hf_home / "metrics"))
    predictions, references = _ranking_inputs(simulation, "fused")
    results = metric.compute(predictions=predictions, references=references)
    metrics = simulation["metrics"]
    matrix = _expected_recall_matrix(metrics)
    expected_keys = [recall_key(k, t) for k in metrics["topK"] for t in metrics["thresholds"]] + ["mIoU"]
    assert list(results) == expected_keys
    for i, k in enumerate(metrics["topK"]):
        for j, threshold in enumerate(metrics["thresholds"]):
            assert results[recall_key(k, threshold)] == matrix[i, j]
    if "mIoU" in metrics:
        assert results["mIoU"] == metrics["mIoU"]

    # Incremental use gives the same numbers.
    metric.add_batch(predictions=predictions[:1], references=references[:1])
    for prediction, reference in zip(predictions[1:], references[1:], strict=True):
        metric.add(predictions=prediction, references=reference)
    assert metric.compute() == results
    # The module only wraps rgnet_hf.evaluation.metrics.
    assert results == compute_grounding_metrics(predictions, references, config_name)


# ----------------------------------------------------------------------------------------------------------------------
# Hand-computed example
# ----------------------------------------------------------------------------------------------------------------------

# Ground truth, ranked predictions, and the IoU of each prediction.
HAND_REFERENCES = [[0.0, 10.0], [10.0, 20.0], [5.0, 5.0], [0.0, 1.0], [10.0, 15.0], [0.0, 10.0]]
HAND_PREDICTIONS = [
    [[0.0, 5.0, 0.9], [0.0, 6.0, 0.8]],  # IoU 0.5 (exactly the threshold), then 0.6; a score column is ignored
    [[30.0, 40.0]],  # IoU 0, and fewer predictions than K
    [[5.0, 5.0], [4.0, 6.0]],  # zero-length ground truth: IoU 0 for both (0/0 is defined as 0)
    [],  # no prediction: a miss, top-1 IoU 0
    [[10.0, 12.5], [10.0, 12.5], [10.0, 14.0]],  # tied predictions (IoU 0.5, 0.5), then IoU 0.8
    [[0.0, 3.0]],  # IoU 0.3 exactly: not a hit at 0.3
]
HAND_KS = (1, 2, 3)
HAND_THRESHOLDS = (0.3, 0.5)
HAND_EXPECTED = {
    "R@1 IoU=0.3": 2 / 6,
    "R@1 IoU=0.5": 0 / 6,
    "R@2 IoU=0.3": 2 / 6,
    "R@2 IoU=0.5": 1 / 6,
    "R@3 IoU=0.3": 2 / 6,
    "R@3 IoU=0.5": 2 / 6,
    "mIoU": (0.5 + 0 + 0 + 0 + 0.5 + 0.3) / 6,
}


def test_hand_computed_example():
    results = compute_grounding_metrics(HAND_PREDICTIONS, HAND_REFERENCES, "ego4d", HAND_KS, HAND_THRESHOLDS)
    assert results == pytest.approx(HAND_EXPECTED, abs=1e-12)
    np.testing.assert_allclose(top1_iou(HAND_PREDICTIONS, HAND_REFERENCES), [0.5, 0.0, 0.0, 0.0, 0.5, 0.3])
    hits = per_query_hits(HAND_PREDICTIONS, HAND_REFERENCES, HAND_KS, HAND_THRESHOLDS)
    assert hits.shape == (6, 3, 2)
    assert hits[0].tolist() == [[True, False], [True, True], [True, True]]
    assert hits[4].tolist() == [[True, False], [True, False], [True, True]]
    assert not hits[[1, 2, 3, 5]].any()
    # A threshold of 0 counts any overlap, but still not a touching or zero-length one.
    assert recall_at_k(HAND_PREDICTIONS, HAND_REFERENCES, [3], [0.0])["R@3 IoU=0"] == 3 / 6


def test_hand_computed_example_through_evaluate(isolated_evaluate):
    evaluate, hf_home = isolated_evaluate
    metric = evaluate.load(METRIC_PATH, "ego4d", cache_dir=str(hf_home / "metrics"))
    results = metric.compute(
        predictions=HAND_PREDICTIONS, references=HAND_REFERENCES, ks=list(HAND_KS), iou_thresholds=HAND_THRESHOLDS
    )
    assert results == pytest.approx(HAND_EXPECTED, abs=1e-12)
    default = evaluate.load(METRIC_PATH, cache_dir=str(hf_home / "metrics"))  # "default" is the MAD preset
    results = default.compute(predictions=HAND_PREDICTIONS, references=HAND_REFERENCES)
    assert list(results) == [recall_key(k, t) for k in MAD_PRESET.ks for t in MAD_PRESET.iou_thresholds] + ["mIoU"]
    # With at most 3 predictions per query, every K >= 3 gives the same recall.
    assert results["R@5 IoU=0.5"] == results["R@100 IoU=0.5"] == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="Unknown configuration"):
        evaluate.load(METRIC_PATH, "charades", cache_dir=str(hf_home / "metrics"))


def test_distributed_evaluate_with_two_processes(isolated_evaluate, tmp_path):
    """Two metric objects of one experiment (ranks 0 and 1), each with half of the data, as under 2 processes."""
    evaluate, _ = isolated_evaluate
    metrics = [
        evaluate.load(
            METRIC_PATH,
            "ego4d",
            num_process=2,
            process_id=rank,
            experiment_id="test_two_processes",
            cache_dir=str(tmp_path),
            timeout=30,
        )
        for rank in range(2)
    ]
    shards = [slice(0, 3), slice(3, 6)]
    results = {}

    def run(rank):
        try:
            metrics[rank].add_batch(
                predictions=HAND_PREDICTIONS[shards[rank]], references=HAND_REFERENCES[shards[rank]]
            )
            results[rank] = metrics[rank].compute(ks=list(HAND_KS), iou_thresholds=HAND_THRESHOLDS)
        except Exception as error:  # surfaced by the assertion below
            results[rank] = error

    # The ranks wait for each other's lock files, so they must run concurrently.
    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results[1] is None
    assert results[0] == pytest.approx(HAND_EXPECTED, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# IoU, window recall and errors
# ----------------------------------------------------------------------------------------------------------------------


def test_temporal_iou():
    iou = temporal_iou([[0.0, 5.0], [5.0, 10.0], [2.0, 4.0], [10.0, 12.0], [0.0, 20.0], [3.0, 3.0]], [0.0, 10.0])
    np.testing.assert_allclose(iou, [0.5, 0.5, 0.2, 0.0, 0.5, 0.0])
    # Zero-length reference: 0 everywhere, including the identical point (0/0 in the official code), never NaN.
    np.testing.assert_array_equal(temporal_iou([[3.0, 3.0], [2.0, 4.0]], [3.0, 3.0]), [0.0, 0.0])
    assert temporal_iou(np.zeros((0, 2)), [0.0, 1.0]).shape == (0,)


def test_window_recall_hand_example():
    rankings = [[3, 1, 2, 0], [0, 1], [2, 0, 1], [1, 0]]
    truths = [[1, 2], [5], [0], []]
    results = window_recall(rankings, truths, ks=[1, 2, 3, 10])
    # Query 0 hits at rank 2; query 1's window 5 is never ranked; query 2 hits at rank 2; query 3 has no truth.
    assert results == {"window R@1": 0.0, "window R@2": 0.5, "window R@3": 0.5, "window R@10": 0.5}
    assert window_recall([torch.tensor([4, 2])], [torch.tensor([2])], ks=[1, 2]) == {
        "window R@1": 0.0,
        "window R@2": 1.0,
    }


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        ([[[0.0, 1.0]]], [[0.0, 1.0], [1.0, 2.0]], {}, "same length"),
        ([], [], {}, "no query"),
        ([[[0.0, float("nan")]]], [[0.0, 1.0]], {}, "NaN"),
        ([[[0.0, 1.0]]], [[0.0, float("inf")]], {}, "NaN or infinite"),
        ([[[2.0, 1.0]]], [[0.0, 1.0]], {}, "end < start"),
        ([[[0.0, 1.0]]], [[3.0, 1.0]], {}, "end < start"),
        ([[[0.0, 1.0]]], [[0.0, 1.0]], {"ks": [0]}, "K >= 1"),
        ([[[0.0, 1.0]]], [[0.0, 1.0]], {"ks": [-5]}, "K >= 1"),
        ([[[0.0, 1.0]]], [[0.0, 1.0]], {"ks": [1.5]}, "ints"),
        ([[[0.0, 1.0]]], [[0.0, 1.0]], {"ks": []}, "at least one"),
        ([[[0.0, 1.0]]], [[0.0, 1.0]], {"iou_thresholds": [1.5]}, r"\[0, 1\]"),
        ([[[0.0, 1.0]]], [[0.0, 1.0]], {"iou_thresholds": [float("nan")]}, r"\[0, 1\]"),
        ([[0.0, 1.0]], [[0.0, 1.0]], {}, "shape"),  # a flat span instead of a list of spans
        ([[[0.0, 1.0]]], [[0.0, 1.0, 2.0]], {}, r"\(Q, 2\)"),
    ],
)
def test_bad_input_raises_clear_errors(predictions, references, kwargs, message):
    with pytest.raises(ValueError, match=message):
        recall_at_k(predictions, references, **kwargs)


@pytest.mark.parametrize("time", [2e38, 1e39])
def test_float32_metrics_refuse_times_that_overflow(time):
    predictions, references = [[[-time, time]]], [[0.0, time / 2]]
    for metric in (recall_at_k, mean_iou_top1):
        with pytest.raises(ValueError, match="too large for the float32 IoU"):
            metric(predictions, references, iou_dtype="float32")
    assert mean_iou_top1(predictions, references, iou_dtype="float64") == 0.25


def test_bad_input_raises_through_evaluate(isolated_evaluate):
    evaluate, hf_home = isolated_evaluate
    metric = evaluate.load(METRIC_PATH, "mad", cache_dir=str(hf_home / "metrics"))
    with pytest.raises(ValueError, match="end < start"):
        metric.compute(predictions=[[[2.0, 1.0]]], references=[[0.0, 1.0]])
    with pytest.raises(ValueError, match="K >= 1"):
        metric.compute(predictions=[[[0.0, 1.0]]], references=[[0.0, 1.0]], ks=[0])


def test_window_recall_bad_input():
    with pytest.raises(ValueError, match="same length"):
        window_recall([[0]], [[0], [1]], ks=[1])
    with pytest.raises(ValueError, match="negative window index"):
        window_recall([[0, -1]], [[0]], ks=[1])
    with pytest.raises(ValueError, match="K >= 1"):
        window_recall([[0]], [[0]], ks=[0])
    with pytest.raises(ValueError, match="zero queries"):
        window_recall([], [], ks=[1])


# ----------------------------------------------------------------------------------------------------------------------
# Arithmetic: float32 for MAD (its official evaluator), float64 for Ego4D
# ----------------------------------------------------------------------------------------------------------------------

# Spans rounded to 4 decimals whose IoU with [0, L] is t in exact arithmetic (b - a = t * L): float32 and float64
# round the IoU to different sides of t. Rows: prediction, reference, hit in float32, hit in float64.
THRESHOLD_CASES = {
    0.1: [([30.7034, 77.1657], [0.0, 464.623], True, False), ([271.5945, 319.901], [0.0, 483.065], False, True)],
    0.3: [([61.724, 189.0132], [0.0, 424.2973], False, True), ([174.2075, 260.9874], [0.0, 289.2663], False, True)],
    0.5: [([107.2332, 275.8297], [0.0, 337.193], True, False), ([30.5367, 166.1185], [0.0, 271.1636], False, True)],
}


def _official_mad_hits(prediction, reference, threshold) -> bool:
    """The official MAD arithmetic: float32 torch tensors for the spans, the IoU and the threshold."""
    spans, truth = torch.tensor([prediction]), torch.tensor(reference)
    intersection = (torch.minimum(spans[:, 1], truth[1]) - torch.maximum(spans[:, 0], truth[0])).clamp(min=0)
    hull = torch.maximum(spans[:, 1], truth[1]) - torch.minimum(spans[:, 0], truth[0])
    return bool((intersection / hull > torch.tensor([threshold]))[0])


@pytest.mark.parametrize("threshold", sorted(THRESHOLD_CASES))
def test_mad_preset_follows_float32_at_the_thresholds(threshold):
    for prediction, reference, hit32, hit64 in THRESHOLD_CASES[threshold]:
        assert _official_mad_hits(prediction, reference, threshold) is hit32
        key = recall_key(1, threshold)
        mad = compute_grounding_metrics([[prediction]], [reference], "mad")
        assert mad[key] == float(hit32)
        assert compute_grounding_metrics([[prediction]], [reference], "mad", iou_dtype="float64")[key] == float(hit64)
        ego4d = compute_grounding_metrics([[prediction]], [reference], "ego4d", iou_thresholds=[threshold])
        assert ego4d[key] == float(hit64)
        exact = (prediction[1] - prediction[0]) / (reference[1] - reference[0])
        assert (exact > threshold) is hit64


def test_mad_preset_equals_official_float32_on_random_threshold_cases():
    """Spans built so their IoU sits at 0.1, 0.3 or 0.5: the MAD preset equals the float32 reference on every query,
    and the two precisions disagree on some."""
    generator = np.random.default_rng(0)
    predictions, references = [], []
    for threshold in (0.1, 0.3, 0.5) * 200:
        length = round(float(generator.uniform(1, 500)), 4)
        start = round(float(generator.uniform(0, length * (1 - threshold))), 4)
        predictions.append([[start, round(start + threshold * length, 4)]])
        references.append([0.0, length])
    for threshold in (0.1, 0.3, 0.5):
        hits32 = per_query_hits(predictions, references, [1], [threshold], iou_dtype="float32")[:, 0, 0]
        hits64 = per_query_hits(predictions, references, [1], [threshold])[:, 0, 0]
        official = [_official_mad_hits(p[0], r, threshold) for p, r in zip(predictions, references)]
        assert hits32.tolist() == official
        assert (hits32 != hits64).any()


def test_evaluate_module_mad_uses_float32_with_a_float64_option(isolated_evaluate):
    evaluate, hf_home = isolated_evaluate
    metric = evaluate.load(METRIC_PATH, "mad", cache_dir=str(hf_home / "metrics"))
    cases = [case for threshold in (0.1, 0.3, 0.5) for case in THRESHOLD_CASES[threshold]]
    thresholds = [threshold for threshold in (0.1, 0.3, 0.5) for _ in THRESHOLD_CASES[threshold]]
    for (prediction, reference, hit32, hit64), threshold in zip(cases, thresholds):
        key = recall_key(1, threshold)
        assert metric.compute(predictions=[[prediction]], references=[reference], ks=[1])[key] == float(hit32)
        results = metric.compute(predictions=[[prediction]], references=[reference], ks=[1], iou_dtype="float64")
        assert results[key] == float(hit64)
    with pytest.raises(ValueError, match="iou_dtype"):
        metric.compute(predictions=[[[0.0, 1.0]]], references=[[0.0, 1.0]], iou_dtype="float16")
