"""The ONNX Runtime backends of the frame encoder (float32 and int8) and how feature caches keep backends apart."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from raw_video_utils import build_tiny_clip, build_tiny_rgnet, build_tiny_siglip, make_test_video

from rgnet_hf import RGNetConfig
from rgnet_hf.apps.cli import main as cli_main
from rgnet_hf.apps.commands.common import ENCODER_BACKEND_CHOICES
from rgnet_hf.data.feature_cache import check_cache_entry_fits, extract_video_features
from rgnet_hf.video_text_encoders import (
    ENCODER_BACKENDS,
    FeatureEncoderError,
    _OnnxImageEncoder,
    feature_encoder_for_model,
    load_feature_encoder,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoder_backends")
    clip = build_tiny_clip(root / "clip")
    return {
        "root": root,
        "clip": clip,
        "siglip": build_tiny_siglip(root / "siglip"),
        "rgnet": build_tiny_rgnet(root / "rgnet", clip),
        "video": make_test_video(root / "four_seconds.mp4"),
        "cache": root / "onnx_cache",
    }


def _images(count: int = 5) -> list[np.ndarray]:
    generator = np.random.default_rng(0)
    return [generator.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(count)]


def _cosines(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(left, right, dim=-1)


def test_the_cli_choices_are_the_encoder_backends():
    assert ENCODER_BACKEND_CHOICES == ENCODER_BACKENDS


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_onnx_float32_matches_pytorch_and_is_exported_once(assets, family, monkeypatch):
    reference = load_feature_encoder(assets[family], batch_size=4)
    encoder = load_feature_encoder(assets[family], batch_size=4, backend="onnx", onnx_cache_dir=assets["cache"])
    assert encoder.backend == "onnx" and encoder._onnx.path.endswith("image_encoder.onnx")
    images = _images()
    expected = reference.encode_images(images)
    features = encoder.encode_images(images)
    assert features.dtype == torch.float32 and features.shape == expected.shape
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-4)
    # Another batch size than the exported example's: the batch axis is dynamic.
    torch.testing.assert_close(encoder.encode_images(images[:1]), expected[:1], rtol=0, atol=1e-4)

    # A second load of the same encoder reuses the cached graph.
    def refuse(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(_OnnxImageEncoder, "_export", refuse)
    again = load_feature_encoder(assets[family], backend="onnx", onnx_cache_dir=assets["cache"])
    assert again._onnx.path == encoder._onnx.path


def test_the_cache_key_follows_the_weights_not_the_folder(assets, tmp_path):
    copy = build_tiny_clip(tmp_path / "same_clip")  # same seed: the same weights in another folder
    other = build_tiny_clip(tmp_path / "other_clip", seed=1)
    paths = [
        load_feature_encoder(folder, backend="onnx", onnx_cache_dir=assets["cache"])._onnx.path
        for folder in (assets["clip"], copy, other)
    ]
    assert paths[0] == paths[1] and paths[0] != paths[2]


def test_onnx_int8_quantizes_the_matrix_products_and_stays_close(assets):
    reference = load_feature_encoder(assets["clip"])
    encoder = load_feature_encoder(assets["clip"], backend="onnx-int8", onnx_cache_dir=assets["cache"])
    assert encoder._onnx.path.endswith("image_encoder.int8.onnx")
    operators = {node.op_type for node in onnx.load(encoder._onnx.path).graph.node}
    assert "MatMulInteger" in operators or "DynamicQuantizeMatMul" in operators
    images = _images(8)
    expected = reference.encode_images(images)
    features = encoder.encode_images(images)
    assert features.shape == expected.shape and torch.isfinite(features).all()
    assert not torch.allclose(features, expected, atol=1e-6)  # int8 rounding: not the float32 graph
    assert _cosines(features, expected).min() > 0.95


def test_bad_backend_options_are_refused(assets, tmp_path):
    with pytest.raises(FeatureEncoderError, match="unknown encoder backend 'tensorrt'"):
        load_feature_encoder(assets["clip"], backend="tensorrt")
    with pytest.raises(FeatureEncoderError, match="float32"):
        load_feature_encoder(assets["clip"], backend="onnx", dtype=torch.bfloat16, onnx_cache_dir=tmp_path)


def test_a_model_folder_names_its_backend(assets, tmp_path):
    folder = build_tiny_rgnet(tmp_path / "rgnet_int8", assets["clip"])
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["feature_encoder_backend"] = "onnx-int8"
    config_file.write_text(json.dumps(config))
    config = RGNetConfig.from_pretrained(folder)
    assert feature_encoder_for_model(config, onnx_cache_dir=assets["cache"]).backend == "onnx-int8"
    # The argument wins over the folder.
    assert feature_encoder_for_model(config, backend="pytorch").backend == "pytorch"


def test_feature_caches_record_the_backend_and_refuse_to_mix_them(assets, tmp_path):
    output = tmp_path / "features.h5"
    float32 = load_feature_encoder(assets["clip"])
    int8 = load_feature_encoder(assets["clip"], backend="onnx-int8", onnx_cache_dir=assets["cache"])
    extract_video_features(float32, [assets["video"]], output, 0.5, progress=False)
    with h5py.File(output, "r") as handle:
        assert handle.attrs["encoder_backend"] == "pytorch"
        assert handle["four_seconds"].attrs["encoder_backend"] == "pytorch"
    other = assets["root"] / "other.mp4"
    if not other.exists():
        make_test_video(other, seconds_per_color=0.5)
    with pytest.raises(ValueError, match="'pytorch' encoder backend, not 'onnx-int8'"):
        extract_video_features(int8, [assets["video"], other], output, 0.5, progress=False)
    config = RGNetConfig.from_pretrained(assets["rgnet"])
    check_cache_entry_fits(output, "four_seconds", config, backend="pytorch")
    with pytest.raises(ValueError, match="--encoder-backend pytorch"):
        check_cache_entry_fits(output, "four_seconds", config, backend="onnx-int8")
    # A cache written before backends were recorded counts as PyTorch's.
    with h5py.File(output, "a") as handle:
        del handle.attrs["encoder_backend"]
        del handle["four_seconds"].attrs["encoder_backend"]
    check_cache_entry_fits(output, "four_seconds", config, backend="pytorch")
    with pytest.raises(ValueError, match="encoder backend"):
        extract_video_features(int8, [other], output, 0.5, progress=False)


def test_extract_and_ground_commands_take_the_backend(assets, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RGNET_HF_ONNX_CACHE", str(assets["cache"]))
    output = tmp_path / "int8.h5"
    video = str(assets["video"])
    extract = ["extract", "--video", video, "--output", str(output), "--no-progress", "--model", str(assets["rgnet"])]
    assert cli_main(extract + ["--encoder-backend", "onnx-int8"]) == 0
    with h5py.File(output, "r") as handle:
        assert handle.attrs["encoder_backend"] == "onnx-int8"
        int8_features = handle["four_seconds"][()]
    float32 = load_feature_encoder(assets["clip"]).encode_video(assets["video"], 0.5, progress=False).features
    assert int8_features.shape == float32.shape
    assert _cosines(torch.from_numpy(int8_features), torch.from_numpy(float32)).min() > 0.95
    capsys.readouterr()
    # Completing it with the default backend is refused, and so is grounding it as PyTorch features.
    assert cli_main(extract) == 2
    assert "'onnx-int8' encoder backend" in capsys.readouterr().err
    ground = ["ground", "--model", str(assets["rgnet"]), "--features", str(output), "--video", video, "--json"]
    assert cli_main(ground + ["--query", "a red door"]) == 2
    assert "--encoder-backend onnx-int8" in capsys.readouterr().err
    assert cli_main(ground + ["--query", "a red door", "--encoder-backend", "onnx-int8"]) == 0
    moments = json.loads(capsys.readouterr().out)[0]["moments"]
    assert moments and all(0 <= moment["start"] < moment["end"] for moment in moments)
    # A video grounded directly through the int8 encoder.
    direct = ["ground", "--model", str(assets["rgnet"]), "--video", video, "--query", "a red door", "--json"]
    assert cli_main(direct + ["--encoder-backend", "onnx-int8", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["moments"]
