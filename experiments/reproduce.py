r"""The one-pixel programme (issue 26) as one resumable command: train, attack, tabulate.

  python experiments/reproduce.py --workdir results/reproduce
  nohup python experiments/reproduce.py --workdir results/reproduce > /tmp/reproduce.log 2>&1 &

Settings: ``configs/reproduce.py`` (the steps, nets, image counts). Every step is a run of an
existing experiment script (train.py, one_pixel.py) in its own folder under --workdir, so each
resumes by itself and claims its own settings; a run whose folder holds results.json and
``made_by.json`` naming this command's settings and weights is done and skipped (others:
refused, named; the tables leave such runs out). A rerun of the same command continues
where the last one stopped, runtime flags free to change (an execution,
``runtime.execution.*``, is a setting). Writes ``summary.md`` (every
finished run beside its published figure, with 95% intervals; a run still going with the
pixel counts it has finished, marked running) and ``results.json``.

``results/reproduce`` is the project's own programme folder, committed as it grows (finished
chunks of unfinished runs too: a later sitting, on a fresh machine, resumes from a clone);
its ``.gitignore`` keeps locks and training state out.
"""
import os
import signal
import subprocess
import sys

import numpy as np

from pixeljax import cli, data, models, workdir as workdir_lib
from pixeljax.data import CIFAR10_CLASSES
from pixeljax.errors import UserError
from pixeljax.evaluate import accuracy
from pixeljax.metrics import one_pixel as metrics
from pixeljax.sparse import records as attack_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXACT = "../shared/data/cifar10_test_exact1017.npz"
# The one-pixel paper (Su et al.), mean over All-CNN, NiN and VGG16, untargeted.
PAPER = {1: .738, 3: .820, 5: .873}
PAPER_CONFIDENCE = .987
# The Keras reimplementation's README (Hyperparticle), 100 samples, 75 generations.
# Its own per-attack records, from which those figures were computed (benchmarks/
# reimplementation_records.py): the targeted ones are 10 images x 9 targets.
PUBLISHED_RECORDS = os.path.join(ROOT, "results", "reimplementation", "published_records.json")
REIMPLEMENTATION = {
    "cifar10_lenet_hyperparticle": {"untargeted": {1: .63, 3: .92, 5: .93},
                                    "targeted": {1: .344, 3: .644, 5: .644}},
    "cifar10_resnet32_hyperparticle": {"untargeted": {1: .34, 3: .79, 5: .79},
                                       "targeted": {1: .144, 3: .211, 5: .222}},
}
# The programme's folder claims none of its settings: every run in it claims its own folder
# (train.py and one_pixel.py refuse other settings there; a finished run must match its
# made_by.json), so runtime flags (not runtime.execution) may change freely, another net
# list adds folders, and a changed recipe or image count is refused by name in the runs it
# concerns, never relabels them. config.json keeps the settings of the last completed start.
MADE_BY = "made_by.json"   # in each run's folder: what made it (command, weights); see _made_by
EXTENDABLE = ("paper_nets", "reimplementation_nets", "train_recipe", "store_dtype",
              "paper_images", "paper_targeted_images", "reimplementation_images", "pixels",
              "seed", "attack_flags")


def _script(name: str):
  return [sys.executable, os.path.join(ROOT, "experiments", name)]


