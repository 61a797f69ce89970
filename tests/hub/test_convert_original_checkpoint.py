"""The official checkpoint converter: the full-size layout, errors that name the problem, the CLI."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, RELEASED_SIZES
from parity_utils import model_inputs

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
    # The official weights' licence travels with them, and the card says what it allows.
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "converted" / "README.md")
    assert card.data.license == "cc-by-nc-nd-4.0" and "may not be used commercially" in " ".join(card.text.split())


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
