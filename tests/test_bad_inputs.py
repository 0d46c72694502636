"""The bad-input table (issue 24, item 8): every mistake a user can make at a public entry of
the library or on the command line is one line that names it -- a ``UserError`` whose message
has no newline, or, from ``experiments/one_pixel.py``, exit 2 with a single ``error:`` line on
stderr and no traceback.

Library cases go through ``pixeljax.attack``, ``pixeljax.exhaustive_one_pixel``,
``pixeljax.select_images``, ``pixeljax.PixelAttackConfig``, ``pixeljax.Execution``,
``pixeljax.models.load`` and ``pixeljax.data.load`` on the bundled CIFAR-10 samples and the
shipped LeNet. CLI cases fail before any attack compiles (each costs one interpreter start).
"""
import os
import re
import subprocess
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pixeljax
from pixeljax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "one_pixel.py")
KEY = jax.random.PRNGKey(0)


def cfg(**over):
  return pixeljax.PixelAttackConfig(**{"popsize": 16, "generations": 2, **over})


def _two(d):
  """Two correctly classified bundled images (pixels in [0, 255], uint8) and labels."""
  return d.images[:2], d.labels[:2]


def _attack(m, d, images=None, labels=None, model=None, config=None, key=KEY, **kwargs):
  imgs, labs = _two(d)
  return pixeljax.attack(m if model is None else model, imgs if images is None else images,
                         labs if labels is None else labels, key,
                         cfg() if config is None else config, **kwargs)


def _logits(m):
  return lambda x: m.module.apply(m.variables, x, method="logits")


def _corrupt_npz(tmp):
  path = tmp / "corrupt.npz"
  path.write_bytes(b"PK\x03\x04 this is not a zip archive")
  return pixeljax.data.load(str(path))


def _devices_beyond(m, d):
  # One CPU device in the test process (conftest); ask for two more than there are.
  return _attack(m, d, execution=dict(devices=len(jax.devices()) + 2))


