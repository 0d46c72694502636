"""Su, Vargas & Sakurai's differential evolution as a few-pixel attack method.

The generic engine (``pixeljax.evolution.de``) does the search; this adapter starts it with the
paper's initial population, scores every generation through the black box and keeps the
``Tracker`` (queries, first success, the best member and its probabilities) up to date. It
calls ``de.ask`` / ``de.tell`` exactly as ``de.step`` does, so its numbers are those of the
engine's own loop.
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from pixeljax.evolution import de
from pixeljax.sparse import method
from pixeljax.sparse.problem import bounds, initial_population


@struct.dataclass
class State:
  de: de.DEState
  probs: jax.Array      # (P, K) probabilities of every member
  reached: jax.Array    # (P,) member reaches the paper's stopping threshold
  tracker: method.Tracker


@dataclasses.dataclass(frozen=True)
class DifferentialEvolution(method.Method):
  init_in_loop = True   # the initial population is a generation's size

  @property
  def queries_per_step(self) -> int:
    return self.config.popsize

  @property
  def max_iterations(self) -> int:
    return self.config.generations

  @property
  def first_queries(self) -> int:
    return self.config.popsize

  def first(self, key, problem=None) -> jax.Array:
    """The initial population, the first candidates scored."""
    c = self.config
    return initial_population(jax.random.fold_in(key, 0), self.image_shape, c.pixels,
                              c.popsize)

  def begin(self, key, population, scores, problem=None) -> State:
    c = self.config
    state = de.init(jax.random.fold_in(key, 1), population, lambda _: scores.loss,
                    c.de_config())
    tracker = method.start(c, population, scores, jnp.argmin(scores.loss))
    return State(de=state, probs=scores.probs, reached=scores.reached, tracker=tracker)

  def ask(self, state: State, problem=None):
    """The generation's trial vectors and the state to ``tell`` their scores."""
    c = self.config
    lower, upper = bounds(self.image_shape, c.pixels)
    trial, searching = de.ask(state.de, c.de_config(), lower, upper)
    return trial, state.replace(de=searching)

  def tell(self, state: State, trial, scores, problem=None) -> State:
    c = self.config
    new = de.tell(state.de, trial, scores.loss, c.de_config())
    kept = scores.loss <= state.de.fitness          # the engine's own selection rule
    probs = jnp.where(kept[:, None], scores.probs, state.probs)
    reached = jnp.where(kept, scores.reached, state.reached)
    best = jnp.argmin(new.fitness)
    tracker = method.update(c, state.tracker, trial, scores, replace=jnp.ones((), bool),
                            best=new.best_member, best_loss=new.best_fitness,
                            best_probs=probs[best], best_reached=reached[best])
    return State(de=new, probs=probs, reached=reached, tracker=tracker)
