"""Lazy, per-process readers of pre-extracted features.

Three on-disk layouts are supported (the releases that use them: docs/prepare_data.md):

- `"h5"`: one flat HDF5 file, one dataset per key (MAD frame features `[T, D]` at 5 fps keyed by movie id; MAD token
  features `[L, D]` keyed by annotation id; MAD sentence features `[D]`). Windows are read with h5py slicing, so only
  the rows of the window leave the disk.
- `"pt"`: a directory of `{key}.pt` tensors (Ego4D EgoVLP `[T, 256]` per clip). Files are memory-mapped when
  possible, so a window read touches only its pages. Per-video files (official SlowFast / Omnivore) are sliced to a
  clip with `clip_ranges`.
- `"lmdb"`: a CONE/RGNet lmdb environment whose values are `np.savez_compressed` archives (`features` for videos,
  `token_features` + `cls_features` for text). An archive is compressed as a whole, so a window read decompresses the
  whole video; a small per-process cache keeps the last few.

Every store opens its file once per process and reopens it after a fork (the handle is tied to `os.getpid()`), so the
same object can be shared by DataLoader workers. Stores are picklable: handles are dropped and reopened on use.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# The one definition of the text-feature normalisation, shared with the pipeline (which must stay importable flat).
from ..feature_extraction_rgnet import l2_normalize

__all__ = [
    "FeatureError",
    "FeatureSources",
    "LazyVideoFeatures",
    "detect_feature_format",
    "l2_normalize",
]

FEATURE_FORMATS = ("h5", "pt", "lmdb")


class FeatureError(ValueError):
    """A feature file is missing or unreadable, lacks a key, or holds features of the wrong shape, NaN or inf."""


def detect_feature_format(path: str | os.PathLike) -> str:
    """`"lmdb"` for a directory holding `data.mdb`, `"pt"` for another directory, `"h5"` for a file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"feature path does not exist: {path}")
    if path.is_dir():
        return "lmdb" if (path / "data.mdb").exists() else "pt"
    if path.suffix.lower() in (".h5", ".hdf5", ".hdf"):
        return "h5"
    raise FeatureError(f"cannot tell the format of {path}: expected an .h5 file, an lmdb directory or a .pt directory")


