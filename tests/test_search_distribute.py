"""tf.distribute: MirroredStrategy over 2 logical CPUs equals one device; 2-worker MWMS agrees."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl.testing import parameterized

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """
from tests.search_configs import tiny_config
def tiny(sharing):
  # Adam moves every weight by ~lr whatever the gradient's size, so float noise
  # in near-zero controller gradients shows up as ~lr; keep it far below atol.
  c = tiny_config(sharing, epochs=2, checkpoint_every_steps=100, analysis_every_steps=100)
  c.search.controller.lr = 1e-5
  return c
"""

MIRRORED = TINY + """
import sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from aps_tf.search import loop
sharing = sys.argv[1]
results = []
rng = np.random.default_rng(0)
half = rng.normal(size=(8, 16, 16, 1)).astype(np.float32)
labels = rng.integers(0, 10, size=8).astype(np.int32)
images, labels = np.concatenate([half, half]), np.concatenate([labels, labels])
for strategy in (tf.distribute.get_strategy(),
                 tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])):
  sr = loop.Searcher(tiny(sharing), strategy)
  assert sr.num_replicas == (1 if len(results) == 0 else 2)
  batch = sr.distribute_batch(images, labels)
  arch = tf.constant([[2, 1, 0, 2, 1, 2, 0]] * sr.num_replicas, tf.int32)
  m = sr.train_step(arch, batch)
  m2 = sr.train_step(arch, batch)
  out = sr.reward_step(tf.constant([1, 2, 0, 1, 1, 0, 2], tf.int32), batch)
  if sharing == "transitional":
    sr.phi_step()
  vals = [np.asarray(v.numpy()) for v in sr.checkpoint_variables()]
  results.append((float(m["loss"]), float(m2["loss"]), float(out["reward"]), vals))
(l1, l2, r, a), (m1, m2, q, b) = results
assert abs(l1 - m1) < 1e-5 and abs(l2 - m2) < 1e-4, (l1, m1, l2, m2)
assert abs(r - q) < 1e-6, (r, q)
assert len(a) == len(b)
worst = max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))
assert worst < 1e-4, worst
moved = sum(1 for x, y in zip(a, b) if x.shape == y.shape)
print("OK", worst, moved)
"""

WORKER = TINY + """
import json, os, sys, numpy as np, tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
from aps_tf.search import run
cfg = tiny("transitional")
cfg.strategy = "multi_worker"
r = run.SearchRun(cfg, sys.argv[1], strategy=strategy, progress=False)
r.train()
vals = [np.asarray(v.numpy()).ravel().astype(np.float64) for v in r.searcher.checkpoint_variables()]
np.save(sys.argv[2], np.concatenate(vals))
print("steps", int(r.searcher.step.numpy()), r.searcher.train_traces)
"""


def _env(**extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.update(extra)
  return env


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


class DistributeTest(parameterized.TestCase):

  @parameterized.parameters("ordinal", "transitional")
  def test_mirrored_equals_one_device(self, sharing):
    # BN uses per-replica batch statistics (like Keras BN), so the global batch
    # is two identical halves: then both replicas' statistics equal the global
    # ones and the updates must match exactly, up to float error.
    res = subprocess.run([sys.executable, "-c", MIRRORED, sharing], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=240)
    self.assertEqual(res.returncode, 0, res.stderr[-3000:])
    self.assertIn("OK", res.stdout)

  def test_multi_worker_two_processes(self):
    workdir = tempfile.mkdtemp()
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, outs = [], []
    for i in range(2):
      out = os.path.join(workdir, f"w{i}.npy")
      outs.append(out)
      tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
      procs.append(subprocess.Popen([sys.executable, "-c", WORKER, workdir, out], cwd=ROOT,
                                    env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 200
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
    self.assertTrue(os.path.exists(os.path.join(workdir, "tmp", "worker-1", "checkpoint")))
    self.assertFalse(os.path.exists(os.path.join(workdir, "tmp", "worker-0")))


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
