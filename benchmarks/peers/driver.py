"""The peer benchmark's driver: runs each worker in its own process, one after the other,
prints the table and writes the JSON (``python -m benchmarks.peers --help``)."""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from benchmarks.peers.common import (DEFAULT_DATA, DIMS, MODELS, PIXELS, ROOT, RULE_ALIASES,
                                     RULE_NAMES, RULES, THRESHOLD, TOOLS, TORCHATTACKS_SKIP,
                                     driver_env, dump, load_average, publish)
from benchmarks.peers.workers_jax import worker_forward_jax, worker_pixeljax, worker_select
from benchmarks.peers.workers_scipy import worker_scipy
from benchmarks.peers.workers_torch import worker_forward_torch, worker_torchattacks

WORKERS = dict(select=worker_select, pixeljax=worker_pixeljax,
               torchattacks=worker_torchattacks, scipy=worker_scipy,
               forward_jax=worker_forward_jax, forward_torch=worker_forward_torch)


def run_worker(args):
  args.ids = [int(s) for s in args.image_ids.split(",") if s.strip()] if args.image_ids else []
  load0 = load_average()
  t0 = time.perf_counter()
  out = WORKERS[args.worker](args)
  meta = dict(worker=args.worker, rule=args.rule, model=args.model, image_ids=args.ids,
              popsize=args.popsize, generations=args.generations, seed=args.seed,
              worker_seconds=time.perf_counter() - t0, loadavg_before=load0,
              loadavg_after=load_average(), python=platform.python_version(),
              cpu_count=os.cpu_count())
  for k, v in meta.items():
    out.setdefault(k, v)    # the select worker's own image_ids win
  dump(args.worker_out, out)
  return 0


# ------------------------------------------------------------------------------ driver

def _spawn(args, worker, tmpdir, rule=None, ids=None, extra=()):
  """Runs one worker in a fresh process; returns (json or None, process seconds, error)."""
  out = os.path.join(tmpdir, f"{worker}_{rule or 'none'}.json")
  cmd = [sys.executable, "-m", "benchmarks.peers", "--worker", worker,
         "--model", args.model, "--data", args.data, "--seed", str(args.seed),
         "--num_images", str(args.num_images), "--popsize", str(args.popsize),
         "--generations", str(args.generations),
         "--torch_threads", str(1 if args.single_thread else args.torch_threads),
         "--device", args.device, "--forward_seconds", str(args.forward_seconds),
         "--pixeljax_cpu_devices", str(args.pixeljax_cpu_devices),
         "--worker_out", out, *extra]
  if rule:
    cmd += ["--rule", rule]
  if ids is not None:
    cmd += ["--image_ids", ",".join(str(i) for i in ids)]
  env = dict(os.environ)
  if args.device == "cpu":
    env.setdefault("JAX_PLATFORMS", "cpu")
  if args.single_thread:
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["XLA_FLAGS"] = " ".join(f for f in (
        env.get("XLA_FLAGS"), "--xla_cpu_multi_thread_eigen=false",
        "intra_op_parallelism_threads=1") if f)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
  t0 = time.perf_counter()
  try:
    rc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=args.worker_timeout or None).returncode
  except subprocess.TimeoutExpired:
    return None, time.perf_counter() - t0, f"timed out after {args.worker_timeout} s"
  dt = time.perf_counter() - t0
  if rc != 0 or not os.path.exists(out):
    return None, dt, f"worker exited with status {rc}"
  with open(out) as f:
    return json.load(f), dt, None


def _fmt(v, spec, na="n/a"):
  return na if v is None else format(v, spec)


