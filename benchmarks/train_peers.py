r"""Training-step speed: pixeljax's jitted training step vs the same step in eager PyTorch.

All-CNN-C, NiN and VGG16 (CIFAR-10: 32x32x3 pixels in [0, 255], 10 classes), on CPU, each
framework IN ITS OWN PROCESS (a subprocess of this driver; per net pixeljax then PyTorch), so
no framework's thread pools run beside another's.

    .venv/bin/python benchmarks/train_peers.py --single_thread            # all three nets
    .venv/bin/python benchmarks/train_peers.py --nets allcnn --batch 128 --steps 20 \
        --repeats 3 --xla_flags="--xla_cpu_enable_fast_math=false" --out runs/peers/x.json
    .venv/bin/python benchmarks/train_peers.py --nets allcnn,nin --jax_devices 1   # one device

Prints one table and writes one JSON (atomically, ``pixeljax.workdir.write_json``; default
``runs/peers/train_<nets>.json``) with the settings, each worker's threads, load averages and
versions, and per net both frameworks' parameter counts and timings.

The step, the same in both:
  * pixeljax: ``pixeljax.train._make_step(spec.module(), make_optimizer(TrainConfig(...)),
    augment=True)``, the very function ``train()`` runs, on a ``TrainState`` built as
    ``train()`` builds it (``spec.init``, ``tx.init``), a fresh ``fold_in`` key per step as
    ``train()`` does. The step is timed without ``train()``'s per-step ``float(loss)``: each
    block of steps ends with ``jax.block_until_ready`` on the state and loss.
  * PyTorch (``torch.nn`` rebuilds below): the same layers, channels, kernels, strides, BN
    (torch momentum 0.1 = flax 0.9, eps 1e-5), element-wise dropout, global average pooling
    and ``CIFAR_STANDARD`` preprocessing inside the model; SGD, Nesterov momentum 0.9, weight
    decay 5e-4 on conv/linear weights only (param groups; optax decays the ``kernel`` leaves),
    the same cosine schedule (``LambdaLR`` stepped per step), softmax cross-entropy, train mode,
    the same random 4-pixel-zero-pad crop + horizontal flip of the raw batch (one gather),
    accuracy computed as pixeljax's step does. Eager mode (no ``torch.compile``); channels_last
    memory (model and batch) unless ``--torch_memory_format contiguous``.
  The driver fails unless both frameworks report the same parameter and BN-statistic counts,
  preprocessing and optimiser recipe.

Data: one fixed-seed batch (uniform pixels in [0, 255], uniform labels) reused every step;
step time does not depend on the values. Timing: the first step alone (for JAX: compile + first
run; compile seconds from jax.monitoring's trace + lowering + backend-compile events), then
``--warmup`` steps, then ``--repeats`` blocks of ``--steps`` steps; images/s = batch * steps /
block seconds, best and median block.

Caveats: XLA's ``SAME`` padding of a stride-2 conv or pool on an even size pads (0, 1) while
torch pads (1, 1): same shapes and FLOPs, a one-pixel shift of the sampling grid (All-CNN's
strided convs, NiN's pools). Torch's BN running variance is unbiased, flax's biased. Threads:
each framework's default, or one each with ``--single_thread`` (torch.set_num_threads(1);
XLA:CPU without its Eigen pool; OMP/MKL/OpenBLAS 1); on shared or busy cores use it (see
``benchmarks/peers``), and say which was used.
"""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):     # torch_nets; the benchmarks package
  if _path not in sys.path:
    sys.path.insert(0, _path)

from benchmarks.peers.common import (compile_listener, driver_env, dump, jax_env,  # noqa: E402
                                     load_average, publish, torch_env, torch_setup)

