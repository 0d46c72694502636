import numpy as np
import pytest

from pixeljax.metrics import one_pixel as metrics
from pixeljax.sparse.records import AttackRecords


def _records(success, true, adv, target, probs_adv, image_id, queries, clean=None):
  n = len(success)
  probs = np.zeros((n, 3))
  probs[np.arange(n), adv] = probs_adv
  prior = np.zeros((n, 3))     # the clean image's top class: its label unless told otherwise
  prior[np.arange(n), np.array(true if clean is None else clean)] = 1.0
  return AttackRecords(image_id=np.array(image_id), true_class=np.array(true),
                       target_class=np.array(target), adversarial_class=np.array(adv),
                       success=np.array(success), probs=probs, prior_probs=prior,
                       pixels=np.zeros((n, 1, 5)), queries=np.array(queries),
                       success_query=np.where(success, queries, -1),
                       iterations=np.zeros(n, np.int32))


def test_untargeted_metrics():
  r = _records([True, False, True, True], [0, 1, 2, 0], [1, 1, 0, 2], [-1] * 4,
               [0.9, 0.8, 0.6, 0.3], [0, 1, 2, 3], [100, 400, 200, 300])
  m = metrics.summary(r, 3)
  assert m["success_rate"] == 0.75
  assert m["confidence"] == pytest.approx((0.9 + 0.6 + 0.3) / 3)
  assert m["class_pairs"] == [[0, 1, 1], [0, 0, 0], [1, 0, 0]]
  assert m["queries_per_attack"] == 250 and m["queries_per_success"] == pytest.approx(1000 / 3)
  assert "target_classes_per_image" not in m
  assert "success_rate_ci95_images" not in m      # one attack per image: Wilson is the one
  lo, hi = m["success_rate_ci95"]
  assert lo < 0.75 < hi


def test_already_misclassified_images_are_not_fooled_images():
  """An attack on an image the net already misclassifies "succeeds" at its first query: it
  is left out of every figure and counted apart."""
  r = _records([True, False, True, True], [0, 1, 2, 0], [1, 1, 0, 2], [-1] * 4,
               [0.9, 0.8, 0.6, 0.3], [0, 1, 2, 3], [1, 400, 200, 300], clean=[2, 1, 2, 0])
  m = metrics.summary(r, 3)
  assert m["excluded_misclassified"] == 1 and m["attacks"] == 3
  assert m["success_rate"] == pytest.approx(2 / 3)
  assert m["fooled_at_some_query_rate"] == pytest.approx(2 / 3)
  assert m["queries_per_attack"] == 300
  assert set(m["definitions"]) >= {"success_rate", "fooled_at_some_query_rate"}


def test_image_interval_resamples_whole_images():
  # 10 images x 9 attacks, each image all-or-nothing: the rate's spread is that of 10 images
  # (an interval as wide as a 10-trial one), not of 90 independent attacks.
  ids = np.repeat(np.arange(10), 9)
  clustered = np.repeat(np.arange(10) < 4, 9)
  lo, hi = metrics.image_interval(clustered, ids)
  assert lo < 0.4 < hi and hi - lo > 0.45
  wlo, whi = metrics.wilson_interval(36, 90)
  assert whi - wlo < 0.25
  # attacks independent of their image: close to the binomial interval
  rng = np.random.default_rng(0)
  spread = rng.random(900) < 0.4
  lo, hi = metrics.image_interval(spread, np.repeat(np.arange(100), 9))
  wlo, whi = metrics.wilson_interval(int(spread.sum()), 900)
  assert abs((hi - lo) - (whi - wlo)) < 0.02
  # the same input, the same interval
  assert metrics.image_interval(clustered, ids) == metrics.image_interval(clustered, ids)
  # every attack failing (or succeeding) is no certainty: each image counts as one trial
  # (the bootstrap alone gave a zero-width interval)
  assert metrics.image_interval(np.zeros(90), ids) == pytest.approx(
      metrics.wilson_interval(0, 10), abs=1e-6)
  assert metrics.image_interval(np.ones(9), np.zeros(9)) == pytest.approx(
      metrics.wilson_interval(1, 1), abs=1e-6)
  assert metrics.image_interval(np.zeros(90), ids, level=0.5)[1] < metrics.wilson_interval(
      0, 10)[1]
  # ... and never narrower than Wilson over attacks: with one success in 90 the percentile
  # bootstrap alone gave 0-3.3%, narrower than 90 independent trials allow (0.2-6.0%)
  one = np.zeros(90, bool)
  one[0] = True
  lo, hi = metrics.image_interval(one, ids)
  wlo, whi = metrics.wilson_interval(1, 90)
  assert lo <= wlo + 1e-6 and hi >= whi - 1e-6
  with pytest.raises(ValueError, match="equal 1-d shapes"):
    metrics.image_interval(np.ones(9), np.zeros(8))


