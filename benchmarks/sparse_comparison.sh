#!/usr/bin/env bash
# Issue 11's comparison on one net: correctly classified exact CIFAR-10 test images (seed 0),
# k = 1, 3, 5, 10, four methods under one stopping rule (first success): Sparse-RS and
# CornerSearch (10,000 queries untargeted, 100,000 targeted), DE best1bin and DE rand1
# (population 400, 100 generations: 40,400 queries). One run after the other; each workdir
# resumes from its saved chunks (ATTACKS_PER_CALL attacks each, default 100), so rerunning
# after an interruption loses no finished chunk. Then the side-by-side table and curves
# (compare_methods). TARGETED=1 runs the targeted variants (every other class of each image);
# further arguments are --config overrides for all four runs.
#   bash benchmarks/sparse_comparison.sh MODEL NUM_IMAGES OUT_DIR [--config.x=y ...]
#   bash benchmarks/sparse_comparison.sh cifar10_lenet_hyperparticle 500 results/sparse/lenet500
#   bash benchmarks/sparse_comparison.sh cifar10_resnet20_akamaster 100 results/sparse/resnet20_100
#   TARGETED=1 bash benchmarks/sparse_comparison.sh cifar10_lenet_hyperparticle 10 \
#       results/sparse/lenet_targeted10 '--config.pixels=(1,3)' --config.attack.max_queries=40400
set -euo pipefail
MODEL=${1:?model}; NUM=${2:?number of images}; OUT=${3:?output folder}; shift 3
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/cifar10_test_exact1017.npz}
SUFFIX=${TARGETED:+_targeted}
COMMON=(--config.model="$MODEL" --config.data="$DATA" --config.num_images="$NUM"
        --config.runtime.progress=False --config.runtime.attacks_per_call="${ATTACKS_PER_CALL:-100}"
        "$@")
mkdir -p "$(dirname "$OUT")"
for run in sparse_rs corner_search best1bin_first_success de_first_success; do
  $PY experiments/one_pixel.py --config=configs/one_pixel.py:$run$SUFFIX "${COMMON[@]}" \
    --workdir "$OUT/$run" >> "$OUT.log" 2>&1
  echo "finished $run$SUFFIX" >> "$OUT.log"
done
$PY experiments/compare_methods.py --workdir "$OUT/compare" \
  --config.runs="$OUT/de_first_success,$OUT/best1bin_first_success,$OUT/sparse_rs,$OUT/corner_search" \
  >> "$OUT.log" 2>&1
