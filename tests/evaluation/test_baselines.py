"""The zero-shot cosine baseline: vectorised scores equal a slow reference, NMS and top-k are right, a planted copy is
found at R@1, and the synthetic benchmark defeats it."""

from __future__ import annotations

import numpy as np
import pytest

from rgnet_hf.data import load_mad
from rgnet_hf.evaluation.baselines import (
    evaluate_zero_shot,
    greedy_temporal_nms,
    sliding_window_proposals,
    zero_shot_cosine_baseline,
)
from rgnet_hf.evaluation.metrics import compute_grounding_metrics, recall_at_k
from rgnet_hf.post_processing import temporal_iou_matrix, temporal_nms
from rgnet_hf.synthetic.benchmark import load_synthetic_mad, make_synthetic_mad, write_signal_features


def _video(rng, num_frames=600, dim=32):
    common = rng.standard_normal(dim)
    return (common + 0.8 * rng.standard_normal((num_frames, dim))) * 3.0


def _planted(rng, num_frames=1500, dim=32, num_queries=6, spf=0.2):
    """A video whose query moments are exact copies of the sentence feature, 2 s long (the shortest proposal: with a
    mean-cosine score, every proposal inside a copy scores 1, so longer copies tie with their sub-proposals) and
    starting on the proposals' grid."""
    video = _video(rng, num_frames, dim)
    sentences = rng.standard_normal((num_queries, dim))
    references = []
    length = int(round(2.0 / spf))
    for q in range(num_queries):
        low, high = q * num_frames // num_queries, (q + 1) * num_frames // num_queries - length
        start = 2 * int(rng.integers(low // 2, high // 2))  # 2-s proposals start every 2 frames
        video[start : start + length] = sentences[q] * rng.uniform(1, 3)
        references.append([start * spf, (start + length) * spf])
    return video, sentences, np.asarray(references)


def _slow_reference(video, sentence, spf, lengths, stride_fraction, top_k, nms_threshold):
    frames = video / np.linalg.norm(video, axis=1, keepdims=True)
    sentence = sentence / np.linalg.norm(sentence)
    rows = []
    for length in lengths:
        stride = max(1, round(length * stride_fraction))
        starts = list(range(0, len(video) - length + 1, stride))
        if starts[-1] + length < len(video):
            starts.append(len(video) - length)
        for start in starts:
            score = np.mean([frames[t] @ sentence for t in range(start, start + length)])
            rows.append([start * spf, (start + length) * spf, score])
    rows = np.asarray(rows)
    ranked = rows[np.argsort(-rows[:, 2], kind="stable")]
    return ranked[temporal_nms(ranked[:, :2], nms_threshold, top_k)]


def test_vectorised_scores_equal_a_slow_reference():
    rng = np.random.default_rng(0)
    video, sentences = _video(rng, 137, 16), rng.standard_normal((3, 16))
    fast = zero_shot_cosine_baseline(
        video, sentences, 0.2, window_lengths=[5, 12, 30], stride_fraction=0.3, top_k=20, nms_threshold=0.4
    )
    assert len(fast) == 3
    for q in range(3):
        slow = _slow_reference(video, sentences[q], 0.2, [5, 12, 30], 0.3, 20, 0.4)
        np.testing.assert_allclose(fast[q], slow, rtol=1e-6, atol=1e-6)


def test_planted_copy_is_found_at_rank_one():
    rng = np.random.default_rng(1)
    video, sentences, references = _planted(rng)
    predictions = zero_shot_cosine_baseline(video, sentences, 0.2)
    metrics = compute_grounding_metrics([p[:, :2] for p in predictions], references)
    assert metrics["R@1 IoU=0.5"] == 1.0
    for prediction, reference in zip(predictions, references):
        np.testing.assert_allclose(prediction[0, :2], reference)  # an exact proposal exists: it wins
        assert prediction[0, 2] == pytest.approx(1.0)
    # Off the grid (an odd start), the best proposal still overlaps 9 of the 10 frames.
    video, sentences, references = _planted(rng, num_queries=1)
    top = zero_shot_cosine_baseline(np.roll(video, 1, axis=0), sentences, 0.2)[0][:1, :2]
    assert recall_at_k([top], references + 0.2, ks=[1], iou_thresholds=[0.8])["R@1 IoU=0.8"] == 1.0


def test_nms_and_top_k():
    rng = np.random.default_rng(2)
    video, sentences = _video(rng, 900, 24), rng.standard_normal((2, 24))
    for threshold in (0.3, 0.5):
        predictions = zero_shot_cosine_baseline(video, sentences, 0.2, top_k=15, nms_threshold=threshold)
        for rows in predictions:
            assert rows.shape == (15, 3)
            assert (np.diff(rows[:, 2]) <= 0).all()  # best first
            iou = temporal_iou_matrix(rows[:, :2], rows[:, :2])
            assert (iou[~np.eye(len(rows), dtype=bool)] <= threshold).all()
    # The linear-memory NMS is the official greedy NMS.
    spans = np.sort(rng.uniform(0, 50, size=(300, 2)), axis=1)
    scores = rng.standard_normal(300)
    scores[10:20] = scores[0]  # ties keep the input order
    order = np.argsort(-scores, kind="stable")
    for threshold, keep in ((0.5, None), (0.2, 7), (0.0, None), (1.0, 50)):
        expected = order[temporal_nms(spans[order], threshold, keep)]
        np.testing.assert_array_equal(greedy_temporal_nms(spans, scores, threshold, keep), expected)
    # Fewer proposals than top_k: all of them that survive.
    short = zero_shot_cosine_baseline(video[:7], sentences, 0.2, window_lengths=[10], top_k=100)
    np.testing.assert_allclose(short[0][:, :2], [[0.0, 1.4]])


def test_proposals_cover_the_video():
    proposals = sliding_window_proposals(103, [10, 40, 500], stride_fraction=0.25)
    assert proposals.min() == 0 and proposals.max() == 103
    assert ((proposals[:, 1] - proposals[:, 0]) > 0).all()
    assert [0, 103] in proposals.tolist()  # longer than the video: the whole video
    assert [93, 103] in proposals.tolist()  # the grid's last window ends at the video's end
    np.testing.assert_array_equal(np.unique(proposals, axis=0).shape, proposals.shape)


def test_bad_inputs():
    video = np.ones((50, 8))
    with pytest.raises(ValueError, match="sentence_features"):
        zero_shot_cosine_baseline(video, np.ones((2, 9)), 0.2)
    with pytest.raises(ValueError, match="top_k"):
        zero_shot_cosine_baseline(video, np.ones(8), 0.2, top_k=0)
    with pytest.raises(ValueError, match="not both"):
        zero_shot_cosine_baseline(video, np.ones(8), 0.2, window_lengths=[5], window_lengths_s=[1.0])
    with pytest.raises(ValueError, match="window_lengths_s"):
        zero_shot_cosine_baseline(video, np.ones(8), 0.2, window_lengths_s=[-1.0])
    with pytest.raises(ValueError, match="finite"):
        zero_shot_cosine_baseline(np.full((5, 8), np.nan), np.ones(8), 0.2)
    with pytest.raises(ValueError, match="nms_threshold"):
        greedy_temporal_nms(np.zeros((2, 2)), np.zeros(2), 1.5)


def test_the_synthetic_benchmark_defeats_copying(tmp_path):
    """Zero-shot cosine matching finds planted copies (R@1 = 1) but does poorly on the benchmark, whose sentence
    features are not copies of the moments' content."""
    paths = make_synthetic_mad(
        tmp_path, "demo", num_videos=4, splits={"train": 1, "test": 3}, video_minutes=(4.0, 5.0), queries_per_video=20
    )
    dataset = load_synthetic_mad(paths["root"])
    metrics = evaluate_zero_shot(dataset["test"], return_predictions=True)
    assert metrics["num_queries"] == 60 and metrics["num_videos"] == 3
    assert set(metrics["predictions"]) == set(dataset["test"]["query_id"])
    assert metrics["R@1 IoU=0.5"] < 0.3 and metrics["R@5 IoU=0.5"] < 0.5

    rng = np.random.default_rng(3)
    video, sentences, references = _planted(rng, num_frames=1500, dim=64)
    planted = compute_grounding_metrics(
        [p[:, :2] for p in zero_shot_cosine_baseline(video, sentences, 0.2)], references
    )
    assert planted["R@1 IoU=0.5"] - metrics["R@1 IoU=0.5"] > 0.6

    # Matching the true signal direction g(text) instead (an oracle that learned g) is far better: the benchmark is
    # solvable from the text.
    oracle = load_mad(
        paths["annotations_dir"],
        paths["video_features"],
        paths["text_features"],
        sentence_features=write_signal_features(paths["root"]),
        splits=["test"],
    )
    oracle_metrics = evaluate_zero_shot(oracle["test"])
    assert oracle_metrics["R@1 IoU=0.3"] > metrics["R@1 IoU=0.3"] + 0.4

    ext = evaluate_zero_shot(dataset["test"], reference="ext_timestamps", nms_threshold=0.3)
    assert 0.0 <= ext["R@1 IoU=0.5"] <= 1.0
    with pytest.raises(ValueError, match="without sentence features"):
        plain = load_mad(paths["annotations_dir"], paths["video_features"], paths["text_features"])
        evaluate_zero_shot(plain["test"])
