"""The errors a user can fix, as opposed to bugs.

Every binary runs through `aps_tf.cli.run`, which prints a `UserError` as one
line (naming the file or field, expected vs got) and exits 2; anything else is
a bug and keeps its traceback (exit 1). Library code raises a subclass of
`UserError` for bad configs, architecture files, workdirs, budgets, data that
is not prepared and bad serving input, and nothing else.
"""


class UserError(Exception):
  """Input a user can correct: the message says what and where."""


class ConfigError(UserError, ValueError):
  """A config that cannot run (the message names the field)."""


class WorkdirError(UserError):
  """A workdir that holds another run, or cannot be written."""
