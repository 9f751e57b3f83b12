"""Tests of aps_tf.train: the retraining loop, resume, supernet init, the binary."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from aps_tf import archfile
from aps_tf.models import dense
from aps_tf.models import supernet as supernet_lib
from aps_tf.train import optim
from aps_tf.train import supernet_init
from aps_tf.train import trainer
from tests.helpers import train_util as util


class ScheduleTest(parameterized.TestCase):

  def test_warmup_then_cosine(self):
    s = optim.WarmupCosine(0.8, total_steps=100, warmup_steps=10, warmup_from=0.2)
    lr = [float(s(i)) for i in range(101)]
    self.assertAlmostEqual(lr[0], 0.2, places=6)
    self.assertAlmostEqual(lr[5], 0.5, places=6)
    self.assertAlmostEqual(lr[10], 0.8, places=6)
    self.assertAlmostEqual(lr[55], 0.4, places=5)  # half-way through the cosine
    self.assertAlmostEqual(lr[100], 0.0, places=6)
    self.assertTrue(all(a >= b for a, b in zip(lr[10:], lr[11:])))

  def test_from_config(self):
    cfg = util.tiny_config(epochs=10, warmup_epochs=2, lr=0.8)
    s = optim.make_schedule(cfg.train, steps_per_epoch=5)
    self.assertEqual((s.total_steps, s.warmup_steps), (50, 10))
    self.assertAlmostEqual(float(s(0)), 0.2, places=6)  # MobileNetV2's recipe: 0.2 -> 0.8

  @parameterized.parameters(True, False)
  def test_decayed_variables(self, decay_all):
    cfg = util.tiny_config()
    t = util.topology(cfg)
    model = dense.build(t, t.space.widths(t.space.smallest()))
    got = optim.decayed_variables(model, decay_all)
    if decay_all:
      self.assertLen(got, len(model.trainable_variables))
    else:
      self.assertNotEmpty(got)
      self.assertTrue(all(len(v.shape) >= 2 for v in got))
      names = {v.path for v in got}
      self.assertFalse(any("gamma" in n or "beta" in n or "bias" in n for n in names))
      self.assertTrue(any("classifier/kernel" in n for n in names))

  def test_unknown_optimizer(self):
    cfg = util.tiny_config(optimizer="rmsprop")
    with self.assertRaisesRegex(ValueError, "unknown train.optimizer 'rmsprop'"):
      optim.make_optimizer(cfg.train, 0.1)


class TrainTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.workdir, cls.cfg = util.trained_workdir(cls.tmp, epochs=3)
    with open(os.path.join(cls.workdir, "metrics.json")) as f:
      cls.metrics = json.load(f)

  def test_outputs(self):
    m = self.metrics
    for key in ("test_accuracy", "test_loss", "flops", "params", "epochs", "wall_time_s",
                "train_wall_time_s", "steps"):
      self.assertIn(key, m)
    self.assertGreater(m["test_accuracy"], 0.5)  # 10 classes: chance is 0.1
    self.assertEqual(m["epochs"], 3)
    self.assertEqual(m["steps"], 3 * m["steps_per_epoch"])
    self.assertEqual(m["test_examples"], 360)
    arch = archfile.load(os.path.join(self.workdir, "arch.json"))
    self.assertEqual(m["flops"]["full"], arch["flops"]["full"])
    self.assertEqual(m["params"], arch["params"])
    with open(os.path.join(self.workdir, "config.json")) as f:
      self.assertEqual(json.load(f)["train"]["epochs"], 3)
    self.assertNotEmpty(os.listdir(os.path.join(self.workdir, "tensorboard")))
    self.assertIsNotNone(tf.train.latest_checkpoint(os.path.join(self.workdir, "checkpoints")))

  def test_keras_round_trip(self):
    model = keras.models.load_model(os.path.join(self.workdir, "model.keras"))
    arch = archfile.load(os.path.join(self.workdir, "arch.json"))
    fresh = dense.build_from_arch(arch)
    fresh.set_weights(model.get_weights())
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(model(x), fresh(x), atol=1e-6)
    path = os.path.join(self.tmp, "again.keras")
    model.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path)(x), model(x))

  def test_rerun_resumes_without_training(self):
    ckpt_dir = os.path.join(self.workdir, "checkpoints")
    before = tf.train.latest_checkpoint(ckpt_dir)
    m = trainer.train(self.cfg, os.path.join(self.workdir, "arch.json"), self.workdir,
                      progress=False)
    self.assertEqual(m["resumed_from"], before)
    self.assertEqual(m["steps"], self.metrics["steps"])
    self.assertAlmostEqual(m["test_accuracy"], self.metrics["test_accuracy"], places=6)

  def test_other_arch_in_workdir_refused(self):
    path = os.path.join(self.tmp, "other.json")
    util.write_arch(self.cfg, path, index=0)
    with self.assertRaisesRegex(trainer.TrainError, "another architecture"):
      trainer.train(self.cfg, path, self.workdir, progress=False)

  def test_checkpoint_of_other_arch_refused(self):
    # Same arch.json as the run, but checkpoints from another architecture.
    workdir = os.path.join(self.tmp, "mismatch")
    path = os.path.join(self.tmp, "small.json")
    cfg = util.tiny_config(epochs=1)
    util.write_arch(cfg, path, index=0)
    trainer.train(cfg, path, workdir, progress=False)
    os.remove(os.path.join(workdir, "arch.json"))
    with self.assertRaisesRegex(trainer.TrainError, "does not match the architecture"):
      trainer.train(cfg, os.path.join(self.workdir, "arch.json"), workdir, progress=False)

  def test_other_config_in_workdir_refused(self):
    cfg = util.tiny_config(epochs=3, lr=0.2)
    with self.assertRaisesRegex(trainer.workdir_lib.WorkdirMismatchError,
                                r"train.lr: saved=0.1 now=0.2"):
      trainer.train(cfg, os.path.join(self.workdir, "arch.json"), self.workdir, progress=False)

  def test_arch_for_other_data_refused(self):
    t = supernet_lib.topo.build_topology("resnet20", (32, 32, 3), 10, candidates=(4, 8))
    path = os.path.join(self.tmp, "cifar.json")
    archfile.save(archfile.make(t, t.space.widths(t.space.smallest())), path)
    with self.assertRaisesRegex(trainer.TrainError, "input_shape"):
      trainer.train(self.cfg, path, os.path.join(self.tmp, "x"), progress=False)

  def test_mirrored_strategy(self):
    # Two logical CPUs in a fresh process (devices are fixed at TF start-up).
    r = subprocess.run([sys.executable, "-m", "tests.helpers.mirrored_train", self.tmp],
                       cwd=util.ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=util.ROOT))
    self.assertEqual(r.returncode, 0, r.stderr[-3000:])
    m = json.loads(r.stdout.strip().splitlines()[-1])
    self.assertEqual(m["strategy"], "mirrored")
    self.assertEqual(m["num_replicas"], 2)
    self.assertEqual(m["steps"], m["steps_per_epoch"])
    self.assertTrue(np.isfinite(m["test_loss"]))
    self.assertGreater(m["test_accuracy"], 0.1)


class SupernetInitTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.cfg = util.tiny_config(epochs=1)
    cls.search_dir = os.path.join(cls.tmp, "search")
    os.makedirs(cls.search_dir)
    with open(os.path.join(cls.search_dir, "config.json"), "w") as f:
      f.write(trainer.config_to_json(cls.cfg))
    net = supernet_init.build_supernet(cls.cfg)
    # Perturb BN statistics so that copying them is observable.
    for v in net.non_trainable_variables:
      if "moving" in v.path:
        v.assign(v + tf.random.uniform(v.shape, 0.1, 0.5, seed=1))
    # aps_tf.search's layout: WORKDIR/ckpt, supernet under 'net' beside other state.
    tf.train.Checkpoint(net=net, step=tf.Variable(7, dtype=tf.int64)).save(
        os.path.join(cls.search_dir, "ckpt", "ckpt"))
    cls.net = net

  def test_child_matches_supernet(self):
    arch = util.write_arch(self.cfg, os.path.join(self.tmp, "a.json"), index=1, last=2)
    model = dense.build_from_arch(arch)
    info = supernet_init.init_from_supernet(model, arch, self.search_dir)
    self.assertEqual(info["decisions"][-1], 2)
    x = tf.random.stateless_normal((4, 16, 16, 1), [1, 2])
    want = self.net(x, tf.constant(info["decisions"], tf.int32), training=False)
    np.testing.assert_allclose(model(x, training=False), want, atol=1e-4)

  def test_train_from_supernet(self):
    arch_path = os.path.join(self.tmp, "b.json")
    util.write_arch(self.cfg, arch_path, index=1)
    cfg = util.tiny_config(epochs=1, init="supernet", supernet_workdir=self.search_dir)
    m = trainer.train(cfg, arch_path, os.path.join(self.tmp, "ft"), progress=False)
    self.assertEqual(m["init"], "supernet")
    self.assertEqual(m["supernet_workdir"], self.search_dir)

  def test_arch_outside_search_space(self):
    t = util.topology(self.cfg)
    arch = archfile.make(t, [5] * t.num_slots)
    with self.assertRaisesRegex(supernet_init.SupernetInitError, "not an architecture"):
      supernet_init.init_from_supernet(dense.build_from_arch(arch), arch, self.search_dir)

  def test_missing_supernet(self):
    with self.assertRaisesRegex(supernet_init.SupernetInitError, "does not exist"):
      supernet_init.load_supernet(os.path.join(self.tmp, "nope"))
    empty = os.path.join(self.tmp, "empty")
    os.makedirs(empty)
    with open(os.path.join(empty, "config.json"), "w") as f:
      f.write(trainer.config_to_json(self.cfg))
    with self.assertRaisesRegex(supernet_init.SupernetInitError, "no checkpoint"):
      supernet_init.load_supernet(empty)


class BinaryTest(absltest.TestCase):

  def test_sigkill_then_resume(self):
    tmp = tempfile.mkdtemp()
    arch = os.path.join(tmp, "arch.json")
    util.write_arch(util.tiny_config(), arch, index=0)
    workdir = os.path.join(tmp, "run")
    args = ["-m", "aps_tf.train", "--config=configs/quick.py", f"--arch={arch}",
            f"--workdir={workdir}", "--config.train.epochs=2",
            "--config.train.checkpoint_every_steps=4", "--noprogress"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=util.ROOT)
    proc = subprocess.Popen([sys.executable, *args], cwd=util.ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
      if tf.train.latest_checkpoint(ckpt_dir):
        break
      time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
      os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    self.assertTrue(killed, "the run ended before its first checkpoint could be seen")
    self.assertEqual(proc.returncode, -signal.SIGKILL)
    self.assertFalse(os.path.exists(os.path.join(workdir, "metrics.json")))
    r = util.run_binary(*args[1:])
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    with open(os.path.join(workdir, "metrics.json")) as f:
      m = json.load(f)
    self.assertEqual(m["steps"], 2 * m["steps_per_epoch"])
    self.assertIn("resumed_from", m)
    self.assertTrue(os.path.exists(os.path.join(workdir, "model.keras")))

  def test_bad_inputs_exit_nonzero(self):
    tmp = tempfile.mkdtemp()
    r = util.run_binary("aps_tf.train", "--config=configs/quick.py",
                        f"--arch={tmp}/missing.json", f"--workdir={tmp}/w")
    self.assertEqual(r.returncode, 2)
    self.assertIn("missing.json: cannot read architecture file", r.stderr)
    r = util.run_binary("aps_tf.train", "--config=configs/quick.py", f"--workdir={tmp}/w")
    self.assertEqual(r.returncode, 2)
    self.assertIn("--arch", r.stderr)


if __name__ == "__main__":
  absltest.main()
