"""experiments/compare_methods.py: runs on the same images side by side; others refused."""
import json
import os
import shutil

import ml_collections
import pytest

from experiments import compare_methods, one_pixel
from pixeljax import workdir as workdir_lib
from pixeljax.errors import UserError
from pixeljax.workdir import Workdir


def _run(tmp_path, name, **over):
  from configs.one_pixel import get_config
  c = get_config("paper")
  c.num_images, c.pixels, c.figures = 4, (1,), False
  c.attack.popsize, c.attack.generations = 8, 2
  c.runtime.progress = False
  c.update_from_flattened_dict(over)
  wd = Workdir.open(str(tmp_path / name), c)
  one_pixel.run(c, wd, log=lambda s: None)
  return wd.path


def _compare(tmp_path, runs):
  from configs.compare import get_config
  c = get_config()
  c.runs = ",".join(runs)
  return compare_methods.run(c, Workdir.open(str(tmp_path / "cmp"), c), log=lambda s: None)


def test_methods_side_by_side(tmp_path):
  de = _run(tmp_path, "de", **{"attack.stop": "first_success"})
  srs = _run(tmp_path, "srs", **{"attack.method": "sparse_rs", "attack.max_queries": 50})
  res = _compare(tmp_path, [de, srs])
  assert [r["pixels"] for r in res["rows"]] == [1, 1]
  methods = {r["method"].split(",")[0] for r in res["rows"]}
  assert methods == {"DE rand1", "Sparse-RS"}
  for r in res["rows"]:
    assert 0 <= r["success_within"]["100"] <= r["success_within"]["40000"] <= 1
    # The shared attacks are the same for every method, and no more than any one fooled.
    assert r["fooled_by_all"] == res["rows"][0]["fooled_by_all"]
    assert r["fooled_by_all"] <= round(r["success"] * r["attacks"])
  assert os.path.getsize(tmp_path / "cmp" / "success_vs_queries_1px.png") > 0
  assert "Sparse-RS" in compare_methods.report(res)
  # What made the table: the compared runs' files by hash, and the comparing code.
  assert set(res["sources"]) == {de, srs} and set(res["sources"][de]["records"]) == {"1"}
  assert res["sources"][srs]["results_json"] == workdir_lib.file_sha256(
      os.path.join(srs, "results.json"))
  assert "code" in res["versions"] and "command" in res["versions"]
  # table.md: the results page's table, runs in the order given, every budget and the shared cost.
  table = (tmp_path / "cmp" / "table.md").read_text().splitlines()
  assert table[0].startswith("| method | k | budget | <= 100 |") and len(table) == 4
  # Each row names its own budget: DE's population x (generations + 1), Sparse-RS's cap.
  assert table[2].startswith("| DE rand1 | 1 | 24 | ")
  assert table[3].startswith("| Sparse-RS | 1 | 50 | ")
  row = res["rows"][[r["run"] for r in res["rows"]].index(srs)]
  assert f"{100 * row['success_within']['40000']:.1f}%" in table[3]
  assert table[3].endswith(f" of {row['fooled_by_all']} |")
  # A run of the same method whose settings differ only where its description is silent
  # (proposals per step) is told apart by its folder, in the table and the figure.
  other = tmp_path / "srs_4"
  shutil.copytree(srs, other)
  results = json.loads((other / "results.json").read_text())
  results["config"]["attack"]["proposals_per_step"] = 4
  (other / "results.json").write_text(json.dumps(results))
  c = _compare(tmp_path / "again", [srs, str(other)])
  assert [r["method"].rsplit(" ", 1)[-1] for r in c["rows"]] == ["[srs]", "[srs_4]"]
  table = (tmp_path / "again" / "cmp" / "table.md").read_text()
  assert "| Sparse-RS [srs] | 1 |" in table and "| Sparse-RS [srs_4] | 1 |" in table
  # A k that only one run has gets its own row, with nothing shared to compare.
  k3 = _copy(de, tmp_path / "k3", lambda r: r["config"].update(pixels=[1, 3]))
  shutil.copy(os.path.join(k3, "records_untargeted_1px.npz"),
              os.path.join(k3, "records_untargeted_3px.npz"))
  c = _compare(tmp_path / "k", [de, k3])
  only = [r for r in c["rows"] if r["pixels"] == 3]
  assert len(only) == 1 and only[0]["fooled_by_all"] is None
  assert (tmp_path / "k" / "cmp" / "table.md").read_text().splitlines()[-1].endswith("| - |")


def _copy(src, dst, edit):
  shutil.copytree(src, dst)
  results = json.loads((dst / "results.json").read_text())
  edit(results)
  (dst / "results.json").write_text(json.dumps(results))
  return str(dst)


