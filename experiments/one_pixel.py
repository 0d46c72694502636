r"""One-pixel / few-pixel attack of Su, Vargas & Sakurai on a zoo model or your own.

  python experiments/one_pixel.py --workdir runs/lenet               # configs/one_pixel.py
  python experiments/one_pixel.py --config=configs/one_pixel.py:lenet_best1bin \
      --workdir runs/lenet_best1bin
  python experiments/one_pixel.py --config.model=cifar10_resnet32_hyperparticle \
      --config.data=../shared/data/cifar10_test_exact1017.npz --config.pixels=3 --workdir runs/r
  python experiments/one_pixel.py --config.model=path/to/net.keras --workdir runs/mine
  python experiments/one_pixel.py --config.model=torch:my_nets:make \
      --config.model_preprocess.scale=0.00392156862745098 --workdir runs/torch

The config (``configs/one_pixel.py``) is the run's one source of settings. Writes to
--workdir: config.json (first), results.json (config, versions, metrics; rewritten as each
pixel count finishes, its ``pending`` naming what is still to run), records_*.npz (one row
per attack) and figures; finished chunks of attacks (and parts of the exhaustive bound) live
in --workdir/chunks, so rerunning the same command after an interruption resumes. A rerun
with other settings is refused (or, with --new_run, goes to a new folder beside it).
Multi-host: --config.runtime.distributed=True on every host.
"""
import os
import time

import numpy as np

from pixeljax import cli, compilation, data, door, models, plots, sharding, workdir as workdir_lib
from pixeljax.errors import UserError
from pixeljax.metrics import one_pixel as metrics
from pixeljax.models import check_images
from pixeljax.sparse import campaign
from pixeljax.sparse import formats
from pixeljax.sparse.exhaustive import colour_grid, exhaustive_one_pixel
from pixeljax.sparse.problem import PixelAttackConfig

# Peers' figures on the same weights (Hyperparticle README: 100 samples, 75 generations).
REFERENCE = {
    "cifar10_lenet_hyperparticle": {"untargeted": {1: .63, 3: .92, 5: .93},
                                    "targeted": {1: .344, 3: .644, 5: .644}},
    "cifar10_resnet32_hyperparticle": {"untargeted": {1: .34, 3: .79, 5: .79},
                                       "targeted": {1: .144, 3: .211, 5: .222}},
}


# What results.json records of an imported model (a Keras file, torch:module:function) beside
# the zoo's fields: where it came from and what was put around it.
IMPORTED_METADATA = ("path", "factory", "input_shape", "layout", "preprocess", "softmax_added",
                     "output_dtype", "parameters", "keras_version", "torch_version",
                     "torchax_version")

# How an imported model's outputs are read from its file, beyond the weights' hash (its
# preprocessing, softmax and layout options): bound with the weights, so a run folder whose
# config.json is gone cannot resume under another reading of the same file.
IMPORTED_READING = ("preprocess", "softmax_added", "layout", "output_dtype")

# Per-pixel-count fields of results.json that describe a start's time, not the attack: a
# resumed run reports what its own start spent (attack_seconds sums every start's chunks).
TIMING = ("seconds", "attack_seconds", "compile_seconds", "programs_compiled",
          "compile_cache_hits")


def describe(config) -> str:
  return PixelAttackConfig(pixels=1, **config.attack.to_dict()).describe()


def attack_config(config, pixels: int) -> PixelAttackConfig:
  """What is attacked with ``pixels`` pixels (validated)."""
  return PixelAttackConfig(pixels=int(pixels), **config.attack.to_dict())


def execution_overrides(config) -> dict:
  """The ``Execution`` fields the run insists on (``runtime.execution``; unset: the engine's
  choice, or a resumed run's stored one)."""
  return {k: v for k, v in config.runtime.execution.to_dict().items() if v is not None}


# Images per saved part of the exhaustive bound: a multiple of exhaustive_one_pixel's 8 images
# per model call, so on one device (or a CPU's dealt cores) the parts make exactly the calls
# an unsaved run makes (same bits). Sharded over D devices, calls are rounded up to D's
# multiple: each device still sweeps one image at a time.
BOUND_PART = 24


