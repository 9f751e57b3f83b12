"""Retraining under MirroredStrategy over 2 logical CPUs (a real 2-replica run).

  python -m tests.helpers.mirrored_train TMPDIR   # prints the metrics JSON

The metrics JSON has two extra fields from a second run of the same config
that is stopped after step 8 (checkpoint every 3 steps) and resumed: on
several replicas the input iterator is not in the checkpoint, so the resume
rebuilds the pipeline and skips the consumed batches. `resumed_from` is the
checkpoint it resumed from, `resume_identical` whether its weights equal the
unstopped run's bit for bit.
"""

import json
import os
import sys
from unittest import mock

import numpy as np
import tensorflow as tf


class _Stopped(Exception):
  pass


def main(tmp: str) -> None:
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  from aps_tf import lifecycle  # pylint: disable=g-import-not-at-top
  from aps_tf.train import trainer  # pylint: disable=g-import-not-at-top
  from tests.helpers import train_util as util  # pylint: disable=g-import-not-at-top
  cfg = util.tiny_config(epochs=1, label_smoothing=0.1, decay_bn_and_bias=False,
                         checkpoint_every_steps=3, steps_per_loop=4)
  cfg.strategy = "mirrored"
  path = os.path.join(tmp, "mirrored.json")
  util.write_arch(cfg, path, index=0)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  m = trainer.train(cfg, path, os.path.join(tmp, "mirrored"), progress=False, strategy=strategy)

  def stopper(total, enabled, keys, desc):
    del total, enabled, keys, desc
    def progress(step, n, out):
      del n, out
      if step >= 8:
        raise _Stopped()
    return progress, lambda: None

  stopped = os.path.join(tmp, "mirrored_stopped")
  with mock.patch.object(lifecycle, "progress", stopper):
    try:
      trainer.train(cfg, path, stopped, progress=False, strategy=strategy)
    except _Stopped:
      pass
  again = trainer.train(cfg, path, stopped, progress=False, strategy=strategy)
  a = trainer.keras.models.load_model(os.path.join(tmp, "mirrored", "model.keras")).get_weights()
  b = trainer.keras.models.load_model(os.path.join(stopped, "model.keras")).get_weights()
  m["resumed_from"] = os.path.basename(again.get("resumed_from", ""))
  m["resume_identical"] = len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
  print(json.dumps(m))


if __name__ == "__main__":
  main(sys.argv[1])
