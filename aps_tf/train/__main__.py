"""Retrain a searched architecture (docs/method.md#picking-and-retraining).

  python -m aps_tf.train --config=configs/quick.py --arch=/tmp/quick/arch.json \
      --workdir=/tmp/quick_train [--config.train.epochs=2]

Rerunning the same command resumes from WORKDIR/ckpt. Writes
WORKDIR/metrics.json, model.keras, arch.json, config.json, ckpt/, tb/, metrics.jsonl.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from aps_tf import cli
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py).",
                                          lock_config=True)
_ARCH = flags.DEFINE_string("arch", None, "Architecture file (aps_tf.archfile JSON).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output / checkpoint directory.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.mark_flags_as_required(["config", "arch", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from aps_tf import user_model  # pylint: disable=g-import-not-at-top
  from aps_tf.train import trainer  # pylint: disable=g-import-not-at-top
  cfg = user_model.resolve_config(_CONFIG.value)  # model.keras_file, target_fraction
  metrics = trainer.train(cfg, _ARCH.value, _WORKDIR.value,
                          progress=_PROGRESS.value)
  print(f"test accuracy {metrics['test_accuracy']:.4f}  loss {metrics['test_loss']:.4f}  "
        f"FLOPs {metrics['flops']['full']:,}  params {metrics['params']:,}  "
        f"({metrics['train_wall_time_s']:.1f}s training) -> {_WORKDIR.value}/metrics.json")


if __name__ == "__main__":
  cli.run(main)
