"""Sparse-RS (Croce, Andriushchenko, Singh, Flammarion & Hein, AAAI 2022), L0 in pixel space.

Random search over k pixels set to corners of the colour cube: start from k random pixels
with random corner colours; at step i, move a fraction alpha_i of the k pixels to new random
positions (not in the current set) with new random corner colours, and keep the proposal if
it lowers the loss or fools the net. alpha_i follows the authors' piecewise schedule (from
p_init / 2 down to p_init / 20; p_init 0.3 untargeted and 0.1 targeted, as their ``eval.py``
and README run it), rescaled to the query budget; when one pixel is
moved its new colour differs from the image's own. One query per step, as published; with
``proposals_per_step`` = B > 1 each step draws B proposals from the same incumbent, keeps the
best and counts all B queries (to fill a device whose batch one query underfills).

The state holds a permutation of the H*W pixel positions: its first k are the perturbed
pixels, the rest the candidates to move to (the authors' ``b_all`` / ``be_all``).
"""
import dataclasses
from typing import Tuple

import jax
import jax.numpy as jnp
from flax import struct

from pixeljax.sparse import method
from pixeljax.sparse.problem import PixelAttackConfig

# The authors' L0 schedule: alpha = p_init / divisor once the (rescaled) step passes each bound.
_BOUNDS = (0, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_DIVISORS = (2, 4, 5, 6, 8, 10, 12, 15, 20)


def _first_step_past(bound: int, budget: int) -> int:
  """The first step whose rescaled index ``int(step / budget * 10000)`` -- computed in double
  precision exactly as the authors' Python does -- exceeds ``bound``."""
  lo, hi = 1, budget + 1
  while lo < hi:
    mid = (lo + hi) // 2
    if int(mid / budget * 10000) > bound:
      hi = mid
    else:
      lo = mid + 1
  return lo


def alpha(step, p_init: float, budget: int):
  """The fraction of the k pixels to move at ``step`` (1-based), rescaled to ``budget``."""
  step = jnp.asarray(step)
  divisor = jnp.ones(step.shape)
  for bound, d in zip(_BOUNDS, _DIVISORS):
    divisor = jnp.where(step >= _first_step_past(bound, budget), float(d), divisor)
  return p_init / divisor


def corners(channels: int) -> jax.Array:
  """The 2^C corners of the colour cube, (2^C, C) in {0, 255}."""
  idx = jnp.arange(2 ** channels)
  return jnp.stack([(idx >> c) & 1 for c in range(channels)], -1).astype(jnp.float32) * 255.


def distinct(key, n: int, count: int) -> jax.Array:
  """``count`` distinct integers drawn uniformly from [0, n), in random order: the first
  ``count`` of a random permutation, in O(count^2) work instead of sorting all n."""
  taken = jnp.zeros((0,), jnp.int32)
  for j in range(count):
    r = jax.random.randint(jax.random.fold_in(key, j), (), 0, n - j)
    ascending = jnp.sort(taken)
    for e in range(j):        # step over the values already taken, smallest first
      r = r + (r >= ascending[e])
    taken = jnp.concatenate([taken, r[None].astype(jnp.int32)])
  return taken


@struct.dataclass
class State:
  order: jax.Array     # (H*W,) int32 positions; the first k are perturbed
  colours: jax.Array   # (k, C) their corner colours
  key: jax.Array
  tracker: method.Tracker


@dataclasses.dataclass(frozen=True)
class SparseRS:
  config: PixelAttackConfig
  image_shape: Tuple[int, int, int]

  @property
  def queries_per_step(self) -> int:
    return self.config.proposals

  @property
  def max_iterations(self) -> int:
    return -(-(self.config.budget - 1) // self.config.proposals)

  @property
  def first_queries(self) -> int:
    return 1

  def candidate(self, order, colours):
    """(x, y, colour) of the k perturbed pixels, flattened (the shared encoding)."""
    h, w, c = self.image_shape
    pos = order[:self.config.pixels]
    xy = jnp.stack([pos % w, pos // w], -1).astype(jnp.float32)
    return jnp.concatenate([xy, colours], -1).reshape(-1)

  def init(self, key, problem: method.Problem) -> State:
    h, w, c = self.image_shape
    k_order, k_col, key = jax.random.split(key, 3)
    order = jax.random.permutation(k_order, h * w).astype(jnp.int32)
    cube = corners(c)
    colours = cube[jax.random.randint(k_col, (self.config.pixels,), 0, len(cube))]
    cand = self.candidate(order, colours)[None]
    ev = problem.evaluate(cand)
    return State(order=order, colours=colours, key=key,
                 tracker=method.start(self.config, cand, ev, 0))

  def _propose(self, key, state: State, image, moved):
    """One proposal: ``moved`` of the k pixels go to new positions with new colours."""
    h, w, c = self.image_shape
    k = self.config.pixels
    k_out, k_in, k_col, k_other = jax.random.split(key, 4)
    out = jax.random.permutation(k_out, k)                       # slots to move
    into = k + distinct(k_in, h * w - k, k)                      # complement positions
    active = jnp.arange(k) < moved
    slot = jnp.where(active, out, k)                             # k: "no move" (dropped)
    order = state.order
    src, dst = order[out], order[into]
    order = order.at[jnp.where(active, out, h * w)].set(dst, mode="drop")
    order = order.at[jnp.where(active, into, h * w)].set(src, mode="drop")
    cube = corners(c)
    pick = jax.random.randint(k_col, (k,), 0, len(cube))
    # A single moved pixel gets a colour other than the image's own there (the authors'
    # resampling loop), drawn uniformly from the other corners.
    pixel = image.reshape(h * w, c)[dst]                          # (k, C)
    same = jnp.all(cube[pick] == pixel, -1)
    shift = 1 + jax.random.randint(k_other, (k,), 0, len(cube) - 1)
    pick = jnp.where((moved == 1) & same, (pick + shift) % len(cube), pick)
    colours = state.colours.at[slot].set(cube[pick], mode="drop")
    return order, colours

  def step(self, state: State, problem: method.Problem) -> State:
    cfg = self.config
    key, k_prop = jax.random.split(state.key)
    # The authors' step index is the queries spent so far (= step number with one proposal).
    a = alpha(state.tracker.queries, cfg.alpha_init, cfg.budget)
    moved = jnp.maximum(jnp.floor(a * cfg.pixels), 1).astype(jnp.int32)
    orders, colours = jax.vmap(lambda kk: self._propose(kk, state, problem.image, moved))(
        jax.random.split(k_prop, cfg.proposals))
    cands = jax.vmap(self.candidate)(orders, colours)
    ev = problem.evaluate(cands)
    b = jnp.argmin(ev.loss)
    accept = (ev.loss[b] < state.tracker.best_loss) | ev.fooled[b]
    tracker = method.update(cfg, state.tracker, cands, ev, replace=accept, best=cands[b],
                            best_loss=jnp.minimum(ev.loss[b], state.tracker.best_loss),
                            best_probs=ev.probs[b], best_stop=ev.stop[b])
    return State(order=jnp.where(accept, orders[b], state.order),
                 colours=jnp.where(accept, colours[b], state.colours), key=key,
                 tracker=tracker)
