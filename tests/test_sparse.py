import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixeljax.errors import UserError
from pixeljax.metrics import one_pixel as metrics
from pixeljax.sparse import exhaustive, problem, runner
from pixeljax.sparse.evaluator import CPU_CALL_SIZE, choose_execution, evaluator_for
from pixeljax.sparse.problem import PixelAttackConfig
from pixeljax.sparse.runner import attack

SMALL = dict(popsize=24, generations=4)
SEGMENT = dict(segment=2)       # the runner compacts every 2 steps (Execution.segment)


def test_perturb_writes_exactly_k_pixels():
  img = jnp.zeros((5, 6, 3))
  cand = jnp.array([2.7, 4.1, 10., 20., 30., 0.2, 0.9, 255., 255., 255.])
  out = np.asarray(problem.perturb(img, cand))
  np.testing.assert_array_equal(out[4, 2], [10, 20, 30])
  np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
  assert np.count_nonzero(out.sum(-1)) == 2


def test_perturb_lets_the_last_of_pixels_at_one_place_win():
  img = jnp.zeros((5, 6, 3))
  cand = jnp.array([1.2, 2.5, 10., 20., 30.,    # (x=1, y=2)
                    4.0, 0.0, 1., 2., 3.,       # elsewhere
                    1.9, 2.1, 40., 50., 60.])   # (x=1, y=2) again: wins
  out = np.asarray(problem.perturb(img, cand))
  np.testing.assert_array_equal(out[2, 1], [40, 50, 60])
  np.testing.assert_array_equal(out[0, 4], [1, 2, 3])
  assert np.count_nonzero(out.sum(-1)) == 2


def test_decode_clips_and_rounds():
  x, y, col = problem.decode(jnp.array([6.0, -1.0, 12.4]), (5, 6, 1))
  assert int(x[0]) == 5 and int(y[0]) == 0 and float(col[0, 0]) == 12.0


def test_initial_population_follows_the_paper():
  pop = np.asarray(problem.initial_population(jax.random.PRNGKey(0), (32, 32, 3), 2,
                                                   4000)).reshape(4000, 2, 5)
  assert pop.shape == (4000, 2, 5)
  assert pop[..., :2].min() >= 0 and pop[..., :2].max() < 32
  assert abs(pop[..., 0].mean() - 16) < 0.5
  col = pop[..., 2:]
  assert col.min() >= 0 and col.max() <= 255
  assert abs(np.median(col) - 128) < 5   # N(128, 127) clipped


def test_latin_hypercube_has_one_member_in_each_stratum_of_each_dimension():
  lower, upper = problem.bounds((32, 32, 3), 2)
  pop = np.asarray(problem.latin_hypercube(jax.random.PRNGKey(0), lower, upper, 400))
  assert pop.shape == (400, 10)
  strata = np.floor((pop - np.asarray(lower)) / np.asarray(upper - lower) * 400).astype(int)
  for d in range(10):
    np.testing.assert_array_equal(np.sort(strata[:, d]), np.arange(400))
  assert not np.array_equal(strata[:, 0], strata[:, 1])    # shuffled per dimension


