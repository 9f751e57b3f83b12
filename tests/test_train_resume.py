"""Tests of aps_tf.train's resuming and strategies: a 2-replica MirroredStrategy run,
mixed-precision retraining, kill-and-resume inside traced loops (split from
test_train.py so that the two files balance across the test workers)."""

import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from aps_tf import lifecycle
from aps_tf import runner as runner_lib
from aps_tf.train import trainer
from tests.helpers import train_util as util

# Every test here retrains the tiny child (in this process or a subprocess).
pytestmark = pytest.mark.slow


class MirroredTrainTest(absltest.TestCase):

  def test_mirrored_strategy(self):
    # Two logical CPUs in a fresh process (devices are fixed at TF start-up).
    r = subprocess.run([sys.executable, "-m", "tests.helpers.mirrored_train", tempfile.mkdtemp()],
                       cwd=util.ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=util.ROOT))
    self.assertEqual(r.returncode, 0, r.stderr[-3000:])
    m = json.loads(r.stdout.strip().splitlines()[-1])
    self.assertEqual(m["strategy"], "mirrored")
    self.assertEqual(m["num_replicas"], 2)
    self.assertEqual(m["steps"], m["steps_per_epoch"])
    self.assertTrue(np.isfinite(m["test_loss"]))
    self.assertGreater(m["test_accuracy"], 0.1)
    # Stopped after step 8, resumed from step 6 by skipping the consumed batches.
    self.assertEqual(m["resumed_from"], "ckpt-6")
    self.assertTrue(m["resume_identical"])


class MixedPrecisionTest(parameterized.TestCase):

  @parameterized.parameters("mixed_bfloat16", "mixed_float16")
  def test_retrain_under_a_mixed_policy(self, policy):
    tmp = tempfile.mkdtemp()
    arch = os.path.join(tmp, "arch.json")
    util.write_arch(util.tiny_config(), arch, index=0)
    cfg = util.tiny_config(epochs=1, steps_per_loop=8)
    cfg.mixed_precision = policy
    original, policies = trainer.RetrainTask.float32_model, []

    def spy(task):
      policies.extend(l.dtype_policy.name for l in task.model.layers)
      return original(task)

    with mock.patch.object(trainer.RetrainTask, "float32_model", spy):
      m = trainer.train(cfg, arch, os.path.join(tmp, "w"), progress=False)
    self.assertIn(policy, policies)  # the training model ran under the policy
    self.assertTrue(np.isfinite(m["test_loss"]))
    self.assertGreater(m["test_accuracy"], 0.1)  # learnt something in one epoch
    model = keras.models.load_model(os.path.join(tmp, "w", "model.keras"))
    # Trained under the policy, saved for export and serving in float32.
    self.assertEqual({l.dtype_policy.name for l in model.layers}, {"float32"})
    self.assertEqual({v.dtype for v in model.weights}, {"float32"})


class _Killed(Exception):
  """Stands for a SIGKILL: raised after a loop, before its records and checkpoint."""


class ResumeInsideLoopTest(parameterized.TestCase):
  """Checkpoints that do not fall on steps_per_loop multiples still resume exactly."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.arch = os.path.join(cls.tmp, "arch.json")
    util.write_arch(util.tiny_config(), cls.arch, index=0)

  def _cfg(self, steps_per_loop, checkpoint_input=True):
    return util.tiny_config(epochs=1, steps_per_loop=steps_per_loop, checkpoint_every_steps=3,
                            log_every_steps=2, checkpoint_input=checkpoint_input)

  @parameterized.named_parameters(
      # Killed twice, each kill after a loop. Loop boundaries 2,3,4,6,8,9,...:
      # killed after step 8, resumed from ckpt-6 with one step per loop, killed
      # again after step 10, resumed from ckpt-9 with two steps per loop; the
      # reference takes four (a rerun may change steps_per_loop): steps_per_loop
      # changes neither the weights nor the records.
      ("loop4_then_1_then_2", ((4, 8, 6), (1, 10, 9)), 2),
      # The iterator outside the checkpoint: the resume skips the consumed batches.
      ("skip_consumed_input", ((4, 8, 6),), 4, False))
  def test_kill_then_resume_is_bit_identical(self, kills, resume_loop, checkpoint_input=True):
    # One reference training (steps_per_loop 4) for every case of the class.
    ref = os.path.join(self.tmp, "ref")
    if not os.path.exists(os.path.join(ref, "model.keras")):
      trainer.train(self._cfg(4), self.arch, ref, progress=False)
    with open(os.path.join(ref, "metrics.json")) as f:
      m_ref = json.load(f)
    run = os.path.join(self.tmp, f"run_{self._testMethodName}")

    def killer(kill_after):
      def progress_factory(total, enabled, keys, desc):
        del total, enabled, keys, desc
        def progress(step, n, out):
          del n, out
          if step >= kill_after:
            raise _Killed(step)
        return progress, lambda: None
      return progress_factory

    for loop, kill_after, restored in kills:
      with mock.patch.object(lifecycle, "progress", killer(kill_after)):
        with self.assertRaises(_Killed):
          trainer.train(self._cfg(loop, checkpoint_input), self.arch, run, progress=False)
      latest = tf.train.latest_checkpoint(os.path.join(run, "ckpt"))
      self.assertEqual(latest, os.path.join(run, "ckpt", f"ckpt-{restored}"))
      keys = tf.train.load_checkpoint(latest).get_variable_to_shape_map()
      self.assertEqual("data/.ATTRIBUTES/ITERATOR_STATE" in keys, checkpoint_input)
    m = trainer.train(self._cfg(resume_loop, checkpoint_input), self.arch, run, progress=False)
    self.assertEqual(m["resumed_from"], os.path.join(run, "ckpt", f"ckpt-{restored}"))
    a = keras.models.load_model(os.path.join(ref, "model.keras")).get_weights()
    b = keras.models.load_model(os.path.join(run, "model.keras")).get_weights()
    self.assertLen(b, len(a))
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
    for key in ("test_accuracy", "test_loss", "train_loss_last_epoch", "steps"):
      self.assertEqual(m[key], m_ref[key], key)
    # One history: the records of the killed-and-resumed run equal the reference's.
    self.assertEqual(runner_lib.read_metrics(run), runner_lib.read_metrics(ref))


if __name__ == "__main__":
  absltest.main()
