"""Image data sets as plain arrays: uint8 NHWC images, int32 labels, class names.

Three sources behind one call, ``load(name, split)``:
  * the samples bundled with the package (``cifar10_samples``: 500 exact CIFAR-10 test images;
    ``mnist_samples``: 500 MNIST test images) -- the default of the demo and the tests;
  * a local ``.npz`` with ``x_<split>`` / ``y_<split>`` keys (e.g. ``../shared/data/mnist.npz``);
  * TensorFlow Datasets' ``data_source`` for ``mnist``, ``cifar10`` and ``imagenet2012``
    (prepared in a user-supplied ``data_dir``), imported lazily so nothing else needs tfds.
"""
import dataclasses
import os
import zipfile
from typing import Optional, Tuple

import numpy as np

from pixeljax.errors import UserError

SAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
MNIST_CLASSES = tuple(str(i) for i in range(10))

BUNDLED = {"cifar10_samples": "cifar10_test500.npz", "mnist_samples": "mnist_test500.npz"}
TFDS_NAMES = ("mnist", "cifar10", "imagenet2012")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """``images`` (N, H, W, C) uint8, ``labels`` (N,) int32, ``index`` (N,) position in the
  source split (so results can name the original test image)."""
  name: str
  split: str
  images: np.ndarray
  labels: np.ndarray
  class_names: Tuple[str, ...]
  index: np.ndarray

  def __len__(self):
    return len(self.labels)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def take(self, idx) -> "Dataset":
    idx = np.asarray(idx)
    return dataclasses.replace(self, images=self.images[idx], labels=self.labels[idx],
                               index=self.index[idx])


def names():
  return sorted(BUNDLED) + list(TFDS_NAMES) + ["<path>.npz"]


def _beside_repo(path: str) -> str:
  """A relative path that does not exist from here, read relative to the repository when it
  exists there: the named configs say ``../shared/data/...`` (the shared data beside the
  checkout), and a command run from another folder still finds it."""
  if os.path.isabs(path) or os.path.exists(path):
    return path
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  there = os.path.normpath(os.path.join(repo, path))
  return there if os.path.exists(there) else path


def load(name: str, split: str = "test", *, data_dir: Optional[str] = None,
         num_examples: Optional[int] = None, image_size: Optional[int] = None) -> Dataset:
  """Loads a data set by name (see module doc). ``image_size`` centre-crops and resizes
  (for ImageNet, whose images vary in size); ``num_examples`` takes the first N."""
  if name in BUNDLED:
    ds = _from_npz(os.path.join(SAMPLES_DIR, BUNDLED[name]), split, name)
  elif name.endswith(".npz") or os.path.isfile(name):
    name = _beside_repo(name)
    if not os.path.isfile(name):
      raise UserError(f"data file {name} " + ("is a folder, not an .npz file"
                                              if os.path.isdir(name) else "does not exist"))
    ds = _from_npz(name, split, os.path.basename(name))
  elif name in TFDS_NAMES:
    ds = _from_tfds(name, split, data_dir, num_examples, image_size)
  else:
    raise UserError(f"unknown data set {name!r}; known: {', '.join(names())}")
  if num_examples is not None:
    ds = ds.take(np.arange(min(num_examples, len(ds))))
  return ds


def _from_npz(path: str, split: str, name: str) -> Dataset:
  try:
    return _read_npz(path, split, name)
  except UserError:
    raise
  except PermissionError as e:
    raise UserError(f"{path} cannot be read ({e})") from None
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    # zipfile / pickle / format errors of a file that is not (or no longer) an .npz
    raise UserError(f"{path} is corrupt or not an .npz data file "
                    f"({type(e).__name__}: {e})") from None


