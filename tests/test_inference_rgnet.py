"""Long-video engine, processor, pipeline and CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import PARITY_NAMES, run_without_rgnet_hf, tiny_config
from parity_utils import converted_model

from rgnet_hf import RGNetForVideoGrounding, RGNetGroundingEngine, RGNetProcessor, save_model_folder
from rgnet_hf.apps.cli import main as cli_main
from rgnet_hf.evaluation.metrics import compute_grounding_metrics
from rgnet_hf.windowing import window_bounds


def _simulation_engine(fixture, **config_overrides):
    simulation = fixture["inference_simulation"]
    options = simulation["opt_used"]
    model = converted_model(fixture, **config_overrides)
    return RGNetGroundingEngine(
        model,
        top_k_windows=options["topk_window"],
        nms_threshold=options["nms_thd"],
        max_predictions_before_nms=options["max_before_nms"],
        max_predictions=options["max_after_nms"],
    )


def _ground_simulation(fixture, engine, **kwargs):
    simulation = fixture["inference_simulation"]
    (text, text_mask), sentence = simulation["batch"]["query_feat"], simulation["batch"]["query_cls_feat"]
    return engine.ground(
        simulation["video_feat"], text, text_mask, sentence, seconds_per_feature=simulation["clip_length"], **kwargs
    )


def _close_rankings(a: list[dict], b: list[dict]) -> bool:
    """Two ranked lists of moments from different batchings agree to fp32 precision (times rounded to 4 decimals)."""
    return len(a) == len(b) and all(
        x.keys() == y.keys()
        and x.get("query") == y.get("query")
        and all(x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-4 + 1e-9) for k in ("start", "end", "score"))
        for x, y in zip(a, b)
    )


def _official_ranking(simulation, key, query_id):
    for entry in simulation[key]:
        if entry.get("query_id") == query_id:
            return np.array(entry["predicted_times"], dtype=np.float64)
        if "annotation_uid" in entry and f"{entry['annotation_uid']}_{entry['query_idx']}" == query_id:
            return np.array(entry["predicted_times"], dtype=np.float64)
    raise KeyError(query_id)


@pytest.mark.parametrize("name", PARITY_NAMES)
def test_engine_reproduces_official_inference(parity_fixtures, name):
    fixture = parity_fixtures[name]
    simulation = fixture["inference_simulation"]
    results = _ground_simulation(fixture, _simulation_engine(fixture))
    query_ids = [query["query_id"] for query in simulation["queries"]]
    assert len(results) == len(query_ids)
    for query_id, result in zip(query_ids, results):
        assert result.window_order.tolist() == simulation["query_id2windowidx"][query_id]
        official_rows = np.array(
            [p["pred_relevant_windows"] for p in simulation["per_window_predictions"] if p["query_id"] == query_id]
        )
        ours = result.window_predictions[: len(official_rows)]
        finite = np.isfinite(official_rows).all(-1)
        # Rounded to 4 decimals on both sides: a last-digit flip (1e-4) is the most that fp32 noise can cause.
        np.testing.assert_allclose(ours[finite], official_rows[finite], rtol=0, atol=1e-4 + 1e-9)
        assert np.isfinite(result.window_predictions).all()
        if finite.all():
            for ranking, key in (
                ("fused", "fused_after_nms"),
                ("proposal", "proposal_after_nms"),
                ("matching", "matching_after_nms"),
            ):
                expected = _official_ranking(simulation, key, query_id)
                assert result.rankings[ranking].shape == expected.shape
                np.testing.assert_allclose(result.rankings[ranking], expected, rtol=0, atol=1e-4 + 1e-9)
        else:
            # The official matching score is NaN here (it reads the zero padding of short windows); ours reads the
            # valid frames only, so these queries are ranked soundly instead of by NaN comparisons.
            assert simulation["nan_prediction_rows_per_query"][query_id] == int((~finite).sum())
            assert all(np.isfinite(r).all() for r in result.rankings.values())


def test_engine_metrics_match_official_ego4d(parity_fixtures):
    fixture = parity_fixtures["ego4d_tiny"]
    simulation = fixture["inference_simulation"]
    results = _ground_simulation(fixture, _simulation_engine(fixture))
    references = [query["timestamps"] for query in simulation["queries"]]
    metrics = compute_grounding_metrics([r.moments for r in results], references, preset="ego4d")
    official = simulation["metrics"]
    for threshold, by_k in zip(official["thresholds"], official["recall[iou][K]"]):
        for k, value in zip(official["topK"], by_k):
            assert metrics[f"R@{k} IoU={threshold}"] == pytest.approx(value / 100 if value > 1 else value, abs=1e-9)
    assert metrics["mIoU"] == pytest.approx(official["mIoU"] / 100 if official["mIoU"] > 1 else official["mIoU"])


def test_top_k_decoding_equals_decoding_every_window(parity_fixtures):
    fixture = parity_fixtures["mad_tiny"]
    engine = _simulation_engine(fixture, text_to_video_mask_batch_mixing=False)
    shortcut = _ground_simulation(fixture, engine)
    everything = _ground_simulation(fixture, engine, decode_all_windows=True)
    for a, b in zip(shortcut, everything):
        assert b.window_predictions.shape[0] == 17 and a.window_predictions.shape[0] == 10
        for ranking in ("fused", "proposal", "matching"):
            # Other batch shapes in the decoder: fp32 rounding may move a value rounded to 4 decimals by one unit.
            np.testing.assert_allclose(a.rankings[ranking], b.rankings[ranking], rtol=0, atol=1e-4 + 1e-9)


def test_separate_window_scorer(parity_fixtures):
    """A two-stage pipeline: with the same model as scorer the results are unchanged; another scorer changes the
    window ranking only through its own window logits."""
    fixture = parity_fixtures["mad_tiny"]
    engine = _simulation_engine(fixture, text_to_video_mask_batch_mixing=False)
    same = RGNetGroundingEngine(engine.model, top_k_windows=10, max_predictions=100, window_scorer=engine.model)
    reference = _ground_simulation(fixture, engine)
    for a, b in zip(reference, _ground_simulation(fixture, same)):
        np.testing.assert_array_equal(a.window_order, b.window_order)
        np.testing.assert_allclose(a.rankings["fused"], b.rankings["fused"], rtol=0, atol=1e-4 + 1e-9)
    torch.manual_seed(3)
    other = RGNetForVideoGrounding(engine.model.config).eval()
    two_stage = RGNetGroundingEngine(engine.model, top_k_windows=10, max_predictions=100, window_scorer=other)
    results = _ground_simulation(fixture, two_stage)
    simulation = fixture["inference_simulation"]
    (text, text_mask) = simulation["batch"]["query_feat"]
    scores_only = RGNetGroundingEngine(other, top_k_windows=10, max_predictions=100)
    expected = scores_only.ground(simulation["video_feat"], text, text_mask, simulation["batch"]["query_cls_feat"])
    for result, reference_result in zip(results, expected):
        np.testing.assert_array_equal(result.window_order, reference_result.window_order)


def test_many_queries_batch_like_one_at_a_time(parity_fixtures):
    fixture = parity_fixtures["ego4d_tiny"]
    engine = _simulation_engine(fixture, text_to_video_mask_batch_mixing=False)
    simulation = fixture["inference_simulation"]
    (text, text_mask), sentence = simulation["batch"]["query_feat"], simulation["batch"]["query_cls_feat"]
    together = engine.ground(simulation["video_feat"], text, text_mask, sentence)
    grouped = engine.ground(simulation["video_feat"], text, text_mask, sentence, max_queries_per_group=3)
    small_chunks = RGNetGroundingEngine(
        engine.model, memory_budget_bytes=1, top_k_windows=engine.top_k_windows, max_predictions=engine.max_predictions
    )
    chunked = small_chunks.ground(simulation["video_feat"], text, text_mask, sentence)
    for query in range(len(text)):
        alone = engine.ground(simulation["video_feat"], text[query], text_mask[query], sentence[query])[0]
        for other in (together[query], grouped[query], chunked[query]):
            np.testing.assert_allclose(other.rankings["fused"], alone.rankings["fused"], rtol=0, atol=1e-4 + 1e-9)
            assert other.window_order.tolist() == alone.window_order.tolist()


def test_two_hour_video_stays_within_memory_bound(tmp_path):
    """36,000 frames (2 h at 5 fps), MAD preset, random weights, CPU, in a fresh process: peak RSS stays under 3 GiB
    with a 512 MiB activation budget (model 74 MB, video 74 MB)."""
    script = textwrap.dedent(
        """
        import resource, time, torch
        from rgnet_hf import RGNetConfig, RGNetForVideoGrounding, RGNetGroundingEngine
        torch.manual_seed(0)
        model = RGNetForVideoGrounding(RGNetConfig.from_preset("mad")).eval()
        video = torch.randn(36000, 512)
        text = torch.nn.functional.normalize(torch.randn(1, 10, 512), dim=-1)
        sentence = torch.nn.functional.normalize(torch.randn(1, 512), dim=-1)
        engine = RGNetGroundingEngine(model, memory_budget_bytes=512 * 2**20)
        start = time.perf_counter()
        result = engine.ground(video, text, sentence_features=sentence)[0]
        assert len(result.window_order) == 81 and len(result.moments) > 0
        assert result.moments.min() > -200 and result.moments.max() < 7400
        print("PEAK_RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - start)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert "PEAK_RSS_MB" in result.stdout, result.stderr[-3000:]
    peak_mb = float(result.stdout.split("PEAK_RSS_MB")[1].split()[0])
    assert peak_mb < 3 * 1024, f"peak RSS {peak_mb:.0f} MB"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"video_features": np.zeros((100, 10), np.float32)}, "video_features. have 10 dimensions"),
        ({"video_features": np.full((100, 24), np.nan, np.float32)}, "NaN"),
        ({"video_features": np.zeros((0, 24), np.float32)}, "empty|0 frames"),
        ({"text_features": np.zeros((0, 16), np.float32)}, "empty"),
        ({"text_features": []}, "empty list"),
    ],
)
def test_pipeline_rejects_bad_inputs(tmp_path, kwargs, message):
    from transformers import pipeline

    RGNetForVideoGrounding(tiny_config()).save_pretrained(tmp_path)
    pipe = pipeline("video-grounding", model=str(tmp_path))
    inputs = {
        "video_features": np.random.rand(100, 24).astype(np.float32),
        "text_features": np.random.rand(4, 16).astype(np.float32),
    }
    inputs.update(kwargs)
    with pytest.raises(ValueError, match=message):
        pipe(inputs)
    with pytest.raises(ValueError, match="top_k"):
        pipe({"video_features": np.random.rand(100, 24), "text_features": np.random.rand(4, 16)}, top_k=0)


