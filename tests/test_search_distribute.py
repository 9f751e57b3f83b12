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

  def test_mirrored_equals_one_device_and_resume_rebuilds_the_input(self):
    # One process (one TensorFlow start-up) for both 2-logical-CPU checks.
    lines = self._mirrored("transitional", "resume_input")
    # On 2 replicas a resumed search rebuilds its input where it stopped: the
    # batches it reads next equal the uninterrupted run's (2 batches x 2 tensors x
    # 2 iterators compared).
    self.assertEqual(lines["resume_input"], ["OK", "8"])

  # Ordinal sharing's sliced kernels: the suite runs the projected ones.
  @pytest.mark.sweep
  def test_mirrored_equals_one_device_ordinal(self):
    self._mirrored("ordinal")

  def _mirrored(self, *modes):
    """Runs tests.helpers.mirrored_search on `modes`; checks each sharing's line.

    BN uses per-replica batch statistics (like Keras BN), so the global batch
    is two identical halves: then both replicas' statistics equal the global
    ones and the updates must match exactly, up to float error.
    """
    res = subprocess.run([sys.executable, "-m", "tests.helpers.mirrored_search", *modes],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=480)
    self.assertEqual(res.returncode, 0, res.stderr[-3000:])
    lines = {l.split()[0]: l.split()[1:] for l in res.stdout.splitlines() if " OK " in l}
    for sharing in (m for m in modes if m != "resume_input"):
      with self.subTest(sharing=sharing):
        ok, worst, moved, total = lines[sharing]
        self.assertEqual(ok, "OK")
        self.assertLess(float(worst), 1e-4)
        # The steps changed most variables on both strategies (else equality proves nothing).
        self.assertGreater(int(moved), int(total) // 2, res.stdout)
    return lines

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
