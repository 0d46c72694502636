"""Fooling images (Nguyen et al.): an encoding by name, the resumable MAP-Elites driver, and
gradient ascent from noise, each returning images and per-generation statistics.

``evolve`` runs MAP-Elites in *segments* of ``segment`` generations, one compiled
``lax.scan`` per segment (a shorter one for the remainder, so the run ends exactly at
``generations``). With a ``state_dir`` the folder is claimed by the settings that determine
the trajectory (``workdir.claim``) and the archive and statistics are saved after every
segment; a rerun with the same settings resumes, and a rerun with more generations extends
the run. Resumed and uninterrupted runs give identical archives and statistics.

Nothing here writes results or figures: experiments do (``experiments/fooling.py``).
"""
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from pixeljax import door, workdir as workdir_lib
from pixeljax.errors import UserError, one_line
from pixeljax.evolution import map_elites
from pixeljax.fooling import gradient_ascent
from pixeljax.fooling.cppn import CPPN
from pixeljax.fooling.direct import DirectEncoding
from pixeljax.models.registry import check_pixels
from pixeljax.progress import Progress

ENCODINGS = ("direct", "cppn")
STATE_FILE = "evolution_state.npz"
STAT_NAMES = ("filled", "median", "minimum")

# name -> (class, fields set from the image shape rather than by the user)
_ENCODING_TYPES = {"direct": (DirectEncoding, ("shape",)), "cppn": (CPPN, ("outputs",))}
# Encoding settings added after runs were first stored, each with the value that every run
# stored before it was made with: a folder claimed without them resumes as it was made.
ADDED_SETTINGS = {"cppn": dict(weight_init="normal", weight_mutation="gaussian",
                               weight_eta=15.0, p_resample_activation=0.0, add_node="new",
                               whole_pixels=False),
                  "direct": dict(whole_pixels=False)}


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
  """How long and how wide MAP-Elites runs (defaults: 400 offspring per generation, as the
  original code's ImageNet runs; its MNIST programs use 200)."""
  population: int = 400      # offspring per generation
  generations: int = 200
  segment: int = 50          # generations per compiled call, and between save points
  seed: int = 0

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "EvolutionConfig":
    """Picks this dataclass's fields out of a flat experiment config."""
    return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)})


def encoding_defaults(name: str) -> Dict[str, Any]:
  """The user-settable settings of encoding ``name`` and their defaults (the dataclass's)."""
  cls, derived = _encoding_type(name)
  return {f.name: f.default for f in dataclasses.fields(cls)
          if f.name not in derived and f.default is not dataclasses.MISSING}


def _encoding_type(name: str):
  if name not in _ENCODING_TYPES:
    raise UserError(f"unknown encoding {name!r}; known: {', '.join(ENCODINGS)}")
  return _ENCODING_TYPES[name]


def make_encoding(name: str, image_shape, settings: Optional[Mapping[str, Any]] = None):
  """Encoding ``name`` for images of ``image_shape`` (H, W, C); ``settings`` override the
  defaults of ``encoding_defaults(name)``."""
  cls, _ = _encoding_type(name)
  settings = dict(settings.items()) if settings is not None else {}
  unknown = sorted(set(settings) - set(encoding_defaults(name)))
  if unknown:
    raise UserError(f"unknown setting(s) {', '.join(unknown)} for encoding {name!r}; known: "
                    f"{', '.join(encoding_defaults(name))}")
  if len(tuple(image_shape)) != 3:
    raise UserError(f"image shape must be (H, W, C), got {tuple(image_shape)}")
  if name == "direct":
    return DirectEncoding(tuple(int(s) for s in image_shape), **settings)
  return CPPN(outputs=int(image_shape[-1]), **settings)


def migrate_config(stored: Mapping[str, Any]) -> Dict[str, Any]:
  """A stored experiment config (``config.json``: one dict of settings per encoding) in
  today's format: settings added since (``ADDED_SETTINGS``) take the values it ran with."""
  out = dict(stored)
  for name, added in ADDED_SETTINGS.items():
    if isinstance(out.get(name), Mapping):
      out[name] = {**added, **out[name]}
  return out


def _migrate_settings(stored: Mapping[str, Any]) -> Dict[str, Any]:
  """``migrate_config`` for ``evolve``'s own settings file (one encoding's settings)."""
  out = dict(stored)
  for name, added in ADDED_SETTINGS.items():
    if (out.get("encoding") == _ENCODING_TYPES[name][0].__name__
        and isinstance(out.get("encoding_settings"), Mapping)):
      out["encoding_settings"] = {**added, **out["encoding_settings"]}
  return out


