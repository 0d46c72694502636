"""Constants and helpers shared by the peer benchmark's driver and workers (and by
``benchmarks/train_peers.py``). Nothing here imports JAX or torch at module level: a torch
worker never starts JAX, a JAX worker never loads torch."""
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))            # benchmarks/peers
ROOT = os.path.dirname(os.path.dirname(HERE))                # the repository
DEFAULT_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data",
                                             "cifar10_test_exact1017.npz"))
TOOLS = ("pixeljax", "torchattacks", "scipy")
RULES = ("paper", "first_success")
RULE_NAMES = {"paper": "p_true < 5%", "first_success": "first misclassification"}
RULE_ALIASES = {"a": "paper", "b": "first_success", "paper": "paper",
                "first_success": "first_success"}
# Models that exist both in pixeljax's zoo and in benchmarks/torch_nets.py.
MODELS = ("cifar10_lenet_hyperparticle", "cifar10_resnet20_akamaster",
          "cifar10_resnet32_akamaster")
THRESHOLD = 0.05       # the paper's untargeted stop: p_true < 5%
PIXELS = 1
DIMS = 5               # (x, y, r, g, b) per pixel
TORCHATTACKS_SKIP = ("torchattacks' OnePixel cannot express p_true < 5%: its stop is "
                     "hard-wired in _attack_success (best member misclassified); reported only "
                     "under its native rule, first misclassification")


def jsonable(o):
  """``o`` with numpy arrays and scalars as JSON's lists and numbers."""
  if isinstance(o, dict):
    return {str(k): jsonable(v) for k, v in o.items()}
  if isinstance(o, (list, tuple)):
    return [jsonable(v) for v in o]
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, np.generic):
    return o.item()
  return o


def dump(path, obj):
  """Atomic JSON for worker outputs (torch workers do not import pixeljax / JAX)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(jsonable(obj), f, indent=1)
  os.replace(tmp, path)


def per_image_seed(seed, image_id):
  """A 32-bit seed that depends only on (seed, image id)."""
  return int(np.random.SeedSequence([int(seed), int(image_id)]).generate_state(1)[0])


def load_average():
  try:
    return list(os.getloadavg())
  except OSError:
    return None


def summarize(rows, seconds, extra_seconds=None):
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


def timed_repeats(fn, min_seconds, min_repeats=5):
  """Seconds of each of at least ``min_repeats`` calls of ``fn`` lasting ``min_seconds`` in
  all, after two warm-up calls."""
  fn()
  fn()
  times = []
  t_end = time.perf_counter() + min_seconds
  while len(times) < min_repeats or time.perf_counter() < t_end:
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def rates(batch, times) -> dict:
  """Evaluations per second, best and median, of calls of ``batch`` images taking ``times``."""
  return dict(repeats=len(times), evals_per_second_best=batch / min(times),
              evals_per_second_median=batch / float(np.median(times)))


# ---------------------------------------------------------------------------------- JAX

def compile_listener():
  """A function returning the seconds of JAX's trace, lowering and backend compile events
  since this call (``jax.monitoring``), by event."""
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


def jax_env():
  import jax
  return dict(framework="jax", jax=jax.__version__, backend=jax.default_backend(),
              devices=[str(d) for d in jax.devices()],
              compilation_cache_dir=jax.config.jax_compilation_cache_dir)


# -------------------------------------------------------------------------------- torch

def torch_setup(args):
  import torch
  if args.torch_threads > 0:
    torch.set_num_threads(args.torch_threads)
  return torch


def torch_env(torch):
  return dict(framework="torch", torch=torch.__version__, threads=torch.get_num_threads(),
              interop_threads=torch.get_num_interop_threads())


# ------------------------------------------------------------------------------- driver

def command_line() -> str:
  """This process's command as typed from the repository root: ``-m benchmarks.peers ...``
  or ``benchmarks/train_peers.py ...``."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  if spec is not None and spec.name not in ("", "__main__"):    # not a file or folder run
    head = "-m " + spec.name.removesuffix(".__main__")
  else:
    head = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
  return " ".join([head] + sys.argv[1:])


def driver_env(t_start, **extra) -> dict:
  """The driver's own environment, recorded beside the results."""
  return dict(seconds=time.perf_counter() - t_start, python=platform.python_version(),
              machine=platform.machine(), cpu_count=os.cpu_count(), command=command_line(),
              **extra)


def publish(out_path, result, text) -> None:
  """Writes the JSON (atomically) with its table, and prints the table."""
  result["table"] = text
  from pixeljax import workdir
  workdir.write_json(out_path, result)
  print("\n" + text)
  print(f"\nwrote {out_path}")
