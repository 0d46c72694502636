"""The one-pixel paper's metrics from attack records (numpy in, plain numbers out).

  * success rate -- fraction of attacks whose perturbed image meets the goal;
  * confidence   -- mean probability of the adversarial class over successful attacks;
  * number of target classes -- (targeted runs) for each image, how many of the other classes
    it could be turned into; reported as the fraction of images per count 0..K-1;
  * class pairs  -- K x K counts of successful original -> adversarial class changes;
plus model queries per attack and per success, and a 95% Wilson interval on the success rate
(so a rate measured on 500 images can be compared honestly with one measured on 100) -- and,
where an image is attacked more than once (targeted: 9 targets), an interval resampling whole
images, the one to quote there (an image's attacks are not independent trials);
and success against queries: the fraction of attacks whose first fooling query came within
each budget, and the mean / median query of the first success (``success_query`` of the
records: a black-box attacker keeps any query that fooled the net).
"""
import statistics
from typing import Dict, List, Optional, Sequence

import jax
import numpy as np


def success_rate(records) -> float:
  return float(np.mean(records.success)) if len(records.success) else 0.0


def wilson_interval(successes: int, trials: int, z: float = 1.959964):
  """(low, high) Wilson score interval of a binomial proportion (95% by default)."""
  if trials <= 0:
    return (0.0, 1.0)
  p = successes / trials
  denom = 1 + z * z / trials
  centre = (p + z * z / (2 * trials)) / denom
  half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
  return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def image_interval(success, image_ids, level: float = 0.95, resamples: int = 10_000,
                   seed: int = 0):
  """(low, high) interval of a success rate whose attacks share images (targeted: 9 per
  image): the percentile bootstrap resampling whole images, since an image's attacks succeed
  or fail together far more than independent draws would and a binomial interval over
  attacks is then too narrow (10 images x 9 targets are not 90 independent trials).

  Two floors keep it honest where the bootstrap is not: it is never narrower than the Wilson
  interval over attacks (with few successes the percentile bootstrap is: 1 of 90 gave
  0-3.3% against Wilson's 0.2-6.0%), and where every attack agrees (all failed, or all
  succeeded) nothing tells how clustered they are, so each image counts as one trial
  (Wilson over images) rather than a zero-width point."""
  success = np.asarray(success, np.float64)
  ids = np.asarray(image_ids)
  if success.shape != ids.shape or success.ndim != 1:
    raise ValueError(f"success and image_ids must be equal 1-d shapes, got {success.shape} "
                     f"and {ids.shape}")
  if success.size == 0:
    return (0.0, 1.0)
  _, group = np.unique(ids, return_inverse=True)
  hits = np.bincount(group, weights=success)
  tries = np.bincount(group).astype(np.float64)
  z = statistics.NormalDist().inv_cdf((1 + level) / 2)
  if np.all(success == success[0]):
    return wilson_interval(int(success[0]) * len(hits), len(hits), z=z)
  draw = np.random.default_rng(seed).integers(0, len(hits), (resamples, len(hits)))
  rates = hits[draw].sum(1) / tries[draw].sum(1)
  tail = (1 - level) / 2
  low, high = wilson_interval(int(success.sum()), success.size, z=z)
  return (min(float(np.quantile(rates, tail)), low),
          max(float(np.quantile(rates, 1 - tail)), high))


def confidence(records) -> float:
  s = np.asarray(records.success)
  if not s.any():
    return float("nan")
  probs = np.asarray(records.probs)[s]
  adv = np.asarray(records.adversarial_class)[s]
  return float(np.mean(probs[np.arange(len(adv)), adv]))


def class_pairs(records, num_classes: int) -> np.ndarray:
  m = np.zeros((num_classes, num_classes), np.int64)
  s = np.asarray(records.success)
  np.add.at(m, (np.asarray(records.true_class)[s], np.asarray(records.adversarial_class)[s]), 1)
  return m


def target_classes_per_image(records, num_classes: int) -> np.ndarray:
  """Fraction of images that reach exactly n targets, n = 0..K-1 (targeted records)."""
  ids = np.asarray(records.image_id)
  s = np.asarray(records.success)
  uniq = np.unique(ids)
  counts = np.array([np.sum(s[ids == i]) for i in uniq])
  hist = np.bincount(counts, minlength=num_classes)[:num_classes]
  return hist / max(len(uniq), 1)


BUDGETS = (100, 300, 1000, 3000, 10000, 40000)


def success_within(records, budget: int) -> float:
  """Fraction of attacks whose first fooling query came within ``budget`` queries."""
  q = np.asarray(records.success_query)
  return float(np.mean((q >= 1) & (q <= budget))) if len(q) else 0.0


