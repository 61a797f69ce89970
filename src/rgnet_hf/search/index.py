"""A library index on disk: a JSON manifest of the videos and a vector index of their segments.

`INDEX_DIR/manifest.json` lists each video (key, source path, duration, rate, encoder, feature file, frame count, a
content hash of its features, and the ids of its segment vectors); `INDEX_DIR/vectors-<n>.faiss` holds the segment
vectors. The manifest names the vector file it goes with and is replaced last (an atomic rename), so a failed or
interrupted update leaves the previous index whole. Features stay in their caches and are read per video when a
query needs them: the frames of the candidate windows only, for a pre-filtered search.

A segment vector is the mean of the L2-normalised frame features of `segment_seconds` (4 s by default), normalised
again: every frame weighs the same whatever its norm, and the inner product with an L2-normalised sentence feature
is the cosine of the query with the segment's average appearance.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..windowing import frame_runs_of_windows
from .backends import CODE_MEMORY_LIMIT, FLAT_LIMIT, FaissBackend, IndexSpec, VectorBackend, choose_index_spec

__all__ = ["IndexUpdate", "LibraryIndex", "VideoEntry", "frame_runs_of_windows", "segment_vectors"]

MANIFEST = "manifest.json"
FORMAT = "rgnet_hf.library/1"
DEFAULT_SEGMENT_SECONDS = 4.0
_HASH_ROWS = 65536
# An update's new segment vectors past this size wait in an unlinked temporary file next to the index rather than in
# memory, and reach the vector store in chunks of ADD_CHUNK_ROWS: a first build of 10,000 hours (17 GiB of float32
# vectors) then holds in memory only what the store keeps (its compressed codes, for IVF-PQ).
IN_MEMORY_VECTOR_BYTES = 2**30
ADD_CHUNK_ROWS = 2**18


def segment_vectors(features: np.ndarray, segment_frames: int) -> np.ndarray:
    """
    `(T, D)` frame features -> `(ceil(T / segment_frames), D)` float32 unit segment vectors (the mean of the
    L2-normalised frames of each segment, normalised again; an all-zero segment stays zero).
    """
    features = np.asarray(features, dtype=np.float32)
    num_frames, dimension = features.shape
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = np.divide(features, norms, out=np.zeros_like(features), where=norms > 0)
    num_segments = -(-num_frames // segment_frames)
    padded = np.zeros((num_segments * segment_frames, dimension), dtype=np.float32)
    padded[:num_frames] = unit
    sums = padded.reshape(num_segments, segment_frames, dimension).sum(1)
    lengths = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.divide(sums, lengths, out=np.zeros_like(sums), where=lengths > 0)


@dataclass
class VideoEntry:
    """One video of a library (a manifest row)."""

    key: str
    source: str
    duration: float
    seconds_per_feature: float
    encoder: str | None
    feature_file: str
    num_frames: int
    content_hash: str
    first_id: int
    num_segments: int


@dataclass
class IndexUpdate:
    """What `LibraryIndex.update` did: keys added, re-indexed (features changed) and already indexed (unchanged)."""

    added: list[str]
    reindexed: list[str]
    unchanged: list[str]


def _read_entry(path: Path, key: str) -> tuple[np.ndarray, dict]:
    import h5py

    with h5py.File(path, "r") as handle:
        entry = handle[key]
        attrs = {**dict(handle.attrs), **dict(entry.attrs)}
        return entry[()], attrs


def _content_hash(features: np.ndarray) -> str:
    """sha256 of the shape and the float32 little-endian bytes of the features."""
    digest = hashlib.sha256(repr(tuple(features.shape)).encode())
    array = np.ascontiguousarray(features, dtype="<f4")
    for start in range(0, len(array), _HASH_ROWS):
        digest.update(array[start : start + _HASH_ROWS].tobytes())
    return digest.hexdigest()


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class _VectorSpool:
    """Room for an update's new `(capacity, D)` segment vectors: an array in memory, or a memory map of an unlinked
    temporary file in `directory` when it would exceed `IN_MEMORY_VECTOR_BYTES` (the file goes when it is closed, or
    with the process)."""

    def __init__(self, capacity: int, dimension: int, directory: Path):
        self.count = 0
        self._file = None
        self.on_disk = capacity * dimension * 4 > IN_MEMORY_VECTOR_BYTES
        if self.on_disk:
            self._file = tempfile.TemporaryFile(dir=directory, prefix=".segments-")
            self._array = np.memmap(self._file, dtype=np.float32, mode="w+", shape=(capacity, dimension))
        else:
            self._array = np.empty((capacity, dimension), dtype=np.float32)

    def append(self, vectors: np.ndarray) -> None:
        self._array[self.count : self.count + len(vectors)] = vectors
        self.count += len(vectors)

    @property
    def vectors(self) -> np.ndarray:
        return self._array[: self.count]

    def close(self) -> None:
        self._array = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> _VectorSpool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _by_rule(index_type: str, *settings: int | None) -> bool:
    """Whether an index is built as the size rule alone picks it (nothing of it set by hand)."""
    return index_type == "auto" and all(setting is None for setting in settings)


def _existing_parent(folder: Path) -> Path:
    while not folder.is_dir():
        folder = folder.parent
    return folder


class LibraryIndex:
    """
    The manifest and vector index of a library folder. Open one with [`LibraryIndex.open`]; build or extend one with
    [`LibraryIndex.update`] (the `rgnet-hf index` command).

    Attributes:
        folder (`Path`), videos (`list[VideoEntry]`, in order of their segment ids), backend ([`VectorBackend`]),
        spec ([`IndexSpec`]), encoder, seconds_per_feature, feature_size, segment_frames: what the manifest records.
    """

    def __init__(self, folder: Path, manifest: dict, backend: VectorBackend):
        self.folder = folder
        self.manifest = manifest
        self.backend = backend
        self.videos = [VideoEntry(**video) for video in manifest["videos"]]
        self.spec = IndexSpec.from_dict(manifest["index"])
        self._first_ids = np.array([video.first_id for video in self.videos], dtype=np.int64)

    encoder = property(lambda self: self.manifest["encoder"])
    seconds_per_feature = property(lambda self: float(self.manifest["seconds_per_feature"]))
    feature_size = property(lambda self: int(self.manifest["feature_size"]))
    segment_frames = property(lambda self: int(self.manifest["segment_frames"]))
    # whether the index type came from the size rule (True for manifests written before this was recorded)
    by_rule = property(lambda self: bool(self.manifest.get("index_by_rule", True)))

    # ------------------------------------------------------------------ reading
    @classmethod
    def open(cls, folder: str | os.PathLike) -> LibraryIndex:
        folder = Path(folder)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{folder} is not a library index (no {MANIFEST}); build one with `rgnet-hf index`")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{manifest_path} is not valid JSON ({error}); rebuild the index with `rgnet-hf index`"
            ) from error
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest_path} is not a {FORMAT} manifest; rebuild the index with `rgnet-hf index`")
        try:
            spec = IndexSpec.from_dict(manifest["index"])
            videos = [VideoEntry(**video) for video in manifest["videos"]]
            feature_size, vectors_file = int(manifest["feature_size"]), str(manifest["vectors_file"])
            for name in ("encoder", "seconds_per_feature", "segment_frames", "next_id", "generation"):
                manifest[name]  # noqa: B018 - present, or the manifest is incomplete
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{manifest_path} is incomplete or damaged ({type(error).__name__}: {error}); rebuild the index with "
                "`rgnet-hf index`"
            ) from error
        backend = FaissBackend.load(folder / vectors_file, spec, feature_size)
        expected = sum(video.num_segments for video in videos)
        if backend.size != expected:
            raise ValueError(
                f"{folder / vectors_file} holds {backend.size} vectors but {MANIFEST} lists {expected} "
                "segments: the index is inconsistent; rebuild it with `rgnet-hf index`"
            )
        return cls(folder, manifest, backend)

    def check_fits(self, config) -> None:
        """Refuse a model that reads other features than the index was built from (encoder, rate, size)."""
        remedy = "search with the model the index was built for, or build an index for this model with `rgnet-hf index`"
        if not np.isclose(self.seconds_per_feature, float(config.seconds_per_feature)):
            raise ValueError(
                f"{self.folder} was built from features at {self.seconds_per_feature} s per feature, but the model "
                f"reads {config.seconds_per_feature} s per feature; {remedy}"
            )
        if self.feature_size != config.video_feature_size:
            raise ValueError(
                f"{self.folder} was built from {self.feature_size}-d features, but the model reads "
                f"{config.video_feature_size}-d video features; {remedy}"
            )
        model_encoder = getattr(config, "feature_encoder", None)
        if self.encoder and model_encoder and str(self.encoder) != str(model_encoder):
            raise ValueError(
                f"{self.folder} was built from {self.encoder!r} features, but the model reads {model_encoder!r} "
                f"features; {remedy}"
            )

    def segments_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Segment ids -> (position of the video in `videos`, segment number within it)."""
        ids = np.asarray(ids, dtype=np.int64)
        videos = np.searchsorted(self._first_ids, ids, side="right") - 1
        return videos, ids - self._first_ids[videos]

    def read_features(self, position: int, frame_runs: np.ndarray | None = None, compact: bool = False) -> np.ndarray:
        """
        The `(T, D)` float32 features of `videos[position]`, read from its cache (one video at a time).

        Args:
            position (`int`): the video's position in `videos`.
            frame_runs (`np.ndarray` of shape `(R, 2)`, *optional*): sorted, disjoint `[start, end)` frame ranges to
                read (one HDF5 read each, `frame_runs_of_windows`); the other frames of the returned array are zero.
                The array keeps the video's length, so window indices and the window grid stay the video's. All
                frames by default (one read of the whole dataset).
            compact (`bool`): return only the frames of `frame_runs`, one run after another: `(F, D)` with `F` the
                runs' total length (each run clipped to the video).
        """
        import h5py

        video = self.videos[position]
        path = Path(video.feature_file)
        if not path.is_file():
            raise FileNotFoundError(
                f"the library's video {video.key!r} reads its features from {path}, which does not exist: restore that "
                "file, or index the video again from where its features are now"
            )
        with h5py.File(path, "r") as handle:
            if video.key not in handle:
                raise KeyError(f"{path} has no entry {video.key!r} any more: the index is stale; index it again")
            dataset = handle[video.key]
            if tuple(dataset.shape) != (video.num_frames, self.feature_size):
                raise ValueError(
                    f"{path} [{video.key}] has shape {tuple(dataset.shape)} but was indexed with "
                    f"{(video.num_frames, self.feature_size)}: its features changed; index it again "
                    "(`rgnet-hf index --reindex-changed`)"
                )
            whole = frame_runs is None or (
                len(frame_runs) == 1 and frame_runs[0, 0] <= 0 and frame_runs[0, 1] >= video.num_frames
            )
            if whole:
                return dataset[()].astype(np.float32, copy=False)
            runs = np.clip(np.asarray(frame_runs, dtype=np.int64).reshape(-1, 2), 0, video.num_frames)
            lengths = np.maximum(runs[:, 1] - runs[:, 0], 0)
            # compact: run i lands at offsets[i]; otherwise every run lands at its own frames
            offsets = np.cumsum(lengths) - lengths if compact else runs[:, 0]
            shape = (int(lengths.sum()) if compact else video.num_frames, self.feature_size)
            features = np.zeros(shape, dtype=np.float32)
            for (start, end), offset in zip(runs.tolist(), offsets.tolist()):
                if start < end:  # HDF5 converts the stored type (float16 or float32) to float32 as it reads
                    dataset.read_direct(features, np.s_[start:end], np.s_[offset : offset + end - start])
            return features

    # ------------------------------------------------------------------ writing
    @classmethod
    def check_output(
        cls, folder: str | os.PathLike, config, feature_files: list[str | os.PathLike] = ()
    ) -> LibraryIndex | None:
        """
        The index at `folder` (checked against the model `config`), or None where a new one can be built there: a
        missing or empty folder, or one holding only some of `feature_files` (a cache `rgnet-hf index --videos`
        writes into the index folder, with its `.parts` / `.lock` companions). Anything else is refused, before
        any work.
        """
        folder = Path(folder)
        if (folder / MANIFEST).exists():
            existing = cls.open(folder)
            existing.check_fits(config)
            return existing
        if not folder.exists():
            return None
        if not folder.is_dir():
            raise FileExistsError(f"{folder} exists and is not a library index: give a new or empty --output folder")
        inside = folder.resolve()
        allowed = set()
        for feature_file in feature_files:
            path = Path(feature_file).resolve()
            if path.parent == inside:
                allowed.update({path.name, path.name + ".parts", path.name + ".lock"})
        foreign = sorted(entry.name for entry in folder.iterdir() if entry.name not in allowed)
        if foreign:
            raise FileExistsError(
                f"{folder} exists and is not a library index (it holds {', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}): give a new or empty --output folder"
            )
        return None

    @classmethod
    def update(
        cls,
        folder: str | os.PathLike,
        feature_files: list[str | os.PathLike],
        config,
        index_type: str = "auto",
        flat_limit: int = FLAT_LIMIT,
        nlist: int | None = None,
        nprobe: int | None = None,
        segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
        reindex_changed: bool = False,
        training_points_per_cell: int | None = None,
        pq_bytes: int | None = None,
        code_memory_limit: int = CODE_MEMORY_LIMIT,
    ) -> tuple[LibraryIndex, IndexUpdate]:
        """
        Build `folder` from the entries of `feature_files` (caches written by `rgnet-hf extract`), or add to the
        index already there the videos it does not hold. Every entry is checked against the model `config` (and an
        existing index's settings) before anything is written; a key already indexed from another file is refused;
        a video whose features changed is refused unless `reindex_changed` (its old segments are then replaced).
        The index type and segment length are fixed by the first build (`choose_index_spec`'s rule, or `index_type`,
        `nlist`, `nprobe` and `pq_bytes`); an IVF index's k-means samples at most `training_points_per_cell` of its
        vectors per cell (FAISS's 256 when None: fewer train faster and find fewer of the exact neighbours,
        docs/library_search.md). New segment vectors beyond 1 GiB wait in a temporary file next to the index, not in
        memory.

        The folder is locked for the call (`INDEX_DIR.lock` beside it, the lock of `rgnet-hf extract`): a second
        writer gets `OutputLockedError` at once, so that two updates never interleave and lose each other's videos.
        """
        import h5py

        from ..data.feature_cache import check_cache_entry_fits, lock_output

        folder = Path(folder)
        with lock_output(folder):  # from reading the manifest to swapping the new one in
            existing = cls.check_output(folder, config, feature_files)
            if not feature_files:
                raise ValueError("give at least one feature cache (--features CACHE.h5)")
            spf = float(config.seconds_per_feature)
            # 1. every entry named and checked (attributes only), before any feature is read
            seen: dict[str, Path] = {}
            entries: list[tuple[str, Path]] = []
            frame_counts: dict[tuple[Path, str], int] = {}
            for feature_file in feature_files:
                path = Path(feature_file).resolve()
                if not path.is_file():
                    raise FileNotFoundError(f"--features {feature_file}: no such file")
                if not h5py.is_hdf5(path):
                    raise ValueError(
                        f"--features {feature_file} is not an HDF5 feature cache (write one with rgnet-hf extract)"
                    )
                with h5py.File(path, "r") as handle:
                    keys = sorted(handle.keys())
                    for key in keys:
                        shape = getattr(handle[key], "shape", None) or (0,)
                        frame_counts[path, key] = int(shape[0])
                if not keys:
                    raise ValueError(f"--features {feature_file} holds no video")
                for key in keys:
                    if key in seen:
                        raise ValueError(
                            f"the key {key!r} is in both {seen[key]} and {path}: two videos would share one name in "
                            "the library; rename one entry or index the files into separate libraries"
                        )
                    check_cache_entry_fits(path, key, config)
                    seen[key] = path
                    entries.append((key, path))
            indexed = {video.key: video for video in existing.videos} if existing is not None else {}
            for key, path in entries:
                if key in indexed and Path(indexed[key].feature_file) != path:
                    raise ValueError(
                        f"the library already holds {key!r} from {indexed[key].feature_file}; {path} has another video "
                        "of that name: rename the entry, or build a separate library"
                    )
            # 2. features read once per video: content hash and segment vectors
            segment_frames = (
                existing.segment_frames if existing is not None else max(1, int(round(segment_seconds / spf)))
            )
            update = IndexUpdate([], [], [])
            new_entries, removed_ids = [], []
            capacity = sum(-(-frame_counts[path, key] // segment_frames) for key, path in entries)
            with _VectorSpool(capacity, int(config.video_feature_size), _existing_parent(folder)) as spool:
                next_id = int(existing.manifest["next_id"]) if existing is not None else 0
                library_encoder = existing.encoder if existing is not None else getattr(config, "feature_encoder", None)
                for key, path in entries:
                    features, attrs = _read_entry(path, key)
                    encoder = _text(attrs.get("encoder"))
                    if library_encoder is None:
                        library_encoder = encoder
                    elif encoder is not None and encoder != library_encoder:
                        raise ValueError(
                            f"{path} [{key}] holds features of encoder {encoder!r}, but the library holds "
                            f"{library_encoder!r} features: one library holds the features of one encoder; build a "
                            "separate library"
                        )
                    if features.ndim != 2 or len(features) == 0:
                        raise ValueError(
                            f"{path} [{key}] must hold (T, D) features with T >= 1, got shape {features.shape}"
                        )
                    if not np.isfinite(features).all():
                        raise ValueError(f"{path} [{key}] contains NaN or infinite features; extract that video again")
                    content_hash = _content_hash(features)
                    if key in indexed:
                        if indexed[key].content_hash == content_hash:
                            update.unchanged.append(key)
                            continue
                        if not reindex_changed:
                            raise ValueError(
                                f"{path} [{key}] changed since it was indexed (its content hash differs): refused, "
                                "nothing was written; pass --reindex-changed to replace its segments"
                            )
                        old = indexed[key]
                        removed_ids.append(np.arange(old.first_id, old.first_id + old.num_segments))
                        update.reindexed.append(key)
                    else:
                        update.added.append(key)
                    vectors = segment_vectors(features, segment_frames)
                    source = _text(attrs.get("source_path")) or _text(attrs.get("source")) or key
                    duration = float(attrs["duration"]) if "duration" in attrs else len(features) * spf
                    new_entries.append(
                        VideoEntry(
                            key=key,
                            source=source,
                            duration=duration,
                            seconds_per_feature=spf,
                            encoder=_text(attrs.get("encoder")),
                            feature_file=str(path),
                            num_frames=int(len(features)),
                            content_hash=content_hash,
                            first_id=next_id,
                            num_segments=int(len(vectors)),
                        )
                    )
                    spool.append(vectors)
                    next_id += len(vectors)
                if existing is not None and not new_entries:
                    return existing, update
                vectors = spool.vectors
                ids = np.arange(next_id - len(vectors), next_id, dtype=np.int64)
                # 3. the vector index updated in memory, written to a new file, then the manifest swapped in
                if existing is None:
                    spec = choose_index_spec(
                        len(vectors),
                        index_type,
                        flat_limit,
                        nlist,
                        nprobe,
                        dimension=int(config.video_feature_size),
                        pq_bytes=pq_bytes,
                        code_memory_limit=code_memory_limit,
                    )
                    backend = FaissBackend.create(spec, vectors.shape[1], vectors, training_points_per_cell)
                    videos: list[VideoEntry] = []
                    generation = 0
                else:
                    spec, backend = existing.spec, existing.backend
                    replaced = set(update.reindexed)
                    videos = [video for video in existing.videos if video.key not in replaced]
                    generation = int(existing.manifest["generation"]) + 1
                    if removed_ids:
                        backend.remove(np.concatenate(removed_ids))
                for start in range(0, len(ids), ADD_CHUNK_ROWS):
                    backend.add(ids[start : start + ADD_CHUNK_ROWS], vectors[start : start + ADD_CHUNK_ROWS])
                videos.extend(new_entries)
                manifest = {
                    "format": FORMAT,
                    "encoder": library_encoder,
                    "seconds_per_feature": spf,
                    "feature_size": int(config.video_feature_size),
                    "segment_seconds": segment_frames * spf,
                    "segment_frames": segment_frames,
                    "index": spec.to_dict(),
                    "index_by_rule": (
                        existing.by_rule if existing is not None else _by_rule(index_type, nlist, nprobe, pq_bytes)
                    ),
                    "next_id": next_id,
                    "generation": generation,
                    "vectors_file": f"vectors-{generation}.faiss",
                    "videos": [asdict(video) for video in videos],
                }
                return cls._commit(folder, manifest, backend, existing), update

    @classmethod
    def _commit(
        cls, folder: Path, manifest: dict, backend: VectorBackend, existing: LibraryIndex | None
    ) -> LibraryIndex:
        """Write the vector file, then swap the manifest in (atomic renames); the old vector file goes last."""
        folder.mkdir(parents=True, exist_ok=True)
        vectors_path = folder / manifest["vectors_file"]
        temporary_vectors = folder / f".{manifest['vectors_file']}.tmp-{os.getpid()}"
        temporary_manifest = folder / f".{MANIFEST}.tmp-{os.getpid()}"
        try:
            backend.save(temporary_vectors)
            os.replace(temporary_vectors, vectors_path)
            temporary_manifest.write_text(json.dumps(manifest, indent=1))
            os.replace(temporary_manifest, folder / MANIFEST)
        except BaseException:
            temporary_vectors.unlink(missing_ok=True)
            temporary_manifest.unlink(missing_ok=True)
            if existing is None or vectors_path.name != existing.manifest["vectors_file"]:
                vectors_path.unlink(missing_ok=True)
            raise
        if existing is not None and existing.manifest["vectors_file"] != manifest["vectors_file"]:
            (folder / existing.manifest["vectors_file"]).unlink(missing_ok=True)
        return cls(folder, manifest, backend)

    def outgrown(self, flat_limit: int = FLAT_LIMIT) -> IndexSpec | None:
        """The spec the size rule picks now, where this rule-chosen index has outgrown its own: another type, or at
        least 4x the IVF cells it was trained with. None otherwise (and for a type set by hand)."""
        if not self.by_rule:
            return None
        rule = self.rule_spec(flat_limit=flat_limit)
        if rule.type != self.spec.type or (rule.type != "flat" and rule.nlist >= 4 * self.spec.nlist):
            return rule
        return None

    def rule_spec(
        self,
        index_type: str = "auto",
        flat_limit: int = FLAT_LIMIT,
        nlist: int | None = None,
        nprobe: int | None = None,
        pq_bytes: int | None = None,
        code_memory_limit: int = CODE_MEMORY_LIMIT,
    ) -> IndexSpec:
        """The index `choose_index_spec` picks for this library's current number of segments."""
        return choose_index_spec(
            self.backend.size,
            index_type,
            flat_limit,
            nlist,
            nprobe,
            dimension=self.feature_size,
            pq_bytes=pq_bytes,
            code_memory_limit=code_memory_limit,
        )

    @classmethod
    def rebuild(
        cls,
        folder: str | os.PathLike,
        config,
        index_type: str = "auto",
        flat_limit: int = FLAT_LIMIT,
        nlist: int | None = None,
        nprobe: int | None = None,
        training_points_per_cell: int | None = None,
        pq_bytes: int | None = None,
        code_memory_limit: int = CODE_MEMORY_LIMIT,
    ) -> LibraryIndex:
        """
        Rebuild the vector index of the library at `folder` as the rule picks it for the library's current size (or
        as `index_type`, `nlist`, `nprobe`, `pq_bytes` set it), from the videos' features in their caches: an index
        grown past the size its first build was chosen for (a flat index of millions of segments, IVF cells trained on
        a small first library) gets the type and cells of its size. The videos, their order and the segment length
        stay; segment ids are numbered again from 0. Every video's features must still be those indexed (content
        hash): a changed one is refused before anything is written (re-index it with `reindex_changed` first). Until
        the new index replaces it, the old one stays whole. The folder is locked for the call, as in [`update`].
        """
        from ..data.feature_cache import lock_output

        folder = Path(folder)
        with lock_output(folder):  # one writer at a time, as in `update`
            existing = cls.open(folder)
            existing.check_fits(config)
            dimension = existing.feature_size
            spec = existing.rule_spec(index_type, flat_limit, nlist, nprobe, pq_bytes, code_memory_limit)
            total = existing.backend.size
            videos: list[dict] = []
            with _VectorSpool(total, dimension, folder) as spool:
                for video in existing.videos:
                    path = Path(video.feature_file)
                    if not path.is_file():
                        raise FileNotFoundError(
                            f"{video.key}: its feature cache {path} is missing; restore it (or build a new library "
                            "without that video) before rebuilding"
                        )
                    features, _ = _read_entry(path, video.key)
                    if _content_hash(features) != video.content_hash:
                        raise ValueError(
                            f"{path} [{video.key}] changed since it was indexed (its content hash differs): refused, "
                            "nothing was written; re-index it first (rgnet-hf index --features ... --reindex-changed)"
                        )
                    videos.append({**asdict(video), "first_id": spool.count})
                    spool.append(segment_vectors(features, existing.segment_frames))
                vectors = spool.vectors
                backend = FaissBackend.create(spec, dimension, vectors, training_points_per_cell)
                ids = np.arange(len(vectors), dtype=np.int64)
                for start in range(0, len(ids), ADD_CHUNK_ROWS):
                    backend.add(ids[start : start + ADD_CHUNK_ROWS], vectors[start : start + ADD_CHUNK_ROWS])
            generation = int(existing.manifest["generation"]) + 1
            manifest = {
                **existing.manifest,
                "index": spec.to_dict(),
                "index_by_rule": _by_rule(index_type, nlist, nprobe, pq_bytes),
                "next_id": len(ids),
                "generation": generation,
                "vectors_file": f"vectors-{generation}.faiss",
                "videos": videos,
            }
            return cls._commit(folder, manifest, backend, existing)
