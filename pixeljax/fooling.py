"""Fooling-image campaigns (Nguyen et al.): evolve, score on another net, retrain with a
fooling class. Resumable: the archive is saved after every chunk of generations.
"""
import functools
import json
import os
import sys
import time
from typing import Callable, Optional

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from pixeljax import checkpoint, gradient_ascent, map_elites
from pixeljax.cppn import CPPN
from pixeljax.direct_encoding import DirectEncoding

ENCODINGS = ("direct", "cppn", "gradient")
FOOLING_THRESHOLD = 0.9999


def make_encoding(name: str, image_shape, crossover_rate: float = 0.0):
  if name == "direct":
    return DirectEncoding(tuple(image_shape), crossover_rate=crossover_rate)
  if name == "cppn":
    return CPPN(outputs=image_shape[-1])
  raise ValueError(f"unknown encoding {name!r}; known: {ENCODINGS}")


@functools.lru_cache(maxsize=16)
def _compiled(score, encoding, num_classes, population, height, width, chunk):
  init = jax.jit(lambda k: map_elites.init(k, encoding, score, num_classes, population, height,
                                           width))
  run = jax.jit(lambda a: map_elites.run(a, encoding, score, population, height, width, chunk))
  render = jax.jit(lambda g: encoding.render(g, height, width))
  return init, run, render


def evolve(score: Callable, encoding, num_classes: int, image_shape, population: int,
           generations: int, seed: int, workdir: Optional[str] = None, chunk: int = 50,
           log: Optional[Callable[[str], None]] = None):
  """MAP-Elites for ``generations``; returns (archive, images, stats dict of arrays).

  With a ``workdir``, the archive and statistics are saved after each chunk and a rerun
  resumes from them (same seed: same result as an uninterrupted run)."""
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  if population < 1 or generations < 0:
    raise ValueError(f"population must be >= 1 and generations >= 0, got {population}, "
                     f"{generations}")
  h, w, _ = image_shape
  init, run, render = _compiled(score, encoding, num_classes, population, h, w, chunk)
  archive = init(jax.random.PRNGKey(seed))
  stats = {"filled": [], "median": [], "minimum": []}
  state_path = os.path.join(workdir, "archive_state.msgpack") if workdir else None
  if state_path and os.path.exists(state_path):
    with open(state_path, "rb") as f:
      saved = flax.serialization.msgpack_restore(f.read())
    archive = flax.serialization.from_state_dict(archive, saved["archive"])
    stats = {k: list(np.asarray(v)) for k, v in saved["stats"].items()}
    log(f"resumed at generation {int(archive.generation)}")
  t0 = time.time()
  while int(archive.generation) < generations:
    archive, st = run(archive)
    for k in stats:
      stats[k].extend(np.asarray(st[k]).tolist())
    if int(archive.generation) > generations:   # last chunk overshoots: trim the record
      extra = int(archive.generation) - generations
      stats = {k: v[:len(v) - extra] for k, v in stats.items()}
    if state_path:
      payload = {"archive": flax.serialization.to_state_dict(archive),
                 "stats": {k: np.asarray(v) for k, v in stats.items()}}
      checkpoint.atomic_write(state_path, flax.serialization.msgpack_serialize(
          jax.tree_util.tree_map(np.asarray, payload)))
    fit = np.asarray(archive.fitness)
    log(f"generation {int(archive.generation)}: {int(np.sum(archive.filled))}/{num_classes} "
        f"classes filled, median confidence {np.median(fit):.6f}, minimum {fit.min():.6f}, "
        f"{time.time() - t0:.0f}s")
  images = np.asarray(render(archive.genomes))
  return archive, images, {k: np.asarray(v) for k, v in stats.items()}


def first_generation_all_above(stats, threshold: float = FOOLING_THRESHOLD):
  """First generation (1-based) at which every class's elite reached ``threshold``."""
  hit = np.nonzero((stats["minimum"] >= threshold) & (stats["filled"] == np.max(
      stats["filled"])))[0]
  return int(hit[0]) + 1 if len(hit) else None


