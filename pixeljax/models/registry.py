"""The target zoo: every classifier by name, with its preprocessing built in.

``get(name)`` returns a ``ModelSpec`` (how to build the module, what it expects);
``load(name)`` returns a ready ``Classifier`` with weights from ``checkpoints/``. Every model
maps pixels in [0, 255] (NHWC float32) to class probabilities.
"""
import dataclasses
import functools
import os
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pixeljax.errors import UserError
from pixeljax import checkpoint as ckpt
from pixeljax.models import layers, stem, traced_window, window
from pixeljax.models.alexnet import AlexNet
from pixeljax.models.allcnn import AllCNNC
from pixeljax.models.cifar_resnet import CifarResNet
from pixeljax.models.keras_graph import KerasGraph, load_graph
from pixeljax.models.lenet import LeNetMNIST
from pixeljax.models.nin import NiN
from pixeljax.models.vgg import VGG16

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def checkpoint_dir() -> str:
  """``$PIXELJAX_CHECKPOINT_DIR`` if set, else the repository's ``checkpoints/``."""
  return os.environ.get("PIXELJAX_CHECKPOINT_DIR", os.path.join(_REPO, "checkpoints"))


class PixelClassifier(nn.Module):
  """Preprocessing + backbone: pixels in [0, 255] -> probabilities (``logits`` for training)."""
  backbone: nn.Module
  preprocess: layers.Normalize

  def __call__(self, x, train: bool = False):
    return jax.nn.softmax(self.logits(x, train).astype(jnp.float32), axis=-1)

  def logits(self, x, train: bool = False):
    # Every product at the backend's most exact precision: float32 on CPUs and GPUs, six
    # bfloat16 passes on TPUs. By default XLA lets GPUs run float32 convolutions and matrix
    # products in TF32: on an H100 that moved the ports' probabilities by more than 1e-4 from
    # their originals' (tests/test_models.py). On XLA:CPU HIGHEST is the float32 it always
    # computes: the LeNet's and ResNet-20's outputs are bit-identical with and without it.
    with jax.default_matmul_precision("highest"):
      return self.backbone(self.preprocess(x), train=train)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  name: str
  make_backbone: Callable[[], nn.Module]
  preprocess: Dict[str, Any]
  input_shape: Tuple[int, int, int]
  num_classes: int
  dataset: str
  description: str
  # The child module of the backbone where its translation-equivariant prefix ends (stride-1
  # 'same' convolutions and per-position maps only): one-pixel candidates run that prefix
  # on a window around their pixel (``pixeljax.models.window``). None: no such prefix.
  window_end: Optional[str] = None

  def module(self, num_classes: Optional[int] = None) -> PixelClassifier:
    """The Flax module; ``num_classes`` overrides the head (e.g. n+1 for a fooling class)."""
    backbone = self.make_backbone()
    if num_classes is not None and num_classes != self.num_classes:
      backbone = backbone.clone(num_classes=num_classes)
    return PixelClassifier(backbone, layers.Normalize(**self.preprocess))

  def init(self, key, num_classes: Optional[int] = None):
    """Fresh variables. Jitted: run op by op, a deep net (VGG16) compiles one small program per
    layer op, several times slower than compiling the whole init once."""
    x = jnp.zeros((1,) + self.input_shape, jnp.float32)
    return jax.jit(functools.partial(self.module(num_classes).init, train=False))(key, x)


_SPECS: Dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
  if spec.name in _SPECS:
    raise ValueError(f"model {spec.name!r} is already registered")
  _SPECS[spec.name] = spec
  return spec


def names():
  return sorted(_SPECS)


def get(name: str) -> ModelSpec:
  try:
    return _SPECS[name]
  except KeyError:
    raise UserError(f"unknown model {name!r}; known models: {', '.join(names())}") from None


def _keras(graph_name: str) -> Callable[[], nn.Module]:
  """A factory reading the shipped Keras graph only when the model is built."""
  return lambda: KerasGraph(load_graph(graph_name))


_CIFAR = (32, 32, 3)
register(ModelSpec("cifar10_lenet_hyperparticle", _keras("cifar10_lenet_hyperparticle"),
                   layers.KERAS_CIFAR, _CIFAR, 10, "cifar10",
                   "LeNet of Hyperparticle/one-pixel-attack-keras (ported Keras weights)"))
register(ModelSpec("cifar10_resnet32_hyperparticle", _keras("cifar10_resnet32_hyperparticle"),
                   layers.KERAS_CIFAR, _CIFAR, 10, "cifar10",
                   "pre-activation ResNet-32 of Hyperparticle/one-pixel-attack-keras "
                   "(graph read from its keras_config.json; ported weights)"))
for _depth in (20, 32):
  register(ModelSpec(f"cifar10_resnet{_depth}_akamaster",
                     functools.partial(CifarResNet, depth=_depth), layers.TORCH_IMAGENET,
                     _CIFAR, 10, "cifar10",
                     f"ResNet-{_depth}, option-A shortcuts, akamaster/pytorch_resnet_cifar10 "
                     "(ported PyTorch weights)", window_end="layer2_0"))
register(ModelSpec("mnist_lenet_fooling", LeNetMNIST, layers.CAFFE_MNIST, (28, 28, 1), 10,
                   "mnist", "Caffe LeNet of Evolving-AI-Lab/fooling (ported Caffe weights)"))
