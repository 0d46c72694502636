"""The few-pixel (L0) problem: settings, candidate encoding, perturbation, losses, stopping.

A candidate is k pixels x (x, y, colour...) -- (x, y, r, g, b) for RGB, (x, y, v) for
grayscale -- flattened to a vector of length k (2 + C). It is applied by a scatter in pixel
space, so the target classifier is a black box ``predict(images) -> probabilities``. Every
method (differential evolution, Sparse-RS, CornerSearch) proposes candidates in this one
encoding, so perturbation, records and metrics are shared.

Losses (minimised), for any method:
  * ``probability`` (the one-pixel paper): untargeted p_true; targeted 1 - p_target;
  * ``margin`` (Sparse-RS): untargeted log p_true - max_{j != true} log p_j; targeted
    max_{j != target} log p_j - log p_target (log-probabilities differ from logits by a
    constant per image, so this is the logit margin);
  * ``ce`` (the authors' targeted Sparse-RS): targeted -log p_target; untargeted log p_true.
``success_first`` ranks every candidate that already fools the net (top-1 != true, or top-1 =
target) before every one that does not (loss - 1): the paper's loss alone can keep a
lower-p_true candidate that is still classified correctly over one that was misclassified.

Stopping rules: ``paper`` -- untargeted once the true class falls below 5%, targeted once the
target rises above 50% (``stop_probability``); ``first_success`` -- at the first candidate that
fools the net, as torchattacks and Sparse-RS do. The batched runner
(``pixeljax.sparse.runner``) vmaps a method over (image, target) rows; how candidates reach
the model is the evaluator's business (``pixeljax.sparse.evaluator``), never the problem's.
"""
import dataclasses
from typing import Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pixeljax.errors import UserError
from pixeljax.evolution import de

METHODS = ("de", "sparse_rs", "corner_search")
LOSSES = ("probability", "margin", "ce")
STOP_RULES = ("paper", "first_success")
INITIALIZATIONS = ("paper", "latin_hypercube")


