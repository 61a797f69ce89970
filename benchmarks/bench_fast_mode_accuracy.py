"""Fast-mode accuracy: the rankings of the bfloat16 engine (and, with --compile, of the compiled engine) against the
exact float32 engine, scored with the official metric, on the synthetic benchmark and on the parity fixtures.

    python benchmarks/bench_fast_mode_accuracy.py [--preset demo] [--model DIR] [--output outputs/fast_mode_accuracy]
        [--compile] [--goal-points 0.1] [--threads N] [--device cpu] [--max-test-videos N] [--skip-synthetic]
        [--skip-fixtures]

Synthetic benchmark: writes the preset's benchmark (`rgnet_hf.synthetic.benchmark`, reused when `--data` already
holds it), trains the model of `rgnet-hf demo --features` on it with the demo's recipe (`--preset standard`: the
reduced model of benchmarks/synthetic_comparison.py, `--epochs` 4 by default) unless `--model` names a trained model
folder, then grounds every test query with each mode. The exact mode is also checked against
`rgnet_hf.evaluation.evaluate_model`.
Parity fixtures (tests/fixtures): the converted official model of `mad_tiny` and `ego4d_tiny` on each fixture's
long-video simulation, 4 queries with ground-truth moments; a model with random weights, so the recalls measure
agreement between the modes, not quality (`ego4d_pretrain_tiny` has the same weights, video and options as
`ego4d_tiny`, so it is not repeated).

Modes: `exact` (float32, the default engine: the reference of the comparison), `bf16` (`model.to(torch.bfloat16)`, on
CUDA with TF32 for the float32 leftovers), `fp16` (`model.to(torch.float16)`), `bf16_rescored` and `fp16_rescored`
(`RGNetGroundingEngine.with_reduced_precision_scoring`: the reduced-precision copy scores every window, the float32
model re-scores the best top-k + 10 and decodes the best top-k of them), with --compile also `compile` (float32,
`compile=True`) and `bf16_compile`. For each mode and benchmark: every R@K at IoU of the official metric, mIoU and
window recall in points (%), the difference to the exact mode in points, whether every R@K (moment and window) is within
`--goal-points`, and agreement figures: best window equal, decoded window set equal, top-1 moment IoU with the exact
mode's, rank correlation of the window scores, queries whose hit at some (K, IoU) changed. One query moves a recall by
`points_per_query` = 100 / queries, so on these sizes a recall is within 0.1 point only if no hit changed. Prints one
JSON object (`within_goal`: per benchmark and mode); the training log goes to stderr.

Measured durations on the 2-core CPU with `--threads 1` (no native bfloat16): the fixtures take under 10 s (about
30 s more with --compile); the demo preset writes its data in 1 s, trains in about 5 minutes (282 s) and grounds
its 96 test queries in 4 s (exact), 25 s (bf16) and 24 s (fp16); with `--compile` the compiled float32 and bf16
engines take 40 s and 50 s, compilation included (about 3 minutes for the whole run with a trained model).
`--model outputs/fast_mode_accuracy/run/final` reuses the trained model. The standard preset (600 test queries on
20 to 30 minute videos, 512-d features) is meant for a GPU: on CPU its training alone takes tens of minutes, and
`--max-test-videos` limits the evaluation.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from rgnet_hf import RGNetForVideoGrounding, RGNetGroundingEngine
from rgnet_hf.evaluation import ground_evaluation_video
from rgnet_hf.evaluation.metrics import (
    EVALUATION_PRESETS,
    compute_grounding_metrics,
    per_query_hits,
    temporal_iou,
    window_recall,
)

REPOSITORY = Path(__file__).resolve().parent.parent
FIXTURES = REPOSITORY / "tests" / "fixtures"
FIXTURE_NAMES = ("mad_tiny", "ego4d_tiny")
MODES = ("exact", "bf16", "fp16", "bf16_rescored", "fp16_rescored", "compile", "bf16_compile")
REDUCED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ------------------------------------------------------------------------------------------------------------------
# grounding and comparison


def engine_for_mode(model: RGNetForVideoGrounding, mode: str, **engine_kwargs: Any) -> RGNetGroundingEngine:
    """The engine of one mode on a copy of the float32 `model` (bfloat16 for the bf16 modes, float16 for fp16; the
    `_rescored` modes score every window with such a copy and re-score and decode the best ones in float32)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
    copied = copy.deepcopy(model).eval()
    dtype = REDUCED_DTYPES.get(mode.split("_")[0])
    if mode.endswith("_rescored"):
        return RGNetGroundingEngine.with_reduced_precision_scoring(copied, dtype, **engine_kwargs)
    if dtype is not None:
        copied = copied.to(dtype)
    return RGNetGroundingEngine(copied, compile=mode.endswith("compile"), **engine_kwargs)


