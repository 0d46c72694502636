"""The one error type for a user's mistake, so scripts can tell it from a bug.

Bad input (shape, dtype, range, unknown model or data set, missing file, corrupt checkpoint,
settings that do not match a run being resumed) raises ``UserError`` with a one-line message
that names the problem. ``pixeljax.cli.run`` prints that line and exits non-zero; any other
exception is a programming error and keeps its traceback.
"""


class UserError(ValueError):
  """A mistake in what the user asked for, explained in one line."""


# What another library says of a failure, quoted inside a UserError line: its first
# characters only (a framework's message can run to pages).
_MESSAGE_CHARS = 400


def one_line(e: BaseException) -> str:
  """``e`` as ``Type: message`` on one line, for a ``UserError`` that quotes it."""
  text = " ".join(str(e).split()) or type(e).__name__
  if len(text) > _MESSAGE_CHARS:
    text = text[:_MESSAGE_CHARS] + " ..."
  return f"{type(e).__name__}: {text}"
