"""The vector store behind a library index: one small interface, so that another store (a vector database) is a new
backend rather than a rewrite. The embedded default is FAISS (`pip install rgnet_hf[search]`).

A backend holds unit-norm float32 segment vectors under int64 ids and answers inner-product (cosine) searches."""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FaissBackend",
    "IndexSpec",
    "VectorBackend",
    "choose_index_spec",
    "default_pq_bytes",
    "import_faiss",
    "ivf_index",
    "require_faiss",
]

# Below this many segment vectors the index is an exact flat search (about 1,100 hours of 4-second segments: a flat
# search over them is one (N x D) matrix-vector product per query); from it on, an inverted-file (IVF) index.
FLAT_LIMIT = 1_000_000
# From it on, the IVF cells hold 8-bit scalar codes (ivfsq8, one byte per dimension: on generated vectors they
# return nearly the float32 vectors' neighbours, 4x smaller and 3x faster) while all of them fit in CODE_MEMORY_LIMIT
# (8,388,608 512-d segments, about 9,300 hours), product-quantised codes (ivfpq, one byte per 4 dimensions by default)
# beyond: 10,000 hours of 512-d segments are 17.2 GiB as float32, 4.3 GiB as 8-bit codes, 1.1 GiB as 128-byte codes.
CODE_MEMORY_LIMIT = 4 * 2**30
INDEX_TYPES = ("auto", "flat", "ivf", "ivfsq8", "ivfpq")
IVF_TYPES = ("ivf", "ivfsq8", "ivfpq")
# a product quantiser's sub-quantisers have 2 ** 8 centroids each: one byte per sub-vector
PQ_BITS = 8
PQ_CENTROIDS = 2**PQ_BITS
# vectors the 8-bit ranges or the PQ codebooks are fitted on (FAISS caps a PQ at 65,536 by itself)
ENCODER_TRAINING_ROWS = 2**18


