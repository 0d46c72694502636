#!/usr/bin/env bash
# Issue 11's comparison on one net: correctly classified exact CIFAR-10 test images (seed 0),
# untargeted, k = 1, 3, 5, 10, four methods under one stopping rule (first success): Sparse-RS
# and CornerSearch (10,000 queries), DE best1bin and DE rand1 (population 400, 100 generations:
# 40,400 queries). One run after the other; each workdir resumes from its saved chunks (100
# attacks each), so rerunning after an interruption loses no finished chunk. Then the
# side-by-side table and curves (compare_methods).
#   bash benchmarks/sparse_comparison.sh MODEL NUM_IMAGES OUT_DIR
#   bash benchmarks/sparse_comparison.sh cifar10_lenet_hyperparticle 500 results/sparse/lenet500
#   bash benchmarks/sparse_comparison.sh cifar10_resnet20_akamaster 100 results/sparse/resnet20_100
set -euo pipefail
MODEL=${1:?model}; NUM=${2:?number of images}; OUT=${3:?output folder}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/cifar10_test_exact1017.npz}
COMMON=(--config.model="$MODEL" --config.data="$DATA" --config.num_images="$NUM"
        --config.runtime.progress=False --config.runtime.attacks_per_call=100)
for run in sparse_rs corner_search best1bin_first_success de_first_success; do
  $PY experiments/one_pixel.py --config=configs/one_pixel.py:$run "${COMMON[@]}" \
    --workdir "$OUT/$run" >> "$OUT.log" 2>&1
  echo "finished $run" >> "$OUT.log"
done
$PY experiments/compare_methods.py --workdir "$OUT/compare" \
  --config.runs="$OUT/de_first_success,$OUT/best1bin_first_success,$OUT/sparse_rs,$OUT/corner_search" \
  >> "$OUT.log" 2>&1
