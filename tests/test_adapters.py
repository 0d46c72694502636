"""Models from other frameworks through ``models.from_keras``: the same numbers as the zoo's
ports, and attacks run on them end to end. Skipped where keras is not installed."""
import json
import os

# Keras picks its backend when first imported: pixeljax's adapters need JAX's.
os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import numpy as np
import pytest

import pixeljax
from pixeljax import models
from pixeljax.errors import UserError
from pixeljax.models import layers

keras = pytest.importorskip("keras")

LENET = "cifar10_lenet_hyperparticle"


def keras_from_config(path):
  """A Keras 3 model from a Keras 2 ``keras_config.json`` (Sequential: its first layer's
  ``batch_input_shape`` becomes an InputLayer's ``batch_shape``; functional: as it is)."""
  with open(path) as f:
    cfg = json.load(f)
  if cfg["class_name"] != "Sequential":
    return keras.Model.from_config(cfg["config"])
  stack = []
  for layer in cfg["config"]:
    c = dict(layer["config"])
    if "batch_input_shape" in c:
      stack.append({"class_name": "InputLayer",
                    "config": {"batch_shape": c.pop("batch_input_shape"), "dtype": "float32"}})
    stack.append({"class_name": layer["class_name"], "config": c})
  return keras.Sequential.from_config({"name": "lenet", "layers": stack})


def set_keras_2_weights(model, arrays):
  """The ``<layer>/<weight>:0`` arrays of ``../shared/weights`` into a Keras 3 model."""
  for layer in model.layers:
    ws = [arrays[f"{layer.name}/{v.name}:0"] for v in layer.weights]
    if ws:
      layer.set_weights(ws)


@pytest.fixture(scope="module")
def keras_lenet(shared_dir):
  net = keras_from_config(os.path.join(shared_dir, "weights", f"{LENET}.keras_config.json"))
  set_keras_2_weights(net, np.load(os.path.join(shared_dir, "weights", f"{LENET}.npz")))
  return net


@pytest.fixture(scope="module")
def exact_images(shared_dir):
  d = np.load(os.path.join(shared_dir, "data", "cifar10_test_exact1017.npz"))
  return d["x_test"][:64], d["y_test"][:64].astype(np.int32)


def test_keras_lenet_matches_the_port_and_attacks(keras_lenet, exact_images, cifar_lenet):
  model = models.from_keras(keras_lenet, preprocess=layers.KERAS_CIFAR)
  assert model.input_shape == (32, 32, 3) and model.num_classes == 10
  # The traced program splits at its first convolution ('valid': no window prefix).
  assert model.factored is not None and model.factored.window is None
  meta = model.metadata
  assert meta["source"] == "keras" and meta["softmax_added"] is False
  assert meta["preprocess"]["mean"] == list(layers.KERAS_CIFAR["mean"])
  assert len(meta["sha256"]) == 64
  images, labels = exact_images
  x = images.astype(np.float32)
  got = np.asarray(jax.jit(model.predict)(x))
  want = np.asarray(jax.jit(cifar_lenet.predict)(x))
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(model(images)), got, atol=1e-6, rtol=0)
  # vmap: the adapter's predict is a pure JAX function.
  batched = jax.vmap(model.predict)(x[:4].reshape(2, 2, 32, 32, 3))
  np.testing.assert_allclose(np.asarray(batched).reshape(4, 10), got[:4], atol=1e-6, rtol=0)
  # Running Keras' own predict (which frees the arrays it was given) leaves ours intact.
  keras_lenet.predict((x[:2] - np.asarray(layers.KERAS_CIFAR["mean"], np.float32))
                      / np.asarray(layers.KERAS_CIFAR["std"], np.float32), verbose=0)
  np.testing.assert_allclose(np.asarray(jax.jit(model.predict)(x[:8])), got[:8], atol=1e-6)

  config = pixeljax.PixelAttackConfig(pixels=1, popsize=40, generations=3)
  rec = pixeljax.attack(model, images[:4], labels[:4], jax.random.PRNGKey(0), config)
  assert len(rec.success) == 4 and np.all(rec.queries <= 40 * 4)


def _targeted_attack(model, image, probs):
  """A one-pixel targeted attack on ``image`` (its top class from ``probs``) runs end to end;
  returns its records and the target."""
  label = int(probs.argmax())
  target = 5 if label != 5 else 6
  config = pixeljax.PixelAttackConfig(pixels=1, targeted=True, popsize=8, generations=1)
  rec = pixeljax.attack(model, image, np.array([label]), jax.random.PRNGKey(1), config,
                        targets=np.array([target]))
  assert rec.queries.shape == (1,) and rec.queries[0] <= 16
  return rec, target


