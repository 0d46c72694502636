r"""Training a zoo model; one config per recipe.

  python experiments/train.py --workdir runs/train_mnist_lenet          # the default
  python experiments/train.py --config=configs/train.py:cifar10_allcnn --workdir runs/allcnn
  python experiments/train.py --config.train.epochs=8 --config.out_dir=checkpoints \
      --workdir runs/mnist_lenet_8

Named settings are model names: ``mnist_lenet`` (the default) and other ``mnist_*`` models
get the recipe of the shipped ``checkpoints/mnist_lenet`` (6 epochs Adam 1e-3, cosine, no
augmentation, on MNIST); any other zoo model the library's ``TrainConfig`` defaults (SGD
0.05, cosine, crop + flip) on the CIFAR-10 JPEG copy. The checkpoint goes to
``<workdir>/checkpoint/`` unless ``out_dir`` names another folder (``checkpoints`` ships it).
"""
import dataclasses

from ml_collections import ConfigDict

from pixeljax.train import TrainConfig

DEFAULT = "mnist_lenet"


def get_config(arg=None):
  name = arg or DEFAULT
  train = dataclasses.asdict(TrainConfig())
  del train["num_classes"]                  # the model's own head
  c = ConfigDict()
  c.name = name
  c.model = name
  c.train = ConfigDict(train)
  if name.startswith("mnist"):
    c.train_data = "../shared/data/mnist.npz"
    c.train.update(epochs=6, optimizer="adam", learning_rate=1e-3, weight_decay=0.0,
                   augment=False)
  else:
    c.train_data = "../shared/data/cifar10_jpeg75.npz"
  c.test_data = ""          # data set or .npz for testing; "" = the test split of train_data
  c.num_train = 0           # use only the first N training images; 0 = all
  c.out_dir = ""            # where the checkpoint goes; "" = <workdir>/checkpoint
  c.store_dtype = "float32"   # checkpoint: float32, bfloat16, int8 or int4 (kernels per channel)
  # never change a result: progress shown (bar or log lines), seconds between lines,
  # training steps between updates, seconds between saves of the state within an epoch
  c.runtime = ConfigDict(dict(progress=True, progress_interval=5.0, log_every=100,
                              save_interval=600.0,
                              # ... except this one: how many devices split each batch (0: as
                              # many as divide it; a resumed run: its own). Float sums depend
                              # on it, so the run records it (settings.json, the checkpoint's
                              # metadata) and a resume with another count is refused.
                              devices=0))
  return c
