"""Evaluating a model on a grounding dataset: every query of every video, sharded over processes by work."""

from __future__ import annotations

import heapq
import logging
import math
import time
from typing import Any

import torch

from ..inference_rgnet import RGNetGroundingEngine
from ..modeling_rgnet import RGNetForVideoGrounding
from ..windowing import ground_truth_windows, num_windows, resolve_window_stride
from .metrics import (
    EVALUATION_PRESETS,
    EvaluationPreset,
    compute_grounding_metrics,
    recall_key,
    window_recall,
    window_recall_key,
)

logger = logging.getLogger(__name__)


def balanced_video_assignment(costs: list[float], num_processes: int) -> list[list[int]]:
    """Split videos across processes with balanced work: greedy longest-processing-time assignment.

    Videos go in order of decreasing cost (ties: lower index first) to the process with the least work so far (ties:
    lower process index), so every process computes the same split. The busiest process gets at most 4/3 of the
    optimal split's largest load. Returns, per process, the indices of its videos in increasing order.
    """
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be an integer >= 1, got {num_processes!r}")
    for index, cost in enumerate(costs):
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
            raise ValueError(f"the cost of video {index} must be a finite number >= 0, got {cost!r}")
    loads = [(0.0, process) for process in range(num_processes)]  # already a heap
    assignment: list[list[int]] = [[] for _ in range(num_processes)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, process = heapq.heappop(loads)
        assignment[process].append(index)
        heapq.heappush(loads, (load + costs[index], process))
    return [sorted(indices) for indices in assignment]


def _evaluation_cost(videos, index: int, stride: int) -> float:
    """Windows x queries of a video, from the feature store's shape (no features read); 1 when unknown."""
    counts = getattr(videos, "num_frames_and_queries", None)
    if counts is None:
        return 1.0
    num_frames, num_queries = counts(index)
    return float(num_windows(max(num_frames, 1), stride) * num_queries)


def ground_evaluation_video(engine: RGNetGroundingEngine, video: dict[str, Any]) -> list[tuple[Any, list[int]]]:
    """Ground every query of one [`EvaluationVideoDataset`] item: per query, the engine's
    [`VideoGroundingResult`] and the windows its ground-truth moment overlaps (for window recall)."""
    config = engine.model.config
    text_features = list(video["text_features"])
    results = engine.ground(video["video_features"], text_features, sentence_features=video["sentence_features"])
    num_video_windows = len(results[0].window_order)
    return [
        (
            result,
            ground_truth_windows(
                float(timestamps[0]),
                float(timestamps[1]),
                config.seconds_per_feature,
                config.window_stride,
                num_video_windows,
            ),
        )
        for result, timestamps in zip(results, video["timestamps"])
    ]


@torch.no_grad()
def evaluate_model(
    model: RGNetForVideoGrounding,
    videos,
    accelerator=None,
    memory_budget_bytes: int = 2 * 2**30,
    max_videos: int | None = None,
    window_scorer: RGNetForVideoGrounding | None = None,
    throughput: dict[str, Any] | None = None,
    preset: str | EvaluationPreset | None = None,
) -> dict[str, float]:
    """Ground every query of `videos` (an [`EvaluationVideoDataset`]) and score the fused rankings with the
    official metric (and window recall). Every process gets the metrics.

    With several processes, the videos are assigned by [`balanced_video_assignment`] on windows x queries, and the
    results of all processes are gathered once at the end. `window_scorer` ranks the windows with another model (a
    two-stage pipeline). A `throughput` dict is filled with each process's windows (windows x queries), seconds and
    windows/s: `{"per_process": [...], "windows_per_second": total windows / slowest process's seconds}`.
    `preset` (default: the model's `dataset_name`) sets the K values and IoU thresholds of the metrics.
    """
    was_training = model.training
    model.eval()
    config = model.config
    engine = RGNetGroundingEngine(model, memory_budget_bytes=memory_budget_bytes, window_scorer=window_scorer)
    indices = list(range(len(videos) if max_videos is None else min(max_videos, len(videos))))
    num_processes = 1 if accelerator is None else accelerator.num_processes
    if num_processes > 1:
        stride = resolve_window_stride(config.window_length, config.window_stride)
        costs = [_evaluation_cost(videos, index, stride) for index in indices]
        indices = [indices[i] for i in balanced_video_assignment(costs, num_processes)[accelerator.process_index]]
    records = []
    windows_done = 0
    started = time.perf_counter()
    for index in indices:
        video = videos[index]
        if video["timestamps"] is None:
            raise ValueError(f"video {video['video_id']} has no ground truth: evaluate on an annotated split")
        grounded = ground_evaluation_video(engine, video)
        windows_done += len(grounded[0][0].window_order) * len(grounded)
        for query_id, (result, windows), timestamps in zip(video["query_ids"], grounded, video["timestamps"]):
            records.append(
                {
                    "video_index": index,
                    "query_id": query_id,
                    "moments": result.moments.tolist(),
                    "reference": [float(t) for t in timestamps],
                    "window_order": result.window_order.tolist(),
                    "gt_windows": list(windows),
                }
            )
    seconds = time.perf_counter() - started
    process_index = 0 if accelerator is None else accelerator.process_index
    shard = {
        "process": process_index,
        "videos": len(indices),
        "windows": windows_done,
        "seconds": seconds,
        "windows_per_second": windows_done / seconds if seconds > 0 else 0.0,
        "records": records,
    }
    shards = [shard]
    if num_processes > 1:
        from accelerate.utils import gather_object

        shards = gather_object([shard])  # the one collective of the evaluation
    shards = sorted({s["process"]: s for s in shards}.values(), key=lambda s: s["process"])  # gather may pad
    # The single-process order (by video), so the metrics are summed in the same order however many processes ran.
    records = sorted((record for s in shards for record in s.pop("records")), key=lambda r: r["video_index"])
    if was_training:
        model.train()
    slowest = max(s["seconds"] for s in shards)
    total_windows = sum(s["windows"] for s in shards)
    if throughput is not None:
        throughput.clear()
        throughput["per_process"] = shards
        throughput["windows_per_second"] = total_windows / slowest if slowest > 0 else 0.0
    logger.info(
        "evaluation: %d windows in %.2f s; windows/s per process: %s",
        total_windows,
        slowest,
        ", ".join(f"{s['process']}: {s['windows_per_second']:.1f}" for s in shards),
    )
    if not records:
        return {}
    records = list({r["query_id"]: r for r in records}.values())
    if preset is None:
        preset = config.dataset_name
    if isinstance(preset, str):
        preset = EVALUATION_PRESETS[preset]
    metrics = compute_grounding_metrics(
        [r["moments"] for r in records], [r["reference"] for r in records], preset=preset
    )
    metrics.update(
        window_recall(
            [r["window_order"] for r in records],
            [r["gt_windows"] for r in records],
            ks=preset.window_ks,
        )
    )
    metrics["num_queries"] = len(records)
    return metrics


def evaluation_metric_names(dataset_name: str) -> list[str]:
    """The keys [`evaluate_model`] returns for a dataset (`"mad"` or `"ego4d"`)."""
    preset = EVALUATION_PRESETS[dataset_name]
    names = [recall_key(k, t) for k in preset.ks for t in preset.iou_thresholds] + ["mIoU"]
    return names + [window_recall_key(k) for k in preset.window_ks] + ["num_queries"]


__all__ = [
    "balanced_video_assignment",
    "evaluate_model",
    "evaluation_metric_names",
    "ground_evaluation_video",
]
