"""Models named by a string, as ``--config.model`` names them: a zoo model, a saved Keras
model, or a Python function that builds a PyTorch (or Keras) model.

  cifar10_lenet_hyperparticle        a zoo model with its checkpoint (``models.load``)
  path/to/net.keras                  a whole Keras model saved by ``model.save`` (Keras 3's
                                     format); ``.h5`` / ``.hdf5``: the legacy HDF5 format,
                                     which Keras 3 still reads
  torch:package.module:function      ``function()`` returns a ``torch.nn.Module`` with its
  torch:path/to/file.py:function     weights loaded (or names one); the module is imported
                                     from PYTHONPATH or the current folder, a ``.py`` path
                                     from its file
  keras:package.module:function      the same, returning a ``keras.Model`` (custom layers)

``load_model(model, ...)`` resolves any of these; ``from_file`` and ``from_factory`` do the
last three, through ``from_keras`` / ``from_torch``. Only these import Keras or PyTorch, and
only when such a model is asked for. What an imported model needs beyond its weights is the
user's to say (the zoo's models carry it): ``preprocess`` (``(x * scale - mean) / std`` per
channel, pixels in [0, 255]), ``softmax`` ("auto": added when the outputs are not
probabilities), ``input_shape`` (H, W, C; else the model's own, else ``data_shape``, the
attacked images') and ``layout`` (what the model takes: "NHWC" / "NCHW").

An imported model's ``metadata`` records ``source`` ("keras" / "torch"), ``path`` (the file,
or the factory's module file), ``factory`` (the ``torch:...`` string) and ``sha256`` of its
weight arrays, which binds a run's attacks to those weights as a zoo checkpoint's does.
``config_settings()`` are the experiment configs' fields for these options
(``model_preprocess.scale/mean/std``, ``model_softmax``, ``model_input_shape``,
``model_layout``); ``from_config`` loads ``config.model`` with them.
"""
import importlib
import importlib.util
import os
import sys
from typing import Callable, Optional, Sequence, Tuple, Union

from pixeljax.errors import UserError, one_line
from pixeljax.models.adapters import clean_preprocess

KERAS_EXTENSIONS = (".keras", ".h5", ".hdf5")
FACTORY_SOURCES = ("torch", "keras")
# Suffixes a researcher may try that are not whole models pixeljax can read, and what to do.
_OTHER_FILES = {
    ".weights.h5": "holds weights only, not the model: build the model in a function and "
                   "load the weights there, then pass keras:module:function",
    ".pt": "is a PyTorch file: write a function that builds the module and loads its weights, "
           "then pass torch:module:function (or torch:path/to/file.py:function)",
    ".pth": "is a PyTorch file: write a function that builds the module and loads its "
            "weights, then pass torch:module:function (or torch:path/to/file.py:function)",
}


def _keras():
  """Keras 3 on the JAX backend, imported as ``from_keras`` imports it."""
  from pixeljax.models import adapters
  return adapters._import_keras()


def _torch():
  try:
    import torch
  except ImportError:
    raise UserError("a PyTorch model needs PyTorch and torchax: pip install "
                    "'pixeljax[torch]'") from None
  if importlib.util.find_spec("torchax") is None:
    raise UserError("a PyTorch model runs through torchax: pip install 'pixeljax[torch]'")
  return torch


def _shape(value, what: str) -> Optional[Tuple[int, int, int]]:
  if value is None:
    return None
  try:
    shape = tuple(int(s) for s in value)
  except (TypeError, ValueError):
    raise UserError(f"{what} must be (H, W, C), got {value!r}") from None
  if len(shape) != 3 or min(shape) < 1:
    raise UserError(f"{what} must be (H, W, C) of positive sizes, got {value!r}")
  return shape




def _softmax(value, what: str = "softmax") -> Union[str, bool]:
  if isinstance(value, bool) or value == "auto":
    return value
  words = {"auto": "auto", "true": True, "yes": True, "1": True, "false": False, "no": False,
           "0": False}
  key = str(value).strip().lower()
  if key not in words:
    raise UserError(f"{what} must be auto, True or False, got {value!r}")
  return words[key]


