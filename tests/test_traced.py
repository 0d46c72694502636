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


def _net(extra_convs=0, reads_input_late=False, first_padding="SAME"):
  """A small NCHW residual net: normalise, conv-bn-relu, a residual block (+ more convs),
  a strided conv, global average pooling, a dense layer (logits)."""
  keys = iter(jax.random.split(jax.random.PRNGKey(0), 16))
  w = lambda *s: jax.random.normal(next(keys), s) * (2.0 / np.prod(s[1:])) ** 0.5
  w1, w2, w3, w4 = w(8, 3, 3, 3), w(8, 8, 3, 3), w(8, 8, 3, 3), w(16, 8, 3, 3)
  more = [w(8, 8, 3, 3) for _ in range(extra_convs)]
  dense = w(10, 16)
  scale, shift = jnp.linspace(0.5, 1.5, 8).reshape(1, 8, 1, 1), 0.1

  def f(images):
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
  assert (f.window.radius, f.window.size) == (3, 7)
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


def test_the_engine_chooses_the_fast_paths_and_attacks_give_the_black_box_results():
  model = models.from_jax(_net(), input_shape=SHAPE)
  mesh = pixeljax.sharding.default_mesh()
  chosen = pixeljax.evaluator_for(model, 1, "de", mesh).execution
  assert chosen.incremental and chosen.window
  assert pixeljax.evaluator_for(model, 3, "de", mesh).execution.incremental
  images = np.concatenate([_image(s) for s in range(3)]).round()
  labels = np.asarray(jax.jit(model.predict)(images)).argmax(1)
  config = pixeljax.PixelAttackConfig(pixels=1, popsize=40, generations=5)
  fast = pixeljax.attack(model, images, labels, jax.random.PRNGKey(0), config)
  slow = pixeljax.attack(model.predict, images, labels, jax.random.PRNGKey(0), config)
  np.testing.assert_array_equal(fast.success, slow.success)
  np.testing.assert_allclose(fast.probs, slow.probs, atol=1e-5)


def test_more_convolutions_than_the_window_allows_stop_the_prefix():
  # Six 3x3 convolutions before the strided one: the window stops at half the image (8).
  model = models.from_jax(_net(extra_convs=3), input_shape=SHAPE)
  assert model.factored.window.size <= 8


def test_programs_that_do_not_split_get_the_full_net():
  late = models.from_jax(_net(reads_input_late=True), input_shape=SHAPE)
  assert late.factored is None
  config = pixeljax.PixelAttackConfig(pixels=1, popsize=8, generations=1)
  assert not pixeljax.evaluator_for(late, 1, "de", pixeljax.sharding.default_mesh()) \
      .execution.incremental
  rec = pixeljax.attack(late, _image(), np.array([0]), jax.random.PRNGKey(0), config)
  assert rec.queries[0] <= 16
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
