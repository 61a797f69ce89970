"""RGNetConfig: the official presets, key values and refused values."""

from __future__ import annotations

import pytest
from conftest import RELEASED_SIZES

from rgnet_hf import RGNetConfig
from rgnet_hf.hub.convert_original_checkpoint import (
    config_from_official_options,
)

# --------------------------------------------------------------------------------------------------------------------
# configuration


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