def test_keras_logits_get_a_softmax_and_imagenet_shaped_targeted_attack():
  keras.utils.set_random_seed(0)
  net = keras.Sequential([
      keras.Input((224, 224, 3)),
      keras.layers.Conv2D(4, 7, strides=4, activation="relu"),
      keras.layers.MaxPooling2D(4),
      keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
      keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(1000),                      # logits
  ], name="tiny_imagenet")
  model = models.from_keras(net, preprocess=layers.IMAGENET_STANDARD, name="tiny")
  assert (model.name, model.input_shape, model.num_classes) == ("tiny", (224, 224, 3), 1000)
  assert model.metadata["softmax_added"] is True
  image = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
  probs = np.asarray(model(image))
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  _targeted_attack(model, image, probs)


def test_keras_softmax_forced_off_and_bad_inputs():
  net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(3, activation="softmax")])
  model = models.from_keras(net)
  assert model.metadata["softmax_added"] is False and model.metadata["preprocess"] is None
  assert models.from_keras(net, softmax=True).metadata["softmax_added"] is True
  with pytest.raises(UserError, match="preprocess"):
    models.from_keras(net, preprocess={"sclae": 1.0})
  with pytest.raises(UserError, match="keras.Model"):
    models.from_keras(lambda x: x)
  with pytest.raises(UserError, match=r"\(N, 8, 8, 1\)"):
    model(np.zeros((1, 9, 9, 1), np.uint8))


def test_keras_on_another_backend_is_one_line(monkeypatch):
  monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
  net = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(2)])
  with pytest.raises(UserError, match="KERAS_BACKEND=jax"):
    models.from_keras(net)


def test_torch_resnet20_matches_the_port(shared_dir, exact_images):
  pytest.importorskip("torch")
  import importlib.util
  import sys
  if importlib.util.find_spec("torchax") is None:   # (importing it bare fails on torch 2.13)
    pytest.skip("torchax is not installed")
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
  import torch_nets
  net = torch_nets.load("cifar10_resnet20_akamaster", os.path.join(shared_dir, "weights"))
  net.train()                                  # from_torch puts it in eval mode
  model = models.from_torch(net, input_shape=(32, 32, 3))   # normalises inside (NCHW)
  assert not net.training and model.metadata["softmax_added"] is True
  assert model.factored is not None and model.factored.window.size == (15, 15)   # the port's
  images, labels = exact_images
  x = images[:32].astype(np.float32)
  got = np.asarray(jax.jit(model.predict)(x))
  port = models.load("cifar10_resnet20_akamaster")
  np.testing.assert_allclose(got, np.asarray(jax.jit(port.predict)(x)), atol=1e-5, rtol=0)
  plain = models.from_torch(net, input_shape=(32, 32, 3), nhwc=False)
  np.testing.assert_array_equal(np.asarray(jax.jit(plain.predict)(x[:8])),
                                np.asarray(jax.jit(model.predict)(x[:8])))   # same bits
  config = pixeljax.PixelAttackConfig(pixels=1, popsize=16, generations=1)
  rec = pixeljax.attack(model, images[:2], labels[:2], jax.random.PRNGKey(0), config)
  assert len(rec.success) == 2


def test_torch_imagenet_shaped_targeted_attack():
  torch = pytest.importorskip("torch")
  import importlib.util
  if importlib.util.find_spec("torchax") is None:
    pytest.skip("torchax is not installed")
  torch.manual_seed(0)
  net = torch.nn.Sequential(
      torch.nn.Conv2d(3, 4, 7, stride=4), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
      torch.nn.Conv2d(4, 8, 3, stride=2), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
      torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 1000))   # logits
  model = models.from_torch(net, input_shape=(224, 224, 3),
                            preprocess=layers.IMAGENET_STANDARD, name="tiny_torch")
  assert (model.input_shape, model.num_classes) == ((224, 224, 3), 1000)
  assert model.metadata["softmax_added"] is True and not net.training
  image = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
  probs = np.asarray(model(image))
  with torch.no_grad():     # the same numbers as PyTorch's own forward pass
    x = (torch.from_numpy(image.astype(np.float32) / 255).permute(0, 3, 1, 2)
         - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
        / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    want = torch.softmax(net(x), -1).numpy()
  np.testing.assert_allclose(probs, want, atol=1e-5)
  rec, target = _targeted_attack(model, image, probs)
  assert rec.target_class[0] == target
