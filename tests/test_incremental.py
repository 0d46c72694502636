"""The split at the first convolution (models.stem) and incremental candidate evaluation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixeljax import models, workdir
from pixeljax.errors import UserError
from pixeljax.models import layers, stem, window
from pixeljax.models.registry import PixelClassifier
from pixeljax.sparse import incremental, problem, runner
from pixeljax.sparse.problem import PixelAttackConfig
from pixeljax.sparse.runner import attack


def test_shipped_nets_factor_at_their_first_convolution(cifar_lenet):
  f = cifar_lenet.factored
  assert f is not None and f is cifar_lenet.factored      # built once, reused
  assert f.response.shape == (5, 5, 3, 6) and f.offset == (-4, -4)
  assert f.stem_shape == (28, 28, 6)                      # VALID 5x5 on 32x32
  r20 = models.load("cifar10_resnet20_akamaster").factored
  assert r20.response.shape == (3, 3, 3, 16) and r20.offset == (-1, -1)   # SAME 3x3
  # The response is the kernel over the input normalisation's std, flipped into place.
  kernel = np.asarray(cifar_lenet.variables["params"]["backbone"]["conv2d_1"]["kernel"])
  std = np.asarray(layers.KERAS_CIFAR["std"], np.float32)
  np.testing.assert_allclose(f.response, kernel[::-1, ::-1] / std[:, None], rtol=1e-6)
  x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(jax.jit(lambda v: f.head(f.stem(v)))(x)),
                             np.asarray(cifar_lenet.predict(x)), atol=1e-6)


class _Strided(nn.Module):
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(layers.Conv(4, (3, 3), strides=(2, 2))(x))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class _InputSkip(nn.Module):
  """Reads its input again after the first convolution: not a stem + head."""
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.relu(layers.Conv(4, (3, 3))(x))
    return nn.Dense(self.num_classes)(jnp.concatenate([h, x], -1).reshape(x.shape[0], -1))


class _PositionScaled(nn.Module):
  """Scales each pixel by its own constant before the conv: affine, not equivariant."""
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train=False):
    x = x * jnp.linspace(0.5, 1.5, x.shape[1] * x.shape[2]).reshape(1, x.shape[1], x.shape[2], 1)
    h = nn.relu(layers.Conv(4, (3, 3))(x))
    return nn.Dense(self.num_classes)(h.reshape(x.shape[0], -1))


@pytest.mark.parametrize("backbone", [_Strided, _InputSkip, _PositionScaled])
def test_nets_that_do_not_factor_are_refused(backbone):
  module = PixelClassifier(backbone(), layers.Normalize(mean=(100.,), std=(50.,)))
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  full = lambda x: module.apply(variables, x)
  assert stem.factor(full, module, variables, (8, 8, 3)) is None


def _candidates(rng, n, k, size=32):
  xy = rng.integers(0, size, (n, k, 2)).astype(np.float32) + 0.5
  xy[:10] = 0.2                                   # every pixel at (0, 0): later ones win
  xy[10:20] = size - 0.1                          # the far corner
  if k > 1:
    xy[20:30, -1] = xy[20:30, 0]                  # first and last pixel collide
  col = rng.uniform(0, 255, (n, k, 3)).astype(np.float32)
  return jnp.asarray(np.concatenate([xy, col], -1).reshape(n, 5 * k))


_LENET, _R20 = "cifar10_lenet_hyperparticle", "cifar10_resnet20_akamaster"   # VALID 5x5, SAME 3x3


@pytest.mark.parametrize("net,k,window", [(_LENET, 1, False), (_LENET, 3, False),
                                          (_R20, 1, False), (_R20, 3, False),
                                          (_R20, 1, True)])     # on windows (models.window)
@pytest.mark.parametrize("size", [0, 16])
def test_incremental_probabilities_match_the_full_net(cifar_samples, net, k, window, size):
  clf = models.load(net)
  f = clf.factored
  images = jnp.asarray(cifar_samples.images[:3], jnp.float32)
  cands = _candidates(np.random.default_rng(k), 48, k)          # corners included
  g = incremental.candidate_probs(f, size, window)
  # vmapped over attacks, as the runner calls it; rows 16..31 (one whole slice) inactive
  active = (jnp.arange(48) < 16) | (jnp.arange(48) >= 32)
  got = np.asarray(jax.jit(jax.vmap(lambda im, c: g(im, c, active), (0, None)))(images, cands))
  want = np.asarray(jax.vmap(lambda im: clf.predict(jax.vmap(problem.perturb, (None, 0))(
      im, cands)))(images))
  keep = np.asarray(active) if size else np.ones(48, bool)
  np.testing.assert_allclose(got[:, keep], want[:, keep], atol=2e-6)
  if size:   # a slice with no active row is skipped
    assert not got[:, ~keep].any()


def test_nested_vmaps_keep_each_row_with_its_own_image(cifar_lenet, cifar_samples):
  """Images x targets, as a targeted campaign's rows: the flattening rule's owner indices."""
  f = cifar_lenet.factored
  images = jnp.asarray(cifar_samples.images[:2], jnp.float32)
  cands = jnp.stack([_candidates(np.random.default_rng(t), 20, 2) for t in range(3)])
  g = incremental.candidate_probs(f, 8)
  on = jnp.ones(20, bool)
  got = jax.jit(jax.vmap(jax.vmap(lambda im, c: g(im, c, on), (None, 0)), (0, None)))(
      images, cands)
  assert got.shape == (2, 3, 20, 10)
  for i in range(2):
    for t in range(3):
      want = cifar_lenet.predict(jax.vmap(problem.perturb, (None, 0))(images[i], cands[t]))
      np.testing.assert_allclose(np.asarray(got[i, t]), np.asarray(want), atol=2e-6)


def test_config_resolves_incremental_only_for_factored_models_on_cpu():
  cpu = jax.default_backend() == "cpu"
  assert PixelAttackConfig().resolved(factored=True).incremental == cpu
  assert PixelAttackConfig().resolved(factored=False).incremental is False
  assert PixelAttackConfig(incremental=False).resolved(factored=True).incremental is False
  with pytest.raises(UserError, match="not factored"):
    PixelAttackConfig(incremental=True).resolved(factored=False)


def test_attack_on_the_split_net_finds_what_the_full_net_finds(cifar_lenet, cifar_samples):
  """Same searches (probabilities agree to ~1e-7, which decides nothing here); the records'
  probabilities come from the full net either way."""
  x, y = cifar_samples.images[:4], cifar_samples.labels[:4]
  cfg = dict(pixels=1, popsize=40, generations=4, segment_iterations=2, eval_batch=40)
  key = jax.random.PRNGKey(3)
  full = attack(cifar_lenet.predict, x, y, key, PixelAttackConfig(**cfg))
  inc = attack(cifar_lenet.factored, x, y, key, PixelAttackConfig(**cfg, incremental=True))
  for field in ("success", "pixels", "queries", "success_query", "adversarial_class"):
    np.testing.assert_array_equal(getattr(inc, field), getattr(full, field), err_msg=field)
  np.testing.assert_array_equal(inc.probs, full.probs)        # the final check: the full net


def test_de_keeps_one_batch_shape_when_its_population_fills_model_calls(cifar_lenet):
  f = cifar_lenet.factored
  shape, k = (32, 32, 3), 10
  de = runner._Engine(f, shape, PixelAttackConfig(popsize=40, eval_batch=40).resolved(
      factored=True), k)
  srs = runner._Engine(f, shape, PixelAttackConfig(method="sparse_rs", eval_batch=40).resolved(
      factored=True), k)
  assert not de.compacts and srs.compacts


def test_claims_made_before_incremental_resume_only_with_it_off():
  old = {"attack": {"pixels": 1, "eval_batch": 400}}
  now = lambda **kw: {"attack": {"pixels": 1, "eval_batch": 400, "incremental": False,
                                 "local_window": False, "eval_devices": 1, **kw}}
  assert not workdir.differences(old, now())
  assert workdir.differences(old, now(incremental=True)) == {
      "attack.incremental": (False, True)}
  # A run's config leaves them unset (None: resolved at start), which an older claim
  # matches; the resolved values are what each chunk folder's claim compares (as above).
  assert not workdir.differences(old, now(incremental=None, local_window=None,
                                          eval_devices=None))
  assert workdir.differences(old, now(eval_devices=2)) == {"attack.eval_devices": (1, 2)}
  assert workdir.differences(old, now(incremental=True, local_window=True)) == {
      "attack.incremental": (False, True), "attack.local_window": (False, True)}
  # Chunks made before local_window existed keep their names when it is off.
  assert workdir.without_legacy(now(incremental=True)) == {
      "attack": {"pixels": 1, "eval_batch": 400, "incremental": True}}


# --- one-pixel candidates on windows (models.window) ----------------------------------------

def test_resnet20_has_a_local_prefix_and_the_lenet_none(cifar_lenet):
  f = models.load("cifar10_resnet20_akamaster").factored
  # The stem and the first stage: 7 stride-1 3x3 convolutions, a 15x15 window.
  assert f.window is not None and (f.window.radius, f.window.size) == (7, 15)
  assert cifar_lenet.factored.window is None       # no window_end: pooling after one conv
  origin = np.asarray(f.window.origin(jnp.array([0, 16, 31]), jnp.array([31, 3, 8]),
                                      (32, 32, 3)))
  np.testing.assert_array_equal(origin, [[0, 17], [9, 0], [17, 1]])   # clamped inside


class _Pooled(nn.Module):
  """A pooling layer inside the named prefix: not local."""
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(layers.Conv(4, (3, 3))(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(layers.Conv(4, (3, 3), name="conv_b")(x))
    x = layers.Conv(4, (3, 3), name="last")(x)
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class _Local(_Pooled):
  """Two 'same' convolutions, then the pooling: local up to ``last``... if it came first."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(layers.Conv(4, (3, 3))(x))
    x = nn.relu(layers.Conv(4, (3, 3), name="conv_b")(x) + x)
    x = nn.avg_pool(layers.Conv(4, (3, 3), name="last")(x), (2, 2), (2, 2))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("backbone,end,local", [(_Local, "last", True), (_Pooled, "last", False),
                                                (_Local, "no_such_module", False)])
