r"""Trains a zoo model and writes a checkpoint with its recipe and measured accuracy.

  python experiments/train.py --workdir runs/train_mnist_lenet
  python experiments/train.py --config=configs/train.py:cifar10_allcnn \
      --config.train.epochs=200 --config.out_dir=checkpoints --workdir runs/train_allcnn

Settings: ``configs/train.py`` (``:name`` picks a model and its recipe; ``--config.train.*``
is ``pixeljax.train.TrainConfig``). ``train_data`` / ``test_data``: a data set name or
``.npz`` path (see ``pixeljax.data``; JPEG-compressed .npz files such as the CIFAR copy
``cifar10_jpeg75.npz`` are decoded on load). An interrupted run resumes from --workdir; one
with other settings refuses, except ``store_dtype`` and ``out_dir``: they shape only the
checkpoint written at the end, so a finished run started again with another ``store_dtype``
writes its trained net again in that storage (accuracy measured again), without training.
The checkpoint goes to ``<out_dir>/<model>.msgpack`` (default ``<workdir>/checkpoint``).
"""
import dataclasses
import os

import jax
import numpy as np

from pixeljax import checkpoint, cli, data, models, workdir as workdir_lib
from pixeljax.evaluate import accuracy
from pixeljax.errors import UserError
from pixeljax.train import TrainConfig, migrate_config, recorded_devices, train
from pixeljax.workdir import versions

STORE_DTYPES = checkpoint.STORE_DTYPES


def run(config, workdir, log=cli.log) -> dict:
  if config.store_dtype not in STORE_DTYPES:
    raise UserError(f"store_dtype must be one of {', '.join(STORE_DTYPES)}, got "
                    f"{config.store_dtype!r}")
  spec = models.get(config.model)
  train_set = data.load(config.train_data, "train")
  test_set = data.load(config.test_data or config.train_data, "test")
  if config.num_train:
    train_set = train_set.take(np.arange(min(config.num_train, len(train_set))))
  train_config = TrainConfig(**config.train.to_dict())
  variables, history = train(spec, train_set.images, train_set.labels, test_set.images,
                             test_set.labels, train_config, workdir.path, log=log,
                             log_every=config.runtime.log_every,
                             progress_interval=config.runtime.progress_interval,
                             show_progress=config.runtime.progress,
                             save_interval=config.runtime.get("save_interval", 600.0),
                             devices=config.runtime.get("devices", 0) or None,
                             code=cli.code_version())
  # What ships is the stored net (bfloat16 / int8 values): its accuracy is measured on them.
  dtype = None if config.store_dtype == "float32" else config.store_dtype
  stored = checkpoint.as_stored(variables, dtype)
  module = spec.module(train_config.num_classes)
  stored_accuracy = accuracy(jax.jit(lambda x: module.apply(stored, x, train=False)),
                             test_set.images, test_set.labels)
  claimed = workdir_lib.read_json(workdir.file(workdir_lib.SETTINGS_FILE))
  meta = dict(model=spec.name, architecture=spec.description, dataset=spec.dataset,
              num_classes=spec.num_classes, input_shape=list(spec.input_shape),
              preprocessing=spec.preprocess, source="trained in pixeljax",
              licence="Apache-2.0", accuracy=stored_accuracy,
              accuracy_before_storage=history[-1]["test_accuracy"],
              accuracy_on=f"{test_set.name} {test_set.split} ({len(test_set)} images)",
              trained_on=f"{train_set.name} train ({len(train_set)} images)",
              recipe=dataclasses.asdict(train_config), history=history,
              devices=recorded_devices(workdir.path),
              code_versions=workdir_lib.tally_code_versions(
                  [h.get("code") for h in history], "epochs"),
              # The exact data (count, shape, SHA-1s), as the run's folder was claimed by it.
              data={k: claimed[k] for k in ("train_data", "test_data")})
  out_dir = config.out_dir or workdir.file("checkpoint")
  path = checkpoint.save(os.path.join(out_dir, spec.name), variables, meta, dtype=dtype)
  results = dict(checkpoint=path, accuracy=meta["accuracy"], accuracy_on=meta["accuracy_on"],
                 trained_on=meta["trained_on"], history=history, config=config.to_dict(),
                 versions=versions(), code_versions=meta["code_versions"])
  workdir.write_json("results.json", results)
  return results


def report(results: dict) -> str:
  return f"wrote {results['checkpoint']}: test accuracy {results['accuracy']:.4f}"


if __name__ == "__main__":
  # The training state does not depend on how the checkpoint is stored or where it goes.
  cli.main(run, "train.py", report=report, migrate=migrate_config,
           extendable=("store_dtype", "out_dir"))
