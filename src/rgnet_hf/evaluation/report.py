"""One split's evaluation report: RGNet's Recall@K at IoU and mIoU next to the zero-shot baseline on the same queries.

This is what `rgnet-hf evaluate` prints and writes. The table covers K 1/5/10/50/100 at IoU 0.1/0.3/0.5/0.7 by
default, a superset of both official tables (MAD: IoU 0.1/0.3/0.5; Ego4D-NLQ: IoU 0.3/0.5), computed with the
official metric of the model's dataset preset (its IoU precision included), so the official cells keep their values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .baselines import evaluate_zero_shot
from .metrics import EVALUATION_PRESETS, EvaluationPreset, recall_key
from .model_evaluation import evaluate_model

__all__ = ["DEFAULT_REPORT_IOU_THRESHOLDS", "DEFAULT_REPORT_KS", "evaluate_split", "format_report_table"]

DEFAULT_REPORT_KS = (1, 5, 10, 50, 100)
DEFAULT_REPORT_IOU_THRESHOLDS = (0.1, 0.3, 0.5, 0.7)


def _check_fits(model, split: Any) -> None:
    """Refuse features the model was not trained on: another frame rate (every time would be off) or feature size."""
    from ..data import get_feature_sources

    sources = get_feature_sources(split)
    if sources is None:
        raise ValueError("the split has no features attached: load it with a feature loader of rgnet_hf.data")
    config = model.config
    rate = sources.seconds_per_feature
    if rate is not None and not math.isclose(float(rate), float(config.seconds_per_feature), rel_tol=1e-6):
        raise ValueError(
            f"the data's features are {rate} s apart but the model reads {config.seconds_per_feature} s per feature: "
            "the moments would be at the wrong times. Evaluate on features extracted at the model's rate (or a "
            "model trained on these)"
        )
    expected_sizes = {"video_feature_dim": config.video_feature_size, "text_feature_dim": config.text_feature_size}
    for name, expected in expected_sizes.items():
        size = getattr(sources, name)
        if size is not None and size != expected:
            raise ValueError(
                f"the data's {name.replace('_dim', '')} size is {size} but the model expects {expected}: evaluate on "
                "features made with the model's encoder"
            )


def evaluate_split(
    model,
    split: Any,
    *,
    ks: Sequence[int] = DEFAULT_REPORT_KS,
    iou_thresholds: Sequence[float] = DEFAULT_REPORT_IOU_THRESHOLDS,
    baseline: bool = True,
    accelerator=None,
    memory_budget_bytes: int = 2 * 2**30,
) -> dict[str, Any]:
    """Evaluate `model` on a split of a `rgnet_hf.data` loader and, on the same queries, the zero-shot baseline.

    Args:
        model ([`RGNetForVideoGrounding`]): the model; its config gives the evaluation preset and the frame rate.
        split (`datasets.Dataset`): an annotated split with features attached (e.g. `load_mad(...)["test"]`).
        ks, iou_thresholds: the table's K values and IoU thresholds.
        baseline (`bool`): also run [`zero_shot_cosine_baseline`] (needs sentence features; skipped with a reason
            when the split has none).
        accelerator (`accelerate.Accelerator`, *optional*): shard the videos over the launched processes.

    Returns:
        `{"preset", "ks", "iou_thresholds", "num_queries", "num_videos", "rgnet": {metric: value},
        "zero_shot": {metric: value} or None, "zero_shot_skipped": reason or None}`, metrics as fractions in [0, 1]
        named `"R@{K} IoU={t}"` and `"mIoU"`.
    """
    from ..data import EvaluationVideoDataset

    _check_fits(model, split)
    if len(split) == 0:
        raise ValueError("the split has no query to evaluate")
    official = EVALUATION_PRESETS[model.config.dataset_name]
    preset = EvaluationPreset(
        name=official.name,
        ks=tuple(int(k) for k in ks),
        iou_thresholds=tuple(float(t) for t in iou_thresholds),
        window_ks=official.window_ks,
        iou_dtype=official.iou_dtype,
    )
    videos = EvaluationVideoDataset(split, max_text_length=model.config.max_text_length)
    rgnet = evaluate_model(model, videos, accelerator, memory_budget_bytes=memory_budget_bytes, preset=preset)
    zero_shot, skipped = None, None
    if baseline:
        try:
            zero_shot = evaluate_zero_shot(videos, preset, seconds_per_feature=model.config.seconds_per_feature)
        except ValueError as error:
            if "sentence features" not in str(error):
                raise
            skipped = "the split has no sentence features"
    num_queries = int(rgnet.pop("num_queries", 0))
    if zero_shot is not None:
        zero_shot.pop("num_queries", None)
        zero_shot.pop("num_videos", None)
    return {
        "preset": official.name,
        "ks": list(preset.ks),
        "iou_thresholds": list(preset.iou_thresholds),
        "num_queries": num_queries,
        "num_videos": len(videos),
        "rgnet": rgnet,
        "zero_shot": zero_shot,
        "zero_shot_skipped": skipped,
    }


def format_report_table(report: dict[str, Any]) -> str:
    """The report as a text table, in %: a row per IoU threshold and method, a column per K; then mIoU."""
    rows = [("RGNet", report["rgnet"])]
    if report["zero_shot"] is not None:
        rows.append(("zero-shot", report["zero_shot"]))
    name_width = max(len("method"), *(len(name) for name, _ in rows))
    headers = [f"R@{k}" for k in report["ks"]]
    widths = [max(len(h), 6) for h in headers]
    lines = [" ".join(["IoU ", "method".ljust(name_width)] + [h.rjust(w) for h, w in zip(headers, widths)])]
    for threshold in report["iou_thresholds"]:
        for name, metrics in rows:
            cells = [f"{100 * metrics[recall_key(k, threshold)]:.2f}".rjust(w) for k, w in zip(report["ks"], widths)]
            lines.append(" ".join([f"{threshold:<4g}", name.ljust(name_width)] + cells))
    lines.append("mIoU " + ", ".join(f"{name} {100 * metrics['mIoU']:.2f}" for name, metrics in rows))
    lines.append(f"{report['num_queries']} queries in {report['num_videos']} videos; preset {report['preset']}; in %")
    if report["zero_shot_skipped"]:
        lines.append(f"zero-shot baseline skipped: {report['zero_shot_skipped']}")
    return "\n".join(lines)
