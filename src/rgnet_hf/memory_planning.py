"""How the grounding engine cuts one video's work to a memory budget.

[`RGNetGroundingEngine`] encodes every (query, window) row of a video. Holding all of them at once takes far more
memory than a long video's features, so the rows go through the encoder in chunks. [`GroundingMemoryPlanner`] sizes
those chunks from a per-row estimate of the encoder's activations, decides whether the whole video is embedded once
(shared by every query) or per chunk, and whether the scoring pass keeps the encoder states that the decoding of the
best windows reads (otherwise the decoded windows are encoded again).

The estimates follow the live tensors of each encoder path; `tests/test_memory_planning.py` measures them and
`benchmarks/bench_memory.py` measures a whole grounding run against its budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .modeling_rgnet import FEED_FORWARD_TILE_ROWS, RGNetForVideoGrounding
from .windowing import WindowGrid

# On CPU the process's resident set exceeds the live tensors of a chunk: the C allocator keeps freed blocks of the
# chunk's many short-lived, mid-sized temporaries for reuse (up to about 1.5x the live peak with glibc, measured by
# benchmarks/bench_memory.py). Chunk activations are planned with this factor; long-lived buffers (the embedded video,
# kept states) are single allocations and need none. GPU budgets count allocated bytes.
CPU_ALLOCATOR_HEADROOM = 1.5

VIDEO_EMBEDDINGS = ("shared", "per_chunk", "per_row")


@dataclass(frozen=True)
class GroundingMemoryPlan:
    """How one video's work is cut to the memory budget.

    Attributes:
        rows_per_chunk (`int`): (query, window) rows encoded at once.
        keep_states (`bool`): the scoring pass keeps the encoder states that the decoding reads.
        queries_per_group (`int`): queries whose kept states are held at once.
        video_embedding (`str`): `"shared"` (the whole video embedded once into one buffer), `"per_chunk"` (each
            chunk embeds its own windows' frames: no video-sized buffer) or `"per_row"` (each row through the model's
            default path, `share_video_work=False`).
    """

    rows_per_chunk: int
    keep_states: bool
    queries_per_group: int
    video_embedding: str


class GroundingMemoryPlanner:
    """Sizes the grounding engine's work on one video to `memory_budget_bytes`.

    The budget covers what the engine allocates besides the model and the inputs: the embedded video (`"shared"`),
    one encoder chunk's activations and the encoder states kept for the decoding of a group of queries. The video is
    embedded once when that takes at most half of the budget, else per chunk; kept states take at most half of what
    is left (one query's states always fit, or none are kept); the chunks get the rest.

    Args:
        model ([`RGNetForVideoGrounding`]): the grounding model (its config, dtype, device and attention
            implementation set the sizes).
        memory_budget_bytes (`int`): the budget.
        share_video_work (`bool`, defaults to `True`): `False` plans the reference path (`"per_row"`).
        num_models (`int`, defaults to 1): 2 when a separate window scorer embeds the video too.
        can_keep_states (`bool`, defaults to `True`): `False` when the scoring model is not the grounding model (its
            states cannot be decoded).
    """

    def __init__(
        self,
        model: RGNetForVideoGrounding,
        memory_budget_bytes: int,
        share_video_work: bool = True,
        num_models: int = 1,
        can_keep_states: bool = True,
    ):
        self.config = model.config
        self.element_size = torch.finfo(model.dtype).bits // 8
        self.on_cuda = model.device.type == "cuda"
        self.memory_budget_bytes = int(memory_budget_bytes)
        self.share_video_work = share_video_work
        self.num_models = num_models
        self.can_keep_states = can_keep_states

    @property
    def headroom(self) -> float:
        """The factor on chunk activations: [`CPU_ALLOCATOR_HEADROOM`] on CPU, 1 on GPUs."""
        return 1.0 if self.on_cuda else CPU_ALLOCATOR_HEADROOM

    def bytes_per_encoded_row(self, num_frames: int, num_tokens: int, video_embedding: str) -> int:
        """Peak activation bytes of one (query, window) row of `num_frames` frames and `num_tokens` text tokens
        through the encoder, without autograd and without the allocator headroom."""
        if video_embedding not in VIDEO_EMBEDDINGS:
            raise ValueError(f"video_embedding must be one of {VIDEO_EMBEDDINGS}, got {video_embedding!r}")
        config = self.config
        sequence = num_frames + 1
        hidden = config.hidden_size
        eager = config._attn_implementation == "eager"
        if video_embedding == "per_row":
            # the default path: the feed-forward's inner states over all frames dominate
            attention = 3 * sequence * max(sequence, num_tokens)
            if eager:
                attention += 2 * config.num_attention_heads * sequence * max(sequence, num_tokens)
            activations = (
                num_frames * (config.video_feature_size + 8 * hidden + 5 * config.intermediate_size // 2)
                + num_tokens * (config.text_feature_size + 2 * hidden)
                + attention
            )
            return activations * self.element_size
        # fast inference: about ten frame-by-hidden tensors live at once and the self-attention bias; the
        # feed-forward's inner states are one tile per chunk (`bytes_per_chunk`)
        activations = 10 * sequence * hidden + sequence * sequence + 2 * num_tokens * hidden
        if eager:
            activations += 2 * config.num_attention_heads * sequence * max(sequence, num_tokens)
        if video_embedding == "per_chunk":
            activations += num_frames * (config.video_feature_size + 2 * hidden)
        return activations * self.element_size

    def bytes_per_chunk(self, video_embedding: str) -> int:
        """Bytes a chunk holds whatever its number of rows: the tiled feed-forward's buffer of inner states."""
        if video_embedding == "per_row":
            return 0
        return FEED_FORWARD_TILE_ROWS[self.on_cuda] * self.config.intermediate_size * self.element_size

    def bytes_per_kept_row(self, num_frames: int) -> int:
        """Bytes of the encoder states kept for one (query, window) row."""
        return (num_frames + 2) * self.config.hidden_size * self.element_size

    def embedded_video_bytes(self, grid: WindowGrid) -> int:
        """Bytes of the embedded (zero-padded) video, for every model that embeds it."""
        return self.num_models * grid.padded_length() * self.config.hidden_size * self.element_size

    def plan(self, grid: WindowGrid, num_tokens: int, num_queries: int) -> GroundingMemoryPlan:
        """The plan for `num_queries` queries of `num_tokens` (padded) tokens on the windows of `grid`."""
        kept_per_query = grid.num_windows * self.bytes_per_kept_row(grid.window_length)
        return self._plan(self.embedded_video_bytes(grid), grid.window_length, num_tokens, num_queries, kept_per_query)

    def plan_rows(
        self, num_frames: int, window_length: int, num_tokens: int, reserved_bytes: int = 0
    ) -> GroundingMemoryPlan:
        """The plan for explicit rows of `window_length` frames read from a table of `num_frames` frames gathered
        from one or more videos (`RGNetGroundingEngine.score_window_rows`): `"shared"` embeds the table once.
        `reserved_bytes` of the budget are held elsewhere (the states a `BestWindowStates` keeps); the plan keeps
        no states of its own (`keep_states` is False)."""
        table_bytes = self.num_models * num_frames * self.config.hidden_size * self.element_size
        return self._plan(table_bytes, window_length, num_tokens, 1, None, reserved_bytes)

    def _plan(
        self,
        video_bytes: int,
        window_length: int,
        num_tokens: int,
        num_queries: int,
        kept_per_query: int | None,
        reserved_bytes: int = 0,
    ) -> GroundingMemoryPlan:
        """`video_bytes`: the embedded frames of the `"shared"` embedding; `kept_per_query`: the bytes of one
        query's kept states (None: none are kept); `reserved_bytes`: budget held elsewhere."""
        budget = self.memory_budget_bytes - reserved_bytes
        if not self.share_video_work:
            video_embedding = "per_row"
        else:
            video_embedding = "shared" if video_bytes <= budget // 2 else "per_chunk"
            if video_embedding == "shared":
                budget -= video_bytes
        budget -= int(self.headroom * self.bytes_per_chunk(video_embedding))
        row_bytes = int(self.headroom * self.bytes_per_encoded_row(window_length, num_tokens, video_embedding))
        keep_states = kept_per_query is not None and self.can_keep_states and kept_per_query + row_bytes <= budget
        group_size = num_queries
        if keep_states:
            group_size = max(
                1, min(num_queries, (budget // 2) // kept_per_query, (budget - row_bytes) // kept_per_query)
            )
        chunk_budget = budget - group_size * kept_per_query if keep_states else budget
        rows_per_chunk = max(1, chunk_budget // row_bytes)
        return GroundingMemoryPlan(int(rows_per_chunk), keep_states, int(group_size), video_embedding)

    def plan_for_video(self, num_frames: int, num_tokens: int, num_queries: int) -> GroundingMemoryPlan:
        """[`GroundingMemoryPlanner.plan`] for a video of `num_frames` features on the config's window grid."""
        grid = WindowGrid.for_video(
            num_frames, self.config.window_length, self.config.window_stride, torch.device("cpu"), torch.float32
        )
        return self.plan(grid, num_tokens, num_queries)


__all__ = ["CPU_ALLOCATOR_HEADROOM", "GroundingMemoryPlan", "GroundingMemoryPlanner"]
