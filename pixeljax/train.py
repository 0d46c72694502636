"""Supervised training of zoo models with optax: augmentation, evaluation, resumable state.

``train(spec, train_set, test_set, config, workdir)`` runs epochs of a jit-compiled step,
writes the whole training state (params, batch statistics, optimiser state, epoch) to
``workdir/train_state.msgpack`` after every epoch, and resumes from it when restarted, so an
interrupted run loses at most one epoch.
"""
import dataclasses
import json
import os
import time
from typing import Any, Callable, Optional

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from pixeljax import checkpoint
from pixeljax.evaluate import accuracy
from pixeljax.models.registry import ModelSpec, PixelClassifier


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
  seed: int = 0
  num_classes: Optional[int] = None   # head size override (e.g. n + 1 for a fooling class)
  log_every: int = 100


@struct.dataclass
class TrainState:
  step: jnp.ndarray
  epoch: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
  total = max(1, config.epochs * steps_per_epoch)
  if config.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, int(config.warmup_epochs * steps_per_epoch), total)
  elif config.schedule == "constant":
    lr = config.learning_rate
  else:
    raise ValueError(f"unknown schedule {config.schedule!r}; use 'cosine' or 'constant'")
  if config.optimizer == "sgd":
    opt = optax.sgd(lr, momentum=config.momentum, nesterov=True)
  elif config.optimizer == "adam":
    opt = optax.adam(lr)
  else:
    raise ValueError(f"unknown optimizer {config.optimizer!r}; use 'sgd' or 'adam'")
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


def _make_step(module: PixelClassifier, tx, augment: bool):
  def loss_fn(params, batch_stats, images, labels, key):
    k_aug, k_drop = jax.random.split(key)
    if augment:
      images = augment_batch(k_aug, images)
    variables = {"params": params}
    if batch_stats is not None:
      variables["batch_stats"] = batch_stats
    logits, updates = module.apply(variables, images, train=True, method=PixelClassifier.logits,
                                   mutable=["batch_stats"], rngs={"dropout": k_drop})
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


def train(spec: ModelSpec, train_images, train_labels, test_images, test_labels,
          config: TrainConfig, workdir: str, log: Callable[[str], None] = print):
  """Trains ``spec`` and returns ``(variables, history)``; resumes from ``workdir``."""
  os.makedirs(workdir, exist_ok=True)
  n = len(train_labels)
  if n < config.batch_size:
    raise ValueError(f"training set has {n} images, fewer than one batch of "
                     f"{config.batch_size}")
  steps_per_epoch = n // config.batch_size
  module = spec.module(config.num_classes)
  variables = spec.init(jax.random.PRNGKey(config.seed), config.num_classes)
  tx = make_optimizer(config, steps_per_epoch)
  state = TrainState(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32),
                     params=variables["params"], batch_stats=variables.get("batch_stats"),
                     opt_state=tx.init(variables["params"]))
  state_path = os.path.join(workdir, "train_state.msgpack")
  history_path = os.path.join(workdir, "history.json")
  history = []
  if os.path.exists(state_path):
    with open(state_path, "rb") as f:
      state = flax.serialization.from_bytes(state, f.read())
    if os.path.exists(history_path):
      with open(history_path) as f:
        history = json.load(f)
    log(f"resumed from {state_path} at epoch {int(state.epoch)}")
  step_fn = _make_step(module, tx, config.augment)
  predict = jax.jit(lambda v, x: module.apply(v, x, train=False))
  train_images = np.asarray(train_images)
  for epoch in range(int(state.epoch), config.epochs):
    t0 = time.time()
    order = np.random.default_rng([config.seed, epoch]).permutation(n)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), epoch)
    run_loss = run_acc = 0.0
    for i in range(steps_per_epoch):
      idx = order[i * config.batch_size:(i + 1) * config.batch_size]
      state, loss, acc = step_fn(state, jnp.asarray(train_images[idx], jnp.float32),
                                 jnp.asarray(train_labels[idx]), jax.random.fold_in(key, i))
      run_loss += float(loss)
      run_acc += float(acc)
      if (i + 1) % config.log_every == 0:
        log(f"epoch {epoch + 1}/{config.epochs} step {i + 1}/{steps_per_epoch} "
            f"loss {run_loss / (i + 1):.4f} acc {run_acc / (i + 1):.4f}")
    variables = _variables(state)
    test_acc = accuracy(lambda x: predict(variables, x), test_images, test_labels)
    record = dict(epoch=epoch + 1, train_loss=run_loss / steps_per_epoch,
                  train_accuracy=run_acc / steps_per_epoch, test_accuracy=test_acc,
                  seconds=time.time() - t0)
    history.append(record)
    log(json.dumps(record))
    state = state.replace(epoch=jnp.asarray(epoch + 1, jnp.int32))
    checkpoint.atomic_write(state_path, flax.serialization.to_bytes(state))
    checkpoint.atomic_write(history_path, json.dumps(history, indent=1).encode())
  return _variables(state), history
