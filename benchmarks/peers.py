r"""Peer benchmark of the one-pixel attack: pixeljax vs torchattacks vs a SciPy DE loop.

Every tool attacks the SAME correctly classified exact CIFAR-10 test images with the SAME
weights, population, generation count, pixel count (1, untargeted) and stopping rule, each IN
ITS OWN PROCESS (a subprocess of this driver, one after the other), so machine noise hits all
alike and no framework's thread pools run beside another's.

    .venv/bin/python benchmarks/peers.py --model cifar10_lenet_hyperparticle        # 20 images
    .venv/bin/python benchmarks/peers.py --model cifar10_resnet20_akamaster         # 10 images
    .venv/bin/python benchmarks/peers.py --model cifar10_lenet_hyperparticle \
        --tools pixeljax,scipy --rules first_success --num_images 50 --out runs/peers/x.json

Prints one table and writes one JSON (atomically, ``pixeljax.workdir.write_json``; default
``runs/peers/<model>.json``) with the settings, the image ids, each tool's summary and
per-image rows, the bare forward throughput of both frameworks and every worker's environment.

Images. ``--num_images`` (default 20 for the LeNet, 10 for a ResNet) drawn exactly as pixeljax's
experiments draw them: ``pixeljax.sparse.campaign.select_images`` on the Flax model's
probabilities over the 1,017 exact images, seed ``--seed`` (0). A ``select`` worker does the draw
and also checks that the PyTorch rebuild (``benchmarks/torch_nets.py``) classifies every drawn
image correctly too (it records any disagreement over the 1,017 images).

Stopping rules (``--rules``, both by default), the same for every tool that can express it:
  * ``paper``: stop once a candidate's true-class probability is < 5% (Su et al.);
  * ``first_success``: stop at the first misclassified candidate (torchattacks' rule).
Success = the candidate each tool finally returns is misclassified (top-1 != label).

Tools (``--tools``):
  * ``pixeljax``: ``pixeljax.sparse.attack`` with ``PixelAttackConfig(method="de",
    strategy="rand1", popsize, generations, stop=rule)``, every image in ONE call, key
    ``PRNGKey(seed)``, image ids = indices into the 1,017 images (as the experiments), on the
    net split at its first convolution (``Classifier.factored``: candidates evaluated
    incrementally, pixeljax's CPU default; ``--pixeljax_full_net``: the whole net per
    candidate). As pixeljax's experiments do (``runtime.cpu_devices``), the worker splits the
    CPU into one JAX device per core (``--pixeljax_cpu_devices``; 1: one device) and passes a
    mesh over them: attacks whose model calls are small (on windows) deal those calls to the
    devices (``PixelAttackConfig.eval_devices``). Run twice: the timed call, then an untimed
    call whose ``predict`` (its head, when split; its windows' evaluation, on windows) is
    wrapped with a ``jax.debug.callback`` counter (every forward row the
    compiled program executes: padding rows and rows that finished but ride along in a vmapped
    loop included; the runner's final check of n adversarial + n clean images excluded); both calls must give identical records. "queries"
    are pixeljax's own count (candidates it scored, what its budget limits). Compile seconds:
    jax.monitoring's trace + lowering + backend-compile durations during the timed call (no
    persistent compilation cache). ``--pixeljax_warm_rerun`` adds a second identical timed call
    (compile = first - second).
  * ``torchattacks``: ``torchattacks.OnePixel(model, pixels=1, steps=generations,
    popsize=popsize, inf_batch=popsize)``, one image per call, as its API is used, on the
    PyTorch rebuild (input [0, 1] -> the net's [0, 255] by a x255 wrapper, not rounded: its
    colours are continuous). numpy's global RNG (which its DE uses: ``seed=None``) is seeded per
    image with ``SeedSequence([seed, image_id])``. Only ``first_success``: its stopping rule is
    hard-wired (``_attack_success``: stop when the population's BEST member is misclassified),
    so p_true < 5% is not expressible without rewriting the attack; it is reported only under
    its native rule. What its source says (torchattacks 3.5.1, ``attacks/onepixel.py`` and its
    ``_differential_evolution.py``, Hyperparticle's batched copy of SciPy's old DE):
      - ``popsize`` is the TOTAL population: ``popmul = int(popsize / 5)`` and the solver builds
        ``popmul * 5`` members, so popsize=400 gives 400 (a popsize not divisible by 5 is
        rounded down; this driver requires multiples of 5 so every tool gets the same size);
      - best1bin, dithered F ~ U(0.5, 1) per generation, recombination 1, ``init="random"``
        (uniform), deferred (per-generation) updating, ``atol=-1`` (never converges),
        ``polish=False``; x, y in [0, 32) truncated, colours in [0, 1] continuous;
      - the stop check runs only AFTER each generation (never after the initial population),
        and re-evaluates the best member in a separate 1-image forward: 1 extra query per
        generation. Queries = popsize + generations_run * (popsize + 1), at most 40,500 for
        400 x 100 (pixeljax and SciPy: at most popsize * (generations + 1) = 40,400);
      - it does early-stop per image (each image gets its own DE run and callback).
  * ``scipy``: ``scipy.optimize.differential_evolution`` per image, called as Hyperparticle's
    Keras reimplementation calls it (one-pixel-attack-keras ``attack.py``): bounds
    (0, 32), (0, 32), (0, 256) x 3, ``popsize = max(1, popsize // 5)`` (SciPy multiplies by the
    5 dimensions: popsize 400 -> 400 members), ``maxiter = generations``, ``recombination=1``,
    ``atol=-1``, ``polish=False``, default best1bin / dithered F / Latin-hypercube init, and
    their batched evaluation (their modified SciPy scores a whole generation per call): here
    ``vectorized=True, updating="deferred"``. Candidates are truncated to integers as theirs
    (``astype(int)``). ``rng = default_rng([seed, image_id])``. The rule is checked on EVERY
    scored candidate (same rule as pixeljax), and the callback ends the run after that
    generation; because SciPy calls the callback only after a generation, a rule met by the
    initial population makes the objective skip the model for the next generation's batch
    (returning +inf, no queries), so the run stops after popsize queries as pixeljax does. The
    returned candidate is the lowest-p_true one (= SciPy's best member), or under
    ``first_success`` the lowest-p_true fooling one of the batch that first fooled (as pixeljax).

Counting: for the PyTorch tools every forward of the net goes through a counting wrapper
(images forwarded, calls, the first query whose output is misclassified); checks of the final
adversarial images are made outside it. Seconds per image: wall time of the attack only (model
and data loading excluded; pixeljax: one batched call / n, compile included, also reported
without it). Evals/s = counted queries / attack seconds. Bare forward throughput, each in its own
process, batch = popsize: ``jax.jit(classifier.predict)`` and the torch net under
``torch.inference_mode()`` on a channels_last tensor; best and median of timed repeats. The
same images also as pixeljax's attacks on windows evaluate them (calls of 50 dealt to the CPU
devices, ``pixeljax.evaluate.dealt``) and as torch in calls of 50, so each framework's best
way of running the net is on record.

Threads: each framework's default (``--torch_threads`` sets torch's intra-op threads), or one
thread for both with ``--single_thread`` (torch.set_num_threads(1); XLA:CPU without its Eigen
pool; OMP/MKL/OpenBLAS 1). Recorded per worker, with the load average before and after. On a
machine whose cores are busy with other work, torch's default OpenMP pool collapses: on 2 shared
cores (load ~2.5) the LeNet forward ran 435 evals/s at batch 40 and 3,031 at batch 400 with its
default 2 threads vs 16,182 and 12,638 with 1 thread, while jit(predict) ran ~7-8k either way;
use ``--single_thread`` unless the machine is idle, and say which was used.

Hidden flags for smoke tests: ``--popsize``, ``--generations``, ``--forward_seconds``.
"""
import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
  sys.path.insert(0, HERE)

