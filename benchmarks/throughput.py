r"""Attack throughput against the bare forward pass, and how both scale with the batch.

    .venv/bin/python benchmarks/throughput.py --out runs/throughput.json
    .venv/bin/python benchmarks/throughput.py --models cifar10_resnet20_akamaster \
        --sizes 1,14 --eval_batches 0,100,400 --generations 3

For each model, on correctly classified exact CIFAR-10 test images (``--data``):
  * bare forward: ``jit(classifier.predict)`` on random pixels, evaluations/s at each batch
    of ``--forward_batches`` (best of ``--repeats`` after a warm-up call);
  * the attack (DE, ``--pixels`` pixels, population ``--popsize``, early stopping off so every
    attack runs every generation): evaluations/s and s/image for each number of images per
    XLA call (``--sizes``) times each ``eval_batch`` (``--eval_batches``; 0 = every candidate
    of a call in one model call, the engine before micro-batching), after a warm-up call so
    compile time is excluded, with its ratio to the fastest bare forward measured;
  * with ``--incremental 0,1`` (default) each attack runs on the full net (0) and split at its
    first convolution (1, ``Classifier.factored``: the stem once per image, its response
    windows per candidate), and the incremental "forward" is timed too: one image's batch of
    ``--popsize`` one-pixel candidates through ``sparse.incremental.candidate_probs``.
Everything runs in this one process, one measurement after another; run nothing else on
the machine meanwhile. Prints the tables and writes the JSON atomically (``--out``).
"""
import argparse
import os
import sys
import time

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10_test_exact1017.npz"))


def _time(fn, repeats: int) -> float:
  fn()  # warm-up / compile
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def forward_rate(predict, image_shape, batch: int, repeats: int = 3) -> float:
  """Model evaluations per second of ``jit(predict)`` on a batch of ``batch`` images."""
  f = jax.jit(predict)
  x = jax.random.uniform(jax.random.PRNGKey(0), (batch,) + tuple(image_shape), maxval=255.)
  return batch / _time(lambda: jax.block_until_ready(f(x)), repeats)


def incremental_rate(factored, image, batch: int, pixels: int = 1, repeats: int = 3) -> float:
  """Evaluations per second of ``batch`` random ``pixels``-pixel candidates of one image,
  evaluated incrementally (stem once, windows per candidate, the head per candidate)."""
  from pixeljax.sparse.incremental import candidate_probs
  f = candidate_probs(factored, 0)
  h, w, c = image.shape
  key = jax.random.PRNGKey(0)
  u = jax.random.uniform(key, (batch, pixels, 2 + c))
  cands = (u * np.array([w, h] + [255.] * c, np.float32)).reshape(batch, -1)
  g = jax.jit(lambda im, cs: f(im, cs, np.ones(batch, bool)))
  img = np.asarray(image, np.float32)
  return batch / _time(lambda: jax.block_until_ready(g(img, cands)), repeats)


def attack_rate(predict, images, labels, pixels: int, popsize: int, generations: int,
                repeats: int = 2, mesh=None, eval_batch=None, attacks_per_call=None,
                incremental=None) -> dict:
  """Evaluations per second of ``attack`` on ``len(images)`` images (no early stop), all of
  them in one XLA call unless ``attacks_per_call`` says otherwise (untargeted: p_true < 0
  never holds)."""
  from pixeljax.sparse import PixelAttackConfig, attack
  from pixeljax.sparse.incremental import modes
  config = PixelAttackConfig(pixels=pixels, popsize=popsize, generations=generations,
                             stop_probability=0.0, segment_iterations=generations,
                             eval_batch=eval_batch, incremental=incremental)
  key = jax.random.PRNGKey(0)
  out = {}

  def go():
    out["rec"] = attack(predict, images, labels, key, config, mesh=mesh,
                        attacks_per_call=attacks_per_call)
  seconds = _time(go, repeats)
  evals = int(np.sum(out["rec"].queries))
  return dict(seconds=seconds, evaluations=evals, evals_per_second=evals / seconds,
              seconds_per_image=seconds / len(images),
              **{k: getattr(config.resolved(**modes(predict)), k)
                 for k in ("eval_batch", "incremental", "local_window")})


