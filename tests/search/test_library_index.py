"""The library index on disk: the index rule, incremental adds, changed features and bad input (nothing lost)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("faiss", reason="library search needs the search extra (faiss-cpu)")

from library_utils import ENCODER, random_queries, random_videos, tiny_model, write_cache  # noqa: E402

from rgnet_hf.search import LibraryIndex, VideoLibrary, choose_index_spec, segment_vectors  # noqa: E402


def _snapshot(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def _search(index, depth=10_000, exhaustive=False):
    text, sentence = random_queries(11, num_queries=2)
    return VideoLibrary(index, tiny_model()).search(
        text_features=text, sentence_features=sentence, depth=depth, exhaustive=exhaustive
    )


def _same_results(first, second):
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.videos, b.videos)
        np.testing.assert_allclose(a.rows, b.rows, atol=1e-6)


def test_segment_vectors_are_unit_means_of_unit_frames():
    features = np.array([[3.0, 4.0], [0.0, 2.0], [10.0, 0.0]], dtype=np.float32)
    vectors = segment_vectors(features, 2)
    mean = np.array([0.6, 0.8]) + np.array([0.0, 1.0])
    np.testing.assert_allclose(vectors, [mean / np.linalg.norm(mean), [1.0, 0.0]], atol=1e-6)
    assert not segment_vectors(np.zeros((3, 2)), 2).any()


def test_index_rule():
    assert choose_index_spec(50_000).type == "flat"
    big = choose_index_spec(2_000_000)
    assert (big.type, big.nlist, big.nprobe) == ("ivfsq8", 4096, 512)  # 4 * sqrt(2e6) = 5657 -> 2 ** 12; nlist / 8
    assert choose_index_spec(500, flat_limit=100, nlist=8, nprobe=2).to_dict() == {
        "type": "ivfsq8",
        "nlist": 8,
        "nprobe": 2,
        "pq_bytes": 0,
    }
    assert choose_index_spec(2_000_000, index_type="flat").type == "flat"
    # one byte per dimension while the codes fit in 4 GiB, then one byte per 4 dimensions
    assert choose_index_spec(8_388_608).type == "ivfsq8"  # exactly 4 GiB of 512-d 8-bit codes
    huge = choose_index_spec(8_388_609)
    assert (huge.type, huge.nlist, huge.nprobe, huge.pq_bytes) == ("ivfpq", 16384, 2048, 128)
    assert choose_index_spec(9_000_000, dimension=256).type == "ivfsq8"
    assert choose_index_spec(5_000_000, dimension=1024).type == "ivfpq"
    assert choose_index_spec(2_000_000, code_memory_limit=2**20).type == "ivfpq"
    assert choose_index_spec(2_000_000, index_type="ivf").to_dict() == {
        "type": "ivf",
        "nlist": 4096,
        "nprobe": 512,
        "pq_bytes": 0,
    }
    assert choose_index_spec(300, index_type="ivfpq", nlist=4, dimension=24).pq_bytes == 6
    assert choose_index_spec(300, index_type="ivfpq", nlist=4, dimension=20).pq_bytes == 5
    described = choose_index_spec(300, index_type="ivfpq", nlist=4, dimension=24, pq_bytes=12).describe()
    assert described == "ivfpq (nlist 4, nprobe 4, 12-byte codes)"
    with pytest.raises(ValueError, match="must divide 24"):
        choose_index_spec(300, index_type="ivfpq", nlist=4, dimension=24, pq_bytes=5)
    with pytest.raises(ValueError, match="at least 256 segment vectors"):
        choose_index_spec(200, index_type="ivfpq", nlist=4, dimension=24)
    with pytest.raises(ValueError, match="at least 64 segment vectors"):
        choose_index_spec(10, index_type="ivf", nlist=64)
    with pytest.raises(ValueError, match="index type"):
        choose_index_spec(10, index_type="hnsw")


def test_incremental_add_equals_building_at_once(tmp_path):
    config = tiny_model().config
    first = write_cache(tmp_path / "first.h5", random_videos(1, {"alpha": 130, "beta": 70}))
    second = write_cache(tmp_path / "second.h5", random_videos(2, {"gamma": 180}))
    at_once, report = LibraryIndex.update(tmp_path / "at_once", [first, second], config)
    assert report.added == ["alpha", "beta", "gamma"]
    LibraryIndex.update(tmp_path / "grown", [first], config)
    grown, report = LibraryIndex.update(tmp_path / "grown", [first, second], config)
    assert (report.added, report.unchanged) == (["gamma"], ["alpha", "beta"])
    assert grown.manifest["videos"] == at_once.manifest["videos"]
    assert LibraryIndex.open(tmp_path / "grown").backend.size == at_once.backend.size == 7 + 4 + 9
    _same_results(_search(LibraryIndex.open(tmp_path / "grown"), depth=5), _search(at_once, depth=5))
    # indexing the same caches again changes nothing on disk
    before = _snapshot(tmp_path / "grown")
    _, report = LibraryIndex.update(tmp_path / "grown", [second], config)
    assert report.unchanged == ["gamma"] and _snapshot(tmp_path / "grown") == before


def test_ivf_index_searches_and_grows(tmp_path):
    config = tiny_model().config
    caches = [write_cache(tmp_path / f"{n}.h5", random_videos(n, {f"v{n}": 200})) for n in range(2)]
    index, _ = LibraryIndex.update(tmp_path / "ivf", caches[:1], config, index_type="ivf", nlist=4, nprobe=4)
    index, _ = LibraryIndex.update(tmp_path / "ivf", caches, config)
    assert index.spec.type == "ivf" and index.backend.size == 20
    _same_results(_search(index), _search(index, exhaustive=True))
    flat, _ = LibraryIndex.update(tmp_path / "flat", caches, config)
    _same_results(_search(LibraryIndex.open(tmp_path / "ivf")), _search(flat))


@pytest.mark.parametrize("index_type", ["ivfsq8", "ivfpq"])
def test_compressed_index_holds_codes_searches_and_grows(tmp_path, index_type, monkeypatch):
    from rgnet_hf.search import index as index_module

    faiss = pytest.importorskip("faiss")
    monkeypatch.setattr(index_module, "IN_MEMORY_VECTOR_BYTES", 0)  # trained from the vectors' temporary file
    config = tiny_model().config
    # one segment per feature: 2 x 200 segment vectors, enough for 256 centroids per sub-vector
    caches = [write_cache(tmp_path / f"{n}.h5", random_videos(n, {f"v{n}": 200})) for n in range(3)]
    options = {"index_type": index_type, "nlist": 4, "nprobe": 4, "pq_bytes": 6, "segment_seconds": 0.2}
    index, _ = LibraryIndex.update(tmp_path / "pq", caches[:2], config, **options)
    pq_bytes = 6 if index_type == "ivfpq" else 0
    assert index.manifest["index"] == {"type": index_type, "nlist": 4, "nprobe": 4, "pq_bytes": pq_bytes}
    if index_type == "ivfpq":
        assert isinstance(index.backend.index, faiss.IndexIVFPQ) and index.backend.index.pq.M == 6
    else:
        assert isinstance(index.backend.index, faiss.IndexIVFScalarQuantizer) and index.backend.index.code_size == 24
    index, report = LibraryIndex.update(tmp_path / "pq", caches, config)
    assert report.added == ["v2"] and index.backend.size == 600
    reopened = LibraryIndex.open(tmp_path / "pq")
    assert reopened.spec == index.spec and reopened.backend.index.nprobe == 4
    # the codes rank approximately, but a depth that reaches every segment still gives the exhaustive result
    _same_results(_search(reopened), _search(reopened, exhaustive=True))
    # nearest segments by code: a segment's own vector finds itself among its first few
    vectors = segment_vectors(random_videos(2, {"v2": 200})["v2"], 1)
    _, ids = reopened.backend.search(vectors[:20], 5)
    assert np.mean([400 + row in found for row, found in enumerate(ids.tolist())]) >= 0.9
    if index_type == "ivfpq":
        with pytest.raises(ValueError, match="at least 256 segment vectors"):
            LibraryIndex.update(tmp_path / "small", caches[:1], config, **{**options, "segment_seconds": 4.0})
        assert not (tmp_path / "small").exists()


def test_a_large_update_spools_its_vectors_to_disk(tmp_path, monkeypatch):
    from rgnet_hf.search import index as index_module

    config = tiny_model().config
    first = write_cache(tmp_path / "first.h5", random_videos(1, {"alpha": 130, "beta": 70}))
    second = write_cache(tmp_path / "second.h5", random_videos(2, {"gamma": 180}))
    in_memory, _ = LibraryIndex.update(tmp_path / "in_memory", [first, second], config)
    spools = []
    spool_class = index_module._VectorSpool
    monkeypatch.setattr(index_module, "IN_MEMORY_VECTOR_BYTES", 0)
    monkeypatch.setattr(index_module, "ADD_CHUNK_ROWS", 3)  # several add calls
    monkeypatch.setattr(index_module, "_VectorSpool", lambda *args: spools.append(spool_class(*args)) or spools[-1])
    spooled, _ = LibraryIndex.update(tmp_path / "spooled", [first], config)
    spooled, _ = LibraryIndex.update(tmp_path / "spooled", [first, second], config)
    assert [spool.on_disk for spool in spools] == [True, True] and all(spool._file is None for spool in spools)
    assert spooled.manifest["videos"] == in_memory.manifest["videos"]
    assert sorted(path.name for path in (tmp_path / "spooled").iterdir()) == ["manifest.json", "vectors-1.faiss"]
    _same_results(_search(LibraryIndex.open(tmp_path / "spooled"), depth=5), _search(in_memory, depth=5))


def test_ivf_training_sample_per_cell_reaches_faiss(tmp_path, monkeypatch):
    from rgnet_hf.search import FaissBackend, IndexSpec

    vectors = np.random.default_rng(0).normal(size=(64, 24)).astype(np.float32)
    backend = FaissBackend.create(IndexSpec("ivf", 4, 4), 24, vectors, training_points_per_cell=5)
    assert backend.index.cp.max_points_per_centroid == 5 and backend.index.is_trained
    assert FaissBackend.create(IndexSpec("ivf", 4, 4), 24, vectors).index.cp.max_points_per_centroid == 256
    with pytest.raises(ValueError, match="training_points_per_cell"):
        FaissBackend.create(IndexSpec("ivf", 4, 4), 24, vectors, training_points_per_cell=0)

    class Rows:  # what k-means reads of the vectors: one random sample, spread over all of them
        def __init__(self, array):
            self.array, self.reads = array, []

        def __len__(self):
            return len(self.array)

        def __getitem__(self, rows):
            self.reads.append(np.asarray(rows))
            return self.array[rows]

    many = Rows(np.random.default_rng(1).normal(size=(2000, 24)).astype(np.float32))
    backend = FaissBackend.create(IndexSpec("ivfpq", 4, 4, 6), 24, many, training_points_per_cell=128)
    assert backend.index.is_trained and len(many.reads) == 1
    (rows,) = many.reads
    assert len(rows) == len(set(rows.tolist())) == 512 and rows.min() < 100 and rows.max() > 1900
    seen = []
    create = FaissBackend.create.__func__
    monkeypatch.setattr(
        FaissBackend, "create", classmethod(lambda cls, *args: seen.append(args[3:]) or create(cls, *args))
    )
    cache = write_cache(tmp_path / "c.h5", random_videos(0, {"v": 200}))
    LibraryIndex.update(
        tmp_path / "ivf", [cache], tiny_model().config, index_type="ivf", nlist=4, training_points_per_cell=3
    )
    assert seen == [(3,)]


def test_changed_features_are_refused_or_reindexed(tmp_path):
    config = tiny_model().config
    cache = write_cache(tmp_path / "cache.h5", random_videos(3, {"alpha": 120, "beta": 60}))
    folder = tmp_path / "index"
    LibraryIndex.update(folder, [cache], config)
    changed = random_videos(4, {"alpha": 140})["alpha"]
    with h5py.File(cache, "a") as handle:
        attrs = dict(handle["alpha"].attrs)
        del handle["alpha"]
        handle.create_dataset("alpha", data=changed).attrs.update(attrs)
    before = _snapshot(folder)
    with pytest.raises(ValueError, match=r"\[alpha\] changed since it was indexed.*--reindex-changed"):
        LibraryIndex.update(folder, [cache], config)
    assert _snapshot(folder) == before
    # a search of the stale index notices the new shape instead of reading wrong windows
    with pytest.raises(ValueError, match="its features changed"):
        _search(LibraryIndex.open(folder), exhaustive=True)
    index, report = LibraryIndex.update(folder, [cache], config, reindex_changed=True)
    assert (report.reindexed, report.unchanged) == (["alpha"], ["beta"])
    assert [video.key for video in index.videos] == ["beta", "alpha"] and index.backend.size == 3 + 7
    # the new vector file replaced the old one
    assert sorted(_snapshot(folder)) == ["manifest.json", "vectors-1.faiss"]
    fresh, _ = LibraryIndex.update(tmp_path / "fresh", [cache], config)
    # the same videos in another library order: the same moments
    for a, b in zip(_search(LibraryIndex.open(folder)), _search(fresh)):
        keys_a = [index.videos[v].key for v in a.videos]
        keys_b = [fresh.videos[v].key for v in b.videos]
        assert keys_a == keys_b
        np.testing.assert_allclose(a.rows, b.rows, atol=1e-6)


def test_entries_that_do_not_fit_the_model_are_refused(tmp_path):
    config = tiny_model().config
    folder = tmp_path / "index"
    good = write_cache(tmp_path / "good.h5", random_videos(5, {"alpha": 90}))
    LibraryIndex.update(folder, [good], config)
    before = _snapshot(folder)
    cases = {
        "encoder": (write_cache(tmp_path / "enc.h5", random_videos(6, {"x": 50}), encoder="other"), "encoder 'other'"),
        "rate": (write_cache(tmp_path / "rate.h5", random_videos(6, {"x": 50}), rate=0.5), "0.5 s per feature"),
        "size": (write_cache(tmp_path / "size.h5", random_videos(6, {"x": 50}, size=16)), "16-d features"),
        "collision": (write_cache(tmp_path / "other.h5", random_videos(7, {"alpha": 50})), "already holds 'alpha'"),
    }
    for cache, message in cases.values():
        with pytest.raises(ValueError, match=message):
            LibraryIndex.update(folder, [cache], config)
        assert _snapshot(folder) == before
    twice = write_cache(tmp_path / "twice.h5", random_videos(8, {"delta": 40}))
    with pytest.raises(ValueError, match=r"'delta' is in both .*twice\.h5 and .*twice2\.h5"):
        LibraryIndex.update(
            tmp_path / "new", [twice, write_cache(tmp_path / "twice2.h5", {"delta": np.ones((9, 24))})], config
        )
    assert not (tmp_path / "new").exists()
    with pytest.raises(FileNotFoundError, match="no such file"):
        LibraryIndex.update(folder, [tmp_path / "missing.h5"], config)
    assert _snapshot(folder) == before
    # a model that names no encoder: the library still holds one encoder's features
    mixed = [write_cache(tmp_path / f"{name}.h5", random_videos(9, {name: 40}), encoder=name) for name in ("p", "q")]
    with pytest.raises(ValueError, match="'q', but the library holds 'p' features"):
        LibraryIndex.update(tmp_path / "mixed", mixed, tiny_model(feature_encoder=None).config)
    assert not (tmp_path / "mixed").exists()


def test_search_refuses_a_model_missing_files_empty_queries_and_corrupt_files(tmp_path):
    model = tiny_model()
    cache = write_cache(tmp_path / "cache.h5", random_videos(9, {"alpha": 90, "beta": 60}))
    folder = tmp_path / "index"
    index, _ = LibraryIndex.update(folder, [cache], model.config)
    for overrides, message in (
        ({"seconds_per_feature": 0.5}, "0.2 s per feature, but the model reads 0.5"),
        ({"video_feature_size": 16, "sentence_feature_size": 16}, "24-d features, but the model reads 16-d"),
        ({"feature_encoder": "another"}, "'tiny-encoder' features, but the model reads 'another'"),
    ):
        with pytest.raises(ValueError, match=message):
            VideoLibrary(index, tiny_model(**overrides))
    library = VideoLibrary(index, model)
    text, sentence = random_queries(10)
    with pytest.raises(ValueError, match="empty query"):
        library.search(["a door opens", "  "])
    with pytest.raises(ValueError, match="empty query"):
        library.search(text_features=text, text_mask=np.zeros(text.shape[:2]), sentence_features=sentence)
    with pytest.raises(ValueError, match="needs `sentence_features`"):
        library.search(text_features=text)
    with pytest.raises(ValueError, match="one row per query"):
        library.search(text_features=text, sentence_features=sentence[:1])
    with pytest.raises(ValueError, match="NaN"):
        library.search(text_features=text, sentence_features=np.full_like(sentence, np.nan))
    cache.rename(tmp_path / "moved.h5")
    with pytest.raises(FileNotFoundError, match=r"'alpha' reads its features from .*cache\.h5, which does not exist"):
        library.search(text_features=text, sentence_features=sentence, exhaustive=True)
    (tmp_path / "moved.h5").rename(cache)
    manifest = json.loads((folder / "manifest.json").read_text())
    vectors = folder / manifest["vectors_file"]
    vectors.write_bytes(vectors.read_bytes()[:40])
    with pytest.raises(ValueError, match="not a readable FAISS index"):
        LibraryIndex.open(folder)
    with pytest.raises(ValueError, match="not a readable FAISS index"):
        LibraryIndex.update(folder, [cache], model.config)
    (folder / "manifest.json").write_text("{ not json")
    with pytest.raises(ValueError, match="manifest.json is not valid JSON"):
        LibraryIndex.open(folder)
    del manifest["videos"][0]["content_hash"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="manifest.json is incomplete or damaged"):
        LibraryIndex.open(folder)
    del manifest["index"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="manifest.json is incomplete or damaged"):
        LibraryIndex.open(folder)
    assert ENCODER == index.encoder


def test_a_failed_write_leaves_the_previous_index_whole(tmp_path, monkeypatch):
    from rgnet_hf.search import FaissBackend

    config = tiny_model().config
    folder = tmp_path / "index"
    LibraryIndex.update(folder, [write_cache(tmp_path / "a.h5", random_videos(12, {"alpha": 80}))], config)
    before = _snapshot(folder)

    def full_disk(self, path):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FaissBackend, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        LibraryIndex.update(folder, [write_cache(tmp_path / "b.h5", random_videos(13, {"beta": 60}))], config)
    assert _snapshot(folder) == before
    assert [video.key for video in LibraryIndex.open(folder).videos] == ["alpha"]


def test_rebuild_gives_a_grown_library_the_index_of_its_size(tmp_path, capsys):
    from rgnet_hf.apps.cli import main as cli_main

    model = tiny_model()
    config = model.config
    model.save_pretrained(tmp_path / "model")
    caches = [write_cache(tmp_path / f"{n}.h5", random_videos(n, {f"v{n}a": 200, f"v{n}b": 120})) for n in range(3)]
    folder = tmp_path / "index"
    # built small (flat below 20 segments), then grown past that size
    LibraryIndex.update(folder, caches[:1], config, flat_limit=20)
    base = ["index", "--model", str(tmp_path / "model"), "--output", str(folder), "--flat-limit", "20"]
    assert cli_main([*base, *sum((["--features", str(c)] for c in caches), [])]) == 0
    printed = capsys.readouterr().out
    assert "48 segments" in printed and "flat index" in printed
    assert "note: at 48 segments the index rule picks ivfsq8" in printed and "--rebuild" in printed
    grown = LibraryIndex.open(folder)
    flat_results = _search(grown)
    assert cli_main([*base, "--rebuild", "--nlist", "4", "--nprobe", "4"]) == 0
    assert "rebuilt 48 segments of 6 videos as a ivfsq8 (nlist 4, nprobe 4, 8-bit codes) index (was flat)" in (
        capsys.readouterr().out
    )
    rebuilt = LibraryIndex.open(folder)
    assert rebuilt.spec.type == "ivfsq8" and rebuilt.backend.size == 48
    assert [v.key for v in rebuilt.videos] == [v.key for v in grown.videos]
    assert [v.content_hash for v in rebuilt.videos] == [v.content_hash for v in grown.videos]
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        f"vectors-{rebuilt.manifest['generation']}.faiss",
    ]
    # every cell probed: the pre-filter finds the flat index's segments, so the moments are the same
    _same_results(_search(rebuilt), flat_results)
    # a later update keeps the rebuilt type; a type set by hand gets no note
    assert cli_main([*base, "--features", str(caches[0])]) == 0
    assert "note:" not in capsys.readouterr().out
    assert cli_main([*base, "--rebuild", "--index-type", "flat"]) == 0
    assert "as a flat index (was ivfsq8" in capsys.readouterr().out
    _same_results(_search(LibraryIndex.open(folder)), flat_results)


def test_rebuild_refuses_changed_or_missing_features_and_keeps_the_index(tmp_path, capsys):
    from rgnet_hf.apps.cli import main as cli_main

    config = tiny_model().config
    cache = write_cache(tmp_path / "cache.h5", random_videos(3, {"alpha": 120, "beta": 60}))
    folder = tmp_path / "index"
    LibraryIndex.update(folder, [cache], config)
    before = _snapshot(folder)
    with h5py.File(cache, "a") as handle:
        attrs = dict(handle["beta"].attrs)
        del handle["beta"]
        handle.create_dataset("beta", data=random_videos(5, {"beta": 60})["beta"]).attrs.update(attrs)
    with pytest.raises(ValueError, match=r"\[beta\] changed since it was indexed.*--reindex-changed"):
        LibraryIndex.rebuild(folder, config, index_type="flat")
    assert _snapshot(folder) == before
    cache.unlink()
    with pytest.raises(FileNotFoundError, match="alpha: its feature cache .* is missing"):
        LibraryIndex.rebuild(folder, config)
    assert _snapshot(folder) == before
    tiny_model().save_pretrained(tmp_path / "model")
    command = ["index", "--model", str(tmp_path / "model"), "--rebuild", "--output", str(tmp_path / "none")]
    assert cli_main(command) == 2
    assert "is not a library index (no manifest.json) to rebuild" in capsys.readouterr().err