def plan(config, root: str):
  """(the steps to run, [(step, folder, command)] of every run of the programme, in order):
  the tables report the finished runs whichever steps run now."""
  steps = [s for s in str(config.runtime.steps).split(",") if s]
  unknown = set(steps) - {"train", "paper", "reimplementation", "tables"}
  if unknown:
    raise UserError(f"unknown step(s) {sorted(unknown)}; known: train, paper, "
                    f"reimplementation, tables")
  pixels = "(" + ",".join(str(int(k)) for k in config.pixels) + ",)"
  extra = str(config.attack_flags).split()
  runs = []
  nets = [n for n in str(config.paper_nets).split(",") if n]
  for net in nets:
    _check_recipe(config, net)
    if not os.path.exists(os.path.join(models.checkpoint_dir(), f"{net}.msgpack")):
      if any(net not in config[key] for key in ("train_recipe", "store_dtype")):
        if "train" in steps:
          raise UserError(f"{net} has no checkpoint and no training recipe here (train_recipe "
                          f"and store_dtype in configs/reproduce.py); train it with "
                          f"experiments/train.py or leave out the train step")
        continue
      runs.append(("train", os.path.join(root, f"train_{net}"), _script("train.py") + [
          f"--config=configs/train.py:{net}"] + [
          f"--config.train.{k}={v}" for k, v in sorted(config.train_recipe[net].items())] + [
          f"--config.store_dtype={config.store_dtype[net]}",
          # the accuracy every epoch and in the checkpoint: on the exact test images
          f"--config.test_data={EXACT}",
          f"--config.out_dir={os.path.relpath(models.checkpoint_dir(), ROOT)}"]))
  attack = lambda named, net, images: _script("one_pixel.py") + [
      f"--config=configs/one_pixel.py:{named}", f"--config.model={net}",
      f"--config.data={EXACT}", f"--config.num_images={images}", f"--config.pixels={pixels}",
      f"--config.seed={config.seed}", "--config.figures=False"] + extra
  for net in nets:
    # First (minutes, where the attacks take hours), the exhaustive one-pixel bound on the
    # images the paper's run attacks (same data, count and seed: the same draw): how many
    # does some single pixel set to a corner of the colour cube fool at all? It tells a weak
    # search from a robust net, at 8,192 queries per image.
    runs.append(("paper", os.path.join(root, f"bound_{net}"), [
        a for a in attack("paper", net, config.paper_images)
        if not a.startswith("--config.pixels=")] + ["--config.pixels=()",
                                                     "--config.exhaustive=True"]))
    runs.append(("paper", os.path.join(root, f"paper_{net}"),
                 attack("paper", net, config.paper_images)))
  # Every untargeted run before any targeted one: the untargeted cells are the cheaper (first
  # success or the paper's stop comes sooner) and the ones read first; the targeted runs are
  # ~10 h per paper net and ~25 h for ResNet-32 on this CPU.
  reimplementation = lambda mode, net: (
      "reimplementation", os.path.join(root, f"reimplementation_{mode}_{net}"),
      attack("best1bin", net, config.reimplementation_images) + [
          "--config.attack.generations=75", "--config.attack.stop=first_success",
          f"--config.attack.targeted={mode == 'targeted'}"])
  others = [n for n in str(config.reimplementation_nets).split(",") if n]
  runs += [reimplementation("untargeted", net) for net in others]
  runs += [("paper", os.path.join(root, f"paper_targeted_{net}"),
            attack("paper_targeted", net, config.paper_targeted_images)) for net in nets]
  runs += [reimplementation("targeted", net) for net in others]
  return steps, runs


def _check_recipe(config, net: str) -> None:
  """Refuses a shipped checkpoint of ``net`` trained or stored otherwise than ``train_recipe``
  and ``store_dtype`` say (the programme would neither retrain it nor show the recipe it
  claims): its metadata's ``recipe`` and ``stored_dtype`` against each setting named here."""
  stem = os.path.join(models.checkpoint_dir(), net)
  meta_path = stem + ".json"
  if net not in config.train_recipe or not os.path.exists(meta_path):
    return
  meta = workdir_lib.read_json(meta_path)
  recorded = dict(meta.get("recipe") or {})
  wanted = {f"train.{k}": v for k, v in config.train_recipe[net].items()}
  found = {f"train.{k}": recorded.get(k) for k in config.train_recipe[net]}
  if net in config.store_dtype:
    wanted["store_dtype"], found["store_dtype"] = config.store_dtype[net], meta.get(
        "stored_dtype")
  differ = [k for k in wanted if found[k] != wanted[k]]
  if differ:
    raise UserError(
        f"{stem}.msgpack was made with "
        + ", ".join(f"{k}={found[k]}" for k in differ) + " and configs/reproduce.py asks "
        + ", ".join(f"{k}={wanted[k]}" for k in differ) + f"; set the recipe to match, or "
        f"move {stem}.* away to retrain it")


def _dying_with_parent():
  """A ``preexec_fn`` for a step's child: on Linux, the child gets SIGKILL when the
  programme dies, however it dies. Otherwise a programme killed by ``kill -9`` (or the end of
  a session) leaves its step running for hours, holding the step's folder: the rerun that
  resumes would be refused as a second writer. None elsewhere (stop the child too). The libc
  function is looked up here, in the parent: between fork and exec only the call runs."""
  try:
    import ctypes
    prctl = ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return None
  return lambda: prctl(1, int(signal.SIGKILL))     # 1: PR_SET_PDEATHSIG