def fooling_experiment(classifier, encoding_name: str, workdir: str, *, generations: int,
                       population: int, seed: int = 0, chunk: int = 50,
                       crossover_rate: float = 0.0, class_names=None, log=None) -> dict:
  """Evolves (or gradient-ascends) one fooling image per class; writes archive.npz,
  gallery.png, confidence.png and results.json."""
  from pixeljax import plots
  os.makedirs(workdir, exist_ok=True)
  shape = classifier.spec.input_shape
  k = classifier.num_classes
  class_names = class_names or [str(i) for i in range(k)]
  t0 = time.time()
  if encoding_name == "gradient":
    state, conf = jax.jit(lambda key: gradient_ascent.run(
        classifier.predict, key, shape, k, gradient_ascent.GradientAscentConfig(
            steps=generations)))(jax.random.PRNGKey(seed))
    images = np.asarray(state.images)
    fitness = np.asarray(conf[-1])
    conf = np.asarray(conf)
    stats = {"median": np.median(conf, 1), "minimum": conf.min(1),
             "filled": np.full(len(conf), k)}
    extra = dict(first_top1_step=np.asarray(state.first_top1).tolist(),
                 first_step_at={str(t): np.asarray(state.first_conf)[:, i].tolist()
                                for i, t in enumerate(gradient_ascent.THRESHOLDS)})
    genomes = {}
  else:
    encoding = make_encoding(encoding_name, shape, crossover_rate)
    archive, images, stats = evolve(classifier.predict, encoding, k, shape, population,
                                    generations, seed, workdir, chunk, log)
    fitness = np.asarray(archive.fitness)
    extra = {}
    genomes = {f"genome_{n}": np.asarray(v) for n, v in
               flax.serialization.to_state_dict(archive.genomes).items()} \
        if encoding_name == "cppn" else {}
  seconds = time.time() - t0
  # Re-score the final images from scratch, as a user would.
  probs = np.asarray(classifier(np.clip(images, 0, 255)))
  np.savez_compressed(os.path.join(workdir, "archive.npz"), images=images, fitness=fitness,
                      probs=probs, **genomes)
  results = dict(model=classifier.name, encoding=encoding_name, generations=generations,
                 population=population, seed=seed, seconds=seconds,
                 backend=jax.default_backend(),
                 confidence=probs[np.arange(k), np.arange(k)].tolist(),
                 top1=probs.argmax(-1).tolist(),
                 classes_at_9999=int(np.sum(probs[np.arange(k), np.arange(k)] >= 0.9999)),
                 classes_at_99=int(np.sum(probs[np.arange(k), np.arange(k)] >= 0.99)),
                 first_generation_all_9999=first_generation_all_above(stats, 0.9999),
                 first_generation_all_99=first_generation_all_above(stats, 0.99), **extra)
  plots.gallery(os.path.join(workdir, "gallery.png"), images, class_names,
                probs[np.arange(k), np.arange(k)],
                title=f"{classifier.name}, {encoding_name}, {generations} generations")
  x = np.arange(1, len(stats["median"]) + 1)
  plots.curves(os.path.join(workdir, "confidence.png"), x,
               {"median elite": 1 - np.asarray(stats["median"]),
                "worst elite": 1 - np.asarray(stats["minimum"])},
               "generation", "1 - confidence", f"{classifier.name}, {encoding_name}", logy=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  return results


def transfer(images, probs_a, classifier_b) -> dict:
  """Scores net A's fooling images (one per class, row i made for class i) on net B."""
  probs_b = np.asarray(classifier_b(np.clip(images, 0, 255)))
  k = len(images)
  idx = np.arange(k)
  return dict(confidence_a=probs_a[idx, idx].tolist(), confidence_b=probs_b[idx, idx].tolist(),
              top1_b=probs_b.argmax(-1).tolist(),
              b_agrees_top1=float(np.mean(probs_b.argmax(-1) == idx)),
              b_max_confidence=probs_b.max(-1).tolist(),
              mean_confidence_b=float(np.mean(probs_b[idx, idx])))


def retrain_experiment(base, train_images, train_labels, test_images, test_labels,
                       workdir: str, *, iterations: int = 2, encoding_name: str = "direct",
                       generations: int = 200, population: int = 400,
                       runs_per_iteration: int = 5, epochs: int = 2, seed: int = 0,
                       log=None) -> dict:
  """The paper's defence: evolve fooling images, add them as an extra class K+1, retrain from
  scratch, evolve again against the new net, repeat. Fooling images accumulate over
  iterations and are oversampled to the size of an average real class. Every stage saves to
  ``workdir`` (evolution archives, training state), so a rerun resumes."""
  from pixeljax.models.registry import Classifier
  from pixeljax.train import TrainConfig, train
  from pixeljax.evaluate import accuracy
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  spec, k = base.spec, base.num_classes
  shape = spec.input_shape
  classifier, fooling_pool, report = base, [], []
  for it in range(iterations + 1):
    predict = classifier.predict
    score = jax.jit(lambda x, predict=predict: predict(x)[:, :k])
    encoding = make_encoding(encoding_name, shape)
    elites, fitness = [], []
    for r in range(runs_per_iteration):
      run_dir = os.path.join(workdir, f"iter{it}", f"evolve_seed{seed + r}")
      archive, images, _ = evolve(score, encoding, k, shape, population, generations,
                                  seed + r, run_dir, log=log)
      elites.append(images)
      fitness.append(np.asarray(archive.fitness))
    elites, fitness = np.concatenate(elites), np.concatenate(fitness)
    full = np.asarray(classifier(np.clip(elites, 0, 255)))
    entry = dict(iteration=it, num_classes=classifier.num_classes,
                 test_accuracy=accuracy(predict, test_images, test_labels),
                 median_confidence=float(np.median(fitness)),
                 mean_confidence=float(np.mean(fitness)),
                 fraction_at_99=float(np.mean(fitness >= 0.99)),
                 fraction_at_9999=float(np.mean(fitness >= 0.9999)),
                 fooling_images_in_training=int(sum(len(p) for p in fooling_pool)),
                 new_images_labelled_fooling=(float(np.mean(full.argmax(-1) == k))
                                              if classifier.num_classes > k else None))
    report.append(entry)
    log(json.dumps(entry))
    np.savez_compressed(os.path.join(workdir, f"iter{it}", "fooling_images.npz"),
                        images=elites, fitness=fitness)
    if it == iterations:
      break
    fooling_pool.append(np.clip(np.round(elites), 0, 255).astype(np.uint8))
    pool = np.concatenate(fooling_pool)
    per_class = len(train_labels) // k
    reps = int(np.ceil(per_class / len(pool)))
    extra = np.tile(pool, (reps, 1, 1, 1))[:per_class]
    x = np.concatenate([np.asarray(train_images), extra])
    y = np.concatenate([np.asarray(train_labels), np.full(len(extra), k, np.int32)])
    config = TrainConfig(epochs=epochs, batch_size=128, optimizer="adam", learning_rate=1e-3,
                         weight_decay=0.0, augment=False, seed=seed + it, num_classes=k + 1,
                         log_every=10 ** 9)
    variables, _ = train(spec, x, y, test_images, test_labels, config,
                         os.path.join(workdir, f"iter{it + 1}", "train"), log=log)
    classifier = Classifier(spec, spec.module(k + 1), variables, {"num_classes": k + 1})
  results = dict(model=base.name, encoding=encoding_name, iterations=iterations,
                 generations=generations, population=population,
                 runs_per_iteration=runs_per_iteration, epochs=epochs, report=report)
  from pixeljax import plots
  its = [e["iteration"] for e in report]
  plots.curves(os.path.join(workdir, "retrain.png"), its,
               {"median fooling confidence": [e["median_confidence"] for e in report],
                "fraction >= 0.9999": [e["fraction_at_9999"] for e in report],
                "test accuracy": [e["test_accuracy"] for e in report]},
               "retraining iteration", "value", f"{base.name}: fooling class defence")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  return results
