"""Side-by-side comparison of finished one-pixel runs (``experiments/compare_methods.py``).

  python experiments/compare_methods.py --config.runs=runs/de,runs/srs,runs/cs --workdir runs/cmp

The runs must have attacked the same model, data, images and mode; budgets are the query
counts at which success is tabulated.
"""
from ml_collections import ConfigDict

from pixeljax.metrics.one_pixel import BUDGETS


def get_config(arg=None) -> ConfigDict:
  del arg
  # runs: folders separated by commas (one string: a tuple flag cannot parse absolute paths).
  return ConfigDict(dict(runs="", budgets=BUDGETS))
