r"""The whole one-pixel programme of issue 26 as one resumable command.

  python experiments/reproduce.py --workdir results/reproduce          # everything, in order
  python experiments/reproduce.py --config.runtime.steps=reimplementation \
      --workdir results/reproduce

Steps (``runtime.steps``, never compared on resume; each is a run of an
existing experiment script in its own folder under --workdir, resumable, skipped once
finished by the same command and weights, refused if finished by others; see
experiments/reproduce.py):
  * ``train``: the one-pixel paper's nets (All-CNN-C, NiN, VGG16) on the CIFAR-10 JPEG copy,
    each recipe below; a net whose checkpoint is in ``checkpoints/`` is not retrained, and
    one whose metadata records another recipe or storage than below is refused by name (move
    it away to retrain it);
  * ``paper``: the paper's experiment on each trained net -- DE/rand/1, population 400, 100
    generations, the paper's stopping rule, 1 / 3 / 5 pixels, untargeted on
    ``paper_images`` correctly classified exact test images, targeted on
    ``paper_targeted_images`` x 9 targets; beside the untargeted run, the exhaustive
    one-pixel bound on its images (every position x the 8 corners of the colour cube);
  * ``reimplementation``: the Keras reimplementation's twelve cells on the shipped
    Hyperparticle LeNet and ResNet-32 -- SciPy's best1bin, population 400, 75 generations,
    first success, 1 / 3 / 5 pixels, ``reimplementation_images`` images, untargeted and
    targeted (every image x 9 targets);
  * ``tables``: ``summary.md`` in --workdir, every finished run beside the published figure.

Runs go in this order: training, each net's bound and untargeted run, the reimplementation's
untargeted cells, then every targeted run (paper nets, then the reimplementation's), so the
cheaper untargeted cells land first.

On a GPU or TPU host the same command runs there (JAX picks the accelerator); on a CPU it
runs for many hours: start it in the background, and rerun the same command to resume.
"""
from ml_collections import ConfigDict

STEPS = ("train", "paper", "reimplementation", "tables")
PAPER_NETS = ("cifar10_allcnn", "cifar10_nin", "cifar10_vgg16")
REIMPLEMENTATION_NETS = ("cifar10_lenet_hyperparticle", "cifar10_resnet32_hyperparticle")


def get_config(arg=None):
  c = ConfigDict()
  c.paper_nets = ",".join(PAPER_NETS)
  c.reimplementation_nets = ",".join(REIMPLEMENTATION_NETS)
  # Training recipes: configs/train.py's defaults (SGD, Nesterov, cosine, crop + flip, batch
  # 128, weight decay 5e-4) with these ``TrainConfig`` overrides per net. Sized for one
  # 3-hour sitting of this project's 2-core CPU, since a sitting may start on a fresh machine
  # where only what landed in git remains (training state is not committed): 8 epochs, a
  # short one-cycle-like schedule (one warm-up epoch to 0.1, cosine to 0). All-CNN-C: ~2 h at
  # the ~60 images/s of an AVX-512 machine (on an AVX2 one, 25-26 images/s: ~4.3 h, more than
  # a sitting; train there only where the machine persists). 5 epochs reached 84.27% on the
  # exact images, under issue 26's 85% (results/training/cifar10_allcnn_5ep_below_bar.json).
  # The nets' dropout layers are off in training (``dropout``): with them, made for the
  # originals' 300-350 epochs, All-CNN-C stood at 80% train accuracy after 15 epochs
  # (underfitting; results/training/). The nets keep batch norm, crop + flip and weight decay
  # as regularisers.
  recipe = dict(epochs=8, learning_rate=0.1, warmup_epochs=1.0, dropout=False)
  c.train_recipe = ConfigDict({net: dict(recipe) for net in PAPER_NETS})
  # How each checkpoint is stored: bfloat16 (All-CNN-C 2.7 MB, NiN 1.9 MB); VGG16's 15.0 M
  # parameters would be 30 MB so, 4-bit kernels with a float32 scale per output channel
  # (7.6 MB; on the 1,017 exact images 87.61%, int8 87.91%, float32 88.00%, 3-bit levels
  # 85.05%). The small nets stay bfloat16: int4 cost LeNet (Hyperparticle) 74.7 -> 61.1% and
  # ResNet-32 93.2 -> 91.4%.
  c.store_dtype = ConfigDict(dict(cifar10_allcnn="bfloat16", cifar10_nin="bfloat16",
                                  cifar10_vgg16="int4"))
  c.paper_images = 100
  # Targeted: every image x 9 targets. 10 images are 90 attacks per net and pixel count (the
  # issue asks >= 30); on this project's 2-core CPU each net's targeted run is ~12 h at that
  # (30 images: ~35 h). An accelerator host can raise it.
  c.paper_targeted_images = 10
  c.reimplementation_images = 100
  c.pixels = (1, 3, 5)
  c.seed = 0
  # Extra flags for every attack run (e.g. "--config.runtime.attacks_per_call=50").
  c.attack_flags = ""
  c.runtime = ConfigDict(dict(steps=",".join(STEPS)))
  if arg == "smoke":        # seconds, for the tests: tiny budgets, two images, LeNet only
    c.runtime.steps = "reimplementation,tables"
    c.reimplementation_nets = "cifar10_lenet_hyperparticle"
    c.reimplementation_images = 2
    c.pixels = (1,)
    c.attack_flags = "--config.attack.popsize=8 --config.attack.generations=1"
  elif arg:
    raise ValueError(f"unknown named config {arg!r} for configs/reproduce.py; known: smoke")
  return c
