"""Models named by a file or a function (``pixeljax.models.files``): a saved Keras model and a
PyTorch factory attacked end to end through experiments/one_pixel.py, a resume with other
weights refused, bad names one line. Skipped where keras / torch is not installed."""
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap

# Keras picks its backend when first imported: pixeljax's adapters need JAX's.
os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from pixeljax.errors import UserError
from pixeljax.models import files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "one_pixel.py")
CIFAR = (32, 32, 3)
# The smallest real run: 2 images, 1 pixel, one generation of 8 candidates.
SMALL = ["--config.num_images=2", "--config.pixels=1", "--config.attack.popsize=8",
         "--config.attack.generations=1", "--config.figures=False",
         "--config.runtime.progress=False"]

TORCH_NETS = '''
import torch

def make():                 # a tiny CIFAR-10 net, in PyTorch's NCHW, ending in logits
  torch.manual_seed(0)
  return torch.nn.Sequential(
      torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
      torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
      torch.nn.Flatten(), torch.nn.Linear(8, 10))

net = make()                # a module itself works too

def not_a_module():
  return 3

def broken():
  raise RuntimeError("the weights file is gone")
'''


@pytest.fixture(scope="module")
def keras():
  return pytest.importorskip("keras")


@pytest.fixture(scope="module")
def torch():
  torch = pytest.importorskip("torch")
  if importlib.util.find_spec("torchax") is None:   # imported by from_torch, on this torch
    pytest.skip("torchax is not installed")
  return torch