# (id, call(model, samples, tmp_path), message regex): each raises one UserError line.
LIBRARY = [
    ("attack: images scaled to [0, 1]",
     lambda m, d, t: _attack(m, d, images=_two(d)[0] / 255.),
     r"^the images look scaled to \[0, 1\] \(largest value 1\); pixeljax takes pixels in "
     r"\[0, 255\]: pass images \* 255$"),
    ("attack: NCHW images",
     lambda m, d, t: _attack(m, d, images=_two(d)[0].transpose(0, 3, 1, 2)),
     r"^images of shape \(2, 3, 32, 32\) look like NCHW; pixeljax takes NHWC \(N, H, W, C\): "
     r"pass images\.transpose\(0, 2, 3, 1\)$"),
    ("attack: 28x28x1 images on the 32x32x3 net",
     lambda m, d, t: _attack(m, d, images=np.zeros((2, 28, 28, 1), np.uint8)),
     r"^cifar10_lenet_hyperparticle expects images of shape \(N, 32, 32, 3\) \(NHWC\), "
     r"got \(2, 28, 28, 1\)$"),
    ("attack: an empty batch",
     lambda m, d, t: _attack(m, d, images=d.images[:0], labels=d.labels[:0]),
     r"^no images to attack: the batch is empty$"),
    ("attack: NaN pixels",
     lambda m, d, t: _attack(m, d, images=np.where(np.arange(32)[:, None, None] == 5, np.nan,
                                                   _two(d)[0].astype(np.float32))),
     r"^cifar10_lenet_hyperparticle expects pixels in \[0, 255\]; the images hold NaN or "
     r"infinite values$"),
    ("attack: pixels > 255",
     lambda m, d, t: _attack(m, d, images=_two(d)[0] * np.float32(1.5)),
     r"^cifar10_lenet_hyperparticle expects pixels in \[0, 255\]; got values in "
     r"\[[0-9.]+, 382\.5\]$"),
    ("attack: int64 images",
     lambda m, d, t: _attack(m, d, images=_two(d)[0].astype(np.int64)),
     r"^cifar10_lenet_hyperparticle expects uint8 or float pixel images, got dtype int64$"),
    ("attack: a predict returning logits",
     lambda m, d, t: _attack(m, d, model=_logits(m)),
     r"^the model returns logits, not probabilities \(values in \[-?[0-9.e+-]+, [0-9.e+-]+\], "
     r"rows summing to .*\): wrap it as lambda x: jax\.nn\.softmax\(predict\(x\)\)$"),
    ("attack: a predict returning log-probabilities",
     lambda m, d, t: _attack(m, d, model=lambda x: jax.nn.log_softmax(_logits(m)(x))),
     r"^the model returns log-probabilities \(rows of exp sum to 1\), not probabilities: "
     r"wrap it as lambda x: jnp\.exp\(predict\(x\)\)$"),
    ("attack: a predict returning NaN",
     lambda m, d, t: _attack(m, d, model=lambda x: jnp.full((x.shape[0], 10), jnp.nan)),
     r"^the model returned NaN or infinite outputs; check its weights and preprocessing$"),
    ("attack: labels of the wrong shape",
     lambda m, d, t: _attack(m, d, labels=_two(d)[1][:, None]),
     r"^labels and targets must have shape \(2,\), got \(2, 1\) and \(2,\)$"),
    ("attack: a label out of range",
     lambda m, d, t: _attack(m, d, labels=np.array([3, 10])),
     r"^label out of range \[0, 10\): found 3\.\.10$"),
    ("attack: targeted without targets",
     lambda m, d, t: _attack(m, d, config=cfg(targeted=True)),
     r"^targeted attack needs targets$"),
    ("attack: a target equal to the label",
     lambda m, d, t: _attack(m, d, config=cfg(targeted=True), targets=_two(d)[1]),
     r"^targeted attack: every target must differ from the true label$"),
    ("attack: more pixels than the image has",
     lambda m, d, t: _attack(m, d, config=cfg(pixels=1025)),
     r"^pixels=1025 exceeds the 1024 pixels of a 32x32 image$"),
    ("attack: max_queries below the first step",
     lambda m, d, t: _attack(m, d, config=cfg(max_queries=10)),
     r"^max_queries=10 is below the 16 queries of de's first step$"),
    ("attack: unknown attack_keys",
     lambda m, d, t: _attack(m, d, attack_keys="id_x2000"),
     r"^unknown attack_keys 'id_x2000'; known: \('per_attack', 'id_x1000'\)$"),
    ("attack: execution incremental on a black box",
     lambda m, d, t: _attack(m, d, model=lambda x: m.predict(x),
                             execution=dict(incremental=True)),
     r"^execution\.incremental needs a net split at its first convolution \(a zoo model whose "
     r"first layer is a convolution\); this model is a black box$"),
    ("attack: execution devices beyond the CPU devices",
     lambda m, d, t: _devices_beyond(m, d),
     r"^execution\.devices=\d+, but this run has \d+ CPU device\(s\) to deal its model calls "
     r"to: start it with more \(runtime\.cpu_devices\), or leave devices unset$"),
    ("attack: an unknown execution setting",
     lambda m, d, t: _attack(m, d, execution=dict(threads=4)),
     r"^unknown execution setting\(s\) \['threads'\]; known: \['call_size', 'incremental', "
     r"'window', 'strided_window', 'devices', 'segment'\]$"),
    ("attack: a model that is not callable",
     lambda m, d, t: _attack(m, d, model=42),
     r"^a model must be a pixeljax model \(models\.load\) or a function images -> "
     r"probabilities, got int$"),
    ("exhaustive_one_pixel: images scaled to [0, 1]",
     lambda m, d, t: pixeljax.exhaustive_one_pixel(m, _two(d)[0] / 255., _two(d)[1]),
     r"^the images look scaled to \[0, 1\]"),
    ("exhaustive_one_pixel: labels of the wrong shape",
     lambda m, d, t: pixeljax.exhaustive_one_pixel(m, _two(d)[0], _two(d)[1][:1]),
     r"^labels must be integers of shape \(2,\), one per image, got int32 \(1,\)$"),
    ("select_images: NCHW images",
     lambda m, d, t: pixeljax.select_images(m, d.images[:4].transpose(0, 3, 1, 2),
                                            d.labels[:4], 2, 0),
     r"^images of shape \(4, 3, 32, 32\) look like NCHW"),
    ("select_images: a predict returning logits",
     lambda m, d, t: pixeljax.select_images(_logits(m), d.images[:4], d.labels[:4], 2, 0),
     r"^the model returns logits, not probabilities .*jax\.nn\.softmax\(predict\(x\)\)$"),
    ("PixelAttackConfig: unknown method",
     lambda m, d, t: pixeljax.PixelAttackConfig(method="cmaes"),
     r"^unknown method 'cmaes'; known: \('de', 'sparse_rs', 'corner_search'\)$"),
    ("PixelAttackConfig: unknown loss",
     lambda m, d, t: pixeljax.PixelAttackConfig(loss="hinge"),
     r"^unknown loss 'hinge'; known: \('probability', 'margin', 'ce'\)$"),
    ("PixelAttackConfig: popsize 3",
     lambda m, d, t: pixeljax.PixelAttackConfig(popsize=3),
     r"^popsize must be >= 4 for DE, got 3$"),
    ("PixelAttackConfig: pixels 0",
     lambda m, d, t: pixeljax.PixelAttackConfig(pixels=0),
     r"^pixels must be >= 1, got 0$"),
    ("PixelAttackConfig: success_first with the ce loss",
     lambda m, d, t: pixeljax.PixelAttackConfig(success_first=True, loss="ce"),
     r"^success_first needs the probability or margin loss, not ce"),
    ("Execution: devices 0",
     lambda m, d, t: pixeljax.Execution(devices=0),
     r"^execution: devices must be >= 1, got 0$"),
    ("models.load: an unknown model name",
     lambda m, d, t: pixeljax.models.load("resnet_nope"),
     r"^unknown model 'resnet_nope'; known models: .*cifar10_lenet_hyperparticle"),
    ("models.load: no checkpoint in the folder",
     lambda m, d, t: pixeljax.models.load("cifar10_lenet_hyperparticle", directory=str(t)),
     r"^no checkpoint for model 'cifar10_lenet_hyperparticle' at .*/cifar10_lenet_hyperparticle"
     r"\.msgpack; train it with experiments/train\.py or point PIXELJAX_CHECKPOINT_DIR at your "
     r"checkpoints$"),
    ("data.load: a data file that does not exist",
     lambda m, d, t: pixeljax.data.load("/no/such/file.npz"),
     r"^data file /no/such/file\.npz does not exist$"),
    ("data.load: a corrupt .npz",
     lambda m, d, t: _corrupt_npz(t),
     r"^.*/corrupt\.npz is corrupt or not an \.npz data file \(BadZipFile: .*\)$"),
    ("data.load: an unknown data set",
     lambda m, d, t: pixeljax.data.load("cifar11"),
     r"^unknown data set 'cifar11'; known: "),
]



