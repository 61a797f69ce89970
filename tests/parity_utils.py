"""Helpers shared by the parity tests: build the converted model of a fixture and its inputs."""

from __future__ import annotations

import torch

from rgnet_hf import RGNetForVideoGrounding
from rgnet_hf.hub.convert_original_checkpoint import _rename, config_from_official_options, convert_state_dict


def converted_model(fixture: dict, **config_overrides) -> RGNetForVideoGrounding:
    # The official batches mix texts of different lengths, so reproduce its mask layout bug (see the config).
    config_overrides.setdefault("text_to_video_mask_batch_mixing", True)
    config = config_from_official_options(fixture["meta"]["opt"], **config_overrides)
    state_dict, _ = convert_state_dict(fixture["state_dict"], config)
    model = RGNetForVideoGrounding(config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def model_inputs(raw: dict) -> dict[str, torch.Tensor]:
    return {
        "video_features": raw["src_vid_motion"],
        "video_mask": raw["src_vid_motion_mask"],
        "text_features": raw["src_txt"],
        "text_mask": raw["src_txt_mask"],
    }


def training_inputs(fixture: dict, with_negative: bool) -> dict:
    collated, targets = fixture["inputs"]["collated"], fixture["inputs"]["targets"]
    labels = [
        {
            "spans": targets["span_labels"][index]["spans"],
            "saliency_positive_frames": targets["saliency_pos_labels"][index],
            "saliency_negative_frames": targets["saliency_neg_labels"][index],
        }
        for index in range(len(targets["span_labels"]))
    ]
    inputs = {
        "video_features": collated["video_motion_feat"][0],
        "video_mask": collated["video_motion_feat"][1],
        "text_features": collated["query_feat"][0],
        "text_mask": collated["query_feat"][1],
        "labels": labels,
    }
    if with_negative:
        inputs["negative_video_features"], inputs["negative_video_mask"] = collated["neg_window_motion_feat"]
    return inputs


def official_gradient_pairs(model, official_gradients: dict[str, torch.Tensor]):
    """Yield `(official_key, our_gradient, official_gradient)`; split in-projections are packed back together."""
    parameters = dict(model.named_parameters())
    for key, gradient in official_gradients.items():
        grads = [parameters[name].grad for name, _ in _rename(key, model.config) or []]
        assert grads and all(g is not None for g in grads), f"{key}: no gradient on our side"
        yield key, torch.cat(grads) if len(grads) > 1 else grads[0], gradient


def assert_close_to_scale(
    actual: torch.Tensor, expected: torch.Tensor, relative: float, name: str = "", floor: float = 0.0
) -> None:
    """|actual - expected| <= relative * max(max|expected|, floor) elementwise.

    The error is measured against the tensor's own scale, so entries that are mathematically zero (key biases under
    a softmax) do not dominate. `floor` (1 % of the largest gradient of the whole step in the tests) covers tensors
    whose entire gradient is float32 cancellation noise: the first decoder layer's self-attention (its five queries
    are identical, gradients around 1e-9).
    """
    assert actual is not None, f"{name}: no gradient"
    scale = max(float(expected.abs().max()), floor)
    torch.testing.assert_close(actual, expected, rtol=0, atol=relative * scale, msg=name)


def gradient_floor(gradients: dict[str, torch.Tensor]) -> float:
    return 0.01 * max(float(g.abs().max()) for g in gradients.values())
