"""`import rgnet_hf` is lazy, and the Auto-class and pipeline registrations still hold when transformers uses them.

Each check runs in a fresh interpreter: what a process imported first decides what the registrations see.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import tiny_config

from rgnet_hf import RGNetForVideoGrounding, save_model_folder


def _run(script: str, tmp_path) -> str:
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def model_folder(tmp_path):
    torch.manual_seed(0)
    # With the processor's files, so that AutoProcessor has something to load.
    save_model_folder(RGNetForVideoGrounding(tiny_config()).eval(), tmp_path / "model")
    return tmp_path / "model"


def test_import_is_lazy_and_names_resolve(tmp_path):
    out = _run(
        """
        import sys
        import rgnet_hf
        heavy = [name for name in ("torch", "transformers") if name in sys.modules]
        assert not heavy, heavy
        assert set(rgnet_hf.__all__) <= set(dir(rgnet_hf)), set(rgnet_hf.__all__) - set(dir(rgnet_hf))
        assert "RGNetConfig" not in vars(rgnet_hf)  # not imported until asked for
        from rgnet_hf import WindowGrid
        assert WindowGrid.__module__ == "rgnet_hf.windowing"
        for name in rgnet_hf.__all__:
            getattr(rgnet_hf, name)
        try:
            rgnet_hf.NoSuchName
        except AttributeError as error:
            assert "NoSuchName" in str(error)
        else:
            raise AssertionError("an unknown name resolved")
        print("LAZY-OK")
        """,
        tmp_path,
    )
    assert "LAZY-OK" in out


def test_pipeline_after_only_import_rgnet_hf(tmp_path, model_folder):
    out = _run(
        f"""
        import numpy as np
        import rgnet_hf
        import transformers
        pipe = transformers.pipeline("video-grounding", model={str(model_folder)!r})
        assert type(pipe).__name__ == "VideoGroundingPipeline", type(pipe)
        rng = np.random.default_rng(0)
        moments = pipe({{"video_features": rng.random((100, 24), np.float32),
                        "text_features": rng.random((4, 16), np.float32)}}, top_k=2)
        assert len(moments) == 2, moments
        config = transformers.AutoConfig.from_pretrained({str(model_folder)!r})
        assert type(config) is rgnet_hf.RGNetConfig, type(config)
        print("PIPELINE-OK")
        """,
        tmp_path,
    )
    assert "PIPELINE-OK" in out


def test_auto_classes_after_a_transformers_model_was_imported(tmp_path, model_folder):
    # CLIP's modelling code imports `modeling_layers`, which imports AutoModel half-way through: the registration
    # must wait for that import to finish instead of importing `modeling_layers` again through modeling_rgnet.
    out = _run(
        f"""
        import rgnet_hf
        from transformers import CLIPModel  # noqa: F401
        from transformers import AutoConfig, AutoModel, AutoProcessor
        folder = {str(model_folder)!r}
        assert type(AutoConfig.from_pretrained(folder)).__name__ == "RGNetConfig"
        model = AutoModel.from_pretrained(folder)
        assert type(model) is rgnet_hf.RGNetForVideoGrounding, type(model)
        assert type(AutoProcessor.from_pretrained(folder)) is rgnet_hf.RGNetProcessor
        print("AUTO-OK")
        """,
        tmp_path,
    )
    assert "AUTO-OK" in out


def test_registrations_when_transformers_came_first(tmp_path, model_folder):
    out = _run(
        f"""
        from transformers import AutoModel, pipeline
        import rgnet_hf
        assert not rgnet_hf._PENDING, rgnet_hf._PENDING
        assert type(AutoModel.from_pretrained({str(model_folder)!r})) is rgnet_hf.RGNetForVideoGrounding
        assert type(pipeline("video-grounding", model={str(model_folder)!r})).__name__ == "VideoGroundingPipeline"
        print("FIRST-OK")
        """,
        tmp_path,
    )
    assert "FIRST-OK" in out
