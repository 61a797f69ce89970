"""Training on a prepared folder: sizes, rate and encoder from its manifest; `init_from` models that do not fit are
refused; examples/evaluate.py refuses a model of another rate."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from raw_video_utils import PALETTE, SENTENCES, build_tiny_clip, build_tiny_rgnet, make_test_video

from rgnet_hf.data.prepared import PreparedDatasetError, prepare_dataset
from rgnet_hf.video_text_encoders import load_feature_encoder

ROOT = Path(__file__).resolve().parents[2]
SPF = 0.5
# Layer sizes only: the feature sizes come from the manifest.
TINY_LAYERS = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_decoder_layers=2)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_prepared")
    clip = build_tiny_clip(root / "clip")
    videos = root / "videos"
    videos.mkdir()
    rows = []
    for index in range(8):
        make_test_video(videos / f"clip{index}.mp4", PALETTE[index % 4 : index % 4 + 4] * 2, fps=4)
        rows += [
            {"video": f"clip{index}", "sentence": SENTENCES[(index + k) % 8], "start": 2.0 * k, "end": 2.0 * k + 2}
            for k in range(3)
        ]
    annotations = root / "rows.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows))
    encoder = load_feature_encoder(clip)
    for rate, name in ((SPF, "data"), (0.25, "data_fast")):
        prepare_dataset(annotations, videos, root / name, encoder, rate, progress=False, log=lambda line: None)
    return {"root": root, "clip": clip, "data": root / "data", "data_fast": root / "data_fast", "encoder": encoder}


def _recipe(prepared, output_dir, **overrides) -> dict:
    recipe = dict(
        output_dir=str(output_dir),
        preset="mad",
        model=dict(TINY_LAYERS, window_length=8, max_text_length=8, top_k_windows=3),
        data={"format": "prepared", "path": str(prepared["data"])},
        eval_split="validation",
        num_epochs=1,
        max_steps=2,
        batch_size=2,
        num_workers=0,
        log_with=None,
        seed=0,
    )
    recipe.update(overrides)
    return recipe


def test_training_takes_sizes_rate_and_encoder_from_the_manifest(prepared, tmp_path):
    from rgnet_hf import RGNetForVideoGrounding
    from rgnet_hf.training import TrainingConfig, train

    summary = train(TrainingConfig.from_dict(_recipe(prepared, tmp_path / "run")))
    assert summary["global_step"] == 2
    config = RGNetForVideoGrounding.from_pretrained(tmp_path / "run" / "final").config
    encoder = prepared["encoder"]
    assert config.seconds_per_feature == SPF and config.feature_encoder == encoder.name
    assert (config.video_feature_size, config.text_feature_size, config.sentence_feature_size) == (
        encoder.video_feature_size,
        encoder.text_feature_size,
        encoder.sentence_feature_size,
    )

    # The model card names the features it was trained on, not the MAD release's.
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    assert f"on `{encoder.name}` features every 0.5 s" in card and "CLIP B/32" not in card

    # examples/evaluate.py reads the same folder, and refuses it for a model of another rate.
    spec = importlib.util.spec_from_file_location("rgnet_examples_evaluate", ROOT / "examples" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(prepared, tmp_path / "run")))
    output = tmp_path / "metrics.json"
    arguments = ["--model", str(tmp_path / "run" / "final"), "--config", str(recipe), "--output", str(output)]
    assert module.main(arguments) == 0
    assert "R@1 IoU=0.3" in json.loads(output.read_text())
    fast = {"format": "prepared", "path": str(prepared["data_fast"])}
    recipe.write_text(yaml.safe_dump(_recipe(prepared, tmp_path / "run", data=fast)))
    with pytest.raises(PreparedDatasetError, match=r"seconds_per_feature: model 0.5, data 0.25"):
        module.main(arguments)


def test_init_from_must_fit_the_prepared_data(prepared, tmp_path):
    from huggingface_hub import ModelCard

    from rgnet_hf.training import TrainingConfig, train

    fitting = build_tiny_rgnet(tmp_path / "fits", prepared["clip"], **TINY_LAYERS)  # 0.5 s per feature, same encoder
    # Weights under the official checkpoints' licence: the fine-tuned folder inherits it and its card says so.
    (fitting / "README.md").write_text("---\nlicense: cc-by-nc-nd-4.0\n---\n# Converted official weights\n")
    recipe = _recipe(prepared, tmp_path / "fine_tune", init_from=str(fitting), model={})
    summary = train(TrainingConfig.from_dict(recipe))
    assert summary["global_step"] == 2
    tuned = ModelCard.load(tmp_path / "fine_tune" / "final" / "README.md")
    assert tuned.data.license == "cc-by-nc-nd-4.0" and "may not be shared" in " ".join(tuned.text.split())
    # The card carries the run's last evaluation in the model-index format.
    results = {result.metric_name: result.metric_value for result in tuned.data.eval_results}
    assert results["R@1 IoU=0.3"] == pytest.approx(summary["last_metrics"]["R@1 IoU=0.3"], abs=1e-6)
    assert {result.dataset_split for result in tuned.data.eval_results} == {"validation"}

    other_rate = build_tiny_rgnet(tmp_path / "slow", prepared["clip"], seconds_per_feature=0.2)
    recipe = _recipe(prepared, tmp_path / "refused", init_from=str(other_rate), model={})
    with pytest.raises(PreparedDatasetError, match=r"seconds_per_feature: model 0.2, data 0.5"):
        train(TrainingConfig.from_dict(recipe))
    no_encoder = build_tiny_rgnet(tmp_path / "no_encoder", prepared["clip"], feature_encoder=None)
    recipe = _recipe(prepared, tmp_path / "refused2", init_from=str(no_encoder), model={})
    with pytest.raises(PreparedDatasetError, match=r"feature_encoder: model None"):
        train(TrainingConfig.from_dict(recipe))


def test_a_recipe_that_contradicts_the_manifest_is_refused(prepared, tmp_path):
    from rgnet_hf.training import TrainingConfig, train

    recipe = _recipe(prepared, tmp_path / "run")
    recipe["model"]["video_feature_size"] = 512
    with pytest.raises(ValueError, match=r"model.video_feature_size 512 differs from the prepared data's 24"):
        train(TrainingConfig.from_dict(recipe))


def test_a_new_model_takes_its_window_grid_from_the_data(prepared, tmp_path):
    from rgnet_hf import RGNetForVideoGrounding
    from rgnet_hf.training import TrainingConfig, train

    # 8-second videos, 2-second moments: max(2 x 2, 8 x 2, 8 / 64) = 16 s, capped at the median video's 8 s,
    # which is 16 features at 0.5 s per feature, stride 8.
    layers = dict(TINY_LAYERS, max_text_length=8, top_k_windows=3)
    train(TrainingConfig.from_dict(_recipe(prepared, tmp_path / "rule", model=layers)))
    config = RGNetForVideoGrounding.from_pretrained(tmp_path / "rule" / "final").config
    assert (config.window_length, config.window_stride) == (16, 8)

    # A stride of the recipe's own is kept; one that does not fit the chosen window is refused.
    with pytest.raises(ValueError, match=r"window_stride 20 is not smaller than the window chosen from the data"):
        train(TrainingConfig.from_dict(_recipe(prepared, tmp_path / "bad", model=dict(layers, window_stride=20))))