def _describe(encoding) -> Dict[str, Any]:
  if dataclasses.is_dataclass(encoding):
    return dataclasses.asdict(encoding)
  return {"repr": repr(encoding)}


@functools.lru_cache(maxsize=16)
def _programs(predict, encoding, num_classes: int, population: int, height: int, width: int):
  """(init, run, render), compiled once per target, encoding and shape. ``run(archive, n)``
  compiles once per segment length n (at most two per run: the segment and a remainder)."""
  render = lambda genomes: encoding.render(genomes, height, width)
  scoring_fn = lambda genomes: predict(render(genomes))

  def init(key):
    k_init, k_next = jax.random.split(key)
    return map_elites.init(k_next, encoding.init(k_init, population), scoring_fn, num_classes)

  run = jax.jit(lambda archive, n: map_elites.run(archive, encoding, scoring_fn, population, n),
                static_argnums=1)
  return jax.jit(init), run, jax.jit(render)


def _check_target(predict, num_classes: int, image_shape, encoding=None) -> None:
  """The door of ``evolve`` and ``ascend``, before anything compiles: an image shape (H, W, C)
  that a direct encoding's genomes have, and a ``predict`` that takes it and returns one
  score per class of ``num_classes`` (traced, not run)."""
  if len(image_shape) != 3 or min(image_shape) < 1:
    raise UserError(f"image_shape must be (H, W, C) of positive sizes, got {image_shape}")
  if isinstance(encoding, DirectEncoding) and tuple(encoding.shape) != image_shape:
    raise UserError(f"the direct encoding makes images of shape {tuple(encoding.shape)}, "
                    f"not image_shape {image_shape}")
  if num_classes < 1:
    raise UserError(f"num_classes must be >= 1, got {num_classes}")
  try:
    out = jax.eval_shape(predict, jax.ShapeDtypeStruct((1,) + image_shape, jnp.float32))
  except Exception as e:     # whatever the model's framework raises for that input
    raise UserError(f"predict cannot take images of shape {image_shape}: {one_line(e)}"
                    ) from None
  shape = getattr(out, "shape", None)
  if shape != (1, num_classes):
    raise UserError(f"predict returns {shape if shape is not None else type(out).__name__} "
                    f"for one image; it must return ({num_classes} = num_classes) class "
                    f"probabilities per image")


def _check_scores(scores, who: str = "predict") -> None:
  """Scores the target returned are confidences in [0, 1]: probabilities, a slice of them
  (retrain scores the K real classes of a K + 1 class net) or per-class sigmoids. Logits
  would make every threshold (99.99%) meaningless; log-probabilities are all negative, and
  gradient ascent takes their log (NaN images, no error)."""
  scores = np.asarray(scores, np.float64)
  if not np.all(np.isfinite(scores)):
    raise UserError(f"{who} returned NaN or infinite scores; check its weights")
  if scores.size and (scores.min() < -1e-6 or scores.max() > 1 + 1e-6):
    raise UserError(f"{who} returns scores in [{scores.min():.3g}, {scores.max():.3g}], not "
                    f"confidences in [0, 1] (logits or log-probabilities?): wrap it as "
                    f"lambda x: jax.nn.softmax(predict(x))")


def _state_arrays(archive, stats, segments) -> Dict[str, np.ndarray]:
  out = {f"archive{jax.tree_util.keystr(path)}": np.asarray(leaf)
         for path, leaf in jax.tree_util.tree_flatten_with_path(archive)[0]}
  out.update({f"stats.{k}": np.asarray(v) for k, v in stats.items()})
  out["code_segments"] = np.asarray(json.dumps(segments))
  return out


def _code_segments(saved, generation: int) -> list:
  """``[{code, generations}]`` per saved segment of a state file: which code made which
  generations (a state saved before it recorded them: one unrecorded entry)."""
  if "code_segments" in saved:
    try:
      return json.loads(str(saved["code_segments"]))
    except ValueError:
      raise UserError("an evolution state's code_segments are corrupt; remove the state file "
                      "to start over") from None
  return [dict(code=None, generations=generation)] if generation else []


def code_versions(state_dir: str) -> list:
  """The code versions that made the generations of the resumable run in ``state_dir``
  (``workdir.tally_code_versions``, counted in generations)."""
  path = os.path.join(state_dir, STATE_FILE)
  if not os.path.exists(path):
    return []
  saved = workdir_lib.read_npz(path)
  segments = _code_segments(saved, len(saved["stats.filled"]))
  return workdir_lib.tally_code_versions([s["code"] for s in segments], "generations",
                                         [s["generations"] for s in segments])