def table(result) -> str:
  s = result["settings"]
  lines = [f"{result['model']}: {len(result['image_ids'])} images "
           f"(ids {','.join(map(str, result['image_ids']))}), population {s['popsize']}, "
           f"{s['generations']} generations, 1 pixel, untargeted",
           f"{'rule':<24} {'tool':<13} {'success':>13} {'queries/img':>12} "
           f"{'forwards/img':>13} {'s/img':>8} {'s/img -comp':>11} {'q/s -comp':>10} "
           f"{'compile s':>9}"]
  for rule in s["rules"]:
    for tool in s["tools"]:
      r = result["results"][rule].get(tool)
      head = f"{RULE_NAMES[rule]:<24} {tool:<13}"
      if r is None:
        continue
      if "skipped" in r or "error" in r:
        lines.append(f"{head} {'n/a':>13}  ({r.get('skipped') or r.get('error')})")
        continue
      m = r["summary"]
      comp = m.get("compile_seconds")
      no_comp = m.get("seconds_per_image_without_compile", m["seconds_per_image"])
      qps = m.get("queries_per_second_without_compile", m["queries_per_second"])
      lines.append(
          f"{head} {m['successes']:>3}/{m['images']:<3} {m['success_rate']:>5.1%} "
          f"{_fmt(m['queries_per_image_mean'], ',.0f'):>12} "
          f"{_fmt(m['forwards_per_image_mean'], ',.0f'):>13} "
          f"{m['seconds_per_image']:>8.3f} {no_comp:>11.3f} "
          f"{_fmt(qps, ',.0f'):>10} {_fmt(comp, '.1f', '-'):>9}")
  fw = result.get("forward", {})
  if fw:
    parts = []
    for name in ("forward_jax", "forward_torch"):
      f = fw.get(name)
      if f and "error" not in f:
        parts.append(f"{name.split('_')[1]} {f['evals_per_second_best']:,.0f} "
                     f"(median {f['evals_per_second_median']:,.0f})")
      elif f:
        parts.append(f"{name.split('_')[1]} failed: {f['error']}")
    lines.append(f"bare forward, batch {s['popsize']}, evals/s: " + "; ".join(parts))
    more = []
    d = (fw.get("forward_jax") or {}).get("dealt")
    if d:
      more.append(f"jax in calls of {d['call']} dealt to {d['devices']} CPU devices "
                  f"{d['evals_per_second_best']:,.0f} (median {d['evals_per_second_median']:,.0f})")
    t = (fw.get("forward_torch") or {}).get("calls_of_50")
    if t:
      more.append(f"torch in calls of {t['call']} {t['evals_per_second_best']:,.0f} "
                  f"(median {t['evals_per_second_median']:,.0f})")
    if more:
      lines.append("the same images, " + "; ".join(more))
  lines.append("queries: pixeljax's own count (budget-limited); torch tools: every image the "
               "wrapped net saw. forwards: pixeljax rows its compiled program executed "
               "(padding, finished rows riding along); -comp: without pixeljax's compile "
               "seconds")
  return "\n".join(lines)


def drive(args):
  import shutil
  t_start = time.perf_counter()
  tools = [t.strip() for t in args.tools.split(",") if t.strip()]
  rules = [RULE_ALIASES.get(r.strip(), r.strip()) for r in args.rules.split(",") if r.strip()]
  for t in tools:
    if t not in TOOLS:
      raise SystemExit(f"error: unknown tool {t!r}; known: {', '.join(TOOLS)}")
  for r in rules:
    if r not in RULES:
      raise SystemExit(f"error: unknown rule {r!r}; known: {', '.join(RULES)} (or a, b)")
  if args.popsize % DIMS or args.popsize < 5:
    raise SystemExit(f"error: --popsize must be a multiple of {DIMS} (torchattacks and SciPy "
                     f"build popsize // {DIMS} * {DIMS} members), got {args.popsize}")
  if not os.path.isfile(args.data):
    raise SystemExit(f"error: data file {args.data} does not exist")
  out_path = args.out or os.path.join(ROOT, "runs", "peers", f"{args.model}.json")
  tmpdir = tempfile.mkdtemp(prefix="peers_")
  try:
    if args.image_ids:
      ids = [int(s) for s in args.image_ids.split(",") if s.strip()]
      selection = dict(image_ids=ids, selection="--image_ids")
    else:
      print(f"== select: {args.num_images} correctly classified images, seed {args.seed}",
            flush=True)
      selection, dt, err = _spawn(args, "select", tmpdir)
      if err:
        raise SystemExit(f"error: image selection failed: {err}")
      ids = selection["image_ids"]
      if selection["chosen_misclassified_by_torch"]:
        print(f"warning: the torch rebuild misclassifies images "
              f"{selection['chosen_misclassified_by_torch']}", file=sys.stderr)
    print(f"   image ids: {ids}", flush=True)
    forward = {}
    if not args.no_forward:
      for name in ("forward_jax", "forward_torch"):
        print(f"== {name}: bare forward, batch {args.popsize}", flush=True)
        res, dt, err = _spawn(args, name, tmpdir)
        forward[name] = res if res else dict(error=err)
        if res:
          print(f"   {res['evals_per_second_best']:,.0f} evals/s (best), "
                f"{res['evals_per_second_median']:,.0f} (median)", flush=True)
          for key in ("dealt", "calls_of_50"):
            if key in res:
              print(f"   {key}: {res[key]['evals_per_second_best']:,.0f} evals/s (best)",
                    flush=True)
    results = {}
    for rule in rules:
      results[rule] = {}
      for tool in tools:
        if tool == "torchattacks" and rule == "paper":
          results[rule][tool] = dict(skipped=TORCHATTACKS_SKIP)
          continue
        print(f"== {tool}, stop at {RULE_NAMES[rule]}", flush=True)
        extra = []
        if tool == "pixeljax":
          if args.pixeljax_warm_rerun:
            extra.append("--pixeljax_warm_rerun")
          if not args.pixeljax_count_forward:
            extra.append("--no_pixeljax_count_forward")
          if args.pixeljax_full_net:
            extra.append("--pixeljax_full_net")
        if tool == "torchattacks" and args.ta_inf_batch:
          extra += ["--ta_inf_batch", str(args.ta_inf_batch)]
        res, dt, err = _spawn(args, tool, tmpdir, rule, ids, extra)
        if err:
          print(f"   {tool} failed: {err}", file=sys.stderr, flush=True)
          results[rule][tool] = dict(error=err, process_seconds=dt)
        else:
          res["process_seconds"] = dt
          results[rule][tool] = res
    result = dict(
        model=args.model, data=args.data, image_ids=ids, selection=selection,
        settings=dict(popsize=args.popsize, generations=args.generations, pixels=PIXELS,
                      targeted=False, seed=args.seed, tools=tools, rules=rules,
                      rule_definitions={"paper": f"stop once p_true < {THRESHOLD}",
                                        "first_success": "stop at the first misclassified "
                                                         "candidate"},
                      success="the returned candidate is misclassified",
                      torch_threads=(1 if args.single_thread else
                                     args.torch_threads or "torch default"),
                      single_thread=args.single_thread,
                      device=args.device,
                      pixeljax_count_forward=args.pixeljax_count_forward,
                      pixeljax_warm_rerun=args.pixeljax_warm_rerun,
                      pixeljax_full_net=args.pixeljax_full_net),
        forward=forward, results=results,
        driver=driver_env(t_start))
    publish(out_path, result, table(result))
    failed = [f"{t}/{r}" for r in results for t, v in results[r].items() if "error" in v]
    return 1 if failed else 0
  finally:
    if args.keep_worker_json:
      print(f"worker JSON kept in {tmpdir}")
    else:
      shutil.rmtree(tmpdir, ignore_errors=True)


