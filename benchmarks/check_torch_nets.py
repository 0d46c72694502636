"""Checks the PyTorch rebuilds in torch_nets.py against the original frameworks' outputs.

For each model: max |probs - reference probs| on the first 64 images of the exact CIFAR-10
file (reference = ``<name>.reference.npz``, the original Keras/PyTorch softmax), and accuracy
on all 1,017 images against the reference accuracy. Exits 1 on any mismatch.

    .venv/bin/python benchmarks/check_torch_nets.py [--threads 1] [--models a,b] [--tol 1e-5]
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_nets  # noqa: E402

# Accuracies on the 1,017 exact images (weights README).
EXPECTED_ACCURACY = {
    "cifar10_lenet_hyperparticle": 0.749,
    "cifar10_resnet20_akamaster": 0.916,
    "cifar10_resnet32_akamaster": 0.928,
}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", default=",".join(torch_nets.MODELS))
  ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: default)")
  ap.add_argument("--tol", type=float, default=1e-5, help="max abs prob diff allowed")
  args = ap.parse_args(argv)
  if args.threads > 0:
    torch.set_num_threads(args.threads)

  x, y = torch_nets.load_cifar10_exact()
  print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, images {len(x)}")
  ok = True
  for name in args.models.split(","):
    ref = np.load(os.path.join(torch_nets.WEIGHTS_DIR, f"{name}.reference.npz"))
    t0 = time.perf_counter()
    model = torch_nets.load(name)
    p = torch_nets.probs(model, x)
    dt = time.perf_counter() - t0
    idx = ref["image_index"]
    diff = float(np.abs(p[idx] - ref["probs"]).max())
    acc = float((p.argmax(-1) == y).mean())
    ref_acc = float(ref["accuracy_1017"])
    # Accuracy must match the reference to the image (1/1017), and the README's rounding.
    acc_ok = abs(acc - ref_acc) < 0.5 / len(y) and abs(acc - EXPECTED_ACCURACY[name]) < 5e-4
    diff_ok = diff <= args.tol
    ok &= acc_ok and diff_ok
    print(f"{name:30s} max|dp| (64 imgs) {diff:.2e} [{'ok' if diff_ok else 'FAIL'}]  "
          f"acc {acc:.4f} ({int(round(acc * len(y)))}/{len(y)}; ref {ref_acc:.4f}, "
          f"README {EXPECTED_ACCURACY[name]:.3f}) [{'ok' if acc_ok else 'FAIL'}]  {dt:.2f}s")
  print("ALL OK" if ok else "MISMATCH")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
