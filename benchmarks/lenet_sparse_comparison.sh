#!/usr/bin/env bash
# Issue 11's LeNet comparison: 500 correctly classified exact CIFAR-10 test images (seed 0),
# untargeted, k = 1, 3, 5, 10, four methods under one stopping rule (first success): Sparse-RS
# and CornerSearch (10,000 queries), DE best1bin and DE rand1 (population 400, 100 generations:
# 40,400 queries). Runs one after the other; each workdir resumes from its saved chunks, so
# rerunning the script after an interruption loses no finished chunk. Then the side-by-side.
#   bash benchmarks/lenet_sparse_comparison.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-results/sparse/lenet500}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/cifar10_test_exact1017.npz}
COMMON=(--config.data="$DATA" --config.num_images=500 --config.runtime.progress=False
        --config.runtime.attacks_per_call=100)   # a saved chunk every 100 attacks
for run in sparse_rs corner_search best1bin_first_success de_first_success; do
  $PY experiments/one_pixel.py --config=configs/one_pixel.py:$run "${COMMON[@]}" \
    --workdir "$OUT/$run" >> "$OUT.log" 2>&1
  echo "finished $run" >> "$OUT.log"
done
$PY experiments/compare_methods.py --workdir "$OUT/compare" \
  --config.runs="$OUT/de_first_success,$OUT/best1bin_first_success,$OUT/sparse_rs,$OUT/corner_search" \
  >> "$OUT.log" 2>&1
