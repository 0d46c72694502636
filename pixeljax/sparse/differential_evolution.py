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
from pixeljax.sparse.problem import bounds, initial_population, latin_hypercube


@struct.dataclass
class State:
  de: de.DEState
  probs: jax.Array      # (P, K) probabilities of every member
  reached: jax.Array    # (P,) member reaches the paper's stopping threshold
  tracker: method.Tracker


@dataclasses.dataclass(frozen=True)
class DifferentialEvolution(method.Method):
  """A step is a generation (deferred updating: one batch of ``popsize`` trials) or one member
  (immediate updating: one trial, so ``popsize`` steps a generation)."""

  @property
  def immediate(self) -> bool:
    return self.config.updating == "immediate"

  @property
  def init_in_loop(self) -> bool:   # the initial population is a (deferred) step's size
    return not self.immediate

  @property
  def queries_per_step(self) -> int:
    return 1 if self.immediate else self.config.popsize

  @property
  def max_iterations(self) -> int:
    return self.config.generations * (self.config.popsize if self.immediate else 1)

  @property
  def first_queries(self) -> int:
    return self.config.popsize

  def first(self, key, problem=None) -> jax.Array:
    """The initial population, the first candidates scored."""
    c = self.config
    if c.initialization == "latin_hypercube":
      lower, upper = bounds(self.image_shape, c.pixels)
      return latin_hypercube(jax.random.fold_in(key, 0), lower, upper, c.popsize)
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
    if self.immediate:
      trial, searching = de.ask_member(state.de, c.de_config(), lower, upper)
      return trial[None], state.replace(de=searching)
    trial, searching = de.ask(state.de, c.de_config(), lower, upper)
    return trial, state.replace(de=searching)

  def tell(self, state: State, trial, scores, problem=None) -> State:
    c = self.config
    if self.immediate:
      return self._tell_member(state, trial, scores)
    new = de.tell(state.de, trial, scores.loss, c.de_config())
    kept = scores.loss <= state.de.fitness          # the engine's own selection rule
    probs = jnp.where(kept[:, None], scores.probs, state.probs)
    reached = jnp.where(kept, scores.reached, state.reached)
    best = jnp.argmin(new.fitness)
    tracker = method.update(c, state.tracker, trial, scores, replace=jnp.ones((), bool),
                            best=new.best_member, best_loss=new.best_fitness,
                            best_probs=probs[best], best_reached=reached[best])
    return State(de=new, probs=probs, reached=reached, tracker=tracker)

  def _tell_member(self, state: State, trial, scores) -> State:
    """Immediate updating: the one scored trial (1, D) against its member."""
    c = self.config
    i = state.de.member
    new = de.tell_member(state.de, trial[0], scores.loss[0], c.de_config())
    kept = scores.loss[0] <= state.de.fitness[i]     # the engine's own selection rule
    probs = state.probs.at[i].set(jnp.where(kept, scores.probs[0], state.probs[i]))
    reached = state.reached.at[i].set(jnp.where(kept, scores.reached[0], state.reached[i]))
    promoted = jnp.any(new.best_member != state.de.best_member) | (
        new.best_fitness < state.de.best_fitness)
    tracker = method.update(c, state.tracker, trial, scores, replace=promoted,
                            best=new.best_member, best_loss=new.best_fitness,
                            best_probs=scores.probs[0], best_reached=scores.reached[0])
    return State(de=new, probs=probs, reached=reached, tracker=tracker)
