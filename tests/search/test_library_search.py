"""Library search: the engine's explicit-window scoring, the cross-video ranking and its equivalences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("faiss", reason="library search needs the search extra (faiss-cpu)")

from library_utils import random_queries, random_videos, tiny_model, write_cache  # noqa: E402

from rgnet_hf import RGNetGroundingEngine  # noqa: E402
from rgnet_hf.search import LibraryIndex, VideoLibrary, merge_video_groundings  # noqa: E402

LENGTHS = {"alpha": 150, "beta": 95, "gamma": 230}


def _assert_same_ranking(rows, videos, expected_rows, expected_videos):
    """Same moments in the same order, to fp32 precision (times are rounded to 4 decimals on both sides)."""
    assert rows.shape == expected_rows.shape
    np.testing.assert_array_equal(videos, expected_videos)
    np.testing.assert_allclose(rows, expected_rows, rtol=1e-5, atol=1e-4 + 1e-9)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    videos = random_videos(1, LENGTHS)
    cache = write_cache(root / "cache.h5", videos)
    index, _ = LibraryIndex.update(root / "index", [cache], tiny_model().config)
    return index, videos


def test_engine_scores_and_decodes_explicit_windows_as_ground():
    model = tiny_model()
    engine = RGNetGroundingEngine(model)
    video = random_videos(2, {"v": 170})["v"]
    text, sentence = random_queries(3)
    [first, second] = engine.ground(video, text, sentence_features=sentence)
    num_windows = len(first.window_scores)
    queries = np.repeat([0, 1], num_windows)
    windows = np.tile(np.arange(num_windows), 2)
    logits = engine.score_windows(video, text, None, queries, windows)
    np.testing.assert_allclose(
        torch.sigmoid(logits).numpy(), np.concatenate([first.window_scores, second.window_scores]), atol=1e-5
    )
    # the decoded rows of ground's top-k windows, in its window order
    top = first.window_order[: len(first.window_predictions)]
    rows = engine.decode_windows(
        video, text, None, np.zeros(len(top)), top, first.window_scores[top], sentence_features=sentence
    )
    np.testing.assert_allclose(rows, first.window_predictions, atol=1e-4 + 1e-9)
    with pytest.raises(ValueError, match="window_index"):
        engine.score_windows(video, text, None, [0], [num_windows])


def test_one_video_library_is_the_single_video_ranking(tmp_path):
    model = tiny_model()
    video = random_videos(4, {"solo": 210})
    index, _ = LibraryIndex.update(tmp_path / "index", [write_cache(tmp_path / "c.h5", video)], model.config)
    text, sentence = random_queries(5, num_queries=3)
    library = VideoLibrary(index, model)
    expected = RGNetGroundingEngine(model).ground(video["solo"], text, sentence_features=sentence)
    for exhaustive in (True, False):
        found = library.search(text_features=text, sentence_features=sentence, exhaustive=exhaustive, depth=10_000)
        for result, reference in zip(found, expected):
            fused = reference.rankings["fused"]
            _assert_same_ranking(result.rows, result.videos, fused, np.zeros(len(fused), dtype=np.int64))


def test_exhaustive_equals_grounding_each_video_and_merging(library):
    index, videos = library
    model = tiny_model()
    text, sentence = random_queries(6, num_queries=2)
    engine = RGNetGroundingEngine(model)
    per_video = [engine.ground(videos[video.key], text, sentence_features=sentence) for video in index.videos]
    found = VideoLibrary(index, model).search(text_features=text, sentence_features=sentence, exhaustive=True)
    assert {v for result in found for v in result.videos.tolist()} != {0}  # the merge mixes videos
    for query, result in enumerate(found):
        rows, owners = merge_video_groundings(
            [results[query] for results in per_video],
            engine.top_k_windows,
            "fused",
            engine.nms_threshold,
            engine.max_predictions_before_nms,
            engine.max_predictions,
        )
        _assert_same_ranking(result.rows, result.videos, rows, owners)
        moment = result.moments[0]
        video = index.videos[int(result.videos[0])]
        assert (moment.key, moment.path) == (video.key, video.source)
        assert 0 <= moment.start <= moment.end <= video.duration


def test_depth_covering_every_window_equals_exhaustive(library):
    index, _ = library
    library_search = VideoLibrary(index, tiny_model())
    text, sentence = random_queries(7, num_queries=2)
    exhaustive = library_search.search(text_features=text, sentence_features=sentence, exhaustive=True)
    total = index.backend.size
    covering = library_search.search(text_features=text, sentence_features=sentence, depth=total)
    shallow = library_search.search(text_features=text, sentence_features=sentence, depth=1)
    for full, deep, few in zip(exhaustive, covering, shallow):
        assert deep.candidate_windows == full.candidate_windows
        _assert_same_ranking(deep.rows, deep.videos, full.rows, full.videos)
        # one segment overlaps at most two windows of one video (segments are shorter than the stride)
        assert 1 <= few.candidate_windows <= 2 < full.candidate_windows


def _record_reads(monkeypatch):
    """Frames read from each HDF5 dataset: `{key: [(start, end), ...]}` (a whole read records `(0, T)`)."""
    import h5py

    reads: dict[str, list[tuple[int, int]]] = {}
    getitem, read_direct = h5py.Dataset.__getitem__, h5py.Dataset.read_direct

    def recording_getitem(self, selection, *args, **kwargs):
        value = getitem(self, selection, *args, **kwargs)
        if selection == () or selection is Ellipsis:
            reads.setdefault(self.name.lstrip("/"), []).append((0, self.shape[0]))
        else:
            raise AssertionError(f"unexpected read {selection!r}")
        return value

    def recording_read_direct(self, array, source_sel=None, dest_sel=None):
        reads.setdefault(self.name.lstrip("/"), []).append((source_sel.start, source_sel.stop))
        return read_direct(self, array, source_sel, dest_sel)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording_getitem)
    monkeypatch.setattr(h5py.Dataset, "read_direct", recording_read_direct)
    return reads


@pytest.fixture(scope="module")
def long_library(tmp_path_factory):
    """Videos of 16 to 31 windows: a shallow search leaves most of each one's frames unread."""
    root = tmp_path_factory.mktemp("long-library")
    videos = random_videos(11, {"long": 640, "longer": 610, "short": 330})
    index, _ = LibraryIndex.update(root / "index", [write_cache(root / "cache.h5", videos)], tiny_model().config)
    return index, videos