def _endless_batches(m, d, t):
  """attacks_per_call=-1: the runner's batch split (``_split``) never ends, its list growing
  until memory runs out. A guard stops it here instead of hanging the suite."""
  from pixeljax.sparse import runner
  real = runner._sizes

  def guarded(cap, devices):
    if cap < 1:
      raise AssertionError(f"batches of {cap} attacks: runner._split would loop forever")
    return real(cap, devices)
  with mock.patch.object(runner, "_sizes", guarded):
    return _attack(m, d, attacks_per_call=-1)


def _flat_net(inputs: int):
  """A linear net of ``inputs`` pixels -> 10 classes, as a JAX function of NHWC images."""
  w = jnp.full((inputs, 10), 1e-4, jnp.float32)
  return lambda x: jax.nn.softmax(x.reshape(x.shape[0], -1) @ w)


def _one_black_colour(m, d, images=None, labels=None, colours=((0., 0., 0.),)):
  return pixeljax.exhaustive_one_pixel(m, d.images[:1] if images is None else images,
                                       d.labels[:1] if labels is None else labels,
                                       np.asarray(colours, np.float32))


# Mistakes this table found that were not one line (issue 24), and what they did before the
# door learnt them. (id, call, message regex, what happened)
FIXED = [
    ("attack: image_ids of the wrong length",
     lambda m, d, t: _attack(m, d, image_ids=[7]),
     r"image_ids",
     "a 3-line ValueError from jax.vmap ('vmap got inconsistent sizes for array axes...')"),
    ("attack: an int for the key",
     lambda m, d, t: _attack(m, d, key=0),
     r"key",
     "TypeError: JAX encountered invalid PRNG key data: expected key_data to have ndim, shape, "
     "and dtype attributes. Got 0"),
    ("attack: attacks_per_call=-1",
     _endless_batches,
     r"attacks_per_call",
     "never returns: runner._split appends -1-row calls forever (memory grows without bound)"),
    ("attack: a predict that ignores the batch size",
     lambda m, d, t: _attack(m, d, model=lambda x: jnp.full((1, 10), .1)),
     r"\(1, 10\)",
     "TypeError: cannot reshape array of shape (1, 10) (size 10) into shape (2, -1, 10) ..."),
    ("attack: a fractional pixel count",
     lambda m, d, t: _attack(m, d, config=cfg(pixels=1.5)),
     r"pixels",
     "PixelAttackConfig(pixels=1.5) is accepted; attack raises TypeError: Shapes must be 1D "
     "sequences of concrete values of integer type, got (16, 1.5, 1)."),
    ("exhaustive_one_pixel: colours of the wrong length",
     lambda m, d, t: _one_black_colour(m, d, colours=((0., 0.),)),
     r"colours",
     "TypeError: cannot reshape array of shape (1024, 4) (size 4096) into shape (-1, 1024, 5) "
     "..."),
    ("exhaustive_one_pixel: a colour above 255",
     lambda m, d, t: _one_black_colour(m, d, colours=((300., 0., 0.),)),
     r"255",
     "no error: the sweep writes 300 into the image and reports it (sample 0: fooled=True, "
     "1 fooling change)"),
    ("exhaustive_one_pixel: a label out of range",
     lambda m, d, t: _one_black_colour(m, d, labels=np.array([10])),
     r"label",
     "no error: every change 'fools' label 10 (num_fooling_changes=1024 of 1024) and "
     "lowest_true_prob is class 9's (JAX clamps the index)"),
    ("attack: uint8 images of 0 and 1",
     lambda m, d, t: _attack(m, d, images=(_two(d)[0] > 127).astype(np.uint8)),
     r"^the images look scaled to \[0, 1\] \(largest value 1\)",
     "no error: the net saw two nearly black images"),
    ("attack: num_classes above the model's outputs",
     lambda m, d, t: _attack(m, d, labels=np.array([3, 42]), num_classes=100),
     r"^num_classes=100, but cifar10_lenet_hyperparticle outputs 10 class probabilities$",
     "no error: label 42 reads the last output column (JAX clamps the index), the clean image "
     "counts as misclassified by it and the attack as fooled at once"),
    ("attack: fractional labels",
     lambda m, d, t: _attack(m, d, labels=np.array([3.7, 6.0])),
     r"^labels must be integer class indices, got float64$",
     "no error: label 3.7 is attacked as class 3"),
    ("attack: a batch of keys",
     lambda m, d, t: _attack(m, d, key=jax.random.split(KEY, 4)),
     r"^key must be one JAX random key \(jax\.random\.PRNGKey\(seed\) or "
     r"jax\.random\.key\(seed\)\), got .* uint32 \(4, 2\)$",
     "ValueError: fold_in accepts a single key, but was given a key array of shape (4, 2) != "
     "(). Use jax.vmap for batching."),
    ("attack: a float array for the key",
     lambda m, d, t: _attack(m, d, key=np.zeros(2)),
     r"^key must be one JAX random key .* got ndarray float64 \(2,\)$",
     "TypeError: JAX encountered invalid PRNG key data: expected key_data.dtype = uint32; "
     "got dtype=float64"),
    ("from_jax: a net built for other images",
     lambda m, d, t: pixeljax.models.from_jax(_flat_net(32 * 32 * 3), input_shape=(28, 28, 1)),
     r"^the function cannot take images of shape \(28, 28, 1\) \(H, W, C\): TypeError: .*; "
     r"give input_shape \(--config\.model_input_shape\) and layout as it was built for$",
     "TypeError: dot_general requires contracting dimensions to have the same shape, got "
     "(784,) and (3072,). (a traceback from jax.eval_shape)"),
    ("from_jax: a net with two outputs",
     lambda m, d, t: pixeljax.models.from_jax(
         lambda x: (_flat_net(32 * 32 * 3)(x),) * 2, input_shape=(32, 32, 3)),
     r"^the function must output one array \(N, classes\); it outputs a tuple of 2 arrays$",
     "the function cannot take images of shape (32, 32, 3) (H, W, C): AttributeError: 'tuple' "
     "object has no attribute 'shape'; give input_shape ... (a wrong cause)"),
    ("from_jax: preprocess mean with 2 values for 3 channels",
     lambda m, d, t: pixeljax.models.from_jax(_flat_net(32 * 32 * 3), input_shape=(32, 32, 3),
                                              preprocess=dict(mean=(1., 2.))),
     r"^preprocess\.mean must hold 1 or 3 values \(one per channel\), got 2$",
     "ValueError: Incompatible shapes for broadcasting: shapes=[(1, 32, 32, 3), (2,)] "
     "(a traceback; the same dict through --config.model_preprocess was one line)"),
    ("from_jax: preprocess std 0",
     lambda m, d, t: pixeljax.models.from_jax(_flat_net(32 * 32 * 3), input_shape=(32, 32, 3),
                                              preprocess=dict(std=0.)),
     r"^preprocess\.std must be non-zero, got \(0\.0,\)$",
     "no error: every pixel divided by 0, the net sees inf and returns NaN at the first call"),
    ("select_images: labels of the wrong shape",
     lambda m, d, t: pixeljax.select_images(m, d.images[:2], d.labels[:1], 1, 0),
     r"labels",
     "no error: 1 label for 2 images is broadcast against both predictions (returns [0])"),
    ("select_images: num_images -1",
     lambda m, d, t: pixeljax.select_images(m, d.images[:2], d.labels[:2], -1, 0),
     r"num_images",
     "ValueError: negative dimensions are not allowed (from numpy's rng.choice)"),
]


