"""Convert a checkpoint of the official RGNet implementation into a `save_pretrained` folder.

    python -m rgnet_hf.hub.convert_original_checkpoint --checkpoint model_best.ckpt --output DIR \
        [--preset mad|ego4d|ego4d_pretrain] [--force]

An existing, non-empty output folder is refused unless `--force` is given; the model is written to a temporary folder
next to it and renamed into place, so an interrupted conversion never leaves a half-written or missing folder.

The official checkpoint is a dict `{"model": state_dict, "opt": argparse.Namespace, ...}` (keys possibly prefixed with
`module.`). The configuration is derived from the saved options when present, otherwise from `--preset`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..configuration_rgnet import RGNetConfig

# Official tensors that no computation reads (a saliency projection and text position embeddings the forward pass
# never uses; docs/architecture.md, quirk 6).
DEAD_KEY_PATTERNS = (r"^saliency_proj\.(weight|bias)$", r"^txt_position_embed\.")

# The official options that must hold for the released architecture; anything else is a different model.
_REQUIRED_OPTIONS = {
    "qddetr": True,
    "dabdetr": True,
    "gumbel": True,
    "gumbel_2": True,
    "gumbel_3": True,
    "gumbel_single_proj": True,
    "decoder_gating": False,
    "multiscale": False,
    "pre_norm": False,
    "use_txt_pos": False,
    "adapter_module": "none",
    "span_loss_type": "l1",
    "position_embedding": "sine",
    "input_fps_reduction": 1,
}

_STATIC_RENAMES = {
    "global_rep_token": "model.retrieval_token",
    "global_rep_pos": "model.retrieval_position",
    "query_embed.weight": "model.query_anchor_logits",
    "transformer.prop_instance.weight": "model.frame_sampler.logit_projection.weight",
    "transformer.prop_instance.bias": "model.frame_sampler.logit_projection.bias",
    "transformer.decoder.norm.weight": "model.decoder.layer_norm.weight",
    "transformer.decoder.norm.bias": "model.decoder.layer_norm.bias",
    "class_embed.weight": "class_head.weight",
    "class_embed.bias": "class_head.bias",
    "saliency_proj1.weight": "saliency_frame_projection.weight",
    "saliency_proj1.bias": "saliency_frame_projection.bias",
    "saliency_proj2.weight": "saliency_text_projection.weight",
    "saliency_proj2.bias": "saliency_text_projection.bias",
    "saliency_proj3.weight": "window_retrieval_head.weight",
    "saliency_proj3.bias": "window_retrieval_head.bias",
}


class CheckpointConversionError(ValueError):
    """The official checkpoint does not fit the RGNet architecture."""


def _options_dict(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if isinstance(options, Mapping):
        return dict(options)
    return dict(vars(options))


# The CLIP models whose image embeddings MAD releases, by embedding size.
MAD_FEATURE_ENCODERS = {512: "openai/clip-vit-base-patch32", 768: "openai/clip-vit-large-patch14"}


def config_from_official_options(options: Mapping[str, Any] | Any, **overrides) -> RGNetConfig:
    """Build an [`RGNetConfig`] from the official option namespace (or dict) saved in a checkpoint."""
    opt = _options_dict(options)
    wrong = {k: (opt[k], v) for k, v in _REQUIRED_OPTIONS.items() if k in opt and opt[k] != v}
    if wrong:
        details = ", ".join(f"{k}={got!r} (need {need!r})" for k, (got, need) in wrong.items())
        raise CheckpointConversionError(f"The checkpoint's options describe another architecture: {details}")
    dataset = opt.get("dset_name", "mad")
    values = {
        "video_feature_size": opt["v_motion_feat_dim"],
        "text_feature_size": opt["t_feat_dim"],
        "sentence_feature_size": opt.get("v_appear_feat_dim", opt["v_motion_feat_dim"]),
        "hidden_size": opt["hidden_dim"],
        "num_attention_heads": opt["nheads"],
        "intermediate_size": opt["dim_feedforward"],
        "dropout": opt["dropout"],
        "input_dropout": opt["input_dropout"],
        "num_input_projection_layers": opt.get("n_input_proj", 2),
        "num_text_to_video_layers": opt["enc_layers"],
        "num_encoder_layers": opt["enc_layers"],
        "num_decoder_layers": opt["dec_layers"],
        "num_queries": opt["num_queries"],
        "window_length": opt["max_v_l"],
        "max_text_length": opt["max_q_l"],
        "seconds_per_feature": float(opt["clip_length"]),
        "frame_position_temperature": float(opt.get("pos_temperature", 10000)),
        "sampler_temperature": float(opt["gumbel_eps"]),
        "in_batch_window_pairs": bool(opt.get("winret", False)),
        "use_negative_window_loss": bool(opt.get("neg_loss", False)),
        "span_loss_coefficient": float(opt.get("span_loss_coef", 10)),
        "giou_loss_coefficient": float(opt.get("giou_loss_coef", 1)),
        "label_loss_coefficient": float(opt.get("label_loss_coef", 4)),
        "saliency_loss_coefficient": float(opt.get("lw_saliency", 1.0)),
        "window_retrieval_loss_coefficient": float(opt.get("retrieval_loss_coef", 0.0)),
        "sampler_attention_loss_coefficient": (
            float(opt.get("samp_loc_loss_coef", 0.0)) if opt.get("samp_loc_loss", False) else 0.0
        ),
        "background_class_weight": float(opt.get("eos_coef", 0.1)),
        "saliency_margin": float(opt.get("saliency_margin", 0.2)),
        "retrieval_temperature": float(opt.get("temperature", 0.07)),
        "matcher_span_cost": float(opt.get("set_cost_span", 10)),
        "matcher_giou_cost": float(opt.get("set_cost_giou", 1)),
        "matcher_class_cost": float(opt.get("set_cost_class", 4)),
        "auxiliary_loss": bool(opt.get("aux_loss", True)),
        "top_k_windows": int(opt.get("topk_window", 30)),
        "nms_threshold": float(opt.get("nms_thd", 0.5)) if opt.get("nms_thd", 0.5) > 0 else 0.5,
        "max_predictions_before_nms": int(opt.get("max_before_nms", 200)),
        # Training runs keep 5 predictions for validation; the released inference scripts keep 100.
        "max_predictions": 100,
        "scale_matching_score_by_window_score": dataset == "ego4d",
        "dataset_name": "ego4d" if dataset == "ego4d" else "mad",
    }
    if values["dataset_name"] == "mad":
        # MAD's frame features are CLIP image embeddings; their size tells which CLIP made them.
        values["feature_encoder"] = MAD_FEATURE_ENCODERS.get(values["video_feature_size"])
    values.update(overrides)
    return RGNetConfig(**values)


def _rename(key: str, config: RGNetConfig) -> list[tuple[str, slice | None]] | None:
    """New name(s) of an official key; a slice selects rows of a packed in-projection. `None` = dead tensor."""
    if key in _STATIC_RENAMES:
        return [(_STATIC_RENAMES[key], None)]
    if any(re.search(pattern, key) for pattern in DEAD_KEY_PATTERNS):
        return None
    if match := re.match(r"^input_(vid|txt)_proj\.(\d+)\.(LayerNorm|net\.1)\.(weight|bias)$", key):
        modality, block, part, kind = match.groups()
        module = "video_projection" if modality == "vid" else "text_projection"
        part = "layer_norm" if part == "LayerNorm" else "linear"
        return [(f"model.{module}.blocks.{block}.{part}.{kind}", None)]
    if match := re.match(r"^transformer\.(t2v_encoder|encoder)\.layers\.(\d+)\.(.+)$", key):
        stack, layer, rest = match.groups()
        prefix = f"model.{'text_to_video_layers' if stack == 't2v_encoder' else 'encoder_layers'}.{layer}."
        attention = "cross_attention" if stack == "t2v_encoder" else "self_attention"
        hidden = config.hidden_size
        if rest in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
            kind = "weight" if rest.endswith("weight") else "bias"
            return [
                (f"{prefix}{attention}.{name}_proj.{kind}", slice(index * hidden, (index + 1) * hidden))
                for index, name in enumerate(("q", "k", "v"))
            ]
        if rest.startswith("self_attn.out_proj."):
            return [(f"{prefix}{attention}.out_proj.{rest.rsplit('.', 1)[1]}", None)]
        if match2 := re.match(r"^linear([12])\.(weight|bias)$", rest):
            return [(f"{prefix}feed_forward.linear{match2.group(1)}.{match2.group(2)}", None)]
        if re.match(r"^norm[12]\.(weight|bias)$", rest):
            return [(prefix + rest, None)]
    if match := re.match(r"^transformer\.decoder\.layers\.(\d+)\.(.+)$", key):
        layer, rest = match.groups()
        prefix = f"model.decoder.layers.{layer}."
        if re.match(r"^(sa|ca)_(qcontent|qpos|kcontent|kpos|v|qpos_sine)_proj\.(weight|bias)$", rest):
            return [(prefix + rest, None)]
        if match2 := re.match(r"^(self|cross)_attn\.out_proj\.(weight|bias)$", rest):
            return [(f"{prefix}{match2.group(1)}_attention.out_proj.{match2.group(2)}", None)]
        if match2 := re.match(r"^linear([12])\.(weight|bias)$", rest):
            return [(f"{prefix}feed_forward.linear{match2.group(1)}.{match2.group(2)}", None)]
        if re.match(r"^norm[123]\.(weight|bias)$", rest):
            return [(prefix + rest, None)]
    if match := re.match(
        r"^transformer\.decoder\.(query_scale|ref_point_head|ref_anchor_head)\.layers\.(\d+)\.(weight|bias)$", key
    ):
        return [(f"model.decoder.{match.group(1)}.layers.{match.group(2)}.{match.group(3)}", None)]
    if match := re.match(r"^transformer\.decoder\.bbox_embed\.(\d+)\.layers\.(\d+)\.(weight|bias)$", key):
        layer = int(match.group(1))
        if layer == config.num_decoder_layers - 1:
            return None  # the last layer's anchor update is computed and discarded by the official model
        return [(f"model.decoder.anchor_update_heads.{layer}.layers.{match.group(2)}.{match.group(3)}", None)]
    if match := re.match(r"^span_embed\.layers\.(\d+)\.(weight|bias)$", key):
        return [(f"span_head.layers.{match.group(1)}.{match.group(2)}", None)]
    return []  # unknown


def convert_state_dict(
    official_state_dict: Mapping[str, torch.Tensor], config: RGNetConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map every official tensor to its `RGNetForVideoGrounding` name.

    Returns the new state dict and the official keys that were dropped because no computation reads them. Raises
    [`CheckpointConversionError`] on any unknown key, missing key or shape mismatch.
    """
    from ..modeling_rgnet import RGNetForVideoGrounding

    with torch.device("meta"):
        expected = {name: tuple(tensor.shape) for name, tensor in RGNetForVideoGrounding(config).state_dict().items()}

    converted: dict[str, torch.Tensor] = {}
    dropped, unknown, problems = [], [], []
    for raw_key, tensor in official_state_dict.items():
        key = raw_key[len("module.") :] if raw_key.startswith("module.") else raw_key
        targets = _rename(key, config)
        if targets is None:
            dropped.append(key)
            continue
        if not targets:
            unknown.append(key)
            continue
        for name, rows in targets:
            value = tensor[rows] if rows is not None else tensor
            if name not in expected:
                problems.append(f"{key} -> {name}: no such parameter in this configuration")
            elif tuple(value.shape) != expected[name]:
                problems.append(f"{key} -> {name}: shape {tuple(value.shape)} but the config needs {expected[name]}")
            converted[name] = value.detach().clone().contiguous().float()
    missing = sorted(set(expected) - set(converted))
    if unknown or problems or missing:
        lines = []
        if unknown:
            lines.append(f"{len(unknown)} unexpected official keys: {', '.join(unknown[:10])}")
        if problems:
            lines.append("shape mismatches:\n  " + "\n  ".join(problems[:20]))
        if missing:
            lines.append(f"{len(missing)} parameters missing from the checkpoint: {', '.join(missing[:10])}")
        raise CheckpointConversionError(
            "The checkpoint does not match the RGNet architecture of this config:\n" + "\n".join(lines)
        )
    return converted, dropped


