"""Few-pixel (L0) attacks: the problem (``problem``), the batched runner (``runner``), records,
the exhaustive one-pixel baseline and resumable campaigns."""
from pixeljax.sparse import campaign, exhaustive, problem, records, runner
from pixeljax.sparse.exhaustive import colour_grid, exhaustive_one_pixel, rgb_cube_corners
from pixeljax.sparse.problem import PixelAttackConfig
from pixeljax.sparse.records import AttackRecords
from pixeljax.sparse.runner import attack, targets_for_all
