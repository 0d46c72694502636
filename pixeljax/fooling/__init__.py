"""Fooling images (Nguyen, Yosinski & Clune): encodings, gradient ascent and the driver.

  cppn.py             CPPN genomes and their jit-compiled renderer (the indirect encoding)
  direct.py           the direct (pixel) encoding: polynomial mutation, SBX crossover
  gradient_ascent.py  optax gradient ascent from noise with first-step records
  driver.py           ``make_encoding``, the resumable MAP-Elites driver ``evolve``, ``ascend``

The generic MAP-Elites engine is ``pixeljax.evolution.map_elites``; the paper's numbers are
in ``pixeljax.metrics.fooling``; experiments (files, figures) in ``experiments/fooling.py``.
"""
from pixeljax.fooling import cppn, direct, driver, gradient_ascent
from pixeljax.fooling.cppn import CPPN, Genome
from pixeljax.fooling.direct import DirectEncoding
from pixeljax.fooling.driver import (ENCODINGS, EvolutionConfig, ascend, encoding_defaults,
                                     evolve, make_encoding)
from pixeljax.fooling.gradient_ascent import GradientAscentConfig
