import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixeljax import fooling, gradient_ascent, map_elites
from pixeljax.cppn import CPPN, hls_to_rgb
from pixeljax.direct_encoding import (DirectEncoding, mutation_rate, polynomial_mutation,
                                      sbx_crossover)


def test_renderer_shapes_any_resolution_and_determinism():
  for outputs in (1, 3):
    c = CPPN(outputs=outputs)
    g = c.init(jax.random.PRNGKey(0), 5)
    for h, w in ((28, 28), (32, 32), (7, 13)):
      img = c.render(g, h, w)
      chex.assert_shape(img, (5, h, w, outputs))
      assert float(img.min()) >= 0 and float(img.max()) <= 255
    render = jax.jit(c.render, static_argnums=(1, 2))
    chex.assert_trees_all_equal(render(g, 16, 16), render(g, 16, 16))
    chex.assert_trees_all_close(c.render(g, 16, 16), render(g, 16, 16), atol=1e-3)


def test_renderer_draws_one_function_at_every_resolution():
  """A CPPN is resolution independent: the 2x image subsampled on shared coordinates matches."""
  c = CPPN(outputs=1)
  g = c.mutate(jax.random.PRNGKey(3), c.init(jax.random.PRNGKey(2), 1))
  small, big = c.render(g, 5, 5), c.render(g, 9, 9)
  np.testing.assert_allclose(np.asarray(big[:, ::2, ::2]), np.asarray(small), atol=1e-3)


def test_genomes_stay_valid_feed_forward_after_many_mutations():
  c = CPPN(outputs=3, max_hidden=8)
  g = c.init(jax.random.PRNGKey(0), 16)
  mutate = jax.jit(c.mutate)
  for i in range(200):
    g = mutate(jax.random.PRNGKey(i), g)
    assert bool(jnp.all(jax.vmap(c.is_valid)(g))), f"invalid genome after {i + 1} rounds"
  conn = np.asarray(g.conn)
  assert np.all(np.triu(np.ones((c.num_nodes,) * 2), 1)[conn.any(0)])  # only src < dst
  assert np.asarray(g.node_on)[:, 4:-3].sum() > 0     # structure actually grew
  assert np.all(np.isfinite(np.asarray(c.render(g, 8, 8))))


def test_is_valid_catches_a_backward_connection():
  c = CPPN(outputs=1, max_hidden=2)
  g = jax.tree_util.tree_map(lambda a: a[0], c.init(jax.random.PRNGKey(0), 1))
  bad = g.replace(conn=g.conn.at[6, 0].set(True))   # output -> input
  assert bool(c.is_valid(g)) and not bool(c.is_valid(bad))


def test_hls_matches_colorsys():
  import colorsys
  rng = np.random.default_rng(0)
  for h, l, s in rng.uniform(size=(20, 3)):
    np.testing.assert_allclose(np.asarray(hls_to_rgb(jnp.float32(h), jnp.float32(l),
                                                     jnp.float32(s))),
                               colorsys.hls_to_rgb(h, l, s), atol=1e-5)


def test_mutation_schedule_halves_every_1000_generations():
  assert float(mutation_rate(0)) == pytest.approx(0.1)
  assert float(mutation_rate(999)) == pytest.approx(0.1)
  assert float(mutation_rate(1000)) == pytest.approx(0.05)
  assert float(mutation_rate(2500)) == pytest.approx(0.025)
  enc = DirectEncoding((28, 28, 1))
  x = enc.init(jax.random.PRNGKey(0), 64)
  changed = lambda gen: float(jnp.mean(enc.mutate(jax.random.PRNGKey(1), x, gen) != x))
  assert changed(0) == pytest.approx(0.1, abs=0.01)
  assert changed(1000) == pytest.approx(0.05, abs=0.01)


def test_polynomial_mutation_and_sbx_stay_in_bounds():
  x = jnp.array([0.0, 10.0, 128.0, 250.0, 255.0] * 200)
  y = polynomial_mutation(jax.random.PRNGKey(0), x, 15.0)
  assert float(y.min()) >= 0 and float(y.max()) <= 255
  assert 0 < float(jnp.median(jnp.abs(y - x))) < 30      # eta 15: small moves
  z = sbx_crossover(jax.random.PRNGKey(1), x, 255 - x)
  assert float(z.min()) >= 0 and float(z.max()) <= 255