def _finished(folder: str) -> bool:
  """The run in ``folder`` finished (its results.json has nothing ``pending``) and recorded
  what made it. A finished run started again by hand and stopped part way has pending work
  beside its old record: it is not done."""
  path = os.path.join(folder, "results.json")
  return (os.path.exists(path) and os.path.exists(os.path.join(folder, MADE_BY))
          and not workdir_lib.read_json(path).get("pending"))


def run(config, workdir: workdir_lib.Workdir, log=cli.log) -> dict:
  # Absolute: each step's script runs from the repository root, the programme from anywhere.
  steps, runs = plan(config, os.path.abspath(workdir.path))
  for step, folder, command in runs:
    if step not in steps:
      continue
    # Done: finished, by this command. A finished run with no record of its command (the
    # programme stopped between the two) goes back through its script, which checks the
    # folder's settings and, finding the work complete, only writes its results again.
    if _finished(folder):
      _check_made_by(folder, command)
      log(f"[{step}] {os.path.basename(folder)}: done")
      continue
    log(f"[{step}] {os.path.basename(folder)}: {' '.join(command[1:])} --workdir {folder}")
    done = subprocess.run(command + ["--workdir", folder], cwd=ROOT,
                          preexec_fn=_dying_with_parent())
    if done.returncode:
      raise UserError(f"[{step}] {os.path.basename(folder)} stopped (exit {done.returncode}); "
                      f"rerun the same command to resume")
    workdir_lib.write_json(os.path.join(folder, MADE_BY), _made_by(command))
  rows = _rows(runs)
  results = dict(config=config.to_dict(), versions=workdir_lib.versions(), rows=rows,
                 bounds=_bounds(runs, rows))
  if "tables" in steps:
    results["nets"] = nets(config)
    workdir.write_text("summary.md", summary(rows, results["nets"], results["bounds"]))
    workdir.write_json("results.json", results)
  return results


def _made_by(command) -> dict:
  """What a run's results depend on in the command that runs it: the script and its flags
  (less the interpreter's path and the ``--config.runtime.*`` flags, which change no result,
  but with ``--config.runtime.execution.*``: an execution can change float bits, and the
  script refuses to resume under another) and the SHA-256 of the weights it attacks (a
  retrained net keeps its name)."""
  args = [os.path.basename(command[1])] + [
      a for a in command[2:] if not a.startswith("--config.runtime.")
      or a.startswith("--config.runtime.execution.")]
  made = dict(command=args)
  model = [a.split("=", 1)[1] for a in args if a.startswith("--config.model=")]
  if model:
    meta = os.path.join(models.checkpoint_dir(), f"{model[-1]}.json")
    made["weights_sha256"] = (workdir_lib.read_json(meta).get("sha256")
                              if os.path.exists(meta) else None)
  return made


def _made_by_differences(folder: str, command) -> str:
  """"" if ``command`` made the finished run in ``folder``, else what differs."""
  stored, now = workdir_lib.read_json(os.path.join(folder, MADE_BY)), _made_by(command)
  if stored == now:
    return ""
  if stored.get("weights_sha256") != now.get("weights_sha256"):
    return (f"the weights: sha256 {stored.get('weights_sha256')} -> "
            f"{now.get('weights_sha256')}")
  old, new = stored.get("command", []), now["command"]
  if sorted(old) == sorted(new):
    return "the same flags in another order"
  return (f"{' '.join(a for a in old if a not in new) or '(none)'} -> "
          f"{' '.join(a for a in new if a not in old) or '(none)'}")


def _check_made_by(folder: str, command) -> None:
  """Refuses a finished run that ``command`` did not make (its script checks unfinished ones:
  they resume or refuse)."""
  diff = _made_by_differences(folder, command)
  if diff:
    raise UserError(f"{folder} holds a finished run made with other settings ({diff}); "
                    f"restore them, or move the folder away to redo the run")


def migrate_config(stored: dict) -> dict:
  """A programme folder's config.json from before ``train_recipe``: its ``train_epochs`` and
  ``train_dropout`` (now ``train_recipe``'s) are dropped; nothing in the folder depends on
  them (each training run claims its own)."""
  return {k: v for k, v in stored.items() if k not in ("train_epochs", "train_dropout")}