def _exhaustive_bound(classifier, sub, colours, mesh, workdir, inputs, log=cli.log) -> dict:
  """``exhaustive_one_pixel`` on ``sub`` in parts of ``BOUND_PART`` images, each saved as it
  finishes (``chunks/exhaustive/``, bound to ``inputs`` as attack chunks are), so a bound
  stopped after minutes of a large net resumes from its last part instead of from nothing."""
  folder = workdir.file("chunks", "exhaustive")
  campaign.check_shared_folder(folder)
  workdir_lib.bind(folder, inputs)       # every process compares; process 0 writes
  parts = []
  for start in range(0, len(sub.index), BOUND_PART):
    ids = sub.index[start:start + BOUND_PART]
    path = os.path.join(folder, f"part_{start:05d}.npz")
    if os.path.exists(path):
      part = workdir_lib.read_npz(path)
      if not np.array_equal(part["image_id"], ids):
        raise workdir_lib.SettingsMismatch(
            f"{path} holds the bound of other images ({part['image_id'].tolist()[:3]}..., "
            f"expected {ids.tolist()[:3]}...); remove {folder} to redo the bound")
      # Parts saved before they kept their colours have none to compare.
      if "colours" in part and not np.array_equal(part["colours"], colours):
        raise workdir_lib.SettingsMismatch(
            f"{path} holds the bound over other colours (levels "
            f"{list(dict.fromkeys(part['colours'][:, 0].tolist()))}, in this order); set "
            f"exhaustive_levels to them, or remove {folder} to redo the bound")
    else:
      sl = slice(start, start + len(ids))
      part = dict(image_id=ids, colours=colours,
                  **exhaustive_one_pixel(classifier, sub.images[sl], sub.labels[sl], colours,
                                         mesh=mesh))
      # The images were selected as correctly classified: parts keep the fields they had.
      part.pop("already_misclassified")
      workdir_lib.save_on_writer(lambda: workdir_lib.write_npz(
          path, **part, **campaign.part_stamp(cli.code_version(), mesh)))
      log(f"exhaustive bound: {start + len(ids)} of {len(sub.index)} images done")
    parts.append(part)
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]
          if k not in ("image_id", "code", "machine", "colours")}


