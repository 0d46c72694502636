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
def test_tfds_data_source_with_mock_data(name, shape):
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=6,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data.load(name, "test")
  assert ds.images.shape == (6,) + shape and ds.images.dtype == np.uint8
  assert ds.labels.shape == (6,) and len(ds.class_names) == 10
