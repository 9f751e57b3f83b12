"""Retraining under MirroredStrategy over 2 logical CPUs (a real 2-replica run).

  python -m tests.helpers.mirrored_train TMPDIR   # prints the metrics JSON
"""

import json
import os
import sys

import tensorflow as tf


def main(tmp: str) -> None:
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  from aps_tf.train import trainer  # pylint: disable=g-import-not-at-top
  from tests.helpers import train_util as util  # pylint: disable=g-import-not-at-top
  cfg = util.tiny_config(epochs=1, label_smoothing=0.1, decay_bn_and_bias=False)
  cfg.strategy = "mirrored"
  path = os.path.join(tmp, "mirrored.json")
  util.write_arch(cfg, path, index=0)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  m = trainer.train(cfg, path, os.path.join(tmp, "mirrored"), progress=False, strategy=strategy)
  print(json.dumps(m))


if __name__ == "__main__":
  main(sys.argv[1])
