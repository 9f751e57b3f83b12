"""Tests of aps_tf.train: schedules, the retraining loop and its outputs, supernet init
(resuming inside loops, strategies, mixed precision: test_train_resume.py)."""

import json
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from aps_tf import archfile
from aps_tf import runner as runner_lib
from aps_tf import weight_decay as weight_decay_lib
from aps_tf import workdir as workdir_lib
from aps_tf.models import dense
from aps_tf.models import supernet as supernet_lib
from aps_tf.train import optim
from aps_tf.train import supernet_init
from aps_tf.train import trainer
from tests import search_configs
from tests.helpers import shared_runs
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
    cfg = search_configs.tiny_config()  # ResNet-8: the smallest model to build
    t = util.topology(cfg)
    model = dense.build(t, t.space.widths(t.space.smallest()))
    got = weight_decay_lib.decayed_variables(model, decay_all)
    if decay_all:
      self.assertLen(got, len(model.trainable_variables))
    else:
      self.assertNotEmpty(got)
      self.assertTrue(all(len(v.shape) >= 2 for v in got))
      names = {v.path for v in got}
      self.assertFalse(any("gamma" in n or "beta" in n or "bias" in n for n in names))
      self.assertTrue(any("classifier/kernel" in n for n in names))

  @parameterized.named_parameters(
      ("all_one_replica", None, 1, [True, True]),
      ("mask_two_replicas", [False, True], 2, [False, True]))
  def test_add_weight_decay(self, mask, replicas, decayed):
    variables = [tf.Variable([1.0, -2.0]), tf.Variable([[3.0]])]
    grads = [tf.constant([0.5, 0.5]), tf.constant([[1.0]])]
    got = weight_decay_lib.add_weight_decay(grads, variables, 0.1, mask=mask, num_replicas=replicas)
    for g, v, d, out in zip(grads, variables, decayed, got):
      want = g + (0.1 / replicas) * v if d else g
      np.testing.assert_allclose(out, want, rtol=1e-6)
    # The coupled L2 is the gradient of wd/2 * ||w||^2 (one replica).
    with tf.GradientTape() as tape:
      penalty = 0.05 * tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])
    want = [g + d for g, d in zip(grads, tape.gradient(penalty, variables))]
    got = weight_decay_lib.add_weight_decay(grads, variables, 0.1)
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, b, rtol=1e-6)
    self.assertEqual(weight_decay_lib.add_weight_decay([None, grads[1]], variables, 0.1)[0], None)
    with self.assertRaisesRegex(ValueError, "as many of each"):
      weight_decay_lib.add_weight_decay(grads, variables, 0.1, mask=[True])

  def test_unknown_optimizer(self):
    cfg = util.tiny_config(optimizer="rmsprop")
    with self.assertRaisesRegex(ValueError, "unknown train.optimizer 'rmsprop'"):
      optim.make_optimizer(cfg.train, 0.1)


