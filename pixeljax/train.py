"""Supervised training of zoo models with optax: augmentation, evaluation, resumable state.

``train(spec, train_images, train_labels, test_images, test_labels, config, workdir)`` runs
epochs of a jit-compiled step, writes the whole training state (params, batch statistics,
optimiser state, step, epoch) to ``workdir/train_state.msgpack`` and the history to
``workdir/history.json`` after every epoch, and the state also every ``save_interval``
seconds within an epoch (with the epoch's running loss and accuracy in
``workdir/epoch_progress.json``), atomically, and resumes from them when restarted: a batch's
images and random key depend only on (seed, epoch, step), so an interrupted run loses at most
``save_interval`` seconds (an epoch of a CIFAR net on 2 CPU cores takes most of an hour) and
ends exactly where an uninterrupted one does.

The folder is claimed (``workdir.claim``) by the ``TrainConfig``, the model, a fingerprint of
the data and the number of devices the batch is split over; a restart with anything else
raises ``SettingsMismatch`` instead of continuing someone else's training under new labels.

**Devices.** Each step's batch is split over ``devices`` of the host's devices (data parallel,
by sharding the batch: XLA sums the gradients and the batch-norm statistics across them, so
the step is the one-device step's, up to the order of float sums). On a CPU split into one
device per core (as importing pixeljax does) a core per half-batch beat both cores on the
whole one, by 5-25% in paired runs on a noisy 2-core machine (NiN, batch 128: 3.3-3.8 against
4.1-4.2 s per step; ``benchmarks/train_peers.py --jax_devices 1`` against the default: All-CNN-C
33 vs 31, NiN 35 vs 31 images/s, results/peers/avx2/). Left unset, a new run uses
every local device that divides the batch and a resumed one its recorded count (runs stored
before: one).
"""
import contextlib
import dataclasses
import hashlib
import os
import sys
import time
from typing import Any, Callable, Dict, Optional

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pixeljax import door, workdir as workdir_lib
from pixeljax.errors import UserError
from pixeljax.evaluate import accuracy
from pixeljax.models.registry import ModelSpec, PixelClassifier, check_pixels
from pixeljax.progress import Progress

STATE_FILE = "train_state.msgpack"
HISTORY_FILE = "history.json"
PROGRESS_FILE = "epoch_progress.json"    # running sums of the epoch the state is within


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  epochs: int = 10
  batch_size: int = 128
  optimizer: str = "sgd"          # "sgd" (momentum, nesterov) or "adam"
  learning_rate: float = 0.05
  momentum: float = 0.9
  weight_decay: float = 5e-4
  schedule: str = "cosine"        # "cosine" or "constant"
  warmup_epochs: float = 0.0
  augment: bool = True            # random crop (4-pixel zero pad) + horizontal flip
  # The net's dropout layers in training (they pass through at test time either way). Off
  # suits short schedules: with them, All-CNN-C (input 0.2, two 0.5) stood at 78% train / 76%
  # test accuracy after 12 of 15 cosine epochs.
  dropout: bool = True
  seed: int = 0
  num_classes: Optional[int] = None   # head size override (e.g. n + 1 for a fooling class)


@struct.dataclass
class TrainState:
  step: jnp.ndarray
  epoch: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any


def check_config(config: TrainConfig) -> None:
  """The settings' own mistakes (epochs, batch size, seed, schedule, optimiser), one line
  each: what a script that trains only after hours of other work checks at its start."""
  if config.epochs < 1 or config.batch_size < 1:
    raise UserError(f"epochs and batch_size must be >= 1, got {config.epochs} and "
                    f"{config.batch_size}")
  if config.seed < 0:
    raise UserError(f"train.seed must be >= 0, got {config.seed}")
  make_optimizer(config, 1)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
  total = max(1, config.epochs * steps_per_epoch)
  warmup = int(config.warmup_epochs * steps_per_epoch)
  if config.schedule == "cosine" and warmup == 0:   # the same values, without optax's warning
    lr = optax.cosine_decay_schedule(config.learning_rate, total)
  elif config.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, total)
  elif config.schedule == "constant":
    lr = config.learning_rate
  else:
    raise UserError(f"unknown schedule {config.schedule!r}; use 'cosine' or 'constant'")
  if config.optimizer == "sgd":
    opt = optax.sgd(lr, momentum=config.momentum, nesterov=True)
  elif config.optimizer == "adam":
    opt = optax.adam(lr)
  else:
    raise UserError(f"unknown optimizer {config.optimizer!r}; use 'sgd' or 'adam'")
  # Decay only kernels (not biases / BN scales), as the usual CIFAR recipes do.
  decay_mask = lambda p: jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", "") == "kernel", p)
  return optax.chain(optax.add_decayed_weights(config.weight_decay, decay_mask), opt)