def load_official_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an official checkpoint safely: returns `(state_dict, options)` (options may be empty)."""
    import argparse as _argparse

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}")
    try:
        # The official checkpoints pickle an argparse.Namespace (and a torch.device); allow only those.
        with torch.serialization.safe_globals([_argparse.Namespace, torch.device]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a corrupt or foreign file
        raise CheckpointConversionError(f"Could not read {path} as an official RGNet checkpoint: {error}") from error
    if isinstance(checkpoint, Mapping) and "model" in checkpoint:
        state_dict, options = checkpoint["model"], _options_dict(checkpoint.get("opt"))
    elif isinstance(checkpoint, Mapping) and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state_dict, options = checkpoint, {}
    else:
        raise CheckpointConversionError(f"{path} holds neither an official checkpoint dict nor a state dict")
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise CheckpointConversionError(f"{path}: the 'model' entry is not a non-empty state dict")
    return dict(state_dict), options


def convert_checkpoint(
    checkpoint: str | Path,
    output: str | Path | None = None,
    preset: str | None = None,
    verbose: bool = True,
    overwrite: bool = False,
    **config_overrides,
):
    """Convert an official checkpoint file; returns the loaded `RGNetForVideoGrounding` (saved to `output` if
    given, with the processor and a model card). `config_overrides` set config fields, e.g.
    `text_to_video_mask_batch_mixing=True`.

    An existing non-empty `output` raises `FileExistsError` unless `overwrite=True`; the folder is replaced only
    once the new one is completely written."""
    from ..modeling_rgnet import RGNetForVideoGrounding
    from .atomic_files import write_folder_atomically
    from .model_folder import save_model_folder

    if output is not None:
        output = Path(output)
        if output.exists() and not output.is_dir():
            raise FileExistsError(f"--output {output} is a file, not a folder")
        if not overwrite and output.is_dir() and any(output.iterdir()):
            raise FileExistsError(f"--output {output} already exists and is not empty; pass --force to replace it")
    state_dict, options = load_official_checkpoint(checkpoint)
    if options:
        config = config_from_official_options(options, **config_overrides)
    elif preset is not None:
        config = RGNetConfig.from_preset(preset, **config_overrides)
    else:
        raise CheckpointConversionError(
            f"{checkpoint} carries no saved options ('opt'); pass --preset mad|ego4d|ego4d_pretrain"
        )
    converted, dropped = convert_state_dict(state_dict, config)
    model = RGNetForVideoGrounding(config)
    model.load_state_dict(converted, strict=True)
    model.eval()
    if verbose:
        print(f"Converted {len(converted)} tensors from {len(state_dict)} official tensors.")
        if dropped:
            print(f"Dropped {len(dropped)} dead tensors (never read by the official model): {', '.join(dropped)}")
    if output is not None:
        from .model_card import OFFICIAL_WEIGHTS_LICENSE

        def write(folder):
            save_model_folder(model, folder, license=OFFICIAL_WEIGHTS_LICENSE)

        write_folder_atomically(output, write, overwrite=overwrite)
        if verbose:
            print(f"Saved to {output}")
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="official checkpoint (.ckpt / .pth)")
    parser.add_argument("--output", required=True, help="folder for the save_pretrained model")
    parser.add_argument(
        "--preset",
        choices=RGNetConfig.preset_names(),
        default=None,
        help="configuration to use when the checkpoint carries no saved options",
    )
    parser.add_argument(
        "--official-batch-mask",
        action="store_true",
        help="reproduce the official text-to-video mask layout bug (see RGNetConfig."
        "text_to_video_mask_batch_mixing); only needed to match official outputs of batches "
        "that mix texts of different lengths",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing, non-empty --output folder")
    args = parser.parse_args(argv)
    try:
        overrides = {"text_to_video_mask_batch_mixing": True} if args.official_batch_mask else {}
        convert_checkpoint(args.checkpoint, args.output, preset=args.preset, overwrite=args.force, **overrides)
    except (CheckpointConversionError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
