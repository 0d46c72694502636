"""Models a researcher already holds, as pixeljax models: ``from_keras`` (Keras 3 on JAX),
``from_torch`` (PyTorch through torchax) and ``from_jax`` (any JAX function).

What they return is the same kind of object ``models.load`` returns, as far as the engine and
the door need: ``predict`` (NHWC pixels in [0, 255], float32 -> probabilities; a pure JAX
function, traceable under jit and vmap), ``factored``, ``name``, ``num_classes``,
``input_shape`` (H, W, C) and ``metadata``; calling the object itself validates the images
first, like a zoo ``Classifier``.

Keras 3 runs on JAX when ``KERAS_BACKEND=jax`` is set before ``keras`` is first imported:
``from_keras`` sets it (``os.environ.setdefault``) before importing keras, and raises a
``UserError`` if keras was already imported with another backend. The model is called through
``model.stateless_call(trainable, non_trainable, x, training=False)`` on copies of its weight
arrays (Keras' own ``model.predict`` frees the arrays it was given afterwards), so inference
mode is enforced (batch norm's moving statistics, dropout off) and the weights are part of
the traced program as constants of the closure.

Preprocessing is the user's: ``preprocess=dict(scale=..., mean=(...), std=(...))`` computes
``(x * scale - mean) / std`` per channel in JAX before the model (``layers.Normalize``), or any
JAX function of the pixels. A model that ends in logits (or log-probabilities) gets a softmax:
with ``softmax="auto"`` the model is run once on a few deterministic random images and the
softmax is added unless every row is already a probability vector (values in [0, 1] summing
to 1 within 1e-3, or two eps of a coarser output dtype: ``door.probability_tolerance``); the
decision is recorded in ``metadata["softmax_added"]``. Probabilities a net outputs in bfloat16
or float16 (checked on the probe) are re-normalised in float32 (their rows sum to 1 +- 4e-3 in
bfloat16), so what the engine reads sums to 1 as a float32 net's does;
``metadata["output_dtype"]`` names the dtype.

``factored`` gives an imported net the zoo's fast paths: its traced program split at its first
convolution (incremental evaluation) and its local prefix on windows for one-pixel candidates
(``models.traced``), each checked against the full net; None where the program does not
split, and attacks then evaluate the whole net on every query.
"""
import dataclasses
import functools
import hashlib
import os
import sys
from typing import Any, Callable, Dict, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from pixeljax import door
from pixeljax.errors import UserError, one_line
from pixeljax.models import layers
from pixeljax.models.registry import check_images

# The probe ``softmax="auto"`` runs: a few uniform-random images from a fixed seed.
_PROBE_IMAGES = 4
_PROBE_SEED = 0


@dataclasses.dataclass(frozen=True, eq=False)
class ImportedModel:
  """A model from another framework, wrapped: pixels in [0, 255] (NHWC) -> probabilities.

  ``predict`` validates nothing (it is traced inside the attacks' jit and vmap); calling the
  object validates shape, dtype and range first. ``factored``: the traced program split for
  the engine's fast paths (``models.traced.factor``), built and checked on first use."""
  name: str
  predict: Callable[[jax.Array], jax.Array]
  input_shape: Tuple[int, int, int]
  num_classes: int
  metadata: Dict[str, Any]

  @functools.cached_property
  def factored(self):
    from pixeljax.models import traced
    return traced.factor(self.predict, self.input_shape)

  @functools.cached_property
  def _jit_predict(self):
    return jax.jit(self.predict)

  def __call__(self, images):
    return self._jit_predict(check_images(images, self.input_shape, self.name))


def clean_preprocess(preprocess, channels: Optional[int], what: str = "preprocess"):
  """``preprocess`` with unset (None) entries dropped (None if nothing is left); a dict's
  mean and std checked: one value or one per channel, std non-zero."""
  if preprocess is None or callable(preprocess):
    return preprocess
  if hasattr(preprocess, "to_dict"):
    preprocess = preprocess.to_dict()
  if not isinstance(preprocess, dict):
    raise UserError(f"{what} must be None, a dict(scale=, mean=, std=) or a function of the "
                    f"pixels, got {type(preprocess).__name__}")
  out = {k: v for k, v in preprocess.items() if v is not None}
  unknown = set(out) - {"scale", "mean", "std"}
  if unknown:
    raise UserError(f"{what} takes scale, mean and std; got unknown key(s) {sorted(unknown)}")
  if not out:
    return None
  for key in ("mean", "std"):
    if key not in out:
      continue
    values = out[key]
    values = (values,) if isinstance(values, (int, float)) else values
    try:
      values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
      raise UserError(f"{what}.{key} must be numbers, got {out[key]!r}") from None
    if len(values) not in (1, channels or len(values)):
      raise UserError(f"{what}.{key} must hold 1 or {channels} values (one per channel), got "
                      f"{len(values)}")
    if key == "std" and any(v == 0 for v in values):
      raise UserError(f"{what}.std must be non-zero, got {values}")
    out[key] = values
  if "scale" in out:
    try:
      out["scale"] = float(out["scale"])
    except (TypeError, ValueError):
      raise UserError(f"{what}.scale must be a number, got {out['scale']!r}") from None
  return out


