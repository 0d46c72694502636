r"""Do net A's fooling images fool net B?

  python experiments/transfer.py --config=configs/transfer.py:mnist_direct \
      --workdir runs/transfer_direct
  python experiments/transfer.py --config.source=runs/fooling_mnist_cppn \
      --config.model_b=mnist_lenet --workdir runs/transfer_cppn

Settings: ``configs/transfer.py``. ``source`` is a fooling run's workdir (its archive.npz and
results.json). Writes transfer.png and results.json to --workdir.
"""
import hashlib
import io
import json
import os

import numpy as np

from pixeljax import cli, door, models, plots
from pixeljax.errors import UserError
from pixeljax.metrics import fooling as metrics
from pixeljax.workdir import read_json, versions


def run(config, workdir, log=cli.log) -> dict:
  """Scores the source run's elites (row i made for class i) on ``config.model_b``."""
  path = config.source if config.source.endswith(".npz") else os.path.join(config.source,
                                                                           "archive.npz")
  if not os.path.isfile(path):
    raise UserError(f"no fooling archive at {path}; run experiments/fooling.py with "
                    f"--workdir {os.path.dirname(path) or '.'} first")
  # Read once: the bytes scored are the bytes hashed, whatever the source folder does next.
  with open(path, "rb") as f:
    raw = f.read()
  archive_sha256 = hashlib.sha256(raw).hexdigest()
  try:
    with np.load(io.BytesIO(raw)) as d:
      archive = {k: d[k] for k in d.files}
  except Exception as e:  # zipfile errors of a truncated or foreign file
    raise UserError(f"{path} is corrupt or not an .npz file ({e})") from None
  missing = [k for k in ("images", "probs") if k not in archive]
  if missing:
    raise UserError(f"{path} is not a fooling archive (it lacks {', '.join(missing)}); pass "
                    f"the archive.npz of an experiments/fooling.py run")
  results_path = os.path.join(os.path.dirname(path), "results.json")
  source_results = read_json(results_path) if os.path.exists(results_path) else {}
  recorded = source_results.get("archive_sha256")
  if recorded is not None and recorded != archive_sha256:
    raise UserError(f"{path} is not the archive its results.json describes (another run's, "
                    f"or a run stopped between the two writes); rerun experiments/fooling.py "
                    f"in {os.path.dirname(path) or '.'} to finish it")
  source = source_results.get("config", source_results)   # older ones: settings at the top
  model_a, encoding = source.get("model", "net A"), source.get("encoding", "?")
  log(f"scoring {len(archive['images'])} images of {model_a} ({encoding}) on {config.model_b}")
  net_b = models.load(config.model_b)
  if net_b.num_classes != np.shape(archive["probs"])[1]:
    raise UserError(f"{config.model_b} has {net_b.num_classes} classes, the archive's net "
                    f"{np.shape(archive['probs'])[1]} (row i is made for class i): transfer "
                    f"between nets of the same classes")
  images = door.images_for(net_b, np.clip(archive["images"], 0, 255))   # shape: one line
  probs_b = np.asarray(net_b(images))
  res = metrics.transfer(archive["probs"], probs_b)
  res.update(model_a=model_a, encoding=encoding, model_b=config.model_b, archive=path,
             archive_sha256=archive_sha256, source_results_match=recorded is not None,
             source_config=source_results.get("config"),
             source_code_versions=source_results.get("code_versions"),
             config=config.to_dict(), versions=versions())
  workdir.save_figure("transfer.png", plots.curves(
      np.arange(len(probs_b)), {f"A: {model_a}": res["confidence_a"],
                                f"B: {config.model_b}": res["confidence_b"]},
      "class", "confidence for the class", f"transfer ({encoding})"))
  workdir.write_json("results.json", res)
  return res


def report(results: dict) -> str:
  return json.dumps({k: results[k] for k in ("model_a", "model_b", "encoding",
                                             "mean_confidence_b", "b_agrees_top1")})


if __name__ == "__main__":
  cli.main(run, "transfer.py", report=report)
