"""Is the engine's memory budget real? Peak memory of grounding queries in a 2-hour video, per budget.

    python benchmarks/bench_memory.py [--preset mad] [--minutes 120] [--queries 2] [--budgets-mib 64,128,256,512,1024]
        [--device cpu|cuda]

Each budget runs in a fresh process (so that one run's freed memory does not hide the next one's): the model and the
inputs are built first, then the peak growth during `engine.ground` is measured (CPU: resident set, sampled every
millisecond; CUDA: allocated bytes). Prints one JSON object per budget with the measured peak, the budget and their
ratio (the goal: within 25 % of the budget, never far above it), and the engine's plan (rows per chunk, whether the
encoder states are kept for decoding, queries per group), as `engine.memory_planner` (a `GroundingMemoryPlanner`)
makes it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import gc, json, torch
from rgnet_hf import RGNetConfig, RGNetForVideoGrounding, RGNetGroundingEngine, WindowGrid
from rgnet_hf.evaluation.resources import PeakResidentMemory
torch.manual_seed(0)
device = torch.device({device!r})
config = RGNetConfig.from_preset({preset!r})
model = RGNetForVideoGrounding(config).eval().to(device)
frames = int({minutes} * 60 / config.seconds_per_feature)
video = torch.randn(frames, config.video_feature_size, device=device)
text = torch.nn.functional.normalize(
    torch.randn({queries}, config.max_text_length, config.text_feature_size, device=device), dim=-1
)
sentence = torch.nn.functional.normalize(torch.randn({queries}, config.sentence_feature_size, device=device), dim=-1)
engine = RGNetGroundingEngine(model, memory_budget_bytes={budget})
grid = WindowGrid.for_video(frames, config.window_length, config.window_stride, device, model.dtype)
plan = engine.memory_planner.plan(grid, config.max_text_length, {queries})
gc.collect()
if device.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated()
with PeakResidentMemory() as memory:
    engine.ground(video, text, sentence_features=sentence)
peak = torch.cuda.max_memory_allocated() - before if device.type == "cuda" else memory.peak
print(json.dumps({{"peak": peak, "rows_per_chunk": plan.rows_per_chunk, "keep_states": plan.keep_states,
                  "queries_per_group": plan.queries_per_group, "video_embedding": plan.video_embedding,
                  "num_windows": grid.num_windows}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mad")
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--queries", type=int, default=2)
    parser.add_argument("--budgets-mib", default="64,128,256,512,1024")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for budget_mib in [int(b) for b in args.budgets_mib.split(",")]:
        script = CHILD.format(
            device=args.device,
            preset=args.preset,
            minutes=args.minutes,
            queries=args.queries,
            budget=budget_mib * 2**20,
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        if result.returncode != 0:
            print(json.dumps({"budget_mib": budget_mib, "error": result.stderr[-2000:]}))
            continue
        child = json.loads(result.stdout.strip().splitlines()[-1])
        peak_mib = child.pop("peak") / 2**20
        print(
            json.dumps(
                {
                    "benchmark": "memory",
                    "device": args.device,
                    "preset": args.preset,
                    "video_minutes": args.minutes,
                    "queries": args.queries,
                    "budget_mib": budget_mib,
                    "peak_mib": round(peak_mib, 1),
                    "peak_over_budget": round(peak_mib / budget_mib, 3),
                    **child,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
