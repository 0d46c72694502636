import os

import numpy as np
import pytest

from pixeljax import data
from pixeljax.errors import UserError


def test_bundled_samples():
  c = data.load("cifar10_samples")
  assert c.images.shape == (500, 32, 32, 3) and c.images.dtype == np.uint8
  assert c.labels.shape == (500,) and c.class_names[0] == "airplane"
  m = data.load("mnist_samples")
  assert m.images.shape == (500, 28, 28, 1) and m.num_classes == 10


def test_bundled_cifar_is_exact(shared_dir):
  exact = np.load(os.path.join(shared_dir, "data", "cifar10_test_exact1017.npz"))
  c = data.load("cifar10_samples")
  np.testing.assert_array_equal(c.images, exact["x_test"][:500])
  np.testing.assert_array_equal(c.labels, exact["y_test"][:500])


def test_local_npz(tmp_path):
  path = tmp_path / "tiny.npz"
  np.savez(path, x_train=np.zeros((4, 28, 28), np.uint8), y_train=np.arange(4))
  ds = data.load(str(path), "train", num_examples=3)
  assert ds.images.shape == (3, 28, 28, 1) and ds.class_names == data.MNIST_CLASSES
  with pytest.raises(ValueError, match="no split 'test'"):
    data.load(str(path), "test")


def test_unknown_data_set():
  with pytest.raises(UserError, match="unknown data set 'svhn'"):
    data.load("svhn")
  with pytest.raises(UserError, match="does not exist"):
    data.load("/nonexistent/file.npz")


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_data_source_with_mock_data(name, shape, tmp_path, monkeypatch):
  import tempfile
  import tensorflow_datasets as tfds
  # tfds's mock writes a temporary folder per data set and leaves it behind: keep it in
  # pytest's own temporary folder.
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  with tfds.testing.mock_data(num_examples=6,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data.load(name, "test")
  assert ds.images.shape == (6,) + shape and ds.images.dtype == np.uint8
  assert ds.labels.shape == (6,) and len(ds.class_names) == 10


def test_jpeg_npz_is_decoded(tmp_path):
  import io
  from PIL import Image
  ramp = np.linspace(0, 255, 32)
  images = np.stack([np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :] * s,
                                                  np.full((32, 32), 60.0 * s)), -1)
                     for s in (0.2, 0.5, 1.0)]).astype(np.uint8)   # smooth: JPEG keeps them
  blobs = []
  for im in images:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="JPEG", quality=100)
    blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
  offsets = np.cumsum([0] + [len(b) for b in blobs])
  np.savez(tmp_path / "j.npz", test_jpeg=np.concatenate(blobs), test_offsets=offsets,
           y_test=np.array([1, 2, 3]))
  ds = data.load(str(tmp_path / "j.npz"), "test")
  assert ds.images.shape == (3, 32, 32, 3) and ds.images.dtype == np.uint8
  assert np.abs(ds.images.astype(int) - images).mean() < 3      # JPEG is lossy
  np.testing.assert_array_equal(ds.labels, [1, 2, 3])
  np.savez(tmp_path / "bad.npz", test_jpeg=np.zeros(10, np.uint8), test_offsets=[0, 10],
           y_test=np.array([0]))
  with pytest.raises(UserError, match="corrupt"):
    data.load(str(tmp_path / "bad.npz"), "test")


@pytest.mark.parametrize("arrays, message", [
    (dict(x_test=np.zeros((5, 28, 28), np.uint8), y_test=np.arange(4)), r"expected 5 labels"),
    (dict(x_test=np.zeros((0, 28, 28), np.uint8), y_test=np.zeros(0, int)), "holds no images"),
    (dict(x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.zeros((2, 1), int)),
     r"shape \(2, 1\)"),
    (dict(x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.array([3.7, 1.0])),
     "labels must be integers"),
    (dict(x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.array([-1, 1])), "must be >= 0"),
    (dict(x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.array([0, 2]),
          class_names=np.array(["a", "b"])), "label 2 but only 2 class names"),
    (dict(x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.array([0, 1]),
          index_test=np.arange(3)), "3 image ids for 2 images"),
])
def test_npz_labels_that_do_not_fit_the_images_are_named(tmp_path, arrays, message):
  np.savez(tmp_path / "d.npz", **arrays)
  with pytest.raises(UserError, match=message):
    data.load(str(tmp_path / "d.npz"))


def test_a_file_that_is_not_an_npz_is_named(tmp_path):
  (tmp_path / "text.npz").write_text("not an archive")
  with pytest.raises(UserError, match="corrupt or not an .npz data file"):
    data.load(str(tmp_path / "text.npz"))
  np.savez(tmp_path / "whole.npz", x_test=np.zeros((9, 28, 28), np.uint8), y_test=np.arange(9))
  (tmp_path / "cut.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:300])
  with pytest.raises(UserError, match="corrupt or not an .npz data file"):
    data.load(str(tmp_path / "cut.npz"))
  os.mkdir(tmp_path / "folder.npz")
  with pytest.raises(UserError, match="is a folder"):
    data.load(str(tmp_path / "folder.npz"))