def test_success_first_ranks_fooling_candidates_first():
  # Fake model: candidate i's probabilities are row i of `table` (chosen by its x coordinate).
  table = jnp.array([[0.40, 0.35, 0.25],    # p_true lowest, still classified as 0
                     [0.45, 0.50, 0.05],    # higher p_true, but fooled (top-1 = 1)
                     [0.02, 0.90, 0.08]])   # fooled and below the 5% stop threshold
  predict = lambda imgs: table[jnp.argmax(imgs[:, 0, :, 0], axis=-1)]
  pop = jnp.array([[0., 0., 1.], [1., 0., 1.], [2., 0., 1.]])
  image = jnp.zeros((1, 3, 1))
  probs = predict(jax.vmap(problem.perturb, (None, 0))(image, pop))
  ev = lambda target, **kw: problem.score(probs, 0, target, PixelAttackConfig(
      targeted=target >= 0, **kw))
  paper, first = ev(-1), ev(-1, success_first=True)
  np.testing.assert_allclose(paper.loss, [0.40, 0.45, 0.02])
  np.testing.assert_allclose(first.loss, [0.40, -0.55, -0.98])
  assert float(first.loss[1]) < float(first.loss[0])     # the fooling candidate now wins
  np.testing.assert_array_equal(first.fooled, [False, True, True])
  targeted = ev(1, success_first=True)
  np.testing.assert_allclose(targeted.loss, [0.65, -0.50, -0.90])
  # The paper's early stop is unchanged: p_true < 5% (or p_target > 50%) stops either way.
  for e in (paper, first, targeted):
    np.testing.assert_array_equal(e.reached, [False, False, True])
  # The margin loss is the log-probability (logit) margin.
  margin = ev(-1, loss="margin").loss
  np.testing.assert_allclose(margin, np.log([0.40 / 0.35, 0.45 / 0.50, 0.02 / 0.90]),
                             rtol=1e-5)
  np.testing.assert_allclose(ev(1, loss="margin").loss,
                             np.log([0.40 / 0.35, 0.45 / 0.50, 0.08 / 0.90]), rtol=1e-5)
  with pytest.raises(UserError, match="unknown loss"):
    PixelAttackConfig(loss="hinge")
  # ce is unbounded: ce - 1 would rank a fooling candidate with p_true = 0.40 (log 0.40 - 1 =
  # -1.92) behind a correctly classified one with p_true = 0.12 (-2.12), so it is refused.
  with pytest.raises(UserError, match="success_first needs the probability or margin loss"):
    PixelAttackConfig(method="sparse_rs", loss="ce", success_first=True)
  with pytest.raises(UserError, match="unknown method"):
    PixelAttackConfig(method="pgd")


def _correct(clf, ds, n):
  probs = np.asarray(clf(ds.images[:64]))
  return np.nonzero(probs.argmax(-1) == ds.labels[:64])[0][:n]


def test_untargeted_attack_records_are_consistent(cifar_lenet, cifar_samples):
  idx = _correct(cifar_lenet, cifar_samples, 6)
  cfg = PixelAttackConfig(pixels=1, **SMALL)
  rec = attack(cifar_lenet.predict, cifar_samples.images[idx], cifar_samples.labels[idx],
               jax.random.PRNGKey(0), cfg, image_ids=idx, execution=SEGMENT)
  assert rec.pixels.shape == (6, 1, 5) and rec.probs.shape == (6, 10)
  np.testing.assert_array_equal(rec.success, rec.adversarial_class != rec.true_class)
  assert np.all(rec.queries == 24 * (rec.iterations + 1))
  # The recorded pixels, written into the image, reproduce the recorded probabilities.
  imgs = cifar_samples.images[idx].astype(np.float32)
  for i, (x, y, *c) in enumerate(rec.pixels[:, 0]):
    imgs[i, int(y), int(x)] = c
  np.testing.assert_allclose(np.asarray(cifar_lenet(imgs)), rec.probs, atol=1e-5)
  # DE only ever lowers the true-class probability below the clean image's.
  t = rec.true_class
  assert np.all(rec.probs[np.arange(6), t] <= rec.prior_probs[np.arange(6), t] + 1e-6)


def test_same_seed_same_result_and_batch_independence(cifar_lenet, cifar_samples):
  idx = _correct(cifar_lenet, cifar_samples, 4)
  cfg = PixelAttackConfig(pixels=3, strategy="best1bin", **SMALL)
  run = lambda sel, key: attack(cifar_lenet.predict, cifar_samples.images[sel],
                                cifar_samples.labels[sel], key, cfg, image_ids=sel,
                                execution=SEGMENT)
  a = run(idx, jax.random.PRNGKey(7))
  b = run(idx, jax.random.PRNGKey(7))
  chex.assert_trees_all_equal(a, b)
  single = run(idx[2:3], jax.random.PRNGKey(7))   # same image alone in its batch
  np.testing.assert_array_equal(single.pixels[0], a.pixels[2])
  c = run(idx, jax.random.PRNGKey(8))
  assert not np.array_equal(a.pixels, c.pixels)