def _preprocessor(preprocess, channels: int) -> Tuple[Callable[[jax.Array], jax.Array], Any]:
  """(function of float32 pixels, what ``metadata["preprocess"]`` records), for images of
  ``channels`` channels."""
  preprocess = clean_preprocess(preprocess, channels)
  if preprocess is None:
    return (lambda x: x), None
  if callable(preprocess):
    return preprocess, getattr(preprocess, "__name__", type(preprocess).__name__)
  norm = layers.Normalize(**preprocess)
  record = {"scale": float(norm.scale), "mean": [float(m) for m in np.ravel(norm.mean)],
            "std": [float(s) for s in np.ravel(norm.std)]}
  return norm.__call__, record


def _output_spec(net, shape, what: str) -> jax.ShapeDtypeStruct:
  """``net``'s output (shape (1, classes) and dtype) on one image of ``shape`` (H, W, C), or
  one line: a net built for another size or channel count fails deep inside its framework."""
  try:
    out = jax.eval_shape(net, jax.ShapeDtypeStruct((1,) + shape, jnp.float32))
  except UserError:
    raise
  except Exception as e:   # whatever the framework raises for that input: one line
    raise UserError(f"{what} cannot take images of shape {shape} (H, W, C): {one_line(e)}; "
                    f"give input_shape (--config.model_input_shape) and layout as it was built "
                    f"for") from None
  if not isinstance(out, jax.ShapeDtypeStruct):     # a tuple, list or dict of outputs
    raise UserError(f"{what} must output one array (N, classes); it outputs a "
                    f"{type(out).__name__} of {len(jax.tree_util.tree_leaves(out))} arrays")
  if len(out.shape) != 2:
    raise UserError(f"{what} must output (N, classes); it outputs {out.shape}")
  return out


def _weights_sha256(arrays) -> str:
  """SHA-256 over the weight arrays in the model's order: each one's dtype, shape and
  C-order bytes (names left out, so renaming layers keeps the hash)."""
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _are_probabilities(out) -> bool:
  """Every row of ``out`` a probability vector, to within the rounding of its dtype."""
  tolerance = door.probability_tolerance(out.dtype)
  out = np.asarray(out, np.float64)
  return bool(np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0
              and np.all(np.abs(out.sum(-1) - 1.0) <= tolerance))


def _probe_images(input_shape) -> np.ndarray:
  rng = np.random.default_rng(_PROBE_SEED)
  return rng.uniform(0.0, 255.0, (_PROBE_IMAGES,) + tuple(input_shape)).astype(np.float32)


def _narrow(dtype) -> bool:
  """A float coarser than float32 (bfloat16, float16)."""
  return bool(jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32)


def _renormalised(p):
  """Probabilities ``p`` of a coarser float in float32, each row divided by its float32 sum:
  the dtype's rounding of the row's total taken out (the values stay the net's to its
  precision; XLA may also drop the rounding where the cast to float32 follows it)."""
  p = p.astype(jnp.float32)
  return p / jnp.sum(p, axis=-1, keepdims=True)


def _with_softmax(net, input_shape, softmax, dtype) -> Tuple[Callable, Dict[str, Any]]:
  """``net`` (pixels -> outputs of ``dtype``) ending in float32 probabilities, and its
  metadata: whether a softmax was added (``softmax_added``) and the net's ``output_dtype``.
  Outputs of a coarser float found to be probabilities (on the probe) are re-normalised; any
  other output is only cast, so outputs that are not probabilities still meet the door."""
  if softmax not in ("auto", True, False):
    raise UserError(f"softmax must be 'auto', True or False, got {softmax!r}")
  narrow, probabilities = _narrow(dtype), False
  if softmax == "auto" or (softmax is False and narrow):
    probabilities = _are_probabilities(jax.jit(net)(_probe_images(input_shape)))
  if softmax == "auto":
    softmax = not probabilities
  record = {"softmax_added": bool(softmax), "output_dtype": str(dtype)}
  if softmax:
    return (lambda x: jax.nn.softmax(net(x).astype(jnp.float32), axis=-1)), record
  if probabilities and narrow:
    return (lambda x: _renormalised(net(x))), record
  return (lambda x: net(x).astype(jnp.float32)), record


