"""The peer benchmark's JAX workers: the image draw (``select``), pixeljax's attack
(``pixeljax``) and its bare forward (``forward_jax``). Each runs in its own process."""
import dataclasses
import sys
import threading
import time

import numpy as np

from benchmarks.peers.common import (PIXELS, compile_listener, jax_env, rates, summarize,
                                     timed_repeats, torch_setup)


def pixeljax_mesh(args):
  """pixeljax's CPU set-up as its experiments make it (``runtime.cpu_devices``): importing
  pixeljax splits the CPU into one JAX device per core; ``--pixeljax_cpu_devices`` N (> 0)
  makes it N (1: one device). Returns the mesh attacks use by default over them
  (``sharding.default_mesh``; None: one device, or not on a CPU). Call it before anything
  starts JAX's backend."""
  from pixeljax import sharding
  if args.pixeljax_cpu_devices:
    sharding.use_cpu_cores(args.pixeljax_cpu_devices)
  return sharding.default_mesh()


def worker_select(args):
  """Image ids drawn as pixeljax draws them, checked against the torch rebuild."""
  import pixeljax
  from pixeljax import data, evaluate, models
  from pixeljax.cli import quiet_backend_probes
  from benchmarks import torch_nets
  quiet_backend_probes()
  torch_setup(args)
  clf = models.load(args.model)
  ds = data.load(args.data)
  ids = pixeljax.select_images(clf, ds.images, ds.labels, args.num_images, args.seed)
  pj = evaluate.predict_in_batches(clf.predict, ds.images)
  tp = torch_nets.probs(torch_nets.load(args.model), ds.images)
  labels = np.asarray(ds.labels)
  disagree = np.nonzero(pj.argmax(-1) != tp.argmax(-1))[0]
  torch_wrong = [int(i) for i in ids if tp[i].argmax() != labels[i]]
  return dict(image_ids=[int(i) for i in ids], labels=[int(labels[i]) for i in ids],
              dataset=ds.name, dataset_size=len(ds),
              accuracy_jax=float(np.mean(pj.argmax(-1) == labels)),
              accuracy_torch=float(np.mean(tp.argmax(-1) == labels)),
              argmax_disagreements=[int(i) for i in disagree],
              chosen_misclassified_by_torch=torch_wrong,
              max_abs_prob_diff_chosen=float(np.abs(pj[ids] - tp[ids]).max()),
              selection=f"pixeljax.select_images(model, images, labels, {args.num_images}, "
                        f"seed={args.seed})")


def _same(a, b) -> bool:
  return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in (
      "success", "queries", "pixels", "adversarial_class", "success_query"))


