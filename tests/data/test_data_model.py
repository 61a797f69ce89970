"""Batches of the data pipeline run through RGNetForVideoGrounding with a loss, for the three recipes."""

from __future__ import annotations

import pytest
import torch

from rgnet_hf import RGNetConfig, RGNetForVideoGrounding
from rgnet_hf.data import (
    EvaluationVideoDataset,
    RGNetTrainingCollator,
    RGNetTrainingDataset,
    load_ego4d_nlq,
    load_mad,
)
from rgnet_hf.synthetic.mini_releases import make_ego4d_release, make_mad_release

SMALL = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, max_text_length=8)


@pytest.mark.parametrize("preset", ["mad", "ego4d_pretrain", "ego4d"])
def test_collated_batch_trains_the_model(tmp_path, preset):
    if preset == "mad":
        paths = make_mad_release(tmp_path, num_movies=4, frames_per_movie=(400, 600), feature_dim=24, text_dim=16)
        dataset = load_mad(paths["annotations_dir"], paths["video_features"], paths["text_features"])
        sizes = dict(video_feature_size=24, text_feature_size=16, sentence_feature_size=24, window_length=64)
    else:
        paths = make_ego4d_release(tmp_path, feature_dim=24, text_dim=16)
        dataset = load_ego4d_nlq(paths["annotations_dir"], paths["video_features_dir"], paths["text_features"])
        sizes = dict(video_feature_size=24, text_feature_size=16, sentence_feature_size=24, window_length=40)
    config = RGNetConfig.from_preset(preset, **SMALL, **sizes)
    model = RGNetForVideoGrounding(config).train()
    train_set = RGNetTrainingDataset.from_config(dataset["train"], config, seed=1)
    collator = RGNetTrainingCollator(negative_windows=config.use_negative_window_loss)
    batch = collator([train_set[index] for index in range(4)])
    assert ("negative_video_features" in batch) == (preset == "ego4d")
    output = model(**batch)
    expected_terms = {"loss_span", "loss_giou", "loss_label", "loss_saliency"}
    assert expected_terms <= set(output.loss_dict)
    assert ("loss_retrieval" in output.loss_dict) == (preset != "ego4d")
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert model.class_head.weight.grad is not None
    if preset != "ego4d":
        assert output.window_retrieval_logits.shape == (4, 4)

    # The evaluation items go through the engine of the same model.
    from rgnet_hf import RGNetGroundingEngine

    video = EvaluationVideoDataset(dataset["validation"], max_text_length=config.max_text_length)[0]
    engine = RGNetGroundingEngine(model.eval())
    results = engine.ground(video["video_features"], video["text_features"][0], sentence_features=None)
    assert len(results) == 1 and results[0].moments.shape[1] == 2
