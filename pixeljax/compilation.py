"""Compilation: JAX's persistent cache, and what a run spent compiling.

A campaign compiles a few programs per pixel count (the runner's init, inside the loop for
DE; its segment loop at each batch shape it meets; the final check). ``enable_cache`` keeps
every compiled program in a folder, so a rerun, a resumed run or a second campaign with the
same shapes loads them instead; ``totals`` / ``since`` read JAX's own compile events
(``jax.monitoring``), so experiments can report compile seconds beside attack seconds without
timing anything themselves.
"""
import os
import threading
from typing import Dict, Optional

import jax

# Tracing, lowering and the backend compile (or its persistent-cache lookup) of one program.
_DURATIONS = ("/jax/core/compile/jaxpr_trace_duration",
              "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")
_BACKEND = _DURATIONS[-1]
_CACHE_HIT = "/jax/compilation_cache/cache_hits"

_lock = threading.Lock()
_totals = {"compile_seconds": 0.0, "programs": 0, "cache_hits": 0}
_registered = False


def _on_duration(event: str, duration: float, **_) -> None:
  if event in _DURATIONS:
    with _lock:
      _totals["compile_seconds"] += float(duration)
      _totals["programs"] += event == _BACKEND


def _on_event(event: str, **_) -> None:
  if event == _CACHE_HIT:
    with _lock:
      _totals["cache_hits"] += 1


def _register() -> None:
  global _registered
  with _lock:
    if _registered:
      return
    _registered = True
  jax.monitoring.register_event_duration_secs_listener(_on_duration)
  jax.monitoring.register_event_listener(_on_event)


def totals() -> Dict[str, float]:
  """Compile seconds, programs compiled (or loaded from the cache) and cache hits so far in
  this process; counting starts at the first call."""
  _register()
  with _lock:
    return dict(_totals)


def since(start: Dict[str, float]) -> Dict[str, float]:
  """What was compiled after ``start = totals()``."""
  now = totals()
  return {k: now[k] - start[k] for k in now}


def default_cache_dir() -> str:
  return os.environ.get("PIXELJAX_CACHE_DIR",
                        os.path.join(os.path.expanduser("~"), ".cache", "pixeljax", "xla"))


def enable_cache(path: Optional[str] = None) -> Optional[str]:
  """JAX's persistent compilation cache in ``path`` (default ``$PIXELJAX_CACHE_DIR`` or
  ``~/.cache/pixeljax/xla``; an empty value turns it off): a rerun, a resumed run or a batch
  shape seen before loads its program instead of compiling it. Every program is kept, however
  fast it compiled: on CPU a campaign's many small programs (about a second each) add up to
  most of its compile time. Results are unaffected. Returns the folder used, or None."""
  path = default_cache_dir() if path is None else path
  _register()
  if not path:
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