def keras_net(keras, seed=0):
  """A tiny CIFAR-10 net that takes pixels in [0, 255] and ends in logits."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input(CIFAR), keras.layers.Rescaling(1 / 255),
      keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(10)], name="tiny")


def _cli(*args, cwd=ROOT, **env):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **env)
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def _one_error_line(out, *words):
  assert out.returncode == 2, out.stderr
  assert "Traceback" not in out.stderr
  errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and out.stderr.strip().splitlines()[-1] == errors[0], out.stderr
  for w in words:
    assert w in errors[0], errors[0]


def _read(path):
  with open(path) as f:
    return json.load(f)


def test_a_keras_file_is_attacked_and_bound_to_its_weights(keras, tmp_path):
  path = tmp_path / "net.keras"
  net = keras_net(keras)
  net.save(path)
  w = str(tmp_path / "run")
  run = _cli(f"--config.model={path}", *SMALL, "--workdir", w)
  assert run.returncode == 0, run.stderr
  res = _read(os.path.join(w, "results.json"))
  meta = res["model_metadata"]
  assert meta["source"] == "keras" and meta["path"] == str(path)
  assert meta["softmax_added"] is True and meta["input_shape"] == list(CIFAR)
  assert len(meta["sha256"]) == 64 and res["inputs"]["weights_sha256"] == meta["sha256"]
  assert res["config"]["model"] == str(path) and res["metrics"]["1px"]["attacks"] == 2
  bound = _read(os.path.join(w, "chunks", "untargeted_1px", "inputs.json"))
  assert bound["weights_sha256"] == meta["sha256"]
  # The same file name, other weights: the run's attacks are not theirs.
  net.layers[-1].bias.assign(np.asarray(net.layers[-1].bias) + 1e-3)
  net.save(path)
  again = _cli(f"--config.model={path}", *SMALL, "--workdir", w)
  _one_error_line(again, "weights_sha256", meta["sha256"])


def test_a_torch_factory_is_attacked_from_pythonpath(torch, tmp_path):
  (tmp_path / "pj_tiny_nets.py").write_text(TORCH_NETS)
  w = str(tmp_path / "run")
  run = _cli("--config.model=torch:pj_tiny_nets:make",
             "--config.model_preprocess.scale=0.00392156862745098", *SMALL, "--workdir", w,
             PYTHONPATH=str(tmp_path))
  assert run.returncode == 0, run.stderr
  res = _read(os.path.join(w, "results.json"))
  meta = res["model_metadata"]
  assert meta["source"] == "torch" and meta["factory"] == "torch:pj_tiny_nets:make"
  assert meta["path"] == str(tmp_path / "pj_tiny_nets.py")
  assert meta["preprocess"]["scale"] == pytest.approx(1 / 255) and meta["layout"] == "NCHW"
  assert res["inputs"]["weights_sha256"] == meta["sha256"]
  assert res["config"]["model_preprocess"]["scale"] == pytest.approx(1 / 255)
  # How the file is read is bound with its weights (the hash does not cover it): a folder
  # whose config.json is gone cannot resume under another reading (workdir.bind refuses
  # other inputs; before, only the images' hash caught it, where the reading drew others).
  bound = _read(os.path.join(w, "chunks", "untargeted_1px", "inputs.json"))
  assert bound["model_preprocess"] == meta["preprocess"] == res["inputs"]["model_preprocess"]
  assert bound["model_softmax_added"] is True and bound["model_layout"] == "NCHW"
  assert bound["model_output_dtype"] == "float32"


def test_a_bad_model_on_the_command_line_is_one_line(tmp_path):
  out = _cli("--config.model=no/such/net.keras", *SMALL, "--workdir", str(tmp_path / "w"))
  _one_error_line(out, "model file no/such/net.keras does not exist")


def test_keras_files_and_factories_in_the_library(keras, torch, tmp_path):
  net = keras_net(keras)
  net.save(tmp_path / "net.keras")
  net.save(tmp_path / "net.h5")              # Keras 3 still reads the legacy HDF5 format
  a = files.load_model(str(tmp_path / "net.keras"))
  b = files.from_file(tmp_path / "net.h5", name="h5")
  assert a.metadata["sha256"] == b.metadata["sha256"] and b.name == "h5"
  assert a.input_shape == CIFAR and a.num_classes == 10
  x = np.random.default_rng(0).uniform(0, 255, (3,) + CIFAR).astype(np.float32)
  np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), atol=1e-6)
  np.testing.assert_allclose(np.asarray(a(x)).sum(-1), 1, atol=1e-5)   # softmax added
  # A factory by file path; a module object itself; the input shape from the data.
  nets = tmp_path / "nets_by_path.py"
  nets.write_text(TORCH_NETS)
  t = files.load_model(f"torch:{nets}:make", data_shape=CIFAR)
  m = files.from_factory(f"torch:{nets}:net", input_shape=CIFAR)
  assert t.metadata["sha256"] == m.metadata["sha256"] and t.metadata["path"] == str(nets)
  assert t.input_shape == CIFAR and t.metadata["factory"] == f"torch:{nets}:make"
  # A Keras model built in code (e.g. with custom layers): keras:module:function.
  (tmp_path / "keras_nets.py").write_text(
      "import keras\n"
      "def make():\n"
      "  return keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),\n"
      "                           keras.layers.Dense(10, activation='softmax')])\n")
  k = files.from_factory(f"keras:{tmp_path / 'keras_nets.py'}:make")
  assert k.metadata["source"] == "keras" and k.metadata["factory"].startswith("keras:")
  assert k.input_shape == CIFAR and k.metadata["softmax_added"] is False


@pytest.mark.parametrize("model, kw, message", [
    ("net.onnx", {}, "unknown extension .onnx"),
    ("weights.pt", {}, "is a PyTorch file: write a function"),
    ("net.weights.h5", {}, "holds weights only"),
    ("nope_not_a_model", {}, "unknown model 'nope_not_a_model'"),
    ("torch:nothing", {}, "is not a model factory"),
    ("torch:pj_no_such_module:make", {}, "no module named 'pj_no_such_module' (put its folder "
                                         "on PYTHONPATH"),
    ("torch:{nets}:missing", {}, "has no 'missing'"),
    ("torch:{nets}:not_a_module", {}, "not_a_module() returned a int, not a torch.nn.Module"),
    ("torch:{nets}:broken", {}, "broken() raised RuntimeError: the weights file is gone"),
    ("torch:{syntax}:make", {}, "importing"),
    ("torch:{nets}:make", {}, "give input_shape=(H, W, C)"),
    ("torch:{nets}:make", dict(input_shape=(32, 32)), "input_shape must be (H, W, C)"),
    ("torch:{nets}:make", dict(input_shape=CIFAR, preprocess=dict(mean=(1., 2.))),
     "preprocess.mean must hold 1 or 3 values"),
    ("torch:{nets}:make", dict(input_shape=CIFAR, softmax="maybe"),
     "softmax must be auto, True or False"),
    ("{corrupt}", {}, "cannot load the Keras model"),
    ("{folder}", {}, "is a folder"),
    ("cifar10_lenet_hyperparticle", dict(preprocess=dict(scale=1.)),
     "preprocess set for zoo model cifar10_lenet_hyperparticle"),
])
def test_bad_models_are_named(keras, torch, tmp_path, model, kw, message):
  (tmp_path / "nets.py").write_text(TORCH_NETS)
  (tmp_path / "syntax.py").write_text("def make(:\n")
  (tmp_path / "corrupt.keras").write_text("not a zip file")
  (tmp_path / "folder.keras").mkdir()
  model = model.format(nets=tmp_path / "nets.py", syntax=tmp_path / "syntax.py",
                       corrupt=tmp_path / "corrupt.keras", folder=tmp_path / "folder.keras")
  with pytest.raises(UserError, match=re.escape(message)):
    files.load_model(model, **kw)


def test_config_options_are_named_by_their_settings():
  from configs.one_pixel import get_config
  c = get_config("demo")
  c.model_preprocess.scale = 2.0
  with pytest.raises(UserError, match="model_preprocess set for zoo model"):
    files.from_config(c)
  c = get_config("demo")
  c.model, c.model_softmax = "x.keras", "sometimes"
  with pytest.raises(UserError, match="model_softmax must be auto, True or False"):
    files.from_config(c, data_shape=CIFAR)


def test_missing_frameworks_are_one_line(monkeypatch, tmp_path):
  (tmp_path / "net.keras").write_text("")
  monkeypatch.setitem(sys.modules, "keras", None)      # import keras -> ImportError
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(UserError, match=r"needs Keras 3: pip install 'pixeljax\[keras\]'"):
    files.load_model(str(tmp_path / "net.keras"))
  with pytest.raises(UserError, match=r"needs PyTorch and torchax: pip install "
                                      r"'pixeljax\[torch\]'"):
    files.load_model("torch:some_module:make", data_shape=CIFAR)


def test_neither_framework_is_imported_unless_asked_for():
  code = textwrap.dedent("""
      import sys
      import pixeljax
      from experiments import one_pixel
      from configs.one_pixel import get_config
      from pixeljax.models import files
      files.from_config(get_config("demo"), data_shape=(32, 32, 3))
      print(sorted({"keras", "torch", "torchax"} & set(sys.modules)))
  """)
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().splitlines()[-1] == "[]"
