"""The grounding engine's memory planner: its per-row estimates against the measured live tensors of the encoder, and
whole grounding runs against their budget."""

from __future__ import annotations

import weakref

import pytest
import torch
from conftest import tiny_config
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from rgnet_hf import (
    GroundingMemoryPlan,
    GroundingMemoryPlanner,
    RGNetForVideoGrounding,
    RGNetGroundingEngine,
    WindowGrid,
)
from rgnet_hf.memory_planning import CPU_ALLOCATOR_HEADROOM
from rgnet_hf.modeling_rgnet import FEED_FORWARD_TILE_ROWS


class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of the tensor storages that the operators run in the block create and keep alive (kernels'
    internal scratch buffers are not seen). Exact and deterministic, unlike the process's resident set."""

    def __init__(self) -> None:
        super().__init__()
        self.references: dict[int, list[int]] = {}  # storage address -> [live tensors, bytes]
        self.live = 0
        self.peak = 0

    def _release(self, address: int) -> None:
        entry = self.references[address]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self.references[address]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(output)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            address = storage.data_ptr()
            if address == 0:
                continue
            if address in self.references:
                self.references[address][0] += 1
            else:
                self.references[address] = [1, storage.nbytes()]
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            weakref.finalize(tensor, self._release, address)
        return output


def _model(attention: str) -> RGNetForVideoGrounding:
    torch.manual_seed(0)
    config = tiny_config(hidden_size=64, intermediate_size=128, window_length=60, max_text_length=12)
    config._attn_implementation = attention
    return RGNetForVideoGrounding(config).eval()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("video_embedding", ["shared", "per_chunk", "per_row"])
def test_per_row_estimate_bounds_the_measured_encoder_activations(attention, video_embedding):
    """The planner's bytes per encoded row against the growth of the encoder's live tensors per added row (two chunk
    sizes, both past one feed-forward tile, so the fixed tile buffer cancels): never below it (a chunk would overrun
    its budget), at most twice it (the budget would be wasted). A layer change that adds activations fails here."""
    model = _model(attention)
    config = model.config
    engine = RGNetGroundingEngine(model, share_video_work=video_embedding != "per_row")
    num_frames, num_tokens, num_queries = 600, 12, 4
    grid = WindowGrid.for_video(num_frames, config.window_length, config.window_stride, model.device, model.dtype)
    video = torch.randn(num_frames, config.video_feature_size)
    text = torch.randn(num_queries, num_tokens, config.text_feature_size)
    text_mask = torch.ones(num_queries, num_tokens)
    plan = GroundingMemoryPlan(1, False, num_queries, video_embedding)
    small, large = 24, 56
    assert small * (grid.window_length + 1) > FEED_FORWARD_TILE_ROWS[0]
    peaks = {}
    with torch.no_grad():
        # the engine's own encoder inputs for this path, so that the rows run exactly as grounding runs them
        inputs = engine._encoder_inputs(model, grid, video, text, text_mask, plan)
        for rows in (small, large):
            queries = torch.arange(rows) % num_queries
            windows = torch.arange(rows) % grid.num_windows
            with LiveTensorPeak() as measured:
                encoded = inputs.encode(model, grid, queries, windows)
                del encoded
            peaks[rows] = measured.peak
    measured_per_row = (peaks[large] - peaks[small]) / (large - small)
    estimate = engine.memory_planner.bytes_per_encoded_row(grid.window_length, num_tokens, video_embedding)
    assert measured_per_row <= estimate <= 2 * measured_per_row, (measured_per_row, estimate)


@pytest.mark.parametrize("share_video_work", [True, False])
@pytest.mark.parametrize("budget_mib", [1, 4, 16])
def test_grounding_stays_within_its_budget_and_uses_it(share_video_work, budget_mib):
    """Everything `ground` allocates on a 3000-feature video (embedded video, chunks, kept states, matching windows)
    stays under the budget, and a larger budget is used (chunks grow) rather than ignored."""
    model = _model("sdpa")
    config = model.config
    budget = budget_mib * 2**20
    engine = RGNetGroundingEngine(model, memory_budget_bytes=budget, share_video_work=share_video_work)
    video = torch.randn(3000, config.video_feature_size)
    text = torch.randn(3, 12, config.text_feature_size)
    sentence = torch.randn(3, config.sentence_feature_size)
    with LiveTensorPeak() as measured:
        engine.ground(video, text, sentence_features=sentence)
    assert budget / (4 * CPU_ALLOCATOR_HEADROOM) <= measured.peak <= budget, (measured.peak, budget)


def test_plan_follows_the_budget():
    model = _model("sdpa")
    plans = [GroundingMemoryPlanner(model, budget).plan_for_video(3000, 12, 3) for budget in (2**20, 2**22, 2**24)]
    assert [plan.video_embedding for plan in plans] == ["per_chunk", "shared", "shared"]
    assert [plan.keep_states for plan in plans] == [False, True, True]
    assert plans[0].rows_per_chunk <= plans[1].rows_per_chunk < plans[2].rows_per_chunk
    assert plans[2].queries_per_group == 3
    scorer_planner = GroundingMemoryPlanner(model, 2**24, num_models=2, can_keep_states=False)
    assert not scorer_planner.plan_for_video(3000, 12, 3).keep_states
    with pytest.raises(ValueError, match="video_embedding must be one of"):
        GroundingMemoryPlanner(model, 2**20).bytes_per_encoded_row(60, 12, "tiled")
