r"""The fooling paper's defence on MNIST: evolve fooling images, add them as class n+1,
retrain from scratch, evolve again, repeat.

  python experiments/retrain.py --workdir runs/retrain
  python experiments/retrain.py --config.iterations=1 --config.train.epochs=1 --workdir runs/r

The default is the run in ``results/fooling/retrain`` (2 iterations, 5 runs x 200
generations per iteration, 2 epochs Adam 1e-3 per retraining). Library defaults (encodings,
evolution, ``TrainConfig``) come from their dataclasses; only this run's choices are set
here. The training seed of iteration i is ``seed + i``, its head has n + 1 classes.
"""
import dataclasses

from ml_collections import ConfigDict

from pixeljax.fooling import driver
from pixeljax.train import TrainConfig


def get_config(arg=None):
  if arg not in (None, "", "mnist"):
    raise ValueError(f"unknown retrain config {arg!r}; known: mnist")
  c = ConfigDict()
  c.name = "mnist"
  c.model = "mnist_lenet_fooling"           # the starting net (its architecture is reused)
  c.train_data = "../shared/data/mnist.npz"   # a data set name or .npz with train/test splits
  c.encoding = "direct"
  c.iterations = 2                          # retraining iterations
  c.runs_per_iteration = 5                  # evolution runs (x classes elites) per iteration
  c.update(dataclasses.asdict(driver.EvolutionConfig()))   # population, generations, ...
  c.direct = ConfigDict(driver.encoding_defaults("direct"))
  c.cppn = ConfigDict(driver.encoding_defaults("cppn"))
  train = dataclasses.asdict(TrainConfig())
  del train["seed"], train["num_classes"]   # set per iteration
  c.train = ConfigDict(train)
  c.train.update(epochs=2, optimizer="adam", learning_rate=1e-3, weight_decay=0.0,
                 augment=False)
  # never change a result: progress shown (bar or log lines), seconds between lines,
  # training steps between updates
  c.runtime = ConfigDict(dict(progress=True, progress_interval=5.0, log_every=100))
  return c