def query_record(result, reference: list[float], gt_windows: list[int]) -> dict[str, Any]:
    """What the comparison reads of one query's [`VideoGroundingResult`]: the ranked moments, the window order, each
    window's score (indexed by window, as the result holds them) and the ground truth."""
    return {
        "moments": np.asarray(result.moments, dtype=np.float64),
        "window_order": np.asarray(result.window_order),
        "window_scores": np.asarray(result.window_scores, dtype=np.float64),
        "reference": [float(t) for t in reference],
        "gt_windows": list(gt_windows),
    }


def ground_videos(engine: RGNetGroundingEngine, videos, max_videos: int | None = None) -> list[dict[str, Any]]:
    """Ground every query of an [`EvaluationVideoDataset`] as `rgnet_hf.evaluation.evaluate_model` does; one record per
    query, in video order."""
    records = []
    for index in range(len(videos) if max_videos is None else min(max_videos, len(videos))):
        video = videos[index]
        for (result, windows), timestamps in zip(ground_evaluation_video(engine, video), video["timestamps"]):
            records.append(query_record(result, timestamps, windows))
    return records


def recall_metrics(records: list[dict[str, Any]], preset: str) -> dict[str, float]:
    """R@K at IoU, mIoU and window recall (fractions), as `evaluate_model` computes them."""
    metrics = compute_grounding_metrics([r["moments"] for r in records], [r["reference"] for r in records], preset)
    metrics.update(
        window_recall(
            [r["window_order"] for r in records],
            [r["gt_windows"] for r in records],
            ks=EVALUATION_PRESETS[preset].window_ks,
        )
    )
    return metrics


def _hits(records: list[dict[str, Any]], preset: str) -> np.ndarray:
    evaluation = EVALUATION_PRESETS[preset]
    return per_query_hits(
        [r["moments"] for r in records],
        [r["reference"] for r in records],
        evaluation.ks,
        evaluation.iou_thresholds,
        evaluation.iou_dtype,
    ).reshape(len(records), -1)


def _window_hits(records: list[dict[str, Any]], preset: str) -> np.ndarray:
    ks = np.asarray(EVALUATION_PRESETS[preset].window_ks)
    hits = []
    for record in records:
        found = np.isin(record["window_order"], record["gt_windows"])
        first = int(np.argmax(found)) if found.any() else len(found)
        hits.append(first < ks)
    return np.asarray(hits)


def _rank_correlations(reference: list[dict[str, Any]], fast: list[dict[str, Any]]) -> dict[str, float | None]:
    spearman, kendall = [], []
    for a, b in zip(reference, fast):
        if len(a["window_scores"]) < 2 or np.ptp(a["window_scores"]) == 0 or np.ptp(b["window_scores"]) == 0:
            continue  # one window, or constant scores: no order to correlate
        spearman.append(stats.spearmanr(a["window_scores"], b["window_scores"]).statistic)
        kendall.append(stats.kendalltau(a["window_scores"], b["window_scores"]).statistic)
    if not spearman:
        return {"spearman_mean": None, "spearman_min": None, "kendall_mean": None, "kendall_min": None}
    return {
        "spearman_mean": round(float(np.mean(spearman)), 6),
        "spearman_min": round(float(np.min(spearman)), 6),
        "kendall_mean": round(float(np.mean(kendall)), 6),
        "kendall_min": round(float(np.min(kendall)), 6),
    }


