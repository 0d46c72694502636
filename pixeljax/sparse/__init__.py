"""Few-pixel (L0) attacks: the problem (``problem``), the methods (``method``,
``differential_evolution``, ``sparse_rs``, ``corner_search``), how candidates reach the model
(``evaluator``), the batched runner (``runner``), records, the exhaustive one-pixel baseline,
resumable campaigns and their stored formats (``campaign``, ``formats``)."""
from pixeljax.sparse import (campaign, evaluator, exhaustive, formats, method, problem, records,
                             runner)
from pixeljax.sparse.campaign import select_images
from pixeljax.sparse.evaluator import Evaluator, Execution, choose_execution, evaluator_for
from pixeljax.sparse.exhaustive import colour_grid, exhaustive_one_pixel, rgb_cube_corners
from pixeljax.sparse.problem import PixelAttackConfig
from pixeljax.sparse.records import AttackRecords
from pixeljax.sparse.runner import attack, targets_for_all
