r"""Accuracy of shipped networks on a data set (default: the bundled samples), next to the
accuracy recorded in each checkpoint on its full test set.

  python experiments/evaluate.py                       # every shipped net, bundled samples
  python experiments/evaluate.py --models cifar10_resnet32_akamaster \
      --cifar10_data ../shared/data/cifar10_test_exact1017.npz
"""
import os

from absl import flags
import jax
import numpy as np

from pixeljax import cli, data, door, models
from pixeljax.errors import UserError
from pixeljax.evaluate import accuracy

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "Models (default: all with a checkpoint).")
flags.DEFINE_string("cifar10_data", "cifar10_samples", "CIFAR-10 evaluation data.")
flags.DEFINE_string("mnist_data", "mnist_samples", "MNIST evaluation data.")


def main(argv):
  del argv
  names = FLAGS.models or [n for n in models.names() if os.path.exists(
      os.path.join(models.checkpoint_dir(), n + ".msgpack"))]
  datasets = {name: models.get(name).dataset for name in names}   # an unknown name: one line
  paths = {"cifar10": FLAGS.cifar10_data, "mnist": FLAGS.mnist_data}
  for name, dataset in datasets.items():
    if dataset not in paths:
      raise UserError(f"{name} is a {dataset} model; evaluate.py measures CIFAR-10 and MNIST "
                      f"nets only")
  sets = {dataset: data.load(paths[dataset]) for dataset in set(datasets.values())}
  header = f"{'model':<34} {'params':>9} {'data':<22} {'accuracy':>9} {'full test':>9}"
  for i, name in enumerate(names):
    clf = models.load(name)
    ds = sets[clf.spec.dataset]
    images = door.images_for(clf, ds.images)   # shape, layout and scale: one line if wrong
    acc = accuracy(clf.predict, images, ds.labels)
    if i == 0:   # after the first net's images passed the door: a mistake is its one line
      print(header)
    n_params = sum(np.size(p) for p in jax.tree_util.tree_leaves(clf.variables["params"]))
    print(f"{name:<34} {n_params:>9,} {ds.name + f' ({len(ds)})':<22} {acc:>9.2%} "
          f"{clf.metadata.get('accuracy', float('nan')):>9.2%}")


if __name__ == "__main__":
  cli.run(main)