@pytest.mark.parametrize("call, message", [pytest.param(c, m, id=i) for i, c, m in LIBRARY] + [
    pytest.param(c, m, id=i) for i, c, m, _ in FIXED])
def test_library_mistake_is_one_line(call, message, cifar_lenet, cifar_samples, tmp_path):
  with pytest.raises(UserError) as e:
    call(cifar_lenet, cifar_samples, tmp_path)
  text = str(e.value)
  assert "\n" not in text, text
  assert re.search(message, text), text


# CLI cases: (id, args or setup(tmp_path) -> args, message regex of the one stderr line).
def _file_workdir(tmp):
  (tmp / "file").write_text("")
  return ["--workdir", str(tmp / "file")]


SMALL = ["--config.num_images=2", "--config.pixels=1", "--config.attack.popsize=16",
         "--config.attack.generations=2", "--config.figures=False"]


def _resume_other_settings(tmp):
  """A workdir that holds work made with seed 0, rerun with seed 3 (made in-process, without
  attacking: only what the CLI compares is needed)."""
  from configs.one_pixel import get_config
  config = get_config("paper")
  config.update_from_flattened_dict({"num_images": 2, "pixels": (1,), "attack.popsize": 16,
                                     "attack.generations": 2, "figures": False})
  wd = pixeljax.Workdir.open(str(tmp / "w"), config)
  wd.write_json("results.json", {"metrics": {}})
  wd.close()
  return SMALL + ["--config.seed=3", "--workdir", str(tmp / "w")]


