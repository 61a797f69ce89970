"""`rgnet-hf index` and `rgnet-hf search` end to end, with query features and with sentences (a tiny CLIP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("faiss", reason="library search needs the search extra (faiss-cpu)")

from conftest import accelerate_launch_command  # noqa: E402
from library_utils import random_queries, random_videos, tiny_model, write_cache  # noqa: E402
from raw_video_utils import CLIP_PROJECTION_DIM, build_tiny_clip, build_tiny_rgnet  # noqa: E402

from rgnet_hf.apps.cli import main as cli_main  # noqa: E402
from rgnet_hf.search import LibraryIndex, VideoLibrary  # noqa: E402


def test_index_and_search_with_query_features(tmp_path, capsys):
    model = tiny_model()
    model.save_pretrained(tmp_path / "model")
    caches = [
        write_cache(tmp_path / "a.h5", random_videos(1, {"alpha": 120, "beta": 80})),
        write_cache(tmp_path / "b.h5", random_videos(2, {"gamma": 150})),
    ]
    base = ["--model", str(tmp_path / "model"), "--output", str(tmp_path / "index")]
    assert cli_main(["index", "--features", str(caches[0]), *base]) == 0
    assert "2 videos, 10 segments of 20 features, flat index; added 2" in capsys.readouterr().out
    assert cli_main(["index", "--features", str(caches[0]), "--features", str(caches[1]), *base]) == 0
    assert "added 1, re-indexed 0, unchanged 2" in capsys.readouterr().out
    assert cli_main(["index", "--features", str(caches[1]), *base, "--training-points-per-cell", "0"]) == 2
    assert "--training-points-per-cell must be >= 1" in capsys.readouterr().err
    # a compressed index: one segment per feature (350 of them) in product-quantised codes of 8 bytes
    both = ["--features", str(caches[0]), "--features", str(caches[1]), *base[:2], "--output", str(tmp_path / "pq")]
    compressed = [*both, "--segment-seconds", "0.2", "--nlist", "4", "--index-type", "ivfpq"]
    assert cli_main(["index", *compressed, "--pq-bytes", "5"]) == 2
    assert "must divide 24" in capsys.readouterr().err and not (tmp_path / "pq").exists()
    assert cli_main(["index", *compressed, "--pq-bytes", "8"]) == 0
    assert "350 segments of 1 features, ivfpq (nlist 4, nprobe 4, 8-byte codes) index" in capsys.readouterr().out
    text, sentence = random_queries(3)
    np.save(tmp_path / "text.npy", text)
    np.save(tmp_path / "sentence.npy", sentence)
    search = ["search", "--index", str(tmp_path / "index"), "--model", str(tmp_path / "model")]
    features = ["--text", str(tmp_path / "text.npy"), "--sentence", str(tmp_path / "sentence.npy")]
    assert cli_main([*search, *features, "--top-k", "3", "--depth", "4", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = VideoLibrary(LibraryIndex.open(tmp_path / "index"), model).search(
        text_features=text, sentence_features=sentence, top_k=3, depth=4
    )
    assert [[(m["key"], m["path"]) for m in moments] for moments in printed] == [
        [(m.key, m.path) for m in result.moments] for result in expected
    ]
    for moments, result in zip(printed, expected):
        np.testing.assert_allclose(
            [[m["start"], m["end"], m["score"]] for m in moments],
            [[m.start, m.end, m.score] for m in result.moments],
            atol=1e-5,
        )
    assert cli_main([*search, *features, "--exhaustive"]) == 0
    table = capsys.readouterr().out
    assert "query 0" in table and "query 1" in table and "video" in table
    # errors: one line on stderr, exit status 2, nothing printed as a result
    assert cli_main([*search, "--text", str(tmp_path / "text.npy")]) == 2
    assert "--text needs --sentence" in capsys.readouterr().err
    assert cli_main(["search", "--index", str(tmp_path / "none"), "--model", str(tmp_path / "model"), *features]) == 2
    captured = capsys.readouterr()
    assert "is not a library index" in captured.err and captured.out == ""
    assert cli_main([*search, *features, "--depth", "0"]) == 2
    assert "--depth must be >= 1" in capsys.readouterr().err
    assert cli_main([*search, *features, "--memory-budget-gib", "0"]) == 2
    assert "--memory-budget-gib must be > 0" in capsys.readouterr().err


def test_a_second_writer_of_one_index_or_results_file_is_refused_and_changes_nothing(tmp_path, capsys):
    """Two updates of one index would write the same generation's vector file and lose each other's videos: while
    one holds the folder, `index` (adding or rebuilding) and `LibraryIndex.update` stop at once, the holder named,
    and the index is unchanged; `search --output` locks its results file the same way."""
    from rgnet_hf.data.feature_cache import OutputLockedError, lock_output

    tiny_model().save_pretrained(tmp_path / "model")
    first = write_cache(tmp_path / "a.h5", random_videos(1, {"alpha": 120, "beta": 80}))
    second = write_cache(tmp_path / "b.h5", random_videos(2, {"gamma": 150}))
    index = tmp_path / "index"
    base = ["index", "--model", str(tmp_path / "model"), "--output", str(index)]
    assert cli_main([*base, "--features", str(first)]) == 0
    before = {path.name: path.read_bytes() for path in index.iterdir()}
    capsys.readouterr()
    with lock_output(index):
        for extra in (["--features", str(first), "--features", str(second)], ["--rebuild"]):
            assert cli_main([*base, *extra]) == 2
            assert f"{index} is being written by another run (process {os.getpid()}" in capsys.readouterr().err
        with pytest.raises(OutputLockedError, match="being written by another run"):
            LibraryIndex.update(index, [first, second], tiny_model().config)
    assert {path.name: path.read_bytes() for path in index.iterdir()} == before
    assert cli_main([*base, "--features", str(first), "--features", str(second)]) == 0
    assert "added 1, re-indexed 0, unchanged 2" in capsys.readouterr().out
    assert not (tmp_path / "index.lock").exists()

    text, sentence = random_queries(2)
    np.save(tmp_path / "text.npy", text)
    np.save(tmp_path / "sentence.npy", sentence)
    results = tmp_path / "results.jsonl"
    search = ["search", "--index", str(index), "--model", str(tmp_path / "model"), "--output", str(results)]
    search += ["--text", str(tmp_path / "text.npy"), "--sentence", str(tmp_path / "sentence.npy")]
    with lock_output(results):
        assert cli_main(search) == 2
        assert "being written by another run" in capsys.readouterr().err and not results.exists()
    assert cli_main(search) == 0 and len(results.read_text().splitlines()) == 2


def _feature_search_command(tmp_path, videos: dict, queries_seed: int, depth: int) -> list[str]:
    """A tiny model saved and a library of `videos` indexed through the CLI; the `rgnet-hf search --json` command
    over it with query features (`random_queries(queries_seed)`) at `depth`."""
    tiny_model().save_pretrained(tmp_path / "model")
    cache = write_cache(tmp_path / "a.h5", videos)
    index = ["index", "--features", str(cache), "--model", str(tmp_path / "model"), "--output", str(tmp_path / "ix")]
    assert cli_main(index) == 0
    text, sentence = random_queries(queries_seed)
    np.save(tmp_path / "text.npy", text)
    np.save(tmp_path / "sentence.npy", sentence)
    command = ["search", "--index", str(tmp_path / "ix"), "--model", str(tmp_path / "model"), "--json"]
    return command + [
        "--text",
        str(tmp_path / "text.npy"),
        "--sentence",
        str(tmp_path / "sentence.npy"),
        "--depth",
        str(depth),
    ]


def test_search_memory_budget_reaches_the_engine_and_keeps_the_results(tmp_path, capsys, monkeypatch):
    command = _feature_search_command(tmp_path, random_videos(1, {"alpha": 120, "beta": 80, "gamma": 150}), 3, 6)
    budgets = []
    search = VideoLibrary.search

    def recorded(self, *args, **kwargs):
        budgets.append(self.engine.memory_budget_bytes)
        return search(self, *args, **kwargs)

    monkeypatch.setattr(VideoLibrary, "search", recorded)
    capsys.readouterr()
    assert cli_main(command) == 0
    default = json.loads(capsys.readouterr().out)
    # A budget of a few KiB: one row per chunk, every window embedded by its chunk; the same moments.
    assert cli_main([*command, "--memory-budget-gib", str(4 / 2**20)]) == 0
    small = json.loads(capsys.readouterr().out)
    assert budgets == [2 * 2**30, 4 * 2**10]
    assert [[m["key"] for m in moments] for moments in small] == [[m["key"] for m in moments] for moments in default]
    np.testing.assert_allclose(
        [[m["start"], m["end"], m["score"]] for moments in small for m in moments],
        [[m["start"], m["end"], m["score"]] for moments in default for m in moments],
        atol=1e-4,
    )


def test_search_dtype_and_segment_windows_reach_the_library(tmp_path, capsys, monkeypatch):
    import torch

    command = _feature_search_command(tmp_path, random_videos(2, {"alpha": 320, "beta": 210}), 4, 4)
    seen = []
    search = VideoLibrary.search

    def recorded(self, *args, **kwargs):
        results = search(self, *args, **kwargs)
        seen.append((self.model.dtype, self.segment_windows, [result.candidate_windows for result in results]))
        return results

    monkeypatch.setattr(VideoLibrary, "search", recorded)
    capsys.readouterr()
    assert cli_main(command) == 0
    assert cli_main([*command, "--dtype", "bfloat16", "--segment-windows", "central"]) == 0
    [default, reduced] = seen
    assert default[:2] == (torch.float32, "overlapping") and reduced[:2] == (torch.bfloat16, "central")
    assert all(narrow < wide for narrow, wide in zip(reduced[2], default[2]))
    import rgnet_hf.apps.commands.search as search_command

    capsys.readouterr()
    monkeypatch.setattr(search_command, "_cpu_has_native_bfloat16", lambda: False)
    assert cli_main([*command, "--dtype", "bfloat16"]) == 0
    assert "no native bfloat16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main([*command, "--segment-windows", "nearest"])
    assert "invalid choice" in capsys.readouterr().err


def test_search_sentences_through_the_model_encoder(tmp_path, capsys):
    clip = build_tiny_clip(tmp_path / "clip")
    model = build_tiny_rgnet(tmp_path / "rgnet", clip)
    cache = write_cache(
        tmp_path / "cache.h5",
        random_videos(4, {"kitchen": 70, "street": 50}, size=CLIP_PROJECTION_DIM),
        encoder=str(clip.resolve()),
        rate=0.5,
    )
    index = tmp_path / "index"
    assert cli_main(["index", "--features", str(cache), "--model", str(model), "--output", str(index)]) == 0
    capsys.readouterr()
    search = ["search", "--index", str(index), "--model", str(model)]
    assert cli_main([*search, "--query", "a red door opens", "--query", "a car drives by", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed) == 2 and all(moments for moments in printed)
    assert {m["query"] for m in printed[0]} == {"a red door opens"}
    assert {m["key"] for moments in printed for m in moments} <= {"kitchen", "street"}
    assert cli_main([*search, "--query", "   "]) == 2
    assert "empty query" in capsys.readouterr().err
    # a query file, in batches, to JSON Lines: the same moments as the queries given one by one
    (tmp_path / "queries.txt").write_text("a red door opens\n\na car drives by\n")
    output = tmp_path / "results.jsonl"
    assert (
        cli_main([*search, "--queries", str(tmp_path / "queries.txt"), "--batch-size", "1", "--output", str(output)])
        == 0
    )
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["query"] for line in lines] == ["a red door opens", "a car drives by"]
    for line, moments in zip(lines, printed):
        assert [m["key"] for m in line["moments"]] == [m["key"] for m in moments]
        np.testing.assert_allclose([m["score"] for m in line["moments"]], [m["score"] for m in moments], atol=1e-5)
    assert not output.with_name("results.jsonl.tmp").exists()
    (tmp_path / "blank.txt").write_text("\n  \n")
    assert cli_main([*search, "--queries", str(tmp_path / "blank.txt")]) == 2
    assert "holds no query sentence" in capsys.readouterr().err


def test_queries_shared_out_to_processes_give_the_results_of_one(tmp_path):
    tiny_model().save_pretrained(tmp_path / "model")
    cache = write_cache(tmp_path / "a.h5", random_videos(5, {"alpha": 100, "beta": 70, "gamma": 90}))
    LibraryIndex.update(tmp_path / "index", [cache], tiny_model().config)
    text, sentence = random_queries(6, num_queries=3)
    np.save(tmp_path / "text.npy", text)
    np.save(tmp_path / "sentence.npy", sentence)
    arguments = ["search", "--index", str(tmp_path / "index"), "--model", str(tmp_path / "model")]
    arguments += ["--text", str(tmp_path / "text.npy"), "--sentence", str(tmp_path / "sentence.npy"), "--depth", "6"]
    assert cli_main([*arguments, "--output", str(tmp_path / "one.jsonl")]) == 0
    command = accelerate_launch_command(
        2, "-m", "rgnet_hf.apps.cli", *arguments, "--output", str(tmp_path / "two.jsonl")
    )
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "3 queries from 2 processes" in run.stdout
    one = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert [line["index"] for line in two] == [0, 1, 2]
    for a, b in zip(one, two):
        assert [m["key"] for m in a["moments"]] == [m["key"] for m in b["moments"]]
        np.testing.assert_allclose([m["score"] for m in a["moments"]], [m["score"] for m in b["moments"]], atol=1e-5)
    assert not (tmp_path / "two.jsonl.parts").exists()


def test_without_faiss_the_package_imports_and_the_commands_say_what_to_install(tmp_path):
    script = f"""
import sys
sys.modules["faiss"] = None  # import faiss now fails, as where faiss-cpu is not installed
import rgnet_hf.search
from rgnet_hf.apps.cli import main
assert "faiss" not in [name for name in sys.modules if sys.modules[name] is not None]
status = main(["index", "--features", "a.h5", "--model", {str(tmp_path)!r}, "--output", {str(tmp_path / "index")!r}])
print("status", status)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "status 2" in run.stdout, run.stderr[-2000:]
    assert "pip install rgnet_hf[search]" in run.stderr
    assert not (tmp_path / "index").exists()