def augment_batch(key, images):
  """Random crop of the 4-pixel zero-padded image and random horizontal flip (CIFAR recipe)."""
  n, h, w, _ = images.shape
  k1, k2, k3 = jax.random.split(key, 3)
  padded = jnp.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  dy = jax.random.randint(k1, (n,), 0, 9)
  dx = jax.random.randint(k2, (n,), 0, 9)
  crop = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (h, w, im.shape[-1])))
  out = crop(padded, dy, dx)
  flip = jax.random.bernoulli(k3, 0.5, (n,))
  return jnp.where(flip[:, None, None, None], out[:, :, ::-1], out)


def _without_dropout(next_fun, args, kwargs, context):
  """A ``flax.linen.intercept_methods`` interceptor: every ``nn.Dropout`` passes its input."""
  if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
    return args[0] if args else kwargs["inputs"]
  return next_fun(*args, **kwargs)


def _make_step(module: PixelClassifier, tx, augment: bool, dropout: bool = True):
  def loss_fn(params, batch_stats, images, labels, key):
    k_aug, k_drop = jax.random.split(key)
    if augment:
      images = augment_batch(k_aug, images)
    variables = {"params": params}
    if batch_stats is not None:
      variables["batch_stats"] = batch_stats
    with contextlib.nullcontext() if dropout else nn.intercept_methods(_without_dropout):
      logits, updates = module.apply(variables, images, train=True,
                                     method=PixelClassifier.logits, mutable=["batch_stats"],
                                     rngs={"dropout": k_drop})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    acc = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, (updates.get("batch_stats"), acc)

  @jax.jit
  def step(state: TrainState, images, labels, key):
    (loss, (new_stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, images, labels, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                          batch_stats=new_stats if state.batch_stats is not None else None)
    return state, loss, acc

  return step


def _variables(state: TrainState):
  v = {"params": state.params}
  if state.batch_stats is not None:
    v["batch_stats"] = state.batch_stats
  return v


def _sha1(array) -> str:
  return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def data_fingerprint(images, labels) -> Dict[str, Any]:
  """Identifies a data set: its size, image shape and dtype, and a sha1 of all labels and of
  all images (a fraction of a second for CIFAR-10's 150 MB; a sample of the images would let a
  resume finish one run on two data sets that differ elsewhere)."""
  images, labels = np.asarray(images), np.asarray(labels, np.int64)
  return dict(count=int(len(labels)), image_shape=list(images.shape[1:]),
              dtype=str(images.dtype), labels_sha1=_sha1(labels), images_sha1=_sha1(images))


def _data_parallel(state: TrainState, devices: int):
  """``state`` replicated over the first ``devices`` local devices, and the function putting a
  batch split over them; one device: both unchanged (as before data parallelism, bit for bit)."""
  if devices == 1:
    return state, lambda x: x
  mesh = Mesh(np.array(jax.local_devices()[:devices]), ("batch",))
  state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
  return state, lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec("batch")))


def _legacy(stored: Dict[str, Any]) -> Dict[str, Any]:
  """Settings stored before data-parallel training: one device; before ``dropout`` was a
  setting: on."""
  stored = {"devices": 1, **stored}
  if isinstance(stored.get("config"), dict):
    stored["config"] = {"dropout": True, **stored["config"]}
  return stored


def migrate_config(stored: Dict[str, Any]) -> Dict[str, Any]:
  """An experiment's stored config.json whose ``train`` settings predate ``dropout``: on."""
  if isinstance(stored.get("train"), dict):
    stored = {**stored, "train": {"dropout": True, **stored["train"]}}
  return stored


def recorded_devices(workdir: str) -> int:
  """The devices the run in ``workdir`` splits its batches over (its settings)."""
  return int(_legacy(workdir_lib.read_json(os.path.join(workdir, workdir_lib.SETTINGS_FILE)))[
      "devices"])


def batch_devices(batch_size: int, requested: Optional[int] = None) -> int:
  """``requested`` (checked), or as many local devices as divide ``batch_size``."""
  available = jax.local_device_count()
  n = int(requested or available)
  while not requested and batch_size % n:
    n -= 1
  if n < 1 or n > available or batch_size % n:
    raise UserError(f"devices={n}: a run splits its batches of {batch_size} over devices "
                    f"that divide it, and this host has {available}")
  return n