def test_a_black_box_sees_fixed_calls_and_returns_the_same_rows():
  """``Evaluator.candidates`` of a bare function (full net): however the attacks are vmapped,
  their candidates are flattened into model calls of ``call_size``, inactive calls skipped."""
  seen, ran = [], []     # batch sizes traced (jax may reuse a trace) and executed
  w = jax.random.normal(jax.random.PRNGKey(0), (12, 5))

  def predict(x):
    seen.append(x.shape[0])                                     # at trace time
    jax.debug.callback(lambda n: ran.append(int(n)), x.shape[0] + 0 * x[0, 0, 0, 0])
    # float32 on every backend (a GPU's TF32 would round each batch size otherwise)
    return jax.nn.softmax(jnp.dot(x.reshape(x.shape[0], -1) / 255., w, precision="highest"))

  images = jax.random.uniform(jax.random.PRNGKey(1), (3, 2, 2, 3), maxval=255.)   # 3 attacks
  cands = jax.random.uniform(jax.random.PRNGKey(2), (3, 7, 5), maxval=2.)   # x 7 candidates
  cands = cands.at[..., 2:].multiply(127.)
  per_attack = lambda im, c: predict(jax.vmap(problem.perturb, (None, 0))(im, c))
  want = np.asarray(jax.vmap(per_attack)(images, cands))
  ev = evaluator_for(predict, 1, execution=dict(call_size=4))
  assert not ev.execution.incremental and ev.mesh is None
  f = ev.candidates
  on = jnp.ones((3, 7), bool)
  for name, fn, args in [("vmap", jax.vmap(f), (images, cands, on)),
                         ("nested vmap", jax.vmap(jax.vmap(f)),
                          (images[None], cands[None], on[None])),
                         ("unbatched mask", jax.vmap(f, (0, 0, None)), (images, cands, on[0]))]:
    seen.clear(), ran.clear()
    got = np.asarray(jax.jit(fn)(*args)).reshape(want.shape)
    assert set(seen) <= {4} and ran == [4] * 6, (name, seen, ran)   # 21 rows: 6 calls of 4
    np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=name)
  # No vmap: one attack's 21 candidates.
  one = cands.reshape(21, 5)
  want_one = np.asarray(per_attack(images[0], one))
  seen.clear(), ran.clear()
  np.testing.assert_allclose(jax.jit(f)(images[0], one, on.reshape(21)), want_one, rtol=1e-6)
  assert set(seen) <= {4} and ran == [4] * 6, (seen, ran)
  seen.clear()
  np.testing.assert_allclose(f(images[0], cands[0, :3], on[0, :3]), want[0, :3],
                             rtol=1e-6)   # < 4: one call
  assert seen == [3]
  # Rows 8..15 inactive: the slices of rows 8-11 and 12-15 are skipped (zeros), the rest kept.
  active = (jnp.arange(21) < 8) | (jnp.arange(21) >= 16)
  ran.clear()
  got = np.asarray(jax.jit(f)(images[0], one, active))
  assert ran == [4] * 4
  np.testing.assert_allclose(got[active], want_one[active], rtol=1e-6)
  assert not got[8:16].any()


class _Device:
  def __init__(self, platform):
    self.platform, self.process_index = platform, jax.process_index()


class _Mesh:
  """What ``sharding.mesh_modes`` reads of a mesh, for meshes this process lacks the devices
  for: ``n`` accelerators the attacks are sharded over, or one host's ``n`` CPU devices."""

  def __init__(self, n, platform):
    self.size, self.devices = n, np.array([_Device(platform) for _ in range(n)], object)


