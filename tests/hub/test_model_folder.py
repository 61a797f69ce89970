"""Save / load, Auto classes, model folders with processor and pipeline code, remote code, offline push_to_hub."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from unittest import mock

import torch
from conftest import random_grounding_inputs, run_without_rgnet_hf, tiny_config

from rgnet_hf import RGNetForVideoGrounding, save_model_folder

# --------------------------------------------------------------------------------------------------------------------
# save / load, Auto classes, remote code, push_to_hub


MODEL_CODE = {"configuration_rgnet.py", "modeling_rgnet.py", "loss_rgnet.py", "windowing.py"}
PROCESSOR_CODE = {"feature_extraction_rgnet.py", "processing_rgnet.py", "video_text_encoders.py", "video_decoding.py"}
PIPELINE_CODE = {
    "pipeline_rgnet.py",
    "inference_rgnet.py",
    "memory_planning.py",
    "post_processing.py",
    "video_text_encoders.py",
    "video_decoding.py",
}


def _python_files(folder: Path) -> set[str]:
    return {name for name in os.listdir(folder) if name.endswith(".py")}


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    # A plain save_pretrained folder carries only what AutoModel's remote code needs.
    assert set(os.listdir(tmp_path)) == {"config.json", "model.safetensors"} | MODEL_CODE
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "rgnet"
    assert config["auto_map"]["AutoModel"] == "modeling_rgnet.RGNetForVideoGrounding"
    assert "custom_pipelines" not in config
    reloaded = RGNetForVideoGrounding.from_pretrained(tmp_path).eval()
    inputs = random_grounding_inputs(model.config, batch_size=2)
    with torch.no_grad():
        a, b = model(**inputs), reloaded(**inputs)
    # Same weights, another copy in memory: CPU kernels may round differently (alignment), so fp32 tolerances.
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.window_logits, b.window_logits, rtol=1e-5, atol=1e-6)


def test_model_folder_adds_processor_card_and_pipeline_code_on_request(tmp_path):
    from transformers import AutoProcessor

    from rgnet_hf import RGNetProcessor, save_model_folder

    model = RGNetForVideoGrounding(tiny_config(window_length=48))
    save_model_folder(model, tmp_path / "local")
    assert _python_files(tmp_path / "local") == MODEL_CODE | PROCESSOR_CODE
    card = (tmp_path / "local" / "README.md").read_text()
    assert "RGNet" in card and "video-grounding" in card
    processor = AutoProcessor.from_pretrained(tmp_path / "local")
    assert isinstance(processor, RGNetProcessor) and processor.feature_extractor.window_length == 48
    assert "custom_pipelines" not in json.loads((tmp_path / "local" / "config.json").read_text())

    save_model_folder(model, tmp_path / "remote", remote_pipeline=True)
    assert _python_files(tmp_path / "remote") == MODEL_CODE | PROCESSOR_CODE | PIPELINE_CODE
    config = json.loads((tmp_path / "remote" / "config.json").read_text())
    assert config["custom_pipelines"]["video-grounding"]["impl"] == "pipeline_rgnet.VideoGroundingPipeline"
    assert getattr(model.config, "custom_pipelines", None) is None  # the model itself is left unchanged
    assert "the pipeline needs `rgnet_hf`" in card
    assert "modelling and pipeline code is stored" in (tmp_path / "remote" / "README.md").read_text()

    # A processor already in the folder (or given) is kept; so is an existing model card.
    custom = RGNetProcessor.from_model_config(tiny_config(max_text_length=3))
    (tmp_path / "remote" / "README.md").write_text("my card")
    save_model_folder(model, tmp_path / "remote", processor=custom)
    assert AutoProcessor.from_pretrained(tmp_path / "remote").feature_extractor.max_text_length == 3
    assert (tmp_path / "remote" / "README.md").read_text() == "my card"


def test_remote_code_loads_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tiny_config()).eval()
    model.save_pretrained(tmp_path / "model")
    inputs = random_grounding_inputs(model.config, batch_size=2)
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        torch.save(model(**inputs).pred_spans, tmp_path / "expected.pt")
    script = f"""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "RGNetForVideoGrounding", type(model)
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            spans = model(**inputs).pred_spans
        torch.testing.assert_close(spans, torch.load({str(tmp_path / "expected.pt")!r}), rtol=1e-5, atol=1e-6)
        print("REMOTE-OK")
        """
    result = run_without_rgnet_hf(script, tmp_path / "hf_home")
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


def test_push_to_hub_offline(tmp_path):
    from huggingface_hub import RepoUrl

    from rgnet_hf import push_model_folder_to_hub

    remote = tmp_path / "remote"
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs.get("private")))
            (remote / repo_id).mkdir(parents=True, exist_ok=True)
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, repo_id, folder_path, commit_message=None, **kwargs):
            files = sorted(os.listdir(folder_path))
            calls.append(("upload_folder", repo_id, files, commit_message))
            for name in files:
                shutil.copyfile(Path(folder_path) / name, remote / repo_id / name)
            return "commit-info"

    model = RGNetForVideoGrounding(tiny_config())
    with mock.patch("rgnet_hf.hub.model_folder.HfApi", FakeApi):
        result = push_model_folder_to_hub(model, "org/rgnet-tiny", commit_message="add weights", private=True)
    assert result == "commit-info"
    assert calls[:2] == [("init", None), ("create_repo", "org/rgnet-tiny", True)]
    _, repo, files, message = calls[2]
    assert message == "add weights"
    assert {"README.md", "config.json", "model.safetensors", "processor_config.json"} <= set(files)
    assert {name for name in files if name.endswith(".py")} == MODEL_CODE | PROCESSOR_CODE | PIPELINE_CODE
    card = (remote / "org/rgnet-tiny/README.md").read_text()
    assert "pipeline_tag: video-grounding" in card and "0." in card  # parameter count in millions
    reloaded = RGNetForVideoGrounding.from_pretrained(remote / "org/rgnet-tiny")
    torch.testing.assert_close(reloaded.class_head.weight, model.class_head.weight)


def test_pushed_card_carries_results_licence_and_base_model(tmp_path):
    """The card's metadata, read back with huggingface_hub's parser: the results in the model-index format, the
    licence and the base model; the official licence adds what it means for sharing."""
    from huggingface_hub import ModelCard, RepoUrl

    from rgnet_hf import push_model_folder_to_hub
    from rgnet_hf.hub.model_card import OFFICIAL_WEIGHTS_LICENSE, ModelEvaluation

    remote = tmp_path / "remote"

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            (remote / repo_id).mkdir(parents=True, exist_ok=True)
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, repo_id, folder_path, **kwargs):
            shutil.copytree(folder_path, remote / repo_id, dirs_exist_ok=True)
            return "commit-info"

    metrics = {"R@1 IoU=0.3": 0.125, "R@5 IoU=0.5": 0.5, "mIoU": 0.0625, "num_queries": 16}
    evaluation = ModelEvaluation("my lectures", "prepared", "test", metrics)
    model = RGNetForVideoGrounding(tiny_config())
    with mock.patch("rgnet_hf.hub.model_folder.HfApi", FakeApi):
        push_model_folder_to_hub(
            model, "org/rgnet-lectures", evaluation=evaluation, license=OFFICIAL_WEIGHTS_LICENSE, base_model="org/base"
        )
    card = ModelCard.load(remote / "org/rgnet-lectures" / "README.md")
    assert card.data.license == OFFICIAL_WEIGHTS_LICENSE and card.data.base_model == "org/base"
    results = {result.metric_name: result for result in card.data.eval_results}
    assert set(results) == {"R@1 IoU=0.3", "R@5 IoU=0.5", "mIoU"}  # num_queries is not a metric
    assert results["R@1 IoU=0.3"].metric_value == 0.125 and results["mIoU"].metric_type == "mean_iou"
    assert {r.dataset_name for r in results.values()} == {"my lectures"}
    assert {r.dataset_split for r in results.values()} == {"test"}
    assert {r.task_type for r in results.values()} == {"video-grounding"}
    assert "| R@5 IoU=0.5 | 50.00 |" in card.text and "may not be shared" in " ".join(card.text.split())

    # Without a licence or results, the card has neither (no licence is claimed for the user's weights).
    plain = save_model_folder(model, tmp_path / "plain")
    plain_card = ModelCard.load(plain / "README.md")
    assert plain_card.data.license is None and plain_card.data.eval_results is None
    assert "may not be shared" not in plain_card.text
    # A folder that already has a card keeps its text and gets the metadata.
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "README.md").write_text("---\nlicense: mit\n---\n# My model\n\nNotes of mine.\n")
    save_model_folder(model, tmp_path / "own", evaluation=evaluation)
    own = ModelCard.load(tmp_path / "own" / "README.md")
    assert "Notes of mine." in own.text and own.data.license == "mit" and len(own.data.eval_results) == 3
