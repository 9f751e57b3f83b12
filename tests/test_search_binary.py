"""The search binary as a user runs it: a NaN loss (SIGKILL + resume: the search
scenario of tests/test_soak.py; bad input to the binary: tests/test_user_errors.py)."""

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

# Subprocesses: the search binary as a user runs it.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.model.name=resnet8", "--config.model.candidates=(4,8,16)",
        "--config.search.reward.target=300000", "--config.search.batch_size=16",
        "--config.search.steps_per_epoch=3", "--config.search.warmup_epochs=1",
        "--config.search.lr_decay_epochs=(4,)", "--config.search.checkpoint_every_steps=2",
        "--config.search.log_every_steps=1", "--config.search.analysis_every_steps=0",
        "--config.search.top_n=2", "--config.search.beam_width=3",
        "--config.search.rescore_batches=1", "--noprogress"]


def _cmd(workdir, *extra, config="configs/quick.py"):
  return [sys.executable, "-m", "aps_tf.search", f"--config={config}",
          f"--workdir={workdir}"] + TINY + list(extra)


def _env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _run(cmd, timeout=180):
  return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                        timeout=timeout)


class BinaryTest(parameterized.TestCase):

  # SIGKILL and resume of this binary (restored message, no duplicate or missing
  # metrics step, the finished arch.json and config.json, the end state equal to
  # an unkilled run's): tests/test_soak.py, whose search scenario is this binary
  # killed twice. Bad input to this binary (unknown fields, budgets, data,
  # another config's workdir: exit 2, one line): tests/test_user_errors.py, in
  # one process.

  def test_nan_loss_keeps_last_good_checkpoint(self):
    workdir = tempfile.mkdtemp()
    res = _run(_cmd(workdir, "--config.search.epochs=3", "--config.search.lr=1e38"))
    self.assertEqual(res.returncode, 2)
    self.assertIn("non-finite loss", res.stderr)
    self.assertNotIn("Traceback", res.stderr)
    path = tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
    self.assertIsNotNone(path)
    reader = tf.train.load_checkpoint(path)
    for name, dtype in reader.get_variable_to_dtype_map().items():
      if dtype == tf.variant:  # the input iterators' state
        continue
      value = reader.get_tensor(name)
      if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        self.assertTrue(np.all(np.isfinite(value)), name)


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