@pytest.mark.slow
class TrainTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    # A private copy of the session's trained child (tests/helpers/shared_runs.py):
    # the rerun test below writes into its workdir.
    cls.workdir, cls.cfg = shared_runs.trained_copy(cls.tmp)
    with open(os.path.join(cls.workdir, "metrics.json")) as f:
      cls.metrics = json.load(f)

  def test_outputs(self):
    m = self.metrics
    for key in ("test_accuracy", "test_loss", "flops", "params", "epochs", "wall_time_s",
                "train_wall_time_s", "steps"):
      self.assertIn(key, m)
    self.assertGreater(m["test_accuracy"], 0.5)  # 10 classes: chance is 0.1
    self.assertEqual(m["epochs"], shared_runs.TRAIN_EPOCHS)
    self.assertEqual(m["steps"], shared_runs.TRAIN_EPOCHS * m["steps_per_epoch"])
    self.assertEqual(m["test_examples"], 360)
    arch = archfile.load(os.path.join(self.workdir, "arch.json"))
    self.assertEqual(m["flops"]["full"], arch["flops"]["full"])
    self.assertEqual(m["params"], arch["params"])
    with open(os.path.join(self.workdir, "config.json")) as f:
      self.assertEqual(json.load(f)["train"]["epochs"], shared_runs.TRAIN_EPOCHS)
    self.assertNotEmpty(os.listdir(os.path.join(self.workdir, "tb")))
    latest = tf.train.latest_checkpoint(os.path.join(self.workdir, "ckpt"))
    self.assertIsNotNone(latest)
    # One replica: the input iterator is part of the checkpoint.
    self.assertIn("data/.ATTRIBUTES/ITERATOR_STATE",
                  tf.train.load_checkpoint(latest).get_variable_to_shape_map())

  def test_evaluate_traces_once_with_a_smaller_last_batch(self):
    arch = archfile.load(os.path.join(self.workdir, "arch.json"))
    task = trainer.RetrainTask(self.cfg, arch, tf.distribute.get_strategy(), 1)
    self.assertNotEqual(360 % task.batch, 0)  # the test split's last batch is smaller
    self.assertEqual(task.evaluate()["test_examples"], 360)
    self.assertEqual(task.eval_traces, 1)

  def test_metrics_log(self):
    recs = runner_lib.read_metrics(self.workdir)
    spe = self.metrics["steps_per_epoch"]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    self.assertEqual([r["step"] for r in epochs],
                     [k * spe for k in range(1, shared_runs.TRAIN_EPOCHS + 1)])
    self.assertEqual(epochs[-1]["loss"], self.metrics["train_loss_last_epoch"])
    self.assertEqual(epochs[-1]["accuracy"], self.metrics["train_accuracy_last_epoch"])
    train = [r for r in recs if r["kind"] == "train"]
    self.assertEqual(sorted(r["step"] for r in train), [r["step"] for r in train])
    self.assertEqual(train[-1]["step"], self.metrics["steps"])
    for r in train:
      self.assertEqual(set(r), {"kind", "step", "loss", "accuracy", "lr"})
      self.assertBetween(r["accuracy"], 0.0, 1.0)
    test = [r for r in recs if r["kind"] == "test"]
    self.assertLen(test, 1)
    self.assertEqual(test[0]["accuracy"], self.metrics["test_accuracy"])
    # TensorBoard: the scalars and the HParams record with the arch's widths.
    tags, hparams = set(), b""
    for name in tf.io.gfile.glob(os.path.join(self.workdir, "tb", "events.*")):
      for event in tf.compat.v1.train.summary_iterator(name):
        for value in event.summary.value:
          tags.add(value.tag)
          if value.tag == "_hparams_/session_start_info":
            hparams += value.metadata.plugin_data.content
    self.assertContainsSubset({"train/loss", "train/accuracy", "train/lr", "epoch/loss",
                               "test/accuracy"}, tags)
    self.assertIn(b"arch.widths", hparams)
    self.assertIn(b"train.weight_decay", hparams)

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
    ckpt_dir = os.path.join(self.workdir, "ckpt")
    before = tf.train.latest_checkpoint(ckpt_dir)
    m = trainer.train(self.cfg, os.path.join(self.workdir, "arch.json"), self.workdir,
                      progress=False)
    self.assertEqual(m["resumed_from"], before)
    self.assertEqual(m["steps"], self.metrics["steps"])
    self.assertAlmostEqual(m["test_accuracy"], self.metrics["test_accuracy"], places=6)
    self.assertEqual(m["train_loss_last_epoch"], self.metrics["train_loss_last_epoch"])
    # The re-evaluation is recorded once.
    self.assertLen([r for r in runner_lib.read_metrics(self.workdir) if r["kind"] == "test"], 1)

  def test_other_arch_in_workdir_refused(self):
    path = os.path.join(self.tmp, "other.json")
    util.write_arch(self.cfg, path, index=0)
    with self.assertRaisesRegex(trainer.TrainError, "another architecture"):
      trainer.train(self.cfg, path, self.workdir, progress=False)

  def test_checkpoint_of_other_arch_refused(self):
    # Same arch.json as the run, but checkpoints from another architecture: a
    # copy of the trained workdir (no training of its own) without its
    # arch.json, given a narrower architecture.
    workdir = os.path.join(self.tmp, "mismatch")
    shutil.copytree(self.workdir, workdir)
    os.remove(os.path.join(workdir, "arch.json"))
    path = os.path.join(self.tmp, "small.json")
    util.write_arch(self.cfg, path, index=0)
    with self.assertRaisesRegex(trainer.TrainError, "does not match the architecture"):
      trainer.train(self.cfg, path, workdir, progress=False)

  def test_other_config_in_workdir_refused(self):
    cfg = util.tiny_config(epochs=shared_runs.TRAIN_EPOCHS, lr=0.2)
    with self.assertRaisesRegex(workdir_lib.WorkdirMismatchError,
                                r"train.lr: saved=0.1 now=0.2"):
      trainer.train(cfg, os.path.join(self.workdir, "arch.json"), self.workdir, progress=False)

  def test_arch_for_other_data_refused(self):
    t = supernet_lib.topo.build_topology("resnet20", (32, 32, 3), 10, candidates=(4, 8))
    path = os.path.join(self.tmp, "cifar.json")
    archfile.save(archfile.make(t, t.space.widths(t.space.smallest())), path)
    with self.assertRaisesRegex(trainer.TrainError, "input_shape"):
      trainer.train(self.cfg, path, os.path.join(self.tmp, "x"), progress=False)