def test_pipeline_outputs_and_batching(tmp_path):
    from transformers import pipeline

    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    pipe = pipeline("video-grounding", model=str(tmp_path))
    generator = np.random.default_rng(0)
    video = generator.standard_normal((300, 24)).astype(np.float32)
    queries = [generator.standard_normal((n, 16)).astype(np.float32) for n in (5, 3, 7)]
    sentences = generator.standard_normal((3, 24)).astype(np.float32)
    one = pipe(
        {
            "video_features": video,
            "text_features": queries[0],
            "sentence_features": sentences[0],
            "seconds_per_feature": 0.2,
        },
        top_k=4,
    )
    assert len(one) == 4 and all(set(m) == {"start", "end", "score", "query"} and m["query"] is None for m in one)
    assert [m["score"] for m in one] == sorted((m["score"] for m in one), reverse=True)
    assert all(-60 <= m["start"] <= m["end"] <= 120 for m in one)
    many = pipe({"video_features": video, "text_features": queries, "sentence_features": sentences}, top_k=4)
    assert len(many) == 3 and _close_rankings(many[0], one)
    listed = pipe(
        [{"video_features": video, "text_features": q, "sentence_features": s} for q, s in zip(queries, sentences)],
        top_k=4,
        batch_size=2,
    )
    assert len(listed) == len(many) and all(_close_rankings(x, y) for x, y in zip(listed, many))
    # Seconds follow the feature rate.
    slower = pipe(
        {
            "video_features": video,
            "text_features": queries[0],
            "sentence_features": sentences[0],
            "seconds_per_feature": 0.4,
        },
        top_k=4,
    )
    assert slower[0]["start"] == pytest.approx(2 * one[0]["start"], abs=2e-3)


