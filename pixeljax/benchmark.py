"""Throughput of the batched pixel attack against the bare forward pass of the same model.

The attack's cost is dominated by model evaluations; the rest (index draws, mutation, scatter,
selection, compaction) is overhead. ``attack_vs_forward`` measures both in model evaluations
per second at the same number of images per XLA call (attacks x population), after a warm-up
call so compile time is excluded. Early stopping is switched off for the measurement, so every
attack runs every generation.
"""
import time

import jax
import numpy as np

from pixeljax.sparse import PixelAttackConfig, attack


def _time(fn, repeats: int) -> float:
  fn()  # warm-up / compile
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def forward_rate(predict, image_shape, batch: int, repeats: int = 3) -> float:
  """Model evaluations per second of ``jit(predict)`` on a batch of ``batch`` images."""
  f = jax.jit(predict)
  x = jax.random.uniform(jax.random.PRNGKey(0), (batch,) + tuple(image_shape), maxval=255.)
  return batch / _time(lambda: jax.block_until_ready(f(x)), repeats)


def attack_rate(predict, images, labels, pixels: int, popsize: int, generations: int,
                repeats: int = 2, mesh=None) -> dict:
  """Evaluations per second of ``attack`` on ``len(images)`` images (no early stop)."""
  config = PixelAttackConfig(pixels=pixels, popsize=popsize, generations=generations,
                             stop_probability=-1.0, segment_iterations=generations)
  key = jax.random.PRNGKey(0)
  out = {}

  def go():
    out["rec"] = attack(predict, images, labels, key, config, mesh=mesh)
  seconds = _time(go, repeats)
  evals = int(np.sum(out["rec"].queries))
  return dict(seconds=seconds, evaluations=evals, evals_per_second=evals / seconds,
              seconds_per_image=seconds / len(images))


def attack_vs_forward(predict, images, labels, pixels: int = 1, popsize: int = 400,
                      generations: int = 10, mesh=None) -> dict:
  n = len(images)
  a = attack_rate(predict, images, labels, pixels, popsize, generations, mesh=mesh)
  f = forward_rate(predict, images.shape[1:], n * popsize)
  return dict(images_per_call=n, popsize=popsize, generations=generations,
              forward_evals_per_second=f, attack_evals_per_second=a["evals_per_second"],
              ratio=a["evals_per_second"] / f, attack_seconds_per_image=a["seconds_per_image"])