def run(config, workdir: workdir_lib.Workdir, log=cli.log) -> dict:
  """The paper's experiment on one model: for each pixel count, attack ``num_images``
  correctly classified images; write records, metrics (``results.json``) and figures."""
  pixels = [int(k) for k in config.pixels]
  if not pixels and not config.exhaustive:
    raise UserError("pixels is empty: name the pixel counts to attack with (e.g. "
                    "--config.pixels='(1,3,5)'), or set exhaustive=True for the exhaustive "
                    "one-pixel bound alone")
  mesh = sharding.attack_mesh() if config.runtime.shard else None
  configs = {k: attack_config(config, k) for k in pixels}           # validates before work
  if config.seed < 0:
    raise UserError(f"seed must be >= 0, got {config.seed}")
  if config.runtime.attacks_per_call is not None and config.runtime.attacks_per_call < 1:
    raise UserError(f"runtime.attacks_per_call must be >= 1 (or None: sized by memory), got "
                    f"{config.runtime.attacks_per_call}")
  dataset = data.load(config.data, config.split, data_dir=config.data_dir)
  # A zoo name, a Keras file or torch:module:function (an imported model takes the data's
  # image size unless it says its own or config.model_input_shape does).
  classifier = models.files.from_config(config, data_shape=dataset.images.shape[1:])
  check_images(dataset.images[:1], door.input_shape(classifier),
               f"model {classifier.name} (data set {dataset.name})")
  if dataset.num_classes != classifier.num_classes:
    raise UserError(f"data set {dataset.name} has {dataset.num_classes} classes, model "
                    f"{classifier.name} has {classifier.num_classes}")
  if config.num_images < 1:
    raise UserError(f"num_images must be >= 1, got {config.num_images}")
  if config.exhaustive:   # names bad colour levels now, not after hours of attacks
    levels = [float(v) for v in config.exhaustive_levels]
    colours = colour_grid(levels, dataset.images.shape[-1])
  chosen = campaign.select_images(classifier, dataset.images, dataset.labels,
                                  config.num_images, config.seed, mesh=mesh)
  if len(chosen) == 0:
    raise UserError(f"model {classifier.name} classifies none of the {len(dataset)} images of "
                    f"{dataset.name} correctly: nothing to attack (wrong data or labels?)")
  sub = dataset.take(chosen)
  mode = "targeted" if config.attack.targeted else "untargeted"
  if len(chosen) < config.num_images:
    log(f"warning: {dataset.name} has only {len(chosen)} images that {classifier.name} "
        f"classifies correctly, fewer than num_images={config.num_images}; attacking those")
  if pixels:
    log(f"{classifier.name}: {mode} {describe(config)} attack on {len(chosen)} correctly "
        f"classified images of {dataset.name}, {pixels} pixel(s), at most "
        f"{configs[pixels[0]].budget:,} queries per attack")
  # What the settings name only by reference: the exact weights, and the attacked images and
  # labels (a data file rewritten in place keeps its name and the ids the chunks are keyed by).
  inputs = dict(weights_sha256=classifier.metadata.get("sha256"),
                images_sha256=workdir_lib.arrays_sha256(sub.images, sub.labels, sub.index),
                **{f"model_{k}": classifier.metadata[k] for k in IMPORTED_READING
                   if k in classifier.metadata})
  results = dict(config=config.to_dict(), versions=workdir_lib.versions(), inputs=inputs,
                 image_ids=sub.index.tolist(),
                 model_metadata={**{k: classifier.metadata.get(k) for k in (
                     "accuracy", "accuracy_on", "source", "num_params", "sha256")},
                     **{k: classifier.metadata[k] for k in IMPORTED_METADATA
                        if k in classifier.metadata}},
                 metrics={})
  identity = dict(model=classifier.name, data=dataset.name, split=dataset.split)
  curve, all_records = {}, {}
  for k in pixels:
    tag = f"{mode}_{k}px"
    t0, c0 = time.time(), compilation.totals()
    folder = workdir.file("chunks", tag)
    rec = campaign.run(classifier, sub.images, sub.labels, sub.index, configs[k],
                       config.seed, folder, classifier.num_classes,
                       identity=identity, inputs=inputs,
                       attacks_per_call=config.runtime.attacks_per_call, mesh=mesh,
                       execution=execution_overrides(config),
                       desc=f"{k} px", progress=config.runtime.progress, log=log,
                       on_saved=lambda done, total, k=k: cli.note_saved(
                           f"{done} of {total} {k}-pixel attacks saved"),
                       code=cli.code_version())
    m = metrics.summary(rec, classifier.num_classes)
    made = formats.migrate(campaign.stored_settings(folder))   # the settings that made it
    m["attack"] = made["attack"]
    m["execution"] = made["execution"]
    m["attack_keys"] = made["attack_keys"]
    m["seconds"] = time.time() - t0    # this start only (a resumed run loads its chunks)
    m["attack_seconds"] = campaign.attack_seconds(workdir.file("chunks", tag))   # all starts
    # Which code made the records, chunk by chunk (a run resumed across commits names each):
    # results.json's "code" is only this start's.
    m["code_versions"] = campaign.code_versions(workdir.file("chunks", tag))
    m["machines"] = campaign.machines(workdir.file("chunks", tag))
    compiled = compilation.since(c0)   # this start only, like seconds
    m["compile_seconds"] = compiled["compile_seconds"]
    m["programs_compiled"] = int(compiled["programs"])
    m["compile_cache_hits"] = int(compiled["cache_hits"])
    results["metrics"][f"{k}px"] = m
    curve[k] = m["success_rate"]
    all_records[k] = rec
    workdir.write_npz(f"records_{tag}.npz", **rec.as_dict())
    # What is finished is written at once (one pixel count can take a sitting); ``pending``
    # names what is still to run, so a partial results.json cannot pass for a whole one.
    later = [f"{j}px" for j in pixels[pixels.index(k) + 1:]]
    workdir.write_json("results.json", {**results, "pending": later + (
        ["exhaustive_one_pixel"] if config.exhaustive else [])})
    conf = "n/a" if m["confidence"] is None else f"{m['confidence']:.1%}"
    log(f"{classifier.name} {mode} {k} pixel(s): success {m['success_rate']:.1%} (returned "
        f"candidate fools; fooled at some query: {m['fooled_at_some_query_rate']:.1%}), "
        f"confidence {conf}, {m['queries_per_attack']:.0f} queries/attack, "
        f"{m['seconds']:.0f} s of which {m['compile_seconds']:.1f} s compiling "
        f"({m['programs_compiled']} programs, {m['compile_cache_hits']} from the cache)")
    if config.figures:
      pos = {int(i): j for j, i in enumerate(sub.index)}
      imgs = sub.images[[pos[int(i)] for i in rec.image_id]]
      workdir.save_figure(f"adversarial_{tag}.png", plots.adversarial_grid(
          imgs, rec, dataset.class_names, title=f"{classifier.name}: {mode} {k}-pixel attack"))
      workdir.save_figure(f"class_pairs_{tag}.png", plots.class_pair_heatmap(
          np.asarray(m["class_pairs"]), dataset.class_names))
  if config.exhaustive:
    log(f"{classifier.name}: exhaustive one-pixel bound on {len(chosen)} correctly classified "
        f"images of {dataset.name}, {len(colours)} colours x every position")
    t0 = time.time()
    ex = _exhaustive_bound(classifier, sub, colours, mesh, workdir, inputs, log)
    results["exhaustive_one_pixel"] = dict(
        colours=f"{len(colours)}: every channel in {sorted(set(levels))}",
        images_fooled=float(np.mean(ex["fooled"])),
        queries_per_image=int(ex["queries"][0]),
        mean_fooling_changes_per_image=float(np.mean(ex["num_fooling_changes"])),
        seconds=time.time() - t0,
        code_versions=campaign.code_versions(workdir.file("chunks", "exhaustive"), "part_"),
        machines=campaign.machines(workdir.file("chunks", "exhaustive"), "part_"))
    workdir.write_npz("exhaustive_one_pixel.npz", image_id=sub.index, **ex)
    log(f"exhaustive one-pixel baseline: {np.mean(ex['fooled']):.1%} of images fooled")
  if config.figures and all_records:
    workdir.save_figure(f"success_vs_queries_{mode}.png", plots.success_vs_queries(
        {f"{k} px": metrics.query_curve(r) for k, r in all_records.items()},
        title=f"{classifier.name}, {mode}: {describe(config)}"))
  if config.figures and len(curve) > 1:
    ref = REFERENCE.get(classifier.name, {}).get(mode)
    workdir.save_figure(f"success_vs_pixels_{mode}.png", plots.success_vs_pixels(
        {f"pixeljax ({describe(config)})": curve},
        {"Hyperparticle (Keras)": ref} if ref else None, title=f"{classifier.name}, {mode}"))
  results["pending"] = []
  workdir.write_json("results.json", results)
  return results


