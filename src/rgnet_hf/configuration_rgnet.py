"""RGNet configuration."""

from __future__ import annotations

import copy
import math

from transformers import PreTrainedConfig

from .windowing import default_window_stride

SAMPLER_ATTENTION_MODES = ("additive", "sparse")

# Seconds between two video features of the released feature sets: MAD's CLIP frame features at 5 fps and Ego4D-NLQ's
# EgoVLP clip features at 1.87 fps (the official `clip_length`). The data loaders default to the same values.
MAD_SECONDS_PER_FEATURE = 0.2
EGO4D_SECONDS_PER_FEATURE = 0.535

# The released recipes of the official implementation. Everything not listed keeps the
# defaults of `RGNetConfig.__init__`, which are the MAD recipe.
# The Ego4D-NLQ architecture (EgoVLP video features at 1.87 fps), shared by pre-training and fine-tuning.
_EGO4D = {
    "video_feature_size": 256,
    "sentence_feature_size": 256,
    "window_length": 90,
    "max_text_length": 20,
    "seconds_per_feature": EGO4D_SECONDS_PER_FEATURE,
    "frame_position_temperature": 10000.0,
    "top_k_windows": 20,
    "scale_matching_score_by_window_score": True,
    "dataset_name": "ego4d",
}
_PRESETS: dict[str, dict] = {
    # MAD's released frame features are OpenAI CLIP ViT-B/32 image embeddings at 5 fps (see docs/raw_video.md).
    "mad": {"feature_encoder": "openai/clip-vit-base-patch32"},
    "ego4d_pretrain": {
        **_EGO4D,
        "in_batch_window_pairs": True,
        "use_negative_window_loss": False,
        "window_retrieval_loss_coefficient": 1.0,
    },
    "ego4d": {
        **_EGO4D,
        "in_batch_window_pairs": False,
        "use_negative_window_loss": True,
        "window_retrieval_loss_coefficient": 0.0,
    },
}


_POSITIVE_INTS = (
    "video_feature_size",
    "text_feature_size",
    "sentence_feature_size",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "num_input_projection_layers",
    "num_decoder_layers",
    "num_queries",
    "window_length",
    "window_stride",
    "max_text_length",
    "top_k_windows",
    "max_predictions",
    "max_predictions_before_nms",
    "matching_top_frames",
)
_NON_NEGATIVE_INTS = ("num_text_to_video_layers", "num_encoder_layers")
_POSITIVE_FLOATS = (
    "seconds_per_feature",
    "frame_position_temperature",
    "anchor_position_temperature",
    "sampler_temperature",
    "retrieval_temperature",
    "inverse_sigmoid_eps",
    "layer_norm_eps",
)
_NON_NEGATIVE_FLOATS = (
    "dropout",
    "input_dropout",
    "nms_threshold",
    "span_loss_coefficient",
    "giou_loss_coefficient",
    "label_loss_coefficient",
    "saliency_loss_coefficient",
    "window_retrieval_loss_coefficient",
    "sampler_attention_loss_coefficient",
    "background_class_weight",
    "saliency_margin",
    "matcher_span_cost",
    "matcher_giou_cost",
    "matcher_class_cost",
    "learned_embedding_init_std",
)
_BOOLS = (
    "normalize_video_features",
    "text_to_video_residual_from_unnormalized",
    "text_to_video_mask_batch_mixing",
    "in_batch_window_pairs",
    "use_negative_window_loss",
    "auxiliary_loss",
    "scale_matching_score_by_window_score",
)


def _check_int(config, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"RGNetConfig.{name} must be {kind}, got {value!r} ({type(value).__name__})")


def _check_float(config, name: str, minimum: float, strict: bool) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"RGNetConfig.{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"RGNetConfig.{name} must be a finite number {relation} {minimum:g}, got {value!r}")


