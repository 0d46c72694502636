#!/usr/bin/env bash
# Sparse-RS in pixeljax (JAX, batched) vs the authors' PyTorch code (fra31/sparse-rs, vendored),
# same LeNet weights, the same 100 correctly classified exact CIFAR-10 test images (seed 0),
# untargeted, k = 1 and 3, 10,000 queries, p_init 0.3, margin loss. One tool at a time.
#   bash benchmarks/sparse_rs_vs_authors.sh OUT_DIR     (needs: pip install -e '.[peers]')
set -euo pipefail
OUT=${1:-runs/sparse_rs_vs_authors}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/cifar10_test_exact1017.npz}
mkdir -p "$OUT"
for K in 1 3; do
  /usr/bin/time -f "%e" -o "$OUT/pixeljax_k$K.seconds" \
    $PY experiments/one_pixel.py --config=configs/one_pixel.py:sparse_rs --config.data="$DATA" \
      --config.num_images=100 --config.pixels=$K --config.figures=False \
      --config.runtime.progress=False --workdir "$OUT/pixeljax_k$K" > "$OUT/pixeljax_k$K.log" 2>&1
  /usr/bin/time -f "%e" -o "$OUT/authors_k$K.seconds" \
    $PY benchmarks/sparse_rs_peer.py --model cifar10_lenet_hyperparticle --num_images 100 \
      --seed 0 --k $K --n_queries 10000 --p_init 0.3 --threads 0 --data "$DATA" \
      --out "$OUT/authors_k$K.json" > "$OUT/authors_k$K.log" 2>&1
done
echo "done: $OUT"