def test_wilson_interval_matches_the_textbook():
  # 61 of 100: Wilson 95% interval [0.5120, 0.6998] (worked by hand from the formula).
  lo, hi = metrics.wilson_interval(61, 100)
  assert lo == pytest.approx(0.5120, abs=5e-4) and hi == pytest.approx(0.6998, abs=5e-4)
  assert metrics.wilson_interval(0, 10)[0] == 0.0 and metrics.wilson_interval(10, 10)[1] == pytest.approx(1.0)
  # More trials, narrower interval.
  assert np.diff(metrics.wilson_interval(305, 500)) < np.diff(metrics.wilson_interval(61, 100))


def test_targeted_metrics_count_targets_per_image():
  # image 0 reaches both targets, image 1 none, image 2 one
  r = _records([True, True, False, False, True, False], [0, 0, 1, 1, 2, 2],
               [1, 2, 1, 1, 0, 2], [1, 2, 0, 2, 0, 1], [.7] * 6, [0, 0, 1, 1, 2, 2], [1] * 6)
  m = metrics.summary(r, 3)
  np.testing.assert_allclose(m["target_classes_per_image"], [1 / 3, 1 / 3, 1 / 3])
  assert m["images_fooled_to_any_target"] == pytest.approx(2 / 3)
  assert m["success_rate"] == 0.5
  # Two attacks per image: beside Wilson over attacks, the interval resampling images.
  assert m["success_rate_ci95_images"] == list(metrics.image_interval(
      [True, True, False, False, True, False], [0, 0, 1, 1, 2, 2]))
  assert "success_rate_ci95_images" in m["definitions"]


def test_no_success_confidence_is_nan():
  r = _records([False], [0], [0], [-1], [1.0], [0], [10])
  assert np.isnan(metrics.confidence(r))


def test_query_costs_on_the_attacks_every_run_fooled():
  # Two runs on the same (image, target) attacks, stored in different orders: a strong method
  # fools all four (the hard attack 3 late), a weak one fools attacks 0 and 2 only.
  strong = _records([True] * 4, [0] * 4, [1] * 4, [-1, -1, 2, -1], [0.9] * 4, [0, 1, 2, 3],
                    [10, 20, 30, 9000])
  weak = _records([True, False, False, True], [0] * 4, [1] * 4, [-1, -1, -1, 2], [0.9] * 4,
                  [0, 3, 1, 2], [400, 40400, 40400, 800])
  s_mask, w_mask = metrics.fooled_by_all([strong, weak])
  assert s_mask.tolist() == [True, False, True, False]
  assert w_mask.tolist() == [True, False, False, True]
  # Own means charge the strong method for attack 3; on the shared attacks it is 20x cheaper.
  assert metrics.queries_of_successes(strong)["mean"] == pytest.approx(9060 / 4)
  shared = metrics.queries_of_successes(strong, among=s_mask)
  assert shared == dict(mean=20.0, median=20.0, fooled=2)
  assert metrics.queries_of_successes(weak, among=w_mask)["mean"] == 600.0
  # Same image, other target: a different attack.
  other = _records([True] * 4, [0] * 4, [1] * 4, [-1] * 4, [0.9] * 4, [0, 1, 2, 3], [5] * 4)
  assert metrics.fooled_by_all([strong, other])[0].tolist() == [True, True, False, True]
