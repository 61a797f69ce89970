"""PyTorch RGNet: unified clip retrieval and grounding for long videos (Hannan et al., ECCV 2024)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_rgnet import RGNetConfig
from .loss_rgnet import RGNetLoss

# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class RGNetEncoderOutput(ModelOutput):
    r"""
    Output of the RG-Encoder (text-to-video layers, frame sampler, self-attention over the retrieval token and frames).

    Args:
        retrieval_embedding (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Final state of the retrieval token [RET]: the embedding the window-retrieval score is read from.
        video_memory (`torch.FloatTensor` of shape `(batch_size, num_frames, hidden_size)`):
            Frame states after the encoder, with the retrieval embedding added to every sampled frame.
        frame_position_embeddings (`torch.FloatTensor` of shape `(batch_size, num_frames, hidden_size)`):
            Sine position encodings of the frames (relative to each window's valid length).
        sampler_logits (`torch.FloatTensor` of shape `(batch_size, 1 + num_frames)`):
            Clean sampler logits of the retrieval token (position 0) and of every frame.
        sampler_noisy_logits (`torch.FloatTensor` of shape `(batch_size, 1 + num_frames)`, *optional*):
            The logits plus the logistic noise of the binary Gumbel sampler (training mode only).
        sampler_selection (`torch.FloatTensor` of shape `(batch_size, num_frames)`):
            The sampler's hard 0/1 decision per frame. In training mode it carries the straight-through gradient.
        last_layer_input (`torch.FloatTensor` of shape `(batch_size, 1 + num_frames, hidden_size)`, *optional*):
            Only from `encode(..., retrieval_only=True)`: the [RET] and frame states entering the last
            self-attention layer, which then ran for [RET] alone (`video_memory` is `None`).
            [`RGNetModel.complete_encoding`] runs that layer for every token.
    """

    retrieval_embedding: torch.FloatTensor | None = None
    video_memory: torch.FloatTensor | None = None
    frame_position_embeddings: torch.FloatTensor | None = None
    sampler_logits: torch.FloatTensor | None = None
    sampler_noisy_logits: torch.FloatTensor | None = None
    sampler_selection: torch.FloatTensor | None = None
    last_layer_input: torch.FloatTensor | None = None


@dataclass
class RGNetModelOutput(ModelOutput):
    r"""
    Output of [`RGNetModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_queries, hidden_size)`):
            Normalised moment-query states of the last decoder layer.
        intermediate_hidden_states (`torch.FloatTensor` of shape
            `(num_decoder_layers, batch_size, num_queries, hidden_size)`):
            Normalised moment-query states of every decoder layer (the last one included).
        reference_points (`torch.FloatTensor` of shape `(num_decoder_layers, batch_size, num_queries, 2)`):
            The (centre, width) anchor fed into each decoder layer, normalised by the window's valid length.
        retrieval_embedding, video_memory, frame_position_embeddings, sampler_logits, sampler_noisy_logits,
        sampler_selection: see [`RGNetEncoderOutput`].
    """

    last_hidden_state: torch.FloatTensor | None = None
    intermediate_hidden_states: torch.FloatTensor | None = None
    reference_points: torch.FloatTensor | None = None
    retrieval_embedding: torch.FloatTensor | None = None
    video_memory: torch.FloatTensor | None = None
    frame_position_embeddings: torch.FloatTensor | None = None
    sampler_logits: torch.FloatTensor | None = None
    sampler_noisy_logits: torch.FloatTensor | None = None
    sampler_selection: torch.FloatTensor | None = None


@dataclass
class RGNetVideoGroundingOutput(ModelOutput):
    r"""
    Output of [`RGNetForVideoGrounding`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            The weighted sum of every loss term of the recipe.
        loss_dict (`dict[str, torch.FloatTensor]`, *optional*, returned when `labels` are given):
            Every individual (unweighted) loss term, with the official names (`loss_span`, `loss_giou`, `loss_label`,
            `loss_saliency`, `loss_retrieval`, `loss_span_0` ... for the auxiliary layers, `class_error`).
        logits (`torch.FloatTensor` of shape `(batch_size, num_queries, 2)`):
            Foreground (index 0) / background (index 1) logits of each moment query of the last decoder layer.
        pred_spans (`torch.FloatTensor` of shape `(batch_size, num_queries, 2)`):
            Predicted (centre, width) of each moment, normalised by the window's valid length (not clipped).
        window_logits (`torch.FloatTensor` of shape `(batch_size,)`):
            Retrieval logit of each window for its text; `sigmoid` gives the window score used at inference.
        window_retrieval_logits (`torch.FloatTensor` of shape `(batch_size, batch_size)`, *optional*):
            With in-batch window pairs (training): the logit of text `i` with window `j`; the diagonal equals
            `window_logits`.
        saliency_scores (`torch.FloatTensor` of shape `(batch_size, num_frames)`):
            Saliency of every frame for the text (padded positions included).
        sampler_logits (`torch.FloatTensor` of shape `(batch_size, 1 + num_frames)`):
            Clean frame-sampler logits; position 0 is the retrieval token.
        sampler_selection (`torch.FloatTensor` of shape `(batch_size, num_frames)`):
            The sampler's 0/1 frame selection.
        auxiliary_outputs (`list[dict]`, *optional*):
            `{"logits", "pred_spans"}` of decoder layers `0 .. num_decoder_layers - 2`.
        negative_window_outputs (`dict`, *optional*):
            With the negative-window loss (training): `logits`, `saliency_scores`, `video_mask` of the negative
            windows.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_queries, hidden_size)`):
            Last decoder layer states.
        retrieval_embedding (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Final retrieval-token state.
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict | None = None
    logits: torch.FloatTensor | None = None
    pred_spans: torch.FloatTensor | None = None
    window_logits: torch.FloatTensor | None = None
    window_retrieval_logits: torch.FloatTensor | None = None
    saliency_scores: torch.FloatTensor | None = None
    sampler_logits: torch.FloatTensor | None = None
    sampler_selection: torch.FloatTensor | None = None
    auxiliary_outputs: list | None = None
    negative_window_outputs: dict | None = None
    last_hidden_state: torch.FloatTensor | None = None
    retrieval_embedding: torch.FloatTensor | None = None


# The former name, kept as an alias so that existing imports keep working.
RGNetGroundingOutput = RGNetVideoGroundingOutput


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def frame_position_embeddings(video_mask: torch.Tensor, hidden_size: int, temperature: float) -> torch.Tensor:
    """Sine position encoding of frames, relative to each window's valid length.

    Args:
        video_mask (`torch.Tensor` of shape `(batch_size, num_frames)`): 1 = valid frame.
    Returns:
        `torch.FloatTensor` of shape `(batch_size, num_frames, hidden_size)`.
    """
    position = video_mask.float().cumsum(1)
    position = position / (position[:, -1:] + 1e-6) * (2 * math.pi)
    channel = torch.arange(hidden_size, dtype=torch.float32, device=video_mask.device)
    frequency = temperature ** (2 * torch.div(channel, 2, rounding_mode="floor") / hidden_size)
    angles = position[:, :, None] / frequency
    embedding = torch.stack((angles[:, :, 0::2].sin(), angles[:, :, 1::2].cos()), dim=3).flatten(2)
    return embedding


def anchor_sine_embedding(anchors: torch.Tensor, hidden_size: int, temperature: float) -> torch.Tensor:
    """Sine embedding of (centre, width) anchors: `hidden_size / 2` channels per coordinate, concatenated.

    Args:
        anchors (`torch.Tensor` of shape `(..., 2)`): (centre, width) in [0, 1].
    Returns:
        `torch.FloatTensor` of shape `(..., hidden_size)`.
    """
    channels_per_coordinate = hidden_size // 2
    channel = torch.arange(channels_per_coordinate, dtype=torch.float32, device=anchors.device)
    frequency = temperature ** (2 * torch.div(channel, 2, rounding_mode="floor") / channels_per_coordinate)
    angles = anchors[..., None] * (2 * math.pi) / frequency  # (..., 2, channels_per_coordinate)
    embedding = torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)
    return embedding.flatten(-2)


class RGNetMLP(nn.Module):
    """A stack of linear layers with ReLU in between (no activation after the last one)."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_layers: int):
        super().__init__()
        sizes = [hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_size] + sizes, sizes + [output_size]))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            hidden_states = layer(hidden_states)
            if index < len(self.layers) - 1:
                hidden_states = F.relu(hidden_states)
        return hidden_states


class RGNetProjectionBlock(nn.Module):
    """LayerNorm -> Dropout -> Linear (-> ReLU)."""

    def __init__(self, input_size: int, output_size: int, dropout: float, relu: bool, layer_norm_eps: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(input_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(input_size, output_size)
        self.relu = relu

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.linear(self.dropout(self.layer_norm(hidden_states)))
        return F.relu(hidden_states) if self.relu else hidden_states


class RGNetInputProjection(nn.Module):
    """Projects pre-extracted features to the hidden size: `num_input_projection_layers` blocks, ReLU after all but
    the last."""

    def __init__(self, config: RGNetConfig, input_size: int):
        super().__init__()
        num_blocks = config.num_input_projection_layers
        self.blocks = nn.ModuleList(
            RGNetProjectionBlock(
                input_size if index == 0 else config.hidden_size,
                config.hidden_size,
                config.input_dropout,
                relu=index < num_blocks - 1,
                layer_norm_eps=config.layer_norm_eps,
            )
            for index in range(num_blocks)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            features = block(features)
        return features


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference attention (`attn_implementation="eager"`): `softmax(q k^T * scaling + mask) v`, written out.

    Args:
        query (`(batch_size, num_heads, query_length, head_dim)`), key (`(batch_size, num_heads, key_length,
        head_dim)`), value (`(batch_size, num_heads, key_length, value_head_dim)`), attention_mask (additive,
        broadcastable to `(batch_size, num_heads, query_length, key_length)`).
    Returns:
        the attended values `(batch_size, query_length, num_heads, value_head_dim)` and the attention weights.
    """
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _attention_function(config: RGNetConfig):
    """The attention kernel chosen by `config._attn_implementation` (`"eager"`, the reference, or `"sdpa"`:
    `torch.nn.functional.scaled_dot_product_attention`, fused kernels, the same results up to float rounding)."""
    return ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)


class RGNetAttention(nn.Module):
    """Multi-head attention with query / key / value / output projections (batch first)."""

    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.dropout
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _split_heads(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, length, _ = hidden_states.shape
        return hidden_states.view(batch_size, length, self.num_heads, -1).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            query (`(batch_size, query_length, hidden_size)`), key / value (`(batch_size, key_length, hidden_size)`).
            attention_bias (`(batch_size, 1 or num_heads, query_length, key_length)`): added to the logits
                (`-inf` blocks a key).
        """
        batch_size, query_length, hidden_size = query.shape
        attended, _ = _attention_function(self.config)(
            self,
            self._split_heads(self.q_proj(query)),
            self._split_heads(self.k_proj(key)),
            self._split_heads(self.v_proj(value)),
            attention_bias,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
        )
        return self.out_proj(attended.reshape(batch_size, query_length, hidden_size))


def key_padding_bias(padding_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`(batch_size, key_length)` bool (True = pad) -> additive bias `(batch_size, 1, 1, key_length)`."""
    bias = torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device)
    bias = bias.masked_fill(padding_mask, float("-inf"))
    return bias[:, None, None, :]


# Rows per tile of the inference-only feed-forward (`RGNetFeedForward.residual_norm_in_tiles`), indexed by "on CUDA":
# on CPU a tile's inner activations (8 MiB at 1024 rows in float32) stay in the last-level cache; on GPUs larger tiles
# keep the kernels busy.
FEED_FORWARD_TILE_ROWS = (1024, 8192)


class RGNetFeedForward(nn.Module):
    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.linear1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dropout = nn.Dropout(config.dropout)
        self.linear2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(hidden_states))))

    def residual_norm_in_tiles(
        self, normalized: torch.Tensor, residual: torch.Tensor, norm: nn.LayerNorm
    ) -> torch.Tensor:
        """`norm(residual + self(normalized))` for inference (no dropout, no autograd), computed in tiles of rows.

        A tile's `(rows, intermediate_size)` activations stay in the CPU caches and one buffer is reused for every
        tile, instead of a `(batch x length, intermediate_size)` tensor written to memory, passed through the ReLU
        and read back (benchmarks/bench_feed_forward.py measures both); the results are the same up to float
        rounding.

        Args:
            normalized, residual (`(..., hidden_size)`, the same shape).
        Returns:
            `(..., hidden_size)`.
        """
        if torch.compiler.is_compiling():
            # a compiler fuses the block itself; a loop over a data-dependent number of tiles would specialise it
            return norm(residual + self(normalized))
        shape = residual.shape
        normalized = normalized.reshape(-1, shape[-1])
        residual = residual.reshape(-1, shape[-1])
        num_rows = residual.shape[0]
        tile_rows = min(num_rows, FEED_FORWARD_TILE_ROWS[normalized.device.type == "cuda"])
        output = torch.empty_like(residual)
        intermediate = normalized.new_empty(tile_rows, self.linear1.out_features)
        weight1, weight2 = self.linear1.weight.t(), self.linear2.weight.t()
        for start in range(0, num_rows, tile_rows):
            end = min(start + tile_rows, num_rows)
            hidden = torch.addmm(self.linear1.bias, normalized[start:end], weight1, out=intermediate[: end - start])
            summed = torch.addmm(residual[start:end], hidden.relu_(), weight2)
            summed += self.linear2.bias
            output[start:end] = norm(summed)
        return output.view(shape)


class RGNetTextToVideoLayer(GradientCheckpointingLayer):
    """Cross-attention of the frames (queries, with position) over the text tokens; only the frames are updated."""

    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.cross_attention = RGNetAttention(config)
        self.feed_forward = RGNetFeedForward(config)
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)
        self.residual_from_unnormalized = config.text_to_video_residual_from_unnormalized

    def forward(
        self,
        video_states: torch.Tensor,
        frame_positions: torch.Tensor,
        text_states: torch.Tensor,
        text_bias: torch.Tensor,
        fast_inference: bool = False,
    ) -> torch.Tensor:
        attended = self.cross_attention(video_states + frame_positions, text_states, text_states, text_bias)
        hidden_states = video_states + self.dropout1(attended)
        del attended  # frame-sized temporaries are released as soon as they are read (long windows, many rows)
        normalized = self.norm1(hidden_states)
        # Official quirk: the feed-forward reads the normalised sum but its output is added to the raw sum.
        residual = hidden_states if self.residual_from_unnormalized else normalized
        if fast_inference:
            return self.feed_forward.residual_norm_in_tiles(normalized, residual, self.norm2)
        return self.norm2(residual + self.dropout2(self.feed_forward(normalized)))


class RGNetEncoderLayer(GradientCheckpointingLayer):
    """Post-norm self-attention layer over [RET] + frames."""

    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.self_attention = RGNetAttention(config)
        self.feed_forward = RGNetFeedForward(config)
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        positions: torch.Tensor,
        attention_bias: torch.Tensor,
        num_output_tokens: int | None = None,
        fast_inference: bool = False,
    ) -> torch.Tensor:
        """
        Args:
            hidden_states, positions (`(batch_size, sequence_length, hidden_size)`), attention_bias
            (`(batch_size, 1, sequence_length, sequence_length)`).
            num_output_tokens (`int`, *optional*): compute only the first tokens' outputs (every token is still a
                key); each token's output depends on its own row alone, so they equal those of the full layer.
            fast_inference (`bool`): the feed-forward in tiles ([`RGNetFeedForward.residual_norm_in_tiles`]).
        Returns:
            `(batch_size, num_output_tokens or sequence_length, hidden_size)`.
        """
        query_key = hidden_states + positions
        query, residual = query_key, hidden_states
        if num_output_tokens is not None:
            query, residual = query_key[:, :num_output_tokens], hidden_states[:, :num_output_tokens]
            attention_bias = attention_bias[:, :, :num_output_tokens]
        attended = self.self_attention(query, query_key, hidden_states, attention_bias)
        del query, query_key  # frame-sized temporaries are released as soon as they are read
        hidden_states = self.norm1(residual + self.dropout1(attended))
        del attended, residual
        if fast_inference:
            return self.feed_forward.residual_norm_in_tiles(hidden_states, hidden_states, self.norm2)
        return self.norm2(hidden_states + self.dropout2(self.feed_forward(hidden_states)))


class RGNetFrameSampler(nn.Module):
    """Binary Gumbel (concrete) sampler: one logit per token, hard 0/1 decisions with a straight-through gradient."""

    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.logit_projection = nn.Linear(config.hidden_size, 1)
        self.temperature = config.sampler_temperature

    @staticmethod
    def sample_logistic_noise(shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        uniform = torch.rand(shape, device=device, dtype=dtype)
        return torch.log(uniform + 1e-8) - torch.log(1 - uniform + 1e-8)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """
        Args:
            hidden_states (`(batch_size, sequence_length, hidden_size)`).
        Returns:
            logits `(batch_size, sequence_length)`, noisy logits (training only, else `None`), and the selection
            `(batch_size, sequence_length)` (straight-through in training, a detached 0/1 decision in eval).
        """
        logits = self.logit_projection(hidden_states).squeeze(-1)
        if not self.training:
            return logits, None, (logits >= 0).to(logits.dtype).detach()
        noisy_logits = logits + self.sample_logistic_noise(logits.shape, logits.device, logits.dtype)
        soft = torch.sigmoid(noisy_logits / self.temperature)
        hard = (soft >= 0.5).to(soft.dtype)
        return logits, noisy_logits, hard - soft.detach() + soft


class RGNetDecoderAttention(nn.Module):
    """Attention without input projections (the decoder layer projects queries, keys and values itself)."""

    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.dropout = config.dropout
        self.is_causal = False
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query / key `(batch_size, length, num_heads, query_head_dim)`, value `(..., num_heads, value_head_dim)`."""
        batch_size, query_length = query.shape[:2]
        attended, _ = _attention_function(self.config)(
            self,
            query.transpose(1, 2),
            key.transpose(1, 2),
            value.transpose(1, 2),
            attention_bias,
            scaling=query.shape[-1] ** -0.5,
            dropout=self.dropout if self.training else 0.0,
        )
        return self.out_proj(attended.reshape(batch_size, query_length, -1))


class RGNetDecoderLayer(GradientCheckpointingLayer):
    """DAB-DETR style decoder layer with temporal (centre, width) anchors."""

    def __init__(self, config: RGNetConfig):
        super().__init__()
        hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.sa_qcontent_proj = nn.Linear(hidden_size, hidden_size)
        self.sa_qpos_proj = nn.Linear(hidden_size, hidden_size)
        self.sa_kcontent_proj = nn.Linear(hidden_size, hidden_size)
        self.sa_kpos_proj = nn.Linear(hidden_size, hidden_size)
        self.sa_v_proj = nn.Linear(hidden_size, hidden_size)
        self.self_attention = RGNetDecoderAttention(config)
        self.ca_qcontent_proj = nn.Linear(hidden_size, hidden_size)
        self.ca_qpos_proj = nn.Linear(hidden_size, hidden_size)
        self.ca_kcontent_proj = nn.Linear(hidden_size, hidden_size)
        self.ca_kpos_proj = nn.Linear(hidden_size, hidden_size)
        self.ca_v_proj = nn.Linear(hidden_size, hidden_size)
        self.ca_qpos_sine_proj = nn.Linear(hidden_size, hidden_size)
        self.cross_attention = RGNetDecoderAttention(config)
        self.feed_forward = RGNetFeedForward(config)
        self.norm1 = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.norm2 = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.norm3 = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)
        self.dropout3 = nn.Dropout(config.dropout)

    def _heads(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states.view(*hidden_states.shape[:2], self.num_heads, -1)

    def forward(
        self,
        query_states: torch.Tensor,
        query_positions: torch.Tensor,
        query_sine_embedding: torch.Tensor,
        memory: torch.Tensor,
        memory_positions: torch.Tensor,
        memory_bias: torch.Tensor,
        position_index: torch.Tensor | None = None,
        fast_inference: bool = False,
    ) -> torch.Tensor:
        """
        Args:
            query_states, query_positions, query_sine_embedding (`(batch_size, num_queries, hidden_size)`).
            memory (`(batch_size, num_frames, hidden_size)`).
            memory_positions (`(batch_size, num_frames, hidden_size)`, or `(num_distinct, num_frames, hidden_size)`
                with `position_index`).
            memory_bias (`(batch_size, 1, 1, num_frames)`): `-inf` on padded frames.
            position_index (`(batch_size,)`, *optional*): row `b` uses `memory_positions[position_index[b]]`, so
                windows of the same length share one key-position projection.
            fast_inference (`bool`): the cross-attention through [`absorbed_cross_attention`].
        """
        query = self.sa_qcontent_proj(query_states) + self.sa_qpos_proj(query_positions)
        key = self.sa_kcontent_proj(query_states) + self.sa_kpos_proj(query_positions)
        value = self.sa_v_proj(query_states)
        attended = self.self_attention(self._heads(query), self._heads(key), self._heads(value))
        query_states = self.norm1(query_states + self.dropout1(attended))

        # Each head's logit reads [content ; position] for queries and keys: twice the head width.
        memory_key_positions = self.ca_kpos_proj(memory_positions)
        query = self.ca_qcontent_proj(query_states) + self.ca_qpos_proj(query_positions)
        sine_query = self.ca_qpos_sine_proj(query_sine_embedding)
        if fast_inference:
            attended = self.absorbed_cross_attention(
                query, sine_query, memory, memory_key_positions, memory_bias, position_index
            )
        else:
            if position_index is not None:
                memory_key_positions = memory_key_positions[position_index]
            key = self.ca_kcontent_proj(memory) + memory_key_positions
            query = torch.cat([self._heads(query), self._heads(sine_query)], dim=-1)
            key = torch.cat([self._heads(key), self._heads(memory_key_positions)], dim=-1)
            value = self._heads(self.ca_v_proj(memory))
            attended = self.cross_attention(query, key, value, memory_bias)
        query_states = self.norm2(query_states + self.dropout2(attended))
        return self.norm3(query_states + self.dropout3(self.feed_forward(query_states)))

    def absorbed_cross_attention(
        self,
        content_query: torch.Tensor,
        sine_query: torch.Tensor,
        memory: torch.Tensor,
        memory_key_positions: torch.Tensor,
        memory_bias: torch.Tensor,
        position_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The cross-attention to the frames with the key and value projections of the memory folded into the few
        moment queries (inference only; equal to the projected form up to float rounding).

        Per head `h`, query `i` and frame `j` the logit is `q_hi . (W_k m_j + b_k + p_hj) + s_hi . p_hj`; the term
        `q_hi . b_k` is the same for every frame and cancels in the softmax, and `q_hi . W_k m_j = (W_k^T q_hi) . m_j`.
        The output `sum_j a_hij (W_v m_j + b_v) = W_v (sum_j a_hij m_j) + b_v`. So the memory (`num_frames` rows) is
        never projected: `2 x num_heads x num_queries` vectors are, about 5x fewer multiply-adds for 5 queries.

        Args:
            content_query, sine_query (`(batch_size, num_queries, hidden_size)`): `q` and `s` above.
            memory (`(batch_size, num_frames, hidden_size)`).
            memory_key_positions (`(batch_size or num_distinct, num_frames, hidden_size)`): `p` above, per row or
                (with `position_index` `(batch_size,)`) per distinct window length.
            memory_bias (`(batch_size, 1, 1, num_frames)`).
        Returns:
            `(batch_size, num_queries, hidden_size)`, after the output projection.
        """
        batch_size, num_queries, hidden_size = content_query.shape
        num_frames = memory.shape[1]
        heads = self.num_heads
        head_dim = hidden_size // heads
        scaling = (2 * head_dim) ** -0.5
        key_weight = self.ca_kcontent_proj.weight.view(heads, head_dim, hidden_size)
        value_weight = self.ca_v_proj.weight.view(heads, head_dim, hidden_size)
        content_query = self._heads(content_query)  # (batch, queries, heads, head_dim)
        # (batch, heads x queries, hidden): W_k^T q per head and query, dotted with every frame at once
        absorbed_query = torch.einsum("bqhd,hdk->bhqk", content_query, key_weight).reshape(batch_size, -1, hidden_size)
        logits = torch.bmm(absorbed_query, memory.transpose(1, 2)).view(batch_size, heads, num_queries, num_frames)
        position_query = content_query + self._heads(sine_query)
        key_positions = memory_key_positions.view(-1, num_frames, heads, head_dim)
        if position_index is None:
            position_logits = torch.einsum("bqhd,bkhd->bhqk", position_query, key_positions)
        else:
            # (q + s) . p against each distinct length's key positions, then each row's own length
            position_logits = torch.einsum("bqhd,nkhd->bhqnk", position_query, key_positions)
            rows = torch.arange(batch_size, device=memory.device)
            position_logits = position_logits[rows, :, :, position_index]
        logits = (logits + position_logits) * scaling + memory_bias
        weights = logits.softmax(-1)
        attended_memory = torch.bmm(weights.view(batch_size, -1, num_frames), memory)
        attended = torch.einsum(
            "bhqk,hdk->bqhd", attended_memory.view(batch_size, heads, num_queries, hidden_size), value_weight
        )
        attended = attended + self.ca_v_proj.bias.view(heads, head_dim)
        return self.cross_attention.out_proj(attended.reshape(batch_size, num_queries, hidden_size))


class RGNetDecoder(nn.Module):
    """DAB-style decoder: anchors refined layer by layer, moment-query states of every layer returned."""

    def __init__(self, config: RGNetConfig):
        super().__init__()
        hidden_size = config.hidden_size
        self.config = config
        self.layers = nn.ModuleList(RGNetDecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.layer_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.query_scale = RGNetMLP(hidden_size, hidden_size, hidden_size, 2)
        self.ref_point_head = RGNetMLP(hidden_size, hidden_size, hidden_size, 2)
        self.ref_anchor_head = RGNetMLP(hidden_size, hidden_size, 1, 2)
        # The official model also builds an update head for the last layer and discards its output.
        self.anchor_update_heads = nn.ModuleList(
            RGNetMLP(hidden_size, hidden_size, 2, 3) for _ in range(config.num_decoder_layers - 1)
        )

    def forward(
        self,
        anchors: torch.Tensor,
        memory: torch.Tensor,
        memory_positions: torch.Tensor,
        memory_bias: torch.Tensor,
        position_index: torch.Tensor | None = None,
        fast_inference: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            anchors (`(batch_size, num_queries, 2)`): initial (centre, width) anchors in [0, 1].
            memory, memory_positions (`(batch_size, num_frames, hidden_size)`), memory_bias (`(batch_size, 1, 1,
            num_frames)`), position_index: see [`RGNetDecoderLayer`].
        Returns:
            hidden states `(num_layers, batch_size, num_queries, hidden_size)` (normalised) and reference points
            `(num_layers, batch_size, num_queries, 2)` (the anchor fed into each layer).
        """
        config = self.config
        query_states = torch.zeros(*anchors.shape[:2], config.hidden_size, dtype=memory.dtype, device=memory.device)
        reference_points = [anchors]
        hidden_states = []
        for index, layer in enumerate(self.layers):
            sine_embedding = anchor_sine_embedding(anchors, config.hidden_size, config.anchor_position_temperature)
            sine_embedding = sine_embedding.to(memory.dtype)
            query_positions = self.ref_point_head(sine_embedding)
            if index > 0:
                sine_embedding = sine_embedding * self.query_scale(query_states)
            # One scalar per query modulates the positional query by the anchor width.
            sine_embedding = sine_embedding * (torch.sigmoid(self.ref_anchor_head(query_states)) / anchors[..., 1:2])
            query_states = layer(
                query_states,
                query_positions,
                sine_embedding,
                memory,
                memory_positions,
                memory_bias,
                position_index,
                fast_inference,
            )
            if index < len(self.anchor_update_heads):
                refined = torch.sigmoid(
                    self.anchor_update_heads[index](query_states) + inverse_sigmoid(anchors, config.inverse_sigmoid_eps)
                )
                reference_points.append(refined)
                anchors = refined.detach()
            hidden_states.append(self.layer_norm(query_states))
        return torch.stack(hidden_states), torch.stack(reference_points)


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


class RGNetPreTrainedModel(PreTrainedModel):
    config: RGNetConfig
    config_class = RGNetConfig
    base_model_prefix = "model"
    main_input_name = "video_features"
    input_modalities = ("video", "text")
    accepts_loss_kwargs = False
    _supports_sdpa = True
    # `gradient_checkpointing_enable()`: the text-to-video, encoder and decoder layers recompute their activations in
    # the backward pass (tensors go to them positionally, so both checkpoint variants see every input).
    supports_gradient_checkpointing = True
    _no_split_modules = ["RGNetEncoderLayer", "RGNetDecoderLayer", "RGNetTextToVideoLayer"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """[`PreTrainedModel.from_pretrained`], refusing weights that hold NaN or infinite values (a damaged or
        diverged checkpoint would otherwise load silently and ground nothing sensible)."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # `output_loading_info=True`
        bad = [
            name
            for name, parameter in model.named_parameters()
            if parameter.device.type != "meta" and not bool(torch.isfinite(parameter).all())
        ]
        if bad:
            raise ValueError(
                f"{pretrained_model_name_or_path}: the weights contain NaN or infinite values ({len(bad)} tensors, "
                f"first `{bad[0]}`); the checkpoint is damaged or comes from a diverged training run"
            )
        return loaded

    def _init_weights(self, module: nn.Module) -> None:
        # The official initialisation: xavier-uniform for every matrix inside the encoder and decoder (tagged at
        # construction, see `_tag_linear_init`), PyTorch defaults elsewhere, N(0, 1) for the retrieval token, its
        # position and the anchors.
        if isinstance(module, RGNetModel):
            init.normal_(module.retrieval_token, std=self.config.learned_embedding_init_std)
            init.normal_(module.retrieval_position, std=self.config.learned_embedding_init_std)
            init.normal_(module.query_anchor_logits, std=self.config.learned_embedding_init_std)
        elif isinstance(module, nn.Linear):
            scheme = getattr(module, "_rgnet_init", "default")
            bias_bound = 1 / math.sqrt(module.in_features)
            if scheme == "packed_in_proj":
                # xavier over the official packed (3 * hidden, hidden) in-projection, zero bias
                bound = math.sqrt(6.0 / (module.in_features + 3 * module.out_features))
                init.uniform_(module.weight, -bound, bound)
                init.zeros_(module.bias)
            elif scheme in ("xavier", "xavier_zero_bias"):
                init.xavier_uniform_(module.weight)
                if scheme == "xavier_zero_bias":
                    init.zeros_(module.bias)
                else:
                    init.uniform_(module.bias, -bias_bound, bias_bound)
            else:
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
                init.uniform_(module.bias, -bias_bound, bias_bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


def _tag_linear_init(module: nn.Module, scheme: str) -> None:
    for linear in module.modules():
        if isinstance(linear, nn.Linear):
            linear._rgnet_init = scheme


def _check_fast_inference(module: nn.Module, fast_inference: bool) -> None:
    if fast_inference and (module.training or torch.is_grad_enabled()):
        raise ValueError("`fast_inference=True` is for inference only: call `model.eval()` and use `torch.no_grad()`")


def _check_finite(name: str, tensor: torch.Tensor) -> None:
    if not torch.isfinite(tensor).all():
        raise ValueError(f"`{name}` contains NaN or infinite values")


class RGNetModel(RGNetPreTrainedModel):
    """
    The RGNet backbone: input projections, the RG-Encoder (text-to-video cross-attention, the binary Gumbel frame
    sampler, self-attention over a learnable retrieval token [RET] and the frames) and the DAB-style decoder. It
    returns hidden states; [`RGNetForVideoGrounding`] adds the prediction heads and the losses.
    """

    # Loading the backbone from a full grounding checkpoint skips the heads without a warning.
    _keys_to_ignore_on_load_unexpected = [r"^(class_head|span_head|saliency_\w+|window_retrieval_head)\."]

    def __init__(self, config: RGNetConfig):
        super().__init__(config)
        self.video_projection = RGNetInputProjection(config, config.video_feature_size)
        self.text_projection = RGNetInputProjection(config, config.text_feature_size)
        self.retrieval_token = nn.Parameter(torch.empty(config.hidden_size))
        self.retrieval_position = nn.Parameter(torch.empty(config.hidden_size))
        self.text_to_video_layers = nn.ModuleList(
            RGNetTextToVideoLayer(config) for _ in range(config.num_text_to_video_layers)
        )
        self.frame_sampler = RGNetFrameSampler(config)
        self.encoder_layers = nn.ModuleList(RGNetEncoderLayer(config) for _ in range(config.num_encoder_layers))
        self.query_anchor_logits = nn.Parameter(torch.empty(config.num_queries, 2))
        self.decoder = RGNetDecoder(config)
        for part in (self.text_to_video_layers, self.frame_sampler, self.encoder_layers, self.decoder):
            _tag_linear_init(part, "xavier")
        for attention in self.modules():
            if isinstance(attention, RGNetAttention):
                for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
                    projection._rgnet_init = "packed_in_proj"
            if isinstance(attention, (RGNetAttention, RGNetDecoderAttention)):
                attention.out_proj._rgnet_init = "xavier_zero_bias"
        for head in self.decoder.anchor_update_heads:
            head.layers[-1]._rgnet_init = "xavier_zero_bias"
        self.post_init()

    # ---------------------------------------------------------------- input checks
    def validate_inputs(
        self,
        video_features: torch.Tensor,
        video_mask: torch.Tensor,
        text_features: torch.Tensor,
        text_mask: torch.Tensor,
        check_finite: bool = True,
    ) -> None:
        """Raise a `ValueError` naming the problem when the inputs do not fit the model."""
        config = self.config
        if video_features.dim() != 3:
            raise ValueError(
                f"`video_features` must be (batch, frames, {config.video_feature_size}), "
                f"got shape {tuple(video_features.shape)}"
            )
        if video_features.shape[-1] != config.video_feature_size:
            raise ValueError(
                f"`video_features` have {video_features.shape[-1]} dimensions per frame but the model expects "
                f"{config.video_feature_size} (config.video_feature_size)"
            )
        if text_features.dim() != 3:
            raise ValueError(
                f"`text_features` must be (batch, tokens, {config.text_feature_size}), "
                f"got shape {tuple(text_features.shape)}"
            )
        if text_features.shape[-1] != config.text_feature_size:
            raise ValueError(
                f"`text_features` have {text_features.shape[-1]} dimensions per token but the model expects "
                f"{config.text_feature_size} (config.text_feature_size)"
            )
        if video_mask.shape != video_features.shape[:2]:
            raise ValueError(
                f"`video_mask` has shape {tuple(video_mask.shape)} but `video_features` need "
                f"{tuple(video_features.shape[:2])}"
            )
        if text_mask.shape != text_features.shape[:2]:
            raise ValueError(
                f"`text_mask` has shape {tuple(text_mask.shape)} but `text_features` need "
                f"{tuple(text_features.shape[:2])}"
            )
        if video_features.shape[0] != text_features.shape[0]:
            raise ValueError(f"batch sizes differ: {video_features.shape[0]} windows, {text_features.shape[0]} texts")
        if video_features.shape[1] == 0 or bool((video_mask.sum(1) == 0).any()):
            raise ValueError("a window has no valid frame (empty `video_mask` row)")
        if text_features.shape[1] == 0 or bool((text_mask.sum(1) == 0).any()):
            raise ValueError("a query has no valid text token (empty `text_mask` row)")
        if check_finite:
            _check_finite("video_features", video_features)
            _check_finite("text_features", text_features)

    # ---------------------------------------------------------------- RG-Encoder
    def embed_video(self, video_features: torch.Tensor) -> torch.Tensor:
        """`(..., video_feature_size)` -> `(..., hidden_size)`: the video input projection (after the optional L2
        normalisation). Frames are embedded independently of each other, so a whole video can be embedded once and
        cut into windows (padded frames of a window hold `embed_video(0)`)."""
        if self.config.normalize_video_features:
            video_features = F.normalize(video_features, dim=-1)
        return self.video_projection(video_features)

    def embed_text(self, text_features: torch.Tensor) -> torch.Tensor:
        """`(..., text_feature_size)` -> `(..., hidden_size)`: the text input projection (tokens independently)."""
        return self.text_projection(text_features)

    def frame_position_embeddings(self, video_mask: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Sine encodings `(batch_size, num_frames, hidden_size)` of the frames' positions relative to each window's
        valid length (`video_mask` `(batch_size, num_frames)`, 1 = valid), in `dtype` (default: float32)."""
        config = self.config
        positions = frame_position_embeddings(video_mask, config.hidden_size, config.frame_position_temperature)
        return positions if dtype is None else positions.to(dtype)

    def encode(
        self,
        video_features: torch.Tensor | None,
        video_mask: torch.Tensor,
        text_features: torch.Tensor | None,
        text_mask: torch.Tensor,
        *,
        video_embeds: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        retrieval_only: bool = False,
        fast_inference: bool = False,
    ) -> RGNetEncoderOutput:
        """
        Args:
            video_features (`(batch_size, num_frames, video_feature_size)`), video_mask (`(batch_size, num_frames)`,
            1 = valid), text_features (`(batch_size, num_tokens, text_feature_size)`), text_mask
            (`(batch_size, num_tokens)`, 1 = valid).
            video_embeds (`(batch_size, num_frames, hidden_size)`, *optional*): [`embed_video`] of the features,
                computed by the caller (e.g. once per video); replaces `video_features`.
            text_embeds (`(batch_size, num_tokens, hidden_size)`, *optional*): [`embed_text`] of the text features;
                replaces `text_features`.
            retrieval_only (`bool`): run the last self-attention layer for [RET] alone, enough for the window
                logit; `video_memory` is then `None` and [`complete_encoding`] finishes the rows that get decoded.
            fast_inference (`bool`): inference-only arithmetic (eval mode under `torch.no_grad()`), equal to the
                default path up to float rounding: feed-forward blocks in tiles, and the sampler's bias in its
                equivalent one-entry-per-row form (see [`_sampler_attention_bias`]).
        """
        _check_fast_inference(self, fast_inference)
        video_states = self.embed_video(video_features) if video_embeds is None else video_embeds
        text_states = self.embed_text(text_features) if text_embeds is None else text_embeds
        dtype = video_states.dtype
        batch_size = video_states.shape[0]
        frame_positions = self.frame_position_embeddings(video_mask, dtype)

        text_bias = self._text_to_video_bias(video_mask, text_mask, dtype)
        for layer in self.text_to_video_layers:
            video_states = layer(video_states, frame_positions, text_states, text_bias, fast_inference)

        tokens = torch.cat([self.retrieval_token.to(dtype).expand(batch_size, 1, -1), video_states], dim=1)
        del video_states
        positions = self._token_positions(frame_positions)
        sampler_logits, sampler_noisy_logits, selection = self.frame_sampler(tokens)
        attention_bias = self._sampler_attention_bias(selection, video_mask, dtype, fast_inference)
        last_layer_input = None
        for index, layer in enumerate(self.encoder_layers):
            if retrieval_only and index == len(self.encoder_layers) - 1:
                last_layer_input = tokens
                tokens = layer(tokens, positions, attention_bias, 1, fast_inference)
            else:
                tokens = layer(tokens, positions, attention_bias, None, fast_inference)

        retrieval_embedding = tokens[:, 0]
        frame_selection = selection[:, 1:]
        video_memory = None
        if last_layer_input is None:
            video_memory = self._video_memory(tokens, frame_selection)
        return RGNetEncoderOutput(
            retrieval_embedding=retrieval_embedding,
            video_memory=video_memory,
            frame_position_embeddings=frame_positions,
            sampler_logits=sampler_logits,
            sampler_noisy_logits=sampler_noisy_logits,
            sampler_selection=frame_selection,
            last_layer_input=last_layer_input,
        )

    def complete_encoding(
        self, encoded: RGNetEncoderOutput, video_mask: torch.Tensor, fast_inference: bool = False
    ) -> RGNetEncoderOutput:
        """Finish an `encode(..., retrieval_only=True)` output (or rows of it): run the last self-attention layer
        for every token. Equals `encode(...)` of the same rows; outputs without `last_layer_input` pass through."""
        _check_fast_inference(self, fast_inference)
        if encoded.last_layer_input is None:
            return encoded
        tokens = encoded.last_layer_input
        frame_selection = encoded.sampler_selection
        selection = torch.cat([frame_selection.new_ones(frame_selection.shape[0], 1), frame_selection], dim=1)
        attention_bias = self._sampler_attention_bias(selection, video_mask, tokens.dtype, fast_inference)
        positions = self._token_positions(encoded.frame_position_embeddings.to(tokens.dtype))
        tokens = self.encoder_layers[-1](tokens, positions, attention_bias, None, fast_inference)
        return RGNetEncoderOutput(
            retrieval_embedding=tokens[:, 0],
            video_memory=self._video_memory(tokens, frame_selection),
            frame_position_embeddings=encoded.frame_position_embeddings,
            sampler_logits=encoded.sampler_logits,
            sampler_noisy_logits=encoded.sampler_noisy_logits,
            sampler_selection=frame_selection,
        )

    def _token_positions(self, frame_positions: torch.Tensor) -> torch.Tensor:
        retrieval_position = self.retrieval_position.to(frame_positions.dtype)
        return torch.cat([retrieval_position.expand(frame_positions.shape[0], 1, -1), frame_positions], dim=1)

    @staticmethod
    def _video_memory(tokens: torch.Tensor, frame_selection: torch.Tensor) -> torch.Tensor:
        # Every sampled frame receives the retrieval embedding (the sampler's only gradient path).
        return tokens[:, 1:] + frame_selection.unsqueeze(-1) * tokens[:, :1]

    def _text_to_video_bias(self, video_mask: torch.Tensor, text_mask: torch.Tensor, dtype: torch.dtype):
        """Additive bias `(batch_size, 1 or num_heads, 1 or num_frames, num_tokens)` of the text-to-video layers."""
        text_padding = ~text_mask.bool()
        bias = key_padding_bias(text_padding, dtype)
        if not self.config.text_to_video_mask_batch_mixing:
            return bias
        # Official bug (see the config): head h of row b reads the padding mask of row (b * heads + h) % batch.
        batch_size, num_heads = text_mask.shape[0], self.config.num_attention_heads
        source_rows = (
            torch.arange(batch_size, device=text_mask.device)[:, None] * num_heads
            + torch.arange(num_heads, device=text_mask.device)[None, :]
        ) % batch_size
        video_padding = ~video_mask.bool()
        mixed = video_padding[source_rows][..., :, None] & text_padding[source_rows][..., None, :]
        return bias.masked_fill(mixed, float("-inf"))

    def _sampler_attention_bias(
        self, selection: torch.Tensor, video_mask: torch.Tensor, dtype: torch.dtype, fast_inference: bool = False
    ) -> torch.Tensor:
        """Additive attention bias `(batch_size, 1, 1 + num_frames, 1 + num_frames)` of the self-attention encoder.

        With `fast_inference` (additive mode), the official "+1 on every key but itself" of a non-selected frame's
        row is given in its equivalent form "-1 on itself": a softmax does not change when a whole row of logits
        moves by a constant, and this form is written in one pass over the bias."""
        batch_size, sequence_length = selection.shape
        not_selected = selection.detach() < 0.5
        not_selected[:, 0] = False
        padding = torch.cat([video_mask.new_zeros(batch_size, 1).bool(), ~video_mask.bool()], dim=1)
        if fast_inference and self.config.sampler_attention_mode == "additive":
            bias = key_padding_bias(padding, dtype).expand(batch_size, 1, sequence_length, sequence_length).contiguous()
            bias.diagonal(dim1=-2, dim2=-1).sub_(not_selected[:, None].to(dtype))
            return bias
        bias = key_padding_bias(padding, dtype).expand(batch_size, 1, sequence_length, sequence_length)
        eye = torch.eye(sequence_length, dtype=torch.bool, device=selection.device)
        if self.config.sampler_attention_mode == "additive":
            # Official behaviour: +1 on every logit of a non-selected frame's row except its own (nothing blocked).
            rows = not_selected[:, None, :, None] & ~eye
            bias = bias + rows.to(dtype)
        else:
            # Paper behaviour: the retrieval token attends only to itself and the sampled frames.
            blocked = torch.zeros_like(bias, dtype=torch.bool)
            blocked[:, 0, 0, 1:] = not_selected[:, 1:]
            bias = bias.masked_fill(blocked, float("-inf"))
        return bias

    # ---------------------------------------------------------------- decoder
    def decode(
        self,
        video_memory: torch.Tensor,
        frame_position_embeddings: torch.Tensor,
        video_mask: torch.Tensor,
        position_index: torch.Tensor | None = None,
        fast_inference: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns hidden states `(num_decoder_layers, batch_size, num_queries, hidden_size)` and reference points
        `(num_decoder_layers, batch_size, num_queries, 2)`.

        With `position_index` (`(batch_size,)`), `frame_position_embeddings` holds one row per distinct window
        length and row `b` reads `frame_position_embeddings[position_index[b]]` (see [`RGNetDecoderLayer`]).
        `fast_inference` (eval mode, no autograd) folds the memory projections of the cross-attention into the
        moment queries ([`RGNetDecoderLayer.absorbed_cross_attention`])."""
        _check_fast_inference(self, fast_inference)
        batch_size = video_memory.shape[0]
        anchors = torch.sigmoid(self.query_anchor_logits).to(video_memory.dtype)
        anchors = anchors.unsqueeze(0).expand(batch_size, -1, -1)
        memory_bias = key_padding_bias(~video_mask.bool(), video_memory.dtype)
        return self.decoder(
            anchors, video_memory, frame_position_embeddings, memory_bias, position_index, fast_inference
        )

    def forward(
        self,
        video_features: torch.Tensor,
        video_mask: torch.Tensor,
        text_features: torch.Tensor,
        text_mask: torch.Tensor,
        return_dict: bool | None = None,
    ) -> RGNetModelOutput | tuple:
        r"""
        Args:
            video_features (`torch.FloatTensor` of shape `(batch_size, num_frames, video_feature_size)`):
                Pre-extracted features of one window per row, zero-padded at the end.
            video_mask (`torch.FloatTensor` of shape `(batch_size, num_frames)`): 1 = valid frame, 0 = padding.
            text_features (`torch.FloatTensor` of shape `(batch_size, num_tokens, text_feature_size)`):
                Pre-extracted token features of the query of each row.
            text_mask (`torch.FloatTensor` of shape `(batch_size, num_tokens)`): 1 = valid token.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self.validate_inputs(video_features, video_mask, text_features, text_mask)
        encoded = self.encode(video_features, video_mask, text_features, text_mask)
        hidden_states, reference_points = self.decode(
            encoded.video_memory, encoded.frame_position_embeddings, video_mask
        )
        output = RGNetModelOutput(
            last_hidden_state=hidden_states[-1],
            intermediate_hidden_states=hidden_states,
            reference_points=reference_points,
            **encoded,
        )
        return output if return_dict else output.to_tuple()


class RGNetForVideoGrounding(RGNetPreTrainedModel):
    """
    RGNet with its heads: moment classification (foreground / background) and span regression per decoder query,
    frame saliency, and the window-retrieval logit read from the retrieval token. With `labels`, it computes the loss
    of the configured recipe (Hungarian matching, span L1 + gIoU, label cross-entropy, saliency hinge, the window
    retrieval InfoNCE over in-batch text x window pairs, the negative-window terms).
    """

    def __init__(self, config: RGNetConfig):
        super().__init__(config)
        hidden_size = config.hidden_size
        self.model = RGNetModel(config)
        self.class_head = nn.Linear(hidden_size, 2)
        self.span_head = RGNetMLP(hidden_size, hidden_size, 2, 3)
        self.saliency_frame_projection = nn.Linear(hidden_size, hidden_size)
        self.saliency_text_projection = nn.Linear(hidden_size, hidden_size)
        self.window_retrieval_head = nn.Linear(hidden_size, 1)
        self.criterion = RGNetLoss(config)
        self.post_init()

    # ---------------------------------------------------------------- heads
    def window_logits_from(self, retrieval_embedding: torch.Tensor) -> torch.Tensor:
        """`(batch_size, hidden_size)` -> `(batch_size,)` window-retrieval logits."""
        return self.window_retrieval_head(retrieval_embedding).squeeze(-1)

    def saliency_from(self, video_memory: torch.Tensor, retrieval_embedding: torch.Tensor) -> torch.Tensor:
        """`(batch_size, num_frames, hidden_size)`, `(batch_size, hidden_size)` -> `(batch_size, num_frames)`."""
        frames = self.saliency_frame_projection(video_memory)
        window = self.saliency_text_projection(retrieval_embedding)
        return (frames * window.unsqueeze(1)).sum(-1) / math.sqrt(self.config.hidden_size)

    def moment_predictions(
        self, hidden_states: torch.Tensor, reference_points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per decoder layer: logits `(num_layers, batch_size, num_queries, 2)` and (centre, width) spans of the same
        shape."""
        logits = self.class_head(hidden_states)
        spans = torch.sigmoid(
            self.span_head(hidden_states) + inverse_sigmoid(reference_points, self.config.inverse_sigmoid_eps)
        )
        return logits, spans

    def ground_windows(
        self, encoded: RGNetEncoderOutput, video_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode already encoded windows: logits and spans `(num_layers, batch_size, num_queries, 2)`, saliency
        `(batch_size, num_frames)` and the last decoder layer's states `(batch_size, num_queries, hidden_size)`."""
        hidden_states, reference_points = self.model.decode(
            encoded.video_memory, encoded.frame_position_embeddings, video_mask
        )
        logits, spans = self.moment_predictions(hidden_states, reference_points)
        saliency = self.saliency_from(encoded.video_memory, encoded.retrieval_embedding)
        return logits, spans, saliency, hidden_states[-1]

    # ---------------------------------------------------------------- training-only passes
    def encode_in_batch_pairs(
        self,
        video_features: torch.Tensor,
        video_mask: torch.Tensor,
        text_features: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> tuple[RGNetEncoderOutput, torch.Tensor]:
        """
        Encode every text of the batch with every window of the batch (the official `winret` pairing) for the window
        retrieval loss.

        Returns:
            The encoder output of the positive pairs (text `i` with window `i`, as `self.model.encode` would give
            for the batch) and the window-retrieval logits `(batch_size, batch_size)` of text `i` with window `j`.
        """
        batch_size = video_features.shape[0]
        # Row k = i * B + j pairs text i with window j; the positives are the diagonal k = i * (B + 1).
        paired = self.model.encode(
            video_features.repeat(batch_size, 1, 1),
            video_mask.repeat(batch_size, 1),
            text_features.repeat_interleave(batch_size, 0),
            text_mask.repeat_interleave(batch_size, 0),
        )
        window_retrieval_logits = self.window_logits_from(paired.retrieval_embedding).view(batch_size, batch_size)
        positive_rows = torch.arange(batch_size, device=video_features.device) * (batch_size + 1)
        positives = RGNetEncoderOutput(
            **{name: value[positive_rows] if value is not None else None for name, value in paired.items()}
        )
        return positives, window_retrieval_logits

    def ground_negative_windows(
        self,
        negative_video_features: torch.Tensor | None,
        negative_video_mask: torch.Tensor | None,
        text_features: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """
        Run each text on a window of its video that does not contain its moment, for the negative-window loss terms.

        Returns:
            `{"logits" (batch_size, num_queries, 2), "saliency_scores" (batch_size, num_negative_frames),
            "video_mask" (batch_size, num_negative_frames), "sampler_logits" (batch_size, 1 + num_negative_frames)}`.
        """
        if negative_video_features is None or negative_video_mask is None:
            raise ValueError(
                "config.use_negative_window_loss is on: pass `negative_video_features` and `negative_video_mask`"
            )
        self.model.validate_inputs(negative_video_features, negative_video_mask, text_features, text_mask)
        negative_encoded = self.model.encode(negative_video_features, negative_video_mask, text_features, text_mask)
        negative_logits, _, negative_saliency, _ = self.ground_windows(negative_encoded, negative_video_mask)
        return {
            "logits": negative_logits[-1],
            "saliency_scores": negative_saliency,
            "video_mask": negative_video_mask,
            "sampler_logits": negative_encoded.sampler_logits,
        }

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        video_features: torch.Tensor,
        video_mask: torch.Tensor,
        text_features: torch.Tensor,
        text_mask: torch.Tensor,
        labels: list[dict[str, torch.Tensor]] | None = None,
        negative_video_features: torch.Tensor | None = None,
        negative_video_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> RGNetVideoGroundingOutput | tuple:
        r"""
        Args:
            video_features (`torch.FloatTensor` of shape `(batch_size, num_frames, video_feature_size)`):
                Pre-extracted features of one window per row, zero-padded at the end (un-normalised, as the
                official model receives them).
            video_mask (`torch.FloatTensor` of shape `(batch_size, num_frames)`): 1 = valid frame, 0 = padding.
            text_features (`torch.FloatTensor` of shape `(batch_size, num_tokens, text_feature_size)`):
                Pre-extracted token features of the query of each row.
            text_mask (`torch.FloatTensor` of shape `(batch_size, num_tokens)`): 1 = valid token.
            labels (`list[dict]` of length `batch_size`, *optional*):
                Per window: `"spans"` `(num_spans, 2)` ground-truth (centre, width) normalised by the window's valid
                length; `"saliency_positive_frames"` and `"saliency_negative_frames"` `(num_pairs,)` frame indices
                inside / outside the moment. When given, the loss of the configured recipe is computed; with
                `config.in_batch_window_pairs` every text is also paired with every window of the batch for the
                window-retrieval loss.
            negative_video_features (`torch.FloatTensor` of shape
                `(batch_size, num_negative_frames, video_feature_size)`, *optional*):
                A window of the same video that does not contain the moment, one per row (needed when
                `config.use_negative_window_loss`).
            negative_video_mask (`torch.FloatTensor` of shape `(batch_size, num_negative_frames)`, *optional*).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        config = self.config
        self.model.validate_inputs(video_features, video_mask, text_features, text_mask)
        if labels is not None and len(labels) != video_features.shape[0]:
            raise ValueError(f"`labels` has {len(labels)} entries for {video_features.shape[0]} windows")

        window_retrieval_logits = None
        if labels is not None and config.in_batch_window_pairs and video_features.shape[0] > 1:
            encoded, window_retrieval_logits = self.encode_in_batch_pairs(
                video_features, video_mask, text_features, text_mask
            )
        else:
            encoded = self.model.encode(video_features, video_mask, text_features, text_mask)

        all_logits, all_spans, saliency_scores, last_hidden_state = self.ground_windows(encoded, video_mask)
        window_logits = self.window_logits_from(encoded.retrieval_embedding)
        auxiliary_outputs = [
            {"logits": all_logits[index], "pred_spans": all_spans[index]} for index in range(len(all_logits) - 1)
        ]

        negative_window_outputs = None
        if labels is not None and config.use_negative_window_loss:
            negative_window_outputs = self.ground_negative_windows(
                negative_video_features, negative_video_mask, text_features, text_mask
            )

        output = RGNetVideoGroundingOutput(
            logits=all_logits[-1],
            pred_spans=all_spans[-1],
            window_logits=window_logits,
            window_retrieval_logits=window_retrieval_logits,
            saliency_scores=saliency_scores,
            sampler_logits=encoded.sampler_logits,
            sampler_selection=encoded.sampler_selection,
            auxiliary_outputs=auxiliary_outputs,
            negative_window_outputs=negative_window_outputs,
            last_hidden_state=last_hidden_state,
            retrieval_embedding=encoded.retrieval_embedding,
        )
        if labels is not None:
            loss, loss_dict = self.criterion(output, labels, video_mask, encoded.sampler_logits)
            # Rebuilt rather than assigned: a field set after construction would come last in `to_tuple()`, and the
            # loss comes first.
            output = RGNetVideoGroundingOutput(loss=loss, loss_dict=loss_dict, **output)
        return output if return_dict else output.to_tuple()


# `save_pretrained` writes this class into the folder's `auto_map` (see configuration_rgnet.py).
RGNetForVideoGrounding.register_for_auto_class("AutoModel")


__all__ = ["RGNetModel", "RGNetForVideoGrounding", "RGNetPreTrainedModel", "RGNetVideoGroundingOutput"]
