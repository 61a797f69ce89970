"""The fast paths equal the reference: SDPA against the eager attention, the engine's shared video work against every
(query, window) row through the whole model, bfloat16 against float32, torch.compile's fallback."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from conftest import TINY_SIZES, tiny_config
from parity_utils import assert_close_to_scale, converted_model, gradient_floor

from rgnet_hf import RGNetConfig, RGNetForVideoGrounding, RGNetGroundingEngine, modeling_rgnet

EXACT = {"rtol": 1e-5, "atol": 1e-6}
# Encoder states of magnitude ~1 after several layers of tiled sums: fp32 rounding reaches ~1e-6 on some CPUs.
STATES = {"rtol": 1e-5, "atol": 1e-5}


def _tiny_preset(preset: str, **overrides) -> RGNetConfig:
    values = dict(
        **TINY_SIZES,
        window_length=40,
        max_text_length=7,
        top_k_windows=4,
        num_decoder_layers=3,
    )
    values.update(overrides)
    return RGNetConfig.from_preset(preset, **values)


def _pair(config: RGNetConfig) -> tuple[RGNetForVideoGrounding, RGNetForVideoGrounding]:
    """The same weights with the eager (reference) and the sdpa attention."""
    torch.manual_seed(0)
    eager = RGNetForVideoGrounding(copy.deepcopy(config)).eval()
    eager.set_attn_implementation("eager")
    sdpa = RGNetForVideoGrounding(copy.deepcopy(config)).eval()
    sdpa.load_state_dict(eager.state_dict())
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    return eager, sdpa


def _padded_batch(config: RGNetConfig, batch_size: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    frames, tokens = config.window_length, config.max_text_length
    video_lengths = torch.tensor([frames, frames // 2, 3, frames - 1])[:batch_size]
    text_lengths = torch.tensor([tokens, 2, tokens - 1, 1])[:batch_size]
    video_mask = (torch.arange(frames)[None] < video_lengths[:, None]).float()
    text_mask = (torch.arange(tokens)[None] < text_lengths[:, None]).float()
    video = torch.randn(batch_size, frames, config.video_feature_size, generator=generator) * video_mask[..., None]
    text = torch.randn(batch_size, tokens, config.text_feature_size, generator=generator) * text_mask[..., None]
    return {"video_features": video, "video_mask": video_mask, "text_features": text, "text_mask": text_mask}


@pytest.mark.parametrize("sampler_attention_mode", ["additive", "sparse"])
@pytest.mark.parametrize("preset", RGNetConfig.preset_names())
def test_sdpa_equals_eager_with_padding_and_sampler_bias(preset, sampler_attention_mode):
    config = _tiny_preset(preset, sampler_attention_mode=sampler_attention_mode)
    eager, sdpa = _pair(config)
    batch = _padded_batch(config)
    with torch.no_grad():
        reference, fast = eager(**batch), sdpa(**batch)
    assert torch.equal(reference.sampler_selection, fast.sampler_selection)
    assert 0 < reference.sampler_selection.sum() < reference.sampler_selection.numel()  # the bias is not uniform
    for name in ("logits", "pred_spans", "window_logits", "saliency_scores", "sampler_logits", "retrieval_embedding"):
        torch.testing.assert_close(fast[name], reference[name], **EXACT, msg=name)


def test_sdpa_equals_eager_in_training_with_gradients():
    config = _tiny_preset("mad", dropout=0.0, input_dropout=0.0)
    eager, sdpa = _pair(config)
    batch = _padded_batch(config)
    label = {
        "spans": torch.tensor([[0.5, 0.2]]),
        "saliency_positive_frames": torch.tensor([1]),
        "saliency_negative_frames": torch.tensor([0]),
    }
    labels = [label] * 4
    losses = []
    for model in (eager, sdpa):
        model.train()
        torch.manual_seed(5)  # the same sampler noise for both
        loss = model(**batch, labels=labels).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], **EXACT)
    # Gradients that are mathematically zero (key biases under a softmax) hold float noise: measured against 1 % of
    # the step's largest gradient, as the parity tests do.
    floor = gradient_floor({name: p.grad for name, p in eager.named_parameters() if p.grad is not None})
    for (name, a), b in zip(eager.named_parameters(), sdpa.parameters()):
        if a.grad is not None:
            assert_close_to_scale(b.grad, a.grad, 1e-5, name, floor)


@pytest.mark.parametrize("sampler_attention_mode", ["additive", "sparse"])
@pytest.mark.parametrize("preset", RGNetConfig.preset_names())
def test_fast_inference_encoder_and_decoder_equal_the_reference(preset, sampler_attention_mode, monkeypatch):
    """`fast_inference`: the feed-forward in tiles (a tile of 7 rows, so tiles end inside windows and the last one is
    partial), the sampler bias as "-1 on itself" and the decoder's folded memory projections give the default path's
    encoder states and decoder outputs, with padded windows and texts, per row and per distinct window length."""
    monkeypatch.setattr(modeling_rgnet, "FEED_FORWARD_TILE_ROWS", (7, 7))
    config = _tiny_preset(preset, sampler_attention_mode=sampler_attention_mode)
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(config).eval()
    batch = _padded_batch(config)
    inputs = (batch["video_features"], batch["video_mask"], batch["text_features"], batch["text_mask"])
    backbone, mask = model.model, batch["video_mask"]
    with torch.no_grad():
        reference = backbone.encode(*inputs)
        fast = backbone.encode(*inputs, fast_inference=True)
        assert torch.equal(fast.sampler_selection, reference.sampler_selection)
        assert 0 < reference.sampler_selection.sum() < reference.sampler_selection.numel()  # the bias is not uniform
        for name in ("retrieval_embedding", "video_memory", "sampler_logits"):
            torch.testing.assert_close(fast[name], reference[name], **STATES, msg=name)
        partial = backbone.encode(*inputs, retrieval_only=True, fast_inference=True)
        completed = backbone.complete_encoding(partial, mask, fast_inference=True)
        torch.testing.assert_close(partial.retrieval_embedding, reference.retrieval_embedding, **STATES)
        torch.testing.assert_close(completed.video_memory, reference.video_memory, **STATES)

        memory, positions = reference.video_memory, reference.frame_position_embeddings
        expected = backbone.decode(memory, positions, mask)
        for output in (
            backbone.decode(memory, positions, mask, fast_inference=True),
            # one key-position row per distinct window length, as the engine passes them
            backbone.decode(
                memory, positions.flip(0), mask, position_index=torch.arange(3, -1, -1), fast_inference=True
            ),
        ):
            for got, want in zip(output, expected):
                torch.testing.assert_close(got, want, **EXACT)


def test_fast_inference_is_refused_with_autograd_or_in_training():
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(_tiny_preset("mad"))
    batch = _padded_batch(model.config)
    inputs = (batch["video_features"], batch["video_mask"], batch["text_features"], batch["text_mask"])
    for training, grad in ((True, False), (False, True)):
        model.train(training)
        with torch.set_grad_enabled(grad), pytest.raises(ValueError, match="inference only"):
            model.model.encode(*inputs, fast_inference=True)


def test_attn_implementation_round_trip(tmp_path):
    torch.manual_seed(0)
    RGNetForVideoGrounding(tiny_config()).save_pretrained(tmp_path)
    assert RGNetForVideoGrounding.from_pretrained(tmp_path).config._attn_implementation == "sdpa"
    model = RGNetForVideoGrounding.from_pretrained(tmp_path, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    assert RGNetForVideoGrounding(RGNetConfig(attn_implementation="eager")).config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="not supported"):
        RGNetForVideoGrounding.from_pretrained(tmp_path, attn_implementation="no-such-kernel")


def _engine_inputs(config: RGNetConfig, num_frames: int, num_queries: int = 3):
    generator = torch.Generator().manual_seed(2)
    video = torch.randn(num_frames, config.video_feature_size, generator=generator)
    text = torch.randn(num_queries, config.max_text_length, config.text_feature_size, generator=generator)
    text_mask = (torch.arange(config.max_text_length)[None] < torch.tensor([[7], [3], [1]])[:num_queries]).float()
    sentence = torch.randn(num_queries, config.sentence_feature_size, generator=generator)
    return video, text * text_mask[..., None], text_mask, sentence


@pytest.mark.parametrize("preset", RGNetConfig.preset_names())
def test_engine_fast_path_equals_the_per_row_reference(preset):
    """The shared video work (embeddings once per video, retrieval-only scoring, decoder key positions per window
    length) and SDPA give the reference's results: 313 frames cut the last windows short, the queries are padded."""
    config = _tiny_preset(preset)
    eager, sdpa = _pair(config)
    video, text, text_mask, sentence = _engine_inputs(config, 313)
    reference = RGNetGroundingEngine(eager, share_video_work=False).ground(video, text, text_mask, sentence)
    fast = RGNetGroundingEngine(sdpa).ground(video, text, text_mask, sentence)
    for a, b in zip(reference, fast):
        np.testing.assert_array_equal(b.window_order, a.window_order)
        np.testing.assert_allclose(b.window_scores, a.window_scores, rtol=1e-5, atol=1e-6)
        # window_predictions are rounded to 4 decimals (as the official output): compare the rankings' floats
        for name in ("fused", "proposal", "matching"):
            np.testing.assert_allclose(b.rankings[name], a.rankings[name], rtol=1e-5, atol=1e-5)


