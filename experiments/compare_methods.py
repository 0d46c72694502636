r"""Compares finished one-pixel runs of different methods on the same images.

  python experiments/compare_methods.py --config.runs=runs/de,runs/sparse_rs,runs/cs \
      --workdir runs/compare

Reads each run's results.json and records, refuses runs that attacked other images, another
model, data set or mode, and writes results.json (one row per run and pixel count: success
within each budget, mean / median query of the first success, and the same over only the
attacks that every compared run fooled, so costs compare on the same attacks), the same as a
Markdown table (table.md, runs in the order given, as results/README.md shows them) and
success_vs_queries_<k>px.png overlaying the methods' curves.
"""
import os

import numpy as np

from pixeljax import cli, plots, workdir as workdir_lib
from pixeljax.errors import UserError
from pixeljax.metrics import one_pixel as metrics
from pixeljax.models import files
from pixeljax.sparse import records as records_lib
from pixeljax.sparse import formats
from pixeljax.sparse.problem import PixelAttackConfig


def _load(run: str):
  path = os.path.join(run, "results.json")
  if not os.path.exists(path):
    raise UserError(f"{run} has no results.json (is the run finished?)")
  res = workdir_lib.read_json(path)
  if not (isinstance(res, dict) and {"config", "image_ids", "metrics"} <= set(res)
          and "attack" in res["config"] and "pixels" in res["config"]):
    raise UserError(f"{path} has no config / image_ids / metrics of a one-pixel run: not "
                    f"written by experiments/one_pixel.py, or by an older version")
  unfinished = [p for p in res.get("pending") or [] if str(p).endswith("px")]
  if unfinished:   # (a pending exhaustive bound leaves the records compared here finished)
    raise UserError(f"{run} is not finished ({', '.join(map(str, unfinished))} still to "
                    f"run): rerun its command to finish it first")
  return {**res, "config": formats.migrate_config(res["config"])}   # any stored format


def _records(run: str, mode: str, k: int):
  path = os.path.join(run, f"records_{mode}_{k}px.npz")
  if not os.path.exists(path):
    raise UserError(f"{run} has no records of its {k}-pixel attacks ({path})")
  return records_lib.load(path)


def _budgets(config):
  budgets = [b for b in config.budgets]
  if not budgets or any(not float(b).is_integer() or b < 1 for b in budgets) or any(
      a >= b for a, b in zip(budgets, budgets[1:])):
    raise UserError(f"budgets must be increasing whole numbers of queries >= 1, got "
                    f"{tuple(config.budgets)}")
  return [int(b) for b in budgets]


def run(config, workdir: workdir_lib.Workdir, log=cli.log) -> dict:
  runs = [p.strip() for p in str(config.runs).split(",") if p.strip()]
  if len(runs) < 1:
    raise UserError("name the runs to compare: --config.runs=runs/a,runs/b")
  folders = [os.path.realpath(r) for r in runs]
  if len(set(folders)) < len(folders):
    raise UserError(f"a run is named twice in {runs}")
  budgets = _budgets(config)
  loaded = {r: _load(r) for r in runs}
  first = loaded[runs[0]]
  # An imported model's options (preprocessing, softmax, input shape, layout) are part of
  # what was attacked: read through the migration that gives older configs their defaults.
  options = lambda res: {k: v for k, v in formats.migrate_config(res["config"]).items()
                         if k in files.config_defaults()}
  fields = dict(model=lambda res: res["config"]["model"], model_options=options,
                data=lambda res: res["config"]["data"],
                split=lambda res: res["config"].get("split"),
                mode=lambda res: res["config"]["attack"]["targeted"],
                images=lambda res: res["image_ids"])
  # What a run's settings name only by reference, where both runs recorded it (older runs
  # did not): the model's weights and the attacked images' contents.
  inputs = dict(weights=lambda res: res.get("model_metadata", {}).get("sha256"),
                image_contents=lambda res: res.get("inputs", {}).get("images_sha256"))
  for r, res in loaded.items():
    differ = [name for name, get in fields.items() if get(res) != get(first)]
    if differ:
      raise UserError(f"{r} differs from {runs[0]} in {', '.join(differ)}: compare runs "
                      f"on the same model and images")
  for name, get in inputs.items():
    recorded = {r: get(res) for r, res in loaded.items() if get(res)}
    if len(set(recorded.values())) > 1:
      raise UserError(f"the runs differ in {name} ({', '.join(recorded)} recorded "
                      f"{len(set(recorded.values()))} different values): compare runs on the "
                      f"same model and images")
  ks = [k for res in loaded.values() for k in {int(k) for k in res["config"]["pixels"]}]
  if len(runs) > 1 and all(ks.count(k) < 2 for k in ks):
    raise UserError(f"the runs share no pixel count ({sorted(set(ks))}): nothing to compare")
  mode = "targeted" if first["config"]["attack"]["targeted"] else "untargeted"
  records = {(r, int(k)): _records(r, mode, int(k))
             for r, res in loaded.items() for k in res["config"]["pixels"]}
  # Per k, the attacks every run with that k fooled: the methods' query costs side by side on
  # the same attacks.
  common = {}
  for k in sorted({k for _, k in records}):
    at_k = [key for key in records if key[1] == k]
    if len(at_k) > 1:   # a k only one run has has nothing to share: its row shows none
      common.update(zip(at_k, metrics.fooled_by_all([records[key] for key in at_k])))
  # A method's description leaves out settings that do not name it (proposals per step,
  # p_init, ...): runs that share one are told apart by their folder, in the table and the
  # figure alike.
  labels = {r: PixelAttackConfig(pixels=1, **res["config"]["attack"]).describe()
            for r, res in loaded.items()}
  ambiguous = [label for label in labels.values() if list(labels.values()).count(label) > 1]
  folder = lambda r: os.path.basename(os.path.normpath(r))
  labels = {r: f"{label} [{folder(r)}]" if label in ambiguous else label
            for r, label in labels.items()}
  if len(set(labels.values())) < len(labels):
    raise UserError(f"runs {runs} cannot be told apart: name each folder differently")
  rows, curves = [], {}
  for (r, k), rec in records.items():
    label = labels[r]
    first_q = metrics.queries_of_successes(rec)
    shared_q = (metrics.queries_of_successes(rec, among=common[(r, k)]) if (r, k) in common
                else dict(fooled=None, mean=None, median=None))
    budget = PixelAttackConfig(**{**loaded[r]["config"]["attack"], "pixels": k}).budget
    rows.append(dict(run=r, method=label, pixels=k, attacks=len(rec), budget=budget,
                     success=metrics.success_rate(rec),
                     success_within={str(b): metrics.success_within(rec, b)
                                     for b in budgets},
                     mean_queries_of_success=first_q["mean"],
                     median_queries_of_success=first_q["median"],
                     fooled_by_all=shared_q["fooled"],
                     mean_queries_fooled_by_all=shared_q["mean"],
                     median_queries_fooled_by_all=shared_q["median"],
                     queries_per_attack=float(np.mean(rec.queries))))
    curves.setdefault(k, {})[label] = metrics.query_curve(rec)
  for k, c in sorted(curves.items()):
    workdir.save_figure(f"success_vs_queries_{k}px.png", plots.success_vs_queries(
        c, title=f"{first['config']['model']}, {mode}, {k} px ({len(first['image_ids'])} "
                 f"images)"))
  # What the table was made from: each run's files by hash (its results.json names the code
  # that made each of its pixel counts), and the code that compared them.
  sha = lambda run, name: workdir_lib.file_sha256(os.path.join(run, name))
  sources = {r: dict(results_json=sha(r, "results.json"),
                     records={str(k): sha(r, f"records_{mode}_{k}px.npz")
                              for (run, k) in records if run == r})
             for r in runs}
  results = dict(config=config.to_dict(), model=first["config"]["model"],
                 data=first["config"]["data"], mode=mode, image_ids=first["image_ids"],
                 rows=rows, sources=sources, versions=workdir_lib.versions())
  workdir.write_json("results.json", results)
  workdir.write_text("table.md", markdown(results))
  return results