class RGNetConfig(PreTrainedConfig):
    r"""
    Configuration of an RGNet model ([`RGNetModel`], [`RGNetForVideoGrounding`]).

    The defaults reproduce the released MAD recipe of the official implementation; [`RGNetConfig.from_preset`] gives
    the Ego4D pre-training (`"ego4d_pretrain"`) and fine-tuning (`"ego4d"`) recipes.

    Args:
        video_feature_size (`int`, defaults to 512):
            Size of one pre-extracted video feature (CLIP B/32 for MAD: 512; EgoVLP for Ego4D: 256).
        text_feature_size (`int`, defaults to 512):
            Size of one pre-extracted text-token feature (CLIP text transformer states).
        sentence_feature_size (`int`, defaults to 512):
            Size of the sentence feature used only by the feature-matching score at inference.
        hidden_size (`int`, defaults to 256):
            Width of every transformer layer.
        num_attention_heads (`int`, defaults to 8):
            Attention heads of every attention layer.
        intermediate_size (`int`, defaults to 2048):
            Hidden size of the feed-forward blocks.
        dropout (`float`, defaults to 0.1):
            Dropout inside the transformer layers (attention weights, residual branches, feed-forward blocks).
        input_dropout (`float`, defaults to 0.5):
            Dropout before each linear layer of the two input projections.
        num_input_projection_layers (`int`, defaults to 2):
            Number of LayerNorm -> Dropout -> Linear blocks in each input projection.
        num_text_to_video_layers (`int`, defaults to 2):
            Text-to-video cross-attention layers at the start of the RG-Encoder.
        num_encoder_layers (`int`, defaults to 2):
            Self-attention layers over the retrieval token and the frames.
        num_decoder_layers (`int`, defaults to 6):
            DAB-style decoder layers.
        num_queries (`int`, defaults to 5):
            Moment queries (anchors) of the decoder, i.e. moment proposals per window.
        window_length (`int`, defaults to 900):
            Features per window (`max_v_l` in the official code; 900 = 180 s for MAD, 90 for Ego4D).
        window_stride (`int`, *optional*):
            Features between consecutive window starts. Defaults to `window_length // 2`, as in the official code.
        max_text_length (`int`, defaults to 25):
            Text tokens kept per query (`max_q_l`).
        seconds_per_feature (`float`, defaults to 0.2):
            Seconds between two consecutive video features (`clip_length`: 0.2 for MAD, 0.535 for Ego4D).
        frame_position_temperature (`float`, defaults to 100.0):
            Temperature of the sine positional encoding of the frames (`pos_temperature`: 100 MAD, 10000 Ego4D).
        anchor_position_temperature (`float`, defaults to 10000.0):
            Temperature of the sine embedding of the decoder anchors.
        sampler_temperature (`float`, defaults to 0.3):
            Temperature of the binary Gumbel (concrete) frame sampler (`gumbel_eps`).
        sampler_attention_mode (`str`, defaults to `"additive"`):
            How the sampler's decision enters the self-attention encoder. `"additive"` is the official behaviour: a
            float mask that adds +1 to every attention logit of a non-selected frame's row (except its diagonal);
            it blocks nothing. `"sparse"` follows the paper: the retrieval token attends only to itself and the
            selected frames (the logits of non-selected frames are set to -inf in its row).
        inverse_sigmoid_eps (`float`, defaults to 1e-3):
            Clamp of the inverse sigmoid used to refine anchors.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of every LayerNorm.
        normalize_video_features (`bool`, defaults to `False`):
            L2-normalise each video feature before the input projection. The official model receives
            un-normalised features (a quirk kept for parity).
        text_to_video_residual_from_unnormalized (`bool`, defaults to `True`):
            Official quirk of the text-to-video layer: its feed-forward block reads `LayerNorm(h)` but adds its
            output to the un-normalised `h`. Set to `False` to add it to the normalised input instead (pre-norm).
        text_to_video_mask_batch_mixing (`bool`, defaults to `False`):
            Reproduce a bug of the official text-to-video layer, needed only to match official outputs bit for bit
            when one batch mixes queries whose texts have different lengths. The official layer builds a (frame
            padding x token padding) mask whose per-head copies are laid out head-major while PyTorch reads them
            batch-major, so row `b`, head `h` is masked with the padding of row `(b * num_heads + h) % batch_size`:
            a frame that is padding in that other row then ignores the tokens that are padding in that other row.
            Off, every row is computed independently of the rest of the batch (results do not depend on batching);
            rows whose batch shares one text padding (e.g. all windows of one query) are identical either way.
        in_batch_window_pairs (`bool`, defaults to `True`):
            Training: pair every query text with every window of the batch (the official `winret`), so the window
            retrieval loss sees B x B text-window logits.
        use_negative_window_loss (`bool`, defaults to `False`):
            Training: run the decoder on a negative window of the same video and add the negative-window label and
            saliency terms (the official `neg_loss`, on in Ego4D fine-tuning only).
        span_loss_coefficient (`float`, defaults to 10.0), giou_loss_coefficient (`float`, defaults to 1.0),
        label_loss_coefficient (`float`, defaults to 4.0), saliency_loss_coefficient (`float`, defaults to 1.0):
            Weights of the span L1, span generalised IoU, foreground/background cross-entropy and saliency terms.
        window_retrieval_loss_coefficient (`float`, defaults to 10.0):
            Weight of the symmetric InfoNCE window-retrieval loss (10 MAD, 1 Ego4D pre-training, 0 fine-tuning:
            not computed).
        sampler_attention_loss_coefficient (`float`, defaults to 0.0):
            Weight of the paper's intra-clip attention loss (binary cross-entropy between the sampler's clean
            logits and the frames inside the ground-truth moment). Off in every released recipe.
        background_class_weight (`float`, defaults to 0.1):
            Cross-entropy weight of the background class (`eos_coef`).
        saliency_margin (`float`, defaults to 0.2):
            Margin of the saliency hinge losses.
        retrieval_temperature (`float`, defaults to 0.07):
            Temperature of the window-retrieval InfoNCE.
        matcher_span_cost (`float`, defaults to 10.0), matcher_giou_cost (`float`, defaults to 1.0),
        matcher_class_cost (`float`, defaults to 4.0):
            Costs of the Hungarian matcher.
        auxiliary_loss (`bool`, defaults to `True`):
            Also supervise the intermediate decoder layers.
        top_k_windows (`int`, defaults to 30):
            Inference: windows kept per query after window retrieval (30 MAD, 20 Ego4D).
        nms_threshold (`float`, defaults to 0.5):
            Inference: temporal NMS suppresses a moment whose IoU with a better one is strictly above this.
        max_predictions_before_nms (`int`, defaults to 200):
            Inference: moments kept per query before NMS.
        max_predictions (`int`, defaults to 100):
            Inference: moments kept per query after NMS.
        scale_matching_score_by_window_score (`bool`, defaults to `False`):
            Inference: multiply the feature-matching score by the window score (the Ego4D recipe).
        matching_top_frames (`int`, defaults to 3):
            Inference: frames summed by the feature-matching score.
        dataset_name (`str`, defaults to `"mad"`):
            The benchmark the recipe belongs to (`"mad"` or `"ego4d"`); selects evaluation conventions.
        learned_embedding_init_std (`float`, defaults to 1.0):
            Standard deviation of the normal initialisation of the three learned tensors that are not layers: the
            retrieval token [RET], its position embedding and the decoder's anchor logits. The official model draws
            them from N(0, 1); every linear layer has its own initialisation (see `RGNetPreTrainedModel`). Configs
            saved before the rename call it `initializer_range`, which is still accepted.
        feature_encoder (`str`, *optional*):
            The image-text model (Hub id or local folder; CLIP or SigLIP) whose features the model reads, used to
            encode video files and raw text (`rgnet-hf extract`, the pipeline's `video` / `text` inputs).
            `"openai/clip-vit-base-patch32"` for the `"mad"` preset; None for the Ego4D presets, whose EgoVLP video
            features have no transformers model (pass pre-extracted features instead).
    """

    model_type = "rgnet"

    def __init__(
        self,
        video_feature_size: int = 512,
        text_feature_size: int = 512,
        sentence_feature_size: int = 512,
        hidden_size: int = 256,
        num_attention_heads: int = 8,
        intermediate_size: int = 2048,
        dropout: float = 0.1,
        input_dropout: float = 0.5,
        num_input_projection_layers: int = 2,
        num_text_to_video_layers: int = 2,
        num_encoder_layers: int = 2,
        num_decoder_layers: int = 6,
        num_queries: int = 5,
        window_length: int = 900,
        window_stride: int | None = None,
        max_text_length: int = 25,
        seconds_per_feature: float = MAD_SECONDS_PER_FEATURE,
        frame_position_temperature: float = 100.0,
        anchor_position_temperature: float = 10000.0,
        sampler_temperature: float = 0.3,
        sampler_attention_mode: str = "additive",
        inverse_sigmoid_eps: float = 1e-3,
        layer_norm_eps: float = 1e-5,
        normalize_video_features: bool = False,
        text_to_video_residual_from_unnormalized: bool = True,
        text_to_video_mask_batch_mixing: bool = False,
        in_batch_window_pairs: bool = True,
        use_negative_window_loss: bool = False,
        span_loss_coefficient: float = 10.0,
        giou_loss_coefficient: float = 1.0,
        label_loss_coefficient: float = 4.0,
        saliency_loss_coefficient: float = 1.0,
        window_retrieval_loss_coefficient: float = 10.0,
        sampler_attention_loss_coefficient: float = 0.0,
        background_class_weight: float = 0.1,
        saliency_margin: float = 0.2,
        retrieval_temperature: float = 0.07,
        matcher_span_cost: float = 10.0,
        matcher_giou_cost: float = 1.0,
        matcher_class_cost: float = 4.0,
        auxiliary_loss: bool = True,
        top_k_windows: int = 30,
        nms_threshold: float = 0.5,
        max_predictions_before_nms: int = 200,
        max_predictions: int = 100,
        scale_matching_score_by_window_score: bool = False,
        matching_top_frames: int = 3,
        dataset_name: str = "mad",
        learned_embedding_init_std: float = 1.0,
        feature_encoder: str | None = None,
        **kwargs,
    ):
        self.video_feature_size = video_feature_size
        self.text_feature_size = text_feature_size
        self.sentence_feature_size = sentence_feature_size
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.num_input_projection_layers = num_input_projection_layers
        self.num_text_to_video_layers = num_text_to_video_layers
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_queries = num_queries
        self.window_length = window_length
        self.window_stride = default_window_stride(window_length) if window_stride is None else window_stride
        self.max_text_length = max_text_length
        self.seconds_per_feature = seconds_per_feature
        self.frame_position_temperature = frame_position_temperature
        self.anchor_position_temperature = anchor_position_temperature
        self.sampler_temperature = sampler_temperature
        self.sampler_attention_mode = sampler_attention_mode
        self.inverse_sigmoid_eps = inverse_sigmoid_eps
        self.layer_norm_eps = layer_norm_eps
        self.normalize_video_features = normalize_video_features
        self.text_to_video_residual_from_unnormalized = text_to_video_residual_from_unnormalized
        self.text_to_video_mask_batch_mixing = text_to_video_mask_batch_mixing
        self.in_batch_window_pairs = in_batch_window_pairs
        self.use_negative_window_loss = use_negative_window_loss
        self.span_loss_coefficient = span_loss_coefficient
        self.giou_loss_coefficient = giou_loss_coefficient
        self.label_loss_coefficient = label_loss_coefficient
        self.saliency_loss_coefficient = saliency_loss_coefficient
        self.window_retrieval_loss_coefficient = window_retrieval_loss_coefficient
        self.sampler_attention_loss_coefficient = sampler_attention_loss_coefficient
        self.background_class_weight = background_class_weight
        self.saliency_margin = saliency_margin
        self.retrieval_temperature = retrieval_temperature
        self.matcher_span_cost = matcher_span_cost
        self.matcher_giou_cost = matcher_giou_cost
        self.matcher_class_cost = matcher_class_cost
        self.auxiliary_loss = auxiliary_loss
        self.top_k_windows = top_k_windows
        self.nms_threshold = nms_threshold
        self.max_predictions_before_nms = max_predictions_before_nms
        self.max_predictions = max_predictions
        self.scale_matching_score_by_window_score = scale_matching_score_by_window_score
        self.matching_top_frames = matching_top_frames
        self.dataset_name = dataset_name
        # Configs saved before the rename store this value as `initializer_range`.
        self.learned_embedding_init_std = kwargs.pop("initializer_range", learned_embedding_init_std)
        self.feature_encoder = feature_encoder
        # Before the base class, whose own architecture checks would fail on a wrong type with a bare TypeError.
        self._validate()
        super().__init__(**kwargs)

    def _validate(self) -> None:
        """Check every field when the config is built (also by `from_pretrained`); messages name the field."""
        for name in _POSITIVE_INTS:
            _check_int(self, name, minimum=1)
        for name in _NON_NEGATIVE_INTS:
            _check_int(self, name, minimum=0)
        for name in _POSITIVE_FLOATS:
            _check_float(self, name, minimum=0.0, strict=True)
        for name in _NON_NEGATIVE_FLOATS:
            _check_float(self, name, minimum=0.0, strict=False)
        for name in _BOOLS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"RGNetConfig.{name} must be True or False, got {value!r}")
        if self.window_stride >= self.window_length:
            raise ValueError(
                f"RGNetConfig.window_stride ({self.window_stride}) must be smaller than window_length "
                f"({self.window_length}): the first window covers [0, window_length - window_stride)"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even (sine embeddings), got {self.hidden_size}")
        if self.sampler_attention_mode not in SAMPLER_ATTENTION_MODES:
            raise ValueError(
                f"sampler_attention_mode must be one of {SAMPLER_ATTENTION_MODES}, got {self.sampler_attention_mode!r}"
            )
        if not 0.0 <= self.nms_threshold <= 1.0:
            raise ValueError(f"RGNetConfig.nms_threshold must be in [0, 1] (an IoU), got {self.nms_threshold}")
        for name in ("dropout", "input_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"RGNetConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.feature_encoder is not None and (not isinstance(self.feature_encoder, str) or not self.feature_encoder):
            raise ValueError(f"feature_encoder must be a Hub id or folder name, or None; got {self.feature_encoder!r}")
        if self.dataset_name not in ("mad", "ego4d"):
            raise ValueError(f"dataset_name must be 'mad' or 'ego4d', got {self.dataset_name!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict, dict]:
        """The base class only warns on another model type and then builds an RGNet config from unrelated fields
        (a CLIP folder loads random RGNet weights); refuse it by name instead."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} is not an RGNet model folder (model_type {model_type!r})"
            )
        return config_dict, kwargs

    @classmethod
    def preset_names(cls) -> list[str]:
        return list(_PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> RGNetConfig:
        """The configuration of a released recipe: `"mad"`, `"ego4d_pretrain"` or `"ego4d"` (fine-tuning).

        Keyword arguments override single fields, e.g. `RGNetConfig.from_preset("mad", hidden_size=32)`.
        """
        if name not in _PRESETS:
            raise ValueError(f"Unknown RGNet preset {name!r}; available: {', '.join(_PRESETS)}")
        values = copy.deepcopy(_PRESETS[name])
        values.update(overrides)
        return cls(**values)


# Saved folders carry this code and an `auto_map`, so they load with `trust_remote_code=True` where rgnet_hf is
# not installed (`save_model_folder` adds the processor's code and, on request, the pipeline's).
RGNetConfig.register_for_auto_class()


__all__ = ["RGNetConfig"]