def parse(argv=None):
  ap = argparse.ArgumentParser(
      prog="python -m benchmarks.peers",
      description="One-pixel attack peers (pixeljax, torchattacks, SciPy DE) on the same "
                  "images, weights and stopping rules, each tool in its own process.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  ap.add_argument("--model", default="cifar10_lenet_hyperparticle", choices=MODELS)
  ap.add_argument("--num_images", type=int, default=None,
                  help="correctly classified images drawn as pixeljax draws them; default 20 "
                       "for the LeNet, 10 for a ResNet")
  ap.add_argument("--image_ids", default="", help="comma list of indices into the 1,017 "
                  "exact images (skips the draw)")
  ap.add_argument("--tools", default=",".join(TOOLS), help="subset of " + ",".join(TOOLS))
  ap.add_argument("--rules", default=",".join(RULES),
                  help="subset of paper (a: p_true < 5%%), first_success (b)")
  ap.add_argument("--out", default="", help="JSON path; default runs/peers/<model>.json")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--data", default=DEFAULT_DATA)
  ap.add_argument("--torch_threads", type=int, default=0, help="0: torch's default")
  ap.add_argument("--single_thread", action="store_true",
                  help="one thread per framework (torch.set_num_threads(1); XLA:CPU without "
                       "its Eigen thread pool; OMP/MKL/OpenBLAS 1): for a shared machine, "
                       "where torch's OpenMP pool loses most under contention")
  ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                  help="both frameworks (JAX_PLATFORMS=cpu for cpu)")
  ap.add_argument("--no_forward", action="store_true", help="skip the bare forward throughput")
  ap.add_argument("--pixeljax_warm_rerun", action="store_true",
                  help="also time a second identical pixeljax call (compile = first - second)")
  ap.add_argument("--pixeljax_cpu_devices", type=int, default=0,
                  help="CPU devices pixeljax splits the host into (its experiments' "
                       "runtime.cpu_devices); 0: one per core, 1: one device")
  ap.add_argument("--pixeljax_full_net", action="store_true",
                  help="pixeljax runs the whole net per candidate (attack(..., execution="
                       "dict(incremental=False))) instead of the engine's choice")
  ap.add_argument("--no_pixeljax_count_forward", dest="pixeljax_count_forward",
                  action="store_false",
                  help="skip the untimed pixeljax call with a counting forward")
  ap.add_argument("--ta_inf_batch", type=int, default=0,
                  help="torchattacks inf_batch; 0: = popsize (its default is 128)")
  ap.add_argument("--worker_timeout", type=float, default=0, help="seconds; 0: none")
  ap.add_argument("--keep_worker_json", action="store_true")
  # Hidden: smoke-test sizes and the worker protocol.
  ap.add_argument("--popsize", type=int, default=400, help=argparse.SUPPRESS)
  ap.add_argument("--generations", type=int, default=100, help=argparse.SUPPRESS)
  ap.add_argument("--forward_seconds", type=float, default=3.0, help=argparse.SUPPRESS)
  ap.add_argument("--worker", choices=tuple(WORKERS), default=None, help=argparse.SUPPRESS)
  ap.add_argument("--worker_out", default="", help=argparse.SUPPRESS)
  ap.add_argument("--rule", default=None, choices=RULES, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.num_images is None:
    args.num_images = 20 if "lenet" in args.model else 10
  if args.num_images < 1:
    ap.error("--num_images must be >= 1")
  if args.generations < 1:
    ap.error("--generations must be >= 1")
  return args


def main(argv=None):
  args = parse(argv)
  if args.worker:
    return run_worker(args)
  return drive(args)