def markdown(results: dict) -> str:
  """The comparison as results/README.md's table: runs in the order given, then k."""
  budgets = list(results["rows"][0]["success_within"]) if results["rows"] else []
  order = {r: i for i, r in enumerate(dict.fromkeys(row["run"] for row in results["rows"]))}
  fmt = lambda v: "-" if v is None else f"{v:,.0f}"
  # The method's name is its description up to the first comma; a folder suffix that tells
  # two runs of one method apart is kept.
  name = lambda label: label.split(",")[0] + (" " + label.rsplit(" ", 1)[-1]
                                              if label.endswith("]") else "")
  # budget: the most queries the run allowed an attack; success "within" a larger number is
  # its success within its own budget.
  lines = ["| method | k | budget | " + " | ".join(f"<= {int(b):,}" for b in budgets)
           + " | mean (median) queries of success | the same on the attacks all fooled |",
           "|---|---|---|" + "---|" * len(budgets) + "---|---|"]
  for r in sorted(results["rows"], key=lambda r: (order[r["run"]], r["pixels"])):
    lines.append(
        f"| {name(r['method'])} | {r['pixels']} | {fmt(r.get('budget'))} | "
        + " | ".join(f"{100 * r['success_within'][b]:.1f}%" for b in budgets)
        + f" | {fmt(r['mean_queries_of_success'])} ({fmt(r['median_queries_of_success'])})"
          + (" | - |" if r["fooled_by_all"] is None else
             f" | {fmt(r['mean_queries_fooled_by_all'])} "
             f"({fmt(r['median_queries_fooled_by_all'])}) of {r['fooled_by_all']} |"))
  return "\n".join(lines) + "\n"


def report(results: dict) -> str:
  budgets = list(results["rows"][0]["success_within"]) if results["rows"] else []
  head = f"{'method':<52} {'k':>3} " + " ".join(f"{'<=' + b:>7}" for b in budgets)
  lines = [head + f" {'mean q':>8} {'median q':>9}  "
                  f"{'fooled by all: n, mean q, median q':>34}"]
  for r in sorted(results["rows"], key=lambda r: (r["pixels"], r["method"])):
    fmt = lambda v: "n/a" if v is None else f"{v:,.0f}"
    lines.append(f"{r['method'][:52]:<52} {r['pixels']:>3} "
                 + " ".join(f"{100 * r['success_within'][b]:>6.1f}%" for b in budgets)
                 + f" {fmt(r['mean_queries_of_success']):>8} "
                   f"{fmt(r['median_queries_of_success']):>9}  "
                   f"{fmt(r.get('fooled_by_all')):>14} "
                   f"{fmt(r.get('mean_queries_fooled_by_all')):>9} "
                   f"{fmt(r.get('median_queries_fooled_by_all')):>9}")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.main(run, "compare.py", report=report)
