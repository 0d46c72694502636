import numpy as np
import pytest

from pixeljax.metrics import one_pixel as metrics
from pixeljax.sparse.records import AttackRecords


def _records(success, true, adv, target, probs_adv, image_id, queries):
  n = len(success)
  probs = np.zeros((n, 3))
  probs[np.arange(n), adv] = probs_adv
  return AttackRecords(image_id=np.array(image_id), true_class=np.array(true),
                       target_class=np.array(target), adversarial_class=np.array(adv),
                       success=np.array(success), probs=probs, prior_probs=probs,
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
  lo, hi = m["success_rate_ci95"]
  assert lo < 0.75 < hi


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


def test_no_success_confidence_is_nan():
  r = _records([False], [0], [0], [-1], [1.0], [0], [10])
  assert np.isnan(metrics.confidence(r))
