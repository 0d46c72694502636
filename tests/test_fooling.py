"""The fooling library: encodings, the generic MAP-Elites engine, the resumable driver,
gradient ascent and the paper's metrics (experiments: tests/test_fooling_experiments.py)."""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixeljax.errors import UserError
from pixeljax.evolution import map_elites
from pixeljax.fooling import driver, gradient_ascent
from pixeljax.fooling.cppn import CPPN, hls_to_rgb, polynomial_step
from pixeljax.fooling.direct import (DirectEncoding, mutation_rate, polynomial_mutation,
                                     sbx_crossover)
from pixeljax.metrics import fooling as metrics
from pixeljax.workdir import SettingsMismatch


def test_renderer_shapes_any_resolution_and_determinism():
  for outputs in (1, 3):
    c = CPPN(outputs=outputs)
    g = c.init(jax.random.PRNGKey(0), 5)
    render = jax.jit(c.render, static_argnums=(1, 2))
    for h, w in ((28, 28), (32, 32), (7, 13)):
      img = render(g, h, w)
      chex.assert_shape(img, (5, h, w, outputs))
      assert float(img.min()) >= 0 and float(img.max()) <= 255
    chex.assert_trees_all_equal(render(g, 16, 16), render(g, 16, 16))
    chex.assert_trees_all_close(c.render(g, 6, 6), render(g, 6, 6), atol=1e-3)   # eager


def test_renderer_draws_one_function_at_every_resolution():
  """A CPPN is resolution independent: the 2x image subsampled on shared coordinates matches."""
  c = CPPN(outputs=1)
  g = c.mutate(jax.random.PRNGKey(3), c.init(jax.random.PRNGKey(2), 1))
  render = jax.jit(c.render, static_argnums=(1, 2))
  small, big = render(g, 5, 5), render(g, 9, 9)
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


# The original Sferes code's operators (configs/fooling.py:mnist_cppn_original).
ORIGINAL_OPS = dict(p_add_connection=0.5, p_remove_connection=0.3, p_add_node=0.5,
                    p_remove_node=0.2, add_node="split", weight_init="uniform",
                    p_perturb_weight=0.1, weight_mutation="polynomial", weight_eta=15.0,
                    p_change_activation=0.0, p_resample_activation=0.1)


def test_the_original_codes_operators_keep_genomes_valid():
  c = CPPN(outputs=1, max_hidden=8, **ORIGINAL_OPS)
  g = c.init(jax.random.PRNGKey(0), 16)
  w0 = np.asarray(g.weight)[np.asarray(g.conn)]
  assert np.all(np.abs(w0) <= 10) and np.std(w0) > 4     # uniform in [-10, 10], not N(0, 4)
  mutate = jax.jit(c.mutate)
  for i in range(60):
    g = mutate(jax.random.PRNGKey(i), g)
    assert bool(jnp.all(jax.vmap(c.is_valid)(g))), f"invalid genome after {i + 1} rounds"
  assert np.asarray(g.node_on)[:, 4:-1].sum() > 0
  assert np.all(np.isfinite(np.asarray(c.render(g, 8, 8))))
  with pytest.raises(UserError, match="unknown add_node 'splice'"):
    CPPN(add_node="splice")


def test_split_puts_a_node_on_a_connection_with_its_weight():
  c = CPPN(outputs=1, max_hidden=1, add_node="split")
  g = jax.tree_util.tree_map(lambda a: a[0], c.init(jax.random.PRNGKey(0), 1))
  split = jax.jit(c._split_connection)
  s = split(jax.random.PRNGKey(1), g)
  assert bool(c.is_valid(s)) and bool(s.node_on[4])
  (src,), = np.nonzero(np.asarray(g.conn & ~s.conn)[:, 5])     # the connection split
  assert bool(s.conn[src, 4]) and bool(s.conn[4, 5]) and int(s.conn.sum()) == 5
  assert float(s.weight[src, 4]) == float(s.weight[4, 5]) == float(g.weight[src, 5])
  chex.assert_trees_all_equal(split(jax.random.PRNGKey(2), s), s)   # no free slot: unchanged


