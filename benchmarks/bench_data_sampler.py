#!/usr/bin/env python
"""Throughput of the training sampler (RGNetTrainingDataset + RGNetTrainingCollator) on a MAD-like HDF5 file.

Writes a synthetic MAD release in a temporary folder (default: 20 movies x 30 000 frames x 512 features, float16,
i.e. 2 x 30 000 x 512 x 20 = 614 MB on disk; 100 queries per movie), loads it with `load_mad`, and times the MAD
recipe's samples (900-frame windows, 25 text tokens) through a DataLoader with 0 and 2 workers. The file is
read through a warm page cache (it was just written), so this measures the sampler, not the disk. Each setting is
timed `--repeats` times (best and median reported): on a shared machine single runs vary a lot.

    python benchmarks/bench_data_sampler.py                       # defaults above
    python benchmarks/bench_data_sampler.py --dtype float32 --items 4000 --workers 0 2 4

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from rgnet_hf.data import RGNetTrainingCollator, RGNetTrainingDataset, load_mad


def write_release(root: Path, movies: int, frames: int, dim: int, dtype: str, queries_per_movie: int, seed: int):
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True)
    video_path, text_path = root / "frames_5fps.h5", root / "tokens.h5"
    annotations = {}
    with h5py.File(video_path, "w") as video_file, h5py.File(text_path, "w") as text_file:
        for movie_index in range(movies):
            movie = f"movie_{movie_index:03d}"
            # Written in chunks of rows to keep memory flat; norms ~10 like real CLIP rows.
            dataset = video_file.create_dataset(movie, shape=(frames, dim), dtype=dtype)
            for first in range(0, frames, 10_000):
                rows = min(10_000, frames - first)
                dataset[first : first + rows] = (rng.standard_normal((rows, dim)) * (10 / np.sqrt(dim))).astype(dtype)
            duration = frames * 0.2
            for query_index in range(queries_per_movie):
                query_id = str(movie_index * queries_per_movie + query_index)
                length = float(rng.uniform(1, 12))
                start = float(rng.uniform(0, duration - length))
                annotations[query_id] = {
                    "movie": movie,
                    "movie_duration": duration,
                    "sentence": f"query {query_id}",
                    "timestamps": [start, start + length],
                }
                text_file.create_dataset(
                    query_id, data=rng.standard_normal((int(rng.integers(5, 30)), 512)).astype(dtype)
                )
    (root / "annotations" / "MAD_train.json").write_text(json.dumps(annotations))
    return root / "annotations", video_path, text_path


def time_loader(dataset, num_workers: int, batch_size: int, items: int, seed: int) -> dict:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
        collate_fn=RGNetTrainingCollator(),
        drop_last=True,
    )
    started = time.perf_counter()
    iterator = iter(loader)
    next(iterator)  # worker start-up and first batch, timed separately
    first_batch_s = time.perf_counter() - started
    count, started = 0, time.perf_counter()
    for batch in iterator:
        count += batch["video_features"].shape[0]
        if count >= items:
            break
    elapsed = time.perf_counter() - started
    return {
        "num_workers": num_workers,
        "items": count,
        "seconds": round(elapsed, 3),
        "items_per_s": round(count / elapsed, 1),
        "first_batch_s": round(first_batch_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movies", type=int, default=20)
    parser.add_argument("--frames", type=int, default=30_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--queries-per-movie", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--items", type=int, default=1600, help="items timed per worker setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per worker setting (best and median)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        annotations, video_path, text_path = write_release(
            Path(folder), args.movies, args.frames, args.dim, args.dtype, args.queries_per_movie, args.seed
        )
        write_s = time.perf_counter() - started
        queries = load_mad(annotations, video_path, text_path)["train"]
        dataset = RGNetTrainingDataset(
            queries, window_length=900, seconds_per_feature=0.2, max_text_length=25, seed=args.seed
        )
        results = []
        for workers in args.workers:
            runs = [time_loader(dataset, workers, args.batch_size, args.items, args.seed) for _ in range(args.repeats)]
            rates = sorted(run["items_per_s"] for run in runs)
            results.append(
                {
                    "num_workers": workers,
                    "items_per_run": runs[0]["items"],
                    "items_per_s_best": rates[-1],
                    "items_per_s_median": rates[len(rates) // 2],
                    "items_per_s_runs": [run["items_per_s"] for run in runs],
                    "first_batch_s": runs[0]["first_batch_s"],
                }
            )
        print(
            json.dumps(
                {
                    "benchmark": "training sampler, MAD-like HDF5",
                    "h5": {
                        "movies": args.movies,
                        "frames_per_movie": args.frames,
                        "feature_dim": args.dim,
                        "dtype": args.dtype,
                        "bytes": os.path.getsize(video_path),
                        "write_s": round(write_s, 1),
                    },
                    "queries": len(dataset),
                    "window_length": 900,
                    "batch_size": args.batch_size,
                    "results": results,
                    "machine": {
                        "cpus": os.cpu_count(),
                        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
                        "torch_threads": torch.get_num_threads(),
                        "python": platform.python_version(),
                        "torch": torch.__version__,
                        "h5py": h5py.__version__,
                    },
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