def report(results: dict) -> str:
  """A short table: one line per pixel count."""
  lines = [f"{'pixels':>6} {'attacks':>8} {'success':>8} {'95% interval':>15} "
           f"{'confidence':>10} {'queries/attack':>15} {'1st success: mean':>18} "
           f"{'median':>7} {'seconds':>8} {'compile s':>9}"]
  resampled = False
  for k, m in results["metrics"].items():
    # Where images are attacked more than once (targeted), the interval resampling images.
    lo, hi = m.get("success_rate_ci95_images") or m["success_rate_ci95"]
    resampled |= "success_rate_ci95_images" in m
    conf = "n/a" if m["confidence"] is None else f"{m['confidence']:.1%}"
    first = m["queries_of_first_success"]
    mean, median = (("n/a", "n/a") if first["mean"] is None
                    else (f"{first['mean']:,.0f}", f"{first['median']:,.0f}"))
    lines.append(f"{k:>6} {m['attacks']:>8} {m['success_rate']:>8.1%} "
                 f"{f'{lo:.1%}-{hi:.1%}':>15} {conf:>10} {m['queries_per_attack']:>15,.0f} "
                 f"{mean:>18} {median:>7} {m.get('attack_seconds') or m['seconds']:>8.0f} "
                 f"{m.get('compile_seconds', 0):>9.1f}")
  if resampled:
    lines.append("95% intervals resample images (an image's attacks are not independent "
                 "trials); otherwise Wilson over attacks")
  if "exhaustive_one_pixel" in results:
    ex = results["exhaustive_one_pixel"]
    lines.append(f"exhaustive one pixel ({ex['colours']}): {ex['images_fooled']:.1%} of images "
                 f"fooled, {ex['queries_per_image']:,} queries per image")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.main(run, "one_pixel.py", report=report, migrate=formats.migrate_config)