def success_curve(records, budgets) -> np.ndarray:
  """``success_within`` at every budget (for the success-vs-queries figure)."""
  return np.array([success_within(records, int(b)) for b in budgets])


def query_curve(records, points: int = 200):
  """(budgets, fraction fooled within each) on a log grid up to the most queries spent."""
  top = max(int(np.max(records.queries)), 2) if len(records.queries) else 2
  budgets = np.unique(np.geomspace(1, top, points).astype(np.int64))
  return budgets, success_curve(records, budgets)


def queries_of_successes(records, among: Optional[np.ndarray] = None) -> Dict:
  """Mean / median query of the first success over the fooled attacks (of ``among`` only,
  a boolean mask, when given)."""
  q = np.asarray(records.success_query)
  q = q[(q >= 1) & (True if among is None else np.asarray(among, bool))]
  if not len(q):
    return dict(mean=None, median=None, fooled=0)
  return dict(mean=float(np.mean(q)), median=float(np.median(q)), fooled=int(len(q)))


def fooled_by_all(runs: Sequence) -> List[np.ndarray]:
  """Per run, the mask of its attacks that every run fooled, attacks matched by (image id,
  target class) -- so methods' query costs compare on the same attacks. A method's own mean
  counts only what it fooled: a stronger method is charged for the hard attacks a weaker one
  never fooled, which can make it look costlier than it is."""
  keys = [list(zip(np.asarray(r.image_id).tolist(), np.asarray(r.target_class).tolist()))
          for r in runs]
  fooled = [{key for key, q in zip(k, np.asarray(r.success_query)) if q >= 1}
            for k, r in zip(keys, runs)]
  common = set.intersection(*fooled) if fooled else set()
  return [np.array([key in common for key in k], bool) for k in keys]


def _json_float(x: float):
  return None if not np.isfinite(x) else float(x)


# What each success figure counts (written into every summary, shown beside the numbers).
DEFINITIONS = {
    "success_rate": "the candidate each attack returns fools the full net (the paper's "
                    "success; the progress line and the final line count this)",
    "fooled_at_some_query_rate": "some query of the attack fooled the net, whatever it "
                                 "returned (success_within_queries and the success-vs-queries "
                                 "curve count this: a black-box attacker keeps that query)",
    "success_rate_ci95": "95% Wilson interval over attacks (right when each image is attacked "
                         "once, i.e. untargeted)",
    "success_rate_ci95_images": "95% percentile-bootstrap interval resampling whole images, "
                                "never narrower than Wilson over attacks (Wilson over images "
                                "where every attack agrees); written where an image is "
                                "attacked more than once, e.g. targeted: its attacks are not "
                                "independent trials; quote this one there",
    "excluded_misclassified": "attacks on images the net already misclassified: excluded "
                              "from every figure (nothing to fool)",
}


def summary(records, num_classes: int) -> Dict:
  """All metrics as a JSON-ready dict (undefined values, e.g. the confidence of zero
  successes, are None). Attacks on images the net already misclassifies are left out and
  counted (``excluded_misclassified``): they are not fooled images."""
  keep = ~records.already_misclassified
  excluded = int(np.sum(~keep))
  if excluded:
    records = jax.tree_util.tree_map(lambda a: np.asarray(a)[keep], records)
  q = np.asarray(records.queries)
  n_succ = int(np.sum(records.success))
  out = dict(attacks=int(len(q)), images=int(len(np.unique(records.image_id))),
             successes=n_succ, success_rate=success_rate(records),
             success_rate_ci95=list(wilson_interval(n_succ, int(len(q)))),
             confidence=_json_float(confidence(records)),
             queries_per_attack=float(np.mean(q)) if len(q) else 0.0,
             queries_per_success=float(np.sum(q) / n_succ) if n_succ else None,
             class_pairs=class_pairs(records, num_classes).tolist(),
             success_within_queries={str(b): success_within(records, b) for b in BUDGETS},
             queries_of_first_success=queries_of_successes(records),
             fooled_at_some_query_rate=float(np.mean(np.asarray(records.success_query) >= 1))
             if len(q) else 0.0,
             excluded_misclassified=excluded, definitions=DEFINITIONS)
  if out["images"] < out["attacks"]:
    out["success_rate_ci95_images"] = list(image_interval(records.success, records.image_id))
  targeted = np.any(np.asarray(records.target_class) >= 0)
  if targeted:
    out["target_classes_per_image"] = target_classes_per_image(records, num_classes).tolist()
    # Paper's "success rate" for targeted runs counts an image as fooled towards *some* class.
    ids, s = np.asarray(records.image_id), np.asarray(records.success)
    out["images_fooled_to_any_target"] = float(np.mean([s[ids == i].any()
                                                        for i in np.unique(ids)]))
  return out