@pytest.mark.slow
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
    workdir = os.path.join(self.tmp, "ft")
    m = trainer.train(cfg, arch_path, workdir, progress=False)
    self.assertEqual(m["init"], "supernet")
    self.assertEqual(m["supernet_workdir"], self.search_dir)
    # init_fn ran before the first save: step 0's checkpoint holds the supernet's weights.
    arch = archfile.load(arch_path)
    want = dense.build_from_arch(arch)
    supernet_init.init_from_supernet(want, arch, self.search_dir)
    got = dense.build_from_arch(arch)
    tf.train.Checkpoint(model=got).restore(
        os.path.join(workdir, "ckpt", "ckpt-0")).expect_partial().assert_existing_objects_matched()
    for x, y in zip(want.get_weights(), got.get_weights()):
      np.testing.assert_array_equal(x, y)

  def test_search_workdir_on_any_filesystem(self):
    # TensorFlow's in-memory filesystem: the search workdir is read through tf.io.gfile.
    ram = "ram://supernet_init_test/search"
    tf.io.gfile.makedirs(ram)
    with tf.io.gfile.GFile(os.path.join(ram, "config.json"), "w") as f:
      f.write(trainer.config_to_json(self.cfg))
    tf.train.Checkpoint(net=self.net).save(os.path.join(ram, "ckpt", "ckpt"))
    arch = util.write_arch(self.cfg, os.path.join(self.tmp, "ram.json"), index=1, last=2)
    model = dense.build_from_arch(arch)
    info = supernet_init.init_from_supernet(model, arch, ram)
    local = dense.build_from_arch(arch)
    supernet_init.init_from_supernet(local, arch, self.search_dir)
    self.assertEqual(info["supernet_workdir"], ram)
    for x, y in zip(model.get_weights(), local.get_weights()):
      np.testing.assert_array_equal(x, y)

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
    with self.assertRaisesRegex(supernet_init.SupernetInitError, "no checkpoint in .*empty/ckpt"):
      supernet_init.load_supernet(empty)
    # Only the documented layout is read: an old 'checkpoints/' directory is not guessed.
    tf.train.Checkpoint(net=self.net).save(os.path.join(empty, "checkpoints", "ckpt"))
    with self.assertRaisesRegex(supernet_init.SupernetInitError, "no checkpoint"):
      supernet_init.load_supernet(empty)
    # A checkpoint in ckpt/ without the supernet.
    tf.train.Checkpoint(model=tf.Variable(1.0)).save(os.path.join(empty, "ckpt", "ckpt"))
    with self.assertRaisesRegex(supernet_init.SupernetInitError,
                                r"holds no supernet \(no 'net' entry; found \[.*'model'"):
      supernet_init.load_supernet(empty)


if __name__ == "__main__":
  absltest.main()
