r"""Imported models (``models.from_keras`` / ``models.from_torch``) against the zoo's ports of
the same nets, side by side in one process (issue 25).

  .venv/bin/python benchmarks/adapters.py --out results/adapters/adapters.json

Per pair (the akamaster ResNet-20 and ResNet-32 through ``from_torch``; the Hyperparticle
ResNet-32 and LeNet through ``from_keras``, rebuilt from the Keras configs and arrays in ../shared/weights):

  * ``probabilities``: the largest difference from the port over the 1,017 exact CIFAR-10
    test images;
  * ``execution``: what the engine chose for each (``evaluator_for``: incremental, windows);
  * ``attack``: the one-pixel DE attack with the paper's settings (rand1, population 400,
    100 generations, stop at p_true < 5%) on ``--num_images`` correctly classified images
    (``select_images``, seed 0) through both: fooled images, and per image whether the
    pixel, colour and query count agree; seconds, compilation included;
  * ``rate``: queries per second, warm, of the same attack run without early stopping for
    ``--rate_generations`` generations, port and import alternately, ``--repeats`` times each;
    the ratio imported / port is the issue's figure (target >= 0.8).
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
DATA = os.path.join(SHARED, "data", "cifar10_test_exact1017.npz")

PAIRS = {
    "resnet20_torch": ("cifar10_resnet20_akamaster", "torch"),
    "resnet32_torch": ("cifar10_resnet32_akamaster", "torch"),
    "resnet32_keras": ("cifar10_resnet32_hyperparticle", "keras"),
    "lenet_keras": ("cifar10_lenet_hyperparticle", "keras"),
}


def imported(name, source):
  from pixeljax import models
  from pixeljax.models import layers
  weights = os.path.join(SHARED, "weights")
  if source == "torch":
    import torch_nets
    return models.from_torch(torch_nets.load(name, weights), input_shape=(32, 32, 3))
  import test_adapters   # the Keras 2 config reader the tests use
  net = test_adapters.keras_from_config(os.path.join(weights, f"{name}.keras_config.json"))
  test_adapters.set_keras_2_weights(net, np.load(os.path.join(weights, f"{name}.npz")))
  return models.from_keras(net, preprocess=layers.KERAS_CIFAR)   # as the port


def probabilities(model, images, batch=256):
  import jax
  f = jax.jit(model.predict)
  return np.concatenate([np.asarray(f(images[i:i + batch].astype(np.float32)))
                         for i in range(0, len(images), batch)])


def run_attack(pixeljax, model, images, labels, ids, config):
  import jax
  t0 = time.perf_counter()
  rec = pixeljax.attack(model, images, labels, jax.random.PRNGKey(0), config, image_ids=ids)
  return rec, time.perf_counter() - t0


def pair(key, args):
  import pixeljax
  from pixeljax import data, models
  name, source = PAIRS[key]
  port, other = models.load(name), imported(name, source)
  ds = data.load(DATA, "test")
  out = {"port": name, "source": source, "import_metadata": other.metadata}
  diff = np.abs(probabilities(port, ds.images) - probabilities(other, ds.images))
  out["probabilities_max_abs_diff"] = float(diff.max())
  mesh = pixeljax.sharding.default_mesh()
  out["execution"] = {w: pixeljax.evaluator_for(m, 1, "de", mesh).execution.__dict__
                      for w, m in (("port", port), ("import", other))}
  ids = np.sort(pixeljax.select_images(port, ds.images, ds.labels, args.num_images, 0))
  x, y = ds.images[ids], ds.labels[ids]
  paper = pixeljax.PixelAttackConfig(pixels=1)
  recs = {}
  for w, m in (("port", port), ("import", other)):
    recs[w], seconds = run_attack(pixeljax, m, x, y, ids, paper)
    out.setdefault("attack_seconds", {})[w] = seconds
  a, b = recs["port"], recs["import"]
  out["attack"] = {
      "image_ids": ids.tolist(),
      "fooled_port": a.success.tolist(), "fooled_import": b.success.tolist(),
      "same_fooled": bool((a.success == b.success).all()),
      "same_queries": (a.queries == b.queries).tolist(),
      "same_pixels": [bool(np.array_equal(p, q)) for p, q in zip(a.pixels, b.pixels)],
      "queries_port": a.queries.tolist(), "queries_import": b.queries.tolist()}
  # The rate: no early stop (p_true < 0 never holds), compiled once before timing.
  steady = pixeljax.PixelAttackConfig(pixels=1, stop_probability=0.0,
                                      generations=args.rate_generations)
  for m in (port, other):
    run_attack(pixeljax, m, x, y, ids, steady)
  rates = {"port": [], "import": []}
  for _ in range(args.repeats):
    for w, m in (("port", port), ("import", other)):
      rec, seconds = run_attack(pixeljax, m, x, y, ids, steady)
      rates[w].append(float(rec.queries.sum()) / seconds)
  out["queries_per_second"] = rates
  out["rate_ratio_import_over_port"] = float(np.median(rates["import"]) /
                                             np.median(rates["port"]))
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--pairs", default=",".join(PAIRS))
  p.add_argument("--num_images", type=int, default=8)
  p.add_argument("--rate_generations", type=int, default=10)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default="runs/adapters.json")
  args = p.parse_args()
  import jax
  from pixeljax import cli
  results = {"settings": vars(args), "jax": jax.__version__, "versions": cli.versions(),
             "devices": [str(d) for d in jax.devices()], "pairs": {}}
  for key in args.pairs.split(","):
    r = pair(key, args)
    results["pairs"][key] = r
    print(f"{key}: max |p - p_port| {r['probabilities_max_abs_diff']:.2e}; "
          f"execution port {r['execution']['port']} import {r['execution']['import']}; "
          f"attack: same fooled {r['attack']['same_fooled']} "
          f"({sum(r['attack']['fooled_port'])}/{len(r['attack']['fooled_port'])}), "
          f"same queries {sum(r['attack']['same_queries'])}, same pixels "
          f"{sum(r['attack']['same_pixels'])}; seconds port {r['attack_seconds']['port']:.1f} "
          f"import {r['attack_seconds']['import']:.1f}; queries/s port "
          f"{np.median(r['queries_per_second']['port']):.0f} import "
          f"{np.median(r['queries_per_second']['import']):.0f}: ratio "
          f"{r['rate_ratio_import_over_port']:.2f}", flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out + ".tmp", "w") as f:
    json.dump(results, f, indent=1)
  os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
  main()
