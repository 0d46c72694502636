r"""Attack throughput against the bare forward pass, and how both scale with the batch.

    .venv/bin/python benchmarks/throughput.py --out runs/throughput.json
    .venv/bin/python benchmarks/throughput.py --models cifar10_resnet20_akamaster \
        --sizes 1,14 --executions "auto;incremental=0;call_size=0,incremental=0" \
        --generations 3

(``python -m benchmarks.throughput ...`` from the repository root runs it too.) For each model,
on correctly classified exact CIFAR-10 test images (``--data``):
  * bare forward: ``jit(classifier.predict)`` on random pixels, evaluations/s at each batch
    of ``--forward_batches`` (best of ``--repeats`` after a warm-up call);
  * candidate evaluation: one image's batch of ``--popsize`` random ``--pixels``-pixel
    candidates through each execution's ``Evaluator.candidates`` (the attack's black box:
    the stem once plus a window per changed pixel when incremental, the whole net
    otherwise), compiled as the attacks compile it (``Evaluator.program``);
  * the attack: ``pixeljax.attack(models.load(name), ...)`` (DE, ``--pixels`` pixels,
    population ``--popsize``, early stopping off so every attack runs every generation, one
    segment), queries/s and s/image for each number of images per XLA call (``--sizes``)
    times each execution (``--executions``), after a warm-up call so compile time is
    excluded, with its ratio to the fastest bare forward measured.
An execution is ``auto`` (the engine's choice, ``pixeljax.sparse.evaluator.choose_execution``)
or comma-separated ``field=value`` pairs of ``pixeljax.Execution`` to insist on, the rest
chosen: ``incremental=0`` is the whole net per candidate, ``call_size=0,incremental=0`` the
engine before fixed-size model calls. The execution each ran with is recorded. The attacks run
on the mesh attacks use by default (``pixeljax.sharding.default_mesh``: importing pixeljax
splits the CPU into one device per core). Everything runs in this one process, one
measurement after another; run nothing else on the machine meanwhile. Prints the tables and
writes the JSON atomically (``--out``).
"""
import argparse
import dataclasses
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10_test_exact1017.npz"))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402

import pixeljax  # noqa: E402  (splits the CPU into one device per core before JAX starts)
from pixeljax.sparse.evaluator import model_parts  # noqa: E402


def _time(fn, repeats: int) -> float:
  fn()  # warm-up / compile
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def parse_execution(spec: str) -> dict:
  """``"auto"`` -> {} (the engine's choice); ``"call_size=50,incremental=0"`` -> the fields of
  ``pixeljax.Execution`` to insist on, typed as the dataclass's."""
  spec = spec.strip()
  if spec in ("", "auto"):
    return {}
  types = {f.name: type(f.default) for f in dataclasses.fields(pixeljax.Execution)}
  out = {}
  for item in spec.split(","):
    name, _, value = item.partition("=")
    name = name.strip()
    if name not in types or not value.strip():
      raise SystemExit(f"error: bad execution setting {item!r}; known fields: {sorted(types)}")
    v = value.strip()
    out[name] = v.lower() in ("1", "true", "yes") if types[name] is bool else int(v)
  return out


def forward_rate(predict, image_shape, batch: int, repeats: int = 3) -> float:
  """Model evaluations per second of ``jit(predict)`` on a batch of ``batch`` images."""
  f = jax.jit(predict)
  x = jax.random.uniform(jax.random.PRNGKey(0), (batch,) + tuple(image_shape), maxval=255.)
  return batch / _time(lambda: jax.block_until_ready(f(x)), repeats)


def candidate_rate(model, image, batch: int, pixels: int = 1, repeats: int = 3, mesh=None,
                   execution=None) -> dict:
  """Evaluations per second of ``batch`` random ``pixels``-pixel candidates of one image
  through the ``Evaluator`` of ``model`` (``execution``: fields to insist on), as an attack
  step runs them."""
  ev = pixeljax.evaluator_for(model, pixels, "de", mesh, execution)
  h, w, c = image.shape
  u = jax.random.uniform(jax.random.PRNGKey(0), (batch, pixels, 2 + c))
  cands = (u * np.array([w, h] + [255.] * c, np.float32)).reshape(batch, -1)
  active = np.ones(batch, bool)
  g = ev.program(lambda im, cs, act: ev.candidates(im, cs, act))
  img = np.asarray(image, np.float32)
  seconds = _time(lambda: jax.block_until_ready(g(img, cands, active)), repeats)
  return dict(evals_per_second=batch / seconds, execution=dataclasses.asdict(ev.execution))


def attack_rate(model, images, labels, pixels: int, popsize: int, generations: int,
                repeats: int = 2, mesh=None, execution=None, attacks_per_call=None) -> dict:
  """Evaluations per second of ``pixeljax.attack`` on ``len(images)`` images (no early stop:
  untargeted p_true < 0 never holds; one segment), all of them in one XLA call unless
  ``attacks_per_call`` says otherwise. ``execution``: fields to insist on (default: the
  engine's choice)."""
  config = pixeljax.PixelAttackConfig(pixels=pixels, popsize=popsize, generations=generations,
                                      stop_probability=0.0)
  mesh = pixeljax.sharding.default_mesh() if mesh is None else mesh
  execution = dict(dict(segment=max(generations, 1)), **(execution or {}))
  ev = pixeljax.evaluator_for(model, pixels, "de", mesh, execution)
  key = jax.random.PRNGKey(0)
  out = {}

  def go():
    out["rec"] = pixeljax.attack(ev, images, labels, key, config, mesh=mesh,
                                 attacks_per_call=attacks_per_call)
  seconds = _time(go, repeats)
  queries = int(np.sum(out["rec"].queries))
  return dict(seconds=seconds, queries=queries, queries_per_second=queries / seconds,
              seconds_per_image=seconds / len(images),
              execution=dataclasses.asdict(ev.execution),
              dealt_to_devices=1 if ev.mesh is None else ev.mesh.size)