def test_localize_checks_the_prefix_it_is_given(backbone, end, local):
  module = PixelClassifier(backbone(), layers.Normalize(mean=(100.,), std=(50.,)))
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  full = lambda x: module.apply(variables, x)
  got = window.localize(full, module, variables, (16, 16, 3), end)
  assert (got is not None) == local
  if local:
    assert (got.radius, got.size) == (2, 5)


def test_config_resolves_local_window_for_one_pixel_incremental_attacks():
  cpu = jax.default_backend() == "cpu"
  on = dict(factored=True, windowed=True)
  assert PixelAttackConfig(pixels=1).resolved(**on).local_window == cpu
  assert PixelAttackConfig(pixels=3).resolved(**on).local_window is False
  assert PixelAttackConfig(pixels=1).resolved(factored=True).local_window is False
  assert PixelAttackConfig(incremental=False).resolved(**on).local_window is False
  # Its own model-call size on CPU (evaluate.CPU_WINDOW_EVAL_BATCH); the others keep theirs.
  if cpu:
    assert PixelAttackConfig(pixels=1).resolved(**on).eval_batch == 50
    assert PixelAttackConfig(pixels=3).resolved(**on).eval_batch == 400
    assert PixelAttackConfig(pixels=1, eval_batch=400).resolved(**on).eval_batch == 400
  for bad in (dict(pixels=3), dict(incremental=False)):
    with pytest.raises(UserError, match="local_window=True needs"):
      PixelAttackConfig(local_window=True, **bad).resolved(**on)


def test_attack_on_windows_finds_what_the_split_net_finds(cifar_samples):
  clf = models.load("cifar10_resnet20_akamaster")
  x, y = cifar_samples.images[:3], cifar_samples.labels[:3]
  cfg = dict(pixels=1, popsize=40, generations=3, segment_iterations=3, eval_batch=40,
             incremental=True, stop="first_success")
  key = jax.random.PRNGKey(0)
  stem_only = attack(clf.factored, x, y, key, PixelAttackConfig(**cfg, local_window=False))
  windows = attack(clf.factored, x, y, key, PixelAttackConfig(**cfg))
  for field in ("success", "pixels", "queries", "success_query", "adversarial_class"):
    np.testing.assert_array_equal(getattr(windows, field), getattr(stem_only, field),
                                  err_msg=field)
