"""The search binary as a user runs it: SIGKILL + resume, and a NaN loss (bad input to
the binary: tests/test_user_errors.py)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from aps_tf import archfile

# Subprocesses: the search binary as a user runs it.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.model.name=resnet8", "--config.model.candidates=(4,8,16)",
        "--config.search.reward.target=300000", "--config.search.batch_size=16",
        "--config.search.steps_per_epoch=3", "--config.search.warmup_epochs=1",
        "--config.search.lr_decay_epochs=(4,)", "--config.search.checkpoint_every_steps=2",
        "--config.search.log_every_steps=1", "--config.search.analysis_every_steps=100",
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


def _latest_step(workdir):
  path = tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
  return int(path.rsplit("-", 1)[1]) if path else -1


class BinaryTest(parameterized.TestCase):

  def test_sigkill_and_resume(self):
    workdir = tempfile.mkdtemp()
    cmd = _cmd(workdir, "--config.search.epochs=8")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
      deadline = time.time() + 150
      while _latest_step(workdir) < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
      self.assertIsNone(proc.poll(), "run ended before it could be killed")
      proc.send_signal(signal.SIGKILL)
      proc.wait()
    finally:
      if proc.poll() is None:
        proc.kill()
    killed_at = _latest_step(workdir)
    self.assertBetween(killed_at, 6, 23)
    self.assertFalse(os.path.exists(os.path.join(workdir, "arch.json")))
    res = _run(cmd)
    self.assertEqual(res.returncode, 0, res.stderr[-3000:])
    self.assertIn("restored", res.stderr)
    self.assertIn(f"at step {killed_at}", res.stderr)
    self.assertEqual(_latest_step(workdir), 24)
    arch = archfile.load(os.path.join(workdir, "arch.json"))
    self.assertEqual(arch["provenance"]["config"], "quick")
    self.assertEqual(arch["provenance"]["step"], 24)
    self.assertEqual(len(arch["decisions"]), 7)
    steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))
             if '"kind": "train"' in l]
    self.assertEqual(steps, list(range(1, 25)))  # no duplicate or missing step
    cfg = json.load(open(os.path.join(workdir, "config.json")))
    self.assertEqual(cfg["search"]["epochs"], 8)
    # Bad input to this binary (unknown fields, budgets, data, another config's
    # workdir: exit 2, one line): tests/test_user_errors.py, in one process.

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
