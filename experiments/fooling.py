r"""Fooling images (Nguyen, Yosinski & Clune): MAP-Elites with a direct or CPPN encoding, or
gradient ascent, against a zoo model.

  python experiments/fooling.py --workdir runs/fooling_mnist_direct
  python experiments/fooling.py --config=configs/fooling.py:mnist_cppn \
      --config.generations=1500 --workdir runs/fooling_mnist_cppn

Settings: ``configs/fooling.py`` (named runs after ``:``; any value with ``--config.<key>``).
Writes config.json first, then archive.npz (images, confidences, per-generation statistics,
CPPN genomes), gallery.png, confidence.png and results.json to --workdir. Rerunning after an
interruption resumes from the last segment of generations (gradient ascent, minutes long,
saves nothing on the way and starts again); rerunning a run with more
generations extends it (its generations so far are reused as they are); rerunning with other
settings refuses (or, with --new_run, starts <workdir>-2).
"""
import dataclasses
import json
import time

import flax.serialization
import numpy as np

from pixeljax import cli, data, models, plots
from pixeljax.errors import UserError
from pixeljax.fooling import driver
from pixeljax.fooling.gradient_ascent import GradientAscentConfig
from pixeljax.metrics import fooling as metrics
from pixeljax.workdir import file_sha256, versions

METHODS = driver.ENCODINGS + ("gradient",)
# Settings a rerun may change without refusal (``Workdir.open``): the driver extends a run
# asked for more generations and refuses one asked for fewer than it has saved.
EXTENDABLE = ("generations",)


def class_names(classifier):
  names = {"cifar10": data.CIFAR10_CLASSES, "mnist": data.MNIST_CLASSES}.get(
      classifier.spec.dataset)
  return list(names) if names else [str(i) for i in range(classifier.num_classes)]


def unread_settings(config) -> dict:
  """Settings the chosen method never reads, set away from their defaults: {name: value}.
  Such a flag would be recorded and do nothing (e.g. ``generations`` for gradient ascent,
  whose length is ``gradient.steps``; ``cppn.*`` for the direct encoding)."""
  defaults = {m: driver.encoding_defaults(m) for m in driver.ENCODINGS}
  defaults["gradient"] = dataclasses.asdict(GradientAscentConfig())
  unread = {}
  for method, values in defaults.items():
    if method != config.encoding:
      unread.update({f"{method}.{k}": config[method][k] for k, v in values.items()
                     if k in config[method] and config[method][k] != v})
  if config.encoding == "gradient":   # MAP-Elites' own settings (the seed is shared)
    for k, v in dataclasses.asdict(driver.EvolutionConfig()).items():
      if k != "seed" and config[k] != v:
        unread[k] = config[k]
  return unread


def run(config, workdir, log=cli.log) -> dict:
  """Evolves (or gradient-ascends) one fooling image per class of ``config.model``."""
  if config.encoding not in METHODS:
    raise UserError(f"unknown encoding {config.encoding!r}; known: {', '.join(METHODS)}")
  unread = unread_settings(config)
  if unread:
    raise UserError(f"encoding {config.encoding!r} does not read "
                    f"{', '.join(f'{k} (set to {v})' for k, v in unread.items())}: leave "
                    f"{'it' if len(unread) == 1 else 'them'} at the default, or choose the "
                    f"encoding that reads {'it' if len(unread) == 1 else 'them'}")
  clf = models.load(config.model)
  shape, k = clf.spec.input_shape, clf.num_classes
  t0 = time.time()
  genomes = {}
  if config.encoding == "gradient":
    # Minutes, in one call: nothing is saved on the way, so a rerun starts it again. Only
    # ``gradient.*`` and ``seed`` shape it (generations, population, direct.* and cppn.*
    # belong to MAP-Elites).
    cli.note_saved("gradient ascent saves nothing until it ends",
                   rerun="rerun the same command to start it again")
    ascent = GradientAscentConfig(**config.gradient.to_dict())
    images, fitness, stats, extra = driver.ascend(clf.predict, k, shape, ascent, config.seed)
    length = f"{ascent.steps} steps"
  else:
    encoding = driver.make_encoding(config.encoding, shape, config[config.encoding].to_dict())
    archive, images, stats = driver.evolve(
        clf.predict, encoding, k, shape, driver.EvolutionConfig.from_config(config),
        state_dir=workdir.path, scorer=config.model,
        inputs=dict(weights_sha256=clf.metadata.get("sha256")), log=log,
        progress_interval=config.runtime.progress_interval,
        show_progress=config.runtime.progress,
        on_save=lambda g: cli.note_saved(f"{g} of {config.generations} generations saved"),
        code=cli.code_version())
    fitness, extra = np.asarray(archive.fitness), dict(
        code_versions=driver.code_versions(workdir.path))
    length = f"{config.generations} generations"
    if config.encoding == "cppn":
      genomes = {f"genome_{n}": np.asarray(v) for n, v in
                 flax.serialization.to_state_dict(archive.genomes).items()}
  seconds = time.time() - t0
  probs = np.asarray(clf(np.clip(images, 0, 255)))   # re-scored from scratch, as a user would
  workdir.write_npz("archive.npz", compressed=True, images=images, fitness=fitness,
                    probs=probs, **{f"stats_{n}": v for n, v in stats.items()}, **genomes)
  # seconds: this invocation only (a resumed run's earlier sessions are not counted).
  # The archive this results.json describes (transfer.py checks the pair is one run's).
  archive_sha256 = file_sha256(workdir.file("archive.npz"))
  results = dict(metrics.summary(probs, stats), **extra, seconds=seconds,
                 resumed=workdir.resumed, archive_sha256=archive_sha256,
                 config=config.to_dict(), versions=versions())
  title = f"{clf.name}, {config.encoding}, {length}"
  workdir.save_figure("gallery.png", plots.gallery(images, class_names(clf),
                                                   metrics.own_class_confidence(probs),
                                                   title=title))
  workdir.save_figure("confidence.png", plots.curves(
      np.arange(1, len(stats["median"]) + 1),
      {"median elite": 1 - np.asarray(stats["median"]),
       "worst elite": 1 - np.asarray(stats["minimum"])},
      "step" if config.encoding == "gradient" else "generation", "1 - confidence",
      f"{clf.name}, {config.encoding}", logy=True))
  workdir.write_json("results.json", results)
  return results


def report(results: dict) -> str:
  c = results["config"]
  line = dict(model=c["model"], encoding=c["encoding"],
              **{k: results[k] for k in ("classes_at_9999", "classes_at_99",
                                         "first_generation_all_9999", "seconds")})
  return (json.dumps(line) + "\nconfidence per class: " +
          " ".join(f"{x:.6f}" for x in results["confidence"]))


if __name__ == "__main__":
  cli.main(run, "fooling.py", report=report, migrate=driver.migrate_config,
           extendable=EXTENDABLE)
