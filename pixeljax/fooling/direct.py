"""The direct (pixel) encoding of Nguyen et al.: the genome is the image itself.

Initialised uniform in [0, 255]. Each pixel value mutates with probability 0.1, halved every
1000 generations, by Deb's polynomial mutation with strength (eta) 15 within [0, 255];
optionally simulated binary crossover (SBX) with a second parent, as in the original Sferes
code.
"""
import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp


def mutation_rate(generation, initial: float = 0.1, halve_every: int = 1000):
  """0.1, halved every 1000 generations."""
  return initial * 0.5 ** (jnp.asarray(generation) // halve_every)


def polynomial_mutation(key, x, eta: float, low: float = 0.0, high: float = 255.0):
  """Deb's bounded polynomial mutation of every element of ``x``."""
  u = jax.random.uniform(key, x.shape)
  span = high - low
  d1, d2 = (x - low) / span, (high - x) / span
  power = 1.0 / (eta + 1.0)
  lo_val = 2.0 * u + (1.0 - 2.0 * u) * (1.0 - d1) ** (eta + 1.0)
  hi_val = 2.0 * (1.0 - u) + 2.0 * (u - 0.5) * (1.0 - d2) ** (eta + 1.0)
  dq = jnp.where(u < 0.5, lo_val ** power - 1.0, 1.0 - hi_val ** power)
  return jnp.clip(x + dq * span, low, high)


def sbx_crossover(key, a, b, eta: float = 10.0, low: float = 0.0, high: float = 255.0):
  """Simulated binary crossover of two parents; returns one child per element pair."""
  k1, k2 = jax.random.split(key)
  u = jax.random.uniform(k1, a.shape)
  beta = jnp.where(u <= 0.5, (2.0 * u) ** (1.0 / (eta + 1.0)),
                   (1.0 / (2.0 * (1.0 - u))) ** (1.0 / (eta + 1.0)))
  child = jnp.where(jax.random.bernoulli(k2, 0.5, a.shape),
                    0.5 * ((1 + beta) * a + (1 - beta) * b),
                    0.5 * ((1 - beta) * a + (1 + beta) * b))
  return jnp.clip(child, low, high)


@dataclasses.dataclass(frozen=True)
class DirectEncoding:
  shape: Tuple[int, int, int]           # (H, W, C) of the target model's input
  initial_rate: float = 0.1
  halve_every: int = 1000
  eta: float = 15.0
  crossover_rate: float = 0.0           # probability an offspring is an SBX child first
  crossover_eta: float = 10.0

  def init(self, key, n: int):
    return jax.random.uniform(key, (n,) + tuple(self.shape), minval=0.0, maxval=255.0)

  def mutate(self, key, genomes, generation, partners: Optional[jax.Array] = None):
    k_sel, k_mut, k_x, k_xsel = jax.random.split(key, 4)
    if partners is not None and self.crossover_rate > 0:
      kids = sbx_crossover(k_x, genomes, partners, self.crossover_eta)
      pick = jax.random.uniform(k_xsel, (genomes.shape[0],) + (1,) * (genomes.ndim - 1))
      genomes = jnp.where(pick < self.crossover_rate, kids, genomes)
    rate = mutation_rate(generation, self.initial_rate, self.halve_every)
    hit = jax.random.uniform(k_sel, genomes.shape) < rate
    return jnp.where(hit, polynomial_mutation(k_mut, genomes, self.eta), genomes)

  def render(self, genomes, height: Optional[int] = None, width: Optional[int] = None):
    del height, width
    return genomes