def _layout(value, what: str = "layout") -> Optional[str]:
  if value is None:
    return None
  if str(value).upper() not in ("NHWC", "NCHW"):
    raise UserError(f"{what} must be NHWC or NCHW (or unset), got {value!r}")
  return str(value).upper()


def _with_origin(model, **origin):
  """``model`` (just made here) with ``origin`` (path, factory) added to its metadata."""
  model.metadata.update(origin)
  return model


def _keras_declares_shape(net) -> bool:
  try:
    declared = net.input_shape
  except (AttributeError, ValueError):
    return False
  return (isinstance(declared, tuple) and len(declared) == 4
          and all(isinstance(s, int) for s in declared[1:]))


def _from_keras_model(net, *, input_shape, data_shape, **kw):
  from pixeljax.models.adapters import from_keras
  if input_shape is None and not _keras_declares_shape(net):
    input_shape = data_shape
  return from_keras(net, input_shape=input_shape, **kw)


def _from_torch_module(net, *, input_shape, data_shape, layout, what, **kw):
  from pixeljax.models.adapters import from_torch
  shape = input_shape if input_shape is not None else data_shape
  if shape is None:
    raise UserError(f"{what}: a PyTorch module does not say its input size: give "
                    f"input_shape=(H, W, C)")
  return from_torch(net, input_shape=shape, layout=layout or "NCHW", **kw)


def from_file(path: str, *, input_shape: Optional[Sequence[int]] = None,
              preprocess: Union[None, dict, Callable] = None,
              softmax: Union[str, bool] = "auto", layout: Optional[str] = None,
              data_shape: Optional[Sequence[int]] = None, name: Optional[str] = None):
  """A whole Keras model saved in a file (``.keras``; legacy ``.h5`` / ``.hdf5``), loaded
  with ``keras.saving.load_model`` (no compile) and wrapped by ``from_keras``: an
  ``ImportedModel``. ``input_shape``: (H, W, C) when the model declares none (else
  ``data_shape``). ``preprocess``, ``softmax``, ``layout``: as ``from_keras``. ``name``:
  default the path as given."""
  if not isinstance(path, (str, os.PathLike)):
    raise UserError(f"a model file must be a path, got {type(path).__name__}")
  path = os.fspath(path)
  lower = path.lower()
  for suffix, why in _OTHER_FILES.items():
    if lower.endswith(suffix):
      raise UserError(f"model file {path} {why}")
  if not lower.endswith(KERAS_EXTENSIONS):
    ext = os.path.splitext(path)[1] or "(none)"
    raise UserError(f"model file {path}: unknown extension {ext}; pixeljax reads Keras "
                    f"models ({', '.join(KERAS_EXTENSIONS)}), and PyTorch ones through a "
                    f"function: torch:module:function")
  if not os.path.exists(path):
    raise UserError(f"model file {path} does not exist")
  if os.path.isdir(path):
    raise UserError(f"model file {path} is a folder, not a saved Keras model")
  input_shape, data_shape = _shape(input_shape, "input_shape"), _shape(data_shape, "data_shape")
  shape = input_shape or data_shape
  preprocess = clean_preprocess(preprocess, shape[-1] if shape else None)
  softmax, layout = _softmax(softmax), _layout(layout)
  keras = _keras()
  try:
    net = keras.saving.load_model(path, compile=False)
  except Exception as e:   # whatever Keras says of a file it cannot read: one line
    raise UserError(f"cannot load the Keras model {path} ({one_line(e)})") from None
  if not isinstance(net, keras.Model):
    raise UserError(f"{path} holds a {type(net).__name__}, not a keras.Model")
  model = _from_keras_model(net, input_shape=input_shape, data_shape=data_shape,
                            preprocess=preprocess, softmax=softmax, layout=layout,
                            name=name or path)
  return _with_origin(model, path=os.path.abspath(path))


def parse_factory(spec: str) -> Tuple[str, str, str]:
  """``"torch:package.module:function"`` -> ("torch", "package.module", "function")."""
  source, _, rest = spec.partition(":")
  target, _, function = rest.rpartition(":")
  if source not in FACTORY_SOURCES or not target or not function.isidentifier():
    raise UserError(f"{spec!r} is not a model factory: write torch:module:function, "
                    f"torch:path/to/file.py:function or keras:module:function")
  return source, target, function


