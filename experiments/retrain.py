r"""The fooling paper's defence on MNIST: add evolved fooling images as class n+1, retrain,
evolve again, repeat, and report the fooling confidence per iteration.

  python experiments/retrain.py --workdir runs/retrain
  python experiments/retrain.py --config.iterations=1 --config.runs_per_iteration=2 \
      --workdir runs/retrain_short

Settings: ``configs/retrain.py``. Every stage saves into --workdir (``iter<i>/evolve_seed<s>``
archives, ``iter<i>/train`` training state, ``iter<i>/fooling_images.npz``), so a rerun
resumes; writes retrain.png and results.json.
"""
import dataclasses
import json

import numpy as np

from pixeljax import cli, data, models, plots
from pixeljax.errors import UserError
from pixeljax.evaluate import accuracy
from pixeljax.fooling import driver
from pixeljax.metrics import fooling as metrics
from pixeljax.models.registry import Classifier, check_images
from pixeljax.train import TrainConfig, check_config, migrate_config, train
from pixeljax.workdir import tally_code_versions, versions


def run(config, workdir, log=cli.log) -> dict:
  if config.iterations < 0 or config.runs_per_iteration < 1:
    raise UserError(f"iterations must be >= 0 and runs_per_iteration >= 1, got "
                    f"{config.iterations} and {config.runs_per_iteration}")
  if config.encoding not in driver.ENCODINGS:
    raise UserError(f"unknown encoding {config.encoding!r}; known: {', '.join(driver.ENCODINGS)}")
  base = models.load(config.model)
  train_set = data.load(config.train_data, "train")
  test_set = data.load(config.train_data, "test")
  spec, k = base.spec, base.num_classes
  shape = spec.input_shape
  for split in (train_set, test_set):
    check_images(split.images[:1], shape, f"model {base.name} (data set {split.name})")
    if split.num_classes != k:
      raise UserError(f"data set {split.name} has {split.num_classes} classes, model "
                      f"{base.name} has {k}")
  train_configs = [TrainConfig(**config.train.to_dict(), seed=config.seed + it,
                               num_classes=k + 1) for it in range(config.iterations)]
  for train_config in train_configs:   # now, not after the first iteration's evolution
    check_config(train_config)
  evolution = driver.EvolutionConfig.from_config(config)
  encoding = driver.make_encoding(config.encoding, shape, config[config.encoding].to_dict())
  runtime = config.runtime
  classifier, pool, report = base, [], []
  code_versions = {}   # per stage folder: which code made its generations or epochs
  for it in range(config.iterations + 1):
    predict = classifier.predict
    score = lambda x, predict=predict: predict(x)[:, :k]     # the K real classes only
    scorer = f"{config.model}[:{k}]" if it == 0 else f"{config.model} retrained {it}x [:{k}]"
    elites, fitness = [], []
    for r in range(config.runs_per_iteration):
      seed = evolution.seed + r
      archive, images, _ = driver.evolve(
          score, encoding, k, shape, dataclasses.replace(evolution, seed=seed),
          state_dir=workdir.file(f"iter{it}", f"evolve_seed{seed}"), scorer=scorer,
          inputs=dict(base_weights_sha256=base.metadata.get("sha256")), log=log,
          progress_interval=runtime.progress_interval,
          show_progress=runtime.progress, code=cli.code_version())
      code_versions[f"iter{it}/evolve_seed{seed}"] = driver.code_versions(
          workdir.file(f"iter{it}", f"evolve_seed{seed}"))
      elites.append(images)
      fitness.append(np.asarray(archive.fitness))
    elites, fitness = np.concatenate(elites), np.concatenate(fitness)
    entry = dict(iteration=it, num_classes=classifier.num_classes,
                 test_accuracy=accuracy(predict, test_set.images, test_set.labels),
                 **metrics.elites(fitness),
                 fooling_images_in_training=int(sum(len(p) for p in pool)),
                 new_images_labelled_fooling=(
                     metrics.fraction_labelled(classifier(np.clip(elites, 0, 255)), k)
                     if classifier.num_classes > k else None))
    report.append(entry)
    log(json.dumps(entry))
    workdir.write_npz(f"iter{it}/fooling_images.npz", compressed=True, images=elites,
                      fitness=fitness)
    if it == config.iterations:
      break
    pool.append(elites)
    x, y = driver.add_fooling_class(train_set.images, train_set.labels, np.concatenate(pool), k)
    variables, history = train(spec, x, y, test_set.images, test_set.labels,
                               train_configs[it], workdir.file(f"iter{it + 1}", "train"),
                               log=log, log_every=runtime.log_every,
                               progress_interval=runtime.progress_interval,
                               show_progress=runtime.progress, code=cli.code_version())
    code_versions[f"iter{it + 1}/train"] = tally_code_versions(
        [h.get("code") for h in history], "epochs")
    classifier = Classifier(spec, spec.module(k + 1), variables, {"num_classes": k + 1})
  results = dict(report=report, config=config.to_dict(), versions=versions(),
                 code_versions=code_versions)
  its = [e["iteration"] for e in report]
  workdir.save_figure("retrain.png", plots.curves(
      its, {"median fooling confidence": [e["median_confidence"] for e in report],
            "fraction >= 0.9999": [e["fraction_at_9999"] for e in report],
            "test accuracy": [e["test_accuracy"] for e in report]},
      "retraining iteration", "value", f"{base.name}: fooling class defence"))
  workdir.write_json("results.json", results)
  return results


def report(results: dict) -> str:
  return "\n".join(json.dumps(e) for e in results["report"])


if __name__ == "__main__":
  cli.main(run, "retrain.py", report=report,
           migrate=lambda stored: migrate_config(driver.migrate_config(stored)))
