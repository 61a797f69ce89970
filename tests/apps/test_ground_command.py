"""`rgnet-hf ground` and `rgnet-hf app`: how model folders load (remote code, damaged weights, other models) and the
shape of `--json`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config

from rgnet_hf import RGNetForVideoGrounding, VideoGroundingPipeline, save_model_folder
from rgnet_hf.apps.cli import main
from rgnet_hf.apps.commands.common import load_grounding_pipeline

INSTALLED = "rgnet_hf."
FOLDER_CODE = "transformers_modules."


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ground_command")
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    save_model_folder(model, root / "plain")
    save_model_folder(model, root / "remote", remote_pipeline=True)
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")
    save_model_folder(model, root / "nan")
    save_model_folder(model.__class__(model.config).eval(), root / "broken_processor")
    (root / "broken_processor" / "processor_config.json").write_text("{not json")
    (root / "other").mkdir()
    (root / "other" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    rng = np.random.default_rng(0)
    np.save(root / "video.npy", rng.standard_normal((120, 24)).astype(np.float32))
    np.save(root / "one_query.npy", rng.standard_normal((5, 16)).astype(np.float32))
    np.save(root / "two_queries.npy", rng.standard_normal((2, 5, 16)).astype(np.float32))
    np.save(root / "sentences.npy", rng.standard_normal((2, 24)).astype(np.float32))
    return root


def _ground(folders, model: str, *extra: str) -> list[str]:
    return ["ground", "--model", str(folders / model), "--video", str(folders / "video.npy"), "--top-k", "3", *extra]


def _modules(pipe) -> dict[str, str]:
    parts = {"pipeline": pipe, "model": pipe.model, "processor": pipe.processor}
    parts.update(feature_extractor=pipe.feature_extractor, engine=pipe.engine)
    return {name: type(part).__module__ for name, part in parts.items()}


def test_json_is_a_list_with_one_object_per_query(folders, capsys):
    pipe = load_grounding_pipeline(str(folders / "plain"), progress=False)
    video = np.load(folders / "video.npy")
    for text, count in (("one_query.npy", 1), ("two_queries.npy", 2)):
        assert main(_ground(folders, "plain", "--text", str(folders / text), "--json")) == 0
        printed = json.loads(capsys.readouterr().out)
        assert isinstance(printed, list) and [entry["index"] for entry in printed] == list(range(count))
        features = np.load(folders / text)
        expected = pipe({"video_features": video, "text_features": list(features) if count > 1 else features}, top_k=3)
        expected = expected if count > 1 else [expected]
        for entry, moments in zip(printed, expected):
            assert set(entry) == {"index", "query", "moments"} and entry["query"] is None
            assert entry["moments"] == [{k: m[k] for k in ("start", "end", "score")} for m in moments]


def test_a_folder_with_remote_code_loads_with_the_installed_package(folders, capsys):
    """`save_model_folder(..., remote_pipeline=True)` folders (as pushed to the Hub) load without running their code;
    `--trust-remote-code` runs it instead, with the same answers."""
    assert main(_ground(folders, "plain", "--text", str(folders / "two_queries.npy"), "--json")) == 0
    expected = json.loads(capsys.readouterr().out)
    for extra in ((), ("--trust-remote-code",)):
        assert main(_ground(folders, "remote", "--text", str(folders / "two_queries.npy"), "--json", *extra)) == 0
        assert json.loads(capsys.readouterr().out) == expected
    installed = _modules(load_grounding_pipeline(str(folders / "remote"), progress=False))
    assert all(module.startswith(INSTALLED) for module in installed.values()), installed
    remote = _modules(load_grounding_pipeline(str(folders / "remote"), progress=False, trust_remote_code=True))
    assert all(module.startswith(FOLDER_CODE) for module in remote.values()), remote
    # A folder without the pipeline's code cannot run "its own code".
    assert main(_ground(folders, "plain", "--text", str(folders / "one_query.npy"), "--trust-remote-code")) == 2
    assert "custom_pipelines" in capsys.readouterr().err


def test_what_transformers_does_with_a_folder_with_remote_code(folders):
    """The behaviour docs/ground.md describes, with rgnet_hf imported."""
    from transformers import AutoModel, pipeline

    remote = str(folders / "remote")
    for trust in (None, True):
        assert type(AutoModel.from_pretrained(remote, trust_remote_code=trust)) is RGNetForVideoGrounding
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("video-grounding", model=remote)
    chosen = _modules(pipeline("video-grounding", model=remote, pipeline_class=VideoGroundingPipeline))
    assert all(module.startswith(INSTALLED) for module in chosen.values()), chosen
    mixed = _modules(pipeline("video-grounding", model=remote, trust_remote_code=True))
    assert mixed["pipeline"].startswith(FOLDER_CODE) and mixed["engine"].startswith(FOLDER_CODE)
    assert mixed["model"].startswith(INSTALLED) and mixed["processor"].startswith(INSTALLED)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("nan", "the weights contain NaN or infinite values"),
        ("other", "is not an RGNet model folder"),
        ("broken_processor", "processor_config.json is not a readable RGNet processor"),
    ],
)
def test_a_model_that_cannot_load_gives_one_plain_line(folders, capsys, model, reason):
    assert main(_ground(folders, model, "--text", str(folders / "one_query.npy"))) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and reason in error and f"cannot load the model {folders / model}" in error
    assert "Could not load model" not in error and "Traceback" not in error


def test_the_app_command_uses_the_same_loader(folders, capsys, monkeypatch):
    pytest.importorskip("gradio", reason="the web app needs the app extra (gradio)")
    from rgnet_hf.apps import web_app

    served = []
    monkeypatch.setattr(web_app, "launch", lambda app, *args: served.append(app))
    assert main(["app", "--model", str(folders / "remote")]) == 0
    assert all(module.startswith(INSTALLED) for module in _modules(served[-1].pipe).values())
    assert main(["app", "--model", str(folders / "remote"), "--trust-remote-code"]) == 0
    assert all(module.startswith(FOLDER_CODE) for module in _modules(served[-1].pipe).values())
    assert main(["app", "--model", str(folders / "nan")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "NaN or infinite" in error


def test_zero_shot_grounding_needs_no_rgnet(tmp_path, capsys):
    """`ground --zero-shot --encoder ENC` ranks windows by the cosine of the sentence and the frames: the moments are
    those of `zero_shot_cosine_baseline` on the encoder's features, and a cache of another rate is refused."""
    from raw_video_utils import build_tiny_clip, build_tiny_rgnet, make_test_video

    from rgnet_hf.evaluation import zero_shot_cosine_baseline
    from rgnet_hf.video_text_encoders import load_feature_encoder

    clip = build_tiny_clip(tmp_path / "clip")
    video = make_test_video(tmp_path / "clip.mp4", seconds_per_color=2.0, fps=5)
    queries = ["a man opens the door.", "the camera pans over the city."]
    argv = ["ground", "--zero-shot", "--encoder", str(clip), "--video", str(video), "--seconds-per-feature", "0.5"]
    argv += ["--query", queries[0], "--query", queries[1], "--top-k", "4", "--json", "--no-progress"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    encoder = load_feature_encoder(clip)
    features = encoder.encode_video(video, 0.5, progress=False).features
    sentences = [query.sentence_features for query in encoder.encode_queries(queries)]
    expected = zero_shot_cosine_baseline(features, sentences, 0.5, top_k=4)
    assert [entry["query"] for entry in printed] == queries
    for entry, rows in zip(printed, expected):
        assert len(entry["moments"]) == len(rows) > 0
        np.testing.assert_allclose([[m["start"], m["end"], m["score"]] for m in entry["moments"]], rows, rtol=1e-5)
        assert all(0 <= m["start"] < m["end"] <= 8.0 for m in entry["moments"])

    # The encoder and rate may come from a model folder instead; a cache at another rate is refused by name.
    model = build_tiny_rgnet(tmp_path / "rgnet", clip, seconds_per_feature=0.5)
    assert main(["extract", "--encoder", str(clip), "--video", str(video), "--output", str(tmp_path / "c.h5"),
                 "--seconds-per-feature", "1.0", "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["ground", "--zero-shot", "--model", str(model), "--features", str(tmp_path / "c.h5"),
                 "--video-key", "clip", "--query", queries[0]]) == 2  # fmt: skip
    assert "1.0 s per feature, but the model reads 0.5 s per feature" in capsys.readouterr().err
    assert main(["ground", "--zero-shot", "--video", str(video), "--query", queries[0]]) == 2
    assert "--zero-shot needs --encoder" in capsys.readouterr().err
    assert main(["ground", "--video", str(video), "--query", queries[0]]) == 2
    assert "give --model" in capsys.readouterr().err
