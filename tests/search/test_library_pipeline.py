"""The `video-grounding` pipeline on a library input: the same moments as `VideoLibrary.search`, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("faiss", reason="library search needs the search extra (faiss-cpu)")

from conftest import run_without_rgnet_hf  # noqa: E402
from library_utils import random_queries, random_videos, tiny_model, write_cache  # noqa: E402
from raw_video_utils import CLIP_PROJECTION_DIM, build_tiny_clip, build_tiny_rgnet  # noqa: E402
from transformers import pipeline  # noqa: E402

from rgnet_hf import RGNetForVideoGrounding, save_model_folder  # noqa: E402
from rgnet_hf.search import LibraryIndex, VideoLibrary  # noqa: E402

LENGTHS = {"alpha": 150, "beta": 95, "gamma": 230}


def _assert_same_moments(found: list[dict], expected) -> None:
    assert [(m["key"], m["path"], m["query"]) for m in found] == [(m.key, m.path, m.query) for m in expected]
    np.testing.assert_allclose(
        [[m["start"], m["end"], m["score"]] for m in found], [[m.start, m.end, m.score] for m in expected], atol=1e-5
    )


@pytest.fixture(scope="module")
def feature_library(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_library")
    model = tiny_model()
    model.save_pretrained(root / "model")
    cache = write_cache(root / "cache.h5", random_videos(1, LENGTHS))
    LibraryIndex.update(root / "index", [cache], model.config)
    return root, pipeline("video-grounding", model=str(root / "model"), progress=False)


@pytest.mark.parametrize(
    "options",
    [
        {"top_k": 3, "depth": 4},
        {"top_k": 7, "exhaustive": True},
        {"top_k": 3, "depth": 4, "segment_windows": "central"},
    ],
)
def test_library_input_gives_the_search_class_moments(feature_library, options):
    root, pipe = feature_library
    text, sentence = random_queries(2, num_queries=2)
    found = pipe({"library": str(root / "index"), "text_features": text, "sentence_features": sentence}, **options)
    search = dict(options)
    library = VideoLibrary(
        LibraryIndex.open(root / "index"), pipe.model, segment_windows=search.pop("segment_windows", "overlapping")
    )
    expected = library.search(text_features=text, sentence_features=sentence, **search)
    assert len(found) == 2
    for moments, result in zip(found, expected):
        assert len(moments) == options["top_k"]
        _assert_same_moments(moments, result.moments)
    assert {m["key"] for moments in found for m in moments} <= set(LENGTHS)
    # one query (2-d features) gives one ranked list, not a list of lists
    one = pipe({"library": root / "index", "text_features": text[0], "sentence_features": sentence[0]}, **options)
    _assert_same_moments(one, expected[0].moments)


def test_library_input_errors(feature_library, tmp_path):
    from rgnet_hf.pipeline_rgnet import LIBRARY_SEGMENT_WINDOWS
    from rgnet_hf.search import SEGMENT_WINDOWS

    root, pipe = feature_library
    text, sentence = random_queries(3)
    features = {"text_features": text, "sentence_features": sentence}
    assert LIBRARY_SEGMENT_WINDOWS == SEGMENT_WINDOWS
    with pytest.raises(ValueError, match="segment_windows must be one of"):
        pipe({"library": str(root / "index"), **features}, segment_windows="nearest")
    with pytest.raises(FileNotFoundError, match="no such index folder"):
        pipe({"library": str(tmp_path / "missing"), **features})
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a library index"):
        pipe({"library": str(tmp_path / "empty"), **features})
    with pytest.raises(ValueError, match="takes no 'video_features'"):
        pipe({"library": str(root / "index"), "video_features": np.zeros((10, 24)), **features})
    with pytest.raises(ValueError, match="did you mean 'text'"):
        pipe({"library": str(root / "index"), "txt": "a door"})
    with pytest.raises(ValueError, match="needs queries"):
        pipe({"library": str(root / "index")})
    for empty in ("  ", [], ["a door", ""]):
        with pytest.raises(ValueError, match="empty"):
            pipe({"library": str(root / "index"), "text": empty})
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        pipe({"library": str(root / "index"), **features}, depth=0)
    with pytest.raises(ValueError, match="needs `sentence_features`"):
        pipe({"library": str(root / "index"), "text_features": text})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"seconds_per_feature": 0.5}, "0.5 s per feature"),
        ({"video_feature_size": 32, "sentence_feature_size": 32}, "32-d video features"),
        ({"feature_encoder": "another-encoder"}, "'another-encoder' features"),
    ],
)
def test_an_index_built_for_another_model_is_refused(feature_library, tmp_path, overrides, message):
    root, _ = feature_library
    other = tiny_model(**overrides)
    other.save_pretrained(tmp_path / "other")
    pipe = pipeline("video-grounding", model=str(tmp_path / "other"), progress=False)
    text, sentence = random_queries(4)
    with pytest.raises(ValueError, match=message):
        pipe({"library": str(root / "index"), "text_features": text, "sentence_features": sentence})


def test_sentences_through_the_model_encoder_and_an_index_that_grows(tmp_path):
    clip = build_tiny_clip(tmp_path / "clip")
    model = build_tiny_rgnet(tmp_path / "rgnet", clip)
    videos = random_videos(5, {"kitchen": 70, "street": 50, "garden": 60}, size=CLIP_PROJECTION_DIM)
    first = write_cache(
        tmp_path / "a.h5", {key: videos[key] for key in ("kitchen", "street")}, str(clip.resolve()), 0.5
    )
    config = RGNetForVideoGrounding.from_pretrained(model).config
    LibraryIndex.update(tmp_path / "index", [first], config)
    pipe = pipeline("video-grounding", model=str(model), progress=False)
    queries = ["a red door opens", "a car drives by"]
    found = pipe({"library": str(tmp_path / "index"), "text": queries}, top_k=4)
    expected = VideoLibrary.from_folders(tmp_path / "index", model).search(queries, top_k=4)
    for moments, result in zip(found, expected):
        _assert_same_moments(moments, result.moments)
    assert {m["query"] for m in found[1]} == {"a car drives by"}
    # a video added to the index is found by the same pipeline (the index is reopened when its manifest changes)
    second = write_cache(tmp_path / "b.h5", {"garden": videos["garden"]}, str(clip.resolve()), 0.5)
    LibraryIndex.update(tmp_path / "index", [first, second], config)
    grown = pipe({"library": str(tmp_path / "index"), "text": queries[0]}, exhaustive=True, top_k=20)
    expected = VideoLibrary.from_folders(tmp_path / "index", model).search(queries[0], exhaustive=True, top_k=20)
    _assert_same_moments(grown, expected[0].moments)
    every_window = pipe(
        {"library": str(tmp_path / "index"), "text": queries[0]}, exhaustive=True, top_k_windows=100, top_k=20
    )
    assert "garden" in {m["key"] for m in every_window}


def test_remote_code_pipeline_without_the_package_refuses_a_library_clearly(tmp_path):
    save_model_folder(tiny_model(), tmp_path / "model", remote_pipeline=True)
    text, sentence = random_queries(6)
    np.save(tmp_path / "text.npy", text[0])
    script = f"""
        import json
        import numpy as np
        from transformers import pipeline
        pipe = pipeline(model={str(tmp_path / "model")!r}, trust_remote_code=True)
        text = np.load({str(tmp_path / "text.npy")!r})
        single = pipe({{"video_features": np.zeros((60, 24), np.float32), "text_features": text}}, top_k=1)
        print("SINGLE" + json.dumps(len(single)))
        try:
            pipe({{"library": {str(tmp_path)!r}, "text_features": text}})
        except ImportError as error:
            print("ERROR" + str(error))
        """
    result = run_without_rgnet_hf(script, tmp_path / "hf_home")
    assert "SINGLE1" in result.stdout, result.stderr[-3000:]
    assert "pip install 'rgnet_hf[search]'" in result.stdout.split("ERROR", 1)[1]
    json.loads(result.stdout.split("SINGLE", 1)[1].splitlines()[0])
