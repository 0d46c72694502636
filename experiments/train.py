r"""Trains a zoo model and writes a checkpoint with its recipe and measured accuracy.

  python experiments/train.py --model mnist_lenet --train_data ../shared/data/mnist.npz \
      --epochs 8 --optimizer adam --learning_rate 1e-3 --noaugment --workdir runs/mnist_lenet

``--train_data`` / ``--test_data``: a data set name or ``.npz`` path (see ``pixeljax.data``);
the CIFAR JPEG copy ``cifar10_jpeg75.npz`` is decoded on the fly. An interrupted run resumes
from ``--workdir``. The final checkpoint goes to ``--out_dir/<model>.msgpack``.
"""
import io
import os

from absl import app, flags
import numpy as np

from pixeljax import checkpoint, data, models
from pixeljax.train import TrainConfig, train

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mnist_lenet", "Registered model name.")
flags.DEFINE_string("train_data", "../shared/data/mnist.npz", "Training data set or .npz.")
flags.DEFINE_string("test_data", None, "Test data (default: the test split of --train_data).")
flags.DEFINE_string("workdir", None, "Training state and history (resume point).")
flags.DEFINE_string("out_dir", "checkpoints", "Where the final checkpoint goes.")
flags.DEFINE_integer("epochs", 10, "Epochs.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam"], "Optimiser.")
flags.DEFINE_float("learning_rate", 0.05, "Peak learning rate.")
flags.DEFINE_float("weight_decay", 5e-4, "L2 weight decay on kernels.")
flags.DEFINE_enum("schedule", "cosine", ["cosine", "constant"], "Learning-rate schedule.")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up epochs.")
flags.DEFINE_bool("augment", True, "Random crop + flip (CIFAR).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_integer("num_train", None, "Use only the first N training images.")
flags.DEFINE_enum("store_dtype", "float32", ["float32", "bfloat16"], "Checkpoint dtype.")


def load_split(name: str, split: str) -> data.Dataset:
  if os.path.basename(name) == "cifar10_jpeg75.npz":
    return _decode_jpeg_cifar(name, split)
  return data.load(name, split)


def _decode_jpeg_cifar(path: str, split: str) -> data.Dataset:
  from PIL import Image
  with np.load(path) as d:
    blob, offsets, labels = d[f"{split}_jpeg"], d[f"{split}_offsets"], d[f"y_{split}"]
  images = np.stack([np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]]
                                                      .tobytes())).convert("RGB"))
                     for i in range(len(offsets) - 1)])
  return data.Dataset("cifar10_jpeg75", split, images, labels.astype(np.int32),
                      data.CIFAR10_CLASSES, np.arange(len(labels)))


def main(argv):
  del argv
  spec = models.get(FLAGS.model)
  train_set = load_split(FLAGS.train_data, "train")
  test_set = load_split(FLAGS.test_data or FLAGS.train_data, "test")
  if FLAGS.num_train:
    train_set = train_set.take(np.arange(min(FLAGS.num_train, len(train_set))))
  config = TrainConfig(epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
                       optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate,
                       weight_decay=FLAGS.weight_decay, schedule=FLAGS.schedule,
                       warmup_epochs=FLAGS.warmup_epochs, augment=FLAGS.augment,
                       seed=FLAGS.seed)
  workdir = FLAGS.workdir or os.path.join("runs", "train", FLAGS.model)
  variables, history = train(spec, train_set.images, train_set.labels, test_set.images,
                             test_set.labels, config, workdir)
  meta = dict(model=spec.name, architecture=spec.description, dataset=spec.dataset,
              num_classes=spec.num_classes, input_shape=list(spec.input_shape),
              preprocessing=spec.preprocess, source="trained in pixeljax",
              licence="Apache-2.0", accuracy=history[-1]["test_accuracy"],
              accuracy_on=f"{test_set.name} {test_set.split} ({len(test_set)} images)",
              trained_on=f"{train_set.name} train ({len(train_set)} images)",
              recipe=dict(config.__dict__), history=history)
  path = checkpoint.save(os.path.join(FLAGS.out_dir, spec.name), variables, meta,
                         dtype=None if FLAGS.store_dtype == "float32" else FLAGS.store_dtype)
  print(f"wrote {path}: test accuracy {meta['accuracy']:.4f}")


if __name__ == "__main__":
  app.run(main)
