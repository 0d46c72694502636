r"""The library call against the CLI, and the exhaustive sweep, side by side in one run.

  .venv/bin/python benchmarks/library.py --model cifar10_resnet20_akamaster --num_images 10 \
      --out runs/library/resnet20.json

Each measurement runs in its own process, one after the other, on the same images (drawn as
the CLI draws them: ``pixeljax.select_images`` over the exact CIFAR-10 test images, seed 0):

  * ``library``: ``pixeljax.attack(models.load(model), ...)`` as a user writes it -- one call,
    wall seconds including compilation;
  * ``cli``: ``experiments/one_pixel.py`` on the same settings; its own record of the attack
    time (``attack_seconds`` of results.json: the runner's calls, compilation included);
    both must give the same records (the same key, images and execution);
  * ``sweep``: ``pixeljax.exhaustive_one_pixel`` over every pixel x the 8 cube corners of
    ``--sweep_images`` images, through the model (the engine's evaluator) and through its
    bare ``predict`` (a black box, the full net per query), cold (compile included) and warm.

Prints the ratios (library / CLI s/image; sweep queries/s model / black box) and writes one
JSON with every figure, the settings and each worker's environment.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "../shared/data/cifar10_test_exact1017.npz"


def _setup(args):
  import pixeljax
  from pixeljax import data, models
  clf = models.load(args.model)
  ds = data.load(DATA, "test")
  ids = np.sort(pixeljax.select_images(clf, ds.images, ds.labels, args.num_images, args.seed))
  return pixeljax, clf, ds, ids


def _config(pixeljax, args):
  return pixeljax.PixelAttackConfig(pixels=args.pixels, strategy=args.strategy,
                                    stop=args.stop, generations=args.generations)


def worker_library(args):
  import jax
  pixeljax, clf, ds, ids = _setup(args)
  t0 = time.perf_counter()
  rec = pixeljax.attack(clf, ds.images[ids], ds.labels[ids], jax.random.PRNGKey(args.seed),
                        _config(pixeljax, args), image_ids=ids)
  seconds = time.perf_counter() - t0
  ev = pixeljax.evaluator_for(clf, args.pixels, "de", pixeljax.sharding.default_mesh())
  return dict(seconds=seconds, seconds_per_image=seconds / len(ids), image_ids=ids.tolist(),
              queries=int(rec.queries.sum()), successes=int(rec.success.sum()),
              execution=ev.execution.__dict__,
              records={k: np.asarray(v).tolist() for k, v in rec.as_dict().items()
                       if k in ("success", "queries", "pixels", "success_query")})


def worker_cli(args):
  folder = tempfile.mkdtemp(prefix="library_bench_")
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "one_pixel.py"),
         f"--config.model={args.model}", f"--config.data={DATA}",
         f"--config.num_images={args.num_images}", f"--config.seed={args.seed}",
         f"--config.pixels=({args.pixels},)", f"--config.attack.strategy={args.strategy}",
         f"--config.attack.stop={args.stop}", f"--config.attack.generations={args.generations}",
         "--config.figures=False", "--config.runtime.progress=False", "--workdir", folder]
  t0 = time.perf_counter()
  subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
  wall = time.perf_counter() - t0
  with open(os.path.join(folder, "results.json")) as f:
    res = json.load(f)
  m = res["metrics"][f"{args.pixels}px"]
  with np.load(os.path.join(folder, f"records_untargeted_{args.pixels}px.npz")) as d:
    order = np.argsort(d["image_id"])
    records = {k: d[k][order].tolist() for k in ("success", "queries", "pixels",
                                                 "success_query")}
  return dict(attack_seconds=m["attack_seconds"], wall_seconds=wall,
              seconds_per_image=m["attack_seconds"] / m["attacks"],
              image_ids=sorted(res["image_ids"]), execution=m["execution"], records=records)


def worker_sweep(args):
  pixeljax, clf, ds, ids = _setup(args)
  ids = ids[:args.sweep_images]
  images, labels = ds.images[ids], ds.labels[ids]
  out = {}
  for name, model in (("model", clf), ("black_box", clf.predict)):
    runs = []
    for _ in range(2):                     # cold (compile included), then warm
      t0 = time.perf_counter()
      ex = pixeljax.exhaustive_one_pixel(model, images, labels)
      runs.append(time.perf_counter() - t0)
    queries = int(ex["queries"].sum())
    out[name] = dict(cold_seconds=runs[0], warm_seconds=runs[1], queries=queries,
                     queries_per_second_cold=queries / runs[0],
                     queries_per_second_warm=queries / runs[1],
                     fooled=ex["fooled"].tolist(),
                     fooling_changes=ex["num_fooling_changes"].tolist())
  return out


WORKERS = dict(library=worker_library, cli=worker_cli, sweep=worker_sweep)


def _spawn(args, worker):
  with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
    out = f.name
  argv = [f"--{k}={v}" for k, v in vars(args).items()
          if v is not None and k not in ("out", "worker", "worker_out")]
  subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--worker", worker,
                  "--worker_out", out], check=True, cwd=ROOT)
  with open(out) as f:
    return json.load(f)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="cifar10_resnet20_akamaster")
  ap.add_argument("--num_images", type=int, default=10)
  ap.add_argument("--sweep_images", type=int, default=4)
  ap.add_argument("--pixels", type=int, default=1)
  ap.add_argument("--strategy", default="rand1")
  ap.add_argument("--stop", default="paper")
  ap.add_argument("--generations", type=int, default=100)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--parts", default="library,cli,sweep")
  ap.add_argument("--out", default=None)
  ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--worker_out", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  os.chdir(ROOT)
  if args.worker:
    sys.path.insert(0, ROOT)
    import jax
    result = WORKERS[args.worker](args)
    result["environment"] = dict(jax=jax.__version__, devices=[str(d) for d in jax.devices()],
                                 load=os.getloadavg())
    with open(args.worker_out, "w") as f:
      json.dump(result, f)
    return
  parts = [p for p in args.parts.split(",") if p]
  res = {p: _spawn(args, p) for p in parts}
  res["settings"] = vars(args)
  lines = []
  if "library" in res and "cli" in res:
    lib, cli = res["library"], res["cli"]
    same = lib["records"] == cli["records"] and lib["image_ids"] == cli["image_ids"]
    res["library_over_cli"] = lib["seconds_per_image"] / cli["seconds_per_image"]
    res["same_records"] = same
    lines.append(f"{args.model}, {args.num_images} images, {args.pixels} px, {args.strategy}, "
                 f"stop {args.stop}: library {lib['seconds_per_image']:.3f} s/image, CLI "
                 f"{cli['seconds_per_image']:.3f} s/image (ratio "
                 f"{res['library_over_cli']:.2f}); same records: {same}")
  if "sweep" in res:
    m, b = res["sweep"]["model"], res["sweep"]["black_box"]
    for kind in ("cold", "warm"):
      key = f"queries_per_second_{kind}"
      lines.append(f"exhaustive sweep, {args.sweep_images} images x 8,192 ({kind}): model "
                   f"{m[key]:,.0f} queries/s, black box {b[key]:,.0f} (ratio "
                   f"{m[key] / b[key]:.2f})")
    res["sweep_same_results"] = (m["fooled"] == b["fooled"]
                                 and m["fooling_changes"] == b["fooling_changes"])
    lines.append(f"same fooled images and fooling changes: {res['sweep_same_results']}")
  print("\n".join(lines))
  if args.out:
    from pixeljax.workdir import write_json
    write_json(args.out, res)


if __name__ == "__main__":
  main()