@dataclasses.dataclass(frozen=True)
class PixelAttackConfig:
  """One few-pixel attack's settings. The defaults are the one-pixel paper's (DE/rand/1,
  population 400, 100 generations, probability loss, stop at p_true < 5%); settings left at
  None take their method's published default (see the properties below)."""
  pixels: int = 1
  method: str = "de"              # "de" (paper), "sparse_rs" or "corner_search"
  targeted: bool = False
  loss: Optional[str] = None      # "probability", "margin" or "ce"; None: probability for
  #                                 DE (paper), margin for Sparse-RS / CornerSearch (authors)
  success_first: bool = False     # rank fooling candidates before all others
  stop: Optional[str] = None      # "paper" or "first_success"; None: paper for DE, else first
  stop_probability: Optional[float] = None   # paper rule; None: 0.05 untargeted, 0.5 targeted
  max_queries: Optional[int] = None  # None: DE popsize x (generations + 1); Sparse-RS and
  #                                    CornerSearch 10,000 untargeted, 100,000 targeted
  # Differential evolution (Su et al.; SciPy's best1bin as the peers call it).
  popsize: int = 400
  generations: int = 100
  strategy: str = "rand1"          # "rand1" (paper) or "best1bin" (SciPy / peers)
  recombination: float = 1.0      # best1bin only
  updating: str = "deferred"      # "deferred" (a generation per model call: the engine's) or
  #                                 "immediate" (SciPy's default: member by member; the stopping
  #                                 rule is then checked after every trial, not per generation)
  initialization: str = "paper"   # "paper" or "latin_hypercube" (SciPy's default)
  # Sparse-RS (Croce et al.) and CornerSearch (Croce & Hein).
  p_init: Optional[float] = None  # Sparse-RS: initial fraction of the k pixels moved; None:
  #                                 the authors' 0.3 untargeted, 0.1 targeted
  proposals_per_step: Optional[int] = None   # None: Sparse-RS 1 (the paper), CornerSearch 512
  top_candidates: int = 100       # CornerSearch: sample among the N best one-pixel changes

  def __post_init__(self):
    whole = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)
    checks = [
        (whole(self.pixels) and whole(self.popsize) and whole(self.generations),
         f"pixels, popsize and generations must be whole numbers, got {self.pixels!r}, "
         f"{self.popsize!r} and {self.generations!r}"),
        (self.pixels >= 1, f"pixels must be >= 1, got {self.pixels}"),
        (self.method in METHODS, f"unknown method {self.method!r}; known: {METHODS}"),
        (self.loss is None or self.loss in LOSSES,
         f"unknown loss {self.loss!r}; known: {LOSSES}"),
        # loss - 1 puts every fooling candidate first only where the loss says so: in [0, 1]
        # (probability) or negative exactly when fooling (margin); -log p is unbounded.
        (not (self.success_first and self.loss == "ce"),
         "success_first needs the probability or margin loss, not ce (an unbounded loss: a "
         "fooling candidate would not always rank first)"),
        (self.stop is None or self.stop in STOP_RULES,
         f"unknown stopping rule {self.stop!r}; known: {STOP_RULES}"),
        (self.popsize >= 4, f"popsize must be >= 4 for DE, got {self.popsize}"),
        (self.generations >= 0, f"generations must be >= 0, got {self.generations}"),
        (self.strategy in de.STRATEGIES,
         f"unknown strategy {self.strategy!r}; known: {de.STRATEGIES}"),
        (self.updating in de.UPDATING,
         f"unknown updating {self.updating!r}; known: {de.UPDATING}"),
        (self.initialization in INITIALIZATIONS,
         f"unknown initialization {self.initialization!r}; known: {INITIALIZATIONS}"),
        (self.max_queries is None or self.max_queries >= 1,
         f"max_queries must be >= 1, got {self.max_queries}"),
        (self.p_init is None or 0 < self.p_init <= 1,
         f"p_init must be in (0, 1], got {self.p_init}"),
        (self.proposals_per_step is None or self.proposals_per_step >= 1,
         f"proposals_per_step must be >= 1, got {self.proposals_per_step}"),
        (self.top_candidates >= 1, f"top_candidates must be >= 1, got {self.top_candidates}"),
        # CornerSearch samples each of its k pixels among the top N changes: with fewer than
        # k, every candidate would repeat a change (a k-pixel result with fewer pixels).
        (self.method != "corner_search" or self.top_candidates >= self.pixels,
         f"top_candidates ({self.top_candidates}) must be >= pixels ({self.pixels}) for "
         f"corner_search"),
        (self.stop_probability is None or 0 <= self.stop_probability <= 1,
         f"stop_probability must be in [0, 1], got {self.stop_probability}"),
        (0 <= self.recombination <= 1,
         f"recombination must be in [0, 1], got {self.recombination}"),
    ]
    for ok, message in checks:
      if not ok:
        raise UserError(message)

  @property
  def threshold(self) -> float:
    if self.stop_probability is not None:
      return self.stop_probability
    return 0.5 if self.targeted else 0.05

  @property
  def loss_name(self) -> str:
    return self.loss or ("probability" if self.method == "de" else "margin")

  @property
  def stop_rule(self) -> str:
    return self.stop or ("paper" if self.method == "de" else "first_success")

  @property
  def budget(self) -> int:
    """The most queries (candidates scored by the model) one attack may spend."""
    if self.max_queries is not None:
      return self.max_queries
    if self.method == "de":
      return self.popsize * (self.generations + 1)
    return 100_000 if self.targeted else 10_000

  @property
  def alpha_init(self) -> float:
    if self.p_init is not None:
      return self.p_init
    return 0.1 if self.targeted else 0.3

  @property
  def proposals(self) -> int:
    if self.proposals_per_step is not None:
      return self.proposals_per_step
    return 512 if self.method == "corner_search" else 1

  def describe(self) -> str:
    """The method and its main settings, as figures, tables and logs name them."""
    if self.method == "de":
      name = f"DE {self.strategy}, population {self.popsize}, {self.generations} generations"
      if self.updating != "deferred":
        name += f", {self.updating} updating"
      if self.initialization != "paper":
        name += f", {self.initialization.replace('_', ' ')} start"
    else:
      name = {"sparse_rs": "Sparse-RS", "corner_search": "CornerSearch"}[self.method]
    return (name + f", {self.loss_name} loss"
            + (", success first" if self.success_first else "")
            + f", stop: {self.stop_rule.replace('_', ' ')}")

  def de_config(self) -> de.DEConfig:
    # The runner applies the stopping rule; DE itself never stops early.
    if self.strategy == "rand1":
      return de.DEConfig.paper(updating=self.updating)
    return de.DEConfig.scipy_best1bin(self.recombination, updating=self.updating)

  @property
  def segment_kind(self) -> str:
    """The name the evaluator's default segment length is kept under: DE with immediate
    updating takes one query per step, as Sparse-RS does, not a population's."""
    if self.method == "de" and self.updating == "immediate":
      return "de_immediate"
    return self.method