NETS = {"allcnn": "cifar10_allcnn", "nin": "cifar10_nin", "vgg16": "cifar10_vgg16"}
CIFAR_TRAIN_SIZE = 50000   # steps per epoch of the cosine schedule = this // batch
# The PyTorch side's copies of pixeljax's settings; the driver checks them against the values
# the pixeljax worker reports (layers.CIFAR_STANDARD, TrainConfig's defaults).
CIFAR_STANDARD = dict(scale=1 / 255, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")    # = pixeljax.models.vgg._VGG16
RECIPE = dict(optimizer="sgd", learning_rate=0.05, momentum=0.9, weight_decay=5e-4,
              schedule="cosine", warmup_epochs=0.0, epochs=10, augment=True)


def _data(args):
  rng = np.random.default_rng(args.seed)
  images = rng.uniform(0, 255, (args.batch, 32, 32, 3)).astype(np.float32)
  return images, rng.integers(0, 10, args.batch)


def _time_steps(run, args):
  """``run(k)`` does k steps and waits for them. First step, warm-up, then timed blocks."""
  t0 = time.perf_counter()
  run(1)
  first = time.perf_counter() - t0
  if args.warmup:
    run(args.warmup)
  blocks = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    run(args.steps)
    blocks.append(time.perf_counter() - t0)
  images = args.batch * args.steps
  med = float(np.median(blocks))
  return dict(first_step_seconds=first, block_seconds=blocks,
              images_per_second_best=images / min(blocks),
              images_per_second_median=images / med,
              seconds_per_step_best=min(blocks) / args.steps,
              seconds_per_step_median=med / args.steps)


# ------------------------------------------------------------------------------- pixeljax

def worker_jax(args):
  import dataclasses
  import flax
  import jax
  import jax.numpy as jnp
  import jaxlib
  import optax
  from pixeljax.cli import quiet_backend_probes
  from pixeljax.models import registry
  from pixeljax.train import (TrainConfig, TrainState, _data_parallel, _make_step,
                              batch_devices, make_optimizer)
  quiet_backend_probes()
  compiled = compile_listener()
  spec = registry.get(args.net)
  config = TrainConfig(batch_size=args.batch, seed=args.seed)
  tx = make_optimizer(config, CIFAR_TRAIN_SIZE // args.batch)
  variables = spec.init(jax.random.PRNGKey(config.seed))
  state = TrainState(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32),
                     params=variables["params"], batch_stats=variables.get("batch_stats"),
                     opt_state=tx.init(variables["params"]))
  step = _make_step(spec.module(), tx, config.augment)
  devices = batch_devices(args.batch, args.jax_devices or None)     # 0: as train() picks
  state, put = _data_parallel(state, devices)
  images, labels = (put(jnp.asarray(a)) for a in _data(args))
  key = jax.random.PRNGKey(config.seed)
  done = 0

  def run(k):
    nonlocal state, done
    for _ in range(k):
      state, loss, _ = step(state, images, labels, jax.random.fold_in(key, done))
      done += 1
    jax.block_until_ready((state, loss))

  count = lambda tree: sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(tree))
  c0 = compiled()
  timing = _time_steps(run, args)
  comp = {k: v - c0.get(k, 0.0) for k, v in compiled().items()}
  timing.update(compile_seconds=float(sum(comp.values())), compile_events=comp)
  cfg = dataclasses.asdict(config)
  return dict(timing, params=count(state.params), batch_stats=count(state.batch_stats),
              preprocess=spec.preprocess, recipe={k: cfg[k] for k in RECIPE},
              what="pixeljax.train._make_step (jit), NHWC float32", devices=devices,
              environment=dict(jax_env(), jaxlib=jaxlib.__version__, flax=flax.__version__,
                               optax=optax.__version__,
                               xla_flags=os.environ.get("XLA_FLAGS", "")))


# -------------------------------------------------------------------------------- PyTorch