def _corrupt_config(tmp):
  (tmp / "w").mkdir()
  (tmp / "w" / "config.json").write_text('{"model": "cifar10_lenet_hyper')
  return SMALL + ["--workdir", str(tmp / "w")]


def _w(*args):
  return lambda tmp: [*args, "--workdir", str(tmp / "w")]


CLI = [
    ("cli: unknown config key", _w("--config.attack.nope=3"),
     r"^error: --config\.attack\.nope names no setting of the config \(AttributeError: nope\)$"),
    ("cli: a missing --config file", _w("--config=configs/one_pixl.py"),
     r"^error: config file configs/one_pixl\.py: No such file or directory$"),
    ("cli: an override on a missing --config file",
     _w("--config=configs/one_pixl.py", "--config.seed=3"),
     r"^error: config file configs/one_pixl\.py: No such file or directory$"),
    ("cli: bad model", _w("--config.model=resnet_nope"),
     r"^error: unknown model 'resnet_nope'; known models: "),
    ("cli: missing data file", _w("--config.data=/no/such/file.npz"),
     r"^error: data file /no/such/file\.npz does not exist$"),
    ("cli: --workdir that is a file", _file_workdir,
     r"^error: --workdir .*/file is a file, not a folder; choose another --workdir$"),
    ("cli: num_images 0", _w("--config.num_images=0"),
     r"^error: num_images must be >= 1, got 0$"),
    ("cli: pixels 0", _w("--config.pixels=0"),
     r"^error: pixels must be >= 1, got 0$"),
    ("cli: runtime.cpu_devices=0", _w("--config.runtime.cpu_devices=0"),
     r"^error: runtime\.cpu_devices must be >= 1 \(or None: one per core\), got 0$"),
    ("cli: a resume with other settings", _resume_other_settings,
     r"^error: .*/w holds work made with other settings \(seed: 0 -> 3\); pass --new_run to "
     r"start a new run beside it, or choose another --workdir$"),
    ("cli: a corrupt config.json in the workdir", _corrupt_config,
     r"^error: .*/w/config\.json is corrupt \(.*\); to resume the run remove that file \(the "
     r"run's own settings files are then checked, and config\.json is written again when it "
     r"completes\)"),
]


