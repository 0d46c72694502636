"""Generic, image-free evolutionary engines: pure ``init`` / ``step`` / ``run`` on pytree
states, the fitness or scoring function passed in."""
from pixeljax.evolution import de, map_elites
from pixeljax.evolution.de import DEConfig, DEState
from pixeljax.evolution.map_elites import Archive
