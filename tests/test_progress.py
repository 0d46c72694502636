import io

from pixeljax.progress import Progress


def test_log_lines_without_a_terminal():
  out = io.StringIO()
  p = Progress(100, "1 px", stream=out, min_interval=0.0)
  p.update(25, {"attacks done": "5/20", "queries/s": 1234.5})
  p.update(50, {"attacks done": "10/20"})
  p.update(100, {"attacks done": "20/20"})
  p.close()
  lines = out.getvalue().splitlines()
  assert len(lines) == 3
  assert lines[0].startswith("[1 px]  25% | attacks done 5/20 | queries/s 1,234.5")
  # No ETA from the first update (its time includes compiling); then one, not at the end.
  assert "ETA" not in lines[0] and "ETA" in lines[1] and "ETA" not in lines[2]
  assert "100%" in lines[2]


def test_lines_are_rate_limited_but_the_last_is_shown():
  out = io.StringIO()
  p = Progress(10, "x", stream=out, min_interval=3600)
  for i in range(1, 11):
    p.update(i)
  assert len(out.getvalue().splitlines()) == 2      # the first and the final update


def test_the_eta_counts_neither_resumed_work_nor_the_first_update():
  """The first update's time includes compiling (2% done, ETA 7m48s, done at 22 s): the
  rate is measured from it on; work a resumed run loaded does not count either."""
  p = Progress(100, "x", stream=io.StringIO(), initial=90)
  assert p.eta() is None
  p.update(92)
  assert p.eta() is None
  p._mark = (p._mark[0] - 10.0, p._mark[1])      # 2 units in 10 s since the first update
  p.update(94)
  assert 20 < p.eta() < 40                         # 6 units left at ~0.2 units/s
