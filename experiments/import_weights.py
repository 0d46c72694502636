r"""Converts the peers' pretrained weights (``../shared/weights``) into shipped checkpoints.

  python experiments/import_weights.py --weights_dir ../shared/weights \
      --data_dir ../shared/data --out_dir checkpoints

For each port: converts the arrays, checks the Flax model against the original framework's
``probs`` (``*.reference.npz``, first 64 images) and measures accuracy on the exact test data,
then writes ``<name>.msgpack`` + ``<name>.json`` with that provenance.
"""
import json
import os

from absl import flags
import numpy as np

from pixeljax import checkpoint, cli, data, models, workdir
from pixeljax.errors import UserError
from pixeljax.evaluate import accuracy
from pixeljax.models.registry import Classifier
from pixeljax.weight_import import CONVERTERS

FLAGS = flags.FLAGS
flags.DEFINE_string("weights_dir", "../shared/weights", "Folder of the peers' .npz weights.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder of mnist.npz and the exact CIFAR-10.")
flags.DEFINE_string("out_dir", "checkpoints", "Where the checkpoints go.")
flags.DEFINE_list("models", sorted(CONVERTERS), "Which ports to convert.")

SOURCES = {
    "cifar10_lenet_hyperparticle": ("Hyperparticle/one-pixel-attack-keras (Keras)", "MIT"),
    "cifar10_resnet32_hyperparticle": ("Hyperparticle/one-pixel-attack-keras (Keras)", "MIT"),
    "cifar10_resnet20_akamaster": ("akamaster/pytorch_resnet_cifar10 (PyTorch)", "BSD-2-Clause"),
    "cifar10_resnet32_akamaster": ("akamaster/pytorch_resnet_cifar10 (PyTorch)", "BSD-2-Clause"),
    "mnist_lenet_fooling": ("Evolving-AI-Lab/fooling (Caffe)", "see the original repository"),
}


def eval_set(dataset: str, data_dir: str) -> data.Dataset:
  if dataset == "mnist":
    return data.load(os.path.join(data_dir, "mnist.npz"), "test")
  return data.load(os.path.join(data_dir, "cifar10_test_exact1017.npz"), "test")


def check_request(names, weights_dir: str) -> None:
  """Before any conversion: every name has a converter and both of its files exist (one
  line for the first that does not)."""
  for name in names:
    if name not in CONVERTERS:
      raise UserError(f"no converter for {name!r}; ports: {', '.join(sorted(CONVERTERS))}")
    for suffix in (".npz", ".reference.npz"):
      path = os.path.join(weights_dir, name + suffix)
      if not os.path.isfile(path):
        raise UserError(f"weights file {path} does not exist (--weights_dir)")


def convert(name: str, weights_dir: str, data_dir: str):
  """Returns (variables, metadata) of a verified port; raises ``UserError`` if it misses the
  reference (checked before the accuracy is measured) or a file lacks an array."""
  spec = models.get(name)
  weights_path = os.path.join(weights_dir, name + ".npz")
  reference_path = os.path.join(weights_dir, name + ".reference.npz")
  with np.load(weights_path) as f:
    arrays = {k: f[k] for k in f.files}
  try:
    variables = CONVERTERS[name](arrays)
  except KeyError as e:
    raise UserError(f"{weights_path} lacks the array {e.args[0]!r} the {name} port needs")
  clf = Classifier(spec, spec.module(), variables, {})
  ds = eval_set(spec.dataset, data_dir)
  with np.load(reference_path) as ref:
    missing = [k for k in ("probs", "image_index") if k not in ref.files]
    accuracies = [k for k in ref.files if k.startswith("accuracy")]
    if missing or not accuracies:
      raise UserError(f"{reference_path} lacks {', '.join(missing or ['an accuracy* array'])}")
    ref_probs, ref_index = ref["probs"], ref["image_index"]
    ref_acc = float(ref[accuracies[0]])
  probs = np.asarray(clf(ds.images[ref_index]))
  max_err = float(np.max(np.abs(probs - ref_probs)))
  if max_err > 1e-4:
    raise UserError(f"{name}: the port differs from the reference probabilities by "
                    f"{max_err:.2e} (> 1e-4); not saved")
  acc = accuracy(clf.predict, ds.images, ds.labels)
  source, licence = SOURCES[name]
  meta = dict(model=name, architecture=spec.description, dataset=spec.dataset,
              num_classes=spec.num_classes, input_shape=list(spec.input_shape),
              preprocessing=spec.preprocess, source=source, licence=licence,
              accuracy=acc, accuracy_reference=ref_acc,
              accuracy_on=("MNIST test, 10,000 images" if spec.dataset == "mnist"
                           else "CIFAR-10 exact test images 0..1016"),
              reference_max_abs_error=max_err,
              # which files and which code made it (a re-import must say if either changed)
              source_files={os.path.basename(p): workdir.file_sha256(p)
                            for p in (weights_path, reference_path)},
              code=cli.code_version())
  return variables, meta


def main(argv):
  del argv
  check_request(FLAGS.models, FLAGS.weights_dir)
  for name in FLAGS.models:
    variables, meta = convert(name, FLAGS.weights_dir, FLAGS.data_dir)
    checkpoint.save(os.path.join(FLAGS.out_dir, name), variables, meta)
    print(json.dumps({k: meta[k] for k in ("model", "accuracy", "accuracy_reference",
                                           "reference_max_abs_error")}))


if __name__ == "__main__":
  cli.run(main)