def _import_keras():
  """keras, on the JAX backend (KERAS_BACKEND set to jax unless keras is already loaded)."""
  os.environ.setdefault("KERAS_BACKEND", "jax")
  if "keras" not in sys.modules and os.environ["KERAS_BACKEND"] != "jax":
    raise UserError(f"from_keras needs Keras' JAX backend; KERAS_BACKEND is "
                    f"{os.environ['KERAS_BACKEND']!r}: set KERAS_BACKEND=jax before running")
  try:
    import keras
  except ImportError:
    raise UserError("from_keras needs Keras 3: pip install 'pixeljax[keras]'") from None
  major = str(getattr(keras, "__version__", "0")).split(".")[0]
  if not major.isdigit() or int(major) < 3:
    raise UserError(f"from_keras needs Keras 3, found keras {keras.__version__}: "
                    f"pip install 'pixeljax[keras]'")
  backend = keras.backend.backend()
  if backend != "jax":
    raise UserError(f"from_keras needs Keras' JAX backend, but keras was imported with the "
                    f"{backend!r} backend: set KERAS_BACKEND=jax before importing keras")
  return keras


def _keras_input_shape(model, input_shape, layout):
  """(H, W, C) pixels and the layout the model takes ("NHWC" or "NCHW")."""
  try:
    declared = tuple(model.input_shape)
  except (AttributeError, ValueError):
    declared = None
  if isinstance(declared, tuple) and declared and isinstance(declared[0], (tuple, list)):
    raise UserError("from_keras takes a model with one image input; this one has "
                    f"{len(declared)} inputs")
  if layout not in (None, "NHWC", "NCHW"):
    raise UserError(f"layout must be None, 'NHWC' or 'NCHW', got {layout!r}")
  model_shape = declared[1:] if declared is not None else None
  if layout is None:
    fmt = None
    for layer in getattr(model, "layers", []):
      fmt = getattr(layer, "data_format", None)
      if fmt is not None:
        break
    layout = "NCHW" if fmt == "channels_first" else "NHWC"
  if input_shape is not None:
    shape = tuple(int(s) for s in input_shape)
  elif model_shape is not None and len(model_shape) == 3 and None not in model_shape:
    shape = (tuple(model_shape[1:]) + tuple(model_shape[:1]) if layout == "NCHW"
             else tuple(model_shape))
  else:
    raise UserError(f"the Keras model declares input shape {declared}: pass "
                    f"input_shape=(H, W, C)")
  if len(shape) != 3:
    raise UserError(f"input_shape must be (H, W, C), got {shape}")
  return tuple(int(s) for s in shape), layout


def from_keras(model, *, preprocess: Union[None, dict, Callable] = None,
               name: Optional[str] = None, softmax: Union[str, bool] = "auto",
               input_shape: Optional[Tuple[int, int, int]] = None,
               layout: Optional[str] = None) -> ImportedModel:
  """A Keras 3 model (JAX backend) as a pixeljax model.

  ``preprocess``: None (the model takes pixels in [0, 255]), ``dict(scale=, mean=, std=)``
  (``(x * scale - mean) / std`` per channel) or a JAX function of the float32 pixels.
  ``softmax``: "auto" (added if the model's outputs on a probe are not probabilities), True
  or False. ``input_shape``: (H, W, C) for a model that does not declare its own. ``layout``:
  "NCHW" for a channels-first model (the images are transposed in JAX); None: read from the
  model's first layer with a data format."""
  keras = _import_keras()
  if not isinstance(model, keras.Model):
    raise UserError(f"from_keras takes a keras.Model, got {type(model).__name__}")
  if not model.built:
    raise UserError("the Keras model is not built: call it once or give it an Input")
  shape, layout = _keras_input_shape(model, input_shape, layout)
  # Copies: the model's own variables may be freed (model.predict) or reassigned later.
  trainable = [jnp.array(np.array(v.value), copy=True) for v in model.trainable_variables]
  non_trainable = [jnp.array(np.array(v.value), copy=True)
                   for v in model.non_trainable_variables]
  digest = _weights_sha256(list(trainable) + list(non_trainable))
  pre, pre_record = _preprocessor(preprocess, shape[-1])

  def net(images):
    x = pre(jnp.asarray(images, jnp.float32))
    if layout == "NCHW":
      x = jnp.transpose(x, (0, 3, 1, 2))
    # The backend's most exact products (as the zoo's ports: registry.PixelClassifier).
    with jax.default_matmul_precision("highest"):
      out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
    return out

  spec = _output_spec(net, shape, f"the Keras model {model.name}")
  predict, output = _with_softmax(net, shape, softmax, spec.dtype)
  name = name or f"keras:{model.name}"
  metadata = {"source": "keras", "keras_version": keras.__version__, "name": name,
              "model_name": model.name, "input_shape": list(shape), "layout": layout,
              "num_classes": int(spec.shape[-1]), "preprocess": pre_record,
              **output, "softmax": softmax, "sha256": digest,
              "parameters": int(sum(np.size(a) for a in trainable + non_trainable))}
  return ImportedModel(name=name, predict=predict, input_shape=shape,
                       num_classes=int(spec.shape[-1]), metadata=metadata)


