"""MAP-Elites over classes (Nguyen et al.): one archive cell per class, holding the genome that
the scoring function rates highest for that class.

Each generation draws parents uniformly from the filled cells, varies them with the emitter
(``mutate``), scores the offspring in one batch, and lets every offspring compete in every
cell: it replaces each incumbent it beats (as the original code does). ``run`` drives
generations with one ``lax.scan`` and returns per-generation statistics.

Generic and image-free (as QDax): genomes are any pytree with a leading population axis; the
emitter is any object with ``mutate(key, genomes, generation, partners)`` (a fooling
encoding is one); ``scoring_fn(genomes) -> (B, K)`` rates each genome for each of the K cells
(for fooling images: render, then the classifier's probabilities), and is passed in, never
hard-wired.
"""
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from flax import struct

ScoringFn = Callable[[Any], jax.Array]


@struct.dataclass
class Archive:
  genomes: Any             # pytree, leading axis K (one elite per cell)
  fitness: jax.Array       # (K,) score of the elite for its cell; -inf when empty
  filled: jax.Array        # (K,) bool
  generation: jax.Array    # () int32
  evaluations: jax.Array   # () int32
  key: jax.Array


def _leading(tree) -> int:
  return jax.tree_util.tree_leaves(tree)[0].shape[0]


def insert(archive: Archive, genomes, scores) -> Archive:
  """Every candidate competes in every cell: cell c takes the best-scoring candidate for c
  if it beats the incumbent (strictly)."""
  num_cells = archive.fitness.shape[0]
  chex.assert_shape(scores, (_leading(genomes), num_cells))
  chex.assert_tree_shape_prefix(genomes, (scores.shape[0],))
  best = jnp.argmax(scores, axis=0)                        # (K,)
  best_score = jnp.take_along_axis(scores, best[None], 0)[0]
  better = best_score > archive.fitness
  new = jax.tree_util.tree_map(lambda g: g[best], genomes)
  genomes = jax.tree_util.tree_map(
      lambda a, b: jnp.where(better.reshape((-1,) + (1,) * (a.ndim - 1)), b, a),
      archive.genomes, new)
  return archive.replace(genomes=genomes, fitness=jnp.where(better, best_score, archive.fitness),
                         filled=archive.filled | better,
                         evaluations=archive.evaluations + scores.shape[0])


def init(key, genomes, scoring_fn: ScoringFn, num_cells: int) -> Archive:
  """An empty archive of ``num_cells`` cells with ``genomes`` (the initial population)
  inserted; ``key`` drives every later generation."""
  empty = jax.tree_util.tree_map(lambda g: jnp.zeros((num_cells,) + g.shape[1:], g.dtype),
                                 genomes)
  archive = Archive(genomes=empty, fitness=jnp.full((num_cells,), -jnp.inf),
                    filled=jnp.zeros((num_cells,), bool), generation=jnp.zeros((), jnp.int32),
                    evaluations=jnp.zeros((), jnp.int32), key=key)
  return insert(archive, genomes, scoring_fn(genomes))


def step(archive: Archive, emitter, scoring_fn: ScoringFn, population: int) -> Archive:
  """One generation: ``population`` offspring of parents drawn from the filled cells."""
  key, k_par, k_partner, k_mut = jax.random.split(archive.key, 4)
  p = archive.filled / jnp.sum(archive.filled)
  k = archive.fitness.shape[0]
  parents_idx = jax.random.choice(k_par, k, (population,), p=p)
  partners_idx = jax.random.choice(k_partner, k, (population,), p=p)
  take = lambda idx: jax.tree_util.tree_map(lambda g: g[idx], archive.genomes)
  children = emitter.mutate(k_mut, take(parents_idx), archive.generation,
                            partners=take(partners_idx))
  archive = insert(archive, children, scoring_fn(children))
  return archive.replace(generation=archive.generation + 1, key=key)


def run(archive: Archive, emitter, scoring_fn: ScoringFn, population: int, generations: int):
  """``generations`` steps in one ``lax.scan``; returns (archive, stats) where stats holds,
  per generation, the number of filled cells and the median and minimum elite score."""
  def body(a, _):
    a = step(a, emitter, scoring_fn, population)
    conf = jnp.where(a.filled, a.fitness, jnp.nan)
    return a, dict(filled=jnp.sum(a.filled), median=jnp.nanmedian(conf),
                   minimum=jnp.nanmin(conf))
  return jax.lax.scan(body, archive, None, length=generations)