def test_call_size_is_chosen_per_backend_and_makes_attacks_independent_of_their_batch(
    cifar_lenet, cifar_samples):
  black_box = cifar_lenet.predict
  cpu = jax.default_backend() == "cpu"
  assert choose_execution(black_box, 1).call_size == (CPU_CALL_SIZE if cpu else 0)
  assert choose_execution(black_box, 1, call_size=0).call_size == 0
  sharded = _Mesh(4, "tpu")                                        # attacks over 4 devices
  assert choose_execution(black_box, 1, mesh=sharded).call_size == 0   # off on a mesh
  assert choose_execution(black_box, 1, mesh=sharded, call_size=64).call_size == 64
  with pytest.raises(UserError, match="execution: call_size must be >= 0"):
    choose_execution(black_box, 1, call_size=-1)
  # Model calls dealt to a host's CPU devices: by default only small ones.
  dealt = _Mesh(2, "cpu")
  assert choose_execution(black_box, 1).devices == 1
  assert choose_execution(black_box, 1, mesh=dealt, call_size=400).devices == 1
  assert choose_execution(black_box, 1, mesh=dealt, call_size=50).devices == 2
  assert choose_execution(black_box, 1, mesh=dealt, call_size=0).devices == 1
  assert choose_execution(black_box, 1, mesh=dealt, call_size=400, devices=2).devices == 2
  assert choose_execution(black_box, 1, mesh=sharded, call_size=50).devices == 1
  with pytest.raises(UserError, match="execution.devices=3, but this run has 2 CPU device"):
    choose_execution(black_box, 1, mesh=dealt, devices=3)
  with pytest.raises(UserError, match="execution: devices must be >= 1"):
    choose_execution(black_box, 1, devices=0)
  # One model call per attack's population, whether 1 or 5 attacks share an XLA call: the
  # records are bit for bit the same.
  idx = _correct(cifar_lenet, cifar_samples, 5)
  cfg = PixelAttackConfig(pixels=1, **SMALL)
  run = lambda per_call: attack(black_box, cifar_samples.images[idx],
                                cifar_samples.labels[idx], jax.random.PRNGKey(3), cfg,
                                image_ids=idx, attacks_per_call=per_call,
                                execution=dict(SEGMENT, call_size=SMALL["popsize"]))
  chex.assert_trees_all_equal(run(1), run(None))


def test_targeted_attack_for_all_targets(cifar_lenet, cifar_samples):
  idx = _correct(cifar_lenet, cifar_samples, 2)
  rows, targets = runner.targets_for_all(cifar_samples.labels[idx], 10)
  assert len(rows) == 18 and not np.any(targets == cifar_samples.labels[idx][rows])
  cfg = PixelAttackConfig(pixels=1, targeted=True, **SMALL)
  rec = attack(cifar_lenet.predict, cifar_samples.images[idx][rows],
               cifar_samples.labels[idx][rows], jax.random.PRNGKey(0), cfg, targets=targets,
               image_ids=idx[rows], execution=SEGMENT)
  np.testing.assert_array_equal(rec.success, rec.adversarial_class == rec.target_class)
  m = metrics.summary(rec, 10)
  assert len(m["target_classes_per_image"]) == 10
  assert sum(m["target_classes_per_image"]) == pytest.approx(1.0)


