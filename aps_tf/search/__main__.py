r"""The search binary.

  python -m aps_tf.search --config=configs/quick.py --workdir=/tmp/quick \
      [--config.search.sharing=transitional ...]

Rerunning the same command on the same workdir resumes. Errors a user can fix
(unknown config field, unreachable budget, a workdir of another config, a
dataset not prepared, a non-finite loss) end with a one-line message and exit
code 1 (2 for bad flags), without a traceback.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from aps_tf import cli
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, arch.json.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Console progress bar.")


def _parse(argv):
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # config_flags: a field the config lacks
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    sys.stderr.write(f"error: unknown config field in {' '.join(bad)}: {e}. "
                     "Fields are those of configs/base.py.\n")
    sys.exit(2)
  except flags.Error as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)


def main(argv):
  cli.quiet_unless_verbose()
  del argv
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("--config and --workdir are required")
  from aps_tf.data import DatasetNotPreparedError  # pylint: disable=g-import-not-at-top
  from aps_tf.search import loop  # pylint: disable=g-import-not-at-top
  from aps_tf.search import reward  # pylint: disable=g-import-not-at-top
  from aps_tf.search import run  # pylint: disable=g-import-not-at-top
  cfg = _CONFIG.value
  path = config_flags.get_config_filename(flags.FLAGS["config"])
  name = os.path.splitext(os.path.basename(path))[0]
  try:
    arch = run.run(cfg, _WORKDIR.value, progress=_PROGRESS.value, config_name=name)
  except (DatasetNotPreparedError, reward.BudgetError, run.WorkdirMismatchError,
          loop.NonFiniteLossError, loop.ConfigError) as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(1)
  print(f"arch: widths={arch['widths']} flops={arch['flops']} params={arch['params']} -> "
        f"{os.path.join(_WORKDIR.value, 'arch.json')}")


if __name__ == "__main__":
  app.run(main, flags_parser=_parse)
