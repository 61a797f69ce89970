"""`rgnet-hf demo`: the own-data path end to end, offline, on two CPU cores in a few minutes.

[`run_demo`] writes a small corpus of real video files with sentences ([`rgnet_hf.synthetic.video_corpus`]), builds
a tiny CLIP offline, prepares the corpus with `rgnet_hf.data.prepare_dataset` (the code behind `rgnet-hf prepare`),
trains a small RGNet with the real training loop, evaluates it on the held-out test videos next to the zero-shot
baseline, grounds the sentences of a held-out video file with `pipeline("video-grounding")` and draws the timeline.

[`run_feature_demo`] (`rgnet-hf demo --features`) does the same on the feature-level synthetic benchmark in MAD's
file format, without video files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

# A small RGNet for the 64-d features of the "demo" benchmark: windows of 64 frames (12.8 s at 5 fps).
DEMO_MODEL = {
    "video_feature_size": 64,
    "text_feature_size": 64,
    "sentence_feature_size": 64,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "window_length": 64,
    "max_text_length": 10,
    "num_decoder_layers": 3,
    "input_dropout": 0.1,
    "top_k_windows": 10,
}

DEMO_TRAINING = {
    "preset": "mad",
    "learning_rate": 1e-3,
    "lr_drop_epochs": [15],
    "num_epochs": 18,
    "batch_size": 8,
    "num_workers": 0,
    "eval_every_epochs": 0,
    "log_with": None,
    "log_every_steps": 10,
    "seed": 2020,
    "resume": None,
}


def _table(rows: dict[str, dict[str, float]], keys: list[str]) -> str:
    header = "| method | " + " | ".join(keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 1)]
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * metrics[k]:.1f}" for k in keys) + " |")
    return "\n".join(lines)


def _fit_batch_to(recipe: dict[str, Any], train_split) -> None:
    """A small corpus may hold fewer training queries than one batch, and the loop refuses a run that would make no
    step: the demo's batch is at most the training split."""
    recipe["batch_size"] = min(recipe["batch_size"], len(train_split))


