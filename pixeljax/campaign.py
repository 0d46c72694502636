"""A resumable campaign of pixel attacks: image selection, chunking, saving, resuming.

Work is cut into chunks of attacks sized to fit device memory; each finished chunk is written
to ``workdir/chunks/<tag>/chunk_NNNNN.npz`` before the next starts, so a killed run restarts
where it stopped. Every attack's randomness depends only on the seed, its image id and its
target, so a resumed run gives exactly the records of an uninterrupted one.
"""
import dataclasses
import os
import sys
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from pixeljax import checkpoint
from pixeljax.evaluate import predict_in_batches
from pixeljax.pixel_attack import AttackRecords, PixelAttackConfig, attack, targets_for_all


def select_images(predict, images, labels, num_images: int, seed: int) -> np.ndarray:
  """Indices of ``num_images`` correctly classified images, drawn at random with ``seed``
  (all of them, in random order, if fewer are correct)."""
  probs = predict_in_batches(predict, images)
  correct = np.nonzero(probs.argmax(-1) == np.asarray(labels))[0]
  rng = np.random.default_rng(seed)
  return rng.choice(correct, size=min(num_images, len(correct)), replace=False)


def auto_chunk_size(predict, image_shape, popsize: int, budget_bytes: Optional[int] = None,
                    cap: int = 1024) -> int:
  """How many attacks fit in one call: (device memory budget) / (memory of one generation of
  one attack, i.e. a ``popsize`` batch through the model, as XLA reports it)."""
  if budget_bytes is None:
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() or {}
    budget_bytes = int(stats.get("bytes_limit", 4 << 30) * 0.5)
  x = jax.ShapeDtypeStruct((popsize,) + tuple(image_shape), jnp.float32)
  per_attack = None
  try:
    mem = jax.jit(predict).lower(x).compile().memory_analysis()
    if mem is not None:
      per_attack = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
  except Exception:  # some backends have no memory analysis
    per_attack = None
  if not per_attack:
    per_attack = 64 * popsize * int(np.prod(image_shape)) * 4
  return int(max(1, min(cap, budget_bytes // per_attack)))


def _save_records(path: str, rec: AttackRecords):
  import io
  buf = io.BytesIO()
  np.savez(buf, **{f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)})
  checkpoint.atomic_write(path, buf.getvalue())


def load_records(path: str) -> AttackRecords:
  with np.load(path) as d:
    return AttackRecords(**{k: d[k] for k in d.files})


def concat_records(recs) -> AttackRecords:
  return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *recs)


def run(predict, images, labels, image_ids, config: PixelAttackConfig, seed: int,
        workdir: str, tag: str, num_classes: int, chunk_size: Optional[int] = None,
        mesh=None, log: Callable[[str], None] = None) -> AttackRecords:
  """Attacks the given images (all K-1 targets of each when ``config.targeted``), chunk by
  chunk, saving each chunk; returns the records of the whole campaign."""
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  images, labels, image_ids = map(np.asarray, (images, labels, image_ids))
  if config.targeted:
    rows, targets = targets_for_all(labels, num_classes)
  else:
    rows, targets = np.arange(len(labels)), np.full(len(labels), -1, np.int32)
  if chunk_size is None:
    chunk_size = auto_chunk_size(predict, images.shape[1:], config.popsize)
  if mesh is not None:
    chunk_size = int(np.ceil(chunk_size / mesh.size) * mesh.size)
  folder = os.path.join(workdir, "chunks", tag)
  os.makedirs(folder, exist_ok=True)
  key = jax.random.PRNGKey(seed)
  num_chunks = int(np.ceil(len(rows) / chunk_size)) if len(rows) else 0
  recs, t0 = [], time.time()
  for c in range(num_chunks):
    path = os.path.join(folder, f"chunk_{c:05d}_of_{num_chunks:05d}_size{chunk_size}.npz")
    sl = slice(c * chunk_size, (c + 1) * chunk_size)
    if os.path.exists(path):
      rec = load_records(path)
      status = "loaded"
    else:
      r = rows[sl]
      rec = attack(predict, images[r], labels[r], key, config, targets=targets[sl],
                   image_ids=image_ids[r], num_classes=num_classes, mesh=mesh,
                   max_batch=chunk_size)
      _save_records(path, rec)
      status = "attacked"
    recs.append(rec)
    done = sum(len(x.success) for x in recs)
    rate = np.mean(np.concatenate([x.success for x in recs]))
    bar = "#" * int(30 * (c + 1) / num_chunks)
    log(f"[{tag}] [{bar:<30}] chunk {c + 1}/{num_chunks} ({status}) {done}/{len(rows)} "
        f"attacks, success {100 * rate:.1f}%, {time.time() - t0:.0f}s")
  return concat_records(recs) if recs else None


def _versions():
  import flax
  import importlib.metadata as md
  out = dict(jax=jax.__version__, flax=flax.__version__, numpy=np.__version__)
  try:
    out["pixeljax"] = md.version("pixeljax")
  except md.PackageNotFoundError:
    pass
  out["backend"] = jax.default_backend()
  out["devices"] = jax.device_count()
  return out


# Peers' figures on the same weights (Hyperparticle README: 100 samples, 75 generations).
REFERENCE = {
    "cifar10_lenet_hyperparticle": {"untargeted": {1: .63, 3: .92, 5: .93},
                                    "targeted": {1: .344, 3: .644, 5: .644}},
    "cifar10_resnet32_hyperparticle": {"untargeted": {1: .34, 3: .79, 5: .79},
                                       "targeted": {1: .144, 3: .211, 5: .222}},
}


def one_pixel_experiment(classifier, dataset, pixels, workdir: str, *, targeted: bool = False,
                         num_images: int = 500, popsize: int = 400, generations: int = 100,
                         strategy: str = "rand1", objective: str = "probability",
                         seed: int = 0, stop_probability: Optional[float] = None,
                         chunk_size: Optional[int] = None, exhaustive: bool = False,
                         exhaustive_levels=(0, 255),
                         mesh=None, figures: bool = True, log=None) -> dict:
  """The paper's experiment on one model: for each pixel count, attack ``num_images``
  correctly classified images, write records, metrics (``results.json``) and figures."""
  import json
  from pixeljax import metrics, plots
  from pixeljax.models import check_images
  from pixeljax.pixel_attack import colour_grid, exhaustive_one_pixel
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  os.makedirs(workdir, exist_ok=True)
  check_images(dataset.images[:1], classifier.spec.input_shape,
               f"model {classifier.name} (data set {dataset.name})")
  if dataset.num_classes != classifier.num_classes:
    raise ValueError(f"data set {dataset.name} has {dataset.num_classes} classes, model "
                     f"{classifier.name} has {classifier.num_classes}")
  chosen = select_images(classifier.predict, dataset.images, dataset.labels, num_images, seed)
  sub = dataset.take(chosen)
  mode = "targeted" if targeted else "untargeted"
  results = dict(settings=dict(model=classifier.name, data=dataset.name, split=dataset.split,
                               pixels=list(pixels), targeted=targeted, num_images=len(chosen),
                               popsize=popsize, generations=generations, strategy=strategy,
                               objective=objective, seed=seed,
                               stop_probability=stop_probability,
                               image_ids=sub.index.tolist()),
                 versions=_versions(), model_metadata={k: classifier.metadata.get(k) for k in (
                     "accuracy", "accuracy_on", "source", "num_params")},
                 metrics={})
  curve = {}
  for k in pixels:
    config = PixelAttackConfig(pixels=k, popsize=popsize, generations=generations,
                               strategy=strategy, targeted=targeted, objective=objective,
                               stop_probability=stop_probability)
    tag = f"{mode}_{k}px_{strategy}"
    if objective != "probability":
      tag += f"_{objective}"
    t0 = time.time()
    rec = run(classifier.predict, sub.images, sub.labels, sub.index, config, seed, workdir, tag,
              classifier.num_classes, chunk_size=chunk_size, mesh=mesh, log=log)
    m = metrics.summary(rec, classifier.num_classes)
    m["seconds"] = time.time() - t0
    results["metrics"][f"{k}px"] = m
    curve[k] = m["success_rate"]
    _save_records(os.path.join(workdir, f"records_{tag}.npz"), rec)
    conf = "n/a" if m["confidence"] is None else f"{m['confidence']:.1%}"
    log(f"{classifier.name} {mode} {k} pixel(s): success {m['success_rate']:.1%}, "
        f"confidence {conf}, {m['queries_per_attack']:.0f} queries/attack")
    if figures:
      pos = {int(i): j for j, i in enumerate(sub.index)}
      imgs = sub.images[[pos[int(i)] for i in rec.image_id]]
      plots.adversarial_grid(os.path.join(workdir, f"adversarial_{tag}.png"), imgs, rec,
                             dataset.class_names,
                             title=f"{classifier.name}: {mode} {k}-pixel attack")
      plots.class_pair_heatmap(os.path.join(workdir, f"class_pairs_{tag}.png"),
                               np.asarray(m["class_pairs"]), dataset.class_names)
  if exhaustive:
    t0 = time.time()
    colours = colour_grid(exhaustive_levels, sub.images.shape[-1])
    ex = exhaustive_one_pixel(classifier.predict, sub.images, sub.labels, colours)
    results["exhaustive_one_pixel"] = dict(
        colours=f"{len(colours)}: every channel in {sorted(set(exhaustive_levels))}",
        images_fooled=float(np.mean(ex["fooled"])),
        queries_per_image=int(ex["queries"][0]),
        mean_fooling_changes_per_image=float(np.mean(ex["num_fooling_changes"])),
        seconds=time.time() - t0)
    np.savez(os.path.join(workdir, "exhaustive_one_pixel.npz"), image_id=sub.index, **ex)
    log(f"exhaustive one-pixel baseline: {np.mean(ex['fooled']):.1%} of images fooled")
  if figures and len(curve) > 1:
    ref = REFERENCE.get(classifier.name, {}).get(mode)
    plots.success_vs_pixels(os.path.join(workdir, f"success_vs_pixels_{mode}.png"),
                            {f"pixeljax ({strategy}, {objective})": curve},
                            {"Hyperparticle (Keras)": ref} if ref else None,
                            title=f"{classifier.name}, {mode}")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  return results
