r"""One-pixel / few-pixel attack (Su, Vargas & Sakurai): the run's one source of settings.

  python experiments/one_pixel.py --workdir runs/x                       # paper, untargeted
  python experiments/one_pixel.py --config=configs/one_pixel.py:paper_targeted --workdir ...
  python experiments/one_pixel.py --config.model=cifar10_resnet32_hyperparticle \
      --config.attack.strategy=best1bin --config.pixels=3 --workdir runs/y
  python experiments/one_pixel.py --config.model=my_net.keras \
      --config.model_preprocess.mean="(125.3,123.0,113.9)" --workdir runs/mine
  python experiments/one_pixel.py --config.model=torch:my_nets:resnet20 \
      --config.model_preprocess.scale=0.00392156862745098 --workdir runs/torch

Named settings (``:name``): ``paper`` (default: 500 correctly classified images, 1/3/5 pixels,
DE/rand/1, population 400, 100 generations, untargeted), ``paper_targeted``, ``best1bin``
(SciPy's DE as the peers call it), ``sparse_rs`` / ``corner_search`` (margin loss, first
success, k = 1, 3, 5, 10), ``de_first_success`` / ``best1bin_first_success`` (DE under that
stopping rule), each of these four also targeted (``sparse_rs_targeted``, ...), ``demo`` (the fast default job of ``make demo``), and one per
published run in ``results/one_pixel`` (``lenet_rand1``, ``lenet_best1bin``,
``lenet_rand1_success_first``, ``lenet_best1bin_success_first``, ``lenet_targeted_10img``).
The attack's defaults are read from ``PixelAttackConfig`` itself, so they are written once.
``attack`` says what is attacked; how candidates are evaluated is the engine's choice
(``pixeljax.sparse.evaluator``), recorded per pixel count in results.json (``execution``) and
in each chunk folder, where a resume compares it. Everything except ``runtime`` claims the
workdir; ``runtime.execution`` insists on an execution (rarely needed: a resumed run reuses
its stored one).
"""
import dataclasses
import typing

from ml_collections import ConfigDict, config_dict

from pixeljax.models import files
from pixeljax.sparse.problem import PixelAttackConfig

# Relative paths that do not exist from the current directory are read relative to the
# repository (pixeljax.data.load), so this names ../shared beside it from anywhere.
EXACT_CIFAR10 = "../shared/data/cifar10_test_exact1017.npz"


def attack_defaults() -> ConfigDict:
  hints = typing.get_type_hints(PixelAttackConfig)
  fields = {}
  for f in dataclasses.fields(PixelAttackConfig):
    if f.default is None:   # Optional[X]: None means "the method's default"; typed for flags
      kind = [t for t in typing.get_args(hints[f.name]) if t is not type(None)][0]
      fields[f.name] = config_dict.placeholder(kind)
    else:
      fields[f.name] = f.default
  del fields["pixels"]   # a run attacks with every count in config.pixels
  return ConfigDict(fields)


def get_config(arg: str = "paper") -> ConfigDict:
  c = ConfigDict()
  # A zoo name, a saved Keras model (.keras, .h5) or torch:module:function (a function
  # returning a torch.nn.Module; also torch:path/to/file.py:function, keras:module:function).
  c.model = "cifar10_lenet_hyperparticle"
  # An imported model's options (a zoo model has its own): model_preprocess.scale/mean/std
  # ((x * scale - mean) / std per channel, pixels in [0, 255]), model_softmax (auto / True /
  # False), model_input_shape (H, W, C; unset: the data's), model_layout (NCHW / NHWC).
  c.update(files.config_settings())
  c.data = "cifar10_samples"          # a data set name or an .npz path (pixeljax.data)
  c.split = "test"
  c.data_dir = config_dict.placeholder(str)   # TFDS data_dir, for tfds data sets
  c.num_images = 500                  # correctly classified images, drawn with `seed`
  c.seed = 0
  c.pixels = (1, 3, 5)
  c.attack = attack_defaults()
  c.exhaustive = False                # also the exhaustive one-pixel bound (pixels=(): alone)
  c.exhaustive_levels = (0., 255.)    # its colour grid: 0,255 = the 8 RGB-cube corners
  c.figures = True
  c.runtime = ConfigDict(dict(
      attacks_per_call=config_dict.placeholder(int),  # None: sized to device memory
      shard=True,                     # shard attacks over every device (CPU devices of
      #                                 one host: deal them the model calls instead)
      cpu_devices=config_dict.placeholder(int),   # split the CPU into this many devices
      #                                 (None: one per core)
      distributed=False,              # jax.distributed.initialize() first (multi-host)
      progress=True,
      # Insist on how candidates are evaluated (None: the engine's choice; a resumed run: its
      # stored one): pixeljax.sparse.Execution's fields.
      execution=ConfigDict(dict(call_size=config_dict.placeholder(int),
                                incremental=config_dict.placeholder(bool),
                                window=config_dict.placeholder(bool),
                                strided_window=config_dict.placeholder(bool),
                                devices=config_dict.placeholder(int),
                                segment=config_dict.placeholder(int)))))

  arg = arg or "paper"
  if arg == "paper":
    pass
  elif arg == "paper_targeted":
    c.attack.targeted = True
  elif arg == "best1bin":
    c.attack.strategy = "best1bin"
  elif arg.removesuffix("_targeted") in ("sparse_rs", "corner_search"):
    # Query-efficient L0 attacks: margin loss (targeted Sparse-RS: cross-entropy, as its
    # authors), stop at the first success, 10k / 100k queries.
    c.attack.method = arg.removesuffix("_targeted")
    c.attack.targeted = arg.endswith("_targeted")
    c.attack.loss = "ce" if c.attack.targeted and c.attack.method == "sparse_rs" else "margin"
    c.pixels = (1, 3, 5, 10)
  elif arg.removesuffix("_targeted") in ("de_first_success", "best1bin_first_success"):
    # DE under the same stopping rule as the sparse attacks (for side-by-side comparisons).
    c.attack.strategy = "best1bin" if arg.startswith("best1bin") else "rand1"
    c.attack.stop = "first_success"
    c.attack.targeted = arg.endswith("_targeted")
    c.pixels = (1, 3, 5, 10)
  elif arg == "demo":
    # Fast and real: SciPy's best1bin with the success-first ranking fools ~90% of the LeNet's
    # images with 3 pixels at about half the paper's queries.
    c.num_images = 24
    c.pixels = (3,)
    c.attack.strategy = "best1bin"
    c.attack.success_first = True
  elif arg.startswith("lenet_"):
    c.data = EXACT_CIFAR10
    if arg == "lenet_targeted_10img":
      c.num_images, c.pixels, c.attack.targeted = 10, (1, 3), True
    else:
      rest = arg[len("lenet_"):]
      c.attack.success_first = rest.endswith("_success_first")
      c.attack.strategy = rest.replace("_success_first", "")
      c.exhaustive = True
      if c.attack.strategy not in ("rand1", "best1bin"):
        raise ValueError(f"unknown named config {arg!r}")
  else:
    raise ValueError(f"unknown named config {arg!r} for configs/one_pixel.py; known: paper, "
                     f"paper_targeted, best1bin, sparse_rs, corner_search, de_first_success, "
                     f"best1bin_first_success (each of these four also + _targeted), demo, "
                     f"lenet_rand1, "
                     f"lenet_best1bin, "
                     f"lenet_rand1_success_first, lenet_best1bin_success_first, "
                     f"lenet_targeted_10img")
  return c
