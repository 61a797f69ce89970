#!/usr/bin/env bash
# The GPU check (under 5 minutes on one GPU): CUDA parity, the engine's modes side by side (reference,
# baseline, exact, bf16, compile), the tiled feed-forward, fast-mode accuracy on the parity fixtures, the memory
# budget, training-step cost in fp32 and bf16, video extraction (decode / encode / whole path, where it is bound, and
# with 8 decoding workers that run the image processor too), parallel decoding (1 to 8 worker processes against one,
# with and without the image processor, one long video and a folder of short ones), library search latency (a generated 10-hour library, depth
# 200, float32 and bfloat16 with central windows: past the pre-filter a query's work depends on the depth, not on the
# library's size).
# Run from the repository root; results go to $OUT (default /tmp/out). Each step has its own time limit.
#   benchmarks/device_check.sh            # on the GPU
#   benchmarks/device_check.sh --cpu      # dry run on CPU at small sizes (checks the script, not the speed)
set -u
export PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PWD/src:/tmp/site"
else
  export PYTHONPATH="$PWD/src"
fi
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
MODES=reference,baseline,exact,bf16,fp16,bf16_rescored,fp16_rescored  # the engine benchmark's modes (Ego4D)
MAD_MODES=reference,baseline,exact,bf16,fp16_rescored  # MAD adds compile; fewer modes fit its time limit
if [ "${1:-}" = "--cpu" ]; then
  DEVICE=cpu; MAD="--minutes 3 --queries 1 --repeats 1 --modes $MAD_MODES"; EGO="--minutes 2 --queries 2 --repeats 1 --modes $MODES"
  MEMORY="--minutes 3 --queries 1 --budgets-mib 64"; TRAIN="--batch-size 2 --steps 1 --recipe ego4d"
  SCALE=20  # a CPU is far slower: the dry run checks that every step runs, not how fast
  echo "cpu dry run" | tee "$OUT/gpu.txt"
else
  DEVICE=cuda; MAD="--minutes 120 --queries 32 --repeats 1 --modes $MAD_MODES"
  EGO="--minutes 8 --queries 64 --repeats 2 --modes $MODES"
  MEMORY="--minutes 120 --queries 8 --budgets-mib 64,256,1024,4096"; TRAIN=""
  SCALE=1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
fi
$PYTHON -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" 2>&1 | tee "$OUT/versions.txt"
step() { local limit=$(( $1 * SCALE )); shift; echo "== $*" >&2; local t0=$(date +%s); timeout "$limit" "$@"; echo "== rc=$? in $(( $(date +%s) - t0 )) s" >&2; }
step 35 $PYTHON tests/gpu_parity.py --device $DEVICE > "$OUT/parity.json" 2>> "$OUT/log.txt"
step 95 $PYTHON benchmarks/bench_engine.py --device $DEVICE --preset mad $MAD --compile >> "$OUT/bench.jsonl" 2>> "$OUT/log.txt"
step 40 $PYTHON benchmarks/bench_engine.py --device $DEVICE --preset ego4d $EGO >> "$OUT/bench.jsonl" 2>> "$OUT/log.txt"
step 15 $PYTHON benchmarks/bench_feed_forward.py --device $DEVICE >> "$OUT/bench.jsonl" 2>> "$OUT/log.txt"
step 20 $PYTHON benchmarks/bench_fast_mode_accuracy.py --device $DEVICE --skip-synthetic >> "$OUT/bench.jsonl" 2>> "$OUT/log.txt"
step 40 $PYTHON benchmarks/bench_memory.py --device $DEVICE $MEMORY >> "$OUT/bench.jsonl" 2>> "$OUT/log.txt"
if [ "$DEVICE" = cuda ]; then EXTRACT="--seconds 300 --width 1280 --height 720 --batch-size 256 --skip-cpu --decode-workers 8"; else EXTRACT="--seconds 4 --decode-workers 2"; fi
step 80 $PYTHON benchmarks/bench_extraction.py $EXTRACT 2>> "$OUT/log.txt" | $PYTHON -c "import json, sys; print(json.dumps(json.load(sys.stdin)))" >> "$OUT/bench.jsonl"
if [ "$DEVICE" = cuda ]; then DECODE="--seconds 120 --width 1280 --height 720 --workers 1 2 4 8 --image-processor --short-videos 32"; else DECODE="--seconds 10 --workers 1 2 --image-processor --short-videos 4 --short-seconds 2"; fi
step 90 $PYTHON benchmarks/bench_decoding.py $DECODE 2>> "$OUT/log.txt" | $PYTHON -c "import json, sys; print(json.dumps(json.load(sys.stdin)))" >> "$OUT/bench.jsonl"
if [ "$DEVICE" = cuda ]; then LIBRARY="--latency-hours 10 --latency-queries 8"; else LIBRARY="--latency-hours 0.5 --latency-queries 1 --latency-model small"; fi
step 60 $PYTHON benchmarks/bench_library_search.py --latency-only --device $DEVICE --index-hours "" --latency-depths 200 --exhaustive-max-hours 0 --latency-modes bfloat16/central $LIBRARY 2>> "$OUT/log.txt" | $PYTHON -c "import json, sys; print(json.dumps(json.load(sys.stdin)))" >> "$OUT/bench.jsonl"
step 55 $PYTHON benchmarks/bench_training_step.py --device $DEVICE $TRAIN >> "$OUT/bench.jsonl" 2>> "$OUT/log.txt"
grep -h "rc=\|Error\|error" "$OUT/log.txt" | tail -20