def test_runs_that_differ_or_cannot_compare_are_refused(tmp_path):
  a = _run(tmp_path, "a")
  b = _run(tmp_path, "b", seed=1)
  with pytest.raises(UserError, match="differs from .* in images"):
    _compare(tmp_path, [a, b])
  with pytest.raises(UserError, match="no results.json"):
    _compare(tmp_path, [a, str(tmp_path / "missing")])
  # The same names, other weights (a checkpoint retrained under the model's name) or other
  # image contents (a data file rewritten in place): refused, naming what differs.
  w = _copy(a, tmp_path / "w", lambda r: r["model_metadata"].update(sha256="0" * 64))
  with pytest.raises(UserError, match="differ in weights"):
    _compare(tmp_path, [a, w])
  i = _copy(a, tmp_path / "i", lambda r: r["inputs"].update(images_sha256="0" * 64))
  with pytest.raises(UserError, match="differ in image_contents"):
    _compare(tmp_path, [a, i])
  # Compared among all runs that recorded them, not only against the first (which may be
  # older and have none).
  old = _copy(a, tmp_path / "old", lambda r: (r.pop("inputs"), r["model_metadata"].pop("sha256")))
  w2 = _copy(a, tmp_path / "w2", lambda r: r["model_metadata"].update(sha256="1" * 64))
  with pytest.raises(UserError, match="differ in weights"):
    _compare(tmp_path, [old, a, w2])
  with pytest.raises(UserError, match="named twice"):
    _compare(tmp_path, [a, a + "/"])
  # The same weights under other preprocessing (an imported model's options) is another
  # model; a config stored before those options existed means their defaults.
  scaled = _copy(a, tmp_path / "scaled",
                 lambda r: r["config"]["model_preprocess"].update(scale=1 / 255))
  with pytest.raises(UserError, match="differs from .* in model_options"):
    _compare(tmp_path, [a, scaled])
  unset = _copy(a, tmp_path / "unset", lambda r: [r["config"].pop(k) for k in (
      "model_preprocess", "model_softmax", "model_input_shape", "model_layout")])
  _compare(tmp_path / "unset_vs_a", [unset, a])    # its own workdir
  k2 = _copy(a, tmp_path / "k2", lambda r: r["config"].update(pixels=[2]))
  with pytest.raises(UserError, match="share no pixel count"):
    _compare(tmp_path, [a, k2])
  running = _copy(a, tmp_path / "running", lambda r: r.update(pending=["3px"]))
  with pytest.raises(UserError, match="running is not finished \\(3px still to run\\)"):
    _compare(tmp_path, [a, running])
  # Only the exhaustive bound still to run: the records compared are finished.
  bound = _copy(a, tmp_path / "bound", lambda r: r.update(pending=["exhaustive_one_pixel"]))
  _compare(tmp_path / "bound_pending", [a, bound])
  other = _copy(a, tmp_path / "fooling", lambda r: r.pop("metrics"))
  with pytest.raises(UserError, match="no config / image_ids / metrics of a one-pixel run"):
    _compare(tmp_path, [a, other])
  os.remove(os.path.join(a, "records_untargeted_1px.npz"))
  with pytest.raises(UserError, match="no records of its 1-pixel attacks"):
    _compare(tmp_path, [a])


@pytest.mark.parametrize("budgets", [(), (100, 100), (300, 100), (0, 10), (2.5, 10)])
def test_bad_budgets_are_refused(tmp_path, budgets):
  from configs.compare import get_config
  c = get_config()
  c.runs, c.budgets = "runs/a", budgets
  with pytest.raises(UserError, match="budgets must be increasing whole numbers"):
    compare_methods.run(c, Workdir.open(str(tmp_path / "cmp"), c), log=lambda s: None)


@pytest.mark.parametrize("run", ["lenet500", "lenet_targeted100",
                                 "cifar10_resnet20_akamaster_100",
                                 "cifar10_resnet32_hyperparticle_100"])
def test_results_page_shows_the_shipped_comparison_tables(run):
  """The results page's comparison tables are the shipped ``compare/table.md`` files verbatim:
  a regenerated comparison cannot leave it showing other numbers."""
  root = os.path.join(os.path.dirname(__file__), "..")
  with open(os.path.join(root, "results", "sparse", run, "compare", "table.md")) as f:
    table = f.read().strip()
  with open(os.path.join(root, "results", "README.md")) as f:
    page = f.read()
  assert table.count("\n") >= 3 and table in page, f"results/README.md lacks {run}'s table.md"


@pytest.mark.parametrize("run", ["lenet500", "lenet_targeted100",
                                 "cifar10_resnet20_akamaster_100",
                                 "cifar10_resnet32_hyperparticle_100"])
def test_the_shipped_comparison_tables_are_reproduced_from_the_stored_records(
    run, tmp_path, monkeypatch):
  """Runs stored in every settings format still load and compare: the comparison of the
  stored records gives the shipped table.md again, character for character."""
  root = os.path.join(os.path.dirname(__file__), "..")
  monkeypatch.chdir(root)       # the stored config names its runs relative to the repository
  folder = os.path.join("results", "sparse", run, "compare")
  c = ml_collections.ConfigDict(workdir_lib.read_json(os.path.join(folder, "config.json")))
  compare_methods.run(c, Workdir.open(str(tmp_path / "cmp"), c), log=lambda s: None)
  with open(os.path.join(folder, "table.md")) as f:
    shipped = f.read()
  with open(tmp_path / "cmp" / "table.md") as f:
    assert f.read() == shipped
