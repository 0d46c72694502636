"""The fooling paper's numbers (Nguyen, Yosinski & Clune) from records: per-class confidence
of the final images, how many classes pass a threshold, the first generation at which every
class did, transfer to a second net, and the retraining defence's elite statistics.

Inputs are plain arrays: ``probs`` (K, K) -- row i is the classifier's probabilities for the
image made for class i -- and ``stats`` ({"filled", "median", "minimum"}: one value per
generation or step). Nothing here runs a model.
"""
from typing import Mapping, Optional

import numpy as np

FOOLING_THRESHOLD = 0.9999
THRESHOLDS = {"9999": 0.9999, "99": 0.99}


def first_generation_all_above(stats: Mapping, num_classes: int,
                               threshold: float = FOOLING_THRESHOLD) -> Optional[int]:
  """First generation (1-based) at which every one of ``num_classes`` classes had an elite
  and each reached ``threshold``. ``stats["minimum"]`` is over the filled cells only, so the
  count is what says every class is in (a class never filled is never "above")."""
  minimum, filled = np.asarray(stats["minimum"]), np.asarray(stats["filled"])
  if not len(minimum):
    return None
  hit = np.nonzero((minimum >= threshold) & (filled >= num_classes))[0]
  return int(hit[0]) + 1 if len(hit) else None


def own_class_confidence(probs) -> np.ndarray:
  """(K,) the confidence of image i for class i."""
  probs = np.asarray(probs)
  idx = np.arange(len(probs))
  return probs[idx, idx]


def summary(probs, stats: Mapping) -> dict:
  """The fooling table's columns for one run."""
  conf = own_class_confidence(probs)
  out = dict(confidence=conf.tolist(), top1=np.asarray(probs).argmax(-1).tolist())
  for name, t in THRESHOLDS.items():
    out[f"classes_at_{name}"] = int(np.sum(conf >= t))
  for name, t in THRESHOLDS.items():
    out[f"first_generation_all_{name}"] = first_generation_all_above(stats, len(conf), t)
  return out


def transfer(probs_a, probs_b) -> dict:
  """Net A's fooling images (one per class, row i made for class i) scored on net B:
  ``probs_a`` and ``probs_b`` are both nets' probabilities for the same images."""
  probs_a, probs_b = np.asarray(probs_a), np.asarray(probs_b)
  idx = np.arange(len(probs_b))
  return dict(confidence_a=own_class_confidence(probs_a).tolist(),
              confidence_b=own_class_confidence(probs_b).tolist(),
              top1_b=probs_b.argmax(-1).tolist(),
              b_agrees_top1=float(np.mean(probs_b.argmax(-1) == idx)),
              b_max_confidence=probs_b.max(-1).tolist(),
              mean_confidence_b=float(np.mean(probs_b[idx, idx])))


def elites(fitness) -> dict:
  """Statistics of a pool of elites' own-class confidences (the retraining table)."""
  fitness = np.asarray(fitness)
  return dict(median_confidence=float(np.median(fitness)),
              mean_confidence=float(np.mean(fitness)),
              fraction_at_99=float(np.mean(fitness >= 0.99)),
              fraction_at_9999=float(np.mean(fitness >= 0.9999)))


def fraction_labelled(probs, label: int) -> float:
  """Fraction of images whose top-1 class is ``label`` (e.g. the added fooling class)."""
  return float(np.mean(np.asarray(probs).argmax(-1) == label))
