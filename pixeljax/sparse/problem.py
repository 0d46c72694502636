"""The few-pixel problem of Su, Vargas & Sakurai: candidate encoding, perturbation, fitness.

A candidate is k pixels x (x, y, colour...) -- (x, y, r, g, b) for RGB, (x, y, v) for
grayscale -- flattened to a vector of length k (2 + C). It is applied by a scatter in pixel
space, so the target classifier is a black box ``predict(images) -> probabilities``.

Fitness (minimised): untargeted, the probability of the true class; targeted, one minus the
probability of the target. Early stop as in the paper: untargeted once the true class falls
below 5%, targeted once the target rises above 50% (``stop_probability``).

``objective="success_first"`` keeps that fitness but ranks every candidate that already fools
the net (top-1 != true, or top-1 = target) before every one that does not (fitness - 1). The
paper's fitness alone can keep a lower-p_true candidate that is still classified correctly over
one that was misclassified; a black-box attacker keeps any query that fooled the model.

The batched runner (``pixeljax.sparse.runner``) vmaps this problem over (image, target) rows.
"""
import dataclasses
from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp

from pixeljax.errors import UserError
from pixeljax.evolution import de

Predict = Callable[[jax.Array], jax.Array]
OBJECTIVES = ("probability", "success_first")


@dataclasses.dataclass(frozen=True)
class PixelAttackConfig:
  """The paper's settings are the defaults (population 400, 100 generations, DE/rand/1)."""
  pixels: int = 1
  popsize: int = 400
  generations: int = 100
  strategy: str = "rand1"          # "rand1" (paper) or "best1bin" (SciPy / peers)
  targeted: bool = False
  stop_probability: Optional[float] = None   # default: 0.05 untargeted, 0.5 targeted
  recombination: float = 1.0      # best1bin only
  objective: str = "probability"  # "probability" (paper) or "success_first"
  segment_generations: int = 10   # generations between compactions / progress reports

  def __post_init__(self):
    if self.pixels < 1:
      raise UserError(f"pixels must be >= 1, got {self.pixels}")
    if self.popsize < 4:
      raise UserError(f"popsize must be >= 4 for DE, got {self.popsize}")
    if self.generations < 0:
      raise UserError(f"generations must be >= 0, got {self.generations}")
    if self.strategy not in de.STRATEGIES:
      raise UserError(f"unknown strategy {self.strategy!r}; known: {de.STRATEGIES}")
    if self.objective not in OBJECTIVES:
      raise UserError(f"unknown objective {self.objective!r}; known: {OBJECTIVES}")

  @property
  def threshold(self) -> float:
    if self.stop_probability is not None:
      return self.stop_probability
    return 0.5 if self.targeted else 0.05

  def de_config(self) -> de.DEConfig:
    # Both modes minimise; untargeted fitness = p_true, targeted = 1 - p_target.
    stop = self.threshold if not self.targeted else 1.0 - self.threshold
    if self.objective == "success_first":
      stop -= 1.0   # below the threshold the candidate always fools the net
    if self.strategy == "rand1":
      return de.DEConfig.paper(stop_fitness=stop)
    return de.DEConfig.scipy_best1bin(self.recombination, stop_fitness=stop)


def bounds(image_shape, pixels: int):
  """(lower, upper) of a candidate: x in [0, W), y in [0, H), colours in [0, 255]."""
  h, w, c = image_shape
  lo = jnp.tile(jnp.zeros(2 + c), pixels)
  hi = jnp.tile(jnp.concatenate([jnp.array([w, h], jnp.float32), jnp.full((c,), 255.)]),
                pixels)
  return lo, hi


def initial_population(key, image_shape, pixels: int, popsize: int) -> jax.Array:
  """The paper's initialisation: coordinates uniform over the image, colours ~ N(128, 127)
  clipped to [0, 255]."""
  h, w, c = image_shape
  kx, ky, kc = jax.random.split(key, 3)
  x = jax.random.uniform(kx, (popsize, pixels, 1), minval=0, maxval=w)
  y = jax.random.uniform(ky, (popsize, pixels, 1), minval=0, maxval=h)
  col = jnp.clip(128 + 127 * jax.random.normal(kc, (popsize, pixels, c)), 0, 255)
  population = jnp.concatenate([x, y, col], axis=-1).reshape(popsize, pixels * (2 + c))
  chex.assert_shape(population, (popsize, pixels * (2 + c)))
  return population


def decode(candidate: jax.Array, image_shape):
  """Candidate vector -> integer (x, y) of shape (k,) each and colours (k, C), rounded to
  integers so that every adversarial image is a real 8-bit image."""
  h, w, c = image_shape
  p = candidate.reshape(-1, 2 + c)
  x = jnp.clip(jnp.floor(p[:, 0]), 0, w - 1).astype(jnp.int32)
  y = jnp.clip(jnp.floor(p[:, 1]), 0, h - 1).astype(jnp.int32)
  return x, y, jnp.clip(jnp.round(p[:, 2:]), 0, 255)


def perturb(image: jax.Array, candidate: jax.Array) -> jax.Array:
  """Writes the candidate's pixels into ``image`` (H, W, C) by scatter."""
  x, y, col = decode(candidate, image.shape)
  return image.at[y, x].set(col.astype(image.dtype))


def fitness_fn(predict: Predict, image, label, target, targeted: bool,
               objective: str = "probability"):
  """The black-box fitness of one attack: population (P, D) -> (P,), lower is better."""
  if objective not in OBJECTIVES:
    raise UserError(f"unknown objective {objective!r}; known: {OBJECTIVES}")

  def fitness(population):
    chex.assert_rank(population, 2)
    probs = predict(jax.vmap(perturb, (None, 0))(image, population))
    top1 = jnp.argmax(probs, axis=-1)
    if targeted:
      value, fooled = 1.0 - probs[:, target], top1 == target
    else:
      value, fooled = probs[:, label], top1 != label
    if objective == "success_first":
      value = value - fooled.astype(value.dtype)
    return value
  return fitness


