"""Library search on the demo corpus with its trained model: R@K of pre-filtered search by depth against exhaustive
search, when every test sentence must find its own video among all the corpus's videos. Prints one JSON object.

    rgnet-hf demo --output demo
    python benchmarks/bench_library_demo_corpus.py --demo demo [--depths 5,10,25,50,100,200] [--split test]

The library indexes the video features of every split (`DEMO/data/video_features.h5`, 40 videos, 2 hours); the
queries are the sentences of `--split` (held-out videos), encoded by the demo's tiny CLIP. Two ground truths:

- `own_video`: a query counts at `R@K IoU=t` when one of its `K` best moments lies in its own video with a temporal
  IoU of at least `t` with its annotated moment;
- `any_video`: the same, against every annotated moment of the library that shows the same colour and shape (each
  pair appears in about a dozen of the 40 videos, so "a red circle appears" is as true in another video).

Also reported per setting: the windows the retrieval token scored per query (mean) and seconds per query (all
queries searched in one call, divided by their number).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", required=True, help="the output folder of `rgnet-hf demo`")
    parser.add_argument("--depths", default="5,10,25,50,100,200")
    parser.add_argument("--split", default="test")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()

    import torch

    from rgnet_hf.apps.cli import main as cli
    from rgnet_hf.data import load_prepared
    from rgnet_hf.search import VideoLibrary

    demo = Path(args.demo)
    model = demo / "run" / "final"
    data = load_prepared(demo / "data")
    rows = data[args.split].with_format(None)
    sentences = list(rows["query"])
    own_video = [[(key, float(span[0]), float(span[1]))] for key, span in zip(rows["clip_id"], rows["timestamps"])]
    by_event: dict[tuple[str, str], list] = {}
    for split in data.values():
        split = split.with_format(None)
        for sentence, key, span in zip(split["query"], split["clip_id"], split["timestamps"]):
            by_event.setdefault(colour_and_shape(sentence), []).append((key, float(span[0]), float(span[1])))
    any_video = [by_event[colour_and_shape(sentence)] for sentence in sentences]
    with tempfile.TemporaryDirectory() as folder:
        index = Path(folder) / "index"
        features = str(demo / "data" / "video_features.h5")
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON alone
            built = cli(["index", "--features", features, "--model", str(model), "--output", str(index)])
        if built != 0:
            raise SystemExit("rgnet-hf index failed")
        library = VideoLibrary.from_folders(index, model)
        settings = [("exhaustive", None)] + [(f"depth_{d}", int(d)) for d in args.depths.split(",")]
        measured = {}
        for name, depth in settings:
            start = time.perf_counter()
            if depth is None:
                results = library.search(sentences, top_k=args.top_k, exhaustive=True)
            else:
                results = library.search(sentences, top_k=args.top_k, depth=depth)
            seconds = time.perf_counter() - start
            measured[name] = {
                "own_video": recall(results, own_video),
                "any_video": recall(results, any_video),
                "windows_scored_per_query": round(float(np.mean([r.candidate_windows for r in results])), 1),
                "seconds_per_query": round(seconds / len(sentences), 4),
            }
        within_one_point = {
            truth: min(
                (
                    depth
                    for name, depth in settings
                    if depth is not None
                    and measured["exhaustive"][truth]["R@5 IoU=0.3"] - measured[name][truth]["R@5 IoU=0.3"] <= 1.0
                ),
                default=None,
            )
            for truth in ("own_video", "any_video")
        }
        print(
            json.dumps(
                {
                    "library": {
                        "videos": len(library.index.videos),
                        "windows": int(measured["exhaustive"]["windows_scored_per_query"]),
                        "hours": round(
                            sum(v.num_frames for v in library.index.videos) * library.index.seconds_per_feature / 3600,
                            3,
                        ),
                    },
                    "queries": len(sentences),
                    "split": args.split,
                    "results": measured,
                    "smallest_depth_with_r5_iou03_within_1_point_of_exhaustive": within_one_point,
                    "torch_threads": torch.get_num_threads(),
                    "machine": platform.processor() or platform.machine(),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
