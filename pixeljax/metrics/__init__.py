"""The papers' numbers from records: ``one_pixel`` (Su et al.) and ``fooling`` (Nguyen et al.)."""
from pixeljax.metrics import fooling, one_pixel