def compare_modes(
    reference: list[dict[str, Any]],
    fast: list[dict[str, Any]],
    preset: str,
    goal_points: float,
    top_k_windows: int,
) -> dict[str, Any]:
    """The fast mode's records against the reference's (the same queries in the same order).

    Returns its metrics in points, each metric's difference to the reference in points (fast - reference), the largest
    absolute R@K difference (moment and window R@K; mIoU is reported but is not an R@K), whether it is within
    `goal_points`, and how the rankings agree query by query.
    """
    if len(reference) != len(fast) or not reference:
        raise ValueError(f"need the same, non-zero number of queries, got {len(reference)} and {len(fast)}")
    for a, b in zip(reference, fast):
        if a["reference"] != b["reference"]:
            raise ValueError("the two record lists are not the same queries in the same order")
    ours, theirs = recall_metrics(fast, preset), recall_metrics(reference, preset)
    diff = {key: 100 * (ours[key] - theirs[key]) for key in theirs}
    recall_keys = [key for key in diff if key.startswith(("R@", "window R@"))]
    largest = max(abs(diff[key]) for key in recall_keys)
    top1_iou = np.array(
        [
            float(temporal_iou(b["moments"][:1, :2], a["moments"][0, :2])[0])
            if len(a["moments"]) and len(b["moments"])
            else 0.0
            for a, b in zip(reference, fast)
        ]
    )
    changed = (_hits(reference, preset) != _hits(fast, preset)).any(1) | (
        _window_hits(reference, preset) != _window_hits(fast, preset)
    ).any(1)
    return {
        "metrics_points": {key: round(100 * value, 4) for key, value in ours.items()},
        "diff_points": {key: round(value, 4) for key, value in diff.items()},
        "max_abs_recall_diff_points": round(largest, 4),
        "within_goal": bool(largest <= goal_points + 1e-9),
        "queries_with_changed_hits": int(changed.sum()),
        "top1_window_agreement": float(
            np.mean([a["window_order"][0] == b["window_order"][0] for a, b in zip(reference, fast)])
        ),
        "decoded_windows_agreement": float(
            np.mean(
                [
                    set(a["window_order"][:top_k_windows].tolist()) == set(b["window_order"][:top_k_windows].tolist())
                    for a, b in zip(reference, fast)
                ]
            )
        ),
        "top1_moment_iou": {
            "mean": round(float(top1_iou.mean()), 6),
            "min": round(float(top1_iou.min()), 6),
            "fraction_at_least_0.5": float(np.mean(top1_iou >= 0.5)),
            "fraction_at_least_0.9": float(np.mean(top1_iou >= 0.9)),
        },
        "window_score_rank_correlation": _rank_correlations(reference, fast),
        "max_window_score_diff": float(
            max(np.abs(a["window_scores"] - b["window_scores"]).max() for a, b in zip(reference, fast))
        ),
    }


def run_modes(
    ground, modes: list[str], device: torch.device
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, float]]:
    """`ground(mode)` -> records for each mode; also the seconds each took."""
    records, seconds = {}, {}
    for mode in modes:
        torch.backends.cuda.matmul.allow_tf32 = mode in ("bf16", "bf16_compile")  # float32 work stays exact
        started = time.perf_counter()
        records[mode] = ground(mode)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds[mode] = round(time.perf_counter() - started, 2)
    torch.backends.cuda.matmul.allow_tf32 = False
    return records, seconds


def benchmark_report(
    records: dict[str, list[dict[str, Any]]],
    seconds: dict[str, float],
    preset: str,
    goal_points: float,
    top_k_windows: int,
) -> dict[str, Any]:
    exact = records["exact"]
    report = {
        "num_queries": len(exact),
        "points_per_query": round(100 / len(exact), 4),
        "metric_preset": preset,
        "modes": {
            "exact": {"metrics_points": {k: round(100 * v, 4) for k, v in recall_metrics(exact, preset).items()}}
        },
    }
    for mode, mode_records in records.items():
        if mode != "exact":
            report["modes"][mode] = compare_modes(exact, mode_records, preset, goal_points, top_k_windows)
        report["modes"][mode]["seconds"] = seconds[mode]
    report["within_goal"] = {mode: entry["within_goal"] for mode, entry in report["modes"].items() if mode != "exact"}
    return report