register(ModelSpec("mnist_lenet", LeNetMNIST, layers.MNIST_STANDARD, (28, 28, 1), 10, "mnist",
                   "Caffe-style LeNet trained in pixeljax"))
register(ModelSpec("cifar10_allcnn", AllCNNC, layers.CIFAR_STANDARD, _CIFAR, 10, "cifar10",
                   "All-CNN-C (Springenberg et al.), trained in pixeljax"))
register(ModelSpec("cifar10_nin", NiN, layers.CIFAR_STANDARD, _CIFAR, 10, "cifar10",
                   "Network in Network (Lin et al.), trained in pixeljax"))
register(ModelSpec("cifar10_vgg16", VGG16, layers.CIFAR_STANDARD, _CIFAR, 10, "cifar10",
                   "VGG16 for CIFAR-10, trained in pixeljax"))
register(ModelSpec("imagenet_alexnet", AlexNet, layers.IMAGENET_STANDARD, (224, 224, 3), 1000,
                   "imagenet2012", "AlexNet for 224x224 inputs (architecture only)"))


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
  """A model with its weights: call it on images to get probabilities.

  ``predict`` is the pure function ``images -> probabilities`` that engines take as their
  black box; it validates nothing, so it can be traced inside jit/vmap. Calling the
  classifier itself validates shape, dtype and range first.
  """
  spec: ModelSpec
  module: PixelClassifier
  variables: Any
  metadata: Dict[str, Any]

  @property
  def name(self):
    return self.spec.name

  @property
  def num_classes(self) -> int:
    return int(self.metadata.get("num_classes", self.spec.num_classes))

  def predict(self, images):
    return self.module.apply(self.variables, images, train=False)

  @functools.cached_property
  def factored(self) -> Optional["stem.Factored"]:
    """``predict`` split at the first convolution (``pixeljax.models.stem``), so attacks can
    evaluate few-pixel changes incrementally, with its ``window`` / ``strided_window`` for
    one-pixel changes (``pixeljax.models.window`` where the spec names a local prefix, else
    found in the traced program by ``pixeljax.models.traced_window``); None when the net does
    not factor. Built (and checked) on first use; the same object afterwards, so compiled
    attacks are reused."""
    f = stem.factor(self.predict, self.module, self.variables, self.spec.input_shape)
    if f is None:
      return None
    if self.spec.window_end:    # its named prefix (stride 1)
      localizer = lambda strided=False: None if strided else window.localize(
          self.predict, self.module, self.variables, self.spec.input_shape,
          self.spec.window_end)
    else:     # found in the traced program (``models.traced_window``), where it has one
      localizer = lambda strided=False: traced_window.localize(
          self.predict, self.spec.input_shape, strided=strided)
    return dataclasses.replace(f, localizer=localizer)

  @functools.cached_property
  def _jit_predict(self):
    return jax.jit(self.predict)

  def __call__(self, images):
    return self._jit_predict(check_images(images, self.spec.input_shape, self.name))


def check_images(images, input_shape=None, who="model"):
  """Validates a batch of pixel images for a model (``input_shape`` (H, W, C); None: any);
  returns it as float32."""
  shape = np.shape(images)
  if len(shape) == 4 and input_shape is None:
    input_shape = shape[1:]          # a black box: any image size
  if len(shape) != 4 or tuple(shape[1:]) != tuple(input_shape):
    want = ", ".join(map(str, input_shape)) if input_shape is not None else "H, W, C"
    raise UserError(f"{who} expects images of shape (N, {want}) "
                     f"(NHWC), got {tuple(shape)}")
  check_pixels(images, who)
  return jnp.asarray(images, jnp.float32)


def check_pixels(images, who="model") -> None:
  """Pixel values a model takes: uint8, or floats that are finite and in [0, 255] (of a
  traced array, only its dtype can be checked)."""
  dtype = np.dtype(getattr(images, "dtype", np.float32))
  if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
    raise UserError(f"{who} expects uint8 or float pixel images, got dtype {dtype}")
  if not isinstance(images, jax.core.Tracer) and np.issubdtype(dtype, np.floating):
    arr = np.asarray(images)
    if arr.size and not np.all(np.isfinite(arr)):
      raise UserError(f"{who} expects pixels in [0, 255]; the images hold NaN or infinite "
                      f"values")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
      raise UserError(f"{who} expects pixels in [0, 255]; got values in "
                      f"[{arr.min()}, {arr.max()}]")


def load(name: str, directory: Optional[str] = None) -> Classifier:
  """Loads a shipped (or your own) checkpoint ``<directory>/<name>.msgpack`` by model name."""
  spec = get(name)
  prefix = os.path.join(directory or checkpoint_dir(), name)
  if not os.path.exists(prefix + ".msgpack"):
    raise ckpt.CheckpointError(
        f"no checkpoint for model {name!r} at {prefix}.msgpack; train it with "
        f"experiments/train.py or point PIXELJAX_CHECKPOINT_DIR at your checkpoints")
  meta = ckpt.read_metadata(prefix)
  if meta.get("model", name) != name:
    raise ckpt.CheckpointError(f"checkpoint {prefix} is for model {meta['model']!r}, "
                               f"not {name!r}")
  num_classes = meta.get("num_classes", spec.num_classes)
  template = jax.eval_shape(lambda: spec.init(jax.random.PRNGKey(0), num_classes))
  template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), template)
  variables, meta = ckpt.load(prefix, template)
  return Classifier(spec, spec.module(num_classes), variables, meta)