def test_polynomial_weight_steps_and_activation_resampling_follow_sferes():
  d = np.asarray(polynomial_step(jax.random.PRNGKey(0), (200_000,), 15.0))
  assert np.all(np.abs(d) < 1) and abs(np.mean(d)) < 2e-3
  assert np.mean(np.abs(d)) == pytest.approx(1 / 17, rel=0.02)   # E|step| = 1/(eta + 2)
  c = CPPN(outputs=1, max_hidden=8, p_add_connection=0.0, p_remove_connection=0.0,
           p_add_node=0.0, p_remove_node=0.0, p_change_activation=0.0,
           p_perturb_weight=0.1, weight_mutation="polynomial", p_resample_activation=0.1)
  g = c.init(jax.random.PRNGKey(0), 4000)
  g = g.replace(node_on=g.node_on.at[:, 4:8].set(True), conn=g.conn.at[:, 4:8, 12].set(True))
  m = jax.jit(c.mutate)(jax.random.PRNGKey(1), g)
  moved = np.asarray(m.weight != g.weight)
  assert not moved[~np.asarray(g.conn)].any()
  assert moved[np.asarray(g.conn)].mean() == pytest.approx(0.1, abs=0.01)
  assert float(jnp.abs(m.weight).max()) <= 10
  changed = np.asarray(m.activation != g.activation)
  assert changed[:, 4:8].mean() == pytest.approx(0.1 * 3 / 4, abs=0.01)   # same one redrawn
  assert not changed[:, 8:].any() and not changed[:, :4].any()     # only active hidden nodes


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


def _brightness_score(images):
  """Toy scorer: class c likes mean brightness near c * 25."""
  m = images.mean(axis=(1, 2, 3))
  return jnp.exp(-((m[:, None] - 25.0 * jnp.arange(10)[None]) / 20.0) ** 2)


ENC = DirectEncoding((4, 4, 1))


def _evolve(state_dir=None, generations=7, segment=3, population=32, seed=0,
            scorer="brightness", **kw):
  config = driver.EvolutionConfig(population=population, generations=generations,
                                  segment=segment, seed=seed)
  return driver.evolve(_brightness_score, kw.pop("encoding", ENC), 10, (4, 4, 1), config,
                       state_dir=None if state_dir is None else str(state_dir),
                       scorer=scorer, show_progress=False, **kw)


class Interrupted(Exception):
  """Stands in for a killed process."""


def _interrupt_after(monkeypatch, module, updates: int):
  """Makes ``module``'s progress report raise at its ``updates``-th update (they come after
  each segment's or epoch's save point)."""
  from pixeljax.progress import Progress
  count = [0]

  class Flaky(Progress):
    def update(self, done, **stats):
      count[0] += 1
      if count[0] >= updates:
        raise Interrupted
  monkeypatch.setattr(module, "Progress", Flaky)


def test_map_elites_engine_knows_nothing_of_images():
  """Genomes are any pytree; the scoring function maps genomes to (B, K) scores."""
  class AddNoise:
    def mutate(self, key, genomes, generation, partners=None):
      return jax.tree_util.tree_map(lambda g: g + 0.3 * jax.random.normal(key, g.shape),
                                    genomes)
  target = jnp.array([-2.0, 0.0, 2.0])
  scoring_fn = lambda g: -jnp.abs((g["x"][:, 0] + g["y"][:, 1])[:, None] - target[None])
  genomes = {"x": jnp.zeros((8, 1)), "y": jnp.zeros((8, 2))}
  archive = map_elites.init(jax.random.PRNGKey(0), genomes, scoring_fn, num_cells=3)
  chex.assert_shape(archive.genomes["y"], (3, 2))
  archive, stats = jax.jit(lambda a: map_elites.run(a, AddNoise(), scoring_fn, 8, 30))(archive)
  assert int(archive.generation) == 30 and int(archive.evaluations) == 8 * 31
  assert stats["median"].shape == (30,) and float(archive.fitness.min()) > -0.3
  with pytest.raises(AssertionError):   # scores of the wrong shape are a programming error
    map_elites.init(jax.random.PRNGKey(0), genomes, lambda g: scoring_fn(g)[:, :2], 3)


