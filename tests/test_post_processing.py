"""Score fusion, span collapse, ranking and temporal NMS (`rgnet_hf.post_processing`)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rgnet_hf.evaluation.metrics import temporal_iou
from rgnet_hf.post_processing import (
    collapse_repeated_spans,
    format_window_predictions,
    fuse_scores,
    min_max_normalize,
    post_process_queries,
    post_process_query,
    post_process_query_all_rankings,
    rank_windows,
    temporal_iou_matrix,
    temporal_nms,
)
from rgnet_hf.windowing import window_spans_to_seconds

FIXTURE_DIR = Path(__file__).parent / "fixtures"
FIXTURE_NAMES = ["mad_tiny", "ego4d_tiny", "ego4d_pretrain_tiny"]
RANKINGS = ("fused", "proposal", "matching")
# Queries of mad_tiny whose recorded rows contain NaN matching scores (an official bug, see PARITY_FIXTURES.md).
MAD_NAN_QUERIES = {"synthuid0_0", "synthuid1_1", "synthuid3_3"}


def _query_id(record: dict) -> str:
    """Query id of a recorded ranking: MAD records carry it, Ego4D records carry `annotation_uid` + `query_idx`."""
    if "query_id" in record:
        return record["query_id"]
    return f"{record['annotation_uid']}_{record['query_idx']}"


def _rows_by_query(simulation: dict) -> dict[str, list[list[float]]]:
    """The recorded per-window rows, concatenated per query in the recorded (window-rank) order."""
    rows: dict[str, list[list[float]]] = {}
    for window in simulation["per_window_predictions"]:
        rows.setdefault(window["query_id"], []).extend(window["pred_relevant_windows"])
    return rows


@pytest.fixture(scope="module", params=FIXTURE_NAMES)
def named_simulation(request):
    fixture = torch.load(FIXTURE_DIR / f"{request.param}.pt", weights_only=True)
    return request.param, fixture["inference_simulation"]


def _reference_post_processing(rows, ranking, nms_threshold=0.5, max_before_nms=200, max_after_nms=100):
    """A plain-Python, loop-based statement of the official algorithm, for comparison on random inputs."""

    def normalise(values):
        low, high = min(values), max(values)
        return list(values) if low == high else [(v - low) / (high - low) for v in values]

    proposal = normalise([row[2] for row in rows])
    matching = normalise([row[3] for row in rows])
    by_span = {}
    for row, p, m in zip(rows, proposal, matching, strict=True):
        by_span[(row[0], row[1])] = [row[0], row[1], row[2], row[3], p + m]
    column = {"fused": 4, "proposal": 2, "matching": 3}[ranking]
    ranked = sorted(by_span.values(), key=lambda row: row[column], reverse=True)[:max_before_nms]
    kept = []
    for row in ranked:
        ious = []
        for other in kept:
            intersection = max(0.0, min(row[1], other[1]) - max(row[0], other[0]))
            hull = max(row[1], other[1]) - min(row[0], other[0])
            ious.append(intersection / hull if hull > 0 else 0.0)
        if all(iou <= nms_threshold for iou in ious):
            kept.append(row)
    return kept[:max_after_nms]


# ----------------------------------------------------------------------------------------------------------------------
# Parity with the official post-processing
# ----------------------------------------------------------------------------------------------------------------------


def test_post_processing_matches_fixture_exactly(named_simulation):
    name, simulation = named_simulation
    rows_by_query = _rows_by_query(simulation)
    compared = 0
    for ranking in RANKINGS:
        for record in simulation[f"{ranking}_after_nms"]:
            query_id = _query_id(record)
            if name == "mad_tiny" and query_id in MAD_NAN_QUERIES:
                continue
            result = post_process_query(rows_by_query[query_id], ranking=ranking)
            assert result.shape[1] == 5
            # Same rows, same order, same floats (the fused score is compared bit for bit).
            assert result.tolist() == record["predicted_times"], (name, ranking, query_id)
            compared += 1
    assert compared == (3 if name == "mad_tiny" else 12)


def test_post_processing_all_rankings_and_batched_match_fixture(named_simulation):
    name, simulation = named_simulation
    rows_by_query = _rows_by_query(simulation)
    query_ids = [q for q in rows_by_query if not (name == "mad_tiny" and q in MAD_NAN_QUERIES)]
    batched = {ranking: post_process_queries([rows_by_query[q] for q in query_ids], ranking) for ranking in RANKINGS}
    for index, query_id in enumerate(query_ids):
        all_rankings = post_process_query_all_rankings(rows_by_query[query_id])
        for ranking in RANKINGS:
            expected = next(r for r in simulation[f"{ranking}_after_nms"] if _query_id(r) == query_id)
            assert all_rankings[ranking].tolist() == expected["predicted_times"]
            assert batched[ranking][index].tolist() == expected["predicted_times"]


def test_nan_scores_raise_instead_of_official_nan_ranking(named_simulation):
    name, simulation = named_simulation
    rows_by_query = _rows_by_query(simulation)
    nan_queries = {q for q, count in simulation["nan_prediction_rows_per_query"].items() if count > 0}
    assert nan_queries == (MAD_NAN_QUERIES if name == "mad_tiny" else set())
    for query_id in nan_queries:
        with pytest.raises(ValueError, match="NaN"):
            post_process_query(rows_by_query[query_id])
    if nan_queries:
        ordered = list(rows_by_query)
        bad_index = next(i for i, q in enumerate(ordered) if q in nan_queries)
        with pytest.raises(ValueError, match=f"query {bad_index}: .*NaN"):
            post_process_queries([rows_by_query[q] for q in ordered])


def test_window_rows_and_ranking_reproduce_fixture(named_simulation):
    """Recorded raw outputs -> window ranking, kept rows, and the rounded per-window rows of the official inference."""
    name, simulation = named_simulation
    raw = simulation["raw_model_outputs"]
    num_queries, windows_per_query = len(simulation["queries"]), len(simulation["windows"])
    top_k = simulation["opt_used"]["topk_window"]
    ranking = rank_windows(raw["prob_soft"][:, 0].reshape(num_queries, windows_per_query), top_k)
    kept_rows_by_query = {}
    for query_index, query in enumerate(simulation["queries"]):
        assert ranking.order[query_index].tolist() == simulation["query_id2windowidx"][query["query_id"]]
        kept_rows_by_query[query["query_id"]] = (
            query_index * windows_per_query + ranking.order[query_index, : ranking.num_kept[query_index]]
        ).tolist()
    assert ranking.num_kept.tolist() == [top_k] * num_queries
    # kept_rows lists the queries in an arbitrary (set) order; within a query, rows follow the window rank.
    recorded_kept = simulation["kept_rows"].tolist()
    recorded_query_order = [window["query_id"] for window in simulation["per_window_predictions"]][::top_k]
    assert recorded_kept == [row for query_id in recorded_query_order for row in kept_rows_by_query[query_id]]

    # Per-window rows: proposal = p_fg * window score; matching = CONE score (x window score for Ego4D).
    kept_rows = simulation["kept_rows"]
    window_score = torch.sigmoid(raw["prob_soft"][kept_rows, 0])
    proposal = raw["pred_logits"][kept_rows].softmax(-1)[..., 0] * window_score[:, None]
    matching = simulation["matching_scores_raw"]
    if name != "mad_tiny":
        matching = matching * window_score[:, None]
    window_index = kept_rows % windows_per_query
    seconds = window_spans_to_seconds(
        raw["pred_spans"][kept_rows],
        simulation["batch"]["video_start"][window_index],
        simulation["batch"]["video_length"][window_index],
        simulation["clip_length"],
    )
    rows = format_window_predictions(seconds, proposal, matching)
    recorded = np.array([window["pred_relevant_windows"] for window in simulation["per_window_predictions"]])
    assert rows.shape == recorded.shape == (len(kept_rows), 5, 4)
    # Suggested tolerances of PARITY_FIXTURES.md (rounded rows): 1e-3 s on spans, 1e-4 on scores; NaN equal to NaN.
    np.testing.assert_allclose(rows[..., :2], recorded[..., :2], rtol=0, atol=1e-3)
    np.testing.assert_allclose(rows[..., 2:], recorded[..., 2:], rtol=0, atol=1e-4, equal_nan=True)


# ----------------------------------------------------------------------------------------------------------------------
# Hand-made cases
# ----------------------------------------------------------------------------------------------------------------------


def test_min_max_normalize():
    np.testing.assert_array_equal(min_max_normalize([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    # All-equal lists (and single values) are left unchanged, not set to 0.
    np.testing.assert_array_equal(min_max_normalize([0.7, 0.7]), [0.7, 0.7])
    np.testing.assert_array_equal(min_max_normalize([0.3]), [0.3])
    assert min_max_normalize([]).shape == (0,)
    with pytest.raises(ValueError, match="NaN"):
        min_max_normalize([0.1, float("nan")])
    with pytest.raises(ValueError, match="1-d"):
        min_max_normalize([[0.1, 0.2]])


def test_repeated_span_keeps_later_scores_at_first_position():
    span_x, span_y = [0.0, 1.0], [5.0, 6.0]
    rows = [
        [*span_x, 0.2, 0.0],  # first occurrence of x: sets x's position
        [*span_y, 0.9, 0.0],
        [*span_x, 0.9, 0.0],  # later occurrence of x: its scores win
    ]
    first, last = collapse_repeated_spans(np.array(rows)[:, :2])
    assert first.tolist() == [0, 1] and last.tolist() == [2, 1]
    fused = fuse_scores(rows)
    # Normalisation runs over all three rows (proposal [0.2, 0.9, 0.9] -> [0, 1, 1]; matching all equal -> kept).
    assert fused.tolist() == [[*span_x, 0.9, 0.0, 1.0], [*span_y, 0.9, 0.0, 1.0]]
    # x and y tie on every score: the stable sort keeps x (its first occurrence comes first) in front.
    for ranking in RANKINGS:
        assert post_process_query(rows, ranking=ranking)[:, :2].tolist() == [span_x, span_y]


def test_negative_zero_and_zero_are_the_same_key():
    rows = [[-0.0, 1.0, 0.1, 0.2], [0.0, 1.0, 0.3, 0.4]]
    fused = fuse_scores(rows)
    assert fused.shape == (1, 5)
    assert fused[0, 2:4].tolist() == [0.3, 0.4]


def test_ranking_uses_the_requested_score_and_keeps_raw_scores():
    rows = [
        [0.0, 1.0, 0.1, 0.9],
        [2.0, 3.0, 0.5, 0.1],
        [4.0, 5.0, 0.3, 0.6],
    ]
    # Normalised: proposal [0, 1, 0.5], matching [1, 0, 0.625]; fused [1, 1, 1.125].
    assert post_process_query(rows, "proposal")[:, 0].tolist() == [2.0, 4.0, 0.0]
    assert post_process_query(rows, "matching")[:, 0].tolist() == [0.0, 4.0, 2.0]
    fused = post_process_query(rows, "fused")
    assert fused[:, 0].tolist() == [4.0, 0.0, 2.0]
    np.testing.assert_allclose(fused[:, 4], [1.125, 1.0, 1.0])
    assert fused[:, 2:4].tolist() == [[0.3, 0.6], [0.1, 0.9], [0.5, 0.1]]


def test_nms_threshold_is_strict_and_uses_the_hull():
    # IoU([0, 4], [0, 2]) = 2 / 4 = 0.5 exactly: not > 0.5, so kept.
    assert temporal_nms([[0.0, 4.0], [0.0, 2.0]], 0.5).tolist() == [0, 1]
    # IoU([0, 4], [0, 2.5]) = 0.625 > 0.5: suppressed.
    assert temporal_nms([[0.0, 4.0], [0.0, 2.5]], 0.5).tolist() == [0]
    # Disjoint spans have IoU 0 whatever their distance (the hull only enlarges the denominator).
    np.testing.assert_array_equal(temporal_iou_matrix([[0.0, 1.0]], [[3.0, 4.0], [0.5, 2.0]]), [[0.0, 0.25]])


def test_nms_is_greedy_over_kept_rows_only():
    # a suppresses b (IoU 8/12); b would suppress c (IoU 8/12) but b is gone, and IoU(a, c) = 6/14: c is kept.
    spans = [[0.0, 10.0], [2.0, 12.0], [4.0, 14.0]]
    np.testing.assert_allclose(temporal_iou_matrix(spans, spans)[[0, 1, 0], [1, 2, 2]], [8 / 12, 8 / 12, 6 / 14])
    assert temporal_nms(spans, 0.5).tolist() == [0, 2]
    assert temporal_nms(spans, 0.5, max_keep=1).tolist() == [0]
    assert temporal_nms(np.zeros((0, 2)), 0.5).tolist() == []


def test_max_before_and_after_nms():
    rows = [
        [0.0, 10.0, 0.9, 0.0],
        [1.0, 10.0, 0.8, 0.0],  # suppressed by the first row (IoU 0.9)
        [20.0, 30.0, 0.7, 0.0],
        [40.0, 50.0, 0.6, 0.0],
    ]
    assert post_process_query(rows, "proposal")[:, 0].tolist() == [0.0, 20.0, 40.0]
    # Only the first two ranked rows reach NMS, and the second is suppressed.
    assert post_process_query(rows, "proposal", max_before_nms=2)[:, 0].tolist() == [0.0]
    assert post_process_query(rows, "proposal", max_after_nms=2)[:, 0].tolist() == [0.0, 20.0]
    # With a threshold of 1, nothing is suppressed.
    assert post_process_query(rows, "proposal", nms_threshold=1.0).shape == (4, 5)


def test_zero_length_spans():
    # A zero-length span against an identical one has hull 0: IoU defined as 0, not NaN.
    iou = temporal_iou_matrix([[3.0, 3.0], [2.0, 4.0]], [[3.0, 3.0]])
    np.testing.assert_array_equal(iou, [[0.0], [0.0]])
    assert not np.isnan(iou).any()
    out = post_process_query([[3.0, 3.0, 0.5, 0.5], [2.0, 4.0, 0.4, 0.4]])
    assert out[:, :2].tolist() == [[3.0, 3.0], [2.0, 4.0]]


def test_iou_agrees_with_the_evaluation_module():
    generator = np.random.default_rng(0)
    starts = generator.uniform(-5, 50, size=(64, 1))
    spans = np.concatenate([starts, starts + generator.uniform(0, 20, size=(64, 1))], axis=1)
    spans[::7, 1] = spans[::7, 0]  # some zero-length spans
    matrix = temporal_iou_matrix(spans, spans)
    for index in range(0, 64, 9):
        np.testing.assert_array_equal(matrix[:, index], temporal_iou(spans, spans[index]))


@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_reference_on_random_rows_with_ties_and_repeats(seed):
    generator = np.random.default_rng(seed)
    num_rows = int(generator.integers(1, 260))
    # Coarse values make repeated (start, end) pairs and tied scores frequent.
    starts = np.round(generator.integers(0, 40, size=num_rows) * 0.5, 4)
    ends = starts + np.round(generator.integers(0, 12, size=num_rows) * 0.5, 4)
    proposal = np.round(generator.integers(0, 15, size=num_rows) / 16, 4)
    matching = np.round(generator.integers(0, 9, size=num_rows) / 8, 4)
    if seed == 0:
        matching[:] = 0.25  # the all-equal branch of the normalisation
    rows = np.stack([starts, ends, proposal, matching], axis=1)
    assert len({(s, e) for s, e in rows[:, :2].tolist()}) < num_rows or num_rows < 3
    options = {"nms_threshold": [0.5, 0.3, 0.7][seed % 3], "max_before_nms": 200, "max_after_nms": [100, 7][seed % 2]}
    for ranking in RANKINGS:
        expected = _reference_post_processing(rows.tolist(), ranking, **options)
        assert post_process_query(rows, ranking, **options).tolist() == expected
        assert post_process_query(torch.from_numpy(rows), ranking, **options).tolist() == expected


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"end < start"):
        post_process_query([[2.0, 1.0, 0.5, 0.5]])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        post_process_query([[0.0, 1.0, 0.5]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        post_process_query([[0.0, math.inf, 0.5, 0.5]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        post_process_query([[0.0, 1.0, 0.5, float("nan")]])
    with pytest.raises(ValueError, match="ranking"):
        post_process_query([[0.0, 1.0, 0.5, 0.5]], ranking="saliency")
    with pytest.raises(ValueError, match="max_after_nms"):
        post_process_query([[0.0, 1.0, 0.5, 0.5]], max_after_nms=0)
    with pytest.raises(ValueError, match="nms_threshold"):
        post_process_query([[0.0, 1.0, 0.5, 0.5]], nms_threshold=1.5)
    assert post_process_query(np.zeros((0, 4))).shape == (0, 5)
    assert post_process_queries([]) == []


def test_format_window_predictions_sorts_by_unrounded_proposal_then_rounds():
    spans = np.array([[[0.123456, 1.0], [2.0, 3.000049], [4.0, 5.0]]])
    # 0.30001 and 0.30004 both round to 0.3: the order comes from the unrounded values.
    proposal = np.array([[0.30001, 0.30004, 0.1]])
    matching = np.array([[0.5, 0.25, 0.123449]])
    rows = format_window_predictions(spans, proposal, matching)
    assert rows.tolist() == [[[2.0, 3.0, 0.3, 0.25], [0.1235, 1.0, 0.3, 0.5], [4.0, 5.0, 0.1, 0.1234]]]
    with pytest.raises(ValueError, match="shape"):
        format_window_predictions(spans, proposal[:, :2], matching)


def test_rank_windows_with_padding_mask():
    logits = torch.tensor([[0.5, 2.0, -1.0, 3.0], [1.0, -2.0, 0.0, 9.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    ranking = rank_windows(logits, top_k=2, window_mask=mask)
    assert ranking.order.tolist() == [[3, 1, 0, 2], [0, 2, 1, 3]]
    assert ranking.num_kept.tolist() == [2, 2]
    torch.testing.assert_close(ranking.scores[0], torch.sigmoid(logits[0]))
    assert ranking.scores[1, 3].item() == 0.0
    assert rank_windows(logits[0], top_k=10).num_kept.item() == 4
    assert rank_windows(logits, top_k=5, window_mask=mask).num_kept.tolist() == [4, 3]
    with pytest.raises(ValueError, match="top_k"):
        rank_windows(logits, top_k=0)
    with pytest.raises(ValueError, match="NaN"):
        rank_windows(torch.tensor([0.0, float("nan")]), top_k=1)
