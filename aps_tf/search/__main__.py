r"""The search binary.

  python -m aps_tf.search --config=configs/quick.py --workdir=/tmp/quick \
      [--config.search.sharing=transitional ...]

Rerunning the same command on the same workdir resumes. Errors a user can fix
(unknown config field, unreachable budget, a workdir of another config, a
dataset not prepared, a non-finite loss) end with a one-line message and exit
code 2, without a traceback (see `aps_tf.cli`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from aps_tf import cli
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, arch.json.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Console progress bar.")


def main(argv):
  del argv
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("--config and --workdir are required")
  from aps_tf import user_model  # pylint: disable=g-import-not-at-top
  from aps_tf.search import run  # pylint: disable=g-import-not-at-top
  cfg = user_model.resolve_config(_CONFIG.value)  # model.keras_file, target_fraction
  path = config_flags.get_config_filename(flags.FLAGS["config"])
  name = os.path.splitext(os.path.basename(path))[0]
  arch = run.run(cfg, _WORKDIR.value, progress=_PROGRESS.value, config_name=name)
  print(f"arch: widths={arch['widths']} flops={arch['flops']} params={arch['params']} -> "
        f"{os.path.join(_WORKDIR.value, 'arch.json')}")


if __name__ == "__main__":
  cli.run(main)
