"""Running a classifier over many images in fixed-size batches: on the host
(``predict_in_batches``, ``accuracy``) and inside a compiled attack (``micro_batched``)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pixeljax import sharding

# Images per model call inside an attack on CPU (``PixelAttackConfig.eval_batch``). XLA:CPU
# runs a net fastest on batches whose activations stay in cache: the akamaster ResNet-20
# forward gives 1,110-1,136 evaluations/s at 25-400 images and 740-790 at 1,600-5,600, and
# a DE attack on 14 images per call (5,600 images per generation) rose from 681 to 1,119
# evaluations/s evaluated 400 at a time; the CIFAR LeNet from 14,700 to 16,000
# (benchmarks/cpu_batch.py). One paper population per call.
CPU_EVAL_BATCH = 400
# The same for one-pixel candidates on windows (``PixelAttackConfig.local_window``), whose
# model calls are all whole-map layers after the window: smaller calls keep their
# activations in cache. ResNet-20 DE attack, 4 images, on a 2-core AVX-512 EPYC: 3,655
# evaluations/s at 400, 4,121 at 100, 4,232 at 50, 4,225 at 25. (The other paths keep 400:
# their stored runs record it, and a resume asks for the same value.)
CPU_WINDOW_EVAL_BATCH = 50
# The largest model call that is dealt to a host's CPU devices by default
# (``PixelAttackConfig.eval_devices``, ``sharding.deals_model_calls``). XLA:CPU runs a call
# this small mostly on one core, a larger one on all: dealt to 2 devices against one device,
# warm, ResNet-20 one-pixel DE on windows (4 images, 50 per call) 1.46x; the LeNet (20
# images) 1.28x at 50 per call, 0.76x at 400; ResNet-20 3-pixel (400 per call) 0.73x.
CPU_DEALT_EVAL_BATCH = 50


def predict_in_batches(predict, images, batch_size: int = 256) -> np.ndarray:
  """Probabilities for all ``images``; pads the last batch so ``predict`` compiles once (as
  one program: run eagerly, a net's every layer would compile on its own)."""
  predict = jax.jit(predict)
  n = len(images)
  out = []
  for start in range(0, n, batch_size):
    batch = np.asarray(images[start:start + batch_size], np.float32)
    pad = batch_size - len(batch) if n > batch_size else 0
    if pad:
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
    out.append(np.asarray(predict(batch))[:batch_size - pad])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def in_fixed_batches(predict, x, size: int, active=None, mesh=None):
  """``predict(x)`` computed ``size`` rows per model call (the last call padded): every call
  has the same shape, so each row's numbers are those of any other batch of ``size``.
  ``x`` is an array or a pytree of arrays sharing their leading (row) axis. ``active`` (bool
  per row, optional): a call whose rows are all inactive is skipped and gives zeros -- for
  rows whose results the caller discards. ``mesh`` (one that ``sharding.deals_model_calls``):
  the calls go round robin to its devices, each holding all of ``x``."""
  leaves = jax.tree_util.tree_leaves(x)
  n = leaves[0].shape[0]
  chunks = max(1, -(-n // size))
  slices = lambda v: jnp.pad(v, [(0, chunks * size - n)] + [(0, 0)] * (v.ndim - 1)).reshape(
      (chunks, size) + v.shape[1:])
  xs = jax.tree_util.tree_map(slices, x)
  act = None if active is None else slices(active)
  if mesh is not None and mesh.size > 1 and chunks > 1:
    y = _dealt(predict, xs, jnp.ones((chunks, size), bool) if act is None else act, mesh)
  else:
    y = _each(predict, xs, act)
  return y.reshape((chunks * size,) + y.shape[2:])[:n]


def _each(predict, xs, act):
  """``predict`` over the leading (call) axis of ``xs``, skipping calls with no ``act``."""
  if act is None:
    return lax.map(predict, xs)
  out = jax.eval_shape(predict, jax.tree_util.tree_map(lambda v: v[0], xs))
  skip = lambda v: jnp.zeros(out.shape, out.dtype)
  return lax.map(lambda a: lax.cond(jnp.any(a[1]), predict, skip, a[0]), (xs, act))


def _dealt(predict, xs, act, mesh):
  """``_each`` with call i on device i mod D of the mesh's D: a step's calls (a DE
  population: eval_batch-sized slices of each attack's candidates) spread evenly over the
  devices whichever attacks are still running. Runs inside a ``shard_map`` over ``mesh``
  (every device holding all of ``xs``: the runner's ``_Engine``); the devices' results are
  all-gathered. Each call has the shape and program it has on one device, but XLA:CPU's
  rounding can differ by ~1 ulp between programs over 1 and D devices (hence the recorded
  ``PixelAttackConfig.eval_devices``)."""
  axis, d = mesh.axis_names[0], mesh.size
  chunks = act.shape[0]
  per = -(-chunks // d)

  def mine(v):      # this device's calls: j, j + d, j + 2d, ... (padding calls: no act)
    v = jnp.pad(v, [(0, per * d - chunks)] + [(0, 0)] * (v.ndim - 1))
    v = v.reshape((per, d) + v.shape[1:])
    return lax.dynamic_index_in_dim(v, lax.axis_index(axis), axis=1, keepdims=False)

  y = _each(predict, jax.tree_util.tree_map(mine, xs), mine(act))     # (per, size, ...)
  y = lax.all_gather(y, axis, axis=1)                                   # (per, d, size, ...)
  return y.reshape((per * d,) + y.shape[2:])[:chunks]


def micro_batched(predict, size: int, mesh=None):
  """``predict`` evaluated ``size`` images per model call, however many attacks are vmapped
  around it; returns ``f(x, active)``.

  Under ``jax.vmap`` (the runner vmaps an attack's evaluator over attacks), a model call's batch
  is attacks x candidates, so its size -- and, on XLA:CPU, its speed and even its last float
  bits (XLA picks the convolution algorithm by batch size) -- would depend on how many
  attacks share a call. ``f`` flattens every vmapped axis into one batch (a ``custom_vmap``
  rule), pads it to a multiple of ``size`` and runs the model over contiguous ``size``-image
  slices in a ``lax.map``: when a call holds more than ``size`` rows, the model sees batches
  of exactly ``size``, so an attack's numbers do not depend on its neighbours (DE: one
  population per slice). A call of at most ``size`` rows is one model call on all of them:
  its shape still varies with the number of rows (Sparse-RS's one proposal per attack), and
  nothing is skipped. ``active`` (bool per row of ``x``) marks rows whose results are used: a
  slice with none is skipped (zeros), so finished attacks riding along in a vmapped loop cost
  no model calls when their candidates fill whole slices. Outputs of active rows equal
  ``predict``'s row for row. On a batch sharded over attacks the slicing all-gathers the rows,
  so every device computes every slice: ``PixelAttackConfig.resolved`` turns it off there.
  ``mesh`` (a host's CPU cores as devices, ``sharding.deals_model_calls``): the slices are
  dealt to its devices."""
  if size < 1:
    raise ValueError(f"micro-batch size must be >= 1, got {size}")

  @jax.custom_batching.custom_vmap
  def evaluate(x, active):
    return (predict(x) if x.shape[0] <= size
            else in_fixed_batches(predict, x, size, active, mesh))

  @evaluate.def_vmap
  def _flatten(axis_size, in_batched, x, active):
    x, active = (v if b else jnp.broadcast_to(v, (axis_size,) + v.shape)
                 for v, b in zip((x, active), in_batched))
    y = evaluate(x.reshape((-1,) + x.shape[2:]), active.reshape(-1))  # an outer vmap
    return y.reshape(x.shape[:2] + y.shape[1:]), True                 # flattens again

  return evaluate


def dealt(predict, size: int, mesh):
  """``jit``-ed ``f(x) = predict(x)`` as an attack evaluates its candidates on a host's CPU
  devices: in model calls of ``size`` images dealt round robin to ``mesh``'s devices
  (``sharding.deals_model_calls``); for measuring or serving that forward pass."""
  return sharding.on_every_device(lambda x: in_fixed_batches(predict, x, size, mesh=mesh), mesh)


def accuracy(predict, images, labels, batch_size: int = 256) -> float:
  probs = predict_in_batches(predict, images, batch_size)
  return float(np.mean(np.argmax(probs, -1) == np.asarray(labels)))