# ------------------------------------------------------------------------------------------------------------------
# the synthetic benchmark


def _trained_model(args, dataset, data_config, output: Path) -> tuple[RGNetForVideoGrounding, dict[str, Any]]:
    from rgnet_hf.apps.demo import DEMO_MODEL, DEMO_TRAINING
    from rgnet_hf.training import TrainingConfig, train

    if args.model:
        return RGNetForVideoGrounding.from_pretrained(args.model).eval(), {"model": args.model, "train_seconds": None}
    if args.preset == "demo":
        model_config = dict(DEMO_MODEL)
        recipe = dict(DEMO_TRAINING)
        if args.epochs is not None:
            recipe["num_epochs"] = args.epochs
    else:
        from rgnet_hf.synthetic.benchmark import COMPARISON_MODEL

        epochs = args.epochs or 4
        model_config = dict(COMPARISON_MODEL)
        recipe = dict(DEMO_TRAINING, num_epochs=epochs, lr_drop_epochs=[max(1, epochs - 1)])
    model_config.update(
        video_feature_size=data_config.video_feature_size,
        text_feature_size=data_config.text_feature_size,
        sentence_feature_size=data_config.video_feature_size,
    )
    recipe.update(model=model_config, output_dir=str(output / "run"), eval_split=None, resume=None)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        summary = train(TrainingConfig.from_dict(recipe), dataset=dataset)
    train_seconds = round(time.perf_counter() - started, 1)
    folder = summary["best_model"] or summary["final_model"]
    info = {"model": folder, "train_seconds": train_seconds, "epochs": recipe["num_epochs"]}
    return RGNetForVideoGrounding.from_pretrained(folder).eval(), info


def synthetic_benchmark(args, modes: list[str], device: torch.device) -> dict[str, Any]:
    from rgnet_hf.data import EvaluationVideoDataset
    from rgnet_hf.evaluation import evaluate_model
    from rgnet_hf.synthetic.benchmark import (
        SyntheticMADConfig,
        load_synthetic_mad,
        make_synthetic_mad,
        read_synthetic_config,
        synthetic_mad_paths,
    )

    output = Path(args.output)
    data_dir = Path(args.data) if args.data else output / f"data_{args.preset}"
    wanted = SyntheticMADConfig.from_preset(args.preset, seed=args.seed)
    started = time.perf_counter()
    if synthetic_mad_paths(data_dir)["config"].is_file():
        if read_synthetic_config(data_dir) != wanted:
            raise ValueError(
                f"{data_dir} holds another synthetic benchmark than preset {args.preset!r}, seed {args.seed}"
            )
    else:
        make_synthetic_mad(data_dir, wanted)
    dataset = load_synthetic_mad(data_dir)
    data_seconds = round(time.perf_counter() - started, 1)
    model, info = _trained_model(args, dataset, wanted, output)
    model = model.to(device)
    videos = EvaluationVideoDataset(dataset["test"], max_text_length=model.config.max_text_length)

    def ground(mode: str) -> list[dict[str, Any]]:
        return ground_videos(engine_for_mode(model, mode), videos, args.max_test_videos)

    records, seconds = run_modes(ground, modes, device)
    preset = model.config.dataset_name
    report = benchmark_report(records, seconds, preset, args.goal_points, model.config.top_k_windows)
    # The exact mode's figures are evaluate_model's: the same engine, the same metric.
    official = evaluate_model(model, videos, max_videos=args.max_test_videos)
    exact = recall_metrics(records["exact"], preset)
    report["exact_max_diff_to_evaluate_model_points"] = max(abs(100 * (official[k] - exact[k])) for k in exact)
    num_videos = len(videos) if args.max_test_videos is None else min(args.max_test_videos, len(videos))
    return {
        "preset": args.preset,
        "seed": args.seed,
        "data": str(data_dir),
        "data_seconds": data_seconds,
        **info,
        "test_videos": num_videos,
        "top_k_windows": model.config.top_k_windows,
        **report,
    }