def _read_npz(path: str, split: str, name: str) -> Dataset:
  with np.load(path, allow_pickle=False) as d:
    xk, yk = f"x_{split}", f"y_{split}"
    if f"{split}_jpeg" in d and f"{split}_offsets" in d and yk in d:
      return _from_jpeg_npz(d, path, split, name)
    if xk not in d or yk not in d:
      raise UserError(f"{path} has no split {split!r}: expected keys {xk!r} and {yk!r}, "
                       f"found {sorted(d.files)}")
    images, labels = d[xk], d[yk]
    index = d[f"index_{split}"] if f"index_{split}" in d else np.arange(len(labels))
    class_names = tuple(str(c) for c in d["class_names"]) if "class_names" in d else None
  if images.ndim == 3:   # grayscale stored as (N, H, W)
    images = images[..., None]
  if images.dtype != np.uint8:
    raise UserError(f"{path}: expected uint8 images, got {images.dtype}")
  labels = _checked_labels(labels, len(images), f"{path} (split {split!r})")
  if len(index) != len(images):
    raise UserError(f"{path}: {len(index)} image ids for {len(images)} images")
  if class_names is None:
    class_names = _default_class_names(images, labels)
  if labels.max() >= len(class_names):
    raise UserError(f"{path}: label {labels.max()} but only {len(class_names)} class names")
  return Dataset(name, split, images, labels, class_names, index.astype(np.int64))


def _checked_labels(labels: np.ndarray, num_images: int, where: str) -> np.ndarray:
  """Labels as int32 class indices, one per image: anything else is refused here, where the
  file is named, rather than mislabelling attacks later."""
  if num_images == 0:
    raise UserError(f"{where} holds no images")
  if labels.shape != (num_images,):
    raise UserError(f"{where}: expected {num_images} labels of shape ({num_images},), got "
                    f"shape {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise UserError(f"{where}: labels must be integers, got {labels.dtype}")
  if labels.min() < 0:
    raise UserError(f"{where}: labels must be >= 0, got {labels.min()}")
  return labels.astype(np.int32)


def _from_jpeg_npz(d, path: str, split: str, name: str) -> Dataset:
  """An .npz of JPEG-compressed images (``<split>_jpeg`` bytes, ``<split>_offsets``), as the
  shared CIFAR-10 copy ``cifar10_jpeg75.npz``: decoded here, once, to uint8."""
  import io
  from PIL import Image
  blob, offsets, labels = d[f"{split}_jpeg"], d[f"{split}_offsets"], d[f"y_{split}"]
  try:
    images = np.stack([np.asarray(Image.open(io.BytesIO(
        blob[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
        for i in range(len(offsets) - 1)])
  except Exception as e:   # PIL raises several types for broken bytes
    raise UserError(f"{path}: JPEG image data of split {split!r} is corrupt ({e})") from None
  labels = _checked_labels(labels, len(images), f"{path} (split {split!r})")
  return Dataset(name, split, images, labels, _default_class_names(images, labels),
                 np.arange(len(labels), dtype=np.int64))


def _default_class_names(images, labels):
  if images.shape[1:] == (28, 28, 1):
    return MNIST_CLASSES
  if images.shape[1:] == (32, 32, 3) and labels.max() < 10:
    return CIFAR10_CLASSES
  return tuple(str(i) for i in range(int(labels.max()) + 1))


def _from_tfds(name, split, data_dir, num_examples, image_size) -> Dataset:
  import tensorflow_datasets as tfds  # lazy: only this source needs it
  builder = tfds.builder(name, data_dir=data_dir)
  source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  n = len(source) if num_examples is None else min(num_examples, len(source))
  images, labels = [], []
  for i in range(n):
    record = source[i]
    img = np.asarray(record["image"], np.uint8)
    if image_size is not None:
      img = _center_resize(img, image_size)
    images.append(img)
    labels.append(int(record["label"]))
  class_names = tuple(builder.info.features["label"].names)
  return Dataset(name, split, np.stack(images), np.asarray(labels, np.int32), class_names,
                 np.arange(n, dtype=np.int64))


def _center_resize(img: np.ndarray, size: int) -> np.ndarray:
  from PIL import Image  # Pillow comes with matplotlib
  h, w = img.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  crop = img[top:top + s, left:left + s]
  mode = None if crop.shape[-1] == 3 else "L"
  pil = Image.fromarray(crop if mode is None else crop[..., 0])
  out = np.asarray(pil.resize((size, size), Image.BILINEAR))
  return out if out.ndim == 3 else out[..., None]