def test_bad_input_is_named(cifar_lenet, cifar_samples):
  imgs, labels = cifar_samples.images[:2], cifar_samples.labels[:2]
  key = jax.random.PRNGKey(0)
  with pytest.raises(UserError, match="pixels must be >= 1"):
    PixelAttackConfig(pixels=0)
  with pytest.raises(UserError, match="exceeds the 1024 pixels"):
    attack(cifar_lenet.predict, imgs, labels, key, PixelAttackConfig(pixels=1025, **SMALL))
  uniform_1001 = lambda x: jnp.full((x.shape[0], 1001), 1 / 1001, jnp.float32)
  with pytest.raises(UserError, match="at most 1000 classes"):     # the former key derivation
    attack(uniform_1001, imgs, labels, key, PixelAttackConfig(**SMALL), attack_keys="id_x1000")
  with pytest.raises(UserError, match="unknown attack_keys"):
    attack(cifar_lenet.predict, imgs, labels, key, PixelAttackConfig(**SMALL),
           attack_keys="id_x2000")
  with pytest.raises(UserError, match="label out of range"):
    attack(cifar_lenet.predict, imgs, np.array([3, 10]), key, PixelAttackConfig(**SMALL))
  with pytest.raises(UserError, match=r"expects images of shape \(N, H, W, C\)"):
    attack(cifar_lenet.predict, imgs[0], labels, key, PixelAttackConfig(**SMALL))
  with pytest.raises(UserError, match="differ from the true label"):
    attack(cifar_lenet.predict, imgs, labels, key, PixelAttackConfig(targeted=True, **SMALL),
           targets=labels)
  with pytest.raises(UserError, match="strategy"):
    PixelAttackConfig(strategy="nope")
  nan_model = lambda x: jnp.full((x.shape[0], 10), jnp.nan)
  with pytest.raises(UserError, match="NaN"):          # on the clean images, before compiling
    attack(nan_model, imgs, labels, key, PixelAttackConfig(**SMALL))
  # Finite on the clean images, NaN on every changed one: the attack refuses its NaNs.
  grey = np.full((2, 4, 4, 3), 128., np.float32)
  nan_on_change = lambda x: jnp.where(jnp.all(x == 128., axis=(1, 2, 3))[:, None],
                                      jnp.full((x.shape[0], 10), 0.1), jnp.nan)
  with pytest.raises(FloatingPointError, match="NaN"):
    attack(nan_on_change, grey, labels, key, PixelAttackConfig(**SMALL))


def test_exhaustive_baseline_matches_brute_force(cifar_lenet, cifar_samples):
  img, label = cifar_samples.images[3:4].astype(np.float32), cifar_samples.labels[3:4]
  colours = np.array([[0., 0., 0.], [255., 255., 255.]])
  out = exhaustive.exhaustive_one_pixel(cifar_lenet.predict, img, label, colours,
                                       candidates_per_call=300)
  # brute force in numpy-land
  cands = []
  for y in range(32):
    for x in range(32):
      for c in colours:
        im = img[0].copy()
        im[y, x] = c
        cands.append(im)
  probs = np.asarray(cifar_lenet(np.stack(cands)))
  fooled = probs.argmax(-1) != label[0]
  assert out["num_fooling_changes"][0] == fooled.sum()
  assert bool(out["fooled"][0]) == bool(fooled.any())
  np.testing.assert_allclose(out["lowest_true_prob"][0], probs[:, label[0]].min(), atol=1e-6)
  assert out["queries"][0] == 2048