def attack_vs_forward(predict, images, labels, pixels: int = 1, popsize: int = 400,
                      generations: int = 10, mesh=None) -> dict:
  """The attack's evaluations/s on ``images`` (one call) and the bare forward's at one
  population per call, and their ratio."""
  a = attack_rate(predict, images, labels, pixels, popsize, generations, mesh=mesh)
  f = forward_rate(predict, images.shape[1:], popsize)
  return dict(images_per_call=len(images), popsize=popsize, generations=generations,
              forward_evals_per_second=f, attack_evals_per_second=a["evals_per_second"],
              ratio=a["evals_per_second"] / f, attack_seconds_per_image=a["seconds_per_image"])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="cifar10_lenet_hyperparticle,cifar10_resnet20_akamaster")
  p.add_argument("--data", default=DATA)
  p.add_argument("--forward_batches", default="50,100,400,1600,6400")
  p.add_argument("--sizes", default="1,4,16", help="images per XLA call of the attack")
  p.add_argument("--eval_batches", default="0,400", help="eval_batch values (0: one call)")
  p.add_argument("--incremental", default="0,1",
                 help="attack the full net (0) and/or the factored one (1)")
  p.add_argument("--popsize", type=int, default=400)
  p.add_argument("--generations", type=int, default=3)
  p.add_argument("--pixels", type=int, default=1)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--out", default=os.path.join(ROOT, "runs", "throughput.json"))
  args = p.parse_args(argv)
  sys.path.insert(0, ROOT)
  from pixeljax import data, models, workdir
  ds = data.load(args.data, "test")
  ints = lambda s: [int(v) for v in s.split(",") if v]
  out = dict(settings=vars(args), backend=jax.default_backend(),
             devices=[str(d) for d in jax.devices()], results={})
  for name in args.models.split(","):
    clf = models.load(name)
    fwd = {b: forward_rate(clf.predict, clf.spec.input_shape, b, args.repeats)
           for b in ints(args.forward_batches)}
    best = max(fwd.values())
    ds_img = ds.images[0]
    inc_fwd = (incremental_rate(clf.factored, ds_img, args.popsize, args.pixels, args.repeats)
               if clf.factored is not None and "1" in args.incremental.split(",") else None)
    probs = np.asarray(jax.jit(clf.predict)(ds.images[:256].astype(np.float32)))
    idx = np.nonzero(probs.argmax(-1) == ds.labels[:256])[0]
    rows = []
    for n in ints(args.sizes):
      for eb in ints(args.eval_batches):
        for inc in ints(args.incremental):
          if inc and clf.factored is None:
            continue
          r = attack_rate(clf.factored if inc else clf.predict, ds.images[idx[:n]],
                          ds.labels[idx[:n]], args.pixels, args.popsize, args.generations,
                          repeats=args.repeats, eval_batch=eb, incremental=bool(inc))
          rows.append(dict(images_per_call=n, **r))
    out["results"][name] = dict(forward={str(b): v for b, v in fwd.items()}, attack=rows,
                                incremental_forward=inc_fwd)
    print(f"\n{name} ({jax.default_backend()}, population {args.popsize}, "
          f"{args.generations} generations timed)")
    print(f"  {'forward batch':>13} {'evals/s':>10} {'x best':>7}")
    for b, v in fwd.items():
      print(f"  {b:>13} {v:>10,.0f} {v / best:>7.2f}")
    if inc_fwd:
      print(f"  {'incremental':>13} {inc_fwd:>10,.0f} {inc_fwd / best:>7.2f}   "
            f"({args.popsize} candidates of one image, {args.pixels} pixel(s))")
    print(f"  {'images/call':>11} {'eval_batch':>10} {'incr.':>5} {'evals/s':>10} "
          f"{'s/image':>8} {'x best fwd':>10}")
    for r in rows:
      print(f"  {r['images_per_call']:>11} {r['eval_batch']:>10} {int(r['incremental']):>5} "
            f"{r['evals_per_second']:>10,.0f} {r['seconds_per_image']:>8.3f} "
            f"{r['evals_per_second'] / best:>10.2f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  workdir.write_json(args.out, out)
  print(f"\nwrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