def nets(config) -> list:
  """Each paper net that has a checkpoint, measured now on the 1,017 exact test images (the
  issue's bar: >= 85%), beside what its checkpoint records."""
  exact = data.load(os.path.join(ROOT, EXACT))
  out = []
  for net in [n for n in str(config.paper_nets).split(",") if n]:
    if not os.path.exists(os.path.join(models.checkpoint_dir(), f"{net}.msgpack")):
      continue        # not trained yet; a damaged checkpoint stops the run with its error
    clf = models.load(net)
    meta = clf.metadata
    out.append(dict(model=net, accuracy_exact=accuracy(clf.predict, exact.images, exact.labels),
                    images=len(exact), recorded_accuracy=meta.get("accuracy"),
                    recorded_on=meta.get("accuracy_on"), stored_dtype=meta.get("stored_dtype"),
                    epochs=(meta.get("recipe") or {}).get("epochs"),
                    trained_on=meta.get("trained_on")))
  return out


def _made_by_this(folder: str, command) -> bool:
  """Whether ``folder``'s run records ``command`` as what made it (else: not yet this
  programme's, or made by other settings)."""
  return _finished(folder) and not _made_by_differences(folder, command)


def _started_by_this(folder: str, command, res: dict) -> bool:
  """Whether an unfinished run's partial ``res`` (results.json, written as each pixel count
  finishes; its ``pending`` names the rest) was made by ``command`` on today's weights: the
  flags its start recorded, as ``_made_by`` reads them, and the weights it attacked."""
  if not res.get("pending"):
    return False      # finished: _made_by_this decides
  argv = list(res["versions"]["command"])
  if "--workdir" in argv:
    i = argv.index("--workdir")
    argv = argv[:i] + argv[i + 2:]
  now = _made_by(command)
  return (_made_by([sys.executable] + argv)["command"] == now["command"]
          and res["inputs"].get("weights_sha256") == now.get("weights_sha256"))


def _rows(runs):
  """One row per attack run and finished pixel count; a run still going (``finished``
  False) shows the pixel counts it has finished."""
  rows = []
  published = published_cells()
  for step, folder, command in runs:
    path = os.path.join(folder, "results.json")
    if step == "train" or not os.path.exists(path):
      continue
    res = workdir_lib.read_json(path)
    finished = _made_by_this(folder, command)
    if not finished and not _started_by_this(folder, command, res):
      continue        # not (yet) this programme's: made by other settings
    model = res["config"]["model"]
    mode = "targeted" if res["config"]["attack"]["targeted"] else "untargeted"
    for key, m in res["metrics"].items():
      k = int(key.rstrip("px"))
      row = dict(step=step, model=model, mode=mode, pixels=k, attacks=m["attacks"],
                 success=m["success_rate"], ci95=m["success_rate_ci95"],
                 confidence=m["confidence"], folder=os.path.basename(folder),
                 finished=finished)
      rec = attack_records.load(os.path.join(folder, f"records_{mode}_{k}px.npz"))
      # The same attacks as the metrics: those on images the net already misclassified are
      # left out (for them "any misclassification" would hold without an attack).
      keep = ~rec.already_misclassified
      ids, success = rec.image_id[keep], rec.success[keep]
      row["images"] = int(len(np.unique(ids)))
      # Intervals that resample images: an image's 9 targeted attacks are not independent
      # trials, so a Wilson interval over attacks is too narrow; the table quotes this one
      # for targeted rows (one attack per image, untargeted: Wilson, as results.json).
      row["success_ci95_images"] = list(metrics.image_interval(success, ids))
      if mode == "targeted":
        row["ci95"] = row["success_ci95_images"]
        # The reimplementation counts a targeted attack as a success when the prediction
        # leaves the true class (its attack.py), target reached or not.
        moved = rec.adversarial_class[keep] != rec.true_class[keep]
        row["any_misclassification"] = float(np.mean(moved)) if len(moved) else 0.0
        row["any_misclassification_ci95_images"] = list(metrics.image_interval(moved, ids))
      if step == "paper":
        row["published"] = PAPER.get(k) if mode == "untargeted" else None
      else:
        row["published"] = REIMPLEMENTATION.get(model, {}).get(mode, {}).get(k)
        theirs = published.get((model, mode, k))
        if theirs:
          row["published_record"] = theirs
      # The paper's other two metrics: class pairs (true -> adversarial) and, targeted, how
      # many of the 9 targets each image reaches.
      pairs = np.asarray(m["class_pairs"])
      top = np.argsort(-pairs, axis=None, kind="stable")[:3]
      row["top_class_pairs"] = [[int(t), int(a), int(pairs[t, a])] for t, a in
                                zip(*np.unravel_index(top, pairs.shape)) if pairs[t, a]]
      hist = m.get("target_classes_per_image")
      if hist is not None:
        row["targets_per_image"] = float(np.dot(np.arange(len(hist)), hist))
        row["images_fooled_to_any_target"] = m["images_fooled_to_any_target"]
      rows.append(row)
  # Grouped by step (the paper's, then the reimplementation's), in run order within a step.
  return sorted(rows, key=lambda r: r["step"] != "paper")