def test_evolve_improves_and_ends_exactly_at_generations():
  """7 generations in segments of 3 compile a 3- and a 1-generation scan: the archive ends at
  generation 7 (not 9) with 7 statistics, and equals a run in one segment."""
  archive, images, stats = _evolve(generations=7, segment=3)
  assert images.shape == (10, 4, 4, 1)
  assert int(archive.generation) == 7 and int(archive.evaluations) == 32 * 8
  assert all(len(v) == 7 for v in stats.values())
  assert np.all(np.diff(stats["minimum"][np.isfinite(stats["minimum"])]) >= -1e-6)
  one, _, stats_one = _evolve(generations=7, segment=7)
  chex.assert_trees_all_equal(archive, one)
  chex.assert_trees_all_equal(stats, stats_one)


def test_interrupted_evolution_resumes_to_the_same_archive(tmp_path, monkeypatch):
  uninterrupted = _evolve(tmp_path / "a", generations=7, segment=3)
  _interrupt_after(monkeypatch, driver, updates=2)     # killed after generation 6 is saved
  first, then = dict(commit="a" * 40, dirty=False), dict(commit="b" * 40, dirty=True)
  with pytest.raises(Interrupted):
    _evolve(tmp_path / "b", generations=7, segment=3, code=first)
  monkeypatch.undo()
  logs = []
  resumed = _evolve(tmp_path / "b", generations=7, segment=3, log=logs.append, code=then)
  assert logs == ["resumed at generation 6"]
  chex.assert_trees_all_equal(resumed, uninterrupted)
  # Which code made which generations (before, only the last start's commit was recorded).
  assert driver.code_versions(str(tmp_path / "b")) == [dict(first, generations=6),
                                                       dict(then, generations=1)]
  assert driver.code_versions(str(tmp_path / "a")) == [
      dict(commit=None, unrecorded=True, generations=7)]
  # A finished run can be extended: its settings do not include the generation count.
  extended = _evolve(tmp_path / "b", generations=10, segment=3, log=logs.append)
  chex.assert_trees_all_equal(extended, _evolve(generations=10, segment=3))
  with pytest.raises(UserError, match="at generation 10, beyond the 7 asked"):
    _evolve(tmp_path / "b", generations=7, segment=3)


def test_evolve_refuses_a_folder_made_with_other_settings(tmp_path):
  _evolve(tmp_path, generations=2)
  for change, name in ((dict(population=16), "population"), (dict(seed=1), "seed"),
                       (dict(segment=2), "segment"), (dict(scorer="other net"), "scorer"),
                       (dict(encoding=DirectEncoding((4, 4, 1), eta=20.0)),
                        "encoding_settings.eta")):
    with pytest.raises(SettingsMismatch, match=name):
      _evolve(tmp_path, generations=4, **change)
  with pytest.raises(UserError, match="scorer name"):
    _evolve(tmp_path, generations=4, scorer=None)
  # settings.json removed: before, a start with other settings claimed the folder afresh
  # beside the old archive, and its next start resumed that archive as its own.
  (tmp_path / "settings.json").unlink()
  with pytest.raises(UserError, match=r"holds evolution_state\.npz but no settings\.json"):
    _evolve(tmp_path, generations=4, seed=1)


def test_a_folder_claimed_before_the_cppn_options_resumes(tmp_path):
  """Settings added to CPPN since runs were stored take the values those runs used."""
  import json
  from pixeljax.workdir import SETTINGS_FILE
  enc = CPPN(outputs=1, max_hidden=2)
  _evolve(tmp_path, generations=2, encoding=enc)
  path = tmp_path / SETTINGS_FILE
  stored = json.loads(path.read_text())
  for k in driver.ADDED_SETTINGS["cppn"]:
    del stored["encoding_settings"][k]
  path.write_text(json.dumps(stored))
  logs = []
  _evolve(tmp_path, generations=2, encoding=enc, log=logs.append)
  assert logs == ["resumed at generation 2"]
  with pytest.raises(SettingsMismatch, match="encoding_settings.add_node"):
    _evolve(tmp_path, generations=2, encoding=CPPN(outputs=1, max_hidden=2, add_node="split"))
  old = {"cppn": {"max_hidden": 24}, "direct": {"eta": 15.0}, "population": 400}
  assert driver.migrate_config(old) == {
      "cppn": dict(driver.ADDED_SETTINGS["cppn"], max_hidden=24),
      "direct": {"eta": 15.0, "whole_pixels": False}, "population": 400}


