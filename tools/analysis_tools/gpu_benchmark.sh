#!/usr/bin/env bash
# The README's GPU benchmark table in one run: ConvNeXt V2 base, bf16 autocast, channels_last,
# batch 128, eager (with and without GRN recompute, and without the fast path) and compiled,
# against timm V2 and V1.
# Usage: bash tools/analysis_tools/gpu_benchmark.sh [OUT_DIR] [BATCH]
set -euo pipefail
OUT=${1:-work_dirs/gpu_benchmark}
BATCH=${2:-128}
BENCH="python3 tools/analysis_tools/benchmark.py --arch base --batch $BATCH --size 224
       --dtype bf16 --channels-last --device cuda --optimizer adamw"
mkdir -p "$OUT"
$BENCH --warmup 3 --iters 10 --repeats 5 --out "$OUT/base_eager.json"
$BENCH --warmup 3 --iters 10 --repeats 5 --recompute-grn off \
    --models mmcnx2 timm_convnextv2 --out "$OUT/base_eager_no_recompute.json"
$BENCH --compile --warmup 3 --iters 10 --repeats 5 \
    --models mmcnx2 timm_convnextv2 timm_convnext --out "$OUT/base_compiled.json"
# The fast path's share on CUDA: the same model with every block on its formula.
$BENCH --warmup 3 --iters 10 --repeats 5 \
    --models mmcnx2 mmcnx2_formula timm_convnextv2 --out "$OUT/base_eager_shares.json"
