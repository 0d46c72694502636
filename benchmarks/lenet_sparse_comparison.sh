#!/usr/bin/env bash
# Issue 11's LeNet comparison: 500 images, four methods, k = 1, 3, 5, 10 (see
# sparse_comparison.sh; resumes from the saved chunks in OUT_DIR).
#   bash benchmarks/lenet_sparse_comparison.sh [OUT_DIR]
set -euo pipefail
exec bash "$(dirname "$0")/sparse_comparison.sh" cifar10_lenet_hyperparticle 500 \
  "${1:-results/sparse/lenet500}"
