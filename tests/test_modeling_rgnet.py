"""The modelling code: input errors, negative windows, batch independence, sampler, initialisation, checkpointing."""

from __future__ import annotations

import pytest
import torch
from conftest import random_grounding_inputs, tiny_config
from parity_utils import converted_model, model_inputs, training_inputs

from rgnet_hf import RGNetConfig, RGNetForVideoGrounding

# --------------------------------------------------------------------------------------------------------------------
# inputs and options


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
    inputs = random_grounding_inputs(model.config)
    change(inputs)
    with pytest.raises(ValueError, match=message):
        model(**inputs)


def test_negative_window_recipe_requires_negative_windows():
    model = RGNetForVideoGrounding(tiny_config(use_negative_window_loss=True, in_batch_window_pairs=False))
    with pytest.raises(ValueError, match="negative_video_features"):
        model(**random_grounding_inputs(model.config), labels=_labels(3))
    with pytest.raises(ValueError, match="labels"):
        model(**random_grounding_inputs(model.config), labels=_labels(2))


def test_rows_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    inputs = random_grounding_inputs(model.config, batch_size=3)
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
    inputs = random_grounding_inputs(config)
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