def test_pipeline_builds_the_default_processor_for_a_folder_without_one(tmp_path):
    from transformers import pipeline

    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config(window_length=32)).eval()
    model.save_pretrained(tmp_path / "bare")
    save_model_folder(model, tmp_path / "full")
    assert not (tmp_path / "bare" / "processor_config.json").exists()
    bare = pipeline("video-grounding", model=str(tmp_path / "bare"))
    assert isinstance(bare.processor, RGNetProcessor) and bare.feature_extractor.window_length == 32
    video = np.random.default_rng(0).standard_normal((150, 24)).astype(np.float32)
    text = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    inputs = {"video_features": video, "text_features": text}
    assert bare(inputs, top_k=3) == pipeline("video-grounding", model=str(tmp_path / "full"))(inputs, top_k=3)
    # A processor file that is there but broken is reported, not replaced by the default.
    (tmp_path / "full" / "processor_config.json").write_text("{not json")
    with pytest.raises((ValueError, OSError), match="processor"):
        pipeline("video-grounding", model=str(tmp_path / "full"))


def test_remote_code_pipeline_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    save_model_folder(model, tmp_path / "model", remote_pipeline=True)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["custom_pipelines"]["video-grounding"]["impl"] == "pipeline_rgnet.VideoGroundingPipeline"
    video = np.random.default_rng(0).standard_normal((200, 24)).astype(np.float32)
    text = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    np.save(tmp_path / "video.npy", video)
    np.save(tmp_path / "text.npy", text)
    from transformers import pipeline

    expected = pipeline("video-grounding", model=str(tmp_path / "model"), trust_remote_code=True)(
        {"video_features": video, "text_features": text}, top_k=3
    )
    script = f"""
        import json
        import numpy as np
        from transformers import pipeline
        pipe = pipeline(model={str(tmp_path / "model")!r}, trust_remote_code=True)
        assert "transformers_modules" in type(pipe).__module__
        out = pipe({{"video_features": np.load({str(tmp_path / "video.npy")!r}),
                     "text_features": np.load({str(tmp_path / "text.npy")!r})}}, top_k=3)
        print("RESULT" + json.dumps(out))
        """
    result = run_without_rgnet_hf(script, tmp_path / "hf_home")
    assert "RESULT" in result.stdout, result.stderr[-3000:]
    assert json.loads(result.stdout.split("RESULT", 1)[1]) == expected