def test_engine_fast_path_without_kept_states_and_with_a_window_scorer():
    """A budget too small for the embedded video and the encoder states embeds each chunk's windows and re-encodes
    the decoded windows; a separate scorer never keeps states: both equal the reference."""
    config = _tiny_preset("mad")
    eager, sdpa = _pair(config)
    video, text, text_mask, sentence = _engine_inputs(config, 200)
    reference = RGNetGroundingEngine(eager, share_video_work=False).ground(video, text, text_mask, sentence)
    for engine in (
        RGNetGroundingEngine(sdpa, memory_budget_bytes=1),
        RGNetGroundingEngine(sdpa, window_scorer=eager),
    ):
        plan = engine.memory_planner.plan_for_video(200, 7, 3)
        assert not plan.keep_states
        assert plan.video_embedding == ("per_chunk" if engine.memory_budget_bytes == 1 else "shared")
        for a, b in zip(reference, engine.ground(video, text, text_mask, sentence)):
            np.testing.assert_array_equal(b.window_order, a.window_order)
            np.testing.assert_allclose(b.rankings["fused"], a.rankings["fused"], rtol=1e-5, atol=1e-5)


def test_bf16_engine_ranks_like_fp32_on_the_fixtures(parity_fixtures):
    """The bfloat16 fast mode on the parity fixtures' long-video simulations ranks like float32: the same best
    window and float32's best moment among its top three, for every query."""
    for name in ("mad_tiny", "ego4d_tiny"):
        fixture = parity_fixtures[name]
        simulation = fixture["inference_simulation"]
        model = converted_model(fixture, text_to_video_mask_batch_mixing=False)
        half = converted_model(fixture, text_to_video_mask_batch_mixing=False).to(torch.bfloat16)
        (text, text_mask), sentence = simulation["batch"]["query_feat"], simulation["batch"]["query_cls_feat"]
        args = (simulation["video_feat"], text, text_mask, sentence)
        kwargs = {"seconds_per_feature": simulation["clip_length"]}
        full = RGNetGroundingEngine(model).ground(*args, **kwargs)
        reduced = RGNetGroundingEngine(half).ground(*args, **kwargs)
        for a, b in zip(full, reduced):
            assert b.moments.dtype == a.moments.dtype and np.isfinite(b.moments).all()
            assert a.window_order[0] == b.window_order[0]
            assert set(a.window_order[:3]) & set(b.window_order[:3])
            best = a.moments[0]
            overlap = np.minimum(best[1], b.moments[:3, 1]) - np.maximum(best[0], b.moments[:3, 0])
            union = np.maximum(best[1], b.moments[:3, 1]) - np.minimum(best[0], b.moments[:3, 0])
            assert (overlap / union).max() >= 0.5, name  # fp32's best moment is among bf16's top 3 at IoU 0.5