def _restore(path: str, template) -> Tuple[Any, Dict[str, np.ndarray], list]:
  saved = workdir_lib.read_npz(path)
  flat, treedef = jax.tree_util.tree_flatten_with_path(template)
  leaves = []
  for p, spec in flat:
    key = f"archive{jax.tree_util.keystr(p)}"
    if key not in saved or saved[key].shape != spec.shape or saved[key].dtype != spec.dtype:
      raise UserError(f"{path} does not hold an archive of this run ({key} missing or of "
                      f"another shape); remove it to start over")
    leaves.append(saved[key])
  archive = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in leaves])
  stats = {k: saved[f"stats.{k}"] for k in STAT_NAMES}
  if any(len(v) != int(archive.generation) for v in stats.values()):
    raise UserError(f"{path} is inconsistent (statistics do not match generation "
                    f"{int(archive.generation)}); remove it to start over")
  return archive, stats, _code_segments(saved, int(archive.generation))


def evolve(predict: Callable, encoding, num_classes: int, image_shape,
           config: EvolutionConfig = EvolutionConfig(), *, state_dir: Optional[str] = None,
           scorer: Optional[str] = None, inputs: Optional[dict] = None,
           log: Optional[Callable[[str], None]] = None,
           progress_interval: float = 5.0, show_progress: bool = True,
           on_save: Optional[Callable[[int], None]] = None,
           code: Optional[Mapping[str, Any]] = None):
  """MAP-Elites for ``config.generations``; returns (archive, images, stats).

  ``predict(images) -> (B, num_classes)`` scores rendered images (e.g. a classifier's
  probabilities); ``images`` are the K elites rendered at ``image_shape``; ``stats`` holds
  one value per generation of ``STAT_NAMES``. With ``state_dir`` the run is resumable: the
  folder is claimed by every setting that determines the trajectory -- encoding and its
  settings, population, seed, segment, classes, image shape and ``scorer``, a name for
  ``predict`` that the caller chooses -- but not by ``generations``, so a finished run can
  be extended: the stored generations are reused as they are, and the run continues from the
  last one, bit for bit as a run asked for the longer length from the start would. A folder
  claimed by other settings raises ``workdir.SettingsMismatch``, and so does one bound to
  other ``inputs`` (e.g. the scorer's weights' SHA-256, ``workdir.bind``). ``on_save(g)`` is
  called whenever generation ``g`` is saved (and with the generation a resume starts from),
  so a caller can say what an interruption keeps. ``code``: the code version running now
  (e.g. ``cli.code_version()``), saved with the generations it makes, so a run resumed or
  extended across commits says which made which (``code_versions(state_dir)``)."""
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  if config.population < 1 or config.generations < 0 or config.segment < 1:
    raise UserError(f"population and segment must be >= 1 and generations >= 0, got "
                    f"{config.population}, {config.segment} and {config.generations}")
  image_shape = tuple(int(s) for s in image_shape)
  _check_target(predict, num_classes, image_shape, encoding)
  h, w, _ = image_shape
  init, run, render = _programs(predict, encoding, num_classes, config.population, h, w)
  archive, segments = None, []
  stats = {"filled": np.zeros((0,), np.int32), "median": np.zeros((0,), np.float32),
           "minimum": np.zeros((0,), np.float32)}
  key = jax.random.PRNGKey(config.seed)
  state_path = None
  if state_dir is not None:
    if not scorer:
      raise UserError("a resumable run (state_dir) needs a scorer name for predict")
    settings = dict(encoding=type(encoding).__name__, encoding_settings=_describe(encoding),
                    population=config.population, seed=config.seed, segment=config.segment,
                    num_classes=num_classes, image_shape=list(image_shape), scorer=scorer)
    workdir_lib.check_no_orphan_work(state_dir, (STATE_FILE,))
    resumed = workdir_lib.claim(state_dir, settings, migrate=_migrate_settings)
    if inputs:
      workdir_lib.bind(state_dir, inputs)
    state_path = os.path.join(state_dir, STATE_FILE)
    if resumed and os.path.exists(state_path):
      archive, stats, segments = _restore(state_path, jax.eval_shape(init, key))
      done = int(archive.generation)
      if done > config.generations:
        raise UserError(f"{state_dir} holds a run at generation {done}, beyond the "
                        f"{config.generations} asked for; ask for at least {done} or use "
                        f"another folder")
      log(f"resumed at generation {done}")
      if on_save:
        on_save(done)
  if archive is None:
    archive = init(key)
    # The first population's scores, as its elites keep them: free to check, before the run.
    _check_scores(np.asarray(archive.fitness)[np.asarray(archive.filled)])
  start = int(archive.generation)
  if start < config.generations:
    with Progress(config.generations, f"MAP-Elites {type(encoding).__name__}",
                  min_interval=progress_interval, enabled=show_progress,
                  initial=start) as bar:
      t0, gen = time.time(), start
      while gen < config.generations:
        archive, seg = run(archive, min(config.segment, config.generations - gen))
        stats = {k: np.concatenate([stats[k], np.asarray(seg[k])]) for k in STAT_NAMES}
        gen = int(archive.generation)
        if state_path:
          segments.append(dict(code=None if code is None else dict(code),
                               generations=len(np.asarray(seg["filled"]))))
          workdir_lib.write_npz(state_path, **_state_arrays(archive, stats, segments))
          if on_save:
            on_save(gen)
        bar.update(gen, generation=f"{gen}/{config.generations}",
                   filled=f"{int(stats['filled'][-1])}/{num_classes}",
                   median=f"{stats['median'][-1]:.6f}", minimum=f"{stats['minimum'][-1]:.6f}",
                   generations_per_s=(gen - start) / max(time.time() - t0, 1e-9))
  images = render(archive.genomes)
  chex.assert_shape(images, (num_classes,) + image_shape)
  return archive, np.asarray(images), stats