def test_processor_round_trip_and_post_processing(parity_fixtures, tmp_path):
    from transformers import AutoProcessor

    fixture = parity_fixtures["ego4d_tiny"]
    model = converted_model(fixture)
    processor = RGNetProcessor.from_model_config(model.config)
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, RGNetProcessor)
    assert reloaded.feature_extractor.window_length == 40 and reloaded.feature_extractor.max_text_length == 7

    simulation = fixture["inference_simulation"]
    windows = reloaded.feature_extractor.window(simulation["video_feat"])
    assert torch.equal(windows["window_bounds"], window_bounds(310, 40))
    torch.testing.assert_close(windows["video_features"], simulation["batch"]["video_motion_feat"][0])
    torch.testing.assert_close(windows["video_mask"], simulation["batch"]["video_motion_feat"][1])

    text, text_mask = simulation["batch"]["query_feat"]
    encoded = reloaded(text_features=[t[: int(m.sum())] for t, m in zip(text, text_mask)], return_tensors="pt")
    torch.testing.assert_close(encoded["text_mask"], text_mask)
    with torch.no_grad():
        output = model(
            video_features=windows["video_features"],
            video_mask=windows["video_mask"],
            text_features=encoded["text_features"][:1].expand(17, -1, -1),
            text_mask=encoded["text_mask"][:1].expand(17, -1),
        )
    bounds = windows["window_bounds"]
    moments = reloaded.post_process_video_grounding(output, bounds[:, 0], bounds[:, 1] - bounds[:, 0], top_k=2)
    assert len(moments) == 17 and all(len(m) == 2 for m in moments)
    raw = simulation["raw_model_outputs"]
    expected_score = raw["pred_logits"][:17].softmax(-1)[..., 0] * torch.sigmoid(raw["prob_soft"][:17])
    assert moments[5][0]["score"] == pytest.approx(float(expected_score[5].max()), rel=1e-5)
    with pytest.raises(ValueError, match="no feature encoder for raw inputs"):
        reloaded(text="a person opens the door")
    with pytest.raises(ValueError, match="dimensions"):
        reloaded(video_features=np.zeros((10, 5)))