def test_prefiltered_search_reads_only_the_candidate_windows_frames(long_library, monkeypatch):
    index, _ = long_library
    library = VideoLibrary(index, tiny_model())
    text, sentence = random_queries(12, num_queries=2)
    candidates = library._candidate_windows(sentence, 3)
    reads = _record_reads(monkeypatch)
    library._score(candidates, torch.as_tensor(text), torch.ones(text.shape[:2]))
    window_length = tiny_model().config.window_length
    for position, video in enumerate(index.videos):
        if position not in candidates[:, 0]:
            assert video.key not in reads
            continue
        # the candidate windows' rows of frames, one read per contiguous run
        starts = library._grid_bounds(position)[np.unique(candidates[candidates[:, 0] == position, 2]), 0]
        needed = np.zeros(video.num_frames, dtype=bool)
        for start in starts:
            needed[start : start + window_length] = True
        read = np.zeros(video.num_frames, dtype=bool)
        for start, end in reads[video.key]:
            assert not read[start:end].any()  # each frame read once
            read[start:end] = True
        np.testing.assert_array_equal(read, needed)
        assert len(reads[video.key]) == np.count_nonzero(np.diff(np.r_[0, needed.astype(int)]) == 1)
        assert needed.sum() < video.num_frames
    assert reads
    reads.clear()
    library.search(text_features=text, sentence_features=sentence, depth=3)
    for video in index.videos:
        assert (0, video.num_frames) not in reads.get(video.key, [])  # never a whole dataset


def test_sliced_reads_give_the_rankings_of_whole_reads(long_library, monkeypatch):
    index, _ = long_library
    library = VideoLibrary(index, tiny_model())
    text, sentence = random_queries(13, num_queries=3)
    for depth in (1, 4, 12):
        sliced = library.search(text_features=text, sentence_features=sentence, depth=depth)
        with monkeypatch.context() as patched:
            patched.setattr(library, "_read_windows", lambda position, windows: index.read_features(position))
            whole = library.search(text_features=text, sentence_features=sentence, depth=depth)
        for left, right in zip(sliced, whole):
            assert left.candidate_windows == right.candidate_windows
            np.testing.assert_array_equal(left.videos, right.videos)
            np.testing.assert_array_equal(left.rows, right.rows)