def run_feature_demo(
    output_dir: str | Path = "rgnet-demo", num_epochs: int | None = None, seed: int = 0, num_queries_shown: int = 6
) -> dict[str, Any]:
    """The demo on the feature-level synthetic benchmark; returns the paths of the picture and the table and the
    metrics."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    from ..data import EvaluationVideoDataset
    from ..evaluation import evaluate_model
    from ..evaluation.baselines import evaluate_zero_shot
    from ..inference_rgnet import RGNetGroundingEngine
    from ..modeling_rgnet import RGNetForVideoGrounding
    from ..synthetic.benchmark import load_synthetic_mad, make_synthetic_mad
    from ..training import TrainingConfig, train
    from .timeline import plot_timeline

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    print(f"[1/5] Writing the synthetic benchmark (MAD file format) to {output_dir / 'data'}")
    make_synthetic_mad(output_dir / "data", "demo", seed=seed)
    dataset = load_synthetic_mad(output_dir / "data")
    print("      " + ", ".join(f"{name}: {len(split)} queries" for name, split in dataset.items()))

    recipe = dict(DEMO_TRAINING, model=dict(DEMO_MODEL), output_dir=str(output_dir / "run"), eval_split=None)
    if num_epochs is not None:
        recipe["num_epochs"] = num_epochs
    _fit_batch_to(recipe, dataset["train"])
    print(f"[2/5] Training a small RGNet ({recipe['num_epochs']} epochs) with rgnet_hf.training.train")
    summary = train(TrainingConfig.from_dict(recipe), dataset=dataset)
    model_dir = summary["best_model"] or summary["final_model"]
    model = RGNetForVideoGrounding.from_pretrained(model_dir).eval()

    print("[3/5] Evaluating on the test split (the official Recall@K at IoU)")
    test_videos = EvaluationVideoDataset(dataset["test"], max_text_length=model.config.max_text_length)
    rgnet_metrics = evaluate_model(model, test_videos)
    zero_shot_metrics = evaluate_zero_shot(dataset["test"], "mad")
    keys = ["R@1 IoU=0.3", "R@1 IoU=0.5", "R@5 IoU=0.3", "R@5 IoU=0.5"]
    table = _table({"RGNet (trained in this demo)": rgnet_metrics, "zero-shot cosine": zero_shot_metrics}, keys)
    table_path = output_dir / "metrics.md"
    table_path.write_text(
        f"Test split of the synthetic demo benchmark ({rgnet_metrics['num_queries']} queries), in %.\n\n{table}\n"
    )
    with open(output_dir / "metrics.json", "w") as handle:
        json.dump(
            {"rgnet": rgnet_metrics, "zero_shot_cosine": zero_shot_metrics, "training": summary},
            handle,
            indent=2,
            default=float,
        )

    print("[4/5] Grounding the queries of a test video")
    video = test_videos[0]
    shown = slice(0, num_queries_shown)
    engine = RGNetGroundingEngine(model)
    text = list(video["text_features"][shown])
    results = engine.ground(video["video_features"], text, sentence_features=video["sentence_features"][shown])
    picture = plot_timeline(
        output_dir / "timeline.png",
        video["duration"],
        [r.moments for r in results],
        ground_truth=video["timestamps"][shown],
        labels=video["queries"][shown],
        scores=[r.scores for r in results],
        title=f"{video['video_id']}: true moments (green) and RGNet's top-3 predictions (orange)",
    )
    for query, result, truth in zip(video["queries"][shown], results, video["timestamps"][shown]):
        best = result.moments[0]
        print(
            f"      {query[:48]:<48} true [{truth[0]:7.1f}, {truth[1]:7.1f}] s   "
            f"predicted [{best[0]:7.1f}, {best[1]:7.1f}] s"
        )

    print(f"[5/5] Done in {time.perf_counter() - started:.0f} s.\n\n{table}\n")
    print(f"Timeline picture: {picture}")
    print(f"Metric table:     {table_path}")
    print(f"Trained model:    {model_dir}  (rgnet-hf ground --model {model_dir} ...)")
    return {
        "picture": str(picture),
        "table": str(table_path),
        "rgnet": rgnet_metrics,
        "zero_shot_cosine": zero_shot_metrics,
        "model": model_dir,
    }


# The video demo: a small RGNet for the tiny CLIP's 24-d features at one feature per second; the window length and
# stride come from the prepared data by the window rule, the feature sizes and encoder from its manifest.
VIDEO_DEMO_MODEL = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "num_decoder_layers": 3,
    "max_text_length": 12,
    "input_dropout": 0.1,
    "top_k_windows": 5,
}

VIDEO_DEMO_TRAINING = {
    "preset": "mad",
    "learning_rate": 1e-3,
    "num_epochs": 30,
    "batch_size": 8,
    "num_workers": 0,
    "eval_every_epochs": 0,
    "log_with": None,
    "log_every_steps": 50,
    "seed": 2020,
    "resume": None,
}

VIDEO_DEMO_SPLITS = "train=0.7,validation=0.1,test=0.2"
VIDEO_DEMO_SECONDS_PER_FEATURE = 1.0
# Frames of this many training videos calibrate the tiny CLIP (see `build_tiny_clip`); test videos are never used.
VIDEO_DEMO_CALIBRATION_VIDEOS = 6


def _calibration_images(videos: list[Path], splits: dict[str, str], count: int) -> list:
    from ..video_decoding import decode_frames, sample_frames

    images = []
    for path in [video for video in videos if splits[video.stem] == "train"][:count]:
        images.extend(image for _, image in sample_frames(decode_frames(path), 2.0, source=str(path)))
    return images


def run_demo(
    output_dir: str | Path = "rgnet-demo",
    num_epochs: int | None = None,
    seed: int = 0,
    corpus=None,
    queries: list[str] | None = None,
) -> dict[str, Any]:
    """Videos and sentences in, a trained RGNet and its moments in a held-out video out.

    Args:
        output_dir: where the corpus (`corpus/`), the tiny CLIP (`clip/`), the prepared data (`data/`), the training
            run (`run/`), the metric table and the timeline picture go.
        num_epochs: training epochs (default `VIDEO_DEMO_TRAINING["num_epochs"]`).
        seed: seed of the corpus.
        corpus: a `VideoCorpusConfig` (default: 40 videos of 150 to 210 s).
        queries: sentences to ground in the held-out video (default: its annotated sentences).

    Returns:
        `{"picture", "table", "report", "model", "data", "video", "moments"}`: paths, the evaluation report of
        `evaluate_split` (RGNet and the zero-shot baseline on the test videos) and the pipeline's moments.
    """
    from huggingface_hub.utils import disable_progress_bars
    from transformers import pipeline
    from transformers.utils import logging as transformers_logging

    from ..data.prepared import assign_splits, load_prepared, parse_split_ratios, prepare_dataset
    from ..evaluation.report import evaluate_split, format_report_table
    from ..modeling_rgnet import RGNetForVideoGrounding
    from ..synthetic.tiny_encoders import build_tiny_clip
    from ..synthetic.video_corpus import VideoCorpusConfig, corpus_sentences, write_video_corpus
    from ..training import TrainingConfig, train
    from ..video_text_encoders import load_feature_encoder
    from .timeline import plot_timeline

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    started = time.perf_counter()
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else VideoCorpusConfig(seed=seed)

    print(f"[1/6] Writing {corpus.num_videos} video files and their sentences to {output_dir / 'corpus'}")
    written = write_video_corpus(output_dir / "corpus", corpus)
    print(f"      {written['num_videos']} videos ({60 * written['hours']:.0f} min), {written['num_queries']} sentences")
    videos = sorted(Path(written["videos"]).iterdir())
    splits = assign_splits([video.stem for video in videos], parse_split_ratios(VIDEO_DEMO_SPLITS), seed=0)

    print(f"[2/6] Building a tiny CLIP offline in {output_dir / 'clip'}")
    images = _calibration_images(videos, splits, VIDEO_DEMO_CALIBRATION_VIDEOS)
    with open(written["annotations"]) as handle:
        rows = [json.loads(line) for line in handle]
    training_sentences = [row["sentence"] for row in rows if splits[Path(row["video"]).stem] == "train"]
    clip = build_tiny_clip(
        output_dir / "clip",
        corpus_sentences(),
        calibration_images=images,
        calibration_sentences=training_sentences,
    )

    print(f"[3/6] Preparing the corpus ({VIDEO_DEMO_SPLITS}, split by video) in {output_dir / 'data'}")
    prepare_dataset(
        written["annotations"],
        written["videos"],
        output_dir / "data",
        load_feature_encoder(clip),
        VIDEO_DEMO_SECONDS_PER_FEATURE,
        splits=VIDEO_DEMO_SPLITS,
        progress=False,
        log=lambda line: None,
    )
    dataset = load_prepared(output_dir / "data")
    print("      " + ", ".join(f"{name}: {len(split)} queries" for name, split in dataset.items()))

    recipe = dict(
        VIDEO_DEMO_TRAINING,
        model=dict(VIDEO_DEMO_MODEL),
        data={"format": "prepared", "path": str(output_dir / "data")},
        output_dir=str(output_dir / "run"),
        eval_split=None,
    )
    if num_epochs is not None:
        recipe["num_epochs"] = num_epochs
    _fit_batch_to(recipe, dataset["train"])
    print(f"[4/6] Training a small RGNet ({recipe['num_epochs']} epochs) with rgnet_hf.training.train")
    summary = train(TrainingConfig.from_dict(recipe))
    model_dir = summary["best_model"] or summary["final_model"]
    model = RGNetForVideoGrounding.from_pretrained(model_dir).eval()

    print("[5/6] Evaluating RGNet and the zero-shot baseline on the held-out test videos")
    report = evaluate_split(model, dataset["test"])
    table = format_report_table(report)
    table_path = output_dir / "metrics.md"
    table_path.write_text(f"Held-out test videos of the demo corpus, in %.\n\n```\n{table}\n```\n")
    with open(output_dir / "metrics.json", "w") as handle:
        json.dump({"report": report, "training": summary}, handle, indent=2, default=float)

    test_rows = dataset["test"].with_format(None)
    held_out = sorted(set(test_rows["clip_id"]))[0]
    video_path = next(video for video in videos if video.stem == held_out)
    truth = {row["query"]: row["timestamps"] for row in test_rows if row["clip_id"] == held_out}
    sentences = list(queries) if queries else list(truth)
    print(f"[6/6] Grounding {len(sentences)} sentences in the held-out file {video_path.name} with the pipeline")
    grounder = pipeline("video-grounding", model=model_dir)
    rankings = grounder({"video": str(video_path), "text": sentences}, top_k=3)
    duration = float(test_rows["duration"][test_rows["clip_id"].index(held_out)])
    known = all(sentence in truth for sentence in sentences)
    picture = plot_timeline(
        output_dir / "timeline.png",
        duration,
        [np.array([[m["start"], m["end"]] for m in ranking]) for ranking in rankings],
        ground_truth=[truth[sentence] for sentence in sentences] if known else None,
        labels=sentences,
        scores=[np.array([m["score"] for m in ranking]) for ranking in rankings],
        title=f"{video_path.name}: true moments (green) and RGNet's top-3 (orange)"
        if known
        else f"{video_path.name}: RGNet's top-3 moments",
    )
    for sentence, ranking in zip(sentences, rankings):
        best = ranking[0]
        true = truth.get(sentence)
        shown = f"true [{true[0]:6.1f}, {true[1]:6.1f}] s   " if true is not None else ""
        print(f"      {sentence[:40]:<40} {shown}predicted [{best['start']:6.1f}, {best['end']:6.1f}] s")

    print(f"\nDone in {time.perf_counter() - started:.0f} s.\n\n{table}\n")
    print(f"Timeline picture: {picture}")
    print(f"Metric table:     {table_path}")
    print(f"Trained model:    {model_dir}")
    print(f"Open it in the web app:  rgnet-hf app --model {model_dir}   (the app extra: pip install 'rgnet_hf[app]')")
    print(f'Ground another file:     rgnet-hf ground --model {model_dir} --video {video_path} --query "..."')
    return {
        "picture": str(picture),
        "table": str(table_path),
        "report": report,
        "model": model_dir,
        "data": str(output_dir / "data"),
        "video": str(video_path),
        "moments": rankings,
    }


__all__ = ["run_demo", "run_feature_demo", "DEMO_MODEL", "DEMO_TRAINING", "VIDEO_DEMO_MODEL", "VIDEO_DEMO_TRAINING"]