def bounds(image_shape, pixels: int):
  """(lower, upper) of a candidate: x in [0, W), y in [0, H), colours in [0, 255]."""
  h, w, c = image_shape
  lo = jnp.tile(jnp.zeros(2 + c), pixels)
  hi = jnp.tile(jnp.concatenate([jnp.array([w, h], jnp.float32), jnp.full((c,), 255.)]),
                pixels)
  return lo, hi


def corners(channels: int) -> jax.Array:
  """The 2^C corners of the colour cube, (2^C, C) in {0, 255}, channel 0 the lowest bit: the
  colours of Sparse-RS, CornerSearch and the exhaustive one-pixel sweep."""
  idx = jnp.arange(2 ** channels)
  return jnp.stack([(idx >> c) & 1 for c in range(channels)], -1).astype(jnp.float32) * 255.


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


def latin_hypercube(key, lower: jax.Array, upper: jax.Array, popsize: int) -> jax.Array:
  """SciPy's ``init='latinhypercube'``: each dimension's range cut into ``popsize`` equal
  strata, one uniform draw in each, the strata shuffled per dimension; (popsize, D)."""
  d = lower.shape[0]
  k_u, k_p = jax.random.split(key)
  strata = (jnp.arange(popsize)[:, None] + jax.random.uniform(k_u, (popsize, d))) / popsize
  order = jax.vmap(lambda k: jax.random.permutation(k, popsize))(jax.random.split(k_p, d))
  unit = jnp.take_along_axis(strata, order.T, axis=0)
  return lower + unit * (upper - lower)


def decode(candidate: jax.Array, image_shape):
  """Candidate vector -> integer (x, y) of shape (k,) each and colours (k, C), rounded to
  integers so that every adversarial image is a real 8-bit image."""
  h, w, c = image_shape
  p = candidate.reshape(-1, 2 + c)
  x = jnp.clip(jnp.floor(p[:, 0]), 0, w - 1).astype(jnp.int32)
  y = jnp.clip(jnp.floor(p[:, 1]), 0, h - 1).astype(jnp.int32)
  return x, y, jnp.clip(jnp.round(p[:, 2:]), 0, 255)


def perturb(image: jax.Array, candidate: jax.Array) -> jax.Array:
  """Writes the candidate's pixels into ``image`` (H, W, C) by scatter, in order: of pixels at
  the same place the last one wins. (A scatter's order among duplicate indices is left to the
  backend, so duplicates first get the last one's colour.)"""
  x, y, col = decode(candidate, image.shape)
  return image.at[y, x].set(col[last_writes(x, y)].astype(image.dtype))


def last_writes(x, y):
  """For each of k pixels (x, y), the index of the last pixel written at its place (itself
  unless a later one shares it)."""
  same = (x[:, None] == x[None, :]) & (y[:, None] == y[None, :])
  return jnp.max(jnp.where(same, jnp.arange(x.shape[0]), -1), axis=1)


@struct.dataclass
class Scores:
  """What the model says about a batch of one attack's candidates."""
  loss: jax.Array      # (B,) lower is better (success_first shift included)
  fooled: jax.Array    # (B,) top-1 != true (untargeted) or top-1 == target (targeted)
  reached: jax.Array   # (B,) the paper's stopping threshold is reached (p_true < 5%, ...)
  probs: jax.Array     # (B, K)


def score(probs, label, target, config: PixelAttackConfig) -> Scores:
  """Losses, success and the stopping threshold of one attack's candidates, from their
  probabilities (B, K)."""
  top1 = jnp.argmax(probs, axis=-1)
  goal = target if config.targeted else label
  p_goal = probs[:, goal]
  if config.targeted:
    fooled, reached = top1 == target, p_goal > config.threshold
  else:
    fooled, reached = top1 != label, p_goal < config.threshold
  if config.loss_name == "probability":
    loss = 1.0 - p_goal if config.targeted else p_goal
  else:
    logp = jnp.log(jnp.maximum(probs, jnp.finfo(probs.dtype).tiny))
    if config.loss_name == "ce":   # the authors' targeted Sparse-RS loss, -log p_target
      loss = -logp[:, goal] if config.targeted else logp[:, goal]
    else:
      other = jnp.max(jnp.where(jnp.arange(probs.shape[-1]) == goal, -jnp.inf, logp), -1)
      loss = other - logp[:, goal] if config.targeted else logp[:, goal] - other
  if config.success_first:
    loss = loss - fooled.astype(loss.dtype)
  return Scores(loss=loss, fooled=fooled, reached=reached, probs=probs)