def attack_vs_forward(model, images, labels, pixels: int = 1, popsize: int = 400,
                      generations: int = 10, mesh=None, execution=None) -> dict:
  """The attack's queries/s on ``images`` (one call) and the bare forward's (the full net) at
  one population per call, and their ratio. ``model``: a zoo model (the engine's fastest
  evaluation) or a function images -> probabilities (a black box)."""
  a = attack_rate(model, images, labels, pixels, popsize, generations, mesh=mesh,
                  execution=execution)
  f = forward_rate(model_parts(model)[0], images.shape[1:], popsize)
  return dict(images_per_call=len(images), popsize=popsize, generations=generations,
              forward_evals_per_second=f, attack_evals_per_second=a["queries_per_second"],
              ratio=a["queries_per_second"] / f, attack_seconds_per_image=a["seconds_per_image"],
              execution=a["execution"])


def _print(name, args, fwd, cands, rows):
  best = max(fwd.values())
  print(f"\n{name} ({jax.default_backend()}, {len(jax.devices())} device(s), population "
        f"{args.popsize}, {args.generations} generations timed)")
  print(f"  {'forward batch':>13} {'evals/s':>10} {'x best':>7}")
  for b, v in fwd.items():
    print(f"  {b:>13} {v:>10,.0f} {v / best:>7.2f}")
  show = lambda e: (f"{e['call_size']:>5} {int(e['incremental']):>5} {int(e['window']):>6} "
                    f"{int(e.get('strided_window', False)):>7} {e['devices']:>7}")
  head = f"{'call':>5} {'incr.':>5} {'window':>6} {'strided':>7} {'devices':>7}"
  print(f"  candidates of one image ({args.popsize}, {args.pixels} pixel(s)):")
  print(f"  {'execution':<30} {head} {'evals/s':>10} {'x best fwd':>10}")
  for spec, c in cands.items():
    print(f"  {spec:<30} {show(c['execution'])} {c['evals_per_second']:>10,.0f} "
          f"{c['evals_per_second'] / best:>10.2f}")
  print(f"  attacks:\n  {'execution':<30} {'images/call':>11} {head} {'queries/s':>10} "
        f"{'s/image':>8} {'x best fwd':>10}")
  for r in rows:
    print(f"  {r['spec']:<30} {r['images_per_call']:>11} {show(r['execution'])} "
          f"{r['queries_per_second']:>10,.0f} {r['seconds_per_image']:>8.3f} "
          f"{r['queries_per_second'] / best:>10.2f}")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="cifar10_lenet_hyperparticle,cifar10_resnet20_akamaster")
  p.add_argument("--data", default=DATA)
  p.add_argument("--forward_batches", default="50,100,400,1600,6400")
  p.add_argument("--sizes", default="1,4,16", help="images per XLA call of the attack")
  p.add_argument("--executions", default="auto;incremental=0",
                 help="';'-separated executions: auto (the engine's choice) or "
                      "field=value,... of pixeljax.Execution to insist on")
  p.add_argument("--popsize", type=int, default=400)
  p.add_argument("--generations", type=int, default=3)
  p.add_argument("--pixels", type=int, default=1)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--out", default=os.path.join(ROOT, "runs", "throughput.json"))
  args = p.parse_args(argv)
  from pixeljax import data, models, workdir
  specs = {s.strip(): parse_execution(s) for s in args.executions.split(";") if s.strip()}
  ds = data.load(args.data, "test")
  ints = lambda s: [int(v) for v in s.split(",") if v]
  mesh = pixeljax.sharding.default_mesh()
  out = dict(settings=vars(args), backend=jax.default_backend(),
             devices=[str(d) for d in jax.devices()], results={})
  for name in args.models.split(","):
    clf = models.load(name)
    fwd = {b: forward_rate(clf.predict, clf.spec.input_shape, b, args.repeats)
           for b in ints(args.forward_batches)}
    cands, skipped = {}, {}
    for spec, insist in specs.items():
      try:
        cands[spec] = candidate_rate(clf, ds.images[0], args.popsize, args.pixels,
                                     args.repeats, mesh, insist)
      except pixeljax.UserError as e:      # e.g. incremental=1 on a net that cannot split
        skipped[spec] = str(e)
        print(f"{name}: skipping execution {spec!r}: {e}")
    probs = np.asarray(jax.jit(clf.predict)(ds.images[:256].astype(np.float32)))
    idx = np.nonzero(probs.argmax(-1) == ds.labels[:256])[0]
    rows = []
    for n in ints(args.sizes):
      for spec in cands:
        r = attack_rate(clf, ds.images[idx[:n]], ds.labels[idx[:n]], args.pixels,
                        args.popsize, args.generations, repeats=args.repeats, mesh=mesh,
                        execution=specs[spec])
        rows.append(dict(spec=spec, images_per_call=n, **r))
    out["results"][name] = dict(forward={str(b): v for b, v in fwd.items()},
                                candidates=cands, attack=rows, skipped=skipped)
    _print(name, args, fwd, cands, rows)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  workdir.write_json(args.out, out)
  print(f"\nwrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