def import_faiss():
    """`faiss`, or an error that says how to install it."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "library search needs FAISS: install it with `pip install rgnet_hf[search]` (the faiss-cpu package)"
        ) from error
    return faiss


def require_faiss() -> None:
    """For the command line: a missing FAISS as a `ValueError`, which `rgnet-hf` prints as one line."""
    try:
        import_faiss()
    except ImportError as error:
        raise ValueError(str(error)) from error


@dataclass(frozen=True)
class IndexSpec:
    """How the segment vectors are indexed.

    Attributes:
        type (`str`): `"flat"` (exact), `"ivf"` (inverted file over `nlist` k-means cells, `nprobe` searched, the
            vectors stored whole), `"ivfsq8"` (the same cells holding each dimension as one byte) or `"ivfpq"` (the
            same cells holding `pq_bytes`-byte product-quantised codes of the vectors' residuals to their centroid).
        nlist (`int`): IVF cells (0 for flat).
        nprobe (`int`): IVF cells visited per query (0 for flat).
        pq_bytes (`int`): bytes per vector code, one per sub-vector of `D / pq_bytes` dimensions (0 unless ivfpq).
    """

    type: str
    nlist: int = 0
    nprobe: int = 0
    pq_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> IndexSpec:
        return cls(
            str(values["type"]),
            int(values.get("nlist", 0)),
            int(values.get("nprobe", 0)),
            int(values.get("pq_bytes", 0)),
        )

    def describe(self) -> str:
        """One line for people: `"flat"`, `"ivf (nlist 4096, nprobe 512)"`, `"ivfpq (nlist ..., 128-byte codes)"`."""
        if self.type == "flat":
            return "flat"
        codes = {"ivfpq": f", {self.pq_bytes}-byte codes", "ivfsq8": ", 8-bit codes"}.get(self.type, "")
        return f"{self.type} (nlist {self.nlist}, nprobe {self.nprobe}{codes})"


def default_pq_bytes(dimension: int) -> int:
    """One byte per 4 dimensions (128 bytes for 512-d vectors), the largest divisor of `dimension` not above that."""
    target = max(1, dimension // 4)
    return next(m for m in range(target, 0, -1) if dimension % m == 0)


def choose_index_spec(
    num_vectors: int,
    index_type: str = "auto",
    flat_limit: int = FLAT_LIMIT,
    nlist: int | None = None,
    nprobe: int | None = None,
    dimension: int = 512,
    pq_bytes: int | None = None,
    code_memory_limit: int = CODE_MEMORY_LIMIT,
) -> IndexSpec:
    """
    The index rule: `"auto"` is exact flat search below `flat_limit` vectors and IVF from it on, with one byte per
    dimension (`"ivfsq8"`, 4x smaller than float32) while the codes fit in `code_memory_limit` (4 GiB) and
    product-quantised codes beyond (`"ivfpq"`, 16x smaller); `"ivf"` (the float32 vectors) is never automatic. IVF
    cells number
    `nlist = 4 * sqrt(N)` rounded to a power of two (between 16 and 65,536), the usual FAISS guidance, and
    `nprobe = nlist / 8` (at least 16): the pre-filter takes a deep list (200 segments by default) and costs
    milliseconds against the seconds of RGNet's scoring, so it visits more cells than a nearest-neighbour lookup
    would (docs/library_search.md has the measured trade); `nlist`, `nprobe` and `pq_bytes` (one byte per 4
    dimensions by default) override the derived values.

    Args:
        num_vectors (`int`): segment vectors of the first build (IVF cells are trained on them).
        index_type (`str`): `"auto"`, `"flat"`, `"ivf"`, `"ivfsq8"` or `"ivfpq"`.
        dimension (`int`): the vectors' size (the memory rule, and `pq_bytes` must divide it).
    """
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
    if index_type == "flat" or (index_type == "auto" and num_vectors < flat_limit):
        return IndexSpec("flat")
    if index_type == "auto":
        index_type = "ivfsq8" if num_vectors * dimension <= code_memory_limit else "ivfpq"
    if nlist is None:
        nlist = int(min(65536, max(16, 2 ** round(math.log2(4 * math.sqrt(max(num_vectors, 1)))))))
    if nlist < 1 or nlist > num_vectors:
        raise ValueError(
            f"an IVF index of {nlist} cells needs at least {nlist} segment vectors to train on, got {num_vectors}: "
            "use a flat index (--index-type flat) or fewer cells (--nlist)"
        )
    if nprobe is None:
        nprobe = max(16, nlist // 8)
    nprobe = max(1, min(int(nprobe), nlist))
    if index_type != "ivfpq":
        return IndexSpec(index_type, nlist, nprobe)
    if pq_bytes is None:
        pq_bytes = default_pq_bytes(dimension)
    if pq_bytes < 1 or dimension % pq_bytes:
        raise ValueError(
            f"an IVF-PQ code of {pq_bytes} bytes cuts {dimension}-d vectors into {pq_bytes} sub-vectors, so it must "
            f"divide {dimension}: pick --pq-bytes among its divisors (e.g. {default_pq_bytes(dimension)})"
        )
    if num_vectors < PQ_CENTROIDS:
        raise ValueError(
            f"an IVF-PQ index trains {PQ_CENTROIDS} centroids per sub-vector and needs at least {PQ_CENTROIDS} segment "
            f"vectors, got {num_vectors}: use a flat index (--index-type flat)"
        )
    return IndexSpec("ivfpq", nlist, nprobe, int(pq_bytes))


def ivf_index(spec: IndexSpec, dimension: int, quantizer):
    """The untrained FAISS inner-product index of an IVF `spec` over `quantizer` (an `IndexFlatIP` holding the
    cells' centroids, or empty when they are still to be trained): `IndexIVFFlat` (ivf), `IndexIVFScalarQuantizer`
    with 8-bit codes (ivfsq8) or `IndexIVFPQ` with 8-bit sub-quantisers (ivfpq)."""
    faiss = import_faiss()
    metric = faiss.METRIC_INNER_PRODUCT
    if spec.type == "ivf":
        return faiss.IndexIVFFlat(quantizer, dimension, spec.nlist, metric)
    if spec.type == "ivfsq8":
        return faiss.IndexIVFScalarQuantizer(quantizer, dimension, spec.nlist, faiss.ScalarQuantizer.QT_8bit, metric)
    if spec.type != "ivfpq":
        raise ValueError(f"{spec.type!r} is not an IVF index type ({', '.join(IVF_TYPES)})")
    if spec.pq_bytes < 1 or dimension % spec.pq_bytes:
        raise ValueError(f"IVF-PQ codes of {spec.pq_bytes} bytes must divide the {dimension}-d vectors")
    return faiss.IndexIVFPQ(quantizer, dimension, spec.nlist, spec.pq_bytes, PQ_BITS, metric)


class VectorBackend(ABC):
    """What a library needs from a vector store."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Vectors held."""

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add `(N, D)` float32 unit vectors under `(N,)` int64 ids (not yet held)."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None:
        """Remove the vectors of `(N,)` ids."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`(Q, D)` unit queries -> `(Q, k)` inner products and `(Q, k)` ids, best first; id -1 pads missing hits."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the store to `path` (a new file; the caller swaps it in)."""


class FaissBackend(VectorBackend):
    """FAISS inner-product index with ids: `IndexIDMap2(IndexFlatIP)` (flat), `IndexIVFFlat` (ivf),
    `IndexIVFScalarQuantizer` with 8-bit codes (ivfsq8) or `IndexIVFPQ` (ivfpq, 8-bit sub-quantisers on the residuals
    to the cell centroids)."""

    def __init__(self, index, spec: IndexSpec):
        self.index = index
        self.spec = spec
        if spec.type in IVF_TYPES:
            self.index.nprobe = spec.nprobe

    @classmethod
    def create(
        cls,
        spec: IndexSpec,
        dimension: int,
        training_vectors: np.ndarray | None = None,
        training_points_per_cell: int | None = None,
    ) -> FaissBackend:
        """An empty index; IVF cells are trained on `training_vectors` (the first build's segments, which may be a
        memory map), of which k-means reads a random sample of at most `training_points_per_cell` per cell (FAISS's
        default, 256, when None). The 8-bit ranges or PQ codebooks are fitted on at most `ENCODER_TRAINING_ROWS` of
        that sample: FAISS fits them on the residuals of every vector it is given, a second copy of the sample."""
        faiss = import_faiss()
        if spec.type == "flat":
            return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dimension)), spec)
        if spec.type not in IVF_TYPES:
            raise ValueError(f"unknown index type {spec.type!r}")
        needed = max(spec.nlist, PQ_CENTROIDS) if spec.type == "ivfpq" else spec.nlist
        if training_vectors is None or len(training_vectors) < needed:
            raise ValueError(f"an {spec.type} index of {spec.nlist} cells needs at least {needed} vectors to train on")
        quantizer = faiss.IndexFlatIP(dimension)
        index = ivf_index(spec, dimension, quantizer)
        if training_points_per_cell is not None:
            if training_points_per_cell < 1:
                raise ValueError(f"training_points_per_cell must be >= 1, got {training_points_per_cell}")
            index.cp.max_points_per_centroid = int(training_points_per_cell)
        sample_size = min(len(training_vectors), max(needed, spec.nlist * index.cp.max_points_per_centroid))
        rows = np.sort(np.random.default_rng(0).choice(len(training_vectors), sample_size, replace=False))
        training = np.ascontiguousarray(training_vectors[rows], dtype=np.float32)  # read once, even from disk
        if spec.type == "ivf":
            index.train(training)
        else:  # the cells first, as for ivf; then the codes, with the cells given, on part of the sample
            cells = faiss.IndexIVFFlat(quantizer, dimension, spec.nlist, faiss.METRIC_INNER_PRODUCT)
            cells.cp.max_points_per_centroid = index.cp.max_points_per_centroid
            cells.train(training)
            step = -(-len(training) // ENCODER_TRAINING_ROWS)
            index.train(training[::step])  # every step-th of the sorted sample: the whole library, evenly
        backend = cls(index, spec)
        backend._quantizer = quantizer  # the IVF index does not own its quantizer's Python object
        return backend

    @classmethod
    def load(cls, path: str | os.PathLike, spec: IndexSpec, dimension: int) -> FaissBackend:
        faiss = import_faiss()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the library's vector index is missing; rebuild it with `rgnet-hf index`")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            raise ValueError(
                f"{path} is not a readable FAISS index (corrupt or truncated: {str(error).splitlines()[0]}); rebuild "
                "the library with `rgnet-hf index`"
            ) from error
        if index.d != dimension:
            raise ValueError(f"{path} holds {index.d}-d vectors but the manifest records {dimension}-d segments")
        return cls(index, spec)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)
            )

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(int(k), self.size))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self, path: Path) -> None:
        import_faiss().write_index(self.index, str(path))
