"""Sparse-RS and CornerSearch on fake models whose answer is known, and what every method
shares: budgets never exceeded, first-success queries, same seed same result, batch
independence."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixeljax.sparse import PixelAttackConfig, attack, sparse_rs

H = W = 8
# Needles: (x, y, colour). The fake net says class 1 only if every needle pixel has its colour.
NEEDLES = [(3, 5, (255., 0., 255.)), (6, 1, (0., 255., 0.))]


def needle_model(needles):
  """Logits: class 0 at 2; class 1 at -2 + 4.5 * (needle pixels hit) / len(needles); class 2
  at -5. One hit per needle needed to flip the top-1 to class 1; each hit lowers the margin."""
  def predict(images):
    hits = sum(jnp.all(images[:, y, x, :] == jnp.asarray(c), -1).astype(jnp.float32)
               for x, y, c in needles)
    logits = jnp.stack([jnp.full_like(hits, 2.0), -2.0 + 4.5 * hits / len(needles),
                        jnp.full_like(hits, -5.0)], -1)
    return jax.nn.softmax(logits)
  return predict


def _images(n):
  rng = np.random.default_rng(0)
  return rng.integers(60, 200, (n, H, W, 3)).astype(np.uint8)   # never a cube corner


def _run(predict, n, key=0, segment=None, **kw):
  return attack(predict, _images(n), np.zeros(n, np.int32), jax.random.PRNGKey(key),
                PixelAttackConfig(**kw), image_ids=np.arange(n),
                execution=dict(segment=segment))


@pytest.mark.parametrize("k", [1, 3])
def test_sparse_rs_finds_the_one_pixel_that_fools(k):
  rec = _run(needle_model(NEEDLES[:1]), 3, method="sparse_rs", pixels=k, loss="margin",
             max_queries=3000, segment=200)
  assert rec.success.all()
  x, y, c = NEEDLES[0]
  for px in rec.pixels:
    assert any((p[0], p[1]) == (x, y) and tuple(p[2:]) == c for p in px)
  assert np.all((rec.success_query >= 1) & (rec.success_query == rec.queries))
  assert np.all(rec.queries <= 3000) and np.all(rec.queries == rec.iterations + 1)


def test_sparse_rs_finds_two_pixels_through_the_margin():
  rec = _run(needle_model(NEEDLES), 2, method="sparse_rs", pixels=2, loss="margin",
             max_queries=10000)
  assert rec.success.all() and np.all(rec.queries <= 10000)


def test_corner_search_sweep_finds_the_needle_at_its_index():
  rec = _run(needle_model(NEEDLES[:1]), 2, method="corner_search", pixels=1,
             proposals_per_step=64)
  x, y, c = NEEDLES[0]
  corner = sum(int(v > 0) << i for i, v in enumerate(c))
  index = (y * W + x) * 8 + corner                 # position-major, corner-minor
  assert rec.success.all()
  np.testing.assert_array_equal(rec.success_query, index + 1)
  np.testing.assert_array_equal(rec.queries, (index // 64 + 1) * 64)   # whole blocks
  np.testing.assert_array_equal(rec.pixels[:, 0], [[x, y, *c]] * 2)


def test_corner_search_samples_k_pixels_from_the_top_ranked():
  rec = _run(needle_model(NEEDLES), 2, method="corner_search", pixels=2,
             proposals_per_step=64, top_candidates=8, max_queries=4000)
  assert rec.success.all()
  sweep = H * W * 8
  assert np.all((rec.success_query > sweep) & (rec.queries <= 4000))
  for px in rec.pixels:
    assert {(p[0], p[1], tuple(p[2:])) for p in px} == {(x, y, c) for x, y, c in NEEDLES}


@pytest.mark.parametrize("method, kw, spent", [
    ("sparse_rs", dict(max_queries=700), 700),                       # 1 + 699 steps
    ("sparse_rs", dict(max_queries=700, proposals_per_step=4), 697),   # 1 + 174 x 4
    ("corner_search", dict(max_queries=700, proposals_per_step=64), 640),
    ("de", dict(popsize=8, generations=5), 48),
    ("de", dict(popsize=8, generations=5, max_queries=30), 24),
])
def test_budgets_are_never_exceeded(method, kw, spent):
  unfoolable = lambda images: jnp.tile(jnp.array([0.98, 0.01, 0.01]), (len(images), 1))
  rec = _run(unfoolable, 2, method=method, pixels=2, **kw)
  np.testing.assert_array_equal(rec.queries, spent)
  np.testing.assert_array_equal(rec.success_query, -1)
  assert not rec.success.any()


@pytest.mark.parametrize("method", ["sparse_rs", "corner_search"])
def test_same_seed_same_result_and_batch_independence(method):
  predict = needle_model(NEEDLES)
  kw = dict(method=method, pixels=2, max_queries=1500, proposals_per_step=16)
  together = _run(predict, 4, segment=7, **kw)
  chex.assert_trees_all_equal(together, _run(predict, 4, segment=7, **kw))
  images = _images(4)
  for i in range(4):     # each attack alone gives its row of the batch
    alone = attack(predict, images[i:i + 1], np.zeros(1, np.int32), jax.random.PRNGKey(0),
                   PixelAttackConfig(**kw), image_ids=np.array([i]),
                   execution=dict(segment=7))
    for f in ("pixels", "queries", "success_query", "success"):
      np.testing.assert_array_equal(getattr(alone, f)[0], getattr(together, f)[i])
  assert not np.array_equal(_run(predict, 4, key=1, segment=7, **kw).pixels, together.pixels)


def test_stopping_rules():
  """first_success stops at the first fooling query; the paper's rule (p_true < 5%) goes on
  until the net is also confident enough."""
  predict = needle_model(NEEDLES[:1])
  first = _run(predict, 2, method="sparse_rs", pixels=2, loss="margin", max_queries=2000)
  paper = _run(predict, 2, method="sparse_rs", pixels=2, loss="margin", max_queries=2000,
               stop="paper")
  np.testing.assert_array_equal(first.queries, first.success_query)
  np.testing.assert_array_equal(paper.success_query, first.success_query)
  assert np.all(paper.queries == 2000)      # p_true never falls below 5% on this net


def test_alpha_schedule_follows_the_authors():
  # p_init = 0.8, budget 10,000: halved after step 0, /20 after step 8,000.
  steps = jnp.array([1, 50, 51, 201, 1001, 8000, 8001, 9999])
  np.testing.assert_allclose(sparse_rs.alpha(steps, 0.8, 10000),
                             [0.4, 0.4, 0.2, 0.16, 0.1, 0.8 / 15, 0.04, 0.04], rtol=1e-6)
  # Rescaled to a 1,000-query budget, step 100 is the authors' step 1,000.
  np.testing.assert_allclose(sparse_rs.alpha(jnp.array([100, 101]), 0.8, 1000),
                             [0.8 / 6, 0.1], rtol=1e-6)
  # Their float rescaling, int(step / budget * 10000), rounds some steps down (with 3,000
  # queries step 15 maps to 49, not 50); and below step budget / 10000 alpha is p_init.
  for budget in (300, 3000, 10000, 40000):
    steps = np.arange(1, budget)
    want = [_authors_p_selection(s, budget, 0.3) for s in steps]
    np.testing.assert_allclose(sparse_rs.alpha(jnp.asarray(steps), 0.3, budget), want,
                               rtol=1e-6)


def _authors_p_selection(it, n_queries, p_init):
  """fra31/sparse-rs, rs_attacks.py, RSAttack.p_selection, norm 'L0', resc_schedule=True."""
  it = int(it / n_queries * 10000)
  if 0 < it <= 50:
    return p_init / 2
  elif 50 < it <= 200:
    return p_init / 4
  elif 200 < it <= 500:
    return p_init / 5
  elif 500 < it <= 1000:
    return p_init / 6
  elif 1000 < it <= 2000:
    return p_init / 8
  elif 2000 < it <= 4000:
    return p_init / 10
  elif 4000 < it <= 6000:
    return p_init / 12
  elif 6000 < it <= 8000:
    return p_init / 15
  elif 8000 < it:
    return p_init / 20
  return p_init


def test_distinct_draws_are_distinct_and_uniform():
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  draws = np.asarray(jax.vmap(lambda k: sparse_rs.distinct(k, 7, 3))(keys))
  assert all(len(set(d)) == 3 for d in draws) and draws.min() >= 0 and draws.max() < 7
  counts = np.bincount(draws.ravel(), minlength=7) / draws.size
  np.testing.assert_allclose(counts, 1 / 7, atol=0.02)
  firsts = np.bincount(draws[:, 1], minlength=7) / len(draws)   # every position uniform too
  np.testing.assert_allclose(firsts, 1 / 7, atol=0.03)


def test_under_first_success_the_reported_candidate_fools(cifar_lenet, cifar_samples):
  """With the probability loss a fooling candidate can lose to a non-fooling one; under the
  first-success rule every method still reports (and stops at) a fooling candidate."""
  probs = np.asarray(cifar_lenet(cifar_samples.images[:40]))
  idx = np.nonzero(probs.argmax(-1) == cifar_samples.labels[:40])[0][:8]
  for kw in (dict(method="de", popsize=24, generations=8), dict(method="sparse_rs", max_queries=300),
             dict(method="corner_search", proposals_per_step=512, max_queries=9000)):
    rec = attack(cifar_lenet.predict, cifar_samples.images[idx], cifar_samples.labels[idx],
                 jax.random.PRNGKey(0), PixelAttackConfig(pixels=3, loss="probability",
                                                          stop="first_success", **kw),
                 image_ids=idx)
    np.testing.assert_array_equal(rec.success, rec.success_query >= 1, err_msg=kw["method"])
    assert rec.success.any(), kw["method"]


def test_targeted_sparse_methods_reach_the_target():
  predict = needle_model(NEEDLES[:1])
  for kw in (dict(method="sparse_rs", loss="ce", max_queries=3000),
             dict(method="corner_search", proposals_per_step=64)):
    rec = attack(predict, _images(2), np.zeros(2, np.int32), jax.random.PRNGKey(0),
                 PixelAttackConfig(pixels=1, targeted=True, **kw), targets=np.ones(2, np.int32),
                 image_ids=np.arange(2))
    assert rec.success.all() and np.all(rec.adversarial_class == 1), kw["method"]


def test_a_budget_below_the_first_step_is_refused():
  from pixeljax.errors import UserError
  for kw in (dict(method="de", popsize=40, max_queries=39),
             dict(method="corner_search", proposals_per_step=64, max_queries=10)):
    with pytest.raises(UserError, match="below the"):
      _run(needle_model(NEEDLES), 1, pixels=1, **kw)


def test_corner_search_counts_only_real_changes():
  """5 x 5 x 8 = 200 one-pixel changes in blocks of 64: the padded 56 are not queries."""
  unfoolable = lambda images: jnp.tile(jnp.array([0.98, 0.01, 0.01]), (len(images), 1))
  rec = attack(unfoolable, np.full((1, 5, 5, 3), 100, np.uint8), np.zeros(1, np.int32),
               jax.random.PRNGKey(0), PixelAttackConfig(method="corner_search", pixels=1,
                                                        proposals_per_step=64))
  assert int(rec.queries[0]) == 200


def test_one_moved_pixel_never_takes_the_image_colour():
  """The authors resample the colour of a single moved pixel until it differs from the
  image's own; on an all-white image no proposal may write white."""
  method = sparse_rs.SparseRS(PixelAttackConfig(method="sparse_rs", pixels=2), (H, W, 3))
  image = jnp.full((H, W, 3), 255.0)
  from pixeljax.sparse.method import Problem
  state = method.init(jax.random.PRNGKey(0), Problem(image, 0, -1, lambda c: _fake_eval(c)))
  keys = jax.random.split(jax.random.PRNGKey(1), 500)
  orders, colours = jax.vmap(lambda k: method._propose(k, state, image, 1))(keys)
  moved = np.asarray(orders)[:, :2] != np.asarray(state.order)[None, :2]     # (500, k)
  assert np.all(moved.sum(1) == 1)                  # exactly one pixel moves
  new = np.asarray(colours)[moved]
  assert not np.any(np.all(new == 255.0, -1))
  assert len({tuple(c) for c in new}) == 7          # every other corner appears


def _fake_eval(candidates):
  from pixeljax.sparse.problem import Scores
  b = candidates.shape[0]
  return Scores(loss=jnp.zeros(b), fooled=jnp.zeros(b, bool), reached=jnp.zeros(b, bool),
                probs=jnp.tile(jnp.array([1.0, 0.0, 0.0]), (b, 1)))
