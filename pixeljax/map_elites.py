"""MAP-Elites over classes (Nguyen et al.): one archive cell per class, holding the image that
the target network most confidently assigns to that class.

Each generation draws parents uniformly from the filled cells, varies them with the encoding
(``mutate``), renders and scores the offspring in one batch, and lets every offspring compete
in every cell: it replaces each incumbent it beats (as the original code does). ``run`` drives
generations with one ``lax.scan`` and returns per-generation statistics.

The encoding is any object with ``init(key, n)``, ``mutate(key, genomes, generation,
partners)`` and ``render(genomes, H, W)``; the scorer ``score(images) -> (B, K)`` (e.g. a
classifier's probabilities) is passed in, never hard-wired.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

Score = Callable[[jax.Array], jax.Array]


@struct.dataclass
class Archive:
  genomes: Any             # pytree, leading axis K (one elite per class)
  fitness: jax.Array       # (K,) confidence of the elite for its class; -inf when empty
  filled: jax.Array        # (K,) bool
  generation: jax.Array    # () int32
  evaluations: jax.Array   # () int32
  key: jax.Array


def insert(archive: Archive, genomes, scores) -> Archive:
  """Every candidate competes in every cell: cell c takes the best-scoring candidate for c
  if it beats the incumbent (strictly)."""
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


def init(key, encoding, score: Score, num_classes: int, population: int, height: int,
         width: int) -> Archive:
  """A random initial population, inserted into an empty archive."""
  k_init, k_next = jax.random.split(key)
  genomes = encoding.init(k_init, population)
  empty = jax.tree_util.tree_map(lambda g: jnp.zeros((num_classes,) + g.shape[1:], g.dtype),
                                 genomes)
  archive = Archive(genomes=empty, fitness=jnp.full((num_classes,), -jnp.inf),
                    filled=jnp.zeros((num_classes,), bool), generation=jnp.zeros((), jnp.int32),
                    evaluations=jnp.zeros((), jnp.int32), key=k_next)
  return insert(archive, genomes, score(encoding.render(genomes, height, width)))


def step(archive: Archive, encoding, score: Score, population: int, height: int,
         width: int) -> Archive:
  key, k_par, k_partner, k_mut = jax.random.split(archive.key, 4)
  p = archive.filled / jnp.sum(archive.filled)
  k = archive.fitness.shape[0]
  parents_idx = jax.random.choice(k_par, k, (population,), p=p)
  partners_idx = jax.random.choice(k_partner, k, (population,), p=p)
  take = lambda idx: jax.tree_util.tree_map(lambda g: g[idx], archive.genomes)
  children = encoding.mutate(k_mut, take(parents_idx), archive.generation,
                             partners=take(partners_idx))
  archive = insert(archive, children, score(encoding.render(children, height, width)))
  return archive.replace(generation=archive.generation + 1, key=key)


def run(archive: Archive, encoding, score: Score, population: int, height: int, width: int,
        generations: int):
  """``generations`` steps in one ``lax.scan``; returns (archive, stats) where stats holds,
  per generation, the number of filled cells and the median and minimum elite confidence."""
  def body(a, _):
    a = step(a, encoding, score, population, height, width)
    conf = jnp.where(a.filled, a.fitness, jnp.nan)
    return a, dict(filled=jnp.sum(a.filled), median=jnp.nanmedian(conf),
                   minimum=jnp.nanmin(conf))
  return jax.lax.scan(body, archive, None, length=generations)