def test_exhaustive_search_reads_every_video_whole(long_library, monkeypatch):
    index, _ = long_library
    library = VideoLibrary(index, tiny_model())
    text, sentence = random_queries(14, num_queries=1)
    reads = _record_reads(monkeypatch)
    library.search(text_features=text, sentence_features=sentence, exhaustive=True)
    for video in index.videos:
        assert reads[video.key][0] == (0, video.num_frames)


def test_sliced_read_of_frame_runs(long_library):
    from rgnet_hf.search import frame_runs_of_windows

    index, videos = long_library
    runs = frame_runs_of_windows(np.array([[40, 80], [0, 40], [100, 140], [120, 160], [300, 310]]))
    np.testing.assert_array_equal(runs, [[0, 80], [100, 160], [300, 310]])
    assert frame_runs_of_windows(np.zeros((0, 2))).shape == (0, 2)
    features = index.read_features(0, runs)
    expected = np.zeros_like(videos["long"])
    for start, end in runs:
        expected[start:end] = videos["long"][start:end]
    np.testing.assert_array_equal(features, expected)
    np.testing.assert_array_equal(index.read_features(0, np.array([[0, 640]])), videos["long"])


def test_central_segment_windows_take_the_one_window_centred_on_each_segment(long_library):
    index, _ = long_library
    model = tiny_model()
    config = model.config
    overlapping = VideoLibrary(index, model)
    central = VideoLibrary(index, model, segment_windows="central")
    _, sentence = random_queries(12, num_queries=3)
    queries = sentence / np.linalg.norm(sentence, axis=1, keepdims=True)
    for depth in (1, 5, index.backend.size):
        wide = overlapping._candidate_windows(sentence, depth)
        narrow = central._candidate_windows(sentence, depth)
        # a subset of the overlapping candidates, about half of them on the half-overlapping grid
        assert {tuple(row) for row in narrow} <= {tuple(row) for row in wide}
        assert len(narrow) < len(wide)
        _, ids = index.backend.search(queries, depth)
        videos, segments = index.segments_of(ids.ravel())
        for position, segment, query in zip(videos, segments, np.repeat(np.arange(3), depth)):
            start = segment * index.segment_frames
            end = min(start + index.segment_frames, index.videos[position].num_frames)
            windows = narrow[(narrow[:, 0] == position) & (narrow[:, 1] == query), 2]
            bounds = central._grid_bounds(int(position))
            middle = (start + end) / 2
            # its window holds the segment's middle in the middle stride frames of its nominal span
            holding = [w for w in windows if bounds[w, 0] <= middle < bounds[w, 1]]
            nominal_start = (np.array(holding) - 1) * config.window_stride
            lower = nominal_start + (config.window_length - config.window_stride) / 2
            inside = (lower <= middle) & (middle < lower + config.window_stride)
            edge = (np.array(holding) == 0) | (np.array(holding) == len(bounds) - 1)
            assert (inside | edge).any()
    one = central.search(text_features=random_queries(12, 3)[0], sentence_features=sentence, depth=1)
    assert [result.candidate_windows for result in one] == [1, 1, 1]
    with pytest.raises(ValueError, match="segment_windows"):
        VideoLibrary(index, model, segment_windows="nearest")


def test_bfloat16_library_search_scores_windows_like_float32(long_library, tmp_path):
    index, _ = long_library
    model = tiny_model()
    model.save_pretrained(tmp_path / "model")
    library = VideoLibrary.from_folders(index.folder, tmp_path / "model", dtype=torch.bfloat16)
    assert library.model.dtype == torch.bfloat16
    exact = VideoLibrary(index, model)
    text, sentence = random_queries(13, num_queries=2)
    _, features, mask, _ = exact._query_inputs(None, text, None, sentence)
    candidates = exact._candidate_windows(sentence, 8)
    np.testing.assert_array_equal(library._candidate_windows(sentence, 8), candidates)
    # window scores to bfloat16's rounding (8 bits of mantissa through a few layers)
    np.testing.assert_allclose(
        library._score(candidates, features, mask), exact._score(candidates, features, mask), atol=0.02
    )
    batched = library.search(text_features=text, sentence_features=sentence, depth=8)
    per_video = VideoLibrary(index, library.model, batch_videos=False).search(
        text_features=text, sentence_features=sentence, depth=8
    )
    for found, reference in zip(batched, per_video):
        assert np.isfinite(found.rows).all() and found.rows.shape == reference.rows.shape
        assert [m.key for m in found.moments] == [m.key for m in reference.moments]
        np.testing.assert_allclose(found.rows[:, :2], reference.rows[:, :2], atol=0.05)
