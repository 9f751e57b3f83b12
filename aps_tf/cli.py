"""The one entry point of every aps-tf binary.

`run(main)` parses absl flags and runs `main` under one contract:

* a `UserError` (bad config, architecture file, workdir, budget, data not
  prepared, bad serving input), a bad flag, or a full disk / read-only or
  unwritable directory (OSError ENOSPC, EDQUOT, EROFS, EACCES, EPERM, or
  TensorFlow's error for one, see `environment_error`) prints one line on
  stderr and exits 2;
* a bug keeps its traceback and exits 1;
* Ctrl-C exits 130; checkpoints are written atomically, so the last one stays
  usable and rerunning the same command resumes.
"""

from __future__ import annotations

import errno
import os
import shlex
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from aps_tf import config_names
from aps_tf import errors
from aps_tf import startup

EXIT_OK, EXIT_BUG, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
# OS errors a user fixes (free space, permissions, a writable mount), not bugs.
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def quiet_unless_verbose() -> None:
  """Shows warnings and errors only, unless --verbosity was given.

  TensorFlow and its checkpointing log INFO lines through absl (checkpoint
  sharding, SavedModel assets) that would drown the progress bar.
  """
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def _prog() -> str:
  return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "aps-tf"


def user_error_exit(message: str) -> None:
  """Prints one line and exits with the user-error code."""
  sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
  sys.stderr.flush()
  sys.exit(EXIT_USER_ERROR)


# The default config name of each `--config` flag `define_config` made, by
# flag object: a flag another binary in the same process defined has none.
_CONFIG_DEFAULTS: dict[flags.Flag, str] = {}


def define_config(default: str, help_text: str) -> flags.FlagHolder:
  """`--config`, a config file or shipped config name, `default` when not given.

  config_flags applies `--config.FIELD=...` overrides to a default config when
  the flag is defined, before `run` can turn a bad override into a user error;
  here the flag has no default and `parse_flags` adds `--config=DEFAULT`.

  Args:
    default: a shipped config name (aps_tf.config_names).
    help_text: the flag's help.

  Returns:
    The flag holder (its value: the ConfigDict).
  """
  holder = config_flags.DEFINE_config_file("config", None, f"{help_text} (default: {default})")
  _CONFIG_DEFAULTS[flags.FLAGS["config"]] = default
  return holder


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl flag parsing with bad flags and bad config overrides as user errors.

  `--config=NAME` of a shipped config becomes its path (aps_tf.config_names);
  a binary's `define_config` default is used when `--config` is not given.
  """
  default = _CONFIG_DEFAULTS.get(flags.FLAGS["config"]) if "config" in flags.FLAGS else None
  if default and not any(a == "--config" or a.startswith("--config=") for a in argv[1:]):
    argv = [argv[0], f"--config={default}", *argv[1:]]
  try:
    argv = config_names.resolve_argv(argv)
  except config_names.UnknownConfigError as e:
    user_error_exit(e)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    if "Traceback (most recent call last)" in message:  # config_flags: the config file raised
      last = [l for l in message.splitlines() if l.strip()][-1]
      message = f"{message.split('Traceback', 1)[0].rstrip()} {last.strip()}"
    user_error_exit(message)
  except (AttributeError, KeyError) as e:  # config_flags: a field the config lacks
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    user_error_exit(f"unknown config field in {' '.join(bad)}: {e}")
  except (TypeError, ValueError) as e:  # config_flags: a value of the wrong type
    bad = [a for a in argv[1:] if a.startswith("--config")]
    user_error_exit(f"bad config value in {' '.join(bad)}: {e}")
  return []  # unreachable


def rerun_command(module: str, workdir: str, argv: Sequence[str] | None = None,
                  drop: Sequence[str] = ()) -> str:
  """The command a result record names, so that a reader can rerun it.

  `python -m MODULE --workdir=WORKDIR` and the flags of this command line as
  given (config overrides included), less the workdir and the flags in `drop`
  (per-machine output paths and notes, which do not change the results);
  quoted for a POSIX shell (a config override such as `--config.x=(2,)`).

  Args:
    module: the binary's module, e.g. "aps_tf.experiments.pareto".
    workdir: the workdir shown in the command (a placeholder or a default).
    argv: the command line; defaults to `sys.argv`.
    drop: flag names (without dashes) left out of the command.

  Returns:
    One line of shell.
  """
  argv = sys.argv if argv is None else argv
  names = ("workdir",) + tuple(drop)

  kept, args = [], list(argv[1:])
  while args:
    arg = args.pop(0)
    name = arg.lstrip("-").split("=", 1)[0]
    if name in names or (name.startswith("no") and name[2:] in names):
      if "=" not in arg and args and not args[0].startswith("-"):
        args.pop(0)  # `--flag value`
      continue
    kept.append(arg)
  return " ".join([f"python -m {module} --workdir={shlex.quote(workdir)}"]
                  + [shlex.quote(a) for a in kept])


def environment_error(e: BaseException) -> str | None:
  """The message of a TensorFlow file error a user fixes (checkpoint or
  summary writes on a full disk, a read-only or unwritable directory, a
  bucket without write permission), else None. TensorFlow reports a local
  file error as "PATH; STRERROR"."""
  tf = sys.modules.get("tensorflow")
  if tf is None or not isinstance(e, tf.errors.OpError):
    return None
  tail = e.message.rsplit("; ", 1)[-1].strip()
  if tail in {os.strerror(n) for n in _ENVIRONMENT_ERRNOS} or \
      isinstance(e, tf.errors.PermissionDeniedError):
    return e.message
  return None


def run(main: Callable[[list[str]], int | None]) -> None:
  """Runs `main` under absl with the user-error contract (never returns).

  TensorFlow's start-up is made quiet on machines without a GPU
  (`aps_tf.startup`).
  """
  startup.install()

  def wrapped(argv):
    quiet_unless_verbose()
    try:
      rc = main(argv)
    except errors.UserError as e:
      user_error_exit(e)
    except app.UsageError as e:
      user_error_exit(e)
    except OSError as e:
      if e.errno not in _ENVIRONMENT_ERRNOS:
        raise
      user_error_exit(f"{e.filename or ''}: {e.strerror}" if e.filename else e)
    except Exception as e:  # pylint: disable=broad-except
      message = environment_error(e)
      if message is None:
        raise
      user_error_exit(message)
    except KeyboardInterrupt:
      sys.stderr.write("interrupted; the last checkpoint is kept, rerun the same "
                       "command to resume\n")
      sys.exit(EXIT_INTERRUPTED)
    sys.exit(rc or EXIT_OK)

  app.run(wrapped, flags_parser=parse_flags)
