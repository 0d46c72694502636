"""``models.traced``: any JAX function's program split for the engine's fast paths -- the stem
at its first convolution and its local prefix on windows -- exact, and refused where the
program does not allow it. Nets written here in plain JAX (PyTorch's NCHW layout and
batch-norm arithmetic, residual sums), so no framework is needed."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import pixeljax
from pixeljax import models

SHAPE = (16, 16, 3)


def _conv(x, w, stride=1, padding="SAME"):
  return lax.conv_general_dilated(x, w, (stride, stride), padding,
                                  dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                  precision=lax.Precision.HIGHEST)


def _net(extra_convs=0, reads_input_late=False, first_padding="SAME", masks_saturated=False):
  """A small NCHW residual net: normalise, conv-bn-relu, a residual block (+ more convs),
  a strided conv, global average pooling, a dense layer (logits)."""
  keys = iter(jax.random.split(jax.random.PRNGKey(0), 16))
  w = lambda *s: jax.random.normal(next(keys), s) * (2.0 / np.prod(s[1:])) ** 0.5
  w1, w2, w3, w4 = w(8, 3, 3, 3), w(8, 8, 3, 3), w(8, 8, 3, 3), w(16, 8, 3, 3)
  more = [w(8, 8, 3, 3) for _ in range(extra_convs)]
  dense = w(10, 16)
  scale, shift = jnp.linspace(0.5, 1.5, 8).reshape(1, 8, 1, 1), 0.1

  def f(images):
    if masks_saturated:           # saturated channels read as black: not affine at 255
      images = jnp.where(images == 255.0, 0.0, images)
    x = jnp.transpose(images / 255.0 - 0.5, (0, 3, 1, 2))
    h = jax.nn.relu(_conv(x, w1, padding=first_padding) * scale + shift)
    r = h
    h = jax.nn.relu(_conv(h, w2) * scale - shift)
    h = jax.nn.relu(_conv(h, w3) + r)
    for m in more:
      h = jax.nn.relu(_conv(h, m))
    h = jax.nn.relu(_conv(h, w4, stride=2))
    feats = h.mean((2, 3))
    if reads_input_late:          # the pixels read again after the first convolution
      feats = feats + x.mean((1, 2, 3))[:, None]
    return feats @ dense.T
  return f


def _image(seed=1):
  return np.random.default_rng(seed).uniform(0, 255, (1,) + SHAPE).astype(np.float32)


def test_a_residual_nchw_net_gets_stem_and_windows_exactly():
  model = models.from_jax(_net(), input_shape=SHAPE)
  assert model.metadata["softmax_added"] is True
  f = model.factored
  assert f is not None and f.window is not None
  # Three 3x3 convolutions before the strided one: radius 3, a 7x7 window.
  assert f.window.size == (7, 7)
  # The strided one would need a 5-wide window of its 8x8 map: no further reach.
  assert f.strided_window is None
  image = _image()
  rng = np.random.default_rng(2)
  ys = np.concatenate([[0, 0, 15, 15, 8, 0, 15], rng.integers(16, size=25)])
  xs = np.concatenate([[0, 15, 0, 15, 8, 7, 3], rng.integers(16, size=25)])
  colours = rng.uniform(0, 255, (len(ys), 3)).astype(np.float32)
  changed = np.repeat(image, len(ys), 0)
  changed[np.arange(len(ys)), ys, xs] = colours
  want = np.asarray(jax.jit(model.predict)(changed))
  owner = np.zeros(len(ys), np.int32)
  got = jax.jit(lambda i, y, x, c: f.window.pixel_probs(f.window.clean(i), i, owner, y, x, c))(
      image, ys, xs, colours)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
  # The stem split: head(stem(x)) is the net.
  np.testing.assert_allclose(np.asarray(jax.jit(lambda v: f.head(f.stem(v)))(changed)), want,
                             atol=1e-5, rtol=0)
  assert f.stem_shape == (16, 16, 8)


def _attack_finds_what_the_black_box_finds(model, images, generations):
  """One-pixel DE on ``model`` (the engine's fast paths) and on its bare ``predict`` (the full
  net): the same successes, probabilities within 1e-5."""
  labels = np.asarray(jax.jit(model.predict)(images)).argmax(1)
  config = pixeljax.PixelAttackConfig(pixels=1, popsize=40, generations=generations)
  fast = pixeljax.attack(model, images, labels, jax.random.PRNGKey(0), config)
  slow = pixeljax.attack(model.predict, images, labels, jax.random.PRNGKey(0), config)
  np.testing.assert_array_equal(fast.success, slow.success)
  np.testing.assert_allclose(fast.probs, slow.probs, atol=1e-5)


def test_the_engine_chooses_the_fast_paths_and_attacks_give_the_black_box_results():
  model = models.from_jax(_net(), input_shape=SHAPE)
  mesh = pixeljax.sharding.default_mesh()
  chosen = pixeljax.evaluator_for(model, 1, "de", mesh).execution
  assert chosen.incremental and chosen.window
  assert pixeljax.evaluator_for(model, 3, "de", mesh).execution.incremental
  _attack_finds_what_the_black_box_finds(
      model, np.concatenate([_image(s) for s in range(3)]).round(), generations=5)


def test_more_convolutions_than_the_window_allows_stop_the_prefix():
  # Six 3x3 convolutions before the strided one: the window stops at half the image (8).
  model = models.from_jax(_net(extra_convs=3), input_shape=SHAPE)
  assert max(model.factored.window.size) <= 8


def _pooling_net():
  """NCHW: two 'same' convolutions, a 3x3 stride-2 max pool, a stride-2 convolution, a 2x2
  average pool, a 'same' convolution, global average pooling: four resolutions."""
  keys = iter(jax.random.split(jax.random.PRNGKey(3), 8))
  w = lambda *s: jax.random.normal(next(keys), s) * (2.0 / np.prod(s[1:])) ** 0.5
  w1, w2, w3, w4, dense = w(6, 3, 3, 3), w(6, 6, 3, 3), w(8, 6, 3, 3), w(8, 8, 3, 3), w(10, 8)

  def f(images):
    x = jnp.transpose(images / 255.0 - 0.5, (0, 3, 1, 2))
    h = jax.nn.relu(_conv(x, w1))
    h = jax.nn.relu(_conv(h, w2) + h)
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2), "SAME")
    h = jax.nn.relu(_conv(h, w3, stride=2))
    h = lax.reduce_window(h, 0.0, lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID") / 4
    h = jax.nn.relu(_conv(h, w4))
    return h.mean((2, 3)) @ dense.T
  return f


def test_a_strided_prefix_goes_on_through_pooling_and_strides_exactly_at_every_pixel():
  from pixeljax.models import traced, traced_window
  shape = (32, 32, 3)
  model = models.from_jax(_pooling_net(), input_shape=shape)
  f = model.factored
  assert f.window.size == (5, 5)             # stride 1: the two convolutions
  # A run that has it off (a resumed older one) does not build it.
  assert not pixeljax.evaluator_for(model, 1, "de", None,
                                    dict(strided_window=False)).execution.strided_window
  assert "strided_window" not in vars(f)
  local = f.strided_window
  assert local is not None
  plan = traced_window._plan(traced._Traced(model.predict, shape).program(1), shape, True)
  # 32 -> max pool 16 -> conv 8 -> average pool 4; the last 'same' conv would need 4 of 4.
  assert plan.dims == ((32, 32), (16, 16), (8, 8), (4, 4))
  assert [loc.size for loc in plan.locals] == [(3, 3), (5, 5), (4, 4), (3, 3), (2, 2)]
  # Every pixel, each channel set to a random colour: the windows agree with the whole net.
  image = np.random.default_rng(4).uniform(0, 255, (1,) + shape).astype(np.float32)
  ys, xs = (a.ravel() for a in np.meshgrid(np.arange(32), np.arange(32), indexing="ij"))
  colours = np.random.default_rng(5).uniform(0, 255, (len(ys), 3)).astype(np.float32)
  changed = np.repeat(image, len(ys), 0)
  changed[np.arange(len(ys)), ys, xs] = colours
  want = np.asarray(jax.jit(model.predict)(changed))
  owner = np.zeros(len(ys), np.int32)
  got = jax.jit(lambda i, y, x, c: local.pixel_probs(local.clean(i), i, owner, y, x, c))(
      image, ys, xs, colours)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
  # The engine takes it for one pixel, and an attack gives the black box's results.
  mesh = pixeljax.sharding.default_mesh()
  chosen = pixeljax.evaluator_for(model, 1, "de", mesh).execution
  assert chosen.strided_window == (jax.default_backend() == "cpu")
  images = np.concatenate([np.random.default_rng(s).uniform(0, 255, (1,) + shape)
                           for s in range(2)]).round().astype(np.float32)
  _attack_finds_what_the_black_box_finds(model, images, generations=4)
  with pytest.raises(pixeljax.UserError, match="strided_window needs"):
    pixeljax.evaluator_for(models.from_jax(_net(), input_shape=SHAPE), 1, "de", mesh,
                           dict(strided_window=True))


def test_the_paper_nets_strided_prefixes_reach_their_second_resolution():
  """All-CNN-C: five convolutions (the fifth on 8x8 of 16x16); NiN: its second block; VGG16:
  its second block and pool (where a prefix reaches is the architecture's: zero weights)."""
  from pixeljax.models import traced, traced_window
  from pixeljax.models.registry import Classifier
  # Per net: how many of its squares the stride-1 prefix has, and the strided prefix's.
  reach = {"cifar10_allcnn": (2, [(3, 3), (5, 5), (4, 4), (6, 6), (8, 8)]),
           "cifar10_nin": (3, [(5, 5)] * 3 + [(4, 4)] + [(8, 8)] * 3),
           "cifar10_vgg16": (2, [(3, 3), (5, 5), (3, 3), (5, 5), (7, 7), (4, 4)])}
  for name, (plain, squares) in reach.items():
    spec = models.get(name)
    shapes = jax.eval_shape(lambda: spec.init(jax.random.PRNGKey(0), None))
    zeros = jax.tree_util.tree_map(lambda v: np.zeros(v.shape, v.dtype), shapes)
    clf = Classifier(spec, spec.module(None), zeros, {})
    program = traced._Traced(clf.predict, spec.input_shape).program(1)
    plan = traced_window._plan(program, spec.input_shape, True)
    assert [loc.size for loc in plan.locals] == squares, name
    stride_1 = traced_window._plan(program, spec.input_shape, False)
    assert [loc.size for loc in stride_1.locals] == squares[:plain], name


def test_programs_that_do_not_split_get_the_full_net():
  late = models.from_jax(_net(reads_input_late=True), input_shape=SHAPE)
  assert late.factored is None
  config = pixeljax.PixelAttackConfig(pixels=1, popsize=8, generations=1)
  assert not pixeljax.evaluator_for(late, 1, "de", pixeljax.sharding.default_mesh()) \
      .execution.incremental
  rec = pixeljax.attack(late, _image(), np.array([0]), jax.random.PRNGKey(0), config)
  assert rec.queries[0] <= 16
  # A stem affine everywhere but at the corner colours candidates take most (0, 255): the
  # checks on a random float image alone passed it, and the incremental path then added
  # 255 x the response where the net saw black.
  assert models.from_jax(_net(masks_saturated=True), input_shape=SHAPE).factored is None
  # A 'valid' first convolution still splits (LeNet's), but has no 'same' prefix to window.
  valid = models.from_jax(_net(first_padding="VALID"), input_shape=SHAPE)
  assert valid.factored is not None and valid.factored.window is None
  # Not a convolution at all.
  dense = jax.random.normal(jax.random.PRNGKey(0), (int(np.prod(SHAPE)), 10))
  flat = models.from_jax(lambda v: v.reshape(v.shape[0], -1) @ dense, input_shape=SHAPE)
  assert flat.factored is None


def test_from_jax_rejects_bad_input():
  with pytest.raises(pixeljax.UserError, match="input_shape"):
    models.from_jax(_net(), input_shape=(16, 16))
  with pytest.raises(pixeljax.UserError, match="function"):
    models.from_jax("net", input_shape=SHAPE)
  with pytest.raises(pixeljax.UserError, match=r"\(N, classes\)"):
    models.from_jax(lambda v: v, input_shape=SHAPE)