def _validated(
    array: Any,
    *,
    source: str,
    key: str,
    what: str,
    ndim: int,
    expected_dim: int | None,
    check_finite: bool,
) -> np.ndarray:
    """Checks rank, feature size and finiteness, and returns a float32 array."""
    array = np.asarray(array)
    if array.ndim != ndim:
        raise FeatureError(f"{source}: {what} of {key!r} have shape {tuple(array.shape)}, expected a {ndim}-D array")
    if expected_dim is not None and array.shape[-1] != expected_dim:
        raise FeatureError(
            f"{source}: {what} of {key!r} have feature size {array.shape[-1]}, expected {expected_dim} "
            f"(shape {tuple(array.shape)})"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise FeatureError(f"{source}: {what} of {key!r} have dtype {array.dtype}, expected floating point")
    array = array.astype(np.float32, copy=False)
    if check_finite and array.size and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise FeatureError(f"{source}: {what} of {key!r} contain NaN or infinite values (first at index {bad})")
    return array


def decode_npz(raw: bytes | memoryview, *, source: str, key: str) -> dict[str, np.ndarray]:
    """Decodes one lmdb value (the bytes of an `np.savez_compressed` archive) into `{member: array}`.

    Members are selected by name: archives written under NumPy 1.x carry a stray 0-d `allow_pickle` member.
    Pickled (object) members are never loaded.
    """
    try:
        with np.load(io.BytesIO(bytes(raw)), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files if name != "allow_pickle"}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise FeatureError(f"{source}: the value of {key!r} is not a readable npz archive ({error})") from error


class _PerProcessStore:
    """Base of the stores: `_handle()` opens the file once per process (again after a fork); pickling drops it."""

    path: str

    def __init__(self) -> None:
        self._opened = None
        self._pid: int | None = None
        self._cache: OrderedDict = OrderedDict()

    def _open(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _handle(self):
        pid = os.getpid()
        if self._opened is None or self._pid != pid:
            # A handle inherited through fork shares the parent's file state: never use it, open our own.
            self._opened = self._open()
            self._pid = pid
            self._cache = OrderedDict()
        return self._opened

    def _cached(self, key: str, load, cache_size: int):
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = load()
        if cache_size > 0:
            self._cache[key] = value
            while len(self._cache) > cache_size:
                self._cache.popitem(last=False)
        return value

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_opened=None, _pid=None, _cache=OrderedDict())
        return state


# ----------------------------------------------------------------------------------------------------------------------
# Video stores: `keys()`, `num_frames(key)`, `read(key, start, end) -> (end - start, D) float32`


class _VideoStore(_PerProcessStore):
    """Base of the video stores: one check of what a read returns (a `[T, D]` float32 array of the expected size)."""

    feature_dim: int | None
    check_finite: bool

    def _validated_array(self, array: np.ndarray, key: str) -> np.ndarray:
        return _validated(
            array,
            source=self.path,
            key=key,
            what="video features",
            ndim=2,
            expected_dim=self.feature_dim,
            check_finite=self.check_finite,
        )


class H5VideoStore(_VideoStore):
    def __init__(self, path: str, feature_dim: int | None = None, check_finite: bool = True):
        super().__init__()
        self.path, self.feature_dim, self.check_finite = str(path), feature_dim, check_finite

    def _open(self):
        import h5py

        try:
            return h5py.File(self.path, "r")
        except OSError as error:
            raise FeatureError(f"cannot open HDF5 file {self.path}: {error}") from error

    def _dataset(self, key: str):
        handle = self._handle()

        def lookup():
            if key not in handle:
                raise FeatureError(f"{self.path}: no video features for {key!r}")
            dataset = handle[key]
            if len(dataset.shape) != 2:
                shape = dataset.shape
                raise FeatureError(f"{self.path}: video features of {key!r} have shape {shape}, expected [T, D]")
            return dataset

        # Dataset objects are cheap handles; caching them saves the name lookup on every read.
        return self._cached(key, lookup, cache_size=1 << 16)

    def keys(self) -> set[str]:
        return set(self._handle().keys())

    def shape(self, key: str) -> tuple[int, int]:
        return tuple(self._dataset(key).shape)

    def num_frames(self, key: str) -> int:
        return self._dataset(key).shape[0]

    def read(self, key: str, start: int = 0, end: int | None = None) -> np.ndarray:
        # h5py slicing reads only the requested rows from disk.
        return self._validated_array(self._dataset(key)[start:end], key)


def _load_pt(path: Path) -> np.ndarray:
    import torch

    try:
        try:
            # mmap keeps the file on disk: slicing a window touches only its pages.
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            loaded = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) serialization
    except pickle.UnpicklingError as error:
        raise FeatureError(
            f"{path}: refused, the file holds objects other than tensors (unpickling them could run code)"
        ) from error
    except (RuntimeError, EOFError) as error:
        raise FeatureError(f"{path}: not a readable PyTorch file ({error})") from error
    if isinstance(loaded, dict):
        tensors = {name: value for name, value in loaded.items() if isinstance(value, torch.Tensor)}
        if "features" in tensors:
            loaded = tensors["features"]
        elif len(tensors) == 1:
            loaded = next(iter(tensors.values()))
        else:
            raise FeatureError(f"{path}: expected a tensor or a dict with a 'features' tensor, got keys {list(loaded)}")
    if not isinstance(loaded, torch.Tensor):
        raise FeatureError(f"{path}: expected a tensor [T, D], got {type(loaded).__name__}")
    if loaded.dtype == torch.bfloat16:
        loaded = loaded.float()
    return loaded.numpy()


class _WholeArrayVideoStore(_VideoStore):
    """A store whose files hold a whole video (or clip) at once: each array is loaded once and cached, and windows are
    slices of the cached array. Subclasses implement `_load_array(key)`; with `validate_on_read`, each window read is
    checked (size, finiteness) instead of the whole array at load."""

    cache_size: int = 4
    validate_on_read: bool = False

    def _load_array(self, key: str) -> np.ndarray:
        raise NotImplementedError

    def _array(self, key: str) -> np.ndarray:
        def load() -> np.ndarray:
            array = self._load_array(key)
            return array if self.validate_on_read else self._validated_array(array, key)

        return self._cached(key, load, self.cache_size)

    def shape(self, key: str) -> tuple[int, int]:
        return tuple(self._array(key).shape)

    def num_frames(self, key: str) -> int:
        return self._array(key).shape[0]

    def read(self, key: str, start: int = 0, end: int | None = None) -> np.ndarray:
        window = self._array(key)[start:end]
        return self._validated_array(window, key) if self.validate_on_read else window