def test_one_and_four_devices_give_identical_results(tmp_path):
  """A mesh of 4 (forced host) CPU devices changes nothing: with model calls of 400 the
  attacks run on one device, with calls of 8 those are dealt to the 4 devices (2 per
  population; 3 of the 12 per step on each), and so are ResNet-20's one-pixel candidates on
  windows (calls of 50: 4 per step, one on each device). XLA:CPU's rounding
  may differ by ~1 ulp between programs over 1 and 4 devices, so probabilities agree to 1e-6;
  the searches are the same. And ``evaluate.in_fixed_batches`` dealt to the devices (inside
  ``Evaluator.program``: ``Evaluator.images``) gives what it gives on one, skipped (inactive)
  calls included."""
  script = textwrap.dedent("""
      import os, sys, numpy as np, jax, jax.numpy as jnp
      from pixeljax import data, evaluate, models, sharding
      from pixeljax.sparse import PixelAttackConfig, attack, evaluator_for
      clf = models.load("cifar10_lenet_hyperparticle")
      ds = data.load("cifar10_samples")
      idx = np.array([0, 1, 3, 4, 5, 6])
      mesh = sharding.attack_mesh() if jax.device_count() > 1 else None
      out = dict(devices=jax.device_count())
      cfg = PixelAttackConfig(pixels=1, popsize=16, generations=3)
      for name, size in (("big", None), ("small", 8)):
        execution = dict(call_size=size)
        rec = attack(clf.predict, ds.images[idx], ds.labels[idx], jax.random.PRNGKey(0), cfg,
                     image_ids=idx, mesh=mesh, execution=execution)
        out.update({f"{name}_{k}": getattr(rec, k) for k in ("pixels", "probs", "queries")})
        ev = evaluator_for(clf.predict, 1, "de", mesh, execution)
        out[f"{name}_devices"] = ev.execution.devices
        out[f"{name}_call_size"] = ev.execution.call_size
      # One-pixel candidates of ResNet-20 on windows: calls of 50 (its default), dealt.
      net = models.load("cifar10_resnet20_akamaster")
      cfg = PixelAttackConfig(pixels=1, popsize=100, generations=2)
      rec = attack(net, ds.images[idx[:2]], ds.labels[idx[:2]], jax.random.PRNGKey(0), cfg,
                   image_ids=idx[:2], mesh=mesh)
      out.update({f"window_{k}": getattr(rec, k) for k in ("pixels", "probs", "queries")})
      ex = evaluator_for(net, 1, "de", mesh).execution
      assert ex.window and ex.call_size == 50, ex
      out["window_devices"] = ex.devices
      x = jax.random.normal(jax.random.PRNGKey(1), (21, 3))
      active = jnp.arange(21) % 9 < 4          # calls of 3: the 2nd, 5th ... have none
      f = lambda v: jnp.tanh(v) * 2.0 + v.sum()
      one = evaluate.in_fixed_batches(f, x, 3, active)
      if mesh is not None:
        run = sharding.on_every_device(
            lambda x, a: evaluate.in_fixed_batches(f, x, 3, a, mesh=mesh), mesh)
        np.testing.assert_array_equal(run(x, active), one)
        ev = evaluator_for(f, 1, "de", mesh, dict(call_size=3))
        assert ev.execution.devices == 4 and ev.mesh.size == 4, ev
        np.testing.assert_array_equal(ev.program(ev.images)(x),
                                      evaluate.in_fixed_batches(f, x, 3))
      np.savez(sys.argv[1], **out)
  """)
  outs = []
  for n in (1, 4):
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
    env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu",
               PIXELJAX_CPU_DEVICES=str(n))
    path = str(tmp_path / f"d{n}.npz")
    subprocess.run([sys.executable, "-c", script, path], check=True, env=env)
    outs.append(np.load(path))
  assert int(outs[1]["devices"]) == 4
  assert [int(o["small_devices"]) for o in outs] == [1, 4]
  assert [int(o["big_devices"]) for o in outs] == [1, 1]
  assert [int(o["big_call_size"]) for o in outs] == [400, 400]
  assert [int(o["window_devices"]) for o in outs] == [1, 4]
  for name in ("big", "small", "window"):
    np.testing.assert_array_equal(outs[0][f"{name}_pixels"], outs[1][f"{name}_pixels"])
    np.testing.assert_array_equal(outs[0][f"{name}_queries"], outs[1][f"{name}_queries"])
    np.testing.assert_allclose(outs[0][f"{name}_probs"], outs[1][f"{name}_probs"], atol=1e-6)


