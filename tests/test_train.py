import json
import os

import jax
import numpy as np

from pixeljax import data, models
from pixeljax.train import TrainConfig, augment_batch, train


def test_augment_keeps_shape_and_content():
  x = jax.random.uniform(jax.random.PRNGKey(0), (8, 32, 32, 3), maxval=255.)
  y = augment_batch(jax.random.PRNGKey(1), x)
  assert y.shape == x.shape
  assert float(y.max()) <= float(x.max())


def test_training_lowers_the_loss_and_resumes(tmp_path):
  ds = data.load("mnist_samples")
  spec = models.get("mnist_lenet")
  cfg = TrainConfig(epochs=2, batch_size=50, optimizer="adam", learning_rate=1e-3,
                    weight_decay=0.0, augment=False, log_every=1000)
  logs = []
  _, hist = train(spec, ds.images[:400], ds.labels[:400], ds.images[400:], ds.labels[400:],
                  cfg, str(tmp_path), log=logs.append)
  assert hist[1]["train_loss"] < hist[0]["train_loss"]
  assert hist[1]["test_accuracy"] > 0.5
  # A rerun with more epochs resumes at epoch 2 instead of starting over.
  cfg3 = TrainConfig(**{**cfg.__dict__, "epochs": 3})
  logs.clear()
  _, hist3 = train(spec, ds.images[:400], ds.labels[:400], ds.images[400:], ds.labels[400:],
                   cfg3, str(tmp_path), log=logs.append)
  assert any("resumed" in l and "epoch 2" in l for l in logs)
  assert len(hist3) == 3 and hist3[:2] == hist
