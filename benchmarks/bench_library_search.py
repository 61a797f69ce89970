"""Library search: recall of the segment pre-filter by depth, agreement of pre-filtered and exhaustive search, query
latency and index cost, on generated libraries. Prints one JSON object.

    python benchmarks/bench_library_search.py [--hours 2] [--queries 8] [--depths 10,50,200]
        [--index-hours 1,10,100] [--model DIR] [--device cpu] [--threads N] [--prefilter-only]
        [--latency-hours 1,10,100] [--latency-depths 200,1000] [--latency-queries 8] [--latency-budget-s 120]
        [--exhaustive-max-hours 10] [--latency-model mad|small] [--memory-budget-mib 2048] [--latency-only]
        [--compare-per-video] [--latency-modes bfloat16/overlapping,float32/central,bfloat16/central]
        [--index-vectors scenes] [--index-types ivf,ivfsq8,ivfpq] [--index-nprobes 128,512]
        [--index-training-per-cell 64]

The library: videos of `--video-minutes` minutes of 512-d features at 5 fps, each a sequence of scenes (a random
unit direction per scene plus per-frame noise of norm about 1). Each query plants a moment (5 to 15 s) in a random
video: its frames get `--signal` times a random unit direction `g`, and the query's sentence feature is
`a * g + sqrt(1 - a^2) * u` with `a = --alignment` and `u` a unit vector orthogonal to `g`. Its true window is a
window holding the moment's middle.

- `prefilter_recall[depth]`: share of queries with a true window among the candidate windows (feature statistics
  only: no model involved).
- `agreement_at_5[depth]`: share of queries whose exhaustive best moment (same video, IoU >= 0.5) is among the
  pre-filtered top 5. With the default random-weight MAD-size model this measures only how often the two searches
  see the same windows; pass `--model` (a trained folder for 512-d features at 0.2 s) for a meaningful R@5.
- latency: seconds per query of the pre-filter alone, of pre-filtered search per depth, and of exhaustive search.
- `index`: per size of `--index-hours` (4 s segments of 512-d generated unit vectors) and per index type of
  `--index-types` (`auto`: the one `choose_index_spec` picks for that many vectors; e.g. `ivf,ivfsq8,ivfpq`), the
  build seconds, the codes' and the file's size and the search milliseconds per query (depth 200), without RGNet.
  The vectors are generated in chunks, twice (the training sample and the queries' segments, then the adds), so that
  only the indexes' codes and the training sample are in memory; the IVF types of one size share one set of k-means
  cells (their `build_s` counts its training once each). A size whose codes and sample do not fit in half the
  available memory is listed as not measured. `--index-vectors scenes` draws runs of segments around scene
  directions instead of uniform vectors; the 16 queries lie near stored segments (a segment plus noise of its norm),
  and each index reports the share of the exact (brute-force) top 10 and top 200 that it returns
  (`recall_at_10_vs_exact`, `recall_at_200_vs_exact`) and how often the query's own segment is among its 200
  (`query_segment_found`); `--index-nprobes 64,256` repeats these for the same index searched with other `nprobe`
  (`by_nprobe`), `--index-training-per-cell N` samples N training vectors per cell.
- `latency` (`--latency-hours`): per library size, the index build seconds and peak RSS, and per depth (and for
  exhaustive search up to `--exhaustive-max-hours`) the end-to-end seconds of one query (`VideoLibrary.search` with
  one query's features: pre-filter, feature reads, retrieval token, decoding, ranking) as p50 / p95 over the
  queries measured, with the peak RSS during them. Each setting runs `--latency-queries` queries or stops after the
  first query past `--latency-budget-s` seconds (the number measured is in the JSON). The RGNet model is random
  `--latency-model`: `mad` (the MAD recipe's size) or `small` (hidden 64, one layer each; the MAD window grid);
  `--model` replaces it. Peak RSS is the process's high-water mark, reset before each measurement where Linux
  allows it (`/proc/self/clear_refs`); otherwise it is the high-water mark so far.
- `--latency-modes DTYPE/WINDOWS,...`: each latency query is also searched with the model cast to `DTYPE`
  (`float32` or `bfloat16`) and `WINDOWS` candidates per segment (`VideoLibrary(segment_windows=...)`: `overlapping`
  or `central`), alternating query by query with the default search; per setting and mode: p50 / p95, the windows
  scored, `speedup_total` (default seconds / mode seconds) and `same_best_moment` (share of queries whose best moment
  is the default search's: same video, IoU >= 0.5; with random weights this measures stability, not accuracy).
- `--compare-per-video`: each latency query is also run with one engine call per video
  (`VideoLibrary(..., batch_videos=False)`, each video embedded whole), alternating with the batched search query by
  query so that both see the same load; per setting it adds the per-video p50 / p95, `speedup_total` (per-video
  seconds / batched seconds over the queries measured) and `max_row_difference` (largest difference between the two
  rankings' rows; the ranked videos must be equal).
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from rgnet_hf import RGNetConfig, RGNetForVideoGrounding, RGNetGroundingEngine
from rgnet_hf.post_processing import temporal_iou_matrix
from rgnet_hf.search import FaissBackend, LibraryIndex, VideoLibrary, choose_index_spec
from rgnet_hf.search.backends import ENCODER_TRAINING_ROWS, ivf_index
from rgnet_hf.windowing import window_bounds

FEATURE_SIZE, RATE, ENCODER = 512, 0.2, "generated"


def _unit(array: np.ndarray) -> np.ndarray:
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


def make_library(folder: Path, hours: float, video_minutes: float, queries: int, signal: float, alignment: float, seed):
    """Writes `library.h5`; returns the cache path and the queries (video key, start, end, sentence feature)."""
    rng = np.random.default_rng(seed)
    num_videos = max(1, round(hours * 60 / video_minutes))
    frames = int(video_minutes * 60 / RATE)
    planted = [(int(rng.integers(num_videos)), rng.uniform(5, 15)) for _ in range(queries)]
    truth = []
    path = folder / "library.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs.update({"encoder": ENCODER, "seconds_per_feature": RATE})
        for video in range(num_videos):
            scene_starts = np.sort(rng.choice(frames, size=max(1, frames // 150), replace=False))
            scene_starts[0] = 0
            directions = _unit(rng.normal(size=(len(scene_starts), FEATURE_SIZE)))
            scene = np.searchsorted(scene_starts, np.arange(frames), side="right") - 1
            features = directions[scene] + rng.normal(size=(frames, FEATURE_SIZE)) / np.sqrt(FEATURE_SIZE)
            for query, (target, length) in enumerate(planted):
                if target != video:
                    continue
                start = rng.uniform(0, video_minutes * 60 - length)
                first, last = int(start / RATE), int((start + length) / RATE)
                direction = _unit(rng.normal(size=FEATURE_SIZE))
                features[first:last] += signal * direction
                noise = _unit(rng.normal(size=FEATURE_SIZE))
                noise = _unit(noise - noise @ direction * direction)
                sentence = alignment * direction + np.sqrt(1 - alignment**2) * noise
                truth.append((query, f"video{video:04d}", start, start + length, sentence))
            dataset = handle.create_dataset(f"video{video:04d}", data=features.astype(np.float32))
            dataset.attrs.update({"encoder": ENCODER, "seconds_per_feature": RATE, "duration": frames * RATE})
    truth.sort(key=lambda row: row[0])
    return path, truth


def _true_windows(library: VideoLibrary, key: str, start: float, end: float) -> set[tuple[int, int]]:
    position = [video.key for video in library.index.videos].index(key)
    config = library.model.config
    bounds = window_bounds(library.index.videos[position].num_frames, config.window_length, config.window_stride)
    middle = (start + end) / 2 / RATE
    inside = (bounds[:, 0] <= middle) & (bounds[:, 1] > middle)
    return {(position, int(window)) for window in torch.nonzero(inside).flatten()}


def _timed(function, repeats: int = 1):
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - start)
    return value, best


def index_vectors(count: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """`count` unit 512-d segment vectors: `random` (uniform on the sphere), or `scenes` (runs of 1 to 15 segments,
    8 on average, around one random unit direction each, plus noise of the same norm: about 0.5 cosine within a
    scene, like the segments of one shot)."""
    if kind == "random":
        return _unit(rng.standard_normal(size=(count, FEATURE_SIZE), dtype=np.float32))
    lengths = rng.integers(1, 16, size=count // 4 + 16)  # about twice the segments needed
    scene = np.repeat(np.arange(len(lengths)), lengths)[:count]
    vectors = np.empty((count, FEATURE_SIZE), dtype=np.float32)
    directions = _unit(rng.standard_normal(size=(len(lengths), FEATURE_SIZE), dtype=np.float32))
    for start in range(0, count, 2**18):  # in chunks: no second full-size temporary
        stop = min(start + 2**18, count)
        noise = _unit(rng.standard_normal(size=(stop - start, FEATURE_SIZE), dtype=np.float32))
        vectors[start:stop] = _unit(directions[scene[start:stop]] + noise)
    return vectors


def _ivf_quality(backend, queries, exact, targets, depth: int) -> dict:
    """Search milliseconds per query and agreement with the exact top lists (recall at 10 and at `depth`)."""
    (_, found), search = _timed(lambda: backend.search(queries, depth), repeats=3)
    quality = {"search_ms_per_query": round(1000 * search / len(queries), 3)}
    for k in (10, depth):
        overlap = [len(set(found[q, :k].tolist()) & set(exact[q, :k].tolist())) / k for q in range(len(queries))]
        quality[f"recall_at_{k}_vs_exact"] = round(float(np.mean(overlap)), 3)
    quality["query_segment_found"] = round(float(np.mean([t in found[q] for q, t in enumerate(targets)])), 3)
    return quality


CHUNK_ROWS = 2**18


def vector_chunks(count: int, kind: str, seed: int):
    """`(first_row, vectors)` for `count` generated segment vectors in chunks of `CHUNK_ROWS`, chunk `i` drawn from its
    own generator `(seed, i)`: every pass over them sees the same vectors, and they are never all in memory."""
    for number, start in enumerate(range(0, count, CHUNK_ROWS)):
        yield start, index_vectors(min(CHUNK_ROWS, count - start), kind, np.random.default_rng([seed, number]))


def _code_bytes(spec, dimension: int) -> int:
    """Bytes per stored vector of an index (its code and its int64 id)."""
    per_code = {"flat": 4 * dimension, "ivf": 4 * dimension, "ivfsq8": dimension, "ivfpq": spec.pq_bytes}
    return per_code[spec.type] + 8


def _faiss_index(spec, dimension: int, centroids: np.ndarray | None):
    """The FAISS index `FaissBackend.create` makes for `spec`; an IVF index gets a quantizer holding `centroids`
    (trained once and shared by the index types compared), so that its own training fits only its codes."""
    import faiss

    if spec.type == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension)), None
    quantizer = faiss.IndexFlatIP(dimension)
    quantizer.add(centroids)
    index = ivf_index(spec, dimension, quantizer)
    index.nprobe = spec.nprobe
    return index, quantizer


def _top_lists(best_scores, best_ids, scores, first_row, depth):
    """Merge `(Q, n)` scores of rows `first_row...` into the running `(Q, depth)` best lists (unordered)."""
    ids = np.broadcast_to(np.arange(first_row, first_row + scores.shape[1]), scores.shape)
    scores, ids = np.concatenate([best_scores, scores], 1), np.concatenate([best_ids, ids], 1)
    keep = np.argpartition(-scores, min(depth, scores.shape[1] - 1), axis=1)[:, :depth]
    return np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)


def bench_index_alone(
    hours: float,
    seed: int,
    kind: str = "random",
    depth: int = 200,
    nprobes: tuple[int, ...] = (),
    training_points_per_cell: int | None = None,
    index_types: tuple[str, ...] = ("auto",),
) -> dict:
    """The index alone at `hours` of 4 s segments, for each of `index_types` (`auto`: the rule's), built from
    generated vectors streamed in chunks (two passes: the training sample and the queries' segments, then the adds and
    the exact top lists), so only the indexes' codes and the training sample are ever in memory."""
    count = int(hours * 3600 / 4)
    specs = {name: choose_index_spec(count, name if name != "auto" else "auto") for name in index_types}
    report: dict = {"hours": hours, "segments": count, "vectors": kind, "indexes": {}}
    available = _memory_available()
    nlists = {spec.nlist for spec in specs.values() if spec.type != "flat"}
    if len(nlists) > 1:
        raise ValueError(f"the IVF types compared at one size share their cells; got nlist {sorted(nlists)}")
    nlist = nlists.pop() if nlists else 0
    per_cell = training_points_per_cell or 256
    training_count = min(count, nlist * per_cell)
    needed = sum(count * _code_bytes(spec, FEATURE_SIZE) for spec in specs.values()) + training_count * FEATURE_SIZE * 4
    if available is not None and needed > available / 2:
        report["not_measured"] = (
            f"the codes of {', '.join(spec.type for spec in specs.values())} and the training sample take "
            f"{needed / 2**30:.1f} GiB, more than half of the {available / 2**30:.1f} GiB available"
        )
        return report
    rng = np.random.default_rng(seed)
    targets = np.sort(rng.choice(count, size=16, replace=False))
    training_rows = np.sort(rng.choice(count, size=training_count, replace=False)) if nlist else np.zeros(0, int)
    # pass 1: the training sample and the vectors the queries lie near
    training = np.empty((len(training_rows), FEATURE_SIZE), dtype=np.float32)
    target_vectors = np.empty((len(targets), FEATURE_SIZE), dtype=np.float32)
    started = time.perf_counter()
    for first, chunk in vector_chunks(count, kind, seed):
        rows = slice(*np.searchsorted(training_rows, [first, first + len(chunk)]))
        training[rows] = chunk[training_rows[rows] - first]
        picked = slice(*np.searchsorted(targets, [first, first + len(chunk)]))
        target_vectors[picked] = chunk[targets[picked] - first]
    report["generation_pass_s"] = round(time.perf_counter() - started, 1)
    queries = _unit(target_vectors + _unit(rng.normal(size=(16, FEATURE_SIZE)).astype(np.float32)))
    centroids, cells_s = None, 0.0
    if nlist:  # the k-means cells, trained once for every IVF type (as FaissBackend.create trains them)
        import faiss

        started = time.perf_counter()
        coarse = faiss.IndexIVFFlat(faiss.IndexFlatIP(FEATURE_SIZE), FEATURE_SIZE, nlist, faiss.METRIC_INNER_PRODUCT)
        coarse.cp.max_points_per_centroid = per_cell
        coarse.train(training)
        centroids = coarse.quantizer.reconstruct_n(0, nlist)
        cells_s = time.perf_counter() - started
        report.update(nlist=nlist, training_points=training_count, cells_training_s=round(cells_s, 1))
        coarse = None
    built = {}
    for name, spec in specs.items():
        index, quantizer = _faiss_index(spec, FEATURE_SIZE, centroids)
        started = time.perf_counter()
        if spec.type != "flat":  # the codes only (the cells are given), on the rows FaissBackend.create fits them on
            index.train(training[:: -(-len(training) // ENCODER_TRAINING_ROWS)])
        built[name] = {"index": index, "quantizer": quantizer, "spec": spec, "build_s": time.perf_counter() - started}
    training = None
    # pass 2: the adds, and the exact top lists of the queries
    best_scores = np.full((16, 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((16, 0), dtype=np.int64)
    _reset_peak_rss()
    for first, chunk in vector_chunks(count, kind, seed):
        ids = np.arange(first, first + len(chunk), dtype=np.int64)
        for entry in built.values():
            started = time.perf_counter()
            entry["index"].add_with_ids(chunk, ids)
            entry["build_s"] += time.perf_counter() - started
        best_scores, best_ids = _top_lists(best_scores, best_ids, queries @ chunk.T, first, depth)
    order = np.argsort(-best_scores, axis=1)
    exact = np.take_along_axis(best_ids, order, 1)  # ranked: recall at 10 reads its first 10
    report["peak_rss_mb_while_adding"] = _peak_rss_mb()
    for name, entry in built.items():
        spec, index = entry["spec"], entry["index"]
        backend = FaissBackend(index, spec)
        backend._quantizer = entry["quantizer"]
        result = {
            "index": spec.describe(),
            "build_s": round(entry["build_s"] + cells_s, 1),
            "codes_mb": round(count * _code_bytes(spec, FEATURE_SIZE) / 2**20, 1),
        }
        result.update(_ivf_quality(backend, queries, exact, targets, depth))
        if spec.type != "flat":
            result["by_nprobe"] = {}
            for nprobe in nprobes:  # the same index searched with more or fewer cells
                index.nprobe = min(nprobe, spec.nlist)
                result["by_nprobe"][nprobe] = _ivf_quality(backend, queries, exact, targets, depth)
            index.nprobe = spec.nprobe
        with tempfile.TemporaryDirectory() as folder:
            backend.save(Path(folder) / "vectors.faiss")
            result["file_mb"] = round((Path(folder) / "vectors.faiss").stat().st_size / 2**20, 1)
        report["indexes"][name] = result
        entry.clear()
    return report


def _memory_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _percentiles(seconds: list[float]) -> dict:
    return {
        "p50_s": round(float(np.percentile(seconds, 50)), 3),
        "p95_s": round(float(np.percentile(seconds, 95)), 3),
        "queries_measured": len(seconds),
    }


def latency_model(name: str, seed: int) -> RGNetForVideoGrounding:
    """A random-weight RGNet for 512-d features at 0.2 s: the MAD recipe's size, or a small one on its window grid."""
    torch.manual_seed(seed)
    overrides = {}
    if name == "small":
        overrides = {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_input_projection_layers": 1,
            "num_text_to_video_layers": 1,
            "num_encoder_layers": 1,
            "num_decoder_layers": 1,
        }
    return RGNetForVideoGrounding(RGNetConfig.from_preset("mad", feature_encoder=None, **overrides)).eval()


def bench_latency(hours: float, model, args, depths: list[int]) -> dict:
    """End-to-end seconds of one query against a generated library of `hours` hours, and the peak memory."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (cache, truth), generate = _timed(
            lambda: make_library(
                folder,
                hours,
                args.video_minutes,
                args.latency_queries,
                args.signal,
                args.alignment,
                args.seed,
            )
        )
        rss_before = _rss_mb()
        reset = _reset_peak_rss()
        index, build = _timed(lambda: LibraryIndex.update(folder / "index", [cache], model.config)[0])
        report = {
            "hours": hours,
            "videos": len(index.videos),
            "frames": int(sum(video.num_frames for video in index.videos)),
            "feature_cache_gb": round(cache.stat().st_size / 2**30, 2),
            "segments": index.backend.size,
            "index": index.spec.type,
            "generate_s": round(generate, 1),
            "index_build_s": round(build, 2),
            "rss_before_build_mb": rss_before,
            "index_build_peak_rss_mb": _peak_rss_mb(),
            "peak_rss_reset": reset,
        }
        engine = RGNetGroundingEngine(model, memory_budget_bytes=int(args.memory_budget_mib * 2**20))
        library = VideoLibrary(index, model, engine=engine)
        modes = {mode: _mode_library(index, model, mode, args) for mode in _modes(args.latency_modes)}
        per_video = VideoLibrary(index, model, engine=engine, batch_videos=False)
        report["windows"] = int(sum(len(library._grid_bounds(p)) for p in range(len(index.videos))))
        sentence = np.stack([row[4] for row in truth]).astype(np.float32)
        text = np.random.default_rng(args.seed + 1).normal(size=(len(truth), 8, model.config.text_feature_size))
        text = _unit(text).astype(np.float32)
        settings = [(f"depth_{depth}", {"depth": depth}) for depth in depths]
        if hours <= args.exhaustive_max_hours:
            settings.append(("exhaustive", {"exhaustive": True}))
        # one warm-up query (lazy initialisations, the first read of the caches' pages)
        library.search(text_features=text[:1], sentence_features=sentence[:1], top_k=5, depth=depths[0])
        for name, options in settings:
            _reset_peak_rss()
            seconds, baseline_seconds, candidates, spent, difference = [], [], [], 0.0, 0.0
            mode_seconds = {mode: [] for mode in modes}
            mode_candidates = {mode: [] for mode in modes}
            mode_agrees = {mode: [] for mode in modes}
            for query in range(len(truth)):
                inputs = {"text_features": text[query : query + 1], "sentence_features": sentence[query : query + 1]}
                inputs.update(top_k=5, **options)
                [result], elapsed = _timed(lambda inputs=inputs: library.search(**inputs))
                seconds.append(elapsed)
                candidates.append(result.candidate_windows)
                spent += seconds[-1]
                if args.compare_per_video:
                    [reference], elapsed = _timed(lambda inputs=inputs: per_video.search(**inputs))
                    baseline_seconds.append(elapsed)
                    spent += elapsed
                    if not np.array_equal(result.videos, reference.videos):
                        raise AssertionError(f"{name}: the batched search ranked other videos than the per-video one")
                    difference = max(difference, float(np.abs(result.rows - reference.rows).max(initial=0.0)))
                for mode, other in modes.items():
                    [found], elapsed = _timed(lambda inputs=inputs, other=other: other.search(**inputs))
                    mode_seconds[mode].append(elapsed)
                    mode_candidates[mode].append(found.candidate_windows)
                    mode_agrees[mode].append(_same_best_moment(found, result))
                    spent += elapsed
                if spent > args.latency_budget_s:
                    break
            report[name] = {
                **_percentiles(seconds),
                "mean_candidate_windows": round(float(np.mean(candidates)), 1),
                "peak_rss_mb": _peak_rss_mb(),
            }
            if modes:
                report[name]["modes"] = {
                    mode: {
                        **_percentiles(mode_seconds[mode]),
                        "mean_candidate_windows": round(float(np.mean(mode_candidates[mode])), 1),
                        "speedup_total": round(sum(seconds) / sum(mode_seconds[mode]), 2),
                        "same_best_moment": round(float(np.mean(mode_agrees[mode])), 3),
                    }
                    for mode in modes
                }
            if args.compare_per_video:
                report[name]["per_video"] = _percentiles(baseline_seconds)
                report[name]["speedup_total"] = round(sum(baseline_seconds) / sum(seconds), 2)
                report[name]["max_row_difference"] = difference
    return report


def _modes(text: str) -> list[str]:
    modes = [mode for mode in text.split(",") if mode]
    for mode in modes:
        dtype, _, windows = mode.partition("/")
        if dtype not in ("float32", "bfloat16") or windows not in ("overlapping", "central"):
            raise SystemExit(f"--latency-modes: {mode!r} is not DTYPE/WINDOWS (float32|bfloat16 / overlapping|central)")
    return modes


def _mode_library(index, model, mode: str, args) -> VideoLibrary:
    """A `VideoLibrary` searching with the model in `DTYPE` and `WINDOWS` candidates per segment."""
    dtype, _, windows = mode.partition("/")
    if dtype == "bfloat16":
        model = copy.deepcopy(model).to(torch.bfloat16)
    engine = RGNetGroundingEngine(model, memory_budget_bytes=int(args.memory_budget_mib * 2**20))
    return VideoLibrary(index, model, engine=engine, segment_windows=windows)


def _same_best_moment(found, reference) -> bool:
    """The best moments of two searches: the same video, temporal IoU >= 0.5."""
    if not len(found.rows) or not len(reference.rows) or found.videos[0] != reference.videos[0]:
        return False
    return bool(temporal_iou_matrix(found.rows[:1, :2], reference.rows[:1, :2])[0, 0] >= 0.5)


def bench_search(args, model, depths: list[int]) -> dict:
    """The recall table, the agreement and the batched latency of `--hours` hours."""
    report: dict = {
        "hours": args.hours,
        "queries": args.queries,
        "model": args.model or "random mad-size",
    }
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (cache, truth), generate = _timed(
            lambda: make_library(
                folder, args.hours, args.video_minutes, args.queries, args.signal, args.alignment, args.seed
            )
        )
        index, build = _timed(lambda: LibraryIndex.update(folder / "index", [cache], model.config)[0])
        library = VideoLibrary(index, model)
        sentence = np.stack([row[4] for row in truth]).astype(np.float32)
        text = np.random.default_rng(args.seed + 1).normal(size=(len(truth), 8, model.config.text_feature_size))
        text = _unit(text).astype(np.float32)
        report["library"] = {
            "videos": len(index.videos),
            "segments": index.backend.size,
            "windows": int(sum(len(library._grid_bounds(p)) for p in range(len(index.videos)))),
            "index_build_s": round(build, 2),
        }
        truth_windows = [_true_windows(library, key, start, end) for _, key, start, end, _ in truth]
        exhaustive, exhaustive_s = None, None
        if not args.prefilter_only:
            exhaustive, exhaustive_s = _timed(
                lambda: library.search(text_features=text, sentence_features=sentence, top_k=5, exhaustive=True)
            )
        recall, agreement, latency, candidates = {}, {}, {}, {}
        for depth in depths:
            rows, prefilter_s = _timed(lambda depth=depth: library._candidate_windows(sentence, depth), repeats=3)
            found = [set(map(tuple, rows[rows[:, 1] == query][:, [0, 2]].tolist())) for query in range(len(truth))]
            recall[depth] = float(np.mean([bool(found[q] & truth_windows[q]) for q in range(len(truth))]))
            candidates[depth] = float(np.mean([len(windows) for windows in found]))
            latency[depth] = {"prefilter_s": round(prefilter_s / len(truth), 4)}
            if args.prefilter_only:
                continue
            results, seconds = _timed(
                lambda depth=depth: library.search(text_features=text, sentence_features=sentence, top_k=5, depth=depth)
            )
            hits = []
            for reference, result in zip(exhaustive, results):
                best_video, best = reference.videos[0], reference.rows[:1, :2]
                same = result.videos[:5] == best_video
                iou = temporal_iou_matrix(result.rows[:5, :2], best)[:, 0]
                hits.append(bool((same & (iou >= 0.5)).any()))
            agreement[depth] = float(np.mean(hits))
            latency[depth]["search_s"] = round(seconds / len(truth), 3)
        report.update(
            {
                "prefilter_recall": recall,
                "agreement_at_5": agreement,
                "mean_candidate_windows": candidates,
                "latency_per_query": {
                    "by_depth": latency,
                    "exhaustive_s": None if exhaustive_s is None else round(exhaustive_s / len(truth), 3),
                },
            }
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="library size for the search measurements")
    parser.add_argument("--video-minutes", type=float, default=30.0)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--depths", default="10,50,200")
    parser.add_argument("--signal", type=float, default=1.0)
    parser.add_argument("--alignment", type=float, default=0.5)
    parser.add_argument("--index-hours", default="1,10,100", help="sizes of the index-alone measurement ('' for none)")
    parser.add_argument(
        "--index-vectors",
        choices=("random", "scenes"),
        default="random",
        help="index-alone vectors: uniform on the sphere, or runs of segments around scene directions",
    )
    parser.add_argument(
        "--index-training-per-cell",
        type=int,
        default=None,
        help="index-alone, IVF sizes: k-means samples at most this many vectors per cell (FAISS's 256 by default)",
    )
    parser.add_argument(
        "--index-nprobes", default="", help="index-alone, IVF sizes: also search the built index with these nprobe"
    )
    parser.add_argument(
        "--index-types",
        default="auto",
        help="index-alone: the index types built at each size (auto: the rule's; e.g. ivf,ivfsq8,ivfpq), one set of "
        "k-means cells shared by the IVF ones",
    )
    parser.add_argument("--model", default=None, help="a trained RGNet folder (512-d features at 0.2 s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--prefilter-only", action="store_true", help="measure the pre-filter alone (no RGNet scoring, no agreement)"
    )
    parser.add_argument("--latency-hours", default="", help="library sizes of the latency measurement ('' for none)")
    parser.add_argument("--latency-depths", default="200,1000")
    parser.add_argument("--latency-queries", type=int, default=8)
    parser.add_argument("--latency-budget-s", type=float, default=120.0, help="per setting: stop after this long")
    parser.add_argument("--exhaustive-max-hours", type=float, default=10.0, help="exhaustive latency up to this size")
    parser.add_argument("--latency-model", choices=("mad", "small"), default="mad")
    parser.add_argument(
        "--memory-budget-mib", type=float, default=2048.0, help="the latency engine's memory budget (default 2 GiB)"
    )
    parser.add_argument(
        "--latency-only", action="store_true", help="only the latency and index measurements (no recall table)"
    )
    parser.add_argument(
        "--latency-modes",
        default="",
        help="latency: also search each query in these modes, DTYPE/WINDOWS (e.g. bfloat16/overlapping,float32/central"
        "), alternating query by query with the float32/overlapping search",
    )
    parser.add_argument(
        "--compare-per-video",
        action="store_true",
        help="latency: also run each query with one engine call per video (the unbatched path) and report the ratio",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    depths = [int(depth) for depth in args.depths.split(",")]
    model = None
    if args.model:
        model = RGNetForVideoGrounding.from_pretrained(args.model).eval().to(args.device)
    elif not args.latency_only:
        torch.manual_seed(args.seed)
        model = RGNetForVideoGrounding(RGNetConfig.from_preset("mad", feature_encoder=None)).eval().to(args.device)
    nprobes = tuple(int(n) for n in args.index_nprobes.split(",") if n)
    report: dict = {"torch_threads": torch.get_num_threads()}
    if not args.latency_only:
        report.update(bench_search(args, model, depths))
    if args.latency_hours:
        latency = model if args.model else latency_model(args.latency_model, args.seed).to(args.device)
        latency_depths = [int(depth) for depth in args.latency_depths.split(",")]
        report["latency"] = {
            "model": args.model or f"random {args.latency_model}-size",
            "depths": latency_depths,
            "libraries": [
                bench_latency(float(hours), latency, args, latency_depths)
                for hours in args.latency_hours.split(",")
                if hours
            ],
        }
    report["index"] = [
        bench_index_alone(
            float(hours),
            args.seed,
            args.index_vectors,
            nprobes=nprobes,
            training_points_per_cell=args.index_training_per_cell,
            index_types=tuple(args.index_types.split(",")),
        )
        for hours in args.index_hours.split(",")
        if hours
    ]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