def _import(spec: str, target: str):
  """The module ``target`` names: a dotted module (from sys.path, the current folder added
  at its end) or a ``.py`` file (its folder added, for its own imports)."""
  if target.endswith(".py"):
    path = os.path.abspath(target)
    if not os.path.isfile(path):
      raise UserError(f"{spec}: file {target} does not exist")
    folder = os.path.dirname(path)
    if folder not in sys.path:
      sys.path.append(folder)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"_pixeljax_model_{stem}_{abs(hash(path)):x}"
    if name in sys.modules:
      return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
      module_spec.loader.exec_module(module)
    except BaseException as e:
      del sys.modules[name]
      if isinstance(e, Exception):
        raise UserError(f"{spec}: importing {target} failed ({one_line(e)})") from None
      raise
    return module
  if os.getcwd() not in sys.path:
    sys.path.append(os.getcwd())
  try:
    return importlib.import_module(target)
  except ModuleNotFoundError as e:
    if e.name and (target == e.name or target.startswith(e.name + ".")):
      raise UserError(f"{spec}: no module named {target!r} (put its folder on PYTHONPATH, "
                      f"run from its folder, or name its file: "
                      f"{spec.split(':')[0]}:path/to/file.py:function)") from None
    raise UserError(f"{spec}: importing {target} failed ({one_line(e)})") from None
  except Exception as e:     # a syntax error or anything else its code raises on import
    raise UserError(f"{spec}: importing {target} failed ({one_line(e)})") from None


def from_factory(spec: str, *, input_shape: Optional[Sequence[int]] = None,
                 preprocess: Union[None, dict, Callable] = None,
                 softmax: Union[str, bool] = "auto", layout: Optional[str] = None,
                 data_shape: Optional[Sequence[int]] = None, name: Optional[str] = None):
  """The model a Python function builds, named ``torch:module:function``,
  ``torch:path/to/file.py:function`` or ``keras:module:function``: ``function()`` (no
  arguments) returns a ``torch.nn.Module`` / ``keras.Model`` with its weights (the name may
  also be such a model itself), wrapped by ``from_torch`` / ``from_keras``.

  ``input_shape`` (H, W, C): a torch module's images (default ``data_shape``); a Keras model
  uses its declared one unless given. ``layout``: what the model takes (torch default
  "NCHW"). ``preprocess``, ``softmax``: as ``from_keras``. ``name``: default ``spec``."""
  if not isinstance(spec, str):
    raise UserError(f"a model factory must be a string like torch:module:function, got "
                    f"{type(spec).__name__}")
  source, target, function = parse_factory(spec)
  input_shape, data_shape = _shape(input_shape, "input_shape"), _shape(data_shape, "data_shape")
  shape = input_shape or data_shape
  preprocess = clean_preprocess(preprocess, shape[-1] if shape else None)
  softmax, layout = _softmax(softmax), _layout(layout)
  # The framework first: a missing install is named as such, not as the module's ImportError.
  framework = _torch() if source == "torch" else _keras()
  kind = framework.nn.Module if source == "torch" else framework.Model
  module = _import(spec, target)
  if not hasattr(module, function):
    raise UserError(f"{spec}: module {target} has no {function!r}")
  made = getattr(module, function)
  if not isinstance(made, kind):
    if not callable(made):
      raise UserError(f"{spec}: {function} is a {type(made).__name__}, not a function")
    try:
      made = made()
    except Exception as e:
      raise UserError(f"{spec}: {function}() raised {one_line(e)}") from None
  want = "torch.nn.Module" if source == "torch" else "keras.Model"
  if not isinstance(made, kind):
    raise UserError(f"{spec}: {function}() returned a {type(made).__name__}, not a {want}")
  kw = dict(input_shape=input_shape, data_shape=data_shape, preprocess=preprocess,
            softmax=softmax, name=name or spec)
  if source == "torch":
    model = _from_torch_module(made, layout=layout, what=spec, **kw)
  else:
    model = _from_keras_model(made, layout=layout, **kw)
  return _with_origin(model, path=getattr(module, "__file__", None), factory=spec)


def is_factory(model: str) -> bool:
  return isinstance(model, str) and model.partition(":")[0] in FACTORY_SOURCES and ":" in model


def _looks_like_file(model: str) -> bool:
  return (os.sep in model or "/" in model or os.path.splitext(model)[1] != ""
          or os.path.exists(model))