# ------------------------------------------------------------------------------------------------------------------
# the parity fixtures


def fixture_model(fixture: dict) -> RGNetForVideoGrounding:
    """The converted official model of a parity fixture (rows independent of the batch, as the engine needs)."""
    from rgnet_hf.hub.convert_original_checkpoint import config_from_official_options, convert_state_dict

    config = config_from_official_options(fixture["meta"]["opt"], text_to_video_mask_batch_mixing=False)
    state_dict, _ = convert_state_dict(fixture["state_dict"], config)
    model = RGNetForVideoGrounding(config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def fixture_benchmark(name: str, modes: list[str], device: torch.device, goal_points: float) -> dict[str, Any]:
    fixture = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    simulation = fixture["inference_simulation"]
    options = simulation["opt_used"]
    model = fixture_model(fixture).to(device)
    engine_kwargs = dict(
        top_k_windows=options["topk_window"],
        nms_threshold=options["nms_thd"],
        max_predictions_before_nms=options["max_before_nms"],
        max_predictions=options["max_after_nms"],
    )
    (text, text_mask), sentence = simulation["batch"]["query_feat"], simulation["batch"]["query_cls_feat"]
    queries = simulation["queries"]

    def ground(mode: str) -> list[dict[str, Any]]:
        engine = engine_for_mode(model, mode, **engine_kwargs)
        results = engine.ground(
            simulation["video_feat"], text, text_mask, sentence, seconds_per_feature=simulation["clip_length"]
        )
        return [
            query_record(result, query["timestamps"], simulation["ground_truth_windows"][query["query_id"]])
            for result, query in zip(results, queries)
        ]

    records, seconds = run_modes(ground, modes, device)
    report = benchmark_report(records, seconds, options["dset_name"], goal_points, options["topk_window"])
    return {
        "ground_truth": "the fixture's synthetic moments; random weights: the recalls measure agreement, not quality",
        "num_windows": len(simulation["windows"]),
        "top_k_windows": options["topk_window"],
        **report,
    }


# ------------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=["demo", "standard"], help="synthetic benchmark preset")
    parser.add_argument("--seed", type=int, default=0, help="synthetic benchmark seed")
    parser.add_argument("--model", default=None, help="a trained model folder for the preset (skips training)")
    parser.add_argument("--data", default=None, help="the benchmark folder (written when missing)")
    parser.add_argument("--output", default="outputs/fast_mode_accuracy", help="data and training run go here")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (demo: 18, standard: 4)")
    parser.add_argument("--max-test-videos", type=int, default=None)
    parser.add_argument(
        "--modes", default="bf16,fp16,bf16_rescored,fp16_rescored", help="modes compared with exact (see above)"
    )
    parser.add_argument("--compile", action="store_true", help="add the compile and bf16_compile modes")
    parser.add_argument("--goal-points", type=float, default=0.1, help="largest R@K difference allowed, in points")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-fixtures", action="store_true")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    modes = ["exact"] + [m for m in args.modes.split(",") if m and m != "exact"]
    modes += ["compile", "bf16_compile"] if args.compile else []
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {MODES}")
    report: dict[str, Any] = {
        "benchmark": "fast_mode_accuracy",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__,
        "goal_points": args.goal_points,
        "modes": modes,
    }
    if not args.skip_fixtures:
        report["fixtures"] = {name: fixture_benchmark(name, modes, device, args.goal_points) for name in FIXTURE_NAMES}
    if not args.skip_synthetic:
        report["synthetic"] = synthetic_benchmark(args, modes, device)
    report["within_goal"] = {
        **{name: entry["within_goal"] for name, entry in report.get("fixtures", {}).items()},
        **({"synthetic": report["synthetic"]["within_goal"]} if "synthetic" in report else {}),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
