"""Long-video temporal grounding metric (R@K at temporal-IoU thresholds, top-1 mIoU) as an `evaluate` module.

The implementation lives in `rgnet_hf.evaluation.metrics`; this module only wraps it for `evaluate.load`.
"""

import datasets
import evaluate

from rgnet_hf.evaluation.metrics import EVALUATION_PRESETS, compute_grounding_metrics

_DESCRIPTION = """
Recall at K at temporal-IoU thresholds (R@K, IoU=t) and top-1 mean IoU for temporal grounding in long videos, with
the rules of the official RGNet / CONE evaluators for MAD and Ego4D-NLQ:

- a query is a hit at (K, t) when one of its first K ranked predictions has IoU with the ground truth strictly greater
  than t (IoU exactly equal to t is not a hit);
- recall is the mean over the evaluated queries; a query with fewer than K predictions is scored on what it has, and
  a query with no prediction is a miss;
- IoU = intersection / hull length (the official formula); a zero-length ground truth has IoU 0 with every
  prediction, so no output is NaN;
- mIoU is the mean IoU of the top-1 prediction (0 for a query without predictions).

Configurations: "mad" (K in 1, 5, 10, 50, 100; IoU 0.1, 0.3, 0.5) and "ego4d" (K in 1, 5, 10, 50, 100; IoU 0.3,
0.5). "default" is "mad".

Arithmetic: "mad" reproduces the official MAD evaluator, which computes the IoU and compares it with the thresholds in
float32 (times rounded to float32, every step in float32); "ego4d" follows its evaluator in float64. An IoU at a
threshold can count differently in the two precisions; pass `iou_dtype="float64"` (or "float32") to choose.

Values are fractions in [0, 1]: multiply by 100 for the percentages of the papers.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `list` of `float`): for each query, its predicted moments ranked best first, each
        `[start, end]` (further columns, such as scores, are ignored). A query may have no prediction.
    references (`list` of `list` of `float`): for each query, its ground-truth moment `[start, end]`, in the same unit.
    ks (`list` of `int`, *optional*): the K values; defaults to the configuration's.
    iou_thresholds (`list` of `float`, *optional*): the IoU thresholds; defaults to the configuration's.
    iou_dtype (`str`, *optional*): "float32" or "float64", the precision of the IoU and of the threshold
        comparison; defaults to the configuration's ("float32" for "mad", "float64" for "ego4d").

Returns:
    `dict`: `"R@{K} IoU={t}"` for every K and threshold (e.g. `"R@1 IoU=0.3"`), and `"mIoU"`, all floats in [0, 1].

Examples:
    >>> metric = evaluate.load("metrics/long_video_grounding", "ego4d")
    >>> results = metric.compute(predictions=[[[0.0, 10.0], [2.0, 4.0]]], references=[[0.0, 5.0]], ks=[1, 2])
    >>> # Top-1 IoU is 0.5: a hit at IoU > 0.3, not at IoU > 0.5 (strict); rank 2 has IoU 0.4.
    >>> results["R@1 IoU=0.3"], results["R@2 IoU=0.5"], results["mIoU"]
    (1.0, 0.0, 0.5)
"""

_CITATION = """
@inproceedings{hannan2024rgnet,
  title     = {RGNet: A Unified Clip Retrieval and Grounding Network for Long Videos},
  author    = {Hannan, Tanveer and Islam, Md Mohaiminul and Seidl, Thomas and Bertasius, Gedas},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2024}
}
"""

_CONFIG_ALIASES = {"default": "mad"}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LongVideoGrounding(evaluate.Metric):
    """R@K at temporal-IoU thresholds and top-1 mIoU for MAD and Ego4D-NLQ (see `rgnet_hf.evaluation.metrics`)."""

    def _info(self):
        preset_name = _CONFIG_ALIASES.get(self.config_name, self.config_name)
        if preset_name not in EVALUATION_PRESETS:
            raise ValueError(
                f"Unknown configuration {self.config_name!r} for long_video_grounding; choose one of "
                f"{sorted(EVALUATION_PRESETS)} (or 'default', which is 'mad')."
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # float64 so that spans reach the IoU exactly as given; the IoU's own precision is `iou_dtype`.
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
        )

    def _compute(self, predictions, references, ks=None, iou_thresholds=None, iou_dtype=None):
        preset = EVALUATION_PRESETS[_CONFIG_ALIASES.get(self.config_name, self.config_name)]
        return compute_grounding_metrics(
            predictions, references, preset, ks=ks, iou_thresholds=iou_thresholds, iou_dtype=iou_dtype
        )