# The other scripts, by their own flags (a setup's args that start with experiments/...).
CLI += [
    ("evaluate: a CIFAR-10 net on MNIST images",
     lambda tmp: ["experiments/evaluate.py", "--cifar10_data=mnist_samples",
                  "--models=cifar10_lenet_hyperparticle"],
     r"^error: cifar10_lenet_hyperparticle expects images of shape \(N, 32, 32, 3\) \(NHWC\), "
     r"got \(\d+, 28, 28, 1\)$"),
    ("import_weights: a missing weights file",
     lambda tmp: ["experiments/import_weights.py", f"--weights_dir={tmp}",
                  "--models=cifar10_lenet_hyperparticle"],
     r"^error: weights file .*/cifar10_lenet_hyperparticle\.npz does not exist "
     r"\(--weights_dir\)$"),
    ("import_weights: a net with no converter",
     lambda tmp: ["experiments/import_weights.py", "--models=cifar10_allcnn"],
     r"^error: no converter for 'cifar10_allcnn'; ports: cifar10_lenet_hyperparticle, "),
]


@pytest.mark.parametrize("setup, message", [pytest.param(s, m, id=i) for i, s, m in CLI])
def test_cli_mistake_is_one_line_and_exit_2(setup, message, tmp_path):
  args = setup(tmp_path)
  script = SCRIPT
  if args[0].startswith("experiments/"):
    script, args = os.path.join(ROOT, args[0]), args[1:]
  out = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 2, out.stderr
  assert "Traceback" not in out.stderr, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr            # nothing but the error line
  assert re.search(message, lines[0]), lines[0]
  assert out.stdout == ""


