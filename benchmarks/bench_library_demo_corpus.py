"""Library search on a demo's data with its trained model: R@K of pre-filtered search by depth against exhaustive
search, when every test query must find its moment among all the data's videos. Prints one JSON object.

    rgnet-hf demo --output demo                  # video files: 40 videos, 2 hours
    python benchmarks/bench_library_demo_corpus.py --demo demo [--depths 5,10,25,50,100,200] [--split test]
        [--modes float32/overlapping,bfloat16/overlapping,float32/central,bfloat16/central]
    rgnet-hf demo --features --output fdemo      # the synthetic benchmark (MAD's layout): 36 videos
    python benchmarks/bench_library_demo_corpus.py --demo fdemo

The library indexes the video features of every split (`DEMO/data/video_features.h5`, or the synthetic benchmark's
video feature file); the queries are the `--split` queries (held-out videos): the demo's sentences, encoded by its
tiny CLIP, or the synthetic benchmark's query features. Ground truths:

- `own_video`: a query counts at `R@K IoU=t` when one of its `K` best moments lies in its own video with a temporal
  IoU of at least `t` with its annotated moment;
- `any_video` (the video demo only): the same, against every annotated moment of the library that shows the same
  colour and shape (each pair appears in about a dozen of the 40 videos, so "a red circle appears" is as true in
  another video).

`--modes` measures several searches, DTYPE/WINDOWS: the model cast to `DTYPE` (`float32`, `bfloat16`) and
`WINDOWS` candidates per segment (`VideoLibrary(segment_windows=...)`), each held to the first mode's exhaustive
search (a `central` mode has no exhaustive row of its own: it scores every window like `overlapping`).

Also reported per setting: the windows the retrieval token scored per query (mean) and seconds per query (all
queries searched in one call, divided by their number).

A larger library from the synthetic benchmark's world, with the same trained model:

    python benchmarks/bench_library_demo_corpus.py --demo fdemo --library-hours 100 --max-queries 192

`--library-hours H` writes the benchmark again (into `--work-dir`, a temporary folder by default) with test videos
appended until the library holds about `H` hours. A video is a function of the benchmark's seed and its number
alone, so the first videos (the model's training and validation videos, and the demo's test videos) are the
demo's own, and every added video is one the model never saw. `--max-queries N` searches `N` queries of the split
drawn at random (`--query-seed`), in increasing order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _iou(moment, start: float, end: float) -> float:
    overlap = max(0.0, min(end, moment.end) - max(start, moment.start))
    union = max(end, moment.end) - min(start, moment.start)
    return overlap / union if union > 0 else 0.0


def recall(results, truth, ks=(1, 5), thresholds=(0.3, 0.5)) -> dict[str, float]:
    """`R@K IoU=t` in % over queries: `truth[i]` lists the `(video key, start, end)` moments query `i` may find."""
    table = {}
    for k in ks:
        for threshold in thresholds:
            hits = sum(
                any(
                    moment.key == key and _iou(moment, start, end) >= threshold
                    for moment in result.moments[:k]
                    for key, start, end in moments
                )
                for result, moments in zip(results, truth)
            )
            table[f"R@{k} IoU={threshold}"] = round(100.0 * hits / len(truth), 2)
    return table


def colour_and_shape(sentence: str) -> tuple[str, str]:
    from rgnet_hf.synthetic.video_corpus import COLOURS, SHAPES

    words = set(sentence.lower().replace(".", " ").split())
    (colour,) = words & set(COLOURS)
    (shape,) = words & set(SHAPES)
    return colour, shape


def _own_video(rows) -> list[list[tuple[str, float, float]]]:
    return [[(key, float(span[0]), float(span[1]))] for key, span in zip(rows["clip_id"], rows["timestamps"])]


def _video_demo(demo: Path, split: str):
    """`rgnet-hf demo`: sentences (encoded by the demo's CLIP), the prepared video features, both ground truths."""
    from rgnet_hf.data import load_prepared

    data = load_prepared(demo / "data")
    rows = data[split].with_format(None)
    by_event: dict[tuple[str, str], list] = {}
    for part in data.values():
        part = part.with_format(None)
        for sentence, key, span in zip(part["query"], part["clip_id"], part["timestamps"]):
            by_event.setdefault(colour_and_shape(sentence), []).append((key, float(span[0]), float(span[1])))
    truths = {
        "own_video": _own_video(rows),
        "any_video": [by_event[colour_and_shape(sentence)] for sentence in rows["query"]],
    }
    return {"text": list(rows["query"])}, demo / "data" / "video_features.h5", truths


def _feature_demo(demo: Path, split: str):
    """`rgnet-hf demo --features`: the synthetic benchmark's query features and video features (every split's
    videos in the library); each query's moment is its own video's."""
    from rgnet_hf.synthetic.benchmark import load_synthetic_mad, synthetic_mad_paths

    data = load_synthetic_mad(demo / "data")
    if split == "validation" and "validation" not in data:
        split = "val"
    rows = data[split]
    queries = {
        "text_features": [np.asarray(row["text_features"], dtype=np.float32) for row in rows],
        "sentence_features": np.stack([np.asarray(row["sentence_features"], dtype=np.float32) for row in rows]),
    }
    plain = rows.with_format(None).select_columns(["clip_id", "timestamps"])
    return queries, synthetic_mad_paths(demo / "data")["video_features"], {"own_video": _own_video(plain)}


def _grown_feature_demo(demo: Path, hours: float, work: Path) -> Path:
    """The feature demo's benchmark with test videos appended up to about `hours` of video, written under `work`."""
    from rgnet_hf.synthetic.benchmark import SyntheticMADConfig, make_synthetic_mad, synthetic_mad_paths

    recorded = json.loads(synthetic_mad_paths(demo / "data")["config"].read_text())["config"]
    config = SyntheticMADConfig.from_dict(recorded)
    counts = config.split_counts()
    low, high = (
        (config.video_minutes, config.video_minutes) if np.isscalar(config.video_minutes) else config.video_minutes
    )
    added = max(0, int(np.ceil((hours * 60 - config.num_videos * (low + high) / 2) / ((low + high) / 2))))
    grown = config.replace(num_videos=config.num_videos + added, splits={**counts, "test": counts["test"] + added})
    make_synthetic_mad(work / "data", grown)
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", required=True, help="the output folder of `rgnet-hf demo` (or `demo --features`)")
    parser.add_argument("--depths", default="5,10,25,50,100,200")
    parser.add_argument("--split", default="test")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument(
        "--library-hours", type=float, default=None, help="feature demo: append test videos up to about this many hours"
    )
    parser.add_argument("--work-dir", default=None, help="where --library-hours writes its benchmark (temporary)")
    parser.add_argument("--max-queries", type=int, default=None, help="search this many queries of the split")
    parser.add_argument("--query-seed", type=int, default=0)
    parser.add_argument(
        "--modes",
        default="float32/overlapping",
        help="searches to measure, DTYPE/WINDOWS (float32|bfloat16 / overlapping|central), comma-separated; each is "
        "held to the first mode's exhaustive search",
    )
    args = parser.parse_args()
    demo = Path(args.demo)
    model = demo / "run" / "final"
    with tempfile.TemporaryDirectory() as folder:
        if args.library_hours is not None:
            if (demo / "data" / "manifest.json").is_file():
                raise SystemExit("--library-hours grows the synthetic benchmark of `rgnet-hf demo --features` only")
            work = Path(args.work_dir) if args.work_dir else Path(folder) / "grown"
            started = time.perf_counter()
            source = _grown_feature_demo(demo, args.library_hours, work)
            print(f"wrote {work / 'data'} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        else:
            source = demo
        if (source / "data" / "manifest.json").is_file():
            queries, features, truths = _video_demo(source, args.split)
        else:
            queries, features, truths = _feature_demo(source, args.split)
        if args.max_queries is not None and args.max_queries < len(truths["own_video"]):
            chosen = np.sort(
                np.random.default_rng(args.query_seed).choice(len(truths["own_video"]), args.max_queries, replace=False)
            )
            queries = {
                name: ([value[i] for i in chosen] if isinstance(value, list) else value[chosen])
                for name, value in queries.items()
            }
            truths = {name: [moments[i] for i in chosen] for name, moments in truths.items()}
        _search_library(args, model, queries, features, truths, folder)


def _search_library(args, model: Path, queries: dict, features: Path, truths: dict, folder: str) -> None:
    import torch

    from rgnet_hf.apps.cli import main as cli
    from rgnet_hf.search import VideoLibrary

    index = Path(folder) / "index"
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON alone
        built = cli(["index", "--features", str(features), "--model", str(model), "--output", str(index)])
    if built != 0:
        raise SystemExit("rgnet-hf index failed")
    settings = [("exhaustive", None)] + [(f"depth_{d}", int(d)) for d in args.depths.split(",")]
    modes = [mode for mode in args.modes.split(",") if mode]
    by_mode, within_one_point = {}, {}
    for mode in modes:
        dtype, _, windows = mode.partition("/")
        library = VideoLibrary.from_folders(
            index, model, dtype=getattr(torch, dtype), segment_windows=windows or "overlapping"
        )
        measured = by_mode[mode] = {}
        for name, depth in settings:
            if depth is None and windows == "central":
                continue  # exhaustive search scores every window: the same as overlapping
            start = time.perf_counter()
            options = {"exhaustive": True} if depth is None else {"depth": depth}
            results = library.search(**queries, top_k=args.top_k, **options)
            seconds = time.perf_counter() - start
            measured[name] = {
                **{truth: recall(results, moments) for truth, moments in truths.items()},
                "windows_scored_per_query": round(float(np.mean([r.candidate_windows for r in results])), 1),
                "seconds_per_query": round(seconds / len(truths["own_video"]), 4),
            }
    # against the first mode's exhaustive search (float32 by default: the reference)
    reference = by_mode[modes[0]]["exhaustive"]
    for mode in modes:
        within_one_point[mode] = {
            truth: min(
                (
                    depth
                    for name, depth in settings
                    if depth is not None
                    and reference[truth]["R@5 IoU=0.3"] - by_mode[mode][name][truth]["R@5 IoU=0.3"] <= 1.0
                ),
                default=None,
            )
            for truth in truths
        }
    print(
        json.dumps(
            {
                "library": {
                    "videos": len(library.index.videos),
                    "windows": int(reference["windows_scored_per_query"]),
                    "hours": round(
                        sum(v.num_frames for v in library.index.videos) * library.index.seconds_per_feature / 3600,
                        3,
                    ),
                },
                "queries": len(truths["own_video"]),
                "split": args.split,
                "results": by_mode if len(modes) > 1 else by_mode[modes[0]],
                "smallest_depth_with_r5_iou03_within_1_point_of_exhaustive": (
                    within_one_point if len(modes) > 1 else within_one_point[modes[0]]
                ),
                "torch_threads": torch.get_num_threads(),
                "machine": platform.processor() or platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