def from_jax(f: Callable, *, input_shape: Tuple[int, int, int],
             preprocess: Union[None, dict, Callable] = None, name: Optional[str] = None,
             softmax: Union[str, bool] = "auto") -> ImportedModel:
  """A JAX function of NHWC images (N, H, W, C) as a pixeljax model: ``preprocess`` and
  ``softmax`` as in ``from_keras``. Unlike a bare function passed to ``attack`` (a black box,
  the whole net per query), the result gets the engine's fast paths where its program splits
  (``factored``)."""
  if not callable(f):
    raise UserError(f"from_jax takes a function of the images, got {type(f).__name__}")
  shape = tuple(int(s) for s in input_shape)
  if len(shape) != 3:
    raise UserError(f"input_shape must be (H, W, C), got {shape}")
  pre, pre_record = _preprocessor(preprocess, shape[-1])
  net = lambda images: f(pre(jnp.asarray(images, jnp.float32)))
  spec = _output_spec(net, shape, "the function")
  predict, output = _with_softmax(net, shape, softmax, spec.dtype)
  name = name or f"jax:{getattr(f, '__name__', type(f).__name__)}"
  metadata = {"source": "jax", "name": name, "input_shape": list(shape),
              "num_classes": int(spec.shape[-1]), "preprocess": pre_record,
              **output, "softmax": softmax}
  return ImportedModel(name=name, predict=predict, input_shape=shape,
                       num_classes=int(spec.shape[-1]), metadata=metadata)


# --------------------------------------------------------------------------- PyTorch (torchax)

def _conv_as_nhwc(eqn, lhs, rhs):
  """An NCHW ``conv_general_dilated`` equation computed as NHWC / HWIO between transposes
  (bit-identical on XLA:CPU, and ~20x faster inside its loops); None if not that shape."""
  from jax import lax
  dn, p = eqn.params["dimension_numbers"], eqn.params
  if (lhs.ndim != 4 or tuple(dn.lhs_spec) != (0, 1, 2, 3)
      or tuple(dn.out_spec) != (0, 1, 2, 3) or p["batch_group_count"] != 1):
    return None
  o, i, h, w = dn.rhs_spec
  y = lax.conv_general_dilated(
      jnp.transpose(lhs, (0, 2, 3, 1)), jnp.transpose(rhs, (h, w, i, o)),
      p["window_strides"], p["padding"], p["lhs_dilation"], p["rhs_dilation"],
      ("NHWC", "HWIO", "NHWC"), p["feature_group_count"], 1, p["precision"],
      p["preferred_element_type"])
  return jnp.transpose(y, (0, 3, 1, 2))


def _eval_nhwc(jaxpr, consts, *args):
  from jax.extend import core as jcore
  env = {}
  read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    out = None
    if eqn.primitive.name == "conv_general_dilated":
      y = _conv_as_nhwc(eqn, *invals)
      out = None if y is None else [y]
    elif eqn.primitive.name in ("pjit", "jit", "closed_call"):
      inner = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr")
      if isinstance(inner, jcore.ClosedJaxpr):
        out = _eval_nhwc(inner.jaxpr, inner.consts, *invals)
    if out is None:
      with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      if not eqn.primitive.multiple_results:
        out = [out]
    env.update(zip(eqn.outvars, out))
  return [read(v) for v in jaxpr.outvars]