class PtVideoStore(_WholeArrayVideoStore):
    """`{key}.pt` files in one directory; with `clip_ranges`, per-video files sliced to each clip.

    For a clip `c` with `clip_ranges[c] = (video_uid, start_sec, end_sec)`, the features are rows
    `floor(start_sec / seconds_per_feature) : ceil(end_sec / seconds_per_feature) + 1` of `{video_uid}.pt`, the rule
    of the official NLQ baselines for clip slices of per-video features.
    """

    validate_on_read = True  # a window is checked when read, so a bad row elsewhere in the video does not block it

    def __init__(
        self,
        path: str,
        feature_dim: int | None = None,
        check_finite: bool = True,
        clip_ranges: dict[str, tuple[str, float, float]] | None = None,
        seconds_per_feature: float | None = None,
        cache_size: int = 64,
    ):
        super().__init__()
        self.path, self.feature_dim, self.check_finite = str(path), feature_dim, check_finite
        self.clip_ranges, self.seconds_per_feature, self.cache_size = clip_ranges, seconds_per_feature, cache_size
        if clip_ranges is not None and not seconds_per_feature:
            raise ValueError("per-video .pt features need seconds_per_feature to cut clips out of videos")

    def _open(self):
        directory = Path(self.path)
        if not directory.is_dir():
            raise FeatureError(f"feature directory does not exist: {directory}")
        return directory

    def _file_stems(self) -> set[str]:
        return {name[:-3] for name in os.listdir(self._handle()) if name.endswith(".pt")}

    def keys(self) -> set[str]:
        stems = self._file_stems()
        if self.clip_ranges is None:
            return stems
        return {clip for clip, (video, _, _) in self.clip_ranges.items() if video in stems}

    def _load_array(self, key: str) -> np.ndarray:
        directory = self._handle()
        if self.clip_ranges is None:
            stem, first, last = key, 0, None
        else:
            if key not in self.clip_ranges:
                raise FeatureError(f"{self.path}: clip {key!r} has no (video, start, end) range")
            stem, start_sec, end_sec = self.clip_ranges[key]
            first = max(math.floor(start_sec / self.seconds_per_feature), 0)
            last = math.ceil(end_sec / self.seconds_per_feature) + 1
        file = directory / f"{stem}.pt"
        if not file.exists():
            raise FeatureError(f"{self.path}: no video features for {key!r} (missing {file.name})")
        array = _load_pt(file)
        if array.ndim != 2:
            raise FeatureError(f"{file}: video features have shape {tuple(array.shape)}, expected [T, D]")
        return array[first:last]


# lmdb allows one open environment per path and process: stores of several splits share it.
_LMDB_ENVIRONMENTS: dict[tuple[int, str], Any] = {}


def _open_lmdb(path: str):
    import lmdb

    if not (Path(path) / "data.mdb").exists():
        raise FeatureError(f"not an lmdb environment (no data.mdb): {path}")
    pid, real_path = os.getpid(), os.path.realpath(path)
    if (pid, real_path) not in _LMDB_ENVIRONMENTS:
        # py-lmdb refuses a second open of the same files in one process, and a forked worker inherits the parent's
        # registry: close the inherited environment (ours, opened with lock=False, so closing it in the child touches
        # no lock table shared with the parent), then open the worker's own.
        for key in [key for key in _LMDB_ENVIRONMENTS if key[1] == real_path]:
            _LMDB_ENVIRONMENTS.pop(key).close()
        # lock=False: the databases are read-only, and a lock file would need a writable medium.
        _LMDB_ENVIRONMENTS[(pid, real_path)] = lmdb.open(
            path, readonly=True, lock=False, readahead=False, max_readers=2048, subdir=True
        )
    return _LMDB_ENVIRONMENTS[(pid, real_path)]


def _lmdb_keys(environment) -> set[str]:
    with environment.begin() as transaction:
        return {bytes(key).decode("utf-8") for key in transaction.cursor().iternext(keys=True, values=False)}


def _lmdb_get(environment, key: str, source: str, what: str) -> dict[str, np.ndarray]:
    with environment.begin() as transaction:
        raw = transaction.get(key.encode("utf-8"))
    if raw is None:
        raise FeatureError(f"{source}: no {what} for {key!r}")
    return decode_npz(raw, source=source, key=key)


class LmdbVideoStore(_WholeArrayVideoStore):
    """CONE/RGNet video lmdb: key = clip/movie id, value = npz archive with a `features` member `[T, D]`."""

    def __init__(self, path: str, feature_dim: int | None = None, check_finite: bool = True, cache_size: int = 4):
        super().__init__()
        self.path, self.feature_dim, self.check_finite = str(path), feature_dim, check_finite
        self.cache_size = cache_size

    def _open(self):
        return _open_lmdb(self.path)

    def keys(self) -> set[str]:
        return _lmdb_keys(self._handle())

    def _load_array(self, key: str) -> np.ndarray:
        members = _lmdb_get(self._handle(), key, self.path, "video features")
        if "features" not in members:
            raise FeatureError(f"{self.path}: archive of {key!r} has no 'features' member (has {list(members)})")
        return members["features"]