def _bounds(runs, rows):
  """One row per finished exhaustive-bound run: the share of its images that some single
  pixel at a corner of the colour cube fools, beside the paper's DE at 1 pixel on the same
  images (its row, when finished)."""
  out = []
  for step, folder, command in runs:
    path = os.path.join(folder, "results.json")
    if not os.path.basename(folder).startswith("bound_") or not os.path.exists(path):
      continue
    if not _made_by_this(folder, command):
      continue
    res = workdir_lib.read_json(path)
    ex = np.load(os.path.join(folder, "exhaustive_one_pixel.npz"))
    model, fooled = res["config"]["model"], ex["fooled"].astype(bool)
    de = [r for r in rows if r["step"] == "paper" and r["model"] == model
          and r["mode"] == "untargeted" and r["pixels"] == 1]
    row = dict(model=model, images=int(len(fooled)), fooled=float(fooled.mean()),
               ci95=list(metrics.wilson_interval(int(fooled.sum()), len(fooled))),
               colours=res["exhaustive_one_pixel"]["colours"],
               queries_per_image=res["exhaustive_one_pixel"]["queries_per_image"],
               fooling_changes_per_image=float(np.mean(ex["num_fooling_changes"])),
               de_1px=de[0]["success"] if de else None, folder=os.path.basename(folder))
    out.append(row)
  return out


def published_cells() -> dict:
  """{(net, mode, pixels): the reimplementation's cell from its own records}: attacks,
  images, success as it counted it (any misclassification) and, targeted, the target
  reached, each with an interval resampling its images."""
  if not os.path.exists(PUBLISHED_RECORDS):
    return {}
  stored = workdir_lib.read_json(PUBLISHED_RECORDS)
  out = {}
  for cell in stored["cells"]:
    if not cell["rows"]:
      continue
    rows = np.asarray([r[:4] for r in cell["rows"]], np.int64)
    success = np.asarray([r[4] for r in cell["rows"]], bool)
    c = dict(attacks=len(rows), images=int(len(np.unique(rows[:, 0]))),
             success=float(success.mean()),
             success_ci95_images=list(metrics.image_interval(success, rows[:, 0])))
    if cell["mode"] == "targeted":
      reached = rows[:, 3] == rows[:, 2]
      c.update(target_reached=float(reached.mean()),
               target_reached_ci95_images=list(metrics.image_interval(reached, rows[:, 0])))
    out[(cell["model"], cell["mode"], int(cell["pixels"]))] = c
  return out


