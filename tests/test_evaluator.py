"""The split at the first convolution (models.stem), windows (models.window), and the evaluator's
incremental and windowed candidate evaluation (``pixeljax.sparse.evaluator``)."""
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixeljax import models, workdir
from pixeljax.errors import UserError
from pixeljax.models import layers, stem, window
from pixeljax.models.registry import PixelClassifier
from pixeljax.sparse import formats, problem, runner
from pixeljax.sparse.evaluator import CPU_CALL_SIZE, CPU_WINDOW_CALL_SIZE, choose_execution, \
    evaluator_for
from pixeljax.sparse.problem import PixelAttackConfig
from pixeljax.sparse.runner import attack

# One ResNet-20 per module (its split and windows are built once per loaded object).
_load = functools.lru_cache(maxsize=None)(models.load)


def test_shipped_nets_factor_at_their_first_convolution(cifar_lenet):
  f = cifar_lenet.factored
  assert f is not None and f is cifar_lenet.factored      # built once, reused
  assert f.response.shape == (5, 5, 3, 6) and f.offset == (-4, -4)
  assert f.stem_shape == (28, 28, 6)                      # VALID 5x5 on 32x32
  r20 = _load("cifar10_resnet20_akamaster").factored
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
  clf = _load(net)
  images = jnp.asarray(cifar_samples.images[:3], jnp.float32)
  cands = _candidates(np.random.default_rng(k), 48, k)          # corners included
  ev = evaluator_for(clf, k, execution=dict(call_size=size, incremental=True, window=window))
  assert (ev.execution.incremental, ev.execution.window) == (True, window)
  g = ev.candidates
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
  images = jnp.asarray(cifar_samples.images[:2], jnp.float32)
  cands = jnp.stack([_candidates(np.random.default_rng(t), 20, 2) for t in range(3)])
  g = evaluator_for(cifar_lenet, 2, execution=dict(call_size=8, incremental=True)).candidates
  on = jnp.ones(20, bool)
  got = jax.jit(jax.vmap(jax.vmap(lambda im, c: g(im, c, on), (None, 0)), (0, None)))(
      images, cands)
  assert got.shape == (2, 3, 20, 10)
  for i in range(2):
    for t in range(3):
      want = cifar_lenet.predict(jax.vmap(problem.perturb, (None, 0))(images[i], cands[t]))
      np.testing.assert_allclose(np.asarray(got[i, t]), np.asarray(want), atol=2e-6)


def test_incremental_is_chosen_only_for_factored_models_on_cpu(cifar_lenet):
  cpu = jax.default_backend() == "cpu"
  assert choose_execution(cifar_lenet, 1).incremental == cpu
  assert choose_execution(cifar_lenet.factored, 1).incremental == cpu
  assert choose_execution(cifar_lenet.predict, 1).incremental is False     # a black box
  assert choose_execution(cifar_lenet, 1, incremental=False).incremental is False
  with pytest.raises(UserError, match="execution.incremental needs"):
    choose_execution(cifar_lenet.predict, 1, incremental=True)


def test_attack_on_the_split_net_finds_what_the_full_net_finds(cifar_lenet, cifar_samples):
  """Same searches (probabilities agree to ~1e-7, which decides nothing here); the records'
  probabilities come from the full net either way."""
  x, y = cifar_samples.images[:4], cifar_samples.labels[:4]
  cfg = PixelAttackConfig(pixels=1, popsize=40, generations=4)
  run = dict(call_size=40, segment=2)
  key = jax.random.PRNGKey(3)
  full = attack(cifar_lenet.predict, x, y, key, cfg, execution=run)       # a black box
  inc = attack(cifar_lenet, x, y, key, cfg, execution=dict(run, incremental=True))
  for field in ("success", "pixels", "queries", "success_query", "adversarial_class"):
    np.testing.assert_array_equal(getattr(inc, field), getattr(full, field), err_msg=field)
  np.testing.assert_array_equal(inc.probs, full.probs)        # the final check: the full net


