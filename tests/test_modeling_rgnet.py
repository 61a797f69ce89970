"""Configuration, converter, save / load, Auto classes, remote code, offline push_to_hub, input errors, options."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import FIXTURES, run_without_rgnet_hf, tiny_config
from parity_utils import converted_model, model_inputs, training_inputs

from rgnet_hf import RGNetConfig, RGNetForVideoGrounding, RGNetModel
from rgnet_hf.hub.convert_original_checkpoint import (
    CheckpointConversionError,
    config_from_official_options,
    convert_state_dict,
)
from rgnet_hf.hub.convert_original_checkpoint import (
    main as convert_main,
)

# --------------------------------------------------------------------------------------------------------------------
# configuration


RELEASED_SIZES = {
    "mad": {
        "hidden_dim": 256,
        "nheads": 8,
        "dim_feedforward": 2048,
        "max_v_l": 900,
        "max_q_l": 25,
        "v_motion_feat_dim": 512,
        "v_appear_feat_dim": 512,
        "t_feat_dim": 512,
    },
    "ego4d": {
        "hidden_dim": 256,
        "nheads": 8,
        "dim_feedforward": 2048,
        "max_v_l": 90,
        "max_q_l": 20,
        "v_motion_feat_dim": 256,
        "v_appear_feat_dim": 256,
        "t_feat_dim": 512,
    },
}


@pytest.mark.parametrize(
    ("fixture_name", "preset"),
    [("mad_tiny", "mad"), ("ego4d_tiny", "ego4d"), ("ego4d_pretrain_tiny", "ego4d_pretrain")],
)
def test_presets_equal_the_official_recipes(parity_fixtures, fixture_name, preset):
    """Each fixture stores every resolved official option of its recipe; only the sizes were shrunk."""
    options = dict(parity_fixtures[fixture_name]["meta"]["opt"])
    options.update(RELEASED_SIZES["mad" if preset == "mad" else "ego4d"])
    from_options = config_from_official_options(options).to_dict()
    from_preset = RGNetConfig.from_preset(preset).to_dict()
    for key in ("transformers_version", "architectures"):
        from_options.pop(key, None), from_preset.pop(key, None)
    # The training runs validate with the training value of topk_window; the inference scripts use the preset's.
    assert from_options.pop("top_k_windows") == options["topk_window"]
    from_preset.pop("top_k_windows")
    assert from_options == from_preset


def test_preset_key_values():
    mad, finetune = RGNetConfig.from_preset("mad"), RGNetConfig.from_preset("ego4d")
    assert (mad.window_length, mad.window_stride, mad.seconds_per_feature) == (900, 450, 0.2)
    assert (finetune.window_length, finetune.window_stride, finetune.seconds_per_feature) == (90, 45, 0.535)
    assert mad.frame_position_temperature == 100 and finetune.frame_position_temperature == 10000
    assert mad.window_retrieval_loss_coefficient == 10 and finetune.window_retrieval_loss_coefficient == 0
    assert finetune.use_negative_window_loss and not finetune.in_batch_window_pairs
    assert (mad.top_k_windows, finetune.top_k_windows) == (30, 20)
    assert RGNetConfig.from_preset("mad", hidden_size=64).hidden_size == 64
    with pytest.raises(ValueError, match="Unknown RGNet preset"):
        RGNetConfig.from_preset("charades")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 30, "num_attention_heads": 4}, "divisible"),
        ({"window_length": 0}, "window_length"),
        ({"sampler_attention_mode": "hard"}, "sampler_attention_mode"),
        ({"seconds_per_feature": 0.0}, "seconds_per_feature"),
        ({"dataset_name": "charades"}, "dataset_name"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        RGNetConfig(**overrides)


# --------------------------------------------------------------------------------------------------------------------
# converter


def _official_layout(configuration: str) -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in (FIXTURES / "official_state_dict_layout.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"\s*\d+\s+(\S+)\s+(\([\d, ]*\))\s+(\([\d, ]*\))", line)
        shape = match.group(2) if configuration == "mad" else match.group(3)
        layout[match.group(1)] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return layout


@pytest.mark.parametrize("preset", ["mad", "ego4d"])
def test_converter_maps_the_full_size_official_layout(preset):
    layout = _official_layout(preset)
    assert len(layout) == 354
    official = {key: torch.empty(shape, device="meta") for key, shape in layout.items()}
    config = RGNetConfig.from_preset(preset)
    converted, dropped = convert_state_dict(official, config)
    assert sorted(dropped) == sorted(
        [f"transformer.decoder.bbox_embed.5.layers.{i}.{k}" for i in range(3) for k in ("weight", "bias")]
        + [
            "saliency_proj.weight",
            "saliency_proj.bias",
            "txt_position_embed.position_embeddings.weight",
            "txt_position_embed.LayerNorm.weight",
            "txt_position_embed.LayerNorm.bias",
        ]
    )
    with torch.device("meta"):
        expected = RGNetForVideoGrounding(config).state_dict()
    assert set(converted) == set(expected)
    dead = sum(torch.Size(layout[key]).numel() for key in dropped)
    total = {"mad": 18_498_590, "ego4d": 18_431_262}[preset]
    assert sum(t.numel() for t in converted.values()) == total - dead


def test_converter_errors_name_the_problem():
    layout = _official_layout("mad")
    official = {key: torch.empty(shape, device="meta") for key, shape in layout.items()}
    with pytest.raises(CheckpointConversionError, match=r"video_projection.blocks.0.layer_norm.weight: shape \(512,\)"):
        convert_state_dict(official, RGNetConfig.from_preset("ego4d"))  # a MAD checkpoint with the Ego4D config
    extra = dict(official, **{"transformer.decoder.gating.weight": torch.empty(2, device="meta")})
    with pytest.raises(CheckpointConversionError, match="unexpected official keys: transformer.decoder.gating"):
        convert_state_dict(extra, RGNetConfig.from_preset("mad"))
    missing = {k: v for k, v in official.items() if k != "class_embed.weight"}
    with pytest.raises(CheckpointConversionError, match="missing from the checkpoint: class_head.weight"):
        convert_state_dict(missing, RGNetConfig.from_preset("mad"))
    with pytest.raises(CheckpointConversionError, match="decoder_gating=True"):
        config_from_official_options({**RELEASED_SIZES["mad"], "decoder_gating": True})


def _write_official_checkpoint(fixture: dict, path: Path) -> None:
    state_dict = {f"module.{key}": value for key, value in fixture["state_dict"].items()}
    options = dict(fixture["meta"]["opt"], device=torch.device("cpu"))
    torch.save({"model": state_dict, "optimizer": {}, "epoch": 3, "opt": argparse.Namespace(**options)}, path)


def test_convert_cli_end_to_end(parity_fixtures, tmp_path, capsys):
    fixture = parity_fixtures["ego4d_tiny"]
    checkpoint = tmp_path / "model_best.ckpt"
    _write_official_checkpoint(fixture, checkpoint)
    assert convert_main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "converted")]) == 0
    printed = capsys.readouterr().out
    assert "Dropped 11 dead tensors" in printed and "saliency_proj.weight" in printed

    model = RGNetForVideoGrounding.from_pretrained(tmp_path / "converted").eval()
    assert model.config.window_length == 40 and model.config.use_negative_window_loss
    assert not model.config.text_to_video_mask_batch_mixing
    # The fixture's batch mixes texts of 3, 4 and 5 tokens: reproduce it with the official mask layout.
    model = RGNetForVideoGrounding.from_pretrained(tmp_path / "converted", text_to_video_mask_batch_mixing=True)
    model.eval()
    inputs = model_inputs(fixture["inputs"]["model"])
    with torch.no_grad():
        output = model(**inputs)
    torch.testing.assert_close(output.logits, fixture["outputs_eval"]["pred_logits"], rtol=1e-5, atol=1e-6)
    from transformers import AutoModel

    auto = AutoModel.from_pretrained(tmp_path / "converted")
    assert isinstance(auto, RGNetForVideoGrounding)
    backbone = RGNetModel.from_pretrained(tmp_path / "converted")
    torch.testing.assert_close(backbone.query_anchor_logits, model.model.query_anchor_logits)


def test_convert_cli_reports_bad_files(tmp_path, capsys):
    assert convert_main(["--checkpoint", str(tmp_path / "absent.ckpt"), "--output", str(tmp_path / "o")]) == 1
    assert "No checkpoint file" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint at all")
    assert convert_main(["--checkpoint", str(corrupt), "--output", str(tmp_path / "o")]) == 1
    assert "Could not read" in capsys.readouterr().err
    bare = tmp_path / "bare.ckpt"
    torch.save({"model": {"global_rep_token": torch.zeros(3)}}, bare)
    assert convert_main(["--checkpoint", str(bare), "--output", str(tmp_path / "o")]) == 1
    assert "--preset" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------------
# save / load, Auto classes, remote code, push_to_hub


MODEL_CODE = {"configuration_rgnet.py", "modeling_rgnet.py", "loss_rgnet.py", "windowing.py"}
PROCESSOR_CODE = {"feature_extraction_rgnet.py", "processing_rgnet.py", "video_text_encoders.py", "video_decoding.py"}
PIPELINE_CODE = {
    "pipeline_rgnet.py",
    "inference_rgnet.py",
    "memory_planning.py",
    "post_processing.py",
    "video_text_encoders.py",
    "video_decoding.py",
}


def _python_files(folder: Path) -> set[str]:
    return {name for name in os.listdir(folder) if name.endswith(".py")}


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    # A plain save_pretrained folder carries only what AutoModel's remote code needs.
    assert set(os.listdir(tmp_path)) == {"config.json", "model.safetensors"} | MODEL_CODE
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "rgnet"
    assert config["auto_map"]["AutoModel"] == "modeling_rgnet.RGNetForVideoGrounding"
    assert "custom_pipelines" not in config
    reloaded = RGNetForVideoGrounding.from_pretrained(tmp_path).eval()
    inputs = _random_inputs(model.config, batch_size=2)
    with torch.no_grad():
        a, b = model(**inputs), reloaded(**inputs)
    # Same weights, another copy in memory: CPU kernels may round differently (alignment), so fp32 tolerances.
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.window_logits, b.window_logits, rtol=1e-5, atol=1e-6)


def test_model_folder_adds_processor_card_and_pipeline_code_on_request(tmp_path):
    from transformers import AutoProcessor

    from rgnet_hf import RGNetProcessor, save_model_folder

    model = RGNetForVideoGrounding(tiny_config(window_length=48))
    save_model_folder(model, tmp_path / "local")
    assert _python_files(tmp_path / "local") == MODEL_CODE | PROCESSOR_CODE
    card = (tmp_path / "local" / "README.md").read_text()
    assert "RGNet" in card and "video-grounding" in card
    processor = AutoProcessor.from_pretrained(tmp_path / "local")
    assert isinstance(processor, RGNetProcessor) and processor.feature_extractor.window_length == 48
    assert "custom_pipelines" not in json.loads((tmp_path / "local" / "config.json").read_text())

    save_model_folder(model, tmp_path / "remote", remote_pipeline=True)
    assert _python_files(tmp_path / "remote") == MODEL_CODE | PROCESSOR_CODE | PIPELINE_CODE
    config = json.loads((tmp_path / "remote" / "config.json").read_text())
    assert config["custom_pipelines"]["video-grounding"]["impl"] == "pipeline_rgnet.VideoGroundingPipeline"
    assert getattr(model.config, "custom_pipelines", None) is None  # the model itself is left unchanged
    assert "the pipeline needs `rgnet_hf`" in card
    assert "modelling and pipeline code is stored" in (tmp_path / "remote" / "README.md").read_text()

    # A processor already in the folder (or given) is kept; so is an existing model card.
    custom = RGNetProcessor.from_model_config(tiny_config(max_text_length=3))
    (tmp_path / "remote" / "README.md").write_text("my card")
    save_model_folder(model, tmp_path / "remote", processor=custom)
    assert AutoProcessor.from_pretrained(tmp_path / "remote").feature_extractor.max_text_length == 3
    assert (tmp_path / "remote" / "README.md").read_text() == "my card"


def test_remote_code_loads_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    model.save_pretrained(tmp_path / "model")
    inputs = _random_inputs(model.config, batch_size=2)
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        torch.save(model(**inputs).pred_spans, tmp_path / "expected.pt")
    script = f"""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "RGNetForVideoGrounding", type(model)
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            spans = model(**inputs).pred_spans
        torch.testing.assert_close(spans, torch.load({str(tmp_path / "expected.pt")!r}), rtol=1e-5, atol=1e-6)
        print("REMOTE-OK")
        """
    result = run_without_rgnet_hf(script, tmp_path / "hf_home")
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


def test_push_to_hub_offline(tmp_path):
    from huggingface_hub import RepoUrl

    from rgnet_hf import push_model_folder_to_hub

    remote = tmp_path / "remote"
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs.get("private")))
            (remote / repo_id).mkdir(parents=True, exist_ok=True)
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, repo_id, folder_path, commit_message=None, **kwargs):
            files = sorted(os.listdir(folder_path))
            calls.append(("upload_folder", repo_id, files, commit_message))
            for name in files:
                shutil.copyfile(Path(folder_path) / name, remote / repo_id / name)
            return "commit-info"

    model = RGNetForVideoGrounding(tiny_config())
    with mock.patch("rgnet_hf.hub.model_folder.HfApi", FakeApi):
        result = push_model_folder_to_hub(model, "org/rgnet-tiny", commit_message="add weights", private=True)
    assert result == "commit-info"
    assert calls[:2] == [("init", None), ("create_repo", "org/rgnet-tiny", True)]
    _, repo, files, message = calls[2]
    assert message == "add weights"
    assert {"README.md", "config.json", "model.safetensors", "processor_config.json"} <= set(files)
    assert {name for name in files if name.endswith(".py")} == MODEL_CODE | PROCESSOR_CODE | PIPELINE_CODE
    card = (remote / "org/rgnet-tiny/README.md").read_text()
    assert "pipeline_tag: video-grounding" in card and "0." in card  # parameter count in millions
    reloaded = RGNetForVideoGrounding.from_pretrained(remote / "org/rgnet-tiny")
    torch.testing.assert_close(reloaded.class_head.weight, model.class_head.weight)


# --------------------------------------------------------------------------------------------------------------------
# inputs and options


def _random_inputs(config: RGNetConfig, batch_size: int = 3, num_frames: int = 12, num_tokens: int = 4):
    generator = torch.Generator().manual_seed(1)
    video_mask = torch.ones(batch_size, num_frames)
    video_mask[1:, num_frames - 3 :] = 0
    text_mask = torch.ones(batch_size, num_tokens)
    text_mask[0, -1] = 0
    return {
        "video_features": torch.randn(batch_size, num_frames, config.video_feature_size, generator=generator)
        * video_mask[..., None],
        "video_mask": video_mask,
        "text_features": torch.randn(batch_size, num_tokens, config.text_feature_size, generator=generator),
        "text_mask": text_mask,
    }


def _labels(batch_size: int):
    return [
        {
            "spans": torch.tensor([[0.4, 0.2]]),
            "saliency_positive_frames": torch.tensor([4]),
            "saliency_negative_frames": torch.tensor([0]),
        }
        for _ in range(batch_size)
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: i.update(video_features=i["video_features"][..., :10]), "10 dimensions per frame"),
        (lambda i: i.update(text_features=i["text_features"][..., :5]), "5 dimensions per token"),
        (lambda i: i.update(video_mask=i["video_mask"][:, :5]), "video_mask"),
        (lambda i: i.update(text_mask=i["text_mask"][:2]), "text_mask"),
        (lambda i: i["video_features"].__setitem__((0, 0, 0), float("nan")), "video_features.*NaN"),
        (lambda i: i["text_features"].__setitem__((1, 0, 0), float("inf")), "text_features.*NaN or infinite"),
        (lambda i: i["video_mask"].__setitem__(1, 0.0), "no valid frame"),
        (lambda i: i["text_mask"].__setitem__(2, 0.0), "no valid text token"),
        (lambda i: i.update(video_features=i["video_features"][0]), r"must be \(batch, frames"),
    ],
)
def test_bad_inputs_fail_loudly(change, message):
    model = RGNetForVideoGrounding(tiny_config()).eval()
    inputs = _random_inputs(model.config)
    change(inputs)
    with pytest.raises(ValueError, match=message):
        model(**inputs)


def test_negative_window_recipe_requires_negative_windows():
    model = RGNetForVideoGrounding(tiny_config(use_negative_window_loss=True, in_batch_window_pairs=False))
    with pytest.raises(ValueError, match="negative_video_features"):
        model(**_random_inputs(model.config), labels=_labels(3))
    with pytest.raises(ValueError, match="labels"):
        model(**_random_inputs(model.config), labels=_labels(2))


def test_rows_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    inputs = _random_inputs(model.config, batch_size=3)
    with torch.no_grad():
        batched = model(**inputs)
        for row in range(3):
            single = model(
                **{
                    k: v[row : row + 1, : int(inputs["video_mask"][row].sum()) if k.startswith("video") else None]
                    for k, v in inputs.items()
                }
            )
            torch.testing.assert_close(single.logits[0], batched.logits[row], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(single.pred_spans[0], batched.pred_spans[row], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(single.window_logits[0], batched.window_logits[row], rtol=1e-5, atol=1e-6)


def test_sparse_sampler_attention_blocks_unsampled_frames_for_the_retrieval_token(parity_fixtures):
    fixture = parity_fixtures["mad_tiny"]
    additive = converted_model(fixture)
    sparse = converted_model(fixture, sampler_attention_mode="sparse")
    inputs = model_inputs(fixture["inputs"]["model"])
    selection = fixture["outputs_eval"]["pred_prop_hard"]
    full = torch.cat([torch.ones(len(selection), 1), selection], dim=1)
    bias = sparse.model._sampler_attention_bias(full, inputs["video_mask"], torch.float32)
    valid = torch.cat([torch.ones(len(selection), 1), inputs["video_mask"]], dim=1).bool()
    blocked = torch.isinf(bias[:, 0, 0])
    # The retrieval token sees itself and the sampled valid frames, nothing else; other rows only lose padding.
    assert torch.equal(~blocked, full.bool() & valid)
    assert torch.equal(torch.isinf(bias[:, 0, 1:]), (~valid)[:, None, :].expand_as(bias[:, 0, 1:]))
    assert not (bias[torch.isfinite(bias)] != 0).any()
    additive_bias = additive.model._sampler_attention_bias(full, inputs["video_mask"], torch.float32)
    assert (additive_bias[torch.isfinite(additive_bias)] == 1).any(), "official mode adds +1 to unsampled rows"
    with torch.no_grad():
        a, b = additive(**inputs), sparse(**inputs)
    assert not torch.allclose(a.window_logits, b.window_logits)


def test_sampler_attention_loss_trains_the_sampler():
    torch.manual_seed(0)
    config = tiny_config(
        sampler_attention_loss_coefficient=2.0, in_batch_window_pairs=False, window_retrieval_loss_coefficient=0.0
    )
    model = RGNetForVideoGrounding(config).eval()
    inputs = _random_inputs(config)
    output = model(**inputs, labels=_labels(3))
    assert "loss_sampler_attention" in output.loss_dict
    # Hand check: frames overlapping [0.3, 0.5] x valid length are the targets of a BCE on the clean logits.
    logits = output.sampler_logits[:, 1:].detach()
    lengths = inputs["video_mask"].sum(1)
    expected = []
    for row in range(3):
        n = int(lengths[row])
        frames = torch.arange(n, dtype=torch.float32)
        target = ((frames < 0.5 * n) & (frames + 1 > 0.3 * n)).float()
        expected.append(torch.nn.functional.binary_cross_entropy_with_logits(logits[row, :n], target))
    torch.testing.assert_close(output.loss_dict["loss_sampler_attention"].detach(), torch.stack(expected).mean())
    output.loss.backward()
    assert model.model.frame_sampler.logit_projection.weight.grad.abs().sum() > 0
    without = RGNetForVideoGrounding(tiny_config(in_batch_window_pairs=False)).eval()
    without(**inputs, labels=_labels(3)).loss.backward()
    assert without.model.frame_sampler.logit_projection.weight.grad is None


def test_training_batch_from_fixture_runs_with_pairs_and_negative_windows(parity_fixtures):
    """The three recipes train end to end: loss is finite and every used parameter gets a gradient."""
    for name in ("mad_tiny", "ego4d_tiny"):
        fixture = parity_fixtures[name]
        model = converted_model(fixture).train()
        output = model(**training_inputs(fixture, with_negative=name == "ego4d_tiny"))
        assert torch.isfinite(output.loss)
        output.loss.backward()
        assert model.model.frame_sampler.logit_projection.weight.grad is not None


def test_initialisation_follows_the_official_scheme():
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(
        RGNetConfig.from_preset("ego4d", hidden_size=64, intermediate_size=128, num_attention_heads=4)
    )
    decoder = model.model.decoder
    assert torch.count_nonzero(decoder.anchor_update_heads[0].layers[-1].bias) == 0
    assert torch.count_nonzero(decoder.anchor_update_heads[0].layers[-1].weight) > 0  # xavier, not DAB's zeros
    assert torch.count_nonzero(model.model.encoder_layers[0].self_attention.k_proj.bias) == 0
    token = model.model.retrieval_token
    assert 0.5 < float(token.detach().std()) < 1.5  # N(0, 1)
    bound = (6 / (64 + 64)) ** 0.5
    assert float(decoder.layers[0].sa_v_proj.weight.detach().abs().max()) <= bound


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(parity_fixtures, use_reentrant):
    """The layers recompute their activations in the backward pass; loss and gradients equal the plain run's."""
    import copy

    from rgnet_hf.training import enable_gradient_checkpointing

    for name in ("mad_tiny", "ego4d_tiny"):
        fixture = parity_fixtures[name]
        plain = converted_model(fixture).train()
        checkpointed = copy.deepcopy(plain)
        assert plain.supports_gradient_checkpointing
        enable_gradient_checkpointing(checkpointed, use_reentrant=use_reentrant)
        layers = [m for m in checkpointed.modules() if getattr(m, "gradient_checkpointing", False)]
        assert {type(m).__name__ for m in layers} == {
            "RGNetTextToVideoLayer",
            "RGNetEncoderLayer",
            "RGNetDecoderLayer",
        }
        calls = []

        def counted(function, layer, calls=calls):
            return lambda *args, **kwargs: calls.append(layer) or function(*args, **kwargs)

        for layer in layers:
            layer._gradient_checkpointing_func = counted(layer._gradient_checkpointing_func, layer)
        losses = []
        for model in (plain, checkpointed):
            torch.manual_seed(0)  # the Gumbel sampler and dropout draw the same noise in both runs
            output = model(**training_inputs(fixture, with_negative=name == "ego4d_tiny"))
            output.loss.backward()
            losses.append(output.loss.detach())
        assert {id(layer) for layer in calls} == {id(layer) for layer in layers}  # every layer was checkpointed
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
        checkpointed_parameters = dict(checkpointed.named_parameters())
        compared = 0
        for parameter_name, parameter in plain.named_parameters():
            other = checkpointed_parameters[parameter_name].grad
            if parameter.grad is None:
                assert other is None, parameter_name
                continue
            # fp32 tolerance on the gradient's scale: the recompute accumulates the same terms in another order
            scale = max(1.0, float(parameter.grad.abs().max()))
            torch.testing.assert_close(other, parameter.grad, rtol=1e-5, atol=1e-6 * scale, msg=parameter_name)
            compared += 1
        assert compared > 10
