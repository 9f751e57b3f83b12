"""MirroredStrategy over 2 logical CPUs vs one device: the same search steps.

  python -m tests.helpers.mirrored_search MODE...

MODE is a sharing (prints "SHARING OK worst moved total") or resume_input
(prints "resume_input OK batches_compared"); the modes run one after the other
in one process (one TensorFlow start-up for all), each on freshly built tasks.

BN uses per-replica batch statistics, so the global batch is two identical
halves: then both replicas' statistics equal the global ones and the updates
must match up to float error. `moved` counts the variables the steps changed
(the comparison would be vacuous if nothing moved).
"""

import sys

import numpy as np
import tensorflow as tf

from tests.helpers.tiny_distributed import tiny


def _two_cpus() -> None:
  """Two logical CPUs (once per process, before TensorFlow initialises its devices)."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def main(sharing: str) -> None:
  from aps_tf.search import inputs  # pylint: disable=g-import-not-at-top
  from aps_tf.search import task as task_lib  # pylint: disable=g-import-not-at-top
  results = []
  rng = np.random.default_rng(0)
  half = rng.normal(size=(8, 16, 16, 1)).astype(np.float32)
  labels = rng.integers(0, 10, size=8).astype(np.int32)
  images, labels = np.concatenate([half, half]), np.concatenate([labels, labels])
  for strategy in (tf.distribute.get_strategy(),
                   tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])):
    sr = task_lib.SearchTask.from_config(tiny(sharing), strategy)
    assert sr.num_replicas == (1 if not results else 2), sr.num_replicas
    before = [np.array(v.numpy()) for v in sr.checkpoint_variables()]
    batch = inputs.split_batch(sr.strategy, sr.global_batch, images, labels)
    arch = tf.constant([[2, 1, 0, 2, 1, 2, 0]] * sr.num_replicas, tf.int32)
    m = sr.supernet_step(arch, batch)
    m2 = sr.supernet_step(arch, batch)
    out = sr.reward_step(tf.constant([1, 2, 0, 1, 1, 0, 2], tf.int32), batch)
    if sharing == "transitional":
      sr.phi_step()
    vals = [np.asarray(v.numpy()) for v in sr.checkpoint_variables()]
    moved = sum(1 for x, y in zip(before, vals) if x.size and not np.array_equal(x, y))
    results.append((float(m["loss"]), float(m2["loss"]), float(out["reward"]), vals, moved))
  (l1, l2, r, a, moved_a), (m1, m2, q, b, moved_b) = results
  assert abs(l1 - m1) < 1e-5 and abs(l2 - m2) < 1e-4, (l1, m1, l2, m2)
  assert abs(r - q) < 1e-6, (r, q)
  assert len(a) == len(b)
  worst = max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))
  assert worst < 1e-4, worst
  assert moved_a == moved_b, (moved_a, moved_b)
  print(sharing, "OK", worst, moved_a, len(a), flush=True)


def resume_input() -> None:
  """On 2 replicas the iterators are not checkpointed: a resumed searcher rebuilds
  its input at the step; the batches it reads next are the uninterrupted run's."""
  from aps_tf.search import task as task_lib  # pylint: disable=g-import-not-at-top
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  sr = task_lib.SearchTask.from_config(tiny("ordinal"), strategy)
  step = sr.steps_per_epoch + 3  # past an epoch boundary, after warm-up
  assert step > sr.warmup_steps, (step, sr.warmup_steps)

  def local(batch):
    return [np.concatenate([np.asarray(t) for t in strategy.experimental_local_results(x)])
            for x in batch]

  uninterrupted = [iter(sr.input_dataset("train")), iter(sr.input_dataset("reward"))]
  expected = []
  for it, consumed in zip(uninterrupted, (step, step - sr.warmup_steps)):
    for _ in range(consumed):
      next(it)
    expected.append([local(next(it)) for _ in range(2)])
  sr.step.assign(step)
  resumed = sr.iterators()
  compared = 0
  for it, want in zip(resumed, expected):
    for batch in want:
      for a, b in zip(local(next(it)), batch):
        np.testing.assert_array_equal(a, b)
        compared += 1
  print("resume_input OK", compared, flush=True)


if __name__ == "__main__":
  _two_cpus()
  for mode in sys.argv[1:]:
    resume_input() if mode == "resume_input" else main(mode)
