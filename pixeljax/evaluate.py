"""Accuracy of a classifier on a data set, in fixed-size batches (one compiled shape)."""
import jax
import numpy as np


def predict_in_batches(predict, images, batch_size: int = 256) -> np.ndarray:
  """Probabilities for all ``images``; pads the last batch so ``predict`` compiles once (as
  one program: run eagerly, a net's every layer would compile on its own)."""
  predict = jax.jit(predict)
  n = len(images)
  out = []
  for start in range(0, n, batch_size):
    batch = np.asarray(images[start:start + batch_size], np.float32)
    pad = batch_size - len(batch) if n > batch_size else 0
    if pad:
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
    out.append(np.asarray(predict(batch))[:batch_size - pad])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def accuracy(predict, images, labels, batch_size: int = 256) -> float:
  probs = predict_in_batches(predict, images, batch_size)
  return float(np.mean(np.argmax(probs, -1) == np.asarray(labels)))