def test_whole_pixels_scores_the_image_a_file_would_hold(tmp_path):
  """``whole_pixels`` (the original's uchar images): every image MAP-Elites scores and keeps
  is at whole pixel values; without it, float images (what stored runs were made with: a
  folder claimed before the setting resumes as it was made)."""
  import json
  from pixeljax.workdir import SETTINGS_FILE
  for enc in (CPPN(outputs=1, max_hidden=2, whole_pixels=True),
              DirectEncoding((4, 4, 1), whole_pixels=True)):
    images = np.asarray(_evolve(generations=2, encoding=enc)[1])
    assert images.max() > 0 and np.array_equal(images, np.floor(images))
    plain = np.asarray(_evolve(generations=2, encoding=dataclasses.replace(
        enc, whole_pixels=False))[1])
    assert not np.array_equal(plain, np.floor(plain))
  enc = DirectEncoding((4, 4, 1))
  _evolve(tmp_path, generations=2, encoding=enc)
  path = tmp_path / SETTINGS_FILE
  stored = json.loads(path.read_text())
  del stored["encoding_settings"]["whole_pixels"]
  path.write_text(json.dumps(stored))
  logs = []
  _evolve(tmp_path, generations=2, encoding=enc, log=logs.append)
  assert logs == ["resumed at generation 2"]
  with pytest.raises(SettingsMismatch, match="encoding_settings.whole_pixels"):
    _evolve(tmp_path, generations=2, encoding=DirectEncoding((4, 4, 1), whole_pixels=True))


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
  images, fitness, stats, first = driver.ascend(
      predict, 3, (4, 4, 1), gradient_ascent.GradientAscentConfig(steps=100, blur_every=10),
      seed=1)
  np.testing.assert_allclose(images, state.images)
  np.testing.assert_allclose(fitness, conf[-1])
  np.testing.assert_allclose(stats["minimum"], np.asarray(conf).min(1))
  assert first["first_top1_step"] == ft.tolist()


def test_make_encoding_reads_settings_and_names_bad_input():
  enc = driver.make_encoding("direct", (28, 28, 1), {"crossover_rate": 0.5})
  assert enc == DirectEncoding((28, 28, 1), crossover_rate=0.5)
  assert driver.make_encoding("cppn", (32, 32, 3)) == CPPN(outputs=3)
  assert set(driver.encoding_defaults("cppn")) == {
      f.name for f in dataclasses.fields(CPPN)} - {"outputs"}
  with pytest.raises(UserError, match="unknown encoding 'dna'"):
    driver.make_encoding("dna", (28, 28, 1))
  with pytest.raises(UserError, match="unknown setting.*max_hiden"):
    driver.make_encoding("cppn", (28, 28, 1), {"max_hiden": 3})
  with pytest.raises(UserError, match="population and segment must be >= 1"):
    _evolve(population=0)


def test_fooling_class_is_oversampled_to_an_average_class():
  images = np.zeros((100, 2, 2, 1), np.uint8)
  labels = np.repeat(np.arange(10), 10)
  x, y = driver.add_fooling_class(images, labels, np.full((3, 2, 2, 1), 254.6), 10)
  assert x.shape == (110, 2, 2, 1) and x.dtype == np.uint8 and np.all(x[100:] == 255)
  assert np.sum(y == 10) == 10 and np.array_equal(y[:100], labels)
  # Before: [0, 1] fooling images rounded to a black class, 5 labels for 10 classes added
  # none (0 per class), other shapes and an empty pool gave numpy / ValueError tracebacks.
  for fooling, k, message in (
      (np.random.default_rng(0).random((5, 2, 2, 1)), 10,
       r"^the fooling images look scaled to \[0, 1\]"),
      (np.full((3, 2, 2, 3), 200.), 10, r"^fooling images of shape \(2, 2, 3\), training"),
      (np.full((0, 2, 2, 1), 200.), 10, r"^no fooling images to add$"),
      (np.full((3, 2, 2, 1), 200.), 200, r"^num_classes must be >= 1 and at most the 100 "
                                          r"labels")):
    with pytest.raises(UserError, match=message):
      driver.add_fooling_class(images, labels, fooling, k)