def _devices(requested: Optional[int], workdir: str, batch_size: int) -> int:
  """The devices a run splits its batches over: ``requested``, else a resumed run's recorded
  count (which this host must have: fewer would change the sums under the same label), else
  as many local devices as divide the batch."""
  if not requested and os.path.exists(os.path.join(workdir, workdir_lib.SETTINGS_FILE)):
    n = recorded_devices(workdir)
    if n > jax.local_device_count():
      raise UserError(f"{workdir} trains on {n} devices and this process has "
                      f"{jax.local_device_count()}: resume it with {n} (on a CPU: "
                      f"PIXELJAX_CPU_DEVICES={n}, or runtime.cpu_devices where a script has it)")
    return n
  return batch_devices(batch_size, requested)


def train(spec: ModelSpec, train_images, train_labels, test_images, test_labels,
          config: TrainConfig, workdir: str, log: Optional[Callable[[str], None]] = None, *,
          log_every: int = 100, progress_interval: float = 5.0, show_progress: bool = True,
          save_interval: float = 600.0, devices: Optional[int] = None,
          code: Optional[Dict[str, Any]] = None):
  """Trains ``spec`` and returns ``(variables, history)``; resumes from ``workdir``.

  ``log_every`` (steps between progress updates), ``progress_interval`` and
  ``show_progress`` change what is shown, ``save_interval`` (seconds between saves within an
  epoch) how much an interruption costs; none changes the result. ``devices``: how many of
  the host's devices a batch is split over (None: the module docstring's choice); recorded,
  since float sums depend on it. ``code``: the code version training now (e.g.
  ``cli.code_version()``), recorded in each epoch's history entry, so a run resumed across
  commits says which epochs each made."""
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  n = len(train_labels)
  check_config(config)    # before the claim: a start that fails must not claim the folder
  classes = config.num_classes or spec.num_classes
  for what, imgs, labs in (("training", train_images, train_labels),
                           ("test", test_images, test_labels)):
    if tuple(np.shape(imgs)[1:]) != tuple(spec.input_shape):
      raise UserError(f"{what} images have shape {tuple(np.shape(imgs)[1:])}, model "
                      f"{spec.name} takes {tuple(spec.input_shape)}")
    check_pixels(imgs, f"training {spec.name} on {what} images")
    door.check_pixel_scale(imgs, f"the {what} images")
    labs = np.asarray(labs)
    if labs.ndim != 1 or len(labs) != len(imgs):
      raise UserError(f"{what} labels must have shape ({len(imgs)},), one class index per "
                      f"image, got {labs.shape}" + (": pass labels.reshape(-1)" if labs.size
                                                     == len(imgs) else ""))
    if not np.issubdtype(labs.dtype, np.integer):
      raise UserError(f"{what} labels must be integer class indices, got {labs.dtype}")
    if labs.size and (labs.min() < 0 or labs.max() >= classes):
      raise UserError(f"{what} labels must be in [0, {classes}) for {spec.name}; found "
                      f"{labs.min()}..{labs.max()}")
  if n < config.batch_size:
    raise UserError(f"training set has {n} images, fewer than one batch of "
                    f"{config.batch_size}")
  steps_per_epoch = n // config.batch_size
  tx = make_optimizer(config, steps_per_epoch)     # validates the optimiser settings
  devices = _devices(devices, workdir, config.batch_size)
  settings = dict(config=dataclasses.asdict(config), model=spec.name,
                  train_data=data_fingerprint(train_images, train_labels),
                  test_data=data_fingerprint(test_images, test_labels), devices=devices)
  workdir_lib.check_no_orphan_work(workdir, (STATE_FILE, HISTORY_FILE, PROGRESS_FILE))
  resumed = workdir_lib.claim(workdir, settings, migrate=_legacy)
  module = spec.module(config.num_classes)
  variables = spec.init(jax.random.PRNGKey(config.seed), config.num_classes)
  state = TrainState(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32),
                     params=variables["params"], batch_stats=variables.get("batch_stats"),
                     opt_state=tx.init(variables["params"]))
  state_path = os.path.join(workdir, STATE_FILE)
  history_path = os.path.join(workdir, HISTORY_FILE)
  progress_path = os.path.join(workdir, PROGRESS_FILE)
  history, partial = [], {}
  if resumed and os.path.exists(state_path):
    with open(state_path, "rb") as f:
      try:
        state = flax.serialization.from_bytes(state, f.read())
      except Exception as e:  # msgpack errors of a truncated or foreign file
        raise UserError(f"{state_path} is corrupt ({e}); remove it to start over") from None
    # The history is written before the state, so it may hold one epoch more (a run killed
    # between the two writes): that epoch is redone.
    history = workdir_lib.read_json(history_path) if os.path.exists(history_path) else []
    history = history[:int(state.epoch)]
    if len(history) != int(state.epoch):
      raise UserError(f"{workdir} is inconsistent ({len(history)} epochs of history, state "
                      f"at epoch {int(state.epoch)}); remove it to start over")
    within = int(state.step) - int(state.epoch) * steps_per_epoch
    if within:     # saved within an epoch: its running sums, written before the state
      sums = (workdir_lib.read_json(progress_path) if os.path.exists(progress_path)
              else {}).get(str(int(state.step)))
      if sums is None or not 0 < within < steps_per_epoch:
        raise UserError(f"{workdir} is inconsistent (state at step {int(state.step)} of "
                        f"epoch {int(state.epoch) + 1}, no matching {PROGRESS_FILE}); remove "
                        f"it to start over")
      partial = {str(int(state.step)): sums}
    log(f"resumed from {state_path} at epoch {int(state.epoch)}"
        + (f", step {within} of {steps_per_epoch}" if within else ""))
  step_fn = _make_step(module, tx, config.augment, config.dropout)
  predict = jax.jit(lambda v, x: module.apply(v, x, train=False))
  state, put = _data_parallel(state, devices)
  train_images = np.asarray(train_images)
  train_labels = np.asarray(train_labels)
  start = int(state.epoch)
  bar = Progress(config.epochs * steps_per_epoch, f"train {spec.name}",
                 min_interval=progress_interval, enabled=show_progress,
                 initial=min(int(state.step), config.epochs * steps_per_epoch))
  with bar:
    for epoch in range(start, config.epochs):
      order = np.random.default_rng([config.seed, epoch]).permutation(n)
      key = jax.random.fold_in(jax.random.PRNGKey(config.seed), epoch)
      done = epoch * steps_per_epoch
      first = int(state.step) - done          # > 0: resumed within this epoch
      sums = partial.get(str(int(state.step)), dict(loss=0.0, accuracy=0.0, seconds=0.0))
      run_loss, run_acc = sums["loss"], sums["accuracy"]
      t0 = time.time() - sums["seconds"]
      saved = time.time()
      for i in range(first, steps_per_epoch):
        idx = order[i * config.batch_size:(i + 1) * config.batch_size]
        state, loss, acc = step_fn(state, put(jnp.asarray(train_images[idx], jnp.float32)),
                                   put(jnp.asarray(train_labels[idx])),
                                   jax.random.fold_in(key, i))
        run_loss += float(loss)
        run_acc += float(acc)
        if time.time() - saved >= save_interval and i + 1 < steps_per_epoch:
          # The sums first, keyed by the step of the state they go with (the last two kept:
          # a run killed between the writes resumes from the older state).
          partial = dict([(k, v) for k, v in partial.items() if int(k) >= done][-1:])
          partial[str(int(state.step))] = dict(loss=run_loss, accuracy=run_acc,
                                               seconds=time.time() - t0)
          workdir_lib.write_json(progress_path, partial)
          workdir_lib.atomic_write(state_path, flax.serialization.to_bytes(state))
          saved = time.time()
        if (i + 1) % log_every == 0 and i + 1 < steps_per_epoch:
          bar.update(done + i + 1, epoch=f"{epoch + 1}/{config.epochs}",
                     loss=run_loss / (i + 1), accuracy=run_acc / (i + 1))
      variables = _variables(state) if devices == 1 else jax.device_get(_variables(state))
      test_acc = accuracy(lambda x: predict(variables, x), test_images, test_labels)
      record = dict(epoch=epoch + 1, train_loss=run_loss / steps_per_epoch,
                    train_accuracy=run_acc / steps_per_epoch, test_accuracy=test_acc,
                    seconds=time.time() - t0)
      if code is not None:
        record["code"] = dict(code)
      history.append(record)
      state = state.replace(epoch=jnp.asarray(epoch + 1, jnp.int32))
      workdir_lib.write_json(history_path, history)
      workdir_lib.atomic_write(state_path, flax.serialization.to_bytes(state))
      bar.update(done + steps_per_epoch, epoch=f"{epoch + 1}/{config.epochs}",
                 loss=record["train_loss"], accuracy=record["train_accuracy"],
                 test_accuracy=test_acc)
  # One device's arrays, whatever the mesh: callers attack with them on their own meshes.
  return (_variables(state) if devices == 1 else jax.device_get(_variables(state))), history
