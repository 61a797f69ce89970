"""Rows of many videos scored and decoded in shared encoder chunks (`score_window_rows` / `decode_window_rows`),
with only their windows' frames embedded, equal the per-video engine calls; and so do the library's searches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from library_utils import random_queries, random_videos, tiny_model, write_cache

from rgnet_hf import RGNetGroundingEngine, VideoFrameRuns
from rgnet_hf.windowing import frame_runs_of_windows, window_bounds

# 40-frame windows every 20 frames; "tiny" is shorter than one window (rows of its own, shorter length)
LENGTHS = {"long": 410, "short": 95, "tiny": 27, "mid": 230}


def _grid(model, num_frames: int) -> np.ndarray:
    config = model.config
    return window_bounds(num_frames, config.window_length, config.window_stride).numpy()


def _random_rows(model, videos: list[np.ndarray], num_queries: int, seed: int, per_video: int = 4) -> np.ndarray:
    """Rows `(video, query, window)` of a few windows per video and query, shuffled (not in video order)."""
    generator = np.random.default_rng(seed)
    rows = []
    for position, video in enumerate(videos):
        num_windows = len(_grid(model, len(video)))
        for query in range(num_queries):
            for window in generator.choice(num_windows, size=min(per_video, num_windows), replace=False):
                rows.append((position, query, window))
    return generator.permutation(np.array(rows))


def _per_video(rows: np.ndarray, call) -> list:
    """`call(position, selection)` for each video of `rows`."""
    return [(rows[:, 0] == position, call(position, rows[:, 0] == position)) for position in np.unique(rows[:, 0])]


@pytest.mark.parametrize(
    "engine_options",
    [
        {},  # the frame table embedded once ("shared"), several rows per chunk
        {"memory_budget_bytes": 1},  # each chunk embeds its own rows ("per_chunk"), one row per chunk
        {"share_video_work": False},  # each row through the model's default path ("per_row")
    ],
    ids=["shared", "per-chunk", "per-row"],
)
def test_score_window_rows_equals_score_windows_of_each_video(engine_options):
    model = tiny_model()
    engine = RGNetGroundingEngine(model, **engine_options)
    videos = list(random_videos(21, LENGTHS).values())
    text, _ = random_queries(22, num_queries=2)
    rows = _random_rows(model, videos, 2, seed=23)
    logits = engine.score_window_rows(videos, text, None, rows[:, 0], rows[:, 1], rows[:, 2])
    assert logits.shape == (len(rows),) and logits.dtype == torch.float32
    expected = torch.empty(len(rows))
    for selection, video_logits in _per_video(
        rows, lambda position, rows_of: engine.score_windows(videos[position], text, None, *rows[rows_of, 1:].T)
    ):
        expected[torch.from_numpy(selection)] = video_logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    # row order matters: the logits follow the rows, not the videos
    assert not torch.allclose(logits, logits.flip(0), atol=1e-3)


def test_decode_window_rows_equals_decode_windows_of_each_video():
    model = tiny_model()
    engine = RGNetGroundingEngine(model)
    videos = list(random_videos(24, LENGTHS).values())
    text, sentence = random_queries(25, num_queries=2)
    rows = _random_rows(model, videos, 2, seed=26, per_video=3)
    scores = np.random.default_rng(27).uniform(0.1, 0.9, size=len(rows))
    decoded = engine.decode_window_rows(
        videos, text, None, rows[:, 0], rows[:, 1], rows[:, 2], scores, sentence_features=sentence
    )
    assert decoded.shape == (len(rows), model.config.num_queries, 4)
    expected = np.zeros_like(decoded)
    for selection, video_rows in _per_video(
        rows,
        lambda position, rows_of: engine.decode_windows(
            videos[position], text, None, *rows[rows_of, 1:].T, scores[rows_of], sentence_features=sentence
        ),
    ):
        expected[selection] = video_rows
    np.testing.assert_allclose(decoded, expected, rtol=0, atol=1e-4 + 1e-9)
    # seconds are each row's own video's: a later window of a video starts later
    assert np.abs(decoded[..., :2]).max() > 20 * model.config.seconds_per_feature


def test_partial_embedding_equals_whole_video_embedding(monkeypatch):
    """Rows given as `VideoFrameRuns` (only their windows' frames) score as `score_windows` on the whole video, and
    only those frames go through the input projection."""
    model = tiny_model()
    engine = RGNetGroundingEngine(model)
    video = random_videos(28, {"v": 610})["v"]
    text, _ = random_queries(29, num_queries=2)
    bounds = _grid(model, len(video))
    queries, windows = np.array([0, 1, 1, 0]), np.array([3, 3, 17, 30])
    runs = frame_runs_of_windows(bounds[windows])
    frames = np.concatenate([video[start:end] for start, end in runs])
    partial = VideoFrameRuns(len(video), runs, frames)

    embedded = []
    embed_video = type(model.model).embed_video

    def counting_embed_video(self, features):
        embedded.append(features.shape[:-1].numel())
        return embed_video(self, features)

    monkeypatch.setattr(type(model.model), "embed_video", counting_embed_video)
    logits = engine.score_window_rows([partial], text, None, np.zeros(4, dtype=int), queries, windows)
    partial_frames = sum(embedded)
    embedded.clear()
    whole = engine.score_windows(video, text, None, queries, windows)
    whole_frames = sum(embedded)
    torch.testing.assert_close(logits, whole, atol=1e-5, rtol=0)
    # the windows' valid frames plus one padding frame, against the whole (padded) video
    needed = int((runs[:, 1] - runs[:, 0]).sum())
    assert partial_frames == needed + 1 < len(video) // 3 < whole_frames
    # frames outside the runs are not read: the same rows from runs holding extra frames give the same logits
    wider = np.array([[0, runs[-1, 1]]])
    padded = VideoFrameRuns(len(video), wider, video[: runs[-1, 1]])
    again = engine.score_window_rows([padded], text, None, np.zeros(4, dtype=int), queries, windows)
    torch.testing.assert_close(again, logits, atol=1e-6, rtol=0)


def test_window_rows_refuse_frames_they_lack():
    model = tiny_model()
    engine = RGNetGroundingEngine(model)
    video = random_videos(30, {"v": 200})["v"]
    text, _ = random_queries(31, num_queries=1)
    partial = VideoFrameRuns(len(video), np.array([[0, 40]]), video[:40])
    with pytest.raises(ValueError, match="lacks frames"):
        engine.score_window_rows([partial], text, None, [0], [0], [5])
    with pytest.raises(ValueError, match="holds 39 frames"):
        engine.score_window_rows([VideoFrameRuns(200, np.array([[0, 40]]), video[:39])], text, None, [0], [0], [1])
    with pytest.raises(ValueError, match="window_index"):
        engine.score_window_rows([video], text, None, [0], [0], [len(_grid(model, 200))])
    with pytest.raises(ValueError, match="video_index"):
        engine.score_window_rows([video], text, None, [1], [0], [0])
    assert engine.score_window_rows([video], text, None, [], [], []).shape == (0,)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    pytest.importorskip("faiss", reason="library search needs the search extra (faiss-cpu)")
    from rgnet_hf.search import LibraryIndex

    root = tmp_path_factory.mktemp("batched-library")
    videos = random_videos(32, {**LENGTHS, "other": 330, "last": 150})
    index, _ = LibraryIndex.update(root / "index", [write_cache(root / "cache.h5", videos)], tiny_model().config)
    return index


@pytest.mark.parametrize("memory_budget_bytes", [2 * 2**30, 40_000], ids=["one-batch", "many-batches"])
def test_batched_library_search_equals_one_call_per_video(library, memory_budget_bytes, monkeypatch):
    from rgnet_hf.search import VideoLibrary

    model = tiny_model()
    engine = RGNetGroundingEngine(model, memory_budget_bytes=memory_budget_bytes)
    batched = VideoLibrary(library, model, engine=engine)
    per_video = VideoLibrary(library, model, engine=engine, batch_videos=False)
    text, sentence = random_queries(33, num_queries=3)
    calls = []
    score_window_rows = RGNetGroundingEngine.score_window_rows

    def counting(self, videos, *args, **kwargs):
        calls.append(len(videos))
        return score_window_rows(self, videos, *args, **kwargs)

    monkeypatch.setattr(RGNetGroundingEngine, "score_window_rows", counting)
    for options in ({"depth": 2}, {"depth": 12}, {"exhaustive": True}):
        found = batched.search(text_features=text, sentence_features=sentence, **options)
        expected = per_video.search(text_features=text, sentence_features=sentence, **options)
        for result, reference in zip(found, expected):
            assert result.candidate_windows == reference.candidate_windows
            np.testing.assert_array_equal(result.videos, reference.videos)
            np.testing.assert_allclose(result.rows, reference.rows, rtol=1e-5, atol=1e-4 + 1e-9)
            assert [m.key for m in result.moments] == [m.key for m in reference.moments]
    # rows of several videos share a call, unless the budget splits them (40 kB: a few windows of frames a call);
    # the decoded windows are finished from the scoring's states, except where those do not fit (40 kB)
    assert max(calls) > 1 if memory_budget_bytes > 10**6 else len(calls) > 3
    assert (engine.best_window_states(3) is not None) == (memory_budget_bytes > 10**6)


def test_best_window_states_keep_each_querys_best_rows_and_decode_as_encoding_again(monkeypatch):
    model = tiny_model()
    engine = RGNetGroundingEngine(model)
    videos = list(random_videos(34, LENGTHS).values())
    text, sentence = random_queries(35, num_queries=2)
    rows = _random_rows(model, videos, 2, seed=36, per_video=6)
    row_ids = np.random.default_rng(37).permutation(len(rows)) + 100
    states = engine.best_window_states(num_queries=2)
    assert states is not None and states.top_k == engine.top_k_windows == 4
    logits = []
    for part in np.array_split(np.arange(len(rows)), 3):  # three calls, as a library scores batches of videos
        logits.append(
            engine.score_window_rows(videos, text, None, *rows[part].T, best_states=states, row_ids=row_ids[part])
        )
    scores = torch.sigmoid(torch.cat(logits)).numpy()
    # per query and row length, the top 4 rows by (score descending, id ascending)
    lengths = np.array([min(model.config.window_length, len(videos[v])) for v in rows[:, 0]])
    expected = set()
    for query in range(2):
        for length in np.unique(lengths):
            pool = np.flatnonzero((rows[:, 1] == query) & (lengths == length))
            best = pool[np.lexsort((row_ids[pool], -scores[pool].astype(np.float64)))][:4]
            expected |= {(int(length), int(row_ids[row])) for row in best}
    kept = {(length, int(row)) for length, part in states._kept.items() for row in part["row_ids"]}
    assert kept == expected and len(states) == len(expected)

    decoded_rows = np.array(sorted(np.flatnonzero(np.isin(row_ids, [row for _, row in expected]))))
    arguments = (videos, text, None, *rows[decoded_rows].T, scores[decoded_rows])
    encoded = []
    encode = type(model.model).encode
    monkeypatch.setattr(
        type(model.model), "encode", lambda self, *args, **kwargs: encoded.append(1) or encode(self, *args, **kwargs)
    )
    finished = engine.decode_window_rows(
        *arguments, sentence_features=sentence, best_states=states, row_ids=row_ids[decoded_rows]
    )
    assert not encoded  # every decoded row was finished from its kept states
    again = engine.decode_window_rows(*arguments, sentence_features=sentence)
    assert encoded
    np.testing.assert_allclose(finished, again, rtol=0, atol=1e-4 + 1e-9)
    # a row that was not kept: its rows of that length are encoded again, with the same result
    not_kept = np.flatnonzero(~np.isin(row_ids, [row for _, row in expected]))[:1]
    mixed = np.concatenate([decoded_rows, not_kept])
    encoded.clear()
    mixed_rows = engine.decode_window_rows(
        videos,
        text,
        None,
        *rows[mixed].T,
        scores[mixed],
        sentence_features=sentence,
        best_states=states,
        row_ids=row_ids[mixed],
    )
    assert encoded
    np.testing.assert_allclose(mixed_rows[: len(decoded_rows)], finished, rtol=0, atol=1e-4 + 1e-9)


def test_best_window_states_only_where_they_can_be_kept_and_fit():
    model = tiny_model()
    assert RGNetGroundingEngine(model, share_video_work=False).best_window_states(1) is None
    assert RGNetGroundingEngine(model, memory_budget_bytes=10_000).best_window_states(1) is None
    with pytest.raises(ValueError, match="best_states"):
        video = random_videos(38, {"v": 100})["v"]
        text, _ = random_queries(39, num_queries=1)
        states = RGNetGroundingEngine(model).best_window_states(1)
        RGNetGroundingEngine(model, share_video_work=False).score_window_rows(
            [video], text, None, [0], [0], [1], best_states=states
        )
