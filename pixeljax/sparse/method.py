"""What every few-pixel attack method shares: the ``Tracker`` of its queries and best candidate.

A method is a frozen dataclass with ``init(key, problem) -> state`` and
``step(state, problem) -> state`` for ONE attack (the runner vmaps it over rows); the
``Problem`` holds the image, its label and target, and ``evaluate`` (``problem.evaluator``),
the black box: candidates (B, D) -> ``Evaluation``.
Every state carries a ``Tracker`` as ``state.tracker``: the best candidate so far (what the
records report), every query spent, and the query at which a candidate first fooled the net.
``queries_per_step`` lets the runner keep every attack within its budget, and
``max_iterations`` bounds its loop.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from pixeljax.sparse.problem import Evaluation, PixelAttackConfig


class Problem(NamedTuple):
  image: jax.Array       # (H, W, C) float pixels in [0, 255]
  label: jax.Array       # () true class
  target: jax.Array      # () target class, -1 untargeted
  evaluate: Callable[[jax.Array], Evaluation]


@struct.dataclass
class Tracker:
  best: jax.Array            # (D,) the best candidate so far, in the shared encoding
  best_loss: jax.Array       # ()
  best_probs: jax.Array      # (K,) its probabilities
  best_stop: jax.Array       # () bool, it meets the paper's stopping rule
  queries: jax.Array         # () int32, model evaluations spent
  success_query: jax.Array   # () int32, query at which a candidate first fooled; -1: never
  iteration: jax.Array       # () int32, steps after initialisation
  done: jax.Array            # () bool, the stopping rule is met


def _first_success(tracker_queries, success_query, ev: Evaluation):
  """The query number of the first fooling candidate of this batch (counting the batch's
  candidates in order), unless an earlier batch already fooled the net."""
  hit = jnp.argmax(ev.fooled)
  new = jnp.where(jnp.any(ev.fooled), tracker_queries + hit + 1, -1)
  return jnp.where(success_query >= 0, success_query, new).astype(jnp.int32)


def start(config: PixelAttackConfig, candidates, ev: Evaluation, best: int,
          spent=None) -> Tracker:
  """The tracker after the first evaluated batch; ``best`` indexes its best candidate;
  ``spent``: the queries it cost (default: every candidate of the batch)."""
  zero = jnp.zeros((), jnp.int32)
  t = Tracker(best=candidates[best], best_loss=ev.loss[best], best_probs=ev.probs[best],
              best_stop=ev.stop[best], queries=zero, success_query=-jnp.ones((), jnp.int32),
              iteration=zero, done=jnp.zeros((), bool))
  return _settle(config, t, candidates, ev, spent, advance=False)


def update(config: PixelAttackConfig, tracker: Tracker, candidates, ev: Evaluation,
           replace=None, best=None, best_loss=None, best_probs=None,
           best_stop=None, spent=None) -> Tracker:
  """Counts a step's evaluated batch; where ``replace`` (a traced bool), ``best*`` become the
  best candidate."""
  if replace is not None:
    pick = lambda new, old: jnp.where(replace, new, old)
    tracker = tracker.replace(best=pick(best, tracker.best),
                              best_loss=pick(best_loss, tracker.best_loss),
                              best_probs=pick(best_probs, tracker.best_probs),
                              best_stop=pick(best_stop, tracker.best_stop))
  return _settle(config, tracker, candidates, ev, spent, advance=True)


def _settle(config, tracker: Tracker, candidates, ev: Evaluation, spent, advance: bool):
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
                              best_stop=pick(ev.stop[hit], tracker.best_stop))
    done = success_query >= 0
  else:
    done = tracker.best_stop
  spent = ev.loss.shape[0] if spent is None else spent
  return tracker.replace(queries=(tracker.queries + spent).astype(jnp.int32),
                         success_query=success_query,
                         iteration=tracker.iteration + (1 if advance else 0), done=done)