def summary(rows, trained=(), bounds=()) -> str:
  pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
  step = lambda r: r["step"] + ("" if r.get("finished", True) else " (running)")
  lines = []
  if trained:
    lines += ["| net | accuracy, exact test images 0..1016 | recorded in its checkpoint | "
              "epochs | stored |", "|" + "---|" * 5]
    lines += [f"| {n['model']} | {pct(n['accuracy_exact'])} | {pct(n['recorded_accuracy'])} "
              f"({n['recorded_on']}) | {n['epochs']} | {n['stored_dtype']} |" for n in trained]
    lines.append("")
  lines += ["| step | model | mode | px | attacks | success (95% interval) | "
           "any misclassification | confidence | published |", "|" + "---|" * 9]
  for r in rows:
    lo, hi = r["ci95"]
    ci = r.get("any_misclassification_ci95_images")
    any_mis = ("" if "any_misclassification" not in r else
               f"{pct(r['any_misclassification'])} ({pct(ci[0])}-{pct(ci[1])})")
    # The reimplementation's targeted figures count any misclassification: say so beside them.
    theirs = pct(r["published"]) + (" (any misclassification)" if r["published"] is not None
                                    and r["mode"] == "targeted" else "")
    lines.append(f"| {step(r)} | {r['model']} | {r['mode']} | {r['pixels']} | "
                 f"{r['attacks']} | {pct(r['success'])} ({pct(lo)}-{pct(hi)}) | {any_mis} | "
                 f"{pct(r['confidence'])} | {theirs} |")
  lines += ["", "| step | model | mode | px | targets reached per image (of 9) | images fooled "
            "to some target | most frequent class pairs (true -> adversarial: attacks) |",
            "|" + "---|" * 7]
  names = lambda c: CIFAR10_CLASSES[c] if c < len(CIFAR10_CLASSES) else str(c)
  for r in rows:
    pairs = ", ".join(f"{names(t)} -> {names(a)}: {n}" for t, a, n in r["top_class_pairs"])
    per_image = r.get("targets_per_image")
    lines.append(f"| {step(r)} | {r['model']} | {r['mode']} | {r['pixels']} | "
                 f"{'' if per_image is None else f'{per_image:.2f}'} | "
                 f"{pct(r.get('images_fooled_to_any_target')) if per_image is not None else ''}"
                 f" | {pairs} |")
  like = [r for r in rows if r.get("published_record")]
  if like:
    span = lambda v, ci: f"{pct(v)} ({pct(ci[0])}-{pct(ci[1])})"
    lines += ["", "The reimplementation's cells like for like, from its own records (95% "
              "intervals resampling images):", "",
              "| model | mode | px | ours: attacks (images) | ours: any misclassification | "
              "ours: target reached | theirs: attacks (images) | theirs: any misclassification "
              "(published) | theirs: target reached |", "|" + "---|" * 9]
    for r in like:
      t = r["published_record"]
      targeted = r["mode"] == "targeted"
      ours_any = (span(r["any_misclassification"], r["any_misclassification_ci95_images"])
                  if targeted else span(r["success"], r["success_ci95_images"]))
      running = "" if r.get("finished", True) else " (running)"
      lines.append(
          f"| {r['model']}{running} | {r['mode']} | {r['pixels']} | {r['attacks']} "
          f"({r['images']}) | "
          f"{ours_any} | {span(r['success'], r['success_ci95_images']) if targeted else ''} | "
          f"{t['attacks']} ({t['images']}) | {span(t['success'], t['success_ci95_images'])} | "
          f"{span(t['target_reached'], t['target_reached_ci95_images']) if targeted else ''} |")
  if bounds:
    lines += ["", "The exhaustive one-pixel bound: every position x each colour below, on the "
              "images of the paper's untargeted run (the same draw):", "",
              "| model | images | fooled by some single pixel (95% interval) | DE/rand/1, 1 px, "
              "same images | fooling changes per image (mean) | colours | queries per image |",
              "|" + "---|" * 7]
    for b in bounds:
      lo, hi = b["ci95"]
      lines.append(f"| {b['model']} | {b['images']} | {pct(b['fooled'])} ({pct(lo)}-{pct(hi)})"
                   f" | {'' if b['de_1px'] is None else pct(b['de_1px'])} | "
                   f"{b['fooling_changes_per_image']:.1f} | {b['colours']} | "
                   f"{b['queries_per_image']:,} |")
  lines.append("")
  lines.append(f"Published: the one-pixel paper's mean over All-CNN, NiN and VGG16 "
               f"(untargeted; confidence {pct(PAPER_CONFIDENCE)}); the Keras "
               f"reimplementation's README for the Hyperparticle nets (its targeted figures "
               f"count any misclassification). Intervals in the first table: Wilson over "
               f"attacks, untargeted (one attack per image); resampling images, targeted (an "
               f"image's 9 attacks are not independent trials). \"(running)\": a run still "
               f"going, its finished pixel counts.")
  return "\n".join(lines) + "\n"


def report(results: dict) -> str:
  return summary(results["rows"], results.get("nets", ()), results.get("bounds", ()))


if __name__ == "__main__":
  cli.main(run, "reproduce.py", report=report, migrate=migrate_config, extendable=EXTENDABLE)
