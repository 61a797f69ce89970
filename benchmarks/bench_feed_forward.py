"""The inference feed-forward block in tiles against the model's default block, side by side in one run.

    python benchmarks/bench_feed_forward.py [--preset mad] [--rows 41] [--threads N] [--repeats 5] [--device cpu]

Times `norm2(residual + FFN(normalized))` of one encoder layer on `rows` windows of the preset's length (random
weights and inputs): the default path (`RGNetFeedForward.forward`, then the residual sum and the norm) and
`RGNetFeedForward.residual_norm_in_tiles`, interleaved, best of the repeats. Prints one JSON object with the seconds
of each, their ratio, the largest absolute difference and the multiply-add rate of each path.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from rgnet_hf import RGNetConfig
from rgnet_hf.modeling_rgnet import FEED_FORWARD_TILE_ROWS, RGNetEncoderLayer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mad", choices=RGNetConfig.preset_names())
    parser.add_argument("--rows", type=int, default=41, help="windows (41: a 1-hour MAD movie, one query)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = RGNetConfig.from_preset(args.preset)
    torch.manual_seed(0)
    layer = RGNetEncoderLayer(config).eval().to(device)
    shape = (args.rows, config.window_length + 1, config.hidden_size)
    normalized = torch.randn(shape, device=device)

    def default() -> torch.Tensor:
        return layer.norm2(normalized + layer.feed_forward(normalized))

    def tiled() -> torch.Tensor:
        return layer.feed_forward.residual_norm_in_tiles(normalized, normalized, layer.norm2)

    def timed(function) -> tuple[float, torch.Tensor]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        output = function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, output

    with torch.no_grad():
        default(), tiled()  # warm-up
        seconds = {"default": [], "tiled": []}
        for _ in range(args.repeats):
            for name, function in (("default", default), ("tiled", tiled)):
                elapsed, output = timed(function)
                seconds[name].append(elapsed)
        difference = (default() - tiled()).abs().max().item()
    multiply_adds = 2 * shape[0] * shape[1] * config.hidden_size * config.intermediate_size
    best = {name: min(values) for name, values in seconds.items()}
    print(
        json.dumps(
            {
                "benchmark": "feed_forward",
                "device": torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else platform.processor() or platform.machine(),
                "threads": torch.get_num_threads() if device.type == "cpu" else None,
                "preset": args.preset,
                "frames": shape[0] * shape[1],
                "tile_rows": FEED_FORWARD_TILE_ROWS[device.type == "cuda"],
                "seconds_best": {name: round(value, 4) for name, value in best.items()},
                "gflops": {name: round(2 * multiply_adds / value / 1e9, 1) for name, value in best.items()},
                "speedup_tiled_vs_default": round(best["default"] / best["tiled"], 3),
                "max_abs_difference": difference,
            }
        )
    )


if __name__ == "__main__":
    main()