def test_fooling_metrics():
  stats = {"filled": np.array([8, 10, 10, 10]), "minimum": np.array([.99999, .5, .995, .99995])}
  assert metrics.first_generation_all_above(stats, 10, 0.99) == 3   # 1-based; gen 1 not full
  assert metrics.first_generation_all_above(stats, 10, 0.9999) == 4
  assert metrics.first_generation_all_above(stats, 10, 0.999999) is None
  # A class never filled (the minimum is over filled cells): never "all above". Before, the
  # most cells ever filled stood for every class, and this said generation 1.
  assert metrics.first_generation_all_above(
      {"filled": np.array([9, 9]), "minimum": np.array([.99999, .99999])}, 10) is None
  probs = np.array([[0.99995, 0.00005], [0.6, 0.4]])
  stats = {"filled": np.array([1, 2, 2, 2]), "minimum": stats["minimum"]}
  s = metrics.summary(probs, stats)
  assert s["classes_at_9999"] == 1 and s["classes_at_99"] == 1 and s["top1"] == [0, 0]
  assert s["first_generation_all_99"] == 3 and s["first_generation_all_9999"] == 4
  t = metrics.transfer(probs, probs[::-1])
  assert t["confidence_b"] == [0.6, 0.00005] and t["b_agrees_top1"] == 0.5
  e = metrics.elites([0.5, 0.995, 0.99995, 1.0])
  assert e["fraction_at_99"] == 0.75 and e["fraction_at_9999"] == 0.5


@pytest.mark.parametrize("name, settings, message", [
    # before: the generation divided by zero in the trace, rate 0.1 * 0.5 ** -2 = 0.4
    ("direct", {"halve_every": 0}, r"^direct: halve_every must be >= 1, got 0$"),
    ("direct", {"initial_rate": 0.0}, r"^direct: initial_rate must be in \(0, 1\], got 0\.0$"),
    ("direct", {"crossover_rate": 1.5}, r"^direct: crossover_rate must be in \[0, 1\]"),
    # before: the output node overlapped the bias input, every image white
    ("cppn", {"max_hidden": -1}, r"^cppn: max_hidden must be >= 0, got -1$"),
    ("cppn", {"p_add_node": 2.0}, r"^cppn: p_add_node must be in \[0, 1\], got 2\.0$"),
    ("cppn", {"weight_eta": -3.0}, r"^cppn: weight_eta must be >= 0, got -3\.0$"),
    ("cppn", {"whole_pixels": "yes"}, r"^cppn: whole_pixels must be True or False"),
    ("direct", {"whole_pixels": 1}, r"^direct: whole_pixels must be True or False"),
])
def test_encoding_settings_out_of_range_are_one_line(name, settings, message):
  with pytest.raises(UserError, match=message):
    driver.make_encoding(name, (28, 28, 1), settings)


@pytest.mark.parametrize("call, message", [
    # before: every generation ran; a 'confidence' above 1 in the stats, no error
    (lambda: driver.evolve(lambda x: 10 * _brightness_score(x), ENC, 10, (4, 4, 1),
                           driver.EvolutionConfig(population=8, generations=1, segment=1),
                           show_progress=False),
     r"^predict returns scores in \[.*\], not confidences in \[0, 1\] \(logits or "
     r"log-probabilities\?\)"),
    # before: the log of negative numbers, NaN images and no error
    (lambda: driver.ascend(lambda x: jnp.log(_brightness_score(x) + 1e-9), 10, (4, 4, 1),
                           gradient_ascent.GradientAscentConfig(steps=2)),
     r"^predict returns scores in \[-"),
    # before: the whole run, then chex's AssertionError at the end
    (lambda: driver.evolve(_brightness_score, ENC, 10, (4, 4, 3),
                           driver.EvolutionConfig(population=8, generations=1, segment=1),
                           show_progress=False),
     r"^the direct encoding makes images of shape \(4, 4, 1\), not image_shape \(4, 4, 3\)$"),
    # before: an AssertionError traceback from chex inside the trace
    (lambda: driver.evolve(_brightness_score, ENC, 9, (4, 4, 1),
                           driver.EvolutionConfig(population=8, generations=1, segment=1),
                           show_progress=False),
     r"^predict returns \(1, 10\) for one image; it must return \(9 = num_classes\) class "
     r"probabilities per image$"),
])
def test_evolve_and_ascend_refuse_a_target_that_is_not_probabilities(call, message):
  with pytest.raises(UserError, match=message):
    call()
