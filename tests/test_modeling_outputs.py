"""Every output field's shape on a tiny config, `return_dict=False`, and the renamed names (as transformers' model tests
check them)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_config

from rgnet_hf import (
    RGNetConfig,
    RGNetEncoderOutput,
    RGNetForVideoGrounding,
    RGNetGroundingOutput,
    RGNetModel,
    RGNetModelOutput,
    RGNetVideoGroundingOutput,
)

BATCH, FRAMES, TOKENS, NEGATIVE_FRAMES = 3, 12, 5, 9


def _config(**overrides) -> RGNetConfig:
    return tiny_config(num_decoder_layers=3, **overrides)


def _inputs(config: RGNetConfig, frames: int = FRAMES, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    video_mask = torch.ones(BATCH, frames)
    video_mask[1, frames - 4 :] = 0
    text_mask = torch.ones(BATCH, TOKENS)
    text_mask[2, -2:] = 0
    return {
        "video_features": torch.randn(BATCH, frames, config.video_feature_size, generator=generator)
        * video_mask[..., None],
        "video_mask": video_mask,
        "text_features": torch.randn(BATCH, TOKENS, config.text_feature_size, generator=generator),
        "text_mask": text_mask,
    }


def _labels() -> list[dict[str, torch.Tensor]]:
    return [
        {
            "spans": torch.tensor([[0.4, 0.3]]),
            "saliency_positive_frames": torch.tensor([4, 5]),
            "saliency_negative_frames": torch.tensor([0, 1]),
        }
        for _ in range(BATCH)
    ]


def _field_names(output_class) -> set[str]:
    return {field.name for field in dataclasses.fields(output_class)}


def _check_shapes(output, expected: dict[str, tuple | None], checked_apart: tuple[str, ...] = ()) -> None:
    """`expected` maps every tensor field to its shape (None: the field is None); fields that are lists or dicts are
    named in `checked_apart`. Every field of the output class must be named, so a new field cannot go untested."""
    assert set(expected) | set(checked_apart) == _field_names(type(output))
    for name, shape in expected.items():
        value = getattr(output, name)
        if shape is None:
            assert value is None, name
        else:
            assert tuple(value.shape) == shape, (name, tuple(value.shape), shape)


def _encoder_shapes(config: RGNetConfig, frames: int, training: bool) -> dict[str, tuple | None]:
    hidden = config.hidden_size
    return {
        "retrieval_embedding": (BATCH, hidden),
        "video_memory": (BATCH, frames, hidden),
        "frame_position_embeddings": (BATCH, frames, hidden),
        "sampler_logits": (BATCH, 1 + frames),
        "sampler_noisy_logits": (BATCH, 1 + frames) if training else None,
        "sampler_selection": (BATCH, frames),
    }


@pytest.mark.parametrize("training", [False, True])
def test_encoder_and_backbone_output_shapes(training):
    config = _config()
    model = RGNetModel(config).train(training)
    inputs = _inputs(config)
    encoded = model.encode(**inputs)
    assert isinstance(encoded, RGNetEncoderOutput)
    _check_shapes(encoded, {**_encoder_shapes(config, FRAMES, training), "last_layer_input": None})
    partial = model.encode(**inputs, retrieval_only=True)  # the engine's scoring pass
    assert partial.video_memory is None
    assert tuple(partial.last_layer_input.shape) == (BATCH, 1 + FRAMES, config.hidden_size)

    output = model(**inputs)
    assert isinstance(output, RGNetModelOutput)
    layers, queries, hidden = config.num_decoder_layers, config.num_queries, config.hidden_size
    _check_shapes(
        output,
        {
            "last_hidden_state": (BATCH, queries, hidden),
            "intermediate_hidden_states": (layers, BATCH, queries, hidden),
            "reference_points": (layers, BATCH, queries, 2),
            **_encoder_shapes(config, FRAMES, training),
        },
    )
    torch.testing.assert_close(output.last_hidden_state, output.intermediate_hidden_states[-1])


def _check_auxiliary_outputs(output, config: RGNetConfig) -> None:
    assert len(output.auxiliary_outputs) == config.num_decoder_layers - 1
    for layer in output.auxiliary_outputs:
        assert set(layer) == {"logits", "pred_spans"}
        assert tuple(layer["logits"].shape) == tuple(layer["pred_spans"].shape) == (BATCH, config.num_queries, 2)


def test_grounding_output_shapes_at_inference():
    config = _config()
    model = RGNetForVideoGrounding(config).eval()
    with torch.no_grad():
        output = model(**_inputs(config))
    assert isinstance(output, RGNetVideoGroundingOutput)
    queries, hidden = config.num_queries, config.hidden_size
    _check_shapes(
        output,
        {
            "loss": None,
            "loss_dict": None,
            "logits": (BATCH, queries, 2),
            "pred_spans": (BATCH, queries, 2),
            "window_logits": (BATCH,),
            "window_retrieval_logits": None,
            "saliency_scores": (BATCH, FRAMES),
            "sampler_logits": (BATCH, 1 + FRAMES),
            "sampler_selection": (BATCH, FRAMES),
            "negative_window_outputs": None,
            "last_hidden_state": (BATCH, queries, hidden),
            "retrieval_embedding": (BATCH, hidden),
        },
        checked_apart=("auxiliary_outputs",),
    )
    _check_auxiliary_outputs(output, config)
    assert ((output.pred_spans >= 0) & (output.pred_spans <= 1)).all()
    assert set(output.sampler_selection.unique().tolist()) <= {0.0, 1.0}


def test_grounding_output_shapes_in_training_with_every_loss_term():
    torch.manual_seed(0)
    config = _config(in_batch_window_pairs=True, use_negative_window_loss=True, sampler_attention_loss_coefficient=1.0)
    model = RGNetForVideoGrounding(config).train()
    negative = _inputs(config, frames=NEGATIVE_FRAMES, seed=1)
    output = model(
        **_inputs(config),
        labels=_labels(),
        negative_video_features=negative["video_features"],
        negative_video_mask=negative["video_mask"],
    )
    queries, hidden = config.num_queries, config.hidden_size
    _check_shapes(
        output,
        {
            "loss": (),
            "logits": (BATCH, queries, 2),
            "pred_spans": (BATCH, queries, 2),
            "window_logits": (BATCH,),
            "window_retrieval_logits": (BATCH, BATCH),
            "saliency_scores": (BATCH, FRAMES),
            "sampler_logits": (BATCH, 1 + FRAMES),
            "sampler_selection": (BATCH, FRAMES),
            "last_hidden_state": (BATCH, queries, hidden),
            "retrieval_embedding": (BATCH, hidden),
        },
        checked_apart=("auxiliary_outputs", "loss_dict", "negative_window_outputs"),
    )
    assert torch.isfinite(output.loss)
    _check_auxiliary_outputs(output, config)
    # The diagonal of the text x window logits is each text with its own window.
    torch.testing.assert_close(output.window_retrieval_logits.diagonal(), output.window_logits)

    negative_outputs = output.negative_window_outputs
    assert set(negative_outputs) == {"logits", "saliency_scores", "video_mask", "sampler_logits"}
    assert tuple(negative_outputs["logits"].shape) == (BATCH, queries, 2)
    assert tuple(negative_outputs["saliency_scores"].shape) == (BATCH, NEGATIVE_FRAMES)
    assert tuple(negative_outputs["video_mask"].shape) == (BATCH, NEGATIVE_FRAMES)
    assert tuple(negative_outputs["sampler_logits"].shape) == (BATCH, 1 + NEGATIVE_FRAMES)

    terms = {"loss_span", "loss_giou", "loss_label", "class_error"}
    expected_terms = terms | {"loss_saliency", "loss_retrieval", "loss_sampler_attention"}
    expected_terms |= {f"{name}_{layer}" for layer in range(config.num_decoder_layers - 1) for name in terms}
    assert set(output.loss_dict) == expected_terms
    assert all(tuple(value.shape) == () for value in output.loss_dict.values())
    output.loss.backward()
    assert model.model.retrieval_token.grad is not None


@pytest.mark.parametrize("model_class", [RGNetModel, RGNetForVideoGrounding])
def test_return_dict_false_gives_the_same_values_as_a_tuple(model_class):
    config = _config()
    model = model_class(config).eval()
    inputs = _inputs(config)
    with torch.no_grad():
        as_dict = model(**inputs)
        as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    expected = as_dict.to_tuple()
    assert len(as_tuple) == len(expected) == len(as_dict.keys())
    for value, reference in zip(as_tuple, expected):
        if isinstance(reference, torch.Tensor):
            torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-6)
        else:
            assert type(value) is type(reference)

    # The config's return_dict is the default when the argument is not given.
    tuple_model = model_class(_config(return_dict=False)).eval()
    tuple_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        from_config = tuple_model(**inputs)
    assert isinstance(from_config, tuple) and len(from_config) == len(expected)
    torch.testing.assert_close(from_config[0], expected[0], rtol=1e-5, atol=1e-6)


def test_return_dict_false_with_labels_puts_the_loss_first():
    config = _config(in_batch_window_pairs=False)
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(config).eval()
    inputs = _inputs(config)
    output = model(**inputs, labels=_labels(), return_dict=False)
    reference = model(**inputs, labels=_labels())
    assert isinstance(output, tuple)
    torch.testing.assert_close(output[0], reference.loss, rtol=1e-5, atol=1e-6)
    assert output[1].keys() == reference.loss_dict.keys()
    torch.testing.assert_close(output[2], reference.logits, rtol=1e-5, atol=1e-6)


def test_renamed_output_class_and_init_field_keep_old_names_working(tmp_path):
    assert RGNetGroundingOutput is RGNetVideoGroundingOutput

    # Configs saved before the rename store `initializer_range`: it still sets the init of the learned tensors.
    old = RGNetConfig(**{**_config().to_dict(), "initializer_range": 0.01})
    assert old.learned_embedding_init_std == 0.01 and not hasattr(old, "initializer_range")
    old.save_pretrained(tmp_path)
    assert "initializer_range" not in (tmp_path / "config.json").read_text()
    assert RGNetConfig.from_pretrained(tmp_path).learned_embedding_init_std == 0.01
    torch.manual_seed(0)
    model = RGNetModel(old)
    for tensor in (model.retrieval_token, model.retrieval_position, model.query_anchor_logits):
        assert float(tensor.detach().abs().max()) < 0.1  # N(0, 0.01), not N(0, 1)
    assert float(RGNetModel(_config()).retrieval_token.detach().std()) > 0.5  # the official N(0, 1) by default
