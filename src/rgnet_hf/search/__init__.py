"""Search a whole library of videos (`rgnet-hf index`, `rgnet-hf search`; docs/library_search.md).

Needs FAISS for the vector index (`pip install rgnet_hf[search]`); it is imported only when an index is built or
opened."""

from .backends import FaissBackend, IndexSpec, VectorBackend, choose_index_spec
from .index import IndexUpdate, LibraryIndex, VideoEntry, frame_runs_of_windows, segment_vectors
from .library import SEGMENT_WINDOWS, LibraryMoment, LibrarySearchResult, VideoLibrary
from .ranking import merge_video_groundings, rank_library_rows, select_library_windows

__all__ = [
    "SEGMENT_WINDOWS",
    "FaissBackend",
    "IndexSpec",
    "IndexUpdate",
    "LibraryIndex",
    "LibraryMoment",
    "LibrarySearchResult",
    "VectorBackend",
    "VideoEntry",
    "VideoLibrary",
    "choose_index_spec",
    "frame_runs_of_windows",
    "merge_video_groundings",
    "rank_library_rows",
    "segment_vectors",
    "select_library_windows",
]
