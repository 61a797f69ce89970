"""Writers of the on-disk formats, and small synthetic releases in the official layouts.

Used by the tests, the benchmark and the documentation examples. The releases contain the oddities of real data:
moments at 0 s and at the very end, zero-length and sub-feature moments, ends past the
duration, a negative start, reversed NaQ windows, null queries, sentences with newlines and emoji, a video shorter
than one window, feature arrays one row short, integer (rounded) Ego4D durations, npz archives with a stray
`allow_pickle` member, and feature rows with norms far from 1.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..configuration_rgnet import EGO4D_SECONDS_PER_FEATURE

__all__ = [
    "encode_npz",
    "make_cone_release",
    "make_ego4d_release",
    "make_mad_release",
    "write_h5",
    "write_jsonl",
    "write_lmdb",
    "write_pt_dir",
]


def write_h5(path: str | Path, arrays: Mapping[str, np.ndarray], dtype: str | None = None) -> Path:
    """A flat HDF5 file, one dataset per key at the root (the MAD layout)."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        for key, array in arrays.items():
            file.create_dataset(key, data=np.asarray(array, dtype=dtype) if dtype else np.asarray(array))
    return path


def encode_npz(arrays: Mapping[str, np.ndarray], stray_allow_pickle: bool = True) -> bytes:
    """The bytes of an `np.savez_compressed` archive; `stray_allow_pickle` adds the 0-d bool `allow_pickle` member that
    the official writers produced under NumPy 1.x."""
    members = dict(arrays)
    if stray_allow_pickle:
        members["allow_pickle"] = np.array(True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in members.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            archive.writestr(f"{name}.npy", member.getvalue())
    return buffer.getvalue()


def write_lmdb(path: str | Path, values: Mapping[str, bytes], map_size: int = 1 << 30) -> Path:
    """An lmdb environment directory (`data.mdb` + `lock.mdb`) with UTF-8 keys."""
    import lmdb

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    environment = lmdb.open(str(path), map_size=map_size)
    with environment.begin(write=True) as transaction:
        for key, value in values.items():
            transaction.put(key.encode("utf-8"), value)
    environment.close()
    return path


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """jsonl as the CONE/RGNet `save_jsonl` writes it: ASCII-escaped, no trailing newline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    return path


def write_pt_dir(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """`{key}.pt` float32 tensors (the EgoVLP per-clip layout)."""
    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        torch.save(torch.from_numpy(np.asarray(array, dtype=np.float32)), path / f"{key}.pt")
    return path


def _features(rng: np.random.Generator, num_rows: int, dim: int, scale: float = 10.0) -> np.ndarray:
    """Rows with norms around `scale` (real CLIP rows have norms of about 8-12, not 1)."""
    return (rng.standard_normal((num_rows, dim)) * scale / np.sqrt(dim)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# MAD


def make_mad_release(
    root: str | Path,
    *,
    num_movies: int = 4,
    frames_per_movie: int | tuple[int, int] = (2400, 4000),
    queries_per_movie: int = 6,
    feature_dim: int = 512,
    text_dim: int = 512,
    dtype: str = "float32",
    seed: int = 0,
) -> dict[str, Path]:
    """A MAD-layout release: `annotations/MAD_{train,val,test}.json` and `features/CLIP_B32_*.h5`.

    Movies are split train / val / test round-robin. The first training movie carries the odd rows (zero-length,
    negative start, start past the duration, moment at 0 s, moment ending at the duration, sentence with a newline
    and emoji); the last movie is shorter than one 900-frame window; features are one row shorter than
    `duration * 5`.

    Returns:
        `{"annotations_dir", "video_features", "text_features", "sentence_features"}` paths.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = {"train": {}, "val": {}, "test": {}}
    frames, tokens, sentences = {}, {}, {}
    split_names = ["train", "val", "test"]
    query_counter = 0
    for movie_index in range(num_movies):
        movie = f"{1000 + movie_index}_SYNTHETIC_MOVIE_{movie_index}"
        if isinstance(frames_per_movie, int):
            num_frames = frames_per_movie
        else:
            num_frames = int(rng.integers(frames_per_movie[0], frames_per_movie[1]))
        if movie_index == num_movies - 1 and num_movies > 1:
            num_frames = 600  # shorter than one 900-frame window
        duration = (num_frames + 1) * 0.2  # one feature row short of duration * 5
        frames[movie] = _features(rng, num_frames, feature_dim)
        split = split_names[movie_index % 3] if num_movies >= 3 else "train"
        for _ in range(queries_per_movie):
            length = float(rng.choice([0.8, 2.0, 4.1, 6.5, 12.0]))
            start = round(float(rng.uniform(0, duration - length)), 2)
            qid = str(query_counter)
            query_counter += 1
            splits[split][qid] = {
                "movie": movie,
                "sentence": f"Someone walks to the door number {qid}.",
                "timestamps": [start, round(start + length, 2)],
                "ext_timestamps": [start, round(start + max(length, 2.0), 2)],
                "movie_duration": duration,
                "tokens": ["someone", "walks"],
            }
        if movie_index == 0:
            odd = {
                "zero_length": [30.0, 30.0],
                "negative_start": [-0.4, 3.0],
                "start_after_end": [duration + 1.0, duration + 3.0],
                "at_start": [0.0, 2.4],
                "at_end": [duration - 3.0, duration],
                "sub_feature": [10.05, 10.15],
            }
            for name, timestamps in odd.items():
                qid = str(query_counter)
                query_counter += 1
                sentence = "He looks up.\nShe smiles \u2014 \U0001f600" if name == "at_start" else f"Odd row {name}."
                splits[split][qid] = {
                    "movie": movie,
                    "sentence": sentence,
                    "timestamps": timestamps,
                    "ext_timestamps": timestamps,
                    "movie_duration": duration,
                }
    for split in splits.values():
        for qid in split:
            tokens[qid] = _features(rng, int(rng.integers(4, 30)), text_dim, scale=5.0)
    for qid in splits["test"]:
        sentences[qid] = _features(rng, 1, text_dim)[0]

    annotations_dir = root / "annotations"
    annotations_dir.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        (annotations_dir / f"MAD_{split}.json").write_text(json.dumps(records), encoding="utf-8")
    features_dir = root / "features"
    return {
        "annotations_dir": annotations_dir,
        "video_features": write_h5(features_dir / "CLIP_B32_frames_features_5fps.h5", frames, dtype=dtype),
        "text_features": write_h5(features_dir / "CLIP_B32_language_tokens_features.h5", tokens, dtype=dtype),
        "sentence_features": write_h5(features_dir / "CLIP_B32_language_features_MAD_test.h5", sentences),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Ego4D-NLQ


def _ego4d_clip(rng, video_uid: str, clip_uid: str, start_sec: float, length: float, queries: list[dict]) -> dict:
    return {
        "clip_uid": clip_uid,
        "video_start_sec": start_sec,
        "video_end_sec": start_sec + length,
        "video_start_frame": int(start_sec * 30),
        "video_end_frame": int((start_sec + length) * 30),
        "clip_start_sec": 0,
        "clip_end_sec": length,
        "clip_start_frame": 0,
        "clip_end_frame": int(length * 30),
        "source_clip_uid": f"source-{clip_uid}",
        "annotations": [
            {"annotation_uid": f"ann-{clip_uid}-{index}", "language_queries": queries[index::2]} for index in range(2)
        ],
    }


def _ego4d_query(start: float, end: float, query: str | None, clip_start: float) -> dict:
    return {
        "clip_start_sec": start,
        "clip_end_sec": end,
        "video_start_sec": clip_start + start,
        "video_end_sec": clip_start + end,
        "video_start_frame": int((clip_start + start) * 30),
        "video_end_frame": int((clip_start + end) * 30),
        "template": "Objects: Where is object X?",
        "query": query,
        "slot_x": "object",
        "verb_x": "[verb_not_applicable]",
        "slot_y": None,
        "verb_y": "[verb_not_applicable]",
        "raw_tags": ["Objects: Where is object X?", "object", None],
    }


def make_ego4d_release(
    root: str | Path,
    *,
    num_clips: int = 6,
    queries_per_clip: int = 6,
    feature_dim: int = 256,
    text_dim: int = 512,
    seconds_per_feature: float = EGO4D_SECONDS_PER_FEATURE,
    version: str = "v1",
    seed: int = 0,
) -> dict[str, Path]:
    """An Ego4D-NLQ-layout release: `annotations/nlq_*.json` (train, val, test, NaQ train), `egovlp/{clip_uid}.pt`
    EgoVLP-like features `[~duration * 1.87, 256]`, and a CONE-style text lmdb keyed by query id (tokens + cls).

    Clips are split train / val / test round-robin; the first training clip is 150 s long (so its late queries have
    no negative window) and carries a null query, a zero-length moment and an end past the clip; the NaQ file adds
    reversed narration windows.

    Returns:
        `{"annotations_dir", "video_features_dir", "text_features"}` paths.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    suffix = "" if version == "v1" else "_v2"
    split_names = ["train", "val", "test"]
    files = {
        name: {"version": version, "date": "2022", "description": "synthetic", "manifest": "", "videos": []}
        for name in split_names
    }
    clip_features, text_values = {}, {}
    naq_videos = []

    def add_text(query_id: str) -> None:
        tokens = _features(rng, int(rng.integers(3, 25)), text_dim, scale=5.0)
        cls = _features(rng, 1, feature_dim)[0]
        text_values[query_id] = encode_npz({"cls_features": cls, "token_features": tokens})

    for clip_index in range(num_clips):
        split = split_names[clip_index % 3]
        video_uid = f"video-{clip_index:03d}"
        clip_uid = f"clip-{clip_index:03d}"
        length = 150.0 if clip_index == 0 else float(rng.choice([480.0, 479.9, 360.5]))
        clip_start = float(rng.uniform(0, 600))
        # EgoVLP: about floor(duration * 1.87) rows; this one is one row short.
        clip_features[clip_uid] = _features(rng, int(length / seconds_per_feature) - 1, feature_dim)
        queries = []
        for _ in range(queries_per_clip):
            moment = float(rng.choice([0.0, 1.5, 6.0, 20.0]))
            start = round(float(rng.uniform(0, length - moment)), 3)
            queries.append(_ego4d_query(start, round(start + moment, 3), "where did I put the cup?", clip_start))
        if clip_index == 0:
            queries += [
                _ego4d_query(20.0, 22.0, None, clip_start),  # null query
                _ego4d_query(40.0, 40.0, "what did I cut?", clip_start),  # zero length
                _ego4d_query(140.0, length + 0.4, "where is the knife?", clip_start),  # end past the clip
                _ego4d_query(10.0, 100.0, "who did I talk to?", clip_start),  # no negative window
                _ego4d_query(0.0, 3.0, "where was the phone?", clip_start),  # starts at 0
            ]
        clip = _ego4d_clip(rng, video_uid, clip_uid, clip_start, length, queries)
        if split == "test":
            for annotation in clip["annotations"]:
                annotation["language_queries"] = [{"query": q["query"]} for q in annotation["language_queries"]]
        files[split]["videos"].append({"video_uid": video_uid, "split": split, "clips": [clip]})
        for annotation in clip["annotations"]:
            for query_idx, query in enumerate(annotation["language_queries"]):
                if query.get("query"):
                    add_text(f"{annotation['annotation_uid']}_{query_idx}")
        if split == "train":
            # NaQ: narrations of the same clip, annotation_uid = f"{video_uid}_{clip_uid}", some windows reversed.
            narrations = []
            for index in range(queries_per_clip):
                start = round(float(rng.uniform(5, length - 10)), 3)
                end = round(start + float(rng.uniform(1, 8)), 3)
                pair = (end, start) if index % 3 == 0 else (start, end)
                narrations.append(
                    {
                        "clip_start_sec": pair[0],
                        "clip_end_sec": pair[1],
                        "video_start_sec": clip_start + pair[0],
                        "video_end_sec": clip_start + pair[1],
                        "query": f"C picks the object {index}",
                    }
                )
            annotation_uid = f"{video_uid}_{clip_uid}"
            naq_clip = {
                "clip_uid": clip_uid,
                "video_start_sec": clip_start,
                "video_end_sec": clip_start + length,
                "video_start_frame": int(clip_start * 30),
                "video_end_frame": int((clip_start + length) * 30),
                "annotations": [{"annotation_uid": annotation_uid, "language_queries": narrations}],
            }
            naq_videos.append({"video_uid": video_uid, "clips": [naq_clip]})
            for query_idx in range(len(narrations)):
                add_text(f"{annotation_uid}_{query_idx}")

    annotations_dir = root / "annotations"
    annotations_dir.mkdir(parents=True, exist_ok=True)
    names = {
        "train": f"nlq_train{suffix}.json",
        "val": f"nlq_val{suffix}.json",
        "test": f"nlq_test_unannotated{suffix}.json",
    }
    for split, name in names.items():
        (annotations_dir / name).write_text(json.dumps(files[split]), encoding="utf-8")
    # The NaQ-augmented file holds the NLQ training videos plus the narration clips, under "videos" only.
    naq = {"videos": files["train"]["videos"] + naq_videos}
    (annotations_dir / f"nlq_aug_naq_train{suffix}.json").write_text(json.dumps(naq), encoding="utf-8")
    return {
        "annotations_dir": annotations_dir,
        "video_features_dir": write_pt_dir(root / "egovlp", clip_features),
        "text_features": write_lmdb(root / "egovlp_clip_text_features", text_values),
    }


# ----------------------------------------------------------------------------------------------------------------------
# CONE / RGNet variant


def make_cone_release(root: str | Path, dataset_name: str, *, seed: int = 0) -> dict[str, Path]:
    """A CONE/RGNet `data/` folder: jsonl files with RGNet's flat names and the lmdb feature databases.

    Built from [`make_mad_release`] / [`make_ego4d_release`] output converted the way CONE's `reformat_data.py` does
    (Ego4D durations rounded to integers, `clip_video_start_end`, no timestamps in test).

    Returns:
        `{"data_dir", "video_features", "text_features"}` (and `"naq_video_features"`, `"naq_text_features"` for
        Ego4D).
    """
    import torch

    root = Path(root)
    rng = np.random.default_rng(seed)
    data_dir = root / "data"
    if dataset_name == "mad":
        raw = make_mad_release(root / "raw", num_movies=4, frames_per_movie=(1500, 2500), seed=seed)
        import h5py

        with h5py.File(raw["video_features"], "r") as file:
            videos = {key: encode_npz({"features": file[key][()].astype(np.float32)}) for key in file}
        with h5py.File(raw["text_features"], "r") as file:
            texts = {}
            for key in file:
                tokens = file[key][()].astype(np.float32)
                texts[key] = encode_npz({"cls_features": _features(rng, 1, 512)[0], "token_features": tokens})
        for split, out in (("train", "mad_train"), ("val", "mad_val"), ("test", "mad_test")):
            records = json.loads((raw["annotations_dir"] / f"MAD_{split}.json").read_text(encoding="utf-8"))
            rows = [
                {
                    "query_id": qid,
                    "query": r["sentence"],
                    "duration": r["movie_duration"],
                    "clip_id": r["movie"],
                    "video_id": r["movie"],
                    "timestamps": r["timestamps"],
                }
                for qid, r in records.items()
            ]
            write_jsonl(data_dir / f"{out}.jsonl", rows)
        lmdb_dir = data_dir / "mad_data_for_cone" / "offline_lmdb"
        return {
            "data_dir": data_dir,
            "video_features": write_lmdb(lmdb_dir / "CLIP_B32_frames_features_5fps", videos),
            "text_features": write_lmdb(lmdb_dir / "clip_clip_text_features", texts),
        }
    if dataset_name != "ego4d":
        raise ValueError(f"dataset_name must be 'mad' or 'ego4d', got {dataset_name!r}")
    raw = make_ego4d_release(root / "raw", seed=seed)
    videos = {
        path.stem: encode_npz({"features": torch.load(path, weights_only=True).numpy()})
        for path in sorted(raw["video_features_dir"].glob("*.pt"))
    }

    def convert(name: str, annotated: bool) -> list[dict]:
        data = json.loads((raw["annotations_dir"] / name).read_text(encoding="utf-8"))
        rows = []
        for video in data["videos"]:
            for clip in video["clips"]:
                start, end = int(clip["video_start_sec"] + 0.5), int(clip["video_end_sec"] + 0.5)
                for annotation in clip["annotations"]:
                    for query_idx, query in enumerate(annotation["language_queries"]):
                        if not query.get("query"):
                            continue
                        row = {
                            "query": query["query"],
                            "query_id": f"{annotation['annotation_uid']}_{query_idx}",
                            "duration": end - start,
                            "clip_id": clip["clip_uid"],
                            "video_id": video["video_uid"],
                            "clip_video_start_end": [start, end],
                        }
                        if annotated:
                            row["timestamps"] = [query["clip_start_sec"], query["clip_end_sec"]]
                        rows.append(row)
        return rows

    write_jsonl(data_dir / "ego_train.jsonl", convert("nlq_train.json", True))
    write_jsonl(data_dir / "ego_val.jsonl", convert("nlq_val.json", True))
    write_jsonl(data_dir / "naq_train.jsonl", convert("nlq_aug_naq_train.json", True))
    write_jsonl(data_dir / "ego_test.jsonl", convert("nlq_test_unannotated.json", False))
    lmdb_dir = data_dir / "ego4d_nlq_data_for_cone" / "offline_lmdb"
    import lmdb

    environment = lmdb.open(str(raw["text_features"]), readonly=True, lock=False)
    with environment.begin() as transaction:
        texts = {bytes(k).decode(): bytes(v) for k, v in transaction.cursor()}
    environment.close()
    return {
        "data_dir": data_dir,
        "video_features": write_lmdb(lmdb_dir / "egovlp_video_feature_1.87fps", videos),
        "text_features": write_lmdb(lmdb_dir / "egovlp_clip_text_features", texts),
        "naq_video_features": write_lmdb(lmdb_dir / "egovlp_video_feature_naq", videos),
        "naq_text_features": write_lmdb(lmdb_dir / "egovlp_clip_text_features_naq", texts),
    }
