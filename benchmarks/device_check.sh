#!/usr/bin/env bash
# One prepared GPU session: CUDA parity, engine speed, training-step cost, the synthetic comparison.
# Run from the repository root with OUT set; results go to $OUT. Each step has its own time limit.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PWD/src:/tmp/site"
else
  export PYTHONPATH="$PWD/src"
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, accelerate, datasets, pyarrow, h5py; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__)" 2>&1 | tee "$OUT/versions.txt"
step() { local limit=$1; shift; echo "== $*" >&2; local t0=$(date +%s); timeout "$limit" "$@"; echo "== rc=$? in $(( $(date +%s) - t0 )) s" >&2; }
step 60 python3 benchmarks/gpu_parity.py > "$OUT/parity.json" 2>> "$OUT/log.txt"
step 60 python3 benchmarks/bench_engine.py --preset mad --minutes 120 --queries 8 --repeats 2 >> "$OUT/bench.jsonl" 2>> "$OUT/log.txt"
step 45 python3 benchmarks/bench_engine.py --preset mad --minutes 120 --queries 8 --repeats 2 --dtype bf16 >> "$OUT/bench.jsonl" 2>> "$OUT/log.txt"
step 45 python3 benchmarks/bench_engine.py --preset ego4d --minutes 8 --queries 64 --repeats 2 >> "$OUT/bench.jsonl" 2>> "$OUT/log.txt"
step 60 python3 benchmarks/bench_training_step.py >> "$OUT/bench.jsonl" 2>> "$OUT/log.txt"
step 45 python3 benchmarks/bench_training_step.py --mixed-precision bf16 >> "$OUT/bench.jsonl" 2>> "$OUT/log.txt"
step 300 python3 benchmarks/synthetic_comparison.py --output /tmp/comparison --epochs 5 --num-workers 6 > "$OUT/comparison.txt" 2>> "$OUT/log.txt"
cp /tmp/comparison/results.json "$OUT/comparison.json" 2>/dev/null
grep -h "rc=\|Error\|error" "$OUT/log.txt" | tail -20