# ----------------------------------------------------------------------------------------------------------------------


class H5TextStore(_PerProcessStore):
    """Token features `[L, Dt]` in one HDF5 file; optional sentence features `[Dc]` in another (MAD test only)."""

    def __init__(
        self,
        path: str,
        sentence_path: str | None = None,
        feature_dim: int | None = None,
        sentence_dim: int | None = None,
        check_finite: bool = True,
    ):
        super().__init__()
        self.path, self.sentence_path = str(path), (str(sentence_path) if sentence_path else None)
        self.feature_dim, self.sentence_dim, self.check_finite = feature_dim, sentence_dim, check_finite

    def _open(self):
        import h5py

        try:
            tokens = h5py.File(self.path, "r")
            sentences = h5py.File(self.sentence_path, "r") if self.sentence_path else None
        except OSError as error:
            message = f"cannot open HDF5 text features ({self.path}, {self.sentence_path}): {error}"
            raise FeatureError(message) from error
        return tokens, sentences

    def keys(self) -> set[str]:
        return set(self._handle()[0].keys())

    def sentence_keys(self) -> set[str]:
        sentences = self._handle()[1]
        return set(sentences.keys()) if sentences is not None else set()

    def read(self, key: str, with_sentence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        tokens_file, sentences_file = self._handle()
        if key not in tokens_file:
            raise FeatureError(f"{self.path}: no text features for {key!r}")
        tokens = _validated(
            tokens_file[key][()],
            source=self.path,
            key=key,
            what="text token features",
            ndim=2,
            expected_dim=self.feature_dim,
            check_finite=self.check_finite,
        )
        sentence = None
        if with_sentence and sentences_file is not None and key in sentences_file:
            sentence = _validated(
                np.reshape(sentences_file[key][()], -1),
                source=self.sentence_path,
                key=key,
                what="sentence features",
                ndim=1,
                expected_dim=self.sentence_dim,
                check_finite=self.check_finite,
            )
        return tokens, sentence


class LmdbTextStore(_PerProcessStore):
    """CONE/RGNet text lmdb: key = query id, value = npz with `token_features` `[L, Dt]` and `cls_features` `[Dc]`
    (or `eot_features`; row 0 when 2-D, as the official reader does)."""

    def __init__(
        self,
        path: str,
        feature_dim: int | None = None,
        sentence_dim: int | None = None,
        check_finite: bool = True,
    ):
        super().__init__()
        self.path, self.feature_dim, self.sentence_dim, self.check_finite = (
            str(path),
            feature_dim,
            sentence_dim,
            check_finite,
        )

    def _open(self):
        return _open_lmdb(self.path)

    def keys(self) -> set[str]:
        return _lmdb_keys(self._handle())

    def sentence_keys(self) -> set[str]:
        return self.keys()

    def read(self, key: str, with_sentence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        members = _lmdb_get(self._handle(), key, self.path, "text features")
        if "token_features" not in members:
            raise FeatureError(f"{self.path}: archive of {key!r} has no 'token_features' member (has {list(members)})")
        tokens = _validated(
            members["token_features"],
            source=self.path,
            key=key,
            what="text token features",
            ndim=2,
            expected_dim=self.feature_dim,
            check_finite=self.check_finite,
        )
        sentence = None
        if with_sentence:
            raw = members.get("cls_features", members.get("eot_features"))
            if raw is not None:
                raw = np.asarray(raw)
                sentence = _validated(
                    raw[0] if raw.ndim == 2 else raw,
                    source=self.path,
                    key=key,
                    what="sentence features",
                    ndim=1,
                    expected_dim=self.sentence_dim,
                    check_finite=self.check_finite,
                )
        return tokens, sentence


# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class FeatureSources:
    """Where the features of one split live: a small, JSON-serialisable description that opens lazy stores.

    Args:
        video_path (`str`): HDF5 file, `.pt` directory or lmdb directory of the video features.
        video_format (`str`): `"h5"`, `"pt"` or `"lmdb"` (`"auto"`: from the path).
        text_path (`str`, *optional*): HDF5 file or lmdb directory of the text token features, keyed by query id.
        text_format (`str`, *optional*): `"h5"` or `"lmdb"` (`"auto"`: from the path).
        sentence_path (`str`, *optional*): HDF5 file of sentence features `[Dc]` (MAD's test-only file); lmdb text
            features carry their own (`cls_features`).
        video_feature_dim, text_feature_dim, sentence_feature_dim (`int`, *optional*): expected feature sizes; every
            read is checked against them.
        seconds_per_feature (`float`, *optional*): seconds between two video features.
        clip_ranges (`dict`, *optional*): per-video `.pt` features only, `clip_id -> [video_id, start_sec, end_sec]`.
        check_finite (`bool`): raise on NaN / inf in the features read.
    """

    video_path: str
    video_format: str = "auto"
    text_path: str | None = None
    text_format: str | None = "auto"
    sentence_path: str | None = None
    video_feature_dim: int | None = None
    text_feature_dim: int | None = None
    sentence_feature_dim: int | None = None
    seconds_per_feature: float | None = None
    clip_ranges: dict[str, list] | None = None
    check_finite: bool = True
    _stores: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.video_path = str(self.video_path)
        if self.video_format == "auto":
            self.video_format = detect_feature_format(self.video_path)
        if self.video_format not in FEATURE_FORMATS:
            raise ValueError(f"video_format must be one of {FEATURE_FORMATS}, got {self.video_format!r}")
        if self.text_path is None:
            self.text_format = None
        else:
            self.text_path = str(self.text_path)
            if self.text_format in (None, "auto"):
                self.text_format = detect_feature_format(self.text_path)
            if self.text_format not in ("h5", "lmdb"):
                raise ValueError(f"text features must be an .h5 file or an lmdb directory, got {self.text_path}")
        if self.sentence_path is not None:
            self.sentence_path = str(self.sentence_path)
            if self.text_format != "h5":
                raise ValueError("sentence_path is for HDF5 text features; lmdb text features carry cls_features")

    def video_store(self) -> H5VideoStore | PtVideoStore | LmdbVideoStore:
        """The (cached) lazy reader of the video features."""
        if "video" not in self._stores:
            common = {"feature_dim": self.video_feature_dim, "check_finite": self.check_finite}
            if self.video_format == "h5":
                store = H5VideoStore(self.video_path, **common)
            elif self.video_format == "pt":
                ranges = None if self.clip_ranges is None else {k: tuple(v) for k, v in self.clip_ranges.items()}
                store = PtVideoStore(
                    self.video_path, clip_ranges=ranges, seconds_per_feature=self.seconds_per_feature, **common
                )
            else:
                store = LmdbVideoStore(self.video_path, **common)
            self._stores["video"] = store
        return self._stores["video"]

    def text_store(self) -> H5TextStore | LmdbTextStore | None:
        """The (cached) lazy reader of the text features, or None when the split has none."""
        if self.text_path is None:
            return None
        if "text" not in self._stores:
            common = {
                "feature_dim": self.text_feature_dim,
                "sentence_dim": self.sentence_feature_dim,
                "check_finite": self.check_finite,
            }
            if self.text_format == "h5":
                self._stores["text"] = H5TextStore(self.text_path, sentence_path=self.sentence_path, **common)
            else:
                self._stores["text"] = LmdbTextStore(self.text_path, **common)
        return self._stores["text"]

    def reset_stores(self) -> None:
        """Forgets the opened stores (the next access reopens them with the current settings)."""
        self._stores.clear()

    @property
    def has_sentence_features(self) -> bool:
        return self.text_format == "lmdb" or self.sentence_path is not None

    def to_dict(self) -> dict:
        return {name: value for name, value in asdict(self).items() if name != "_stores"}

    @classmethod
    def from_dict(cls, values: dict) -> FeatureSources:
        known = {name for name in cls.__dataclass_fields__ if name != "_stores"}
        return cls(**{name: value for name, value in values.items() if name in known})

    def replace(self, **changes) -> FeatureSources:
        """A copy with some fields changed (stores are not shared)."""
        return FeatureSources.from_dict({**self.to_dict(), **changes})


class LazyVideoFeatures:
    """The `(T, D)` float32 features of one video, read on demand.

    `features[a:b]` reads only rows `a..b` (HDF5 slicing, or pages of a memory-mapped `.pt`); `np.asarray(features)`
    reads all of them. `features.shape` needs only metadata for HDF5.
    """

    __slots__ = ("_sources", "key")

    def __init__(self, sources: FeatureSources, key: str):
        self._sources, self.key = sources, key

    @property
    def shape(self) -> tuple[int, int]:
        return self._sources.video_store().shape(self.key)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """Rows `[start, end)` as a float32 array of shape `(end - start, D)`."""
        return self._sources.video_store().read(self.key, start, end)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice) and index.step in (None, 1):
            start, stop, _ = index.indices(len(self))
            return self.read(start, max(start, stop))
        return self.read()[index]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.read()
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyVideoFeatures(key={self.key!r}, source={self._sources.video_path!r})"
