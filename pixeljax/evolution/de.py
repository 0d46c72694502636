"""Differential evolution as pure functions over a pytree state (evosax style).

``init(key, population, fitness_fn, config) -> DEState`` evaluates a caller-made initial
population; ``step(state, fitness_fn, config, lower, upper) -> DEState`` runs one generation
(``ask`` for the trial vectors, evaluate them, ``tell`` their fitness -- the split lets a
caller see every evaluation, e.g. to count queries until the first success);
``run(...)`` drives generations with one ``lax.while_loop`` until a generation limit or until
the best fitness drops below ``config.stop_fitness``. The fitness function (population (P, D)
-> fitness (P,), lower is better) is passed in, never hard-wired, so the same engine serves any
black-box problem. Everything is written for one problem; ``jax.vmap`` it over many (under vmap
the loop's stopping condition becomes a per-problem mask: a finished problem's state freezes).

Strategies
  * ``rand1`` -- the one-pixel paper's DE/rand/1: x_r1 + F (x_r2 - x_r3), F = 0.5, no
    crossover; the child replaces its parent if it is no worse. (The paper says only that
    "the winner" survives; a tie goes to the child as in current SciPy, which lets a population
    whose probabilities have saturated keep moving. The Keras reimplementation's vendored
    older SciPy kept a trial only if strictly better. Every stored run used ``<=``.)
  * ``best1bin`` -- SciPy's default: x_best + F (x_r1 - x_r2) with F dithered per generation in
    [0.5, 1), binomial crossover with probability ``recombination`` (peers use 1.0).
The update is synchronous by default (SciPy's ``updating='deferred'``): a whole generation is
evaluated in one batched call, which is what makes it fast on accelerators. Components that
leave the bounds are redrawn uniformly inside them, as SciPy does.

``updating="immediate"`` is SciPy's default (``scipy.optimize.differential_evolution``, whose
loop was only this before SciPy 1.2): members are visited in order, each trial is built from
the population as it stands (the best member included) and replaces its parent at once if no
worse, F is dithered once per generation. (SciPy also swaps a new best into slot 0, so it
is visited first; here the best stays in its slot: the same members, visited in another
order. The Keras one-pixel reimplementation vendored a SciPy changed to deferred scoring, a
generation per call.) ``ask_member`` / ``tell_member`` do one member; ``step`` one generation
of them (a ``fori_loop`` of single-candidate fitness calls). Vmapped over many problems, each
of those calls is still one batch: one candidate of every problem.
"""
import dataclasses
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from pixeljax.evolution.sampling import distinct

STRATEGIES = ("rand1", "best1bin")
UPDATING = ("deferred", "immediate")


@dataclasses.dataclass(frozen=True)
class DEConfig:
  strategy: str = "rand1"
  mutation: float = 0.5                       # F (rand1, or best1bin without dither)
  dither: Optional[Tuple[float, float]] = None  # F ~ U[lo, hi) per generation (best1bin: 0.5, 1)
  recombination: Optional[float] = None       # crossover probability; None = no crossover
  stop_fitness: float = float("-inf")         # stop once best fitness < this
  updating: str = "deferred"                  # "deferred" (a generation per call) or
  #                                             "immediate" (SciPy's default: member by member)

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ValueError(f"unknown DE strategy {self.strategy!r}; known: {STRATEGIES}")
    if self.updating not in UPDATING:
      raise ValueError(f"unknown DE updating {self.updating!r}; known: {UPDATING}")

  @classmethod
  def paper(cls, **kw) -> "DEConfig":
    """Su et al.: DE/rand/1, F = 0.5, no crossover."""
    return cls(strategy="rand1", mutation=0.5, **kw)

  @classmethod
  def scipy_best1bin(cls, recombination: float = 1.0, **kw) -> "DEConfig":
    """SciPy's best1bin as the peer implementations call it (dithered F, recombination 1)."""
    return cls(strategy="best1bin", dither=(0.5, 1.0), recombination=recombination, **kw)


@struct.dataclass
class DEState:
  population: jax.Array     # (P, D)
  fitness: jax.Array        # (P,) lower is better
  best_member: jax.Array    # (D,)
  best_fitness: jax.Array   # ()
  generation: jax.Array     # () int32, generations completed after initialisation
  done: jax.Array           # () bool, best_fitness < stop_fitness
  key: jax.Array
  # Immediate updating only: the next member to visit and this generation's F.
  member: jax.Array = None  # () int32
  scale: jax.Array = None   # () float32


FitnessFn = Callable[[jax.Array], jax.Array]


def init(key, population: jax.Array, fitness_fn: FitnessFn, config: DEConfig) -> DEState:
  fitness = fitness_fn(population)
  best = jnp.argmin(fitness)
  return DEState(population=population, fitness=fitness, best_member=population[best],
                 best_fitness=fitness[best], generation=jnp.zeros((), jnp.int32),
                 done=fitness[best] < config.stop_fitness, key=key,
                 member=jnp.zeros((), jnp.int32),
                 scale=jnp.asarray(config.mutation, jnp.float32))


def _mutants(key, state: DEState, config: DEConfig) -> jax.Array:
  pop = state.population
  p, d = pop.shape
  k_idx, k_f, k_cr, k_j = jax.random.split(key, 4)
  if config.dither is not None:
    f = jax.random.uniform(k_f, (), minval=config.dither[0], maxval=config.dither[1])
  else:
    f = config.mutation
  if config.strategy == "rand1":
    r = distinct(k_idx, p, 3, exclude=jnp.arange(p)[:, None])
    mutant = pop[r[:, 0]] + f * (pop[r[:, 1]] - pop[r[:, 2]])
  else:  # best1bin
    r = distinct(k_idx, p, 2, exclude=jnp.arange(p)[:, None])
    mutant = state.best_member[None] + f * (pop[r[:, 0]] - pop[r[:, 1]])
  if config.recombination is not None:
    cross = jax.random.uniform(k_cr, (p, d)) < config.recombination
    cross = cross | (jnp.arange(d)[None] == jax.random.randint(k_j, (p, 1), 0, d))
    mutant = jnp.where(cross, mutant, pop)
  return mutant


