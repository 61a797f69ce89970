"""Scoring grounding results: the official Recall@K at IoU and mIoU ([`compute_grounding_metrics`]), evaluating a
model on a dataset ([`evaluate_model`]) and the zero-shot sentence-to-frame baseline ([`evaluate_zero_shot`])."""

from .baselines import evaluate_zero_shot, greedy_temporal_nms, sliding_window_proposals, zero_shot_cosine_baseline
from .metrics import (
    EGO4D_PRESET,
    EVALUATION_PRESETS,
    MAD_PRESET,
    EvaluationPreset,
    compute_grounding_metrics,
    mean_iou_top1,
    recall_at_k,
    recall_key,
    temporal_iou,
    window_recall,
    window_recall_key,
)
from .model_evaluation import (
    balanced_video_assignment,
    evaluate_model,
    evaluation_metric_names,
    ground_evaluation_video,
)

__all__ = [
    "EGO4D_PRESET",
    "EVALUATION_PRESETS",
    "MAD_PRESET",
    "EvaluationPreset",
    "balanced_video_assignment",
    "compute_grounding_metrics",
    "evaluate_model",
    "evaluate_zero_shot",
    "evaluation_metric_names",
    "greedy_temporal_nms",
    "ground_evaluation_video",
    "mean_iou_top1",
    "recall_at_k",
    "recall_key",
    "sliding_window_proposals",
    "temporal_iou",
    "window_recall",
    "window_recall_key",
    "zero_shot_cosine_baseline",
]
