"""Live progress a person can read: a tqdm bar on a terminal, a log line otherwise.

Long jobs (attack campaigns, MAP-Elites, training) report after every segment of work with
``Progress.update(done, **stats)``: ``done`` counts units of work (attack-generations,
generations, steps) towards ``total``; ``stats`` are shown beside it (attacks finished,
running success, queries per second). The ETA comes from the rate measured since the first
update: the work before it includes compiling, which a rate would spread over the rest.
Without a terminal (CI, a log file) each update is one line, at most every
``min_interval`` seconds, plus the last one.
"""
import sys
import time
from typing import Optional


def _fmt_seconds(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (
      f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def _fmt_value(v) -> str:
  if isinstance(v, float):
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"
  if isinstance(v, int):
    return f"{v:,}"
  return str(v)


class Progress:
  """Progress of one job; use as a context manager or call ``close``."""

  def __init__(self, total: float, desc: str, stream=None, min_interval: float = 5.0,
               bar: Optional[bool] = None, enabled: bool = True, initial: float = 0.0):
    """``initial``: work already done before this start (a resumed run); the ETA is
    computed from the rate of the work done since."""
    self.total, self.desc = float(max(total, 1e-9)), desc
    self.stream = stream or sys.stderr
    self.min_interval = min_interval
    self.enabled = enabled
    self.start = time.time()
    self._last_line = -1e9
    self._initial = self._done = float(initial)
    self._mark = None        # (time, done) of the first update that did work: the ETA's origin
    self._bar = None
    if bar is None:
      bar = hasattr(self.stream, "isatty") and self.stream.isatty()
    if enabled and bar:
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream,
                       dynamic_ncols=True,
                       bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]"
                                  "{postfix}")

  def eta(self) -> Optional[float]:
    if self._mark is None or self._done <= self._mark[1]:
      return None
    t0, d0 = self._mark
    return (time.time() - t0) * (self.total - self._done) / (self._done - d0)

  def line(self, stats: dict) -> str:
    eta = self.eta()
    parts = [f"[{self.desc}] {100 * min(self._done / self.total, 1):3.0f}%"]
    parts += [f"{k.replace('_', ' ')} {_fmt_value(v)}" for k, v in stats.items()]
    parts.append(f"elapsed {_fmt_seconds(time.time() - self.start)}")
    if eta is not None and self._done < self.total:
      parts.append(f"ETA {_fmt_seconds(eta)}")
    return " | ".join(parts)

  def update(self, done: float, stats: Optional[dict] = None, **more) -> None:
    """Sets the work done so far to ``done`` and shows ``stats`` (name -> value)."""
    if not self.enabled:
      return
    stats = dict(stats or {}, **more)
    self._done = float(done)
    if self._mark is None and self._done > self._initial:
      self._mark = (time.time(), self._done)
    if self._bar is not None:
      self._bar.n = min(self._done, self.total)
      self._bar.set_postfix_str(" ".join(f"{k.replace('_', ' ')} {_fmt_value(v)}"
                                         for k, v in stats.items()), refresh=False)
      self._bar.refresh()
      return
    now = time.time()
    if now - self._last_line >= self.min_interval or self._done >= self.total:
      self._last_line = now
      print(self.line(stats), file=self.stream, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
