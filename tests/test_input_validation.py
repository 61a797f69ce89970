"""Bad inputs get an error that names the problem; nothing is silently dropped or replaced by a default."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re

import numpy as np
import pytest
import torch
from conftest import tiny_config

from rgnet_hf import RGNetConfig, RGNetForVideoGrounding, RGNetGroundingEngine, RGNetProcessor, save_model_folder
from rgnet_hf.apps.cli import main as cli_main
from rgnet_hf.hub.convert_original_checkpoint import main as convert_main


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    # A complete model folder (with the processor the tests below load from it).
    save_model_folder(RGNetForVideoGrounding(tiny_config()).eval(), folder)
    return folder


@pytest.fixture(scope="module")
def pipe(model_folder):
    from transformers import pipeline

    return pipeline("video-grounding", model=str(model_folder))


def _inputs(**changes):
    generator = np.random.default_rng(0)
    inputs = {
        "video_features": generator.standard_normal((100, 24)).astype(np.float32),
        "text_features": generator.standard_normal((4, 16)).astype(np.float32),
    }
    inputs.update(changes)
    return inputs


# --------------------------------------------------------------------------------------------------------------------
# pipeline


@pytest.mark.parametrize(
    ("key", "hint"),
    [("seconds_per_frame", "seconds_per_feature"), ("sentence_feature", "sentence_features"), ("fps", None)],
)
def test_pipeline_refuses_unknown_keys(pipe, key, hint):
    with pytest.raises(ValueError, match=f"unknown input key.*'{key}'") as error:
        pipe(_inputs(**{key: 0.5}))
    message = str(error.value)
    accepted = "library, seconds_per_feature, sentence_features, text, text_features, video, video_features"
    assert f"accepted keys: {accepted}" in message
    if hint:
        assert f"did you mean '{hint}'" in message


@pytest.mark.parametrize("as_list", [False, True])
def test_pipeline_refuses_several_videos_in_one_input(pipe, as_list):
    videos = np.random.default_rng(1).standard_normal((2, 100, 24)).astype(np.float32)
    with pytest.raises(ValueError, match="one input holds one video, got 2 videos"):
        pipe(_inputs(video_features=list(videos) if as_list else videos))
    # A list of inputs, one per video, grounds each.
    results = pipe([_inputs(video_features=video) for video in videos], top_k=2)
    assert len(results) == 2 and results[0] != results[1]


@pytest.mark.parametrize("value", [0, 0.0, -0.2, float("nan"), float("inf"), "0.2", True])
def test_seconds_per_feature_must_be_positive_everywhere(pipe, model_folder, value):
    with pytest.raises(ValueError, match="seconds_per_feature"):
        pipe(_inputs(seconds_per_feature=value))
    model = RGNetForVideoGrounding.from_pretrained(model_folder).eval()
    inputs = _inputs()
    with pytest.raises(ValueError, match="seconds_per_feature"):
        RGNetGroundingEngine(model).ground(inputs["video_features"], inputs["text_features"], seconds_per_feature=value)
    processor = RGNetProcessor.from_model_config(model.config)
    windows = processor.feature_extractor.window(inputs["video_features"])
    encoded = processor(text_features=inputs["text_features"], return_tensors="pt")
    with torch.no_grad():
        output = model(
            video_features=windows["video_features"],
            video_mask=windows["video_mask"],
            text_features=encoded["text_features"].expand(len(windows["video_features"]), -1, -1),
            text_mask=encoded["text_mask"].expand(len(windows["video_features"]), -1),
        )
    bounds = windows["window_bounds"]
    with pytest.raises(ValueError, match="seconds_per_feature"):
        processor.post_process_video_grounding(output, bounds[:, 0], bounds[:, 1] - bounds[:, 0], value)


def test_bfloat16_and_scalar_inputs_get_clear_answers(pipe):
    inputs = _inputs()
    text = torch.from_numpy(inputs["text_features"]).to(torch.bfloat16)
    full = pipe(inputs, top_k=3)
    reduced = pipe(_inputs(text_features=text), top_k=3)
    assert len(reduced) == 3 and abs(reduced[0]["start"] - full[0]["start"]) < 5.0
    many = pipe(_inputs(text_features=text[None].expand(2, -1, -1)), top_k=3)
    assert len(many) == 2
    sentence = torch.randn(24, dtype=torch.bfloat16)
    assert len(pipe(_inputs(text_features=text, sentence_features=sentence), top_k=3)) == 3
    with pytest.raises(ValueError, match=r"sentence_features. must have shape .*got \(\)"):
        pipe(_inputs(sentence_features=np.float32(0.5)))
    with pytest.raises(ValueError, match="sentence_features"):
        pipe(_inputs(sentence_features=np.zeros((1, 1, 24), np.float32)))


def test_engine_scalar_sentence_features_are_refused():
    model = RGNetForVideoGrounding(tiny_config()).eval()
    with pytest.raises(ValueError, match="sentence_features"):
        RGNetGroundingEngine(model).ground(
            torch.randn(100, 24), torch.randn(4, 16), sentence_features=torch.tensor(1.0)
        )


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    return RGNetGroundingEngine(RGNetForVideoGrounding(tiny_config()).eval())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"text_mask": torch.full((2, 5), 2.0)}, "`text_mask` must hold only 0"),
        ({"text_mask": torch.full((2, 5), 0.5)}, "`text_mask` must hold only 0"),
        ({"text_mask": -torch.ones(2, 5)}, "`text_mask` must hold only 0"),
        ({"appearance_features": torch.randn(100)}, r"`appearance_features` must be \(num_frames, D\).*\(100,\)"),
        ({"appearance_features": torch.randn(100, 24).index_fill(0, torch.tensor([3]), float("nan"))}, "NaN"),
        ({"max_queries_per_group": 0}, "`max_queries_per_group` must be an int >= 1"),
        ({"max_queries_per_group": -1}, "`max_queries_per_group` must be an int >= 1"),
        ({"video_features": [[1.0] * 24, [1.0] * 23]}, "`video_features` is a ragged nested list"),
        ({"text_features": [[[1.0] * 16, [1.0] * 15]]}, r"`text_features\[0\]` is a ragged nested list"),
        ({"video_features": [["a"] * 24] * 100}, "`video_features` must hold numbers"),
    ],
)
def test_engine_refuses_bad_masks_appearance_groups_and_lists(engine, changes, message):
    inputs = {"video_features": torch.randn(100, 24), "text_features": torch.randn(2, 5, 16)}
    inputs.update(changes)
    with pytest.raises(ValueError, match=message):
        engine.ground(**inputs)


def test_engine_converts_nested_lists_and_lists_of_tensors(engine):
    video, text = torch.randn(100, 24), torch.randn(2, 5, 16)
    reference = engine.ground(video, text, text_mask=torch.ones(2, 5, dtype=torch.bool))
    for video_input, text_input in [(video.tolist(), text.tolist()), (list(video), list(text))]:
        for result, expected in zip(engine.ground(video_input, text_input), reference):
            np.testing.assert_array_equal(result.rankings["fused"], expected.rankings["fused"])
    single = engine.ground(video, text[0].tolist())
    np.testing.assert_array_equal(single[0].rankings["fused"], reference[0].rankings["fused"])


@pytest.mark.parametrize("scale", ["video", "text"])
def test_engine_says_when_huge_inputs_overflow_inside_the_model(engine, scale):
    video, text = torch.randn(100, 24), torch.randn(2, 5, 16)
    if scale == "video":
        video = video * 1e30
    else:
        text = text * 1e30
    with pytest.raises(ValueError, match="inputs overflowed inside the model.*un-normalised CLIP"):
        engine.ground(video, text)


@pytest.mark.parametrize("name", ["appearance_features", "sentence_features"])
def test_engine_refuses_matching_features_whose_norm_overflows(engine, name):
    inputs = dict(appearance_features=torch.randn(100, 24), sentence_features=torch.randn(2, 24))
    inputs[name] = inputs[name] * 1e30
    with pytest.raises(ValueError, match=f"`{name}` overflow float32.*un-normalised CLIP"):
        engine.ground(torch.randn(100, 24), torch.randn(2, 5, 16), **inputs)


@pytest.mark.parametrize("name", ["top_k_windows", "max_predictions", "max_predictions_before_nms"])
@pytest.mark.parametrize("value", [0, -2])
def test_engine_refuses_zero_counts_instead_of_the_config_default(engine, name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be an int >= 1"):
        RGNetGroundingEngine(engine.model, **{name: value})
    assert getattr(RGNetGroundingEngine(engine.model, **{name: None}), name) == getattr(engine.model.config, name)
    with pytest.raises(ValueError, match=f"`{name}` must be an int >= 1"):
        RGNetGroundingEngine.with_reduced_precision_scoring(engine.model, **{name: value})


# --------------------------------------------------------------------------------------------------------------------
# engine on a model in training mode


def test_engine_grounds_a_training_model_in_eval_mode_and_says_so(caplog):
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config(dropout=0.5, input_dropout=0.5))
    generator = torch.Generator().manual_seed(0)
    video, text = torch.randn(200, 24, generator=generator), torch.randn(2, 5, 16, generator=generator)
    model.train()
    with caplog.at_level(logging.WARNING, logger="rgnet_hf.inference_rgnet"):
        first = RGNetGroundingEngine(model).ground(video, text)
    assert "training mode" in caplog.text
    assert model.training, "the engine restores the model's mode"
    second = RGNetGroundingEngine(model).ground(video, text)
    model.eval()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rgnet_hf.inference_rgnet"):
        reference = RGNetGroundingEngine(model).ground(video, text)
    assert "training mode" not in caplog.text
    for a, b, c in zip(first, second, reference):
        np.testing.assert_allclose(a.rankings["fused"], c.rankings["fused"], rtol=0, atol=1e-4 + 1e-9)
        np.testing.assert_allclose(b.rankings["fused"], c.rankings["fused"], rtol=0, atol=1e-4 + 1e-9)


# --------------------------------------------------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"window_length": 40, "window_stride": 40}, "window_stride .40. must be smaller than window_length"),
        ({"window_length": 40, "window_stride": 50}, "window_stride"),
        ({"nms_threshold": 1.5}, "nms_threshold must be in"),
        ({"nms_threshold": -0.1}, "nms_threshold"),
        ({"frame_position_temperature": float("nan")}, "frame_position_temperature must be a finite number"),
        ({"sampler_temperature": float("inf")}, "sampler_temperature"),
        ({"retrieval_temperature": 0.0}, "retrieval_temperature must be a finite number > 0"),
        ({"hidden_size": "32"}, r"hidden_size must be a positive integer, got '32' \(str\)"),
        ({"seconds_per_feature": "0.2"}, r"seconds_per_feature must be a number, got '0.2'"),
        ({"num_queries": 0}, "num_queries must be a positive integer"),
        ({"intermediate_size": -4}, "intermediate_size"),
        ({"num_encoder_layers": -1}, "num_encoder_layers must be an integer >= 0"),
        ({"span_loss_coefficient": -1.0}, "span_loss_coefficient must be a finite number >= 0"),
        ({"auxiliary_loss": "yes"}, "auxiliary_loss must be True or False"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"hidden_size": 32.0}, "hidden_size must be a positive integer"),
    ],
)
def test_config_validation_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_config_validation_accepts_every_preset_and_saved_folder(tmp_path, parity_fixtures):
    for name in RGNetConfig.preset_names():
        RGNetConfig.from_preset(name)
    RGNetForVideoGrounding(tiny_config()).save_pretrained(tmp_path)
    assert RGNetConfig.from_pretrained(tmp_path).hidden_size == 32
    values = json.loads((tmp_path / "config.json").read_text())
    values["nms_threshold"] = 2.0
    (tmp_path / "config.json").write_text(json.dumps(values))
    with pytest.raises(ValueError, match="nms_threshold"):
        RGNetConfig.from_pretrained(tmp_path)
    from parity_utils import converted_model

    for fixture in parity_fixtures.values():
        converted_model(fixture)


# --------------------------------------------------------------------------------------------------------------------
# loading


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path_factory.mktemp("clip")
    sizes = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(text_config=sizes, vision_config=dict(sizes, image_size=32, patch_size=16), projection_dim=8)
    CLIPModel(config).save_pretrained(folder)
    return folder


def test_another_model_folder_is_refused_everywhere(clip_folder, feature_files, capsys):
    from transformers import pipeline

    message = re.escape(f"{clip_folder} is not an RGNet model folder (model_type 'clip')")
    with pytest.raises(ValueError, match=message):
        RGNetForVideoGrounding.from_pretrained(clip_folder)
    with pytest.raises(ValueError, match=message):
        RGNetConfig.from_pretrained(clip_folder)
    with pytest.raises(ValueError, match=message):
        pipeline("video-grounding", model=str(clip_folder))
    video, text = str(feature_files / "video.npy"), str(feature_files / "text.npy")
    assert cli_main(_ground_args(str(clip_folder), video, text)) == 2
    error = capsys.readouterr().err
    assert f"{clip_folder} is not an RGNet model folder (model_type 'clip')" in error and "Traceback" not in error


def test_weights_with_nan_are_refused_on_loading(tmp_path):
    model = RGNetForVideoGrounding(tiny_config())
    with torch.no_grad():
        dict(model.named_parameters())["model.retrieval_token"].view(-1)[0] = float("nan")
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path}: the weights contain NaN or infinite values")):
        RGNetForVideoGrounding.from_pretrained(tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# command line


def _ground_args(model: str, video: str, text: str, *extra: str) -> list[str]:
    return ["ground", "--model", model, "--video", video, "--text", text, *extra]


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    generator = np.random.default_rng(0)
    np.save(folder / "video.npy", generator.standard_normal((120, 24)).astype(np.float32))
    np.save(folder / "text.npy", generator.standard_normal((5, 16)).astype(np.float32))
    return folder


def test_cli_ground_errors_name_the_cause(model_folder, feature_files, tmp_path, capsys):
    video, text = str(feature_files / "video.npy"), str(feature_files / "text.npy")
    assert cli_main(_ground_args(str(model_folder), video, text, "--seconds-per-feature", "0")) == 2
    assert "seconds_per_feature" in capsys.readouterr().err
    assert cli_main(_ground_args(str(tmp_path / "no-such-model"), video, text)) == 2
    assert "no such model folder" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli_main(_ground_args(str(model_folder), video, text, "--device", "cuda")) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert cli_main(_ground_args(str(model_folder), video, text, "--device", "warp-drive")) == 2
    assert "not a device name" in capsys.readouterr().err


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {_RunsCode.marker}",))


def test_cli_refuses_a_malicious_pt_file(model_folder, feature_files, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    _RunsCode.marker = marker
    with open(tmp_path / "video.pt", "wb") as handle:
        pickle.dump({"features": _RunsCode()}, handle, protocol=2)
    torch.save({"features": _RunsCode()}, tmp_path / "video_zip.pt")
    for name in ("video.pt", "video_zip.pt"):
        code = cli_main(_ground_args(str(model_folder), str(tmp_path / name), str(feature_files / "text.npy")))
        assert code == 2
        error = capsys.readouterr().err
        assert "error:" in error and "Traceback" not in error
        assert not marker.exists(), "the pickle's code ran"
    assert "refused" in error


# --------------------------------------------------------------------------------------------------------------------
# converter


def _official_checkpoint(parity_fixtures, path):
    import argparse

    fixture = parity_fixtures["ego4d_tiny"]
    state_dict = {f"module.{key}": value for key, value in fixture["state_dict"].items()}
    options = dict(fixture["meta"]["opt"], device=torch.device("cpu"))
    torch.save({"model": state_dict, "opt": argparse.Namespace(**options)}, path)


def test_converter_refuses_an_existing_output_unless_forced(parity_fixtures, tmp_path, capsys):
    checkpoint = tmp_path / "model.ckpt"
    _official_checkpoint(parity_fixtures, checkpoint)
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    assert convert_main(["--checkpoint", str(checkpoint), "--output", str(output)]) == 1
    error = capsys.readouterr().err
    assert "already exists" in error and "--force" in error
    assert (output / "notes.txt").read_text() == "keep me"
    assert cli_main(["convert", "--checkpoint", str(checkpoint), "--output", str(output)]) == 1
    assert (output / "notes.txt").exists()
    assert cli_main(["convert", "--checkpoint", str(checkpoint), "--output", str(output), "--force"]) == 0
    assert (output / "config.json").is_file() and not (output / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "no temporary folder is left"
    file_output = tmp_path / "a_file"
    file_output.write_text("x")
    capsys.readouterr()
    assert convert_main(["--checkpoint", str(checkpoint), "--output", str(file_output), "--force"]) == 1
    assert "is a file" in capsys.readouterr().err


def test_converter_failure_keeps_the_previous_output(parity_fixtures, tmp_path, monkeypatch):
    checkpoint = tmp_path / "model.ckpt"
    _official_checkpoint(parity_fixtures, checkpoint)
    output = tmp_path / "out"
    assert convert_main(["--checkpoint", str(checkpoint), "--output", str(output)]) == 0
    before = sorted(os.listdir(output))

    def broken_save(self, folder, **kwargs):
        (folder / "config.json").write_text("{half")
        raise OSError("disk full")

    monkeypatch.setattr(RGNetForVideoGrounding, "save_pretrained", broken_save)
    assert convert_main(["--checkpoint", str(checkpoint), "--output", str(output), "--force"]) == 1
    assert sorted(os.listdir(output)) == before
    assert json.loads((output / "config.json").read_text())["model_type"] == "rgnet"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