def _repair(key, trial, lower, upper):
  out = (trial < lower) | (trial > upper)
  redraw = jax.random.uniform(key, trial.shape, minval=lower, maxval=upper)
  return jnp.where(out, redraw, trial)


def ask(state: DEState, config: DEConfig, lower: jax.Array,
        upper: jax.Array) -> Tuple[jax.Array, DEState]:
  """The next generation's trial vectors (mutation, crossover, bound repair) and the state
  with its key advanced; evaluate them and pass the fitness to ``tell``."""
  key, k_mut, k_rep = jax.random.split(state.key, 3)
  trial = _repair(k_rep, _mutants(k_mut, state, config), lower, upper)
  return trial, state.replace(key=key)


def tell(state: DEState, trial: jax.Array, trial_fitness: jax.Array,
         config: DEConfig) -> DEState:
  """Selection: each child replaces its parent if it is no worse."""
  better = trial_fitness <= state.fitness
  population = jnp.where(better[:, None], trial, state.population)
  fitness = jnp.where(better, trial_fitness, state.fitness)
  best = jnp.argmin(fitness)
  return state.replace(population=population, fitness=fitness, best_member=population[best],
                       best_fitness=fitness[best], generation=state.generation + 1,
                       done=fitness[best] < config.stop_fitness)


def ask_member(state: DEState, config: DEConfig, lower: jax.Array,
               upper: jax.Array) -> Tuple[jax.Array, DEState]:
  """Immediate updating: the trial vector (D,) of member ``state.member``, built from the
  population as it stands (SciPy's ``_mutate``); F is redrawn when a generation begins."""
  pop = state.population
  p, d = pop.shape
  i = state.member
  key, k_f, k_idx, k_cr, k_j, k_rep = jax.random.split(state.key, 6)
  if config.dither is not None:
    drawn = jax.random.uniform(k_f, (), minval=config.dither[0], maxval=config.dither[1])
    f = jnp.where(i == 0, drawn, state.scale)
  else:
    f = jnp.asarray(config.mutation, jnp.float32)
  if config.strategy == "rand1":
    r = distinct(k_idx, p, 3, exclude=i[None])
    mutant = pop[r[0]] + f * (pop[r[1]] - pop[r[2]])
  else:  # best1bin
    r = distinct(k_idx, p, 2, exclude=i[None])
    mutant = state.best_member + f * (pop[r[0]] - pop[r[1]])
  if config.recombination is not None:
    cross = jax.random.uniform(k_cr, (d,)) < config.recombination
    cross = cross | (jnp.arange(d) == jax.random.randint(k_j, (), 0, d))
    mutant = jnp.where(cross, mutant, pop[i])
  trial = _repair(k_rep, mutant, lower, upper)
  return trial, state.replace(key=key, scale=f.astype(jnp.float32))


def tell_member(state: DEState, trial: jax.Array, trial_fitness: jax.Array,
                config: DEConfig) -> DEState:
  """Immediate updating: the trial replaces member ``state.member`` if no worse, and becomes
  the best at once if better than it; the generation counts when the last member is done."""
  i = state.member
  p = state.population.shape[0]
  better = trial_fitness <= state.fitness[i]
  population = state.population.at[i].set(jnp.where(better, trial, state.population[i]))
  fitness = state.fitness.at[i].set(jnp.where(better, trial_fitness, state.fitness[i]))
  # SciPy keeps the best at index 0: a trial that replaces the best's own slot (a tie
  # included) is the best from then on; any other member must beat it.
  in_best_slot = jnp.all(state.population[i] == state.best_member)
  best = (trial_fitness < state.best_fitness) | (better & in_best_slot)
  best_fitness = jnp.where(best, trial_fitness, state.best_fitness)
  member = (i + 1) % p
  return state.replace(population=population, fitness=fitness,
                       best_member=jnp.where(best, trial, state.best_member),
                       best_fitness=best_fitness,
                       generation=state.generation + (member == 0).astype(jnp.int32),
                       done=best_fitness < config.stop_fitness, member=member)


def step(state: DEState, fitness_fn: FitnessFn, config: DEConfig, lower: jax.Array,
         upper: jax.Array) -> DEState:
  """One generation: ``ask``, evaluate, ``tell`` (immediate updating: member by member)."""
  if config.updating == "immediate":
    def one(_, s):
      trial, s = ask_member(s, config, lower, upper)
      return tell_member(s, trial, fitness_fn(trial[None])[0], config)
    return jax.lax.fori_loop(0, state.population.shape[0], one, state)
  trial, state = ask(state, config, lower, upper)
  return tell(state, trial, fitness_fn(trial), config)


def run(state: DEState, fitness_fn: FitnessFn, config: DEConfig, lower: jax.Array,
        upper: jax.Array, max_generation) -> DEState:
  """Steps until ``state.generation == max_generation`` (a traced value: callers may run in
  segments without recompiling) or the stopping fitness is reached."""
  return jax.lax.while_loop(
      lambda s: (~s.done) & (s.generation < max_generation),
      lambda s: step(s, fitness_fn, config, lower, upper), state)
