"""The method protocol every few-pixel attack follows, and the ``Tracker`` they share.

A method (``DifferentialEvolution``, ``SparseRS``, ``CornerSearch``) is a frozen dataclass
holding its settings, with four pure functions for ONE attack (the runner vmaps them over
rows), evosax style:

  * ``first(key, problem) -> candidates``: the first batch to score;
  * ``begin(key, candidates, scores, problem) -> state``: the state after it;
  * ``ask(state, problem) -> (candidates, pending)``: a step's candidates;
  * ``tell(pending, candidates, scores, problem) -> state``: the state after scoring them.

``init`` and ``step`` are ``first``/``begin`` and ``ask``/``tell`` around one
``problem.score``; the runner uses the four pieces directly where it scores the first batch
and the steps' at one place in one loop (``init_in_loop``). The ``Problem`` holds the image,
its label and target, and ``score``, the attack's black box: candidates (B, D) -> ``Scores``.
Every state carries a ``Tracker`` as ``state.tracker``, the one counter of queries: the best
candidate so far (what the records report), every query spent, and the query at which a
candidate first fooled the net. ``queries_per_step`` keeps every attack within its budget,
``max_iterations`` bounds its loop.
"""
import dataclasses
from typing import Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from pixeljax.sparse.problem import PixelAttackConfig, Scores


class Problem(NamedTuple):
  image: jax.Array       # (H, W, C) float pixels in [0, 255]
  label: jax.Array       # () true class
  target: jax.Array      # () target class, -1 untargeted
  score: Callable[[jax.Array], Scores]


@dataclasses.dataclass(frozen=True)
class Method:
  """The protocol (see the module docstring); subclasses define the four pieces and the
  three sizes."""
  config: PixelAttackConfig
  image_shape: Tuple[int, int, int]
  # Whether the runner may score the first batch inside its loop, through the steps' model
  # call: only where the first batch has a step's size (DE: its population). An init program
  # beside the loop cost 0.5-0.7 s more compile per pixel count (100 LeNet attacks).
  init_in_loop = False

  @property
  def queries_per_step(self) -> int:
    raise NotImplementedError

  @property
  def first_queries(self) -> int:
    raise NotImplementedError

  @property
  def max_iterations(self) -> int:
    raise NotImplementedError

  def init(self, key, problem: Problem):
    candidates = self.first(key, problem)
    return self.begin(key, candidates, problem.score(candidates), problem)

  def step(self, state, problem: Problem):
    candidates, pending = self.ask(state, problem)
    return self.tell(pending, candidates, problem.score(candidates), problem)


@struct.dataclass
class Tracker:
  best: jax.Array            # (D,) the best candidate so far, in the shared encoding
  best_loss: jax.Array       # ()
  best_probs: jax.Array      # (K,) its probabilities
  best_reached: jax.Array    # () bool, it reaches the paper's stopping threshold
  queries: jax.Array         # () int32, candidates scored so far
  success_query: jax.Array   # () int32, query at which a candidate first fooled; -1: never
  iteration: jax.Array       # () int32, steps after initialisation
  done: jax.Array            # () bool, the stopping rule is met


def _first_success(tracker_queries, success_query, ev: Scores):
  """The query number of the first fooling candidate of this batch (counting the batch's
  candidates in order), unless an earlier batch already fooled the net."""
  hit = jnp.argmax(ev.fooled)
  new = jnp.where(jnp.any(ev.fooled), tracker_queries + hit + 1, -1)
  return jnp.where(success_query >= 0, success_query, new).astype(jnp.int32)


def start(config: PixelAttackConfig, candidates, ev: Scores, best: int,
          spent=None) -> Tracker:
  """The tracker after the first evaluated batch; ``best`` indexes its best candidate;
  ``spent``: the queries it cost (default: every candidate of the batch)."""
  zero = jnp.zeros((), jnp.int32)
  t = Tracker(best=candidates[best], best_loss=ev.loss[best], best_probs=ev.probs[best],
              best_reached=ev.reached[best], queries=zero, success_query=-jnp.ones((), jnp.int32),
              iteration=zero, done=jnp.zeros((), bool))
  return _settle(config, t, candidates, ev, spent, advance=False)


def update(config: PixelAttackConfig, tracker: Tracker, candidates, ev: Scores,
           replace=None, best=None, best_loss=None, best_probs=None,
           best_reached=None, spent=None) -> Tracker:
  """Counts a step's evaluated batch; where ``replace`` (a traced bool), ``best*`` become the
  best candidate."""
  if replace is not None:
    pick = lambda new, old: jnp.where(replace, new, old)
    tracker = tracker.replace(best=pick(best, tracker.best),
                              best_loss=pick(best_loss, tracker.best_loss),
                              best_probs=pick(best_probs, tracker.best_probs),
                              best_reached=pick(best_reached, tracker.best_reached))
  return _settle(config, tracker, candidates, ev, spent, advance=True)


def _settle(config, tracker: Tracker, candidates, ev: Scores, spent, advance: bool):
  success_query = _first_success(tracker.queries, tracker.success_query, ev)
  if config.stop_rule == "first_success":
    # The attack stops at this batch's first fooling query: what it reports is a fooling
    # candidate (the lowest-loss one of the batch), whatever a method's own selection kept --
    # as the authors' Sparse-RS and CornerSearch keep any misclassified candidate.
    new = (success_query >= 0) & (tracker.success_query < 0)
    hit = jnp.argmin(jnp.where(ev.fooled, ev.loss, jnp.inf))
    pick = lambda a, b: jnp.where(new, a, b)
    tracker = tracker.replace(best=pick(candidates[hit], tracker.best),
                              best_loss=pick(ev.loss[hit], tracker.best_loss),
                              best_probs=pick(ev.probs[hit], tracker.best_probs),
                              best_reached=pick(ev.reached[hit], tracker.best_reached))
    done = success_query >= 0
  else:
    done = tracker.best_reached
  spent = ev.loss.shape[0] if spent is None else spent
  return tracker.replace(queries=(tracker.queries + spent).astype(jnp.int32),
                         success_query=success_query,
                         iteration=tracker.iteration + (1 if advance else 0), done=done)