def test_de_keeps_one_batch_shape_when_its_population_fills_model_calls(cifar_lenet):
  shape, k = (32, 32, 3), 10
  ev = lambda method: evaluator_for(cifar_lenet, 1, method, execution=dict(call_size=40,
                                                                           incremental=True))
  de = runner._Engine(ev("de"), shape, PixelAttackConfig(popsize=40), k)
  srs = runner._Engine(ev("sparse_rs"), shape, PixelAttackConfig(method="sparse_rs"), k)
  assert not de.compacts and srs.compacts


def test_claims_made_before_incremental_resume_only_with_it_off(tmp_path):
  """A chunk folder claimed by format 1 (``formats``) before incremental evaluation, windows
  or dealing existed lacks those switches: it was made with them off, so it resumes only with
  them off, and its chunk files keep the names they had."""
  old = {"attack": {"pixels": 1, "eval_batch": 400}}
  now = lambda **kw: {"format": formats.FORMAT, "attack": {"pixels": 1, **formats.ADDED_ATTACK},
                      "attack_keys": "id_x1000",
                      "execution": {"call_size": 400, "incremental": False, "window": False,
                                    "strided_window": False, "devices": 1, "segment": 10,
                                    **kw}}
  assert formats.migrate(old) == now()
  folder = tmp_path / "chunks"
  folder.mkdir()
  (folder / workdir.SETTINGS_FILE).write_text(json.dumps(old))
  assert workdir.claim(str(folder), now(), migrate=formats.migrate) is True       # a resume
  for kw, diff in [(dict(incremental=True), {"execution.incremental": (False, True)}),
                   (dict(devices=2), {"execution.devices": (1, 2)}),
                   (dict(incremental=True, window=True),
                    {"execution.incremental": (False, True), "execution.window": (False, True)})]:
    assert workdir.differences(formats.migrate(old), now(**kw)) == diff
    with pytest.raises(workdir.SettingsMismatch, match="execution.incremental|execution.devices"):
      workdir.claim(str(folder), now(**kw), migrate=formats.migrate)
  # An experiment's config.json left the switches unset (None: chosen at start); today's has
  # none, and an older one without them matches it.
  unset = {"attack": {"pixels": 1, "eval_batch": 400, "incremental": None,
                      "local_window": None, "eval_devices": None}}
  assert formats.migrate_config(unset) == formats.migrate_config(old) == {
      "attack": {"pixels": 1, **formats.ADDED_ATTACK}}
  # Chunks made before local_window existed keep their names when it is off.
  made = {"attack": {"pixels": 1, "eval_batch": 400, "incremental": True,
                     "local_window": False, "eval_devices": 1}}
  assert formats.chunk_basis(formats.migrate(made), made) == {
      "attack": {"pixels": 1, "eval_batch": 400, "incremental": True}}


# --- one-pixel candidates on windows (models.window) ----------------------------------------

def test_resnet20_has_a_local_prefix_and_the_lenet_none(cifar_lenet):
  f = _load("cifar10_resnet20_akamaster").factored
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