def _torch_net(name, torch):
  """The ``name`` Flax backbone (with BN, as registered) rebuilt in torch.nn, preprocessing in."""
  import torch_nets
  nn = torch.nn

  def conv(cin, cout, k, stride=1, padding=None):   # conv (no bias), BN, ReLU
    pad = k // 2 if padding is None else padding
    return [nn.Conv2d(cin, cout, k, stride, pad, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1), nn.ReLU(inplace=True)]

  gap = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
  if name == "cifar10_allcnn":
    layers = [nn.Dropout(0.2), *conv(3, 96, 3), *conv(96, 96, 3), *conv(96, 96, 3, 2),
              nn.Dropout(0.5), *conv(96, 192, 3), *conv(192, 192, 3), *conv(192, 192, 3, 2),
              nn.Dropout(0.5), *conv(192, 192, 3, padding=0), *conv(192, 192, 1),
              nn.Conv2d(192, 10, 1), *gap]
  elif name == "cifar10_nin":
    layers = [*conv(3, 192, 5), *conv(192, 160, 1), *conv(160, 96, 1),
              nn.MaxPool2d(3, 2, 1), nn.Dropout(0.5),
              *conv(96, 192, 5), *conv(192, 192, 1), *conv(192, 192, 1),
              nn.AvgPool2d(3, 2, 1, count_include_pad=True), nn.Dropout(0.5),
              *conv(192, 192, 3), *conv(192, 192, 1), nn.Conv2d(192, 10, 1), *gap]
  elif name == "cifar10_vgg16":
    layers, cin = [], 3
    for v in VGG16_LAYERS:
      layers += [nn.MaxPool2d(2, 2)] if v == "M" else conv(cin, v, 3)
      cin = cin if v == "M" else v
    layers += [nn.Flatten(), nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(inplace=True),
               nn.Dropout(0.5), nn.Linear(512, 10)]
  else:
    raise ValueError(f"no torch rebuild of {name!r}")
  prep = torch_nets.Normalize(CIFAR_STANDARD["mean"], CIFAR_STANDARD["std"],
                              CIFAR_STANDARD["scale"])
  return nn.Sequential(prep, *layers)


def _torch_augment(torch, images, gen):
  """pixeljax's ``augment_batch`` on an NHWC batch: random crop of the 4-pixel zero-padded
  image, then a random horizontal flip; returns an NCHW view (channels_last memory)."""
  n, h, w, _ = images.shape
  padded = torch.nn.functional.pad(images, (0, 0, 4, 4, 4, 4))
  dy = torch.randint(0, 9, (n,), generator=gen)
  dx = torch.randint(0, 9, (n,), generator=gen)
  flip = torch.rand(n, generator=gen) < 0.5
  rows = dy[:, None] + torch.arange(h)
  cols = dx[:, None] + torch.where(flip[:, None], torch.arange(w - 1, -1, -1), torch.arange(w))
  out = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
  return out.permute(0, 3, 1, 2)