def test_compile_falls_back_cleanly(monkeypatch, caplog):
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    video, text, text_mask, sentence = _engine_inputs(model.config, 120)
    expected = RGNetGroundingEngine(model).ground(video, text, text_mask, sentence)

    def unavailable(function, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", unavailable)
    with caplog.at_level(logging.WARNING, logger="rgnet_hf.inference_rgnet"):
        engine = RGNetGroundingEngine(model, compile=True)
    assert "torch.compile is unavailable" in caplog.text and engine._encode.compiled is None

    def fails_when_run(function, **kwargs):
        def compiled(*args, **kwargs):
            raise RuntimeError("backend failed")

        return compiled

    monkeypatch.setattr(torch, "compile", fails_when_run)
    engine = RGNetGroundingEngine(model, compile=True)
    with caplog.at_level(logging.WARNING, logger="rgnet_hf.inference_rgnet"):
        results = engine.ground(video, text, text_mask, sentence)
    assert "torch.compile failed (backend failed)" in caplog.text and engine._encode.compiled is None
    for a, b in zip(expected, results):
        np.testing.assert_allclose(b.rankings["fused"], a.rankings["fused"], rtol=0, atol=1e-6)


def test_fast_inference_encoder_traces_without_graph_breaks():
    """`compile=True` compiles the fast-inference encoder as one graph: no data-dependent branch, and the tiled
    feed-forward gives way to the compiler's own fusion (a loop over tiles would specialise every row count)."""
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(_tiny_preset("mad")).eval()
    batch = _padded_batch(model.config)
    inputs = (batch["video_features"], batch["video_mask"], batch["text_features"], batch["text_mask"])

    def encode(*args):
        return model.model.encode(*args, retrieval_only=True, fast_inference=True).retrieval_embedding

    torch._dynamo.reset()
    with torch.no_grad():
        explanation = torch._dynamo.explain(encode)(*inputs)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_reduced_precision_scoring_with_float32_rescoring_keeps_the_exact_results():
    """A bfloat16 copy scores the windows, the float32 model scores the best ones again and decodes: with every
    window re-scored the results are the float32 engine's; with a float32 copy as the scorer and only the top-k
    re-scored, too. `rescore_windows` needs a scorer and at least top_k_windows windows."""
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(_tiny_preset("mad")).eval()
    video, text, text_mask, sentence = _engine_inputs(model.config, 313)
    exact = RGNetGroundingEngine(model).ground(video, text, text_mask, sentence)
    num_windows = len(exact[0].window_order)
    top_k = model.config.top_k_windows
    engines = (
        # on a CPU the copy defaults to bfloat16 (float16 has no fast CPU kernels)
        RGNetGroundingEngine.with_reduced_precision_scoring(model, extra_windows=num_windows),
        RGNetGroundingEngine(model, window_scorer=copy.deepcopy(model), rescore_windows=top_k),
    )
    assert engines[0].window_scorer.dtype == torch.bfloat16 and model.dtype == torch.float32
    for engine in engines:
        for a, b in zip(exact, engine.ground(video, text, text_mask, sentence)):
            np.testing.assert_array_equal(b.window_order[:top_k], a.window_order[:top_k])
            np.testing.assert_allclose(
                b.window_scores[a.window_order[:top_k]], a.window_scores[a.window_order[:top_k]], rtol=1e-5, atol=1e-6
            )
            for name in ("fused", "proposal", "matching"):
                np.testing.assert_allclose(b.rankings[name], a.rankings[name], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="rescore_windows"):
        RGNetGroundingEngine(model, rescore_windows=top_k)
    with pytest.raises(ValueError, match="rescore_windows"):
        RGNetGroundingEngine(model, window_scorer=model, rescore_windows=top_k - 1)
