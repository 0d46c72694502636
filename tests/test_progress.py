import io

from pixeljax.progress import Progress


def test_log_lines_without_a_terminal():
  out = io.StringIO()
  p = Progress(100, "1 px", stream=out, min_interval=0.0)
  p.update(25, {"attacks done": "5/20", "evals/s": 1234.5})
  p.update(100, {"attacks done": "20/20"})
  p.close()
  lines = out.getvalue().splitlines()
  assert len(lines) == 2
  assert lines[0].startswith("[1 px]  25% | attacks done 5/20 | evals/s 1,234.5")
  assert "ETA" in lines[0] and "ETA" not in lines[1] and "100%" in lines[1]


def test_lines_are_rate_limited_but_the_last_is_shown():
  out = io.StringIO()
  p = Progress(10, "x", stream=out, min_interval=3600)
  for i in range(1, 11):
    p.update(i)
  assert len(out.getvalue().splitlines()) == 2      # the first and the final update


def test_resumed_work_does_not_count_towards_the_rate():
  p = Progress(100, "x", stream=io.StringIO(), initial=90)
  assert p.eta() is None
  p.update(95)
  assert p.eta() is not None
