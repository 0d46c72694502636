r"""Compares finished one-pixel runs of different methods on the same images.

  python experiments/compare_methods.py --config.runs=runs/de,runs/sparse_rs,runs/cs \
      --workdir runs/compare

Reads each run's results.json and records, refuses runs that attacked other images, another
model, data set or mode, and writes results.json (one row per run and pixel count: success
within each budget, mean / median query of the first success, and the same over only the
attacks that every compared run fooled, so costs compare on the same attacks), the same as a
Markdown table (table.md, runs in the order given, as README shows them) and
success_vs_queries_<k>px.png overlaying the methods' curves.
"""
import json
import os

import numpy as np

from pixeljax import cli, plots, workdir as workdir_lib
from pixeljax.errors import UserError
from pixeljax.metrics import one_pixel as metrics
from pixeljax.sparse import records as records_lib
from pixeljax.sparse.problem import PixelAttackConfig


def _load(run: str):
  path = os.path.join(run, "results.json")
  if not os.path.exists(path):
    raise UserError(f"{run} has no results.json (is the run finished?)")
  with open(path) as f:
    return json.load(f)


def run(config, workdir: workdir_lib.Workdir, log=cli.log) -> dict:
  # --config.runs=a,b,c arrives as one string; a tuple override as several.
  runs = [p.strip() for r in config.runs for p in str(r).split(",") if p.strip()]
  if len(runs) < 1:
    raise UserError("name the runs to compare: --config.runs=runs/a,runs/b")
  loaded = {r: _load(r) for r in runs}
  first = loaded[runs[0]]
  same = lambda res: (res["config"]["model"], res["config"]["data"],
                      res["config"].get("split"), res["config"]["attack"]["targeted"],
                      res["image_ids"])
  for r, res in loaded.items():
    if same(res) != same(first):
      raise UserError(f"{r} attacked other images, model, data or mode than {runs[0]}")
  mode = "targeted" if first["config"]["attack"]["targeted"] else "untargeted"
  records = {(r, int(k)): records_lib.load(os.path.join(r, f"records_{mode}_{k}px.npz"))
             for r, res in loaded.items() for k in res["config"]["pixels"]}
  # Per k, the attacks every run with that k fooled: the methods' query costs side by side on
  # the same attacks.
  common = {}
  for k in sorted({k for _, k in records}):
    at_k = [key for key in records if key[1] == k]
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
    shared_q = metrics.queries_of_successes(rec, among=common[(r, k)])
    rows.append(dict(run=r, method=label, pixels=k, attacks=len(rec),
                     success=metrics.success_rate(rec),
                     success_within={str(b): metrics.success_within(rec, int(b))
                                     for b in config.budgets},
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
  results = dict(config=config.to_dict(), model=first["config"]["model"],
                 data=first["config"]["data"], mode=mode, image_ids=first["image_ids"],
                 rows=rows)
  workdir.write_json("results.json", results)
  workdir.write_text("table.md", markdown(results))
  return results


def markdown(results: dict) -> str:
  """The comparison as README's table: runs in the order given, then k."""
  budgets = list(results["rows"][0]["success_within"]) if results["rows"] else []
  order = {r: i for i, r in enumerate(dict.fromkeys(row["run"] for row in results["rows"]))}
  fmt = lambda v: "-" if v is None else f"{v:,.0f}"
  # The method's name is its description up to the first comma; a folder suffix that tells
  # two runs of one method apart is kept.
  name = lambda label: label.split(",")[0] + (" " + label.rsplit(" ", 1)[-1]
                                              if label.endswith("]") else "")
  lines = ["| method | k | " + " | ".join(f"<= {int(b):,}" for b in budgets)
           + " | mean (median) queries of success | the same on the attacks all fooled |",
           "|---|---|" + "---|" * len(budgets) + "---|---|"]
  for r in sorted(results["rows"], key=lambda r: (order[r["run"]], r["pixels"])):
    lines.append(
        f"| {name(r['method'])} | {r['pixels']} | "
        + " | ".join(f"{100 * r['success_within'][b]:.1f}%" for b in budgets)
        + f" | {fmt(r['mean_queries_of_success'])} ({fmt(r['median_queries_of_success'])})"
          f" | {fmt(r['mean_queries_fooled_by_all'])} "
          f"({fmt(r['median_queries_fooled_by_all'])}) of {r['fooled_by_all']} |")
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
                   f"{r.get('fooled_by_all', 0):>14} "
                   f"{fmt(r.get('mean_queries_fooled_by_all')):>9} "
                   f"{fmt(r.get('median_queries_fooled_by_all')):>9}")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.main(run, "compare.py", report=report)