def ascend(predict: Callable, num_classes: int, image_shape,
           config: gradient_ascent.GradientAscentConfig = gradient_ascent.GradientAscentConfig(),
           seed: int = 0):
  """Gradient ascent from noise on every class at once; returns (images, fitness, stats,
  first_steps): the final images, their own-class confidence, per-step statistics in the
  format of ``evolve`` and the first step each class reached top-1 and each threshold."""
  image_shape = tuple(int(s) for s in image_shape)
  _check_target(predict, num_classes, image_shape)
  # One call on noise first (ascent would take the log of logits: NaN images, no error).
  _check_scores(jax.jit(predict)(np.random.default_rng(0).uniform(
      0, 255, (2,) + image_shape).astype(np.float32)))
  state, conf = jax.jit(lambda key: gradient_ascent.run(predict, key, image_shape, num_classes,
                                                         config))(jax.random.PRNGKey(seed))
  conf = np.asarray(conf)
  chex.assert_shape(conf, (config.steps, num_classes))
  stats = {"filled": np.full(len(conf), num_classes, np.int32),
           "median": np.median(conf, 1), "minimum": conf.min(1)}
  first = dict(first_top1_step=np.asarray(state.first_top1).tolist(),
               first_step_at={str(t): np.asarray(state.first_conf)[:, i].tolist()
                              for i, t in enumerate(gradient_ascent.THRESHOLDS)})
  fitness = conf[-1] if len(conf) else np.zeros((num_classes,), np.float32)
  return np.asarray(state.images), fitness, stats, first


def add_fooling_class(images, labels, fooling_images, num_classes: int):
  """The retraining defence's training set: ``images``/``labels`` plus the fooling images
  labelled ``num_classes`` (the new class), repeated up to the size of an average real class
  (as the paper oversamples them)."""
  images, labels, fooling = np.asarray(images), np.asarray(labels), np.asarray(fooling_images)
  if not len(fooling):
    raise UserError("no fooling images to add")
  if fooling.shape[1:] != images.shape[1:]:
    raise UserError(f"fooling images of shape {fooling.shape[1:]}, training images of shape "
                    f"{images.shape[1:]}")
  for what, x in (("training images", images), ("fooling images", fooling)):
    check_pixels(x, f"add_fooling_class ({what})")
    door.check_pixel_scale(x, f"the {what}")  # [0, 1] would round to a black class
  if num_classes < 1 or len(labels) < num_classes:
    raise UserError(f"num_classes must be >= 1 and at most the {len(labels)} labels (one "
                    f"average class of fooling images is added), got {num_classes}")
  fooling_images = np.clip(np.round(fooling), 0, 255).astype(images.dtype)
  per_class = len(labels) // num_classes
  reps = int(np.ceil(per_class / len(fooling_images)))
  extra = np.tile(fooling_images, (reps,) + (1,) * (fooling_images.ndim - 1))[:per_class]
  return (np.concatenate([images, extra]),
          np.concatenate([labels.astype(np.int32), np.full(len(extra), num_classes, np.int32)]))
