"""Su, Vargas & Sakurai's differential evolution as a few-pixel attack method.

The generic engine (``pixeljax.evolution.de``) does the search; this adapter starts it with the
paper's initial population, evaluates every generation through the black box and keeps the
``Tracker`` (queries, first success, the best member and its probabilities) up to date. It
calls ``de.ask`` / ``de.tell`` exactly as ``de.step`` does, so its numbers are those of the
engine's own loop.
"""
import dataclasses
from typing import Tuple

import jax
import jax.numpy as jnp
from flax import struct

from pixeljax.evolution import de
from pixeljax.sparse import method
from pixeljax.sparse.problem import PixelAttackConfig, bounds, initial_population


@struct.dataclass
class State:
  de: de.DEState
  probs: jax.Array      # (P, K) probabilities of every member
  stop: jax.Array       # (P,) member meets the paper's stopping rule
  tracker: method.Tracker


@dataclasses.dataclass(frozen=True)
class DifferentialEvolution:
  config: PixelAttackConfig
  image_shape: Tuple[int, int, int]

  @property
  def queries_per_step(self) -> int:
    return self.config.popsize

  @property
  def max_iterations(self) -> int:
    return self.config.generations

  @property
  def first_queries(self) -> int:
    return self.config.popsize

  # init = begin(key, first(key), evaluate(first(key))); step = tell(ask(state), evaluate):
  # the runner can then evaluate the first population and every generation's trials at one
  # place in one loop (``pixeljax.sparse.runner``: one compiled loop, no init program).
  def first(self, key) -> jax.Array:
    """The initial population, the first candidates evaluated."""
    c = self.config
    return initial_population(jax.random.fold_in(key, 0), self.image_shape, c.pixels,
                              c.popsize)

  def begin(self, key, population, ev) -> State:
    c = self.config
    state = de.init(jax.random.fold_in(key, 1), population, lambda _: ev.loss, c.de_config())
    tracker = method.start(c, population, ev, jnp.argmin(ev.loss))
    return State(de=state, probs=ev.probs, stop=ev.stop, tracker=tracker)

  def init(self, key, problem: method.Problem) -> State:
    population = self.first(key)
    return self.begin(key, population, problem.evaluate(population))

  def ask(self, state: State):
    """The generation's trial vectors and the state to ``tell`` their evaluation."""
    c = self.config
    lower, upper = bounds(self.image_shape, c.pixels)
    trial, searching = de.ask(state.de, c.de_config(), lower, upper)
    return trial, state.replace(de=searching)

  def step(self, state: State, problem: method.Problem) -> State:
    trial, state = self.ask(state)
    return self.tell(state, trial, problem.evaluate(trial))

  def tell(self, state: State, trial, ev) -> State:
    c = self.config
    new = de.tell(state.de, trial, ev.loss, c.de_config())
    kept = ev.loss <= state.de.fitness          # the engine's own selection rule
    probs = jnp.where(kept[:, None], ev.probs, state.probs)
    stop = jnp.where(kept, ev.stop, state.stop)
    best = jnp.argmin(new.fitness)
    tracker = method.update(c, state.tracker, trial, ev, replace=jnp.ones((), bool),
                            best=new.best_member, best_loss=new.best_fitness,
                            best_probs=probs[best], best_stop=stop[best])
    return State(de=new, probs=probs, stop=stop, tracker=tracker)


