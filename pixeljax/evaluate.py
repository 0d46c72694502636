"""Running a classifier over many images in fixed-size batches: on the host
(``predict_in_batches``, ``accuracy``) and inside a compiled program (``in_fixed_batches``,
which the attacks' evaluator, ``pixeljax.sparse.evaluator``, builds on)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def predict_in_batches(predict, images, batch_size: int = 256,
                       always_pad: bool = False) -> np.ndarray:
  """Probabilities for all ``images``; pads the last batch so ``predict`` compiles once (as
  one program: run eagerly, a net's every layer would compile on its own). ``always_pad``:
  pad a batch of fewer than ``batch_size`` images too, so every call of one model, whatever
  its image count, runs the same compiled program."""
  predict = jax.jit(predict)
  n = len(images)
  out = []
  for start in range(0, n, batch_size):
    batch = np.asarray(images[start:start + batch_size], np.float32)
    pad = batch_size - len(batch) if (n > batch_size or always_pad) else 0
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
  population: call_size-sized slices of each attack's candidates) spread evenly over the
  devices whichever attacks are still running. Runs inside a ``shard_map`` over ``mesh``
  (every device holding all of ``xs``: ``Evaluator.program``); the devices' results are
  all-gathered. Each call has the shape and program it has on one device, but XLA:CPU's
  rounding can differ by ~1 ulp between programs over 1 and D devices (hence the recorded
  ``Execution.devices``)."""
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


def accuracy(predict, images, labels, batch_size: int = 256) -> float:
  probs = predict_in_batches(predict, images, batch_size)
  return float(np.mean(np.argmax(probs, -1) == np.asarray(labels)))