DEFAULT_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data",
                                             "cifar10_test_exact1017.npz"))
TOOLS = ("pixeljax", "torchattacks", "scipy")
RULES = ("paper", "first_success")
RULE_NAMES = {"paper": "p_true < 5%", "first_success": "first misclassification"}
RULE_ALIASES = {"a": "paper", "b": "first_success", "paper": "paper",
                "first_success": "first_success"}
# Models that exist both in pixeljax's zoo and in torch_nets.
MODELS = ("cifar10_lenet_hyperparticle", "cifar10_resnet20_akamaster",
          "cifar10_resnet32_akamaster")
THRESHOLD = 0.05       # the paper's untargeted stop: p_true < 5%
PIXELS = 1
DIMS = 5               # (x, y, r, g, b) per pixel
TORCHATTACKS_SKIP = ("torchattacks' OnePixel cannot express p_true < 5%: its stop is "
                     "hard-wired in _attack_success (best member misclassified); reported only "
                     "under its native rule, first misclassification")


# ------------------------------------------------------------------------------ helpers

def _jsonable(o):
  if isinstance(o, dict):
    return {str(k): _jsonable(v) for k, v in o.items()}
  if isinstance(o, (list, tuple)):
    return [_jsonable(v) for v in o]
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, np.generic):
    return o.item()
  return o