def test_every_offspring_competes_in_every_cell():
  archive = map_elites.Archive(genomes=jnp.zeros((3, 1)), fitness=jnp.array([0.5, 0.9, -jnp.inf]),
                               filled=jnp.array([True, True, False]),
                               generation=jnp.zeros((), jnp.int32),
                               evaluations=jnp.zeros((), jnp.int32), key=jax.random.PRNGKey(0))
  genomes = jnp.array([[1.0], [2.0]])
  scores = jnp.array([[0.6, 0.1, 0.2],     # beats cell 0, and is best for cell 2
                      [0.55, 0.8, 0.1]])   # worse than cell 1's incumbent
  out = map_elites.insert(archive, genomes, scores)
  np.testing.assert_allclose(out.fitness, [0.6, 0.9, 0.2])
  np.testing.assert_allclose(out.genomes[:, 0], [1.0, 0.0, 1.0])
  assert out.filled.tolist() == [True, True, True] and int(out.evaluations) == 2
  tie = map_elites.insert(out, genomes, jnp.array([[0.6, 0.0, 0.0], [0.0, 0.0, 0.0]]))
  np.testing.assert_allclose(tie.fitness, out.fitness)   # ties keep the incumbent


def test_map_elites_improves_and_resumes(tmp_path):
  """Toy scorer: class c likes mean brightness near c * 25."""
  def score(images):
    m = images.mean(axis=(1, 2, 3))
    return jnp.exp(-((m[:, None] - 25.0 * jnp.arange(10)[None]) / 20.0) ** 2)
  enc = DirectEncoding((4, 4, 1))
  logs = []
  a, imgs, stats = fooling.evolve(score, enc, 10, (4, 4, 1), 32, 20, 0, str(tmp_path / "a"),
                                  chunk=10, log=logs.append)
  assert imgs.shape == (10, 4, 4, 1) and len(stats["median"]) == 20
  assert np.all(np.diff(stats["minimum"][np.isfinite(stats["minimum"])]) >= -1e-6)
  # Interrupted after the first chunk: copy its save point, resume, same final archive.
  b1, _, _ = fooling.evolve(score, enc, 10, (4, 4, 1), 32, 10, 0, str(tmp_path / "b"), chunk=10,
                            log=logs.append)
  b, _, stats_b = fooling.evolve(score, enc, 10, (4, 4, 1), 32, 20, 0, str(tmp_path / "b"),
                                 chunk=10, log=logs.append)
  assert any("resumed at generation 10" in l for l in logs)
  chex.assert_trees_all_equal(a.genomes, b.genomes)
  np.testing.assert_array_equal(stats["median"], stats_b["median"])


def test_gradient_ascent_records_first_steps():
  w = jax.random.normal(jax.random.PRNGKey(0), (4 * 4, 3))
  predict = lambda x: jax.nn.softmax((x.reshape(x.shape[0], -1) / 255.0 - 0.5) @ w * 20)
  state, conf = gradient_ascent.run(predict, jax.random.PRNGKey(1), (4, 4, 1), 3,
                                    gradient_ascent.GradientAscentConfig(steps=100,
                                                                         blur_every=10))
  assert conf.shape == (100, 3)
  assert float(conf[-1].min()) > float(conf[0].min())
  ft = np.asarray(state.first_top1)
  fc = np.asarray(state.first_conf)
  assert np.all(ft >= 1)
  reached = fc >= 0
  assert np.all(fc[reached] >= np.repeat(ft[:, None], 3, 1)[reached])
  assert float(state.images.min()) >= 0 and float(state.images.max()) <= 255


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="unknown encoding 'dna'"):
    fooling.make_encoding("dna", (28, 28, 1))
  with pytest.raises(ValueError, match="population must be >= 1"):
    fooling.evolve(lambda x: x, DirectEncoding((2, 2, 1)), 2, (2, 2, 1), 0, 5, 0)


def test_fooling_experiment_on_the_papers_mnist_net(tmp_path):
  from pixeljax import models
  clf = models.load("mnist_lenet_fooling")
  res = fooling.fooling_experiment(clf, "direct", str(tmp_path), generations=50,
                                   population=400, chunk=25)
  assert res["classes_at_99"] >= 8     # direct encoding fools this net within tens of gens
  for f in ("archive.npz", "gallery.png", "confidence.png", "results.json"):
    assert os.path.exists(tmp_path / f)
  with np.load(tmp_path / "archive.npz") as a:
    t = fooling.transfer(a["images"], a["probs"], clf)
  np.testing.assert_allclose(t["confidence_b"], t["confidence_a"], atol=1e-5)
