import jax
import jax.numpy as jnp
import numpy as np

from pixeljax import compilation


def test_compile_totals_count_new_programs_and_only_those():
  a, b = np.ones((3, 5), np.float32), np.ones((4, 5), np.float32)
  f = jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)
  start = compilation.totals()
  f(a).block_until_ready()
  first = compilation.since(start)
  assert first["programs"] == 1 and first["compile_seconds"] > 0
  mid = compilation.totals()
  f(a).block_until_ready()           # same shape: no new program
  assert compilation.since(mid)["programs"] == 0
  f(b).block_until_ready()           # new shape: one more
  assert compilation.since(mid)["programs"] == 1


def test_the_cache_can_be_switched_off(monkeypatch):
  monkeypatch.setenv("PIXELJAX_CACHE_DIR", "")
  assert compilation.enable_cache() is None