def test_cli_ground_table_and_json(tmp_path, capsys):
    import h5py

    torch.manual_seed(0)
    RGNetForVideoGrounding(tiny_config()).save_pretrained(tmp_path / "model")
    generator = np.random.default_rng(0)
    with h5py.File(tmp_path / "video.h5", "w") as handle:
        handle["movie_1"] = generator.standard_normal((250, 24)).astype(np.float32)
        handle["movie_2"] = generator.standard_normal((50, 24)).astype(np.float32)
    np.save(tmp_path / "text.npy", generator.standard_normal((2, 6, 16)).astype(np.float32))
    base = [
        "ground",
        "--model",
        str(tmp_path / "model"),
        "--video",
        str(tmp_path / "video.h5"),
        "--video-key",
        "movie_1",
        "--text",
        str(tmp_path / "text.npy"),
        "--top-k",
        "3",
    ]
    assert cli_main(base) == 0
    table = capsys.readouterr().out
    assert "query 0" in table and "query 1" in table and "start (s)" in table
    assert cli_main(base + ["--json"]) == 0
    rankings = json.loads(capsys.readouterr().out)
    assert [entry["index"] for entry in rankings] == [0, 1] and len(rankings[0]["moments"]) == 3
    assert cli_main(base[:5] + ["--video-key", "missing"] + base[7:]) == 2
    assert "no entry 'missing'" in capsys.readouterr().err
    no_key = base[:5] + base[7:]
    assert cli_main(no_key) == 2
    assert "holds 2 entries" in capsys.readouterr().err


def test_engine_follows_the_model_dtype():
    """A bfloat16 model runs the whole engine in bfloat16 and finds about the same moments as in float32."""
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    half = RGNetForVideoGrounding(tiny_config()).eval()
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    video, text = torch.randn(300, 24, generator=generator), torch.randn(2, 5, 16, generator=generator)
    sentence = torch.randn(2, 24, generator=generator)
    full_results = RGNetGroundingEngine(model).ground(video, text, sentence_features=sentence)
    half_results = RGNetGroundingEngine(half).ground(video, text, sentence_features=sentence)
    for full, reduced in zip(full_results, half_results):
        assert np.isfinite(reduced.moments).all()
        assert full.window_order[:3].tolist() == reduced.window_order[:3].tolist()
        assert np.abs(full.moments[0] - reduced.moments[:3]).min() < 1.0  # the best moment is among bf16's top 3
