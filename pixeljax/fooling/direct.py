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

from pixeljax.errors import UserError


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
  # Score images at whole pixel values (the genome rounded down), as an image file holds
  # them and as the original scored its uchar images; the genome itself stays float.
  whole_pixels: bool = False

  def __post_init__(self):
    # Checked here: in the traced update a bad value runs without error (halve_every=0 divides
    # the generation by zero: rate 0.4, not "never halved"; initial_rate 0 freezes the archive).
    shape = tuple(self.shape)
    for ok, message in [
        (len(shape) == 3 and all(int(d) >= 1 for d in shape),
         f"shape must be (H, W, C) of positive sizes, got {shape}"),
        (0 < self.initial_rate <= 1, f"initial_rate must be in (0, 1], got {self.initial_rate}"),
        (self.halve_every >= 1, f"halve_every must be >= 1, got {self.halve_every}"),
        (self.eta >= 0, f"eta must be >= 0, got {self.eta}"),
        (0 <= self.crossover_rate <= 1,
         f"crossover_rate must be in [0, 1], got {self.crossover_rate}"),
        (self.crossover_eta >= 0, f"crossover_eta must be >= 0, got {self.crossover_eta}"),
        (isinstance(self.whole_pixels, bool),
         f"whole_pixels must be True or False, got {self.whole_pixels!r}")]:
      if not ok:
        raise UserError(f"direct: {message}")

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
    return jnp.floor(genomes) if self.whole_pixels else genomes