def test_each_attack_has_its_own_key_with_a_thousand_classes_and_large_ids():
  """``per_attack`` keys fold in the image id (both 32-bit words), then target + 1: image i's
  target 999 and image i + 1's untargeted attack (which ``id_x1000`` gave one key) differ, as
  do ids 2**32 apart; ``id_x1000`` stays ``fold_in(key, id * 1000 + target + 1)`` for the
  runs stored with it."""
  key = jax.random.PRNGKey(5)
  ids = np.repeat(np.arange(4, dtype=np.int64), 1001)
  targets = np.tile(np.arange(-1, 1000), 4)                 # untargeted and 1,000 targets
  ids = np.concatenate([ids, ids[:1001] + 2 ** 32, [2 ** 40 + 3, 2 ** 63 - 1]])
  targets = np.concatenate([targets, targets[:1001], [999, 999]])
  keys = runner.attack_keys_of(key, ids, targets)
  assert keys.shape == (len(ids), 2)
  assert len(np.unique(keys, axis=0)) == len(ids)           # every attack its own key
  pair = runner.attack_keys_of(key, [0, 1], [999, -1])
  assert not np.array_equal(pair[0], pair[1])
  old = runner.attack_keys_of(key, [0, 1], [999, -1], "id_x1000")
  np.testing.assert_array_equal(old[0], old[1])             # the collision it fixes
  np.testing.assert_array_equal(
      old[0], jax.random.key_data(jax.random.fold_in(key, 1000)))
  # Fold-ins of the words: reproducible by hand, and independent of the batch.
  want = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, 1), 5), 1000)
  np.testing.assert_array_equal(runner.attack_keys_of(key, [2 ** 32 + 5], [999])[0],
                                jax.random.key_data(want))
  np.testing.assert_array_equal(runner.attack_keys_of(key, ids[-2:], targets[-2:]), keys[-2:])
  # Derived on the host, the bits of JAX's own fold_in for every row, raw and typed keys.
  for k in (key, jax.random.key(5)):
    jaxs = jax.vmap(lambda h, l, t: jax.random.fold_in(jax.random.fold_in(
        jax.random.fold_in(k, h), l), t))(*(jnp.asarray(v.astype(np.uint32)) for v in
                                            (ids >> 32, ids & 0xFFFFFFFF, targets + 1)))
    np.testing.assert_array_equal(runner.attack_keys_of(k, ids, targets),
                                  jax.random.key_data(jaxs))
  # The runner attacks 1,000-class rows with ids past 2**32 (a black box on 4x4 images): ids
  # 2**32 apart draw other searches, and the records keep the ids.
  w = jax.random.normal(jax.random.PRNGKey(0), (48, 1000)) / 100.
  predict = lambda x: jax.nn.softmax(jnp.dot(x.reshape(x.shape[0], -1), w,
                                             precision="highest"))
  images = np.full((2, 4, 4, 3), 128., np.float32)
  ids = np.array([3, 2 ** 32 + 3])
  rec = attack(predict, images, [0, 0], key, PixelAttackConfig(
      targeted=True, popsize=8, generations=1), targets=[999, 999], image_ids=ids)
  np.testing.assert_array_equal(rec.image_id, ids)
  assert rec.probs.shape == (2, 1000)
  assert not np.array_equal(rec.pixels[0], rec.pixels[1])


def test_colour_grid():
  np.testing.assert_array_equal(exhaustive.colour_grid([0, 128, 255])[13], [128, 128, 128])
  assert len(exhaustive.colour_grid([0, 128, 255], 1)) == 3
  with pytest.raises(UserError, match="colour levels"):
    exhaustive.colour_grid([0, 300])


@pytest.mark.parametrize("cap,devices", [(100, 1), (100, 4), (1024, 1), (7, 1), (3, 2)])
def test_batches_cover_every_row_in_few_shapes_with_little_padding(cap, devices):
  sizes = runner._sizes(cap, devices)
  assert len(sizes) <= 2 + int(np.log(max(cap, 1)) / np.log(4))   # a handful of programs
  assert all(s % devices == 0 for s in sizes)
  for n in range(1, 3 * cap + 2):
    rows = np.arange(n) + 7
    calls = list(runner._padded_batches(rows, cap, devices))
    np.testing.assert_array_equal(np.concatenate([idx for idx, _ in calls]), rows)
    for idx, pad in calls:
      assert len(pad) in sizes
      np.testing.assert_array_equal(pad[:len(idx)], idx)
      # Padding is at most a quarter of a call, except below the smallest shape.
      assert 4 * (len(pad) - len(idx)) <= len(pad) or len(pad) == min(sizes)


