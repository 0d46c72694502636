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

import jax
import jax.numpy as jnp
from flax import struct

from pixeljax.evolution.sampling import distinct
from pixeljax.sparse import method
from pixeljax.sparse.problem import corners

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


@struct.dataclass
class State:
  order: jax.Array     # (H*W,) int32 positions; the first k are perturbed
  colours: jax.Array   # (k, C) their corner colours
  key: jax.Array
  tracker: method.Tracker


@dataclasses.dataclass(frozen=True)
class SparseRS(method.Method):

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

  def _start(self, key):
    """The first k pixels (a random order of all positions) and their corner colours."""
    h, w, c = self.image_shape
    k_order, k_col, key = jax.random.split(key, 3)
    order = jax.random.permutation(k_order, h * w).astype(jnp.int32)
    cube = corners(c)
    colours = cube[jax.random.randint(k_col, (self.config.pixels,), 0, len(cube))]
    return order, colours, key

  def first(self, key, problem=None):
    order, colours, _ = self._start(key)
    return self.candidate(order, colours)[None]

  def begin(self, key, candidates, scores, problem=None) -> State:
    order, colours, key = self._start(key)
    return State(order=order, colours=colours, key=key,
                 tracker=method.start(self.config, candidates, scores, 0))

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

  def ask(self, state: State, problem: method.Problem):
    cfg = self.config
    key, k_prop = jax.random.split(state.key)
    # The authors' step index is the queries spent so far (= step number with one proposal).
    a = alpha(state.tracker.queries, cfg.alpha_init, cfg.budget)
    moved = jnp.maximum(jnp.floor(a * cfg.pixels), 1).astype(jnp.int32)
    orders, colours = jax.vmap(lambda kk: self._propose(kk, state, problem.image, moved))(
        jax.random.split(k_prop, cfg.proposals))
    return jax.vmap(self.candidate)(orders, colours), (state.replace(key=key), orders, colours)

  def tell(self, pending, cands, scores, problem=None) -> State:
    cfg = self.config
    state, orders, colours = pending
    b = jnp.argmin(scores.loss)
    accept = (scores.loss[b] < state.tracker.best_loss) | scores.fooled[b]
    tracker = method.update(cfg, state.tracker, cands, scores, replace=accept, best=cands[b],
                            best_loss=jnp.minimum(scores.loss[b], state.tracker.best_loss),
                            best_probs=scores.probs[b], best_reached=scores.reached[b])
    return State(order=jnp.where(accept, orders[b], state.order),
                 colours=jnp.where(accept, colours[b], state.colours), key=state.key,
                 tracker=tracker)