def load_model(model: str, *, input_shape: Optional[Sequence[int]] = None,
               preprocess: Union[None, dict, Callable] = None,
               softmax: Union[str, bool] = "auto", layout: Optional[str] = None,
               data_shape: Optional[Sequence[int]] = None, name: Optional[str] = None):
  """The model ``model`` names: a zoo name (``models.load``: a ``Classifier``), a Keras file
  (``from_file``) or a factory (``from_factory``): an ``ImportedModel``. The other
  arguments are for imported models only (a zoo model has its preprocessing and shape)."""
  from pixeljax.models import registry
  if not isinstance(model, str) or not model:
    raise UserError(f"a model must be named by a string (a zoo name, a .keras file or "
                    f"torch:module:function), got {model!r}")
  if model in registry.names():
    given = [k for k, v in (("input_shape", input_shape), ("preprocess", preprocess),
                            ("layout", layout), ("name", name)) if v is not None]
    if _softmax(softmax) != "auto":
      given.append("softmax")
    if given:
      raise UserError(f"{', '.join(given)} set for zoo model {model}, which has its own "
                      f"(they are for imported models: a .keras file, torch:module:function)")
    return registry.load(model)
  kw = dict(input_shape=input_shape, preprocess=preprocess, softmax=softmax, layout=layout,
            data_shape=data_shape, name=name)
  if is_factory(model):
    return from_factory(model, **kw)
  if _looks_like_file(model):
    return from_file(model, **kw)
  raise UserError(f"unknown model {model!r}; known models: {', '.join(registry.names())}; or "
                  f"a Keras file (.keras, .h5), or torch:module:function")


# ------------------------------------------------------------------------- experiment configs

def config_settings():
  """The config fields of an imported model's options (all unset: the model's own); an
  experiment config adds them beside ``model``: ``c.update(files.config_settings())``."""
  from ml_collections import ConfigDict, config_dict
  return ConfigDict(dict(
      # (x * scale - mean) / std per channel before the model, pixels in [0, 255]
      model_preprocess=ConfigDict(dict(scale=config_dict.placeholder(float),
                                       mean=config_dict.placeholder(tuple),
                                       std=config_dict.placeholder(tuple))),
      model_softmax="auto",           # auto: added when the outputs are not probabilities
      model_input_shape=config_dict.placeholder(tuple),   # (H, W, C); unset: the data's
      model_layout=config_dict.placeholder(str)))         # NCHW / NHWC; unset: the model's


def config_defaults() -> dict:
  """``config_settings`` as stored values: what a ``config.json`` written before these
  settings existed meant (migrations fill them in)."""
  return config_settings().to_dict()


def from_config(config, data_shape: Optional[Sequence[int]] = None):
  """``config.model`` loaded with the config's ``model_*`` options (``config_settings``);
  a mistake is named by its setting."""
  options = dict(preprocess=config.get("model_preprocess"),
                 softmax=config.get("model_softmax", "auto"),
                 input_shape=config.get("model_input_shape"), layout=config.get("model_layout"))
  if config.get("model") in _zoo_names():
    pre = clean_preprocess(options["preprocess"], None, "model_preprocess")
    given = [f"model_{k}" for k in ("preprocess", "input_shape", "layout")
             if (pre if k == "preprocess" else options[k]) is not None]
    if _softmax(options["softmax"], "model_softmax") != "auto":
      given.append("model_softmax")
    if given:
      raise UserError(f"{', '.join(given)} set for zoo model {config['model']}, which has its "
                      f"own preprocessing and shape (they are for a .keras file or "
                      f"torch:module:function); unset them")
    return load_model(config["model"])
  shape = data_shape if options["input_shape"] is None else options["input_shape"]
  channels = _shape(shape, "model_input_shape")[-1] if shape is not None else None
  return load_model(
      config.get("model"), data_shape=data_shape,
      input_shape=_shape(options["input_shape"], "model_input_shape"),
      preprocess=clean_preprocess(options["preprocess"], channels, "model_preprocess"),
      softmax=_softmax(options["softmax"], "model_softmax"),
      layout=_layout(options["layout"], "model_layout"))


def _zoo_names():
  from pixeljax.models import registry
  return registry.names()