def nhwc_convolutions(f: Callable) -> Callable:
  """``f`` (a JAX function of arrays) with every 2-D NCHW convolution of its traced program
  run as NHWC between transposes: the same numbers (bit-identical on XLA:CPU), and inside
  XLA:CPU's loops and conditionals as fast as a native NHWC net (PyTorch-layout ResNet-20 in
  a 3-step ``fori_loop`` at batch 400: 55 s -> 2.9 s; the Flax port 3.2 s)."""
  def g(*args):
    closed, shape = jax.make_jaxpr(f, return_shape=True)(*args)
    outs = _eval_nhwc(closed.jaxpr, closed.consts, *jax.tree_util.tree_leaves(args))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs)
  return g


def _import_torchax():
  """torchax, imported (and its op tables built) on this torch. torchax <= 0.0.13 names
  named-tensor overloads (``aten.prod.dim_Dimname``, ``aten.norm.names_*``) that torch 2.13
  removed; while it loads, such a missing overload resolves to a placeholder that no traced
  program can reach (pixeljax traces tensors without names)."""
  try:
    import torch
    import torch._ops as torch_ops
  except ImportError:
    raise UserError("from_torch needs PyTorch and torchax: pip install 'pixeljax[torch]'") \
        from None
  original = torch_ops.OpOverloadPacket.__getattr__

  class _Removed:     # a named-tensor overload missing from this torch
    pass

  def tolerant(self, key):
    try:
      return original(self, key)
    except AttributeError:
      if "dimname" in key.lower() or "names" in key:
        return _Removed()
      raise
  torch_ops.OpOverloadPacket.__getattr__ = tolerant
  try:
    import torchax
    torchax.default_env()     # builds its op tables, which name those overloads
  except ImportError:
    raise UserError("from_torch needs torchax: pip install 'pixeljax[torch]'") from None
  finally:
    torch_ops.OpOverloadPacket.__getattr__ = original
  return torch, torchax


def from_torch(module, *, input_shape: Tuple[int, int, int],
               preprocess: Union[None, dict, Callable] = None, name: Optional[str] = None,
               softmax: Union[str, bool] = "auto", layout: str = "NCHW",
               nhwc: bool = True) -> ImportedModel:
  """A PyTorch ``nn.Module`` as a pixeljax model, through torchax (PyTorch ops as JAX).

  ``module`` is put in eval mode (batch norm's running statistics, dropout off).
  ``input_shape``: (H, W, C) of the pixel images. ``layout``: what the module takes, "NCHW"
  (PyTorch's convention; the images are transposed in JAX) or "NHWC". ``preprocess`` and
  ``softmax`` as in ``from_keras``. ``nhwc``: run its NCHW convolutions as NHWC
  (``nhwc_convolutions``; the same numbers, ~20x faster in the attacks' loops on CPU)."""
  torch, torchax = _import_torchax()
  if not isinstance(module, torch.nn.Module):
    raise UserError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
  if layout not in ("NCHW", "NHWC"):
    raise UserError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
  shape = tuple(int(s) for s in input_shape)
  if len(shape) != 3:
    raise UserError(f"input_shape must be (H, W, C), got {shape}")
  module.eval()
  states, jax_fn = torchax.extract_jax(module)
  states = jax.tree_util.tree_map(lambda a: jnp.array(np.array(a), copy=True), states)
  names = sorted(states)
  digest = _weights_sha256([states[k] for k in names])
  pre, pre_record = _preprocessor(preprocess, shape[-1])

  def forward(x):
    return jax_fn(states, (x,))

  core = nhwc_convolutions(forward) if nhwc else forward

  def net(images):
    x = pre(jnp.asarray(images, jnp.float32))
    if layout == "NCHW":
      x = jnp.transpose(x, (0, 3, 1, 2))
    with jax.default_matmul_precision("highest"):
      return core(x)

  spec = _output_spec(net, shape, f"the torch module {type(module).__name__}")
  predict, output = _with_softmax(net, shape, softmax, spec.dtype)
  name = name or f"torch:{type(module).__name__}"
  metadata = {"source": "torch", "torch_version": torch.__version__,
              "torchax_version": getattr(torchax, "__version__", None), "name": name,
              "module": type(module).__name__, "input_shape": list(shape), "layout": layout,
              "nhwc_convolutions": bool(nhwc), "num_classes": int(spec.shape[-1]),
              "preprocess": pre_record, **output, "softmax": softmax,
              "sha256": digest, "parameters": int(sum(np.size(states[k]) for k in names))}
  return ImportedModel(name=name, predict=predict, input_shape=shape,
                       num_classes=int(spec.shape[-1]), metadata=metadata)
