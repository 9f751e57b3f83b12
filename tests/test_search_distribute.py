"""tf.distribute: MirroredStrategy over 2 logical CPUs equals one device; 2-worker MWMS agrees."""

import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from absl.testing import parameterized

from aps_tf import distribute

# Subprocesses: 2 logical CPUs and 2 workers.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _env(**extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.update(extra)
  return env


class DistributeTest(parameterized.TestCase):

  @parameterized.parameters("ordinal", "transitional")
  def test_mirrored_equals_one_device(self, sharing):
    # BN uses per-replica batch statistics (like Keras BN), so the global batch
    # is two identical halves: then both replicas' statistics equal the global
    # ones and the updates must match exactly, up to float error.
    res = subprocess.run([sys.executable, "-m", "tests.helpers.mirrored_search", sharing],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=480)
    self.assertEqual(res.returncode, 0, res.stderr[-3000:])
    _, worst, moved, total = res.stdout.split()[-4:]
    self.assertLess(float(worst), 1e-4)
    # The steps changed most variables on both strategies (else equality proves nothing).
    self.assertGreater(int(moved), int(total) // 2, res.stdout)

  def test_mirrored_resume_rebuilds_the_input_where_it_stopped(self):
    res = subprocess.run([sys.executable, "-m", "tests.helpers.mirrored_search", "resume_input"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    self.assertEqual(res.returncode, 0, res.stderr[-3000:])
    self.assertEqual(res.stdout.split()[-2:], ["OK", "8"])

  def test_multi_worker_two_processes(self):
    workdir = tempfile.mkdtemp()
    procs, outs = [], []
    for i, tf_config in enumerate(distribute.local_tf_configs(2)):
      out = os.path.join(workdir, f"w{i}.npy")
      outs.append(out)
      procs.append(subprocess.Popen([sys.executable, "-m", "tests.helpers.mwms_search_worker", workdir, out], cwd=ROOT,
                                    env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 400
    try:
      while time.time() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.2)
    finally:
      for p in procs:  # a worker without its peer never exits by itself
        if p.poll() is None:
          p.send_signal(signal.SIGKILL)
    logs = [p.communicate() for p in procs]
    for p, (so, se) in zip(procs, logs):
      self.assertEqual(p.returncode, 0, se[-3000:])
      self.assertIn("steps 6 1", so)
    a, b = np.load(outs[0]), np.load(outs[1])
    self.assertEqual(a.shape, b.shape)
    np.testing.assert_array_equal(a, b)
    self.assertTrue(os.path.exists(os.path.join(workdir, "ckpt", "checkpoint")))
    # The non-chief saved to its scratch directory, not over the chief's checkpoints.
    self.assertTrue(os.path.exists(os.path.join(workdir, "ckpt", ".worker-worker-1",
                                                "checkpoint")))
    self.assertFalse(os.path.exists(os.path.join(workdir, "ckpt", ".worker-worker-0")))


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