def test_the_table_has_at_least_25_cases():
  assert len(LIBRARY) + len(CLI) >= 25
  assert len({i for i, _, _ in LIBRARY + CLI}) == len(LIBRARY) + len(CLI)


def test_exhaustive_one_pixel_does_not_count_an_already_misclassified_image(cifar_lenet,
                                                                          cifar_samples):
  """Given a label the net does not predict, every change 'fooled' it (all 1,024 counted):
  the image is marked instead, not fooled, as an attack's records mark it."""
  d = cifar_samples
  wrong = (d.labels[:2] + np.array([1, 0])) % 10      # image 0 mislabelled, image 1 right
  out = _one_black_colour(cifar_lenet, d, images=d.images[:2], labels=wrong)
  assert out["already_misclassified"].tolist() == [True, False]
  assert not out["fooled"][0] and out["num_fooling_changes"][0] == 0
  right = _one_black_colour(cifar_lenet, d, images=d.images[1:2], labels=d.labels[1:2])
  assert out["fooled"][1] == right["fooled"][0]
  assert out["num_fooling_changes"][1] == right["num_fooling_changes"][0]


def test_a_net_whose_softmax_runs_in_bfloat16_gives_probabilities(cifar_lenet, cifar_samples):
  """The shipped LeNet with its softmax in bfloat16: rows sum to 1 +- 4e-3. Before, the 1e-3
  rule took them for logits: ``from_jax`` added a second softmax (largest probability 0.23
  where the net says 1.0) and ``attack`` refused the function as returning logits."""
  from pixeljax import door
  d = cifar_samples
  bf16 = lambda x: jax.nn.softmax(_logits(cifar_lenet)(x).astype(jnp.bfloat16), axis=-1)
  images = d.images[:32]
  raw = np.asarray(jax.jit(bf16)(jnp.asarray(images, jnp.float32)), np.float64)
  assert np.abs(raw.sum(-1) - 1).max() > 1e-3          # the case: outside float32's rule
  assert door.probability_tolerance(jnp.float32) == 1e-3
  assert door.probability_tolerance(jnp.bfloat16) == 2 ** -6
  model = pixeljax.models.from_jax(bf16, input_shape=(32, 32, 3))
  assert model.metadata["softmax_added"] is False
  assert model.metadata["output_dtype"] == "bfloat16"
  probs = np.asarray(model(images), np.float64)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)   # re-normalised in float32
  # The net's own probabilities to bfloat16's precision (XLA may drop the bfloat16 rounding
  # inside a program that casts on to float32: not every bit is the standalone net's).
  np.testing.assert_allclose(probs, raw / raw.sum(-1, keepdims=True), rtol=2 ** -7, atol=1e-5)
  # As a black box: attacked, not refused; its logits in bfloat16 are still logits.
  records = _attack(cifar_lenet, d, model=bf16)
  assert len(records) == 2 and np.all(records.queries > 0)
  with pytest.raises(UserError, match="returns logits"):
    _attack(cifar_lenet, d, model=lambda x: _logits(cifar_lenet)(x).astype(jnp.bfloat16))
  # softmax=False on bfloat16 scores that are not probabilities: cast, not re-normalised
  # into probabilities, so the door still names them.
  scores = pixeljax.models.from_jax(
      lambda x: jax.nn.relu(_logits(cifar_lenet)(x)).astype(jnp.bfloat16),
      input_shape=(32, 32, 3), softmax=False)
  with pytest.raises(UserError, match="returns logits"):
    _attack(cifar_lenet, d, model=scores)


def test_an_all_black_float_batch_is_attacked(cifar_lenet, cifar_samples):
  """Largest value 0 is the same image in [0, 1] and [0, 255]: the [0, 1] rule let no float
  black batch in ("pass images * 255")."""
  records = _attack(cifar_lenet, cifar_samples, images=np.zeros((2, 32, 32, 3), np.float32))
  assert len(records) == 2
