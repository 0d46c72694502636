"""The one error type for a user's mistake, so scripts can tell it from a bug.

Bad input (shape, dtype, range, unknown model or data set, missing file, corrupt checkpoint,
settings that do not match a run being resumed) raises ``UserError`` with a one-line message
that names the problem. ``pixeljax.cli.run`` prints that line and exits non-zero; any other
exception is a programming error and keeps its traceback.
"""


class UserError(ValueError):
  """A mistake in what the user asked for, explained in one line."""
