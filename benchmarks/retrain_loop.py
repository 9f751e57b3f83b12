r"""Retraining on the one training core: step time by steps_per_loop, and what
checkpointing the input iterator costs.

  python benchmarks/retrain_loop.py [--steps=200] [--json]

1. The quick config's dense child (ResNet-20, widths 8, digits, batch 64)
   as `trainer.RetrainTask` under `runner.Runner`: seconds per training step
   with `steps_per_loop` = 1 and 50 (same steps, after one warm-up loop each),
   and the traces of the multi-step function (one for every loop length).
2. Size and write time of a checkpoint's input-iterator state: the digits
   pipeline of (1), and a CIFAR-10-shaped one (50,000 random 32x32x3 uint8
   images, in-memory cache, shuffle buffer 10,000, batch 128) before and
   after its first epoch (the cache is part of the iterator's state once
   filled).

With --json the last line is one JSON object of the figures.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags  # pylint: disable=g-import-not-at-top

from aps_tf import cli

_STEPS = flags.DEFINE_integer("steps", 200, "Timed training steps per steps_per_loop value.")
_JSON = flags.DEFINE_bool("json", False, "Print the figures as one JSON line last.")


def _write_size(trackable) -> tuple[float, float]:
  """(MB, seconds) of writing a Checkpoint of `trackable`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  d = tempfile.mkdtemp()
  t = time.perf_counter()
  tf.train.Checkpoint(it=trackable).write(os.path.join(d, "c"))
  dt = time.perf_counter() - t
  size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
  return round(size / 1e6, 2), round(dt, 3)


def step_times(steps: int) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from aps_tf import archfile  # pylint: disable=g-import-not-at-top
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  from aps_tf import models  # pylint: disable=g-import-not-at-top
  from aps_tf import runner as runner_lib  # pylint: disable=g-import-not-at-top
  from aps_tf.train import trainer  # pylint: disable=g-import-not-at-top
  from aps_tf.configs import quick  # pylint: disable=g-import-not-at-top
  cfg = quick.get_config()
  info = data.dataset_info(cfg.data)
  t = models.topology_from_config(cfg.model, info.image_shape, info.num_classes)
  arch = archfile.make(t, t.space.widths([1] * t.space.num_decisions))
  spe = info.split_sizes["full_train"] // cfg.train.batch_size
  task = trainer.RetrainTask(cfg, arch, tf.distribute.get_strategy(), spe)
  runner = runner_lib.Runner(task, tempfile.mkdtemp(), total_steps=10**9, steps_per_loop=50,
                             checkpoint_every=10**9, log_every=10**9)
  out = {}
  for per_loop in (1, 50):
    runner.run_steps(per_loop)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps // per_loop):
      runner.run_steps(per_loop)
    out[f"step_s_loop{per_loop}"] = round((time.perf_counter() - t0) / steps, 5)
  out["loop_traces"] = runner.loop_traces
  out["digits_iterator_mb"], out["digits_iterator_write_s"] = _write_size(task.iterators())
  return out


def cifar_shaped_iterator() -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  n = 50_000

  def image(i):
    x = tf.random.stateless_uniform([32, 32, 3], tf.stack([i, tf.constant(1, tf.int64)]), 0, 256,
                                    tf.int32)
    return tf.cast(x, tf.uint8), tf.cast(i % 10, tf.int32)
  ds = tf.data.Dataset.range(n).map(image).cache()
  ds = ds.shuffle(10_000, seed=1, reshuffle_each_iteration=True).repeat().batch(128).prefetch(2)
  it = iter(ds)
  for _ in range(5):
    next(it)
  out = {}
  out["cifar_iterator_mb_first_epoch"], out["cifar_iterator_write_s_first_epoch"] = (
      _write_size(it))
  for _ in range(n // 128):
    next(it)
  out["cifar_iterator_mb_after_epoch"], out["cifar_iterator_write_s_after_epoch"] = (
      _write_size(it))
  return out


def main(argv):
  del argv
  res = step_times(_STEPS.value)
  res.update(cifar_shaped_iterator())
  res["loop_speedup"] = round(res["step_s_loop1"] / res["step_s_loop50"], 2)
  for k, v in res.items():
    print(f"{k:40s} {v}")
  if _JSON.value:
    print(json.dumps(res))


if __name__ == "__main__":
  cli.run(main)