def _dump(path, obj):
  """Atomic JSON for worker outputs (torch workers do not import pixeljax / JAX)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(_jsonable(obj), f, indent=1)
  os.replace(tmp, path)


def per_image_seed(seed, image_id):
  """A 32-bit seed that depends only on (seed, image id)."""
  return int(np.random.SeedSequence([int(seed), int(image_id)]).generate_state(1)[0])


def _load():
  try:
    return list(os.getloadavg())
  except OSError:
    return None


def _summary(rows, seconds, extra_seconds=None):
  """Per-tool numbers from per-image rows (each with success, queries, forwards)."""
  n = len(rows)
  succ = sum(bool(r["success"]) for r in rows)
  q = np.array([r["queries"] for r in rows], np.float64)
  fw = np.array([np.nan if r["forwards"] is None else r["forwards"] for r in rows], np.float64)
  has_fw = n and not np.isnan(fw).any()
  ever = [r.get("first_fooled_query", -1) for r in rows]
  fq = np.array([v for v in ever if v is not None and v >= 0], np.float64)
  out = dict(images=n, successes=succ, success_rate=succ / n if n else None,
             ever_fooled=int(len(fq)),
             queries_per_image_mean=float(q.mean()) if n else None,
             queries_per_image_median=float(np.median(q)) if n else None,
             forwards_per_image_mean=float(fw.mean()) if has_fw else None,
             first_fooled_query_mean=float(fq.mean()) if len(fq) else None,
             first_fooled_query_median=float(np.median(fq)) if len(fq) else None,
             generations_mean=float(np.mean([r["generations"] for r in rows])) if n else None,
             attack_seconds=seconds, seconds_per_image=seconds / n if n else None,
             queries_per_second=float(q.sum()) / seconds if seconds > 0 else None,
             forwards_per_second=float(fw.sum()) / seconds if has_fw and seconds > 0 else None)
  if extra_seconds:
    out.update(extra_seconds)
  return out


# ------------------------------------------------------------------------ torch pieces

def _torch_setup(args):
  import torch
  if args.torch_threads > 0:
    torch.set_num_threads(args.torch_threads)
  return torch


def _torch_env(torch):
  return dict(framework="torch", torch=torch.__version__, threads=torch.get_num_threads(),
              interop_threads=torch.get_num_interop_threads())


class _CountingNet:
  """Factory for a torch module that counts every image the net sees and notes the first
  query whose output is misclassified (``label`` set per image)."""

  @staticmethod
  def make(torch, model, scale):
    nn = torch.nn

    class Counting(nn.Module):

      def __init__(self):
        super().__init__()
        self.net = model
        self.scale = float(scale)
        self.reset(-1)

      def reset(self, label):
        self.label = int(label)
        self.images = 0
        self.calls = 0
        self.single_calls = 0
        self.first_fooled = -1

      def forward(self, x):
        n = int(x.shape[0])
        if self.scale != 1.0:
          x = x * self.scale
        out = self.net(x.contiguous(memory_format=torch.channels_last))
        if self.first_fooled < 0 and self.label >= 0:
          bad = torch.nonzero(out.argmax(-1) != self.label)
          if len(bad):
            self.first_fooled = self.images + int(bad[0, 0]) + 1
        self.images += n
        self.calls += 1
        self.single_calls += int(n == 1)
        return out

    return Counting()


def _torch_model(args, torch):
  import torch_nets
  model = torch_nets.load(args.model)
  if args.device != "cpu":
    model = model.to(args.device)
  return model, torch_nets


def _sync(torch, device):
  if device != "cpu":
    torch.cuda.synchronize()


# ----------------------------------------------------------------------------- workers

def worker_select(args):
  """Image ids drawn as pixeljax draws them, checked against the torch rebuild."""
  from pixeljax import data, models
  from pixeljax.cli import quiet_backend_probes
  from pixeljax.sparse import campaign
  quiet_backend_probes()
  torch = _torch_setup(args)
  clf = models.load(args.model)
  ds = data.load(args.data)
  ids = campaign.select_images(clf.predict, ds.images, ds.labels, args.num_images, args.seed)
  pj = campaign.predict_in_batches(clf.predict, ds.images)
  tmodel, torch_nets = _torch_model(args, torch)
  tp = torch_nets.probs(tmodel.cpu(), ds.images)
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
              selection=f"pixeljax.sparse.campaign.select_images(seed={args.seed})")


def _compile_listener():
  from jax import monitoring
  events = {}
  keys = ("/jax/core/compile/jaxpr_trace_duration",
          "/jax/core/compile/jaxpr_to_mlir_module_duration",
          "/jax/core/compile/backend_compile_duration")

  def listen(event, duration, **kwargs):
    if event in keys:
      events[event] = events.get(event, 0.0) + float(duration)
  monitoring.register_event_duration_secs_listener(listen)
  return lambda: dict(events)


def _jax_env():
  import jax
  return dict(framework="jax", jax=jax.__version__, backend=jax.default_backend(),
              devices=[str(d) for d in jax.devices()],
              compilation_cache_dir=jax.config.jax_compilation_cache_dir)


def _cpu_mesh(args):
  """pixeljax's CPU set-up, as its experiments make it (``runtime.cpu_devices``): the host's
  cores as devices (``--pixeljax_cpu_devices``; 1: one device) and a mesh over them, or None."""
  from pixeljax import sharding
  if args.device == "cpu" and sharding.use_cpu_cores(args.pixeljax_cpu_devices or None) > 1:
    return sharding.attack_mesh()
  return None


def worker_pixeljax(args):
  from pixeljax import sharding
  mesh = _cpu_mesh(args)       # before anything starts JAX's backend
  import jax
  import jax.numpy as jnp
  from pixeljax import data, models
  from pixeljax.cli import quiet_backend_probes
  from pixeljax.sparse import PixelAttackConfig, attack, incremental
  quiet_backend_probes()
  compiled = _compile_listener()
  ids = np.asarray(args.ids, np.int64)
  clf = models.load(args.model)
  ds = data.load(args.data)
  images, labels = ds.images[ids], ds.labels[ids]
  # pixeljax's default black box: the net split at its first convolution (candidates
  # evaluated incrementally); --pixeljax_full_net: the whole net per candidate.
  target = clf.predict if args.pixeljax_full_net else (clf.factored or clf.predict)
  config = PixelAttackConfig(pixels=PIXELS, method="de", strategy="rand1",
                             popsize=args.popsize, generations=args.generations, stop=args.rule,
                             incremental=False if args.pixeljax_full_net else None)
  resolved = config.resolved(**sharding.mesh_modes(mesh),   # what the attack will run
                             **incremental.modes(target))
  key = jax.random.PRNGKey(args.seed)

  def run(predict):
    c0 = compiled()
    t0 = time.perf_counter()
    rec = attack(predict, images, labels, key, config, image_ids=ids, mesh=mesh)
    dt = time.perf_counter() - t0
    c1 = compiled()
    return rec, dt, {k: c1[k] - c0.get(k, 0.0) for k in c1}

  print(f"[pixeljax {args.rule}] {len(ids)} images in one call: {config.describe()}",
        flush=True)
  rec, seconds, comp = run(target)
  compile_s = float(sum(comp.values()))
  timing = dict(compile_seconds=compile_s, compile_events=comp,
                attack_seconds_without_compile=seconds - compile_s,
                seconds_per_image_without_compile=(seconds - compile_s) / len(ids),
                queries_per_second_without_compile=float(np.sum(rec.queries))
                / max(seconds - compile_s, 1e-9))
  same = lambda a, b: all(np.array_equal(getattr(a, f), getattr(b, f)) for f in (
      "success", "queries", "pixels", "adversarial_class", "success_query"))
  if args.pixeljax_warm_rerun:
    rec2, seconds2, comp2 = run(target)
    timing.update(warm_rerun_seconds=seconds2, warm_rerun_compile_seconds=sum(comp2.values()),
                  compile_seconds_first_minus_warm=seconds - seconds2,
                  warm_rerun_identical=bool(same(rec, rec2)))

  count = dict(rows=0, calls=0)
  if args.pixeljax_count_forward:
    lock = threading.Lock()

    def add(n):
      n = int(np.sum(n))   # (before the lock: with dealt calls, devices call back in threads)
      with lock:
        count["rows"] += n
        count["calls"] += 1

    def counted(fn):
      def f(*args):
        # An argument that depends on the rows (the last argument: images or windows), so
        # that under the runner's vmap the callback runs per attack row (an x-independent one
        # would be called once per batch).
        x = args[-1]
        jax.debug.callback(add, jnp.sum(jnp.ones((), x.dtype) + 0 * x[:, 0, 0, 0]))
        return fn(*args)
      return f
    if resolved.local_window:
      # Count the windows' rows (one per candidate); the final check runs `full`, uncounted.
      window = dataclasses.replace(target.window, _probs=counted(target.window._probs))
      rec_c, seconds_c, comp_c = run(dataclasses.replace(target, window=window))
      executed = count["rows"]
    elif resolved.incremental:
      # Count the head's rows (one per candidate); the final check runs `full`, uncounted.
      rec_c, seconds_c, comp_c = run(dataclasses.replace(target, head=counted(target.head)))
      executed = count["rows"]
    else:
      rec_c, seconds_c, comp_c = run(counted(clf.predict))
      executed = count["rows"] - 2 * len(ids)   # minus the runner's final check (adv + clean)
    identical = bool(same(rec, rec_c))
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
  summary = _summary(rows, seconds, timing)
  if args.pixeljax_count_forward:
    summary.update(forwards_executed_total=executed, forwards_per_image_mean=executed / n,
                   forwards_per_second=executed / seconds,
                   forward_callback_rows=count["rows"], forward_callback_calls=count["calls"])
  return dict(settings=dict(config=resolved.__dict__, key=f"PRNGKey({args.seed})",
                            images_per_call=n, effective_population=args.popsize,
                            budget=config.budget),
              summary=summary, per_image=rows, environment=_jax_env())


def worker_torchattacks(args):
  if args.rule != "first_success":
    raise SystemExit(f"error: {TORCHATTACKS_SKIP}")
  torch = _torch_setup(args)
  import torchattacks
  model, torch_nets = _torch_model(args, torch)
  x_all, y_all = torch_nets.load_cifar10_exact(args.data)
  ids = np.asarray(args.ids, np.int64)
  net = _CountingNet.make(torch, model, 255.0).to(args.device)   # [0, 1] in -> [0, 255] net
  inf_batch = args.ta_inf_batch or args.popsize
  atk = torchattacks.OnePixel(net, pixels=PIXELS, steps=args.generations, popsize=args.popsize,
                              inf_batch=inf_batch)
  popmul = max(1, int(args.popsize / DIMS))
  print(f"[torchattacks {args.rule}] {len(ids)} images one at a time: OnePixel(pixels=1, "
        f"steps={args.generations}, popsize={args.popsize} -> {popmul * DIMS} members, "
        f"inf_batch={inf_batch})", flush=True)
  rows, total = [], 0.0
  for image_id in ids:
    label = int(y_all[image_id])
    x01 = (torch_nets.to_nchw(x_all[image_id:image_id + 1]) / 255.0).contiguous().to(args.device)
    y = torch.tensor([label], device=args.device)
    np.random.seed(per_image_seed(args.seed, image_id))   # its DE draws from np.random
    net.reset(label)
    _sync(torch, args.device)
    t0 = time.perf_counter()
    adv = atk(x01, y)
    _sync(torch, args.device)
    dt = time.perf_counter() - t0
    total += dt
    counted = dict(images=net.images, calls=net.calls, checks=net.single_calls,
                   first=net.first_fooled)
    net.reset(-1)
    with torch.inference_mode():
      p = torch.softmax(model((adv * 255.0).contiguous(memory_format=torch.channels_last)),
                        -1)[0]
      p_round = torch.softmax(model(torch.round(adv * 255.0).contiguous(
          memory_format=torch.channels_last)), -1)[0]
    diff = torch.nonzero((adv[0] != x01[0]).any(0))
    pix = None
    if len(diff):
      rr, cc = (int(v) for v in diff[0])
      pix = dict(row=rr, col=cc, rgb=[float(v) * 255.0 for v in adv[0, :, rr, cc]])
    gens = counted["checks"]   # its callback: one 1-image forward per generation
    rows.append(dict(
        image_id=int(image_id), label=label, success=bool(int(p.argmax()) != label),
        success_uint8_rounded=bool(int(p_round.argmax()) != label),
        adversarial_class=int(p.argmax()), p_true=float(p[label]),
        queries=counted["images"], forwards=counted["images"],
        check_queries=counted["checks"], forward_calls=counted["calls"],
        first_fooled_query=counted["first"], generations=gens, seconds=dt,
        changed_pixels=int(len(diff)), pixel=pix))
    print(f"  image {int(image_id):4d}: {'fooled' if rows[-1]['success'] else 'not fooled'}, "
          f"{counted['images']} queries, {gens} generations, {dt:.2f} s", flush=True)
  summary = _summary(rows, total)
  summary["successes_uint8_rounded"] = sum(r["success_uint8_rounded"] for r in rows)
  return dict(settings=dict(torchattacks=torchattacks.__version__, pixels=PIXELS,
                            steps=args.generations, popsize=args.popsize, inf_batch=inf_batch,
                            effective_population=popmul * DIMS, init="random",
                            strategy="best1bin, F~U(0.5,1), recombination 1",
                            rng="np.random.seed(SeedSequence([seed, image_id]))",
                            stop="after each generation: best member misclassified "
                                 "(+1 query per generation)",
                            max_queries=popmul * DIMS + args.generations * (popmul * DIMS + 1)),
              summary=summary, per_image=rows,
              environment=dict(_torch_env(torch), device=args.device))


class _ScipyObjective:
  """SciPy DE's vectorized objective for one image, with the rule checked on every candidate.

  Candidates (row, col, r, g, b) in [0, 32) x [0, 32) x [0, 256)^3 are truncated to integers
  (Hyperparticle's ``astype(int)``) and written into the uint8 image."""

  def __init__(self, torch, net, image_hwc, label, rule, device):
    self.torch, self.net, self.label, self.rule, self.device = torch, net, int(label), rule, device
    self.base = torch.from_numpy(np.asarray(image_hwc, np.float32)).to(device)   # (H, W, C)
    self.h, self.w, _ = image_hwc.shape
    self.queries = 0
    self.skipped = 0
    self.met = False
    self.first_fooled = -1
    self.best = None           # (loss, candidate, probs) lowest p_true so far
    self.stop_pick = None      # (loss, candidate, probs) the candidate reported at the stop

  def decode(self, cands):
    c = np.floor(cands)
    row = np.clip(c[:, 0], 0, self.h - 1).astype(np.int64)
    col = np.clip(c[:, 1], 0, self.w - 1).astype(np.int64)
    rgb = np.clip(c[:, 2:5], 0, 255).astype(np.float32)
    return row, col, rgb

  def probs(self, cands):
    torch = self.torch
    row, col, rgb = self.decode(cands)
    s = len(cands)
    x = self.base.unsqueeze(0).repeat(s, 1, 1, 1)                    # (S, H, W, C)
    x[torch.arange(s), torch.from_numpy(row), torch.from_numpy(col)] = (
        torch.from_numpy(rgb).to(self.device))
    with torch.inference_mode():
      z = self.net(x.permute(0, 3, 1, 2))                            # NCHW, channels_last
      return torch.softmax(z, -1).cpu().numpy().astype(np.float64)

  def __call__(self, x):
    cands = np.atleast_2d(np.asarray(x).T)                           # vectorized: x is (D, S)
    if self.met:
      # The rule was met by the initial population; SciPy asks for one more generation before
      # it calls the callback. Those candidates are not sent to the model.
      self.skipped += len(cands)
      return np.full(len(cands), np.inf)
    p = self.probs(cands)
    loss = p[:, self.label]
    fooled = p.argmax(-1) != self.label
    if self.first_fooled < 0 and fooled.any():
      self.first_fooled = self.queries + int(np.argmax(fooled)) + 1
    self.queries += len(cands)
    i = int(np.argmin(loss))
    if self.best is None or loss[i] < self.best[0]:
      self.best = (float(loss[i]), cands[i].copy(), p[i])
    hit = (loss < THRESHOLD) if self.rule == "paper" else fooled
    if hit.any() and not self.met:
      self.met = True
      j = int(np.argmin(np.where(hit, loss, np.inf)))   # paper: = the batch's best
      self.stop_pick = (float(loss[j]), cands[j].copy(), p[j])
    return loss

  def callback(self, *args, **kwargs):   # SciPy's legacy (xk, convergence) or new form
    return bool(self.met)


def worker_scipy(args):
  import inspect

  import scipy
  from scipy.optimize import differential_evolution
  torch = _torch_setup(args)
  model, torch_nets = _torch_model(args, torch)
  net = _CountingNet.make(torch, model, 1.0).to(args.device)
  x_all, y_all = torch_nets.load_cifar10_exact(args.data)
  ids = np.asarray(args.ids, np.int64)
  h, w = x_all.shape[1:3]
  bounds = [(0, h), (0, w), (0, 256), (0, 256), (0, 256)] * PIXELS
  popmul = max(1, args.popsize // len(bounds))
  rng_kw = "rng" if "rng" in inspect.signature(differential_evolution).parameters else "seed"
  print(f"[scipy {args.rule}] {len(ids)} images one at a time: differential_evolution("
        f"popsize={popmul} -> {popmul * len(bounds)} members, maxiter={args.generations}, "
        f"recombination=1, atol=-1, polish=False, vectorized, deferred)", flush=True)
  rows, total = [], 0.0
  for image_id in ids:
    label = int(y_all[image_id])
    obj = _ScipyObjective(torch, net, x_all[image_id], label, args.rule, args.device)
    net.reset(label)
    rng = np.random.default_rng([int(args.seed), int(image_id)])
    _sync(torch, args.device)
    t0 = time.perf_counter()
    res = differential_evolution(obj, bounds, maxiter=args.generations, popsize=popmul,
                                 recombination=1, atol=-1, callback=obj.callback, polish=False,
                                 updating="deferred", vectorized=True, **{rng_kw: rng})
    _sync(torch, args.device)
    dt = time.perf_counter() - t0
    total += dt
    counted = dict(images=net.images, first=net.first_fooled)
    net.reset(-1)
    assert counted["images"] == obj.queries, (counted, obj.queries)
    loss, cand, _ = obj.stop_pick if obj.stop_pick is not None else obj.best
    # independent check of the reported candidate, outside the counter
    row, col, rgb = obj.decode(cand[None])
    img = np.array(x_all[image_id])
    img[row[0], col[0]] = rgb[0].astype(np.uint8)
    with torch.inference_mode():
      z = model(torch_nets.to_nchw(img[None]).to(args.device).contiguous(
          memory_format=torch.channels_last))
      p = torch.softmax(z, -1)[0].cpu().numpy()
    gens = (obj.queries - popmul * len(bounds)) // (popmul * len(bounds))   # after the init
    rows.append(dict(
        image_id=int(image_id), label=label, success=bool(int(p.argmax()) != label),
        adversarial_class=int(p.argmax()), p_true=float(p[label]),
        queries=counted["images"], forwards=counted["images"],
        skipped_candidates=obj.skipped, scipy_nfev=int(res.nfev), scipy_nit=int(res.nit),
        scipy_message=str(res.message),
        first_fooled_query=counted["first"], generations=gens, seconds=dt,
        pixel=dict(row=int(row[0]), col=int(col[0]), rgb=[float(v) for v in rgb[0]])))
    print(f"  image {int(image_id):4d}: {'fooled' if rows[-1]['success'] else 'not fooled'}, "
          f"{counted['images']} queries, {res.nit} generations, {dt:.2f} s", flush=True)
  return dict(settings=dict(scipy=scipy.__version__, bounds=bounds, popsize=popmul,
                            effective_population=popmul * len(bounds),
                            maxiter=args.generations, recombination=1, atol=-1, polish=False,
                            strategy="best1bin (default), F~U(0.5,1) (default)",
                            init="latinhypercube (default)", updating="deferred",
                            vectorized=True, rng=f"default_rng([seed, image_id]) via {rng_kw}=",
                            stop="rule checked on every scored candidate; callback ends the run"),
              summary=_summary(rows, total), per_image=rows,
              environment=dict(_torch_env(torch), device=args.device))


def _timed_repeats(fn, min_seconds, min_repeats=5):
  fn()   # warm-up
  fn()
  times = []
  t_end = time.perf_counter() + min_seconds
  while len(times) < min_repeats or time.perf_counter() < t_end:
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def worker_forward_jax(args):
  mesh = _cpu_mesh(args)       # before anything starts JAX's backend
  import jax
  from pixeljax import evaluate, models
  from pixeljax.cli import quiet_backend_probes
  quiet_backend_probes()
  clf = models.load(args.model)
  f = jax.jit(clf.predict)
  b = args.popsize
  x = jax.random.uniform(jax.random.PRNGKey(0), (b,) + tuple(clf.spec.input_shape), maxval=255.)
  t0 = time.perf_counter()
  jax.block_until_ready(f(x))
  first = time.perf_counter() - t0
  times = _timed_repeats(lambda: jax.block_until_ready(f(x)), args.forward_seconds)
  out = dict(batch=b, what="jax.jit(classifier.predict), float32 NHWC [0, 255]",
             first_call_seconds=first, repeats=len(times),
             evals_per_second_best=b / min(times),
             evals_per_second_median=b / float(np.median(times)), environment=_jax_env())
  if mesh is not None:
    # The same batch as the attacks on windows evaluate it: calls of CPU_DEALT_EVAL_BATCH
    # images dealt to the CPU devices.
    size = evaluate.CPU_DEALT_EVAL_BATCH
    g = evaluate.dealt(clf.predict, size, mesh)
    times = _timed_repeats(lambda: jax.block_until_ready(g(x)), args.forward_seconds)
    out["dealt"] = dict(call=size, devices=mesh.size, repeats=len(times),
                        what=f"pixeljax.evaluate.dealt(classifier.predict, {size}, mesh)",
                        evals_per_second_best=b / min(times),
                        evals_per_second_median=b / float(np.median(times)))
  return out


def worker_forward_torch(args):
  torch = _torch_setup(args)
  model, _ = _torch_model(args, torch)
  b = args.popsize
  g = torch.Generator().manual_seed(0)
  x = (torch.rand((b, 3, 32, 32), generator=g) * 255.0).to(args.device).contiguous(
      memory_format=torch.channels_last)

  def go():
    with torch.inference_mode():
      model(x)
    _sync(torch, args.device)
  times = _timed_repeats(go, args.forward_seconds)
  out = dict(batch=b, what="torch net under inference_mode, float32 NCHW channels_last",
             repeats=len(times), evals_per_second_best=b / min(times),
             evals_per_second_median=b / float(np.median(times)),
             environment=dict(_torch_env(torch), device=args.device))
  # The same images in calls of 50 (pixeljax's dealt calls' size), for the best of both.
  small = 50

  def go_small():
    with torch.inference_mode():
      for i in range(0, b, small):
        model(x[i:i + small])
    _sync(torch, args.device)
  times = _timed_repeats(go_small, args.forward_seconds)
  out["calls_of_50"] = dict(call=small, repeats=len(times),
                            evals_per_second_best=b / min(times),
                            evals_per_second_median=b / float(np.median(times)))
  return out


WORKERS = dict(select=worker_select, pixeljax=worker_pixeljax,
               torchattacks=worker_torchattacks, scipy=worker_scipy,
               forward_jax=worker_forward_jax, forward_torch=worker_forward_torch)


def run_worker(args):
  args.ids = [int(s) for s in args.image_ids.split(",") if s.strip()] if args.image_ids else []
  load0 = _load()
  t0 = time.perf_counter()
  out = WORKERS[args.worker](args)
  meta = dict(worker=args.worker, rule=args.rule, model=args.model, image_ids=args.ids,
              popsize=args.popsize, generations=args.generations, seed=args.seed,
              worker_seconds=time.perf_counter() - t0, loadavg_before=load0,
              loadavg_after=_load(), python=platform.python_version(),
              cpu_count=os.cpu_count())
  for k, v in meta.items():
    out.setdefault(k, v)    # the select worker's own image_ids win
  _dump(args.worker_out, out)
  return 0


# ------------------------------------------------------------------------------ driver

def _spawn(args, worker, tmpdir, rule=None, ids=None, extra=()):
  """Runs one worker in a fresh process; returns (json or None, process seconds, error)."""
  out = os.path.join(tmpdir, f"{worker}_{rule or 'none'}.json")
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker,
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


def _driver(t_start, **extra) -> dict:
  """The driver's own environment, recorded beside the results."""
  return dict(seconds=time.perf_counter() - t_start, python=platform.python_version(),
              machine=platform.machine(), cpu_count=os.cpu_count(),
              command=" ".join(sys.argv), **extra)


def _publish(out_path, result, text) -> None:
  """Writes the JSON (atomically) with its table, and prints the table."""
  result["table"] = text
  from pixeljax import workdir
  workdir.write_json(out_path, result)
  print("\n" + text)
  print(f"\nwrote {out_path}")


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
        driver=_driver(t_start))
    _publish(out_path, result, table(result))
    failed = [f"{t}/{r}" for r in results for t, v in results[r].items() if "error" in v]
    return 1 if failed else 0
  finally:
    if args.keep_worker_json:
      print(f"worker JSON kept in {tmpdir}")
    else:
      shutil.rmtree(tmpdir, ignore_errors=True)


def parse(argv=None):
  ap = argparse.ArgumentParser(
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
                  help="pixeljax runs the whole net per candidate (incremental=False), as "
                       "before its default split at the first convolution")
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


if __name__ == "__main__":
  sys.exit(main())