class _IntPadded(_Pooled):
  """``_Local`` with paddings written as Flax also reads them: an int, per-dimension ints
  (before, a TypeError out of the window's plan, i.e. out of ``choose_execution``)."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(layers.Conv(4, (3, 3), padding=1)(x))
    x = nn.relu(layers.Conv(4, (3, 3), padding=(1, 1), name="conv_b")(x) + x)
    x = nn.avg_pool(layers.Conv(4, (3, 3), padding=((1, 1), (1, 1)), name="last")(x), (2, 2),
                    (2, 2))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("backbone,end,local", [(_Local, "last", True), (_Pooled, "last", False),
                                                (_Local, "no_such_module", False),
                                                (_IntPadded, "last", True)])
def test_localize_checks_the_prefix_it_is_given(backbone, end, local):
  module = PixelClassifier(backbone(), layers.Normalize(mean=(100.,), std=(50.,)))
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  full = lambda x: module.apply(variables, x)
  got = window.localize(full, module, variables, (16, 16, 3), end)
  assert (got is not None) == local
  if local:
    assert (got.radius, got.size) == (2, 5)


def test_windows_are_chosen_for_one_pixel_incremental_attacks(cifar_lenet):
  cpu = jax.default_backend() == "cpu"
  r20 = _load("cifar10_resnet20_akamaster")
  assert choose_execution(r20, 1).window == cpu
  assert choose_execution(r20, 3).window is False
  assert choose_execution(cifar_lenet, 1).window is False          # no local prefix
  assert choose_execution(r20, 1, incremental=False).window is False
  # Its own model-call size on CPU (evaluator.CPU_WINDOW_CALL_SIZE); the others keep theirs.
  if cpu:
    assert choose_execution(r20, 1).call_size == CPU_WINDOW_CALL_SIZE == 50
    assert choose_execution(r20, 3).call_size == CPU_CALL_SIZE == 400
    assert choose_execution(r20, 1, call_size=400).call_size == 400
  for pixels, bad in ((3, {}), (1, dict(incremental=False))):
    with pytest.raises(UserError, match="execution.window needs"):
      choose_execution(r20, pixels, window=True, **bad)
  with pytest.raises(UserError, match="execution.window needs"):
    choose_execution(cifar_lenet, 1, window=True)


def test_nets_with_bigger_activations_get_smaller_model_calls_dealt_to_the_cores(cifar_lenet):
  """A CPU call holds at most ``CPU_CALL_FLOATS`` of the net's largest activation: the shipped
  LeNet and ResNets 400 candidates, the one-pixel paper's nets (32x32 maps of 96, 192, 64
  channels) 50, 50, 100 -- small enough to be dealt to the cores."""
  from pixeljax import sharding
  from pixeljax.models.registry import Classifier
  from pixeljax.sparse import evaluator
  assert evaluator._cpu_call_size(cifar_lenet) == CPU_CALL_SIZE
  assert evaluator._cpu_call_size(_load("cifar10_resnet20_akamaster")) == CPU_CALL_SIZE
  assert evaluator._cpu_call_size(lambda x: x) == CPU_CALL_SIZE        # a black box
  for name, size in [("cifar10_allcnn", 50), ("cifar10_nin", 50), ("cifar10_vgg16", 100)]:
    spec = models.get(name)     # the architecture decides: zero weights
    shapes = jax.eval_shape(lambda: spec.init(jax.random.PRNGKey(0), None))
    zeros = jax.tree_util.tree_map(lambda v: np.zeros(v.shape, v.dtype), shapes)
    clf = Classifier(spec, spec.module(None), zeros, {})
    assert evaluator._cpu_call_size(clf) == size, name
  if jax.default_backend() == "cpu":
    mesh = sharding.default_mesh()
    chosen = choose_execution(clf, 3, mesh=mesh)
    assert (chosen.call_size, chosen.devices) == (100, sharding.mesh_modes(mesh)["dealt"])
    assert choose_execution(clf, 3, mesh=mesh, call_size=400).devices == 1


def test_attack_on_windows_finds_what_the_split_net_finds(cifar_samples):
  clf = _load("cifar10_resnet20_akamaster")
  x, y = cifar_samples.images[:3], cifar_samples.labels[:3]
  cfg = PixelAttackConfig(pixels=1, popsize=40, generations=3, stop="first_success")
  run = dict(call_size=40, segment=3, incremental=True)
  key = jax.random.PRNGKey(0)
  stem_only = attack(clf, x, y, key, cfg, execution=dict(run, window=False))
  windows = attack(clf, x, y, key, cfg, execution=dict(run, window=True))
  for field in ("success", "pixels", "queries", "success_query", "adversarial_class"):
    np.testing.assert_array_equal(getattr(windows, field), getattr(stem_only, field),
                                  err_msg=field)
