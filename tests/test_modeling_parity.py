"""Parity with the official RGNet implementation, on the fixtures it produced (tests/fixtures/PARITY_FIXTURES.md)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from conftest import PARITY_NAMES
from parity_utils import (
    assert_close_to_scale,
    converted_model,
    gradient_floor,
    model_inputs,
    official_gradient_pairs,
    training_inputs,
)

from rgnet_hf.modeling_rgnet import RGNetFrameSampler

OUTPUT_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _compare_outputs(output, expected, sampler_logits=None):
    torch.testing.assert_close(output.logits, expected["pred_logits"], **OUTPUT_TOLERANCE)
    torch.testing.assert_close(output.pred_spans, expected["pred_spans"], **OUTPUT_TOLERANCE)
    torch.testing.assert_close(output.window_logits, expected["prob_soft"][:, 0], **OUTPUT_TOLERANCE)
    torch.testing.assert_close(output.saliency_scores, expected["saliency_scores"], **OUTPUT_TOLERANCE)
    assert torch.equal(output.sampler_selection, expected["pred_prop_hard"])
    if sampler_logits is not None:
        torch.testing.assert_close(output.sampler_logits, sampler_logits[..., 0].T, **OUTPUT_TOLERANCE)
    assert len(output.auxiliary_outputs) == len(expected["aux_outputs"]) == 5
    for ours, theirs in zip(output.auxiliary_outputs, expected["aux_outputs"]):
        torch.testing.assert_close(ours["logits"], theirs["pred_logits"], **OUTPUT_TOLERANCE)
        torch.testing.assert_close(ours["pred_spans"], theirs["pred_spans"], **OUTPUT_TOLERANCE)


@pytest.mark.parametrize("name", PARITY_NAMES)
def test_eval_forward_matches_official(parity_fixtures, name):
    fixture = parity_fixtures[name]
    model = converted_model(fixture)
    with torch.no_grad():
        output = model(**model_inputs(fixture["inputs"]["model"]))
    _compare_outputs(output, fixture["outputs_eval"], fixture["sampler_logits_eval"]["model"])
    if fixture["inputs"]["neg_window_model"] is not None:
        with torch.no_grad():
            negative = model(**model_inputs(fixture["inputs"]["neg_window_model"]))
        _compare_outputs(
            negative, fixture["neg_window_outputs_eval"], fixture["sampler_logits_eval"]["neg_window_model"]
        )


@pytest.mark.parametrize("name", PARITY_NAMES)
def test_matcher_matches_official(parity_fixtures, name):
    """Fed the recorded official outputs, the matcher solves the same costs and picks the same queries."""
    fixture = parity_fixtures[name]
    model = converted_model(fixture)
    labels = training_inputs(fixture, with_negative=False)["labels"]
    outputs = fixture["outputs_eval"]
    rows = slice(None)
    if fixture["inputs"]["winret_pairs"] is not None:
        rows = fixture["inputs"]["winret_pairs"]["positive_index"]
    layers = [(a["pred_logits"][rows], a["pred_spans"][rows]) for a in outputs["aux_outputs"]]
    layers.append((outputs["pred_logits"][rows], outputs["pred_spans"][rows]))
    matcher = model.criterion.matcher
    target_spans = torch.cat([label["spans"] for label in labels])
    for layer, (logits, spans) in enumerate(layers):
        costs = matcher.cost_matrix(logits, spans, target_spans)
        expected_costs = fixture["matcher_costs"][layer]  # (windows, queries, 1): each window's own target
        ours = costs[torch.arange(len(labels)), :, torch.arange(len(labels))].unsqueeze(-1)
        torch.testing.assert_close(ours, expected_costs, **OUTPUT_TOLERANCE)
        indices = matcher(logits, spans, labels)
        expected = fixture["matcher_indices"] if layer == 5 else fixture["matcher_indices_aux"][layer]
        for (query, target), (expected_query, expected_target) in zip(indices, expected):
            assert torch.equal(query, expected_query) and torch.equal(target, expected_target)


@pytest.mark.parametrize("name", PARITY_NAMES)
def test_losses_and_gradients_match_official(parity_fixtures, name):
    fixture = parity_fixtures[name]
    model = converted_model(fixture)
    with_negative = fixture["inputs"]["neg_window_model"] is not None
    output = model(**training_inputs(fixture, with_negative))
    expected = fixture["loss_dict_eval"]
    assert set(output.loss_dict) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(output.loss_dict[key], torch.tensor(value), rtol=1e-5, atol=1e-5, msg=key)
    torch.testing.assert_close(output.loss, torch.tensor(fixture["total_eval"]), rtol=1e-5, atol=1e-6)
    weights = model.criterion.weight_dict
    official_weights = {k: v for k, v in fixture["weight_dict"].items() if k in expected}
    assert {k: weights[k] for k in official_weights} == pytest.approx(official_weights)

    output.loss.backward()
    floor = gradient_floor(fixture["grads_eval"])
    for key, ours, theirs in official_gradient_pairs(model, fixture["grads_eval"]):
        tensor_floor = floor
        if key == "saliency_proj3.bias":
            # Its exact gradient is 0 (the InfoNCE is invariant to shifting every logit); both sides hold float32
            # noise, so compare it at the scale of the retrieval head's weight gradient.
            tensor_floor = float(fixture["grads_eval"]["saliency_proj3.weight"].abs().max())
        assert_close_to_scale(ours, theirs, 1e-5, key, tensor_floor)
    # Parameters without a gradient: exactly the official ones that we keep (dead tensors are not converted).
    ours_without = {n for n, p in model.named_parameters() if p.grad is None}
    official_without = {n for k in fixture["params_without_grad_eval"] for n, _ in (model_rename(model, k) or [])}
    assert ours_without == official_without


def model_rename(model, key):
    from rgnet_hf.hub.convert_original_checkpoint import _rename

    return _rename(key, model.config)


@pytest.mark.parametrize("name", PARITY_NAMES)
def test_training_step_with_recorded_sampler_noise(parity_fixtures, name):
    fixture = parity_fixtures[name]
    section = fixture["train_mode"]
    model = converted_model(
        fixture, dropout=section["options"]["dropout"], input_dropout=section["options"]["input_dropout"]
    )
    model.train()
    recorded = iter([entry["logistic_noise"][..., 0].T.contiguous() for entry in section["sampler_noise"]])

    def replay(shape, device, dtype):
        noise = next(recorded)
        assert tuple(noise.shape) == tuple(shape)
        return noise.to(device=device, dtype=dtype)

    with_negative = fixture["inputs"]["neg_window_model"] is not None
    with mock.patch.object(RGNetFrameSampler, "sample_logistic_noise", staticmethod(replay)):
        output = model(**training_inputs(fixture, with_negative))
    assert next(recorded, None) is None, "every recorded sampler draw must be consumed, in order"

    expected = section["outputs"]
    rows = slice(None)
    if fixture["inputs"]["winret_pairs"] is not None:
        rows = fixture["inputs"]["winret_pairs"]["positive_index"]
        torch.testing.assert_close(
            output.window_retrieval_logits.flatten(), expected["prob_soft"][:, 0], **OUTPUT_TOLERANCE
        )
    torch.testing.assert_close(output.logits, expected["pred_logits"][rows], **OUTPUT_TOLERANCE)
    torch.testing.assert_close(output.pred_spans, expected["pred_spans"][rows], **OUTPUT_TOLERANCE)
    torch.testing.assert_close(output.saliency_scores, expected["saliency_scores"][rows], **OUTPUT_TOLERANCE)
    assert torch.equal(output.sampler_selection.detach(), expected["pred_prop_hard"][rows])
    for key, value in section["loss_dict"].items():
        torch.testing.assert_close(output.loss_dict[key], torch.tensor(value), rtol=1e-5, atol=1e-5, msg=key)
    torch.testing.assert_close(output.loss, torch.tensor(section["weighted_total"]), rtol=1e-5, atol=1e-6)

    output.loss.backward()
    floor = gradient_floor(section["grads_upstream_of_sampler"])
    for key, ours, theirs in official_gradient_pairs(model, section["grads_upstream_of_sampler"]):
        assert_close_to_scale(ours, theirs, 1e-5, key, floor)
    sampler = model.model.frame_sampler.logit_projection.weight.grad
    assert sampler is not None and sampler.abs().sum() > 0, "the straight-through estimator must reach the sampler"


@pytest.mark.parametrize("name", PARITY_NAMES)
def test_long_video_batch_matches_official(parity_fixtures, name):
    """All 4 queries x 17 windows of the inference simulation in one batch, as the official inference ran them."""
    simulation = parity_fixtures[name]["inference_simulation"]
    model = converted_model(parity_fixtures[name])
    (video, video_mask), (text, text_mask) = simulation["batch"]["video_motion_feat"], simulation["batch"]["query_feat"]
    num_windows, num_queries = video.shape[0], text.shape[0]
    with torch.no_grad():
        output = model(
            video_features=video.repeat(num_queries, 1, 1),
            video_mask=video_mask.repeat(num_queries, 1),
            text_features=text.repeat_interleave(num_windows, 0),
            text_mask=text_mask.repeat_interleave(num_windows, 0),
        )
    expected = simulation["raw_model_outputs"]
    torch.testing.assert_close(output.logits, expected["pred_logits"], **OUTPUT_TOLERANCE)
    torch.testing.assert_close(output.pred_spans, expected["pred_spans"], **OUTPUT_TOLERANCE)
    torch.testing.assert_close(output.window_logits, expected["prob_soft"][:, 0], **OUTPUT_TOLERANCE)
    torch.testing.assert_close(output.saliency_scores, expected["saliency_scores"], **OUTPUT_TOLERANCE)
    assert torch.equal(output.sampler_selection, expected["pred_prop_hard"])
    torch.testing.assert_close(output.sampler_logits, simulation["sampler_logits"][..., 0].T, **OUTPUT_TOLERANCE)


def test_mask_batch_mixing_only_matters_for_mixed_text_lengths(parity_fixtures):
    """Without the official mask bug, rows do not depend on the batch; with a single text per batch the bug is inert."""
    fixture = parity_fixtures["mad_tiny"]
    simulation = fixture["inference_simulation"]
    (video, video_mask), (text, text_mask) = simulation["batch"]["video_motion_feat"], simulation["batch"]["query_feat"]
    official, clean = converted_model(fixture), converted_model(fixture, text_to_video_mask_batch_mixing=False)
    num_windows, num_queries = video.shape[0], text.shape[0]
    mixed_batch = dict(
        video_features=video.repeat(num_queries, 1, 1),
        video_mask=video_mask.repeat(num_queries, 1),
        text_features=text.repeat_interleave(num_windows, 0),
        text_mask=text_mask.repeat_interleave(num_windows, 0),
    )
    with torch.no_grad():
        clean_batched = clean(**mixed_batch)
        official_batched = official(**mixed_batch)
        for query in range(num_queries):
            single = dict(
                video_features=video,
                video_mask=video_mask,
                text_features=text[query : query + 1].expand(num_windows, -1, -1),
                text_mask=text_mask[query : query + 1].expand(num_windows, -1),
            )
            rows = slice(query * num_windows, (query + 1) * num_windows)
            official_single, clean_single = official(**single), clean(**single)
            torch.testing.assert_close(official_single.logits, clean_single.logits, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(official_single.window_logits, clean_single.window_logits, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(
                clean_batched.window_logits[rows], clean_single.window_logits, **OUTPUT_TOLERANCE
            )
            torch.testing.assert_close(clean_batched.logits[rows], clean_single.logits, **OUTPUT_TOLERANCE)
    # The official mixed batch (texts of 7 and 4 tokens) really differs from the batch-independent computation.
    assert (official_batched.window_logits - clean_batched.window_logits).abs().max() > 1e-3