def test_de_initialises_inside_its_first_loop(cifar_lenet, cifar_samples):
  """DE's first population is evaluated in the loop's first pass (one compiled net, not an
  init program and a loop): with no generations too, and padding rows neither start nor
  step; the records are those of attacks run one at a time."""
  shape, k = (32, 32, 3), 10
  cfg = PixelAttackConfig(popsize=16, generations=0)
  calls = dict(call_size=16)
  black_box = cifar_lenet.predict
  assert runner._Engine(evaluator_for(black_box, 1, "de", execution=calls), shape, cfg,
                        k).starts_in_run
  assert not runner._Engine(evaluator_for(black_box, 1, "sparse_rs"), shape, PixelAttackConfig(
      method="sparse_rs"), k).starts_in_run          # its first batch is not a step's
  x, y = cifar_samples.images[:3], cifar_samples.labels[:3]
  key = jax.random.PRNGKey(4)
  rec = attack(black_box, x, y, key, cfg, execution=calls)
  np.testing.assert_array_equal(rec.queries, 16)
  np.testing.assert_array_equal(rec.iterations, 0)
  cfg = PixelAttackConfig(popsize=16, generations=3)
  padded = attack(black_box, x, y, key, cfg, attacks_per_call=4, execution=calls)
  np.testing.assert_array_equal(padded.queries, 64)
  for i in range(3):
    one = attack(black_box, x[i:i + 1], y[i:i + 1], key, cfg, image_ids=[i], execution=calls)
    for field in ("pixels", "queries", "success", "probs", "iterations"):
      np.testing.assert_array_equal(getattr(one, field)[0], getattr(padded, field)[i],
                                    err_msg=field)


def test_immediate_updating_de_stops_at_its_first_fooling_query(cifar_lenet, cifar_samples):
  """SciPy's member-by-member DE (its default updating): one query per step, so an
  attack stopping at the first success spends exactly its success query; a generation is
  ``popsize`` steps; the best member is a recorded, reproducible candidate."""
  idx = _correct(cifar_lenet, cifar_samples, 4)
  cfg = PixelAttackConfig(pixels=1, strategy="best1bin", popsize=24, generations=8,
                          stop="first_success", updating="immediate",
                          initialization="latin_hypercube")
  assert "immediate updating, latin hypercube start" in cfg.describe()
  run = lambda: attack(cifar_lenet.predict, cifar_samples.images[idx],
                       cifar_samples.labels[idx], jax.random.PRNGKey(3), cfg, image_ids=idx)
  rec = run()
  chex.assert_trees_all_equal(rec, run())
  assert np.all(rec.queries <= 24 * 9)
  late = rec.success & (rec.success_query > 24)      # fooled after the initial population
  np.testing.assert_array_equal(rec.queries[late], rec.success_query[late])
  np.testing.assert_array_equal(rec.iterations[late], rec.queries[late] - 24)
  np.testing.assert_array_equal(rec.queries[~rec.success], 24 * 9)
  np.testing.assert_array_equal(rec.success, rec.adversarial_class != rec.true_class)
  imgs = cifar_samples.images[idx].astype(np.float32)
  for i, (x, y, *c) in enumerate(rec.pixels[:, 0]):
    imgs[i, int(y), int(x)] = c
  np.testing.assert_allclose(np.asarray(cifar_lenet(imgs)), rec.probs, atol=1e-5)
  with pytest.raises(UserError, match="unknown updating"):
    PixelAttackConfig(updating="lazy")
  with pytest.raises(UserError, match="unknown initialization"):
    PixelAttackConfig(initialization="sobol")