def worker_pixeljax(args):
  """``pixeljax.attack(models.load(model), ...)``: every image in one call, timed (compile
  included, and apart); then, untimed, the same call through an ``Evaluator`` that counts the
  rows of every model call (``evaluator_for(..., count_rows=...)``)."""
  mesh = pixeljax_mesh(args)       # before anything starts JAX's backend
  import jax
  import pixeljax
  from pixeljax import data, models
  from pixeljax.cli import quiet_backend_probes
  quiet_backend_probes()
  compiled = compile_listener()
  ids = np.asarray(args.ids, np.int64)
  clf = models.load(args.model)
  ds = data.load(args.data)
  images, labels = ds.images[ids], ds.labels[ids]
  config = pixeljax.PixelAttackConfig(pixels=PIXELS, method="de", strategy="rand1",
                                      popsize=args.popsize, generations=args.generations,
                                      stop=args.rule)
  # The engine's choice (incremental, windows, call size, dealt calls), or the whole net per
  # candidate with --pixeljax_full_net.
  execution = dict(incremental=False) if args.pixeljax_full_net else None
  ev = pixeljax.evaluator_for(clf, PIXELS, "de", mesh, execution)   # what attack() runs
  key = jax.random.PRNGKey(args.seed)

  def run(model):
    c0 = compiled()
    t0 = time.perf_counter()
    rec = pixeljax.attack(model, images, labels, key, config, image_ids=ids, mesh=mesh,
                          execution=execution)
    dt = time.perf_counter() - t0
    c1 = compiled()
    return rec, dt, {k: c1[k] - c0.get(k, 0.0) for k in c1}

  print(f"[pixeljax {args.rule}] {len(ids)} images in one call: {config.describe()}; "
        f"{ev.execution}", flush=True)
  rec, seconds, comp = run(clf)
  compile_s = float(sum(comp.values()))
  timing = dict(compile_seconds=compile_s, compile_events=comp,
                attack_seconds_without_compile=seconds - compile_s,
                seconds_per_image_without_compile=(seconds - compile_s) / len(ids),
                queries_per_second_without_compile=float(np.sum(rec.queries))
                / max(seconds - compile_s, 1e-9))
  if args.pixeljax_warm_rerun:
    rec2, seconds2, comp2 = run(clf)
    timing.update(warm_rerun_seconds=seconds2, warm_rerun_compile_seconds=sum(comp2.values()),
                  compile_seconds_first_minus_warm=seconds - seconds2,
                  warm_rerun_identical=_same(rec, rec2))

  count = dict(rows=0, calls=0)
  if args.pixeljax_count_forward:
    lock = threading.Lock()

    def add(n):    # with dealt calls, the devices call back from their own threads
      with lock:
        count["rows"] += int(n)
        count["calls"] += 1
    # The public counting hook: every model call inside the attack reports its rows (padding
    # rows and finished attacks riding along in a vmapped loop included; the final full-net
    # check of the reported images, ``Evaluator.images``, excluded).
    counting = pixeljax.evaluator_for(clf, PIXELS, "de", mesh, execution, count_rows=add)
    if counting.execution != ev.execution:
      raise SystemExit(f"error: the counting evaluator chose {counting.execution}, the timed "
                       f"attack {ev.execution}")
    rec_c, seconds_c, comp_c = run(counting)
    identical = _same(rec, rec_c)
    timing.update(counted_run_seconds=seconds_c, counted_run_compile_seconds=sum(comp_c.values()),
                  counted_run_identical=identical)
    if not identical:
      print("warning: the counted pixeljax run differs from the timed one", file=sys.stderr)
  rows = []
  n = len(ids)
  for i in range(n):
    x, y, r, g, b = (float(v) for v in rec.pixels[i, 0])
    rows.append(dict(
        image_id=int(ids[i]), label=int(labels[i]), success=bool(rec.success[i]),
        adversarial_class=int(rec.adversarial_class[i]),
        p_true=float(rec.probs[i, int(labels[i])]),
        queries=int(rec.queries[i]),
        forwards=None,   # executed forward rows are counted for the whole call (summary)
        first_fooled_query=int(rec.success_query[i]),
        generations=int(rec.iterations[i]),
        pixel=dict(row=int(y), col=int(x), rgb=[r, g, b])))
  summary = summarize(rows, seconds, timing)
  if args.pixeljax_count_forward:
    executed = count["rows"]
    summary.update(forwards_executed_total=executed, forwards_per_image_mean=executed / n,
                   forwards_per_second=executed / seconds,
                   forward_callback_rows=count["rows"], forward_callback_calls=count["calls"])
  return dict(settings=dict(config=dataclasses.asdict(config),
                            execution=dataclasses.asdict(ev.execution),
                            dealt_to_devices=1 if ev.mesh is None else ev.mesh.size,
                            model=f"pixeljax.models.load({args.model!r})",
                            key=f"PRNGKey({args.seed})", images_per_call=n,
                            effective_population=args.popsize, budget=config.budget),
              summary=summary, per_image=rows, environment=jax_env())


def worker_forward_jax(args):
  """``jax.jit(classifier.predict)`` at batch = popsize; with several CPU devices also the
  same images as the attacks on windows run them (calls of 50 dealt to the devices)."""
  mesh = pixeljax_mesh(args)       # before anything starts JAX's backend
  import jax
  import pixeljax
  from pixeljax import models
  from pixeljax.cli import quiet_backend_probes
  from pixeljax.sparse.evaluator import CPU_DEALT_CALL_SIZE
  quiet_backend_probes()
  clf = models.load(args.model)
  f = jax.jit(clf.predict)
  b = args.popsize
  x = jax.random.uniform(jax.random.PRNGKey(0), (b,) + tuple(clf.spec.input_shape), maxval=255.)
  t0 = time.perf_counter()
  jax.block_until_ready(f(x))
  first = time.perf_counter() - t0
  times = timed_repeats(lambda: jax.block_until_ready(f(x)), args.forward_seconds)
  out = dict(batch=b, what="jax.jit(classifier.predict), float32 NHWC [0, 255]",
             first_call_seconds=first, **rates(b, times), environment=jax_env())
  if mesh is not None:
    size = CPU_DEALT_CALL_SIZE
    ev = pixeljax.evaluator_for(clf, 1, "de", mesh, execution=dict(
        call_size=size, devices=mesh.size, incremental=False, window=False))
    g = ev.program(ev.images)
    times = timed_repeats(lambda: jax.block_until_ready(g(x)), args.forward_seconds)
    out["dealt"] = dict(call=size, devices=mesh.size, **rates(b, times),
                        what=f"Evaluator.images in calls of {size} dealt to {mesh.size} CPU "
                             f"devices: evaluator_for(model, 1, 'de', mesh, execution="
                             f"dict(call_size={size}, devices={mesh.size}, incremental=False, "
                             f"window=False))")
  return out
