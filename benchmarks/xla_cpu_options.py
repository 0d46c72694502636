r"""Which XLA:CPU options make the shipped nets (and the attack around them) faster, and do they
keep the numbers?

    .venv/bin/python benchmarks/xla_cpu_options.py --models cifar10_lenet_hyperparticle \
        --rounds 3 --out runs/xla_cpu_options.json

Each option set (``--options``, ``;``-separated XLA_FLAGS strings; ``default`` = none) runs in
its OWN process with that XLA_FLAGS, one after the other, ``--rounds`` times round-robin so
machine noise hits all alike. A worker measures, for each model:
  * bare forward: ``jax.jit(classifier.predict)`` at ``--batch`` images (the population of one
    DE attack), evaluations/s, best of timed repeats after a warm-up;
  * the attack: ``throughput.attack_vs_forward`` (DE, 1 pixel, population ``--batch``,
    early stopping off) on ``--attack_images`` correctly classified exact CIFAR-10 images,
    ``--attack_generations`` generations, queries/s, of ``classifier.predict`` as a black box
    (the whole net per candidate, in the engine's calls of 400: its ``execution`` is recorded);
  * compile seconds of both (``pixeljax.compilation``; no persistent cache);
  * the probabilities of the first 256 exact CIFAR-10 test images, compared with the
    ``default`` worker's: max |difference| and top-1 agreement (an option that changes the
    numbers beyond 1e-4 is not a candidate default).
Prints one table (best over rounds, ratio to ``default``) and writes the JSON atomically.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10_test_exact1017.npz"))
YNN_CONV = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
DEFAULT_OPTIONS = ";".join([
    "default",
    YNN_CONV,
    "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,"
    "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_enable_fast_math=true",
])


def worker(args) -> dict:
  import jax
  import throughput as benchmark
  from pixeljax import compilation, data, models
  ds = data.load(args.data, "test")
  out = {}
  for name in args.models.split(","):
    clf = models.load(name)
    c0 = compilation.totals()
    t0 = time.perf_counter()
    fwd = benchmark.forward_rate(clf.predict, clf.spec.input_shape, args.batch,
                                 repeats=args.repeats)
    fwd_s = time.perf_counter() - t0
    probs = np.asarray(jax.jit(clf.predict)(ds.images[:256].astype(np.float32)))
    c1 = compilation.totals()
    ok = probs.argmax(-1) == ds.labels[:256]
    idx = np.nonzero(ok)[0][:args.attack_images]
    att = benchmark.attack_vs_forward(clf.predict, ds.images[idx], ds.labels[idx],
                                      popsize=args.batch,
                                      generations=args.attack_generations)
    out[name] = dict(forward_evals_per_second=fwd, forward_seconds=fwd_s,
                     forward_compile_seconds=compilation.since(c0)["compile_seconds"],
                     attack=att, attack_compile_seconds=compilation.since(c1)["compile_seconds"],
                     probs=probs.tolist())
  return out


def _spawn(args, options: str, path: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PIXELJAX_CACHE_DIR="")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
  if options != "default":
    env["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS"), options) if f)
  cmd = [sys.executable, os.path.abspath(__file__), "--worker_out", path,
         "--models", args.models, "--data", args.data, "--batch", str(args.batch),
         "--repeats", str(args.repeats), "--attack_images", str(args.attack_images),
         "--attack_generations", str(args.attack_generations)]
  rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
  if rc != 0:
    return dict(error=f"worker exited with status {rc}")
  with open(path) as f:
    return json.load(f)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="cifar10_lenet_hyperparticle,cifar10_resnet20_akamaster")
  p.add_argument("--options", default=DEFAULT_OPTIONS)
  p.add_argument("--data", default=DATA)
  p.add_argument("--batch", type=int, default=400)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--attack_images", type=int, default=4)
  p.add_argument("--attack_generations", type=int, default=5)
  p.add_argument("--out", default=os.path.join(ROOT, "runs", "xla_cpu_options.json"))
  p.add_argument("--worker_out", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker_out:
    from pixeljax.workdir import write_json
    write_json(args.worker_out, worker(args))
    return 0

  options = [o.strip() for o in args.options.split(";") if o.strip()]
  runs = {o: [] for o in options}
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
      for i, o in enumerate(options):
        runs[o].append(_spawn(args, o, os.path.join(tmp, f"{r}_{i}.json")))
  models = args.models.split(",")
  summary = {}
  base = runs["default"][0] if "default" in runs else None
  for o, rs in runs.items():
    ok = [r for r in rs if "error" not in r]
    summary[o] = {}
    for m in models:
      if not ok:
        summary[o][m] = dict(error=rs[0]["error"])
        continue
      fwd = [r[m]["forward_evals_per_second"] for r in ok]
      att = [r[m]["attack"]["attack_evals_per_second"] for r in ok]
      row = dict(forward_best=max(fwd), forward_median=float(np.median(fwd)),
                 attack_best=max(att), attack_median=float(np.median(att)),
                 compile_seconds=float(np.median([r[m]["forward_compile_seconds"]
                                                  + r[m]["attack_compile_seconds"]
                                                  for r in ok])))
      if base is not None and "error" not in base:
        a, b = np.asarray(ok[0][m]["probs"]), np.asarray(base[m]["probs"])
        row.update(max_abs_prob_diff=float(np.max(np.abs(a - b))),
                   top1_agreement=float(np.mean(a.argmax(-1) == b.argmax(-1))))
      summary[o][m] = row
  lines = [f"{'options':<60} {'model':<30} {'fwd ev/s':>9} {'x def':>6} {'attack ev/s':>11} "
           f"{'x def':>6} {'compile s':>9} {'max |dp|':>9}"]
  for m in models:
    d = summary.get("default", {}).get(m, {})
    for o in options:
      s = summary[o][m]
      if "error" in s:
        lines.append(f"{o[:60]:<60} {m:<30} {s['error']}")
        continue
      rf = s["forward_best"] / d["forward_best"] if "forward_best" in d else float("nan")
      ra = s["attack_best"] / d["attack_best"] if "attack_best" in d else float("nan")
      lines.append(f"{o[-60:]:<60} {m:<30} {s['forward_best']:>9,.0f} {rf:>6.2f} "
                   f"{s['attack_best']:>11,.0f} {ra:>6.2f} {s['compile_seconds']:>9.1f} "
                   f"{s.get('max_abs_prob_diff', float('nan')):>9.1e}")
  table = "\n".join(lines)
  print(table)
  from pixeljax.workdir import write_json
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  write_json(args.out, dict(settings=vars(args), loadavg=os.getloadavg(), summary=summary,
                            table=table,
                            runs={o: [{m: {k: v for k, v in r[m].items() if k != "probs"}
                                       for m in models} if "error" not in r else r
                                      for r in rs] for o, rs in runs.items()}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