def worker_torch(args):
  torch = torch_setup(args)
  F = torch.nn.functional
  torch.manual_seed(args.seed)
  gen = torch.Generator().manual_seed(args.seed)
  channels_last = args.torch_memory_format == "channels_last"
  model = _torch_net(args.net, torch).train()
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
  decay = [m.weight for m in model.modules()
           if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
  decayed = {id(p) for p in decay}
  rest = [p for p in model.parameters() if id(p) not in decayed]
  opt = torch.optim.SGD([dict(params=decay, weight_decay=RECIPE["weight_decay"]),
                         dict(params=rest, weight_decay=0.0)],
                        lr=RECIPE["learning_rate"], momentum=RECIPE["momentum"], nesterov=True)
  total = RECIPE["epochs"] * (CIFAR_TRAIN_SIZE // args.batch)     # optax.cosine_decay_schedule
  sched = torch.optim.lr_scheduler.LambdaLR(
      opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
  images, labels = (torch.from_numpy(a) for a in _data(args))

  def run(k):
    for _ in range(k):
      x = _torch_augment(torch, images, gen)
      x = x if channels_last else x.contiguous()
      logits = model(x)
      loss = F.cross_entropy(logits, labels)
      (logits.argmax(-1) == labels).float().mean()       # the accuracy pixeljax's step returns
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      sched.step()

  timing = _time_steps(run, args)
  bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  return dict(timing, params=sum(p.numel() for p in model.parameters()),
              batch_stats=sum(m.running_mean.numel() + m.running_var.numel() for m in bn),
              preprocess=CIFAR_STANDARD, recipe=RECIPE,
              what=f"eager torch.nn rebuild, NCHW float32, {args.torch_memory_format}",
              environment=dict(torch_env(torch), memory_format=args.torch_memory_format,
                               mkldnn=torch.backends.mkldnn.is_available()))


WORKERS = dict(jax=worker_jax, torch=worker_torch)


def run_worker(args):
  load0 = load_average()
  t0 = time.perf_counter()
  out = WORKERS[args.worker](args)
  out.update(worker=args.worker, net=args.net, worker_seconds=time.perf_counter() - t0,
             loadavg_before=load0, loadavg_after=load_average(), cpu_count=os.cpu_count(),
             python=platform.python_version())
  dump(args.worker_out, out)
  return 0


# ---------------------------------------------------------------------------------- driver

def _spawn(args, worker, net, tmpdir):
  """Runs one worker in a fresh process; returns its JSON or raises SystemExit."""
  out = os.path.join(tmpdir, f"{worker}_{net}.json")
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--net", net,
         "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
         "--repeats", str(args.repeats), "--seed", str(args.seed),
         "--torch_threads", str(1 if args.single_thread else args.torch_threads),
         "--torch_memory_format", args.torch_memory_format, "--worker_out", out,
         "--jax_devices", str(1 if args.single_thread else args.jax_devices)]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
  flags = [env.get("XLA_FLAGS")]
  if args.single_thread:
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    flags += ["--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
  if worker == "jax":
    flags.append(args.xla_flags)
  env["XLA_FLAGS"] = " ".join(f for f in flags if f)
  rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
  if rc != 0 or not os.path.exists(out):
    raise SystemExit(f"error: the {worker} worker for {net} exited with status {rc}")
  with open(out) as f:
    return json.load(f)


def _check_same(net, jx, tc):
  """Fails loudly unless both rebuilds have the same sizes, preprocessing and recipe."""
  for key in ("params", "batch_stats", "preprocess", "recipe"):
    a, b = jx[key], tc[key]       # as read back from JSON: tuples are lists in both
    if a != b:
      raise SystemExit(f"error: {net}: pixeljax and torch differ in {key}: {a} vs {b}")


def table(result) -> str:
  s = result["settings"]
  lines = [f"training step, batch {s['batch']}, {s['steps']} steps x {s['repeats']} blocks, "
           f"threads: {s['threads']}, torch {s['torch_memory_format']}"
           + (f", XLA_FLAGS+={s['xla_flags']!r}" if s["xla_flags"] else ""),
           f"{'net':<8} {'params':>10} {'torch img/s':>17} {'pixeljax img/s':>17} "
           f"{'pj/torch':>8} {'torch s/step':>12} {'pj s/step':>9} {'torch 1st s':>11} "
           f"{'jax 1st s':>9} {'compile s':>9}"]
  for net, r in result["results"].items():
    t, j = r["torch"], r["pixeljax"]
    speed = lambda x: f"{x['images_per_second_best']:,.0f} ({x['images_per_second_median']:,.0f})"
    lines.append(f"{net:<8} {j['params']:>10,} {speed(t):>17} {speed(j):>17} "
                 f"{r['ratio_best']:>8.2f} {t['seconds_per_step_median']:>12.3f} "
                 f"{j['seconds_per_step_median']:>9.3f} {t['first_step_seconds']:>11.2f} "
                 f"{j['first_step_seconds']:>9.2f} {j['compile_seconds']:>9.2f}")
  lines.append("img/s: best block (median block); pj/torch: ratio of best img/s; s/step: "
               "median block; 1st s: the first step alone (jax: compile included)")
  return "\n".join(lines)


def drive(args):
  t_start = time.perf_counter()
  load0 = load_average()
  nets = [n.strip() for n in args.nets.split(",") if n.strip()]
  for n in nets:
    if n not in NETS:
      raise SystemExit(f"error: unknown net {n!r}; known: {', '.join(NETS)}")
  out_path = args.out or os.path.join(ROOT, "runs", "peers", f"train_{'_'.join(nets)}.json")
  results = {}
  with tempfile.TemporaryDirectory(prefix="train_peers_") as tmpdir:
    for n in nets:
      print(f"== {n} ({NETS[n]}): pixeljax", flush=True)
      jx = _spawn(args, "jax", NETS[n], tmpdir)
      print(f"   {jx['images_per_second_best']:,.0f} img/s; torch", flush=True)
      tc = _spawn(args, "torch", NETS[n], tmpdir)
      print(f"   {tc['images_per_second_best']:,.0f} img/s", flush=True)
      _check_same(n, jx, tc)
      results[n] = dict(
          registry_name=NETS[n], pixeljax=jx, torch=tc,
          ratio_best=jx["images_per_second_best"] / tc["images_per_second_best"],
          ratio_median=jx["images_per_second_median"] / tc["images_per_second_median"])
  threads = ("1 each (--single_thread)" if args.single_thread else
             f"torch {args.torch_threads or 'default'}, XLA default")
  result = dict(
      settings=dict(nets=nets, batch=args.batch, steps=args.steps, warmup=args.warmup,
                    repeats=args.repeats, seed=args.seed, threads=threads,
                    single_thread=args.single_thread,
                    torch_threads=1 if args.single_thread else args.torch_threads or "default",
                    torch_memory_format=args.torch_memory_format, xla_flags=args.xla_flags,
                    recipe=RECIPE, steps_per_epoch=CIFAR_TRAIN_SIZE // args.batch,
                    data="one fixed-seed random batch: uniform [0, 255] pixels, uniform labels",
                    device="cpu"),
      results=results,
      driver=driver_env(t_start, loadavg_before=load0, loadavg_after=load_average()))
  publish(out_path, result, table(result))
  return 0


def parse(argv=None):
  ap = argparse.ArgumentParser(
      description="Training-step speed, pixeljax vs PyTorch, on All-CNN-C, NiN and VGG16 "
                  "(CIFAR-10, CPU), each framework in its own process.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  ap.add_argument("--nets", default=",".join(NETS), help="subset of " + ",".join(NETS))
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--steps", type=int, default=20, help="timed steps per block")
  ap.add_argument("--repeats", type=int, default=3, help="timed blocks")
  ap.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--torch_threads", type=int, default=0, help="0: torch's default")
  ap.add_argument("--single_thread", action="store_true",
                  help="one thread per framework (torch.set_num_threads(1); XLA:CPU without "
                       "its Eigen thread pool; OMP/MKL/OpenBLAS 1)")
  ap.add_argument("--torch_memory_format", default="channels_last",
                  choices=("channels_last", "contiguous"))
  ap.add_argument("--jax_devices", type=int, default=0,
                  help="devices pixeljax's step splits its batch over (pixeljax.train's "
                       "data parallelism; 0: as train() picks; 1 under --single_thread)")
  ap.add_argument("--xla_flags", default="",
                  help="extra XLA_FLAGS for the pixeljax worker (appended); write "
                       "--xla_flags=\"--xla_...\"")
  ap.add_argument("--out", default="", help="JSON path; default runs/peers/train_<nets>.json")
  ap.add_argument("--worker", choices=tuple(WORKERS), default=None, help=argparse.SUPPRESS)
  ap.add_argument("--net", default="", help=argparse.SUPPRESS)
  ap.add_argument("--worker_out", default="", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  for name in ("batch", "steps", "repeats"):
    if getattr(args, name) < 1:
      ap.error(f"--{name} must be >= 1")
  if args.warmup < 0:
    ap.error("--warmup must be >= 0")
  return args


def main(argv=None):
  args = parse(argv)
  return run_worker(args) if args.worker else drive(args)


if __name__ == "__main__":
  sys.exit(main())
