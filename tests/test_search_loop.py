"""Searcher: one trace for all archs, warm-up freezing, REINFORCE/baseline, Phi, resume."""

import json
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from aps_tf import archfile
from aps_tf.search import probes
from aps_tf.search import task as task_lib
from aps_tf.search import run
from tests.search_configs import tiny_config


def _values(vs):
  return [np.array(v.numpy()) for v in vs]


class SearcherTest(parameterized.TestCase):

  @parameterized.parameters("ordinal", "independent", "transitional")
  @pytest.mark.slow
  def test_iteration_semantics(self, sharing):
    sr = task_lib.SearchTask.from_config(tiny_config(sharing))
    it = iter(sr.dataset("train", 0))
    rit = iter(sr.dataset("reward", 0))
    proj = _values(v for v, _ in sr.net.projection_variables())
    ctrl = _values(sr.policy.trainable_variables)
    rng = np.random.default_rng(0)
    batch = next(it)
    kernels = _values(sr.net.trainable_variables)
    for i in range(6):  # six different architectures through one trace
      sr.supernet_step(tf.constant([sr.space.sample_uniform(rng)], tf.int32), batch)
    self.assertEqual(sr.train_traces, 1)
    self.assertTrue(any(not np.allclose(a, b.numpy())
                        for a, b in zip(kernels, sr.net.trainable_variables)))
    # Warm-up steps never touch the controller or P/Q.
    for a, b in zip(ctrl, sr.policy.trainable_variables):
      np.testing.assert_array_equal(a, b.numpy())
    # Controller steps: REINFORCE update, baseline = first reward then EMA.
    rewards = []
    for i in range(3):
      out = sr.reward_step(tf.constant(sr.policy_arch(i)), next(rit))
      rewards.append(float(out["reward"]))
      self.assertBetween(float(out["reward_accuracy"]), 0.0, 1.0)
    self.assertEqual(sr.reward_traces, 1)
    expected = rewards[0]
    for r in rewards:
      expected = 0.99 * expected + 0.01 * r
    self.assertAlmostEqual(float(sr.baseline.numpy()), expected, places=5)
    self.assertEqual(int(sr.ctrl_steps.numpy()), 3)
    self.assertTrue(any(not np.allclose(a, b.numpy())
                        for a, b in zip(ctrl, sr.policy.trainable_variables)))
    phi0 = float(sr.net.phi().numpy())
    if sharing == "transitional":
      for _ in range(3):
        sr.phi_step()
      self.assertLess(float(sr.net.phi().numpy()), phi0)
      for v, mask in sr.net.projection_variables():  # unit-norm columns kept
        norms = np.linalg.norm(v.numpy(), axis=1)
        np.testing.assert_allclose(norms[mask.numpy() > 0], 1.0, atol=1e-5)
    for a, (v, _) in zip(proj, sr.net.projection_variables()):
      if sharing != "transitional":
        np.testing.assert_array_equal(a, v.numpy())
    probe = probes.probe(sr, 10, *batch)
    # Eq. 3 recomputed here: per APS layer the cosine of the two archs' kernel
    # gradients (inference-mode BN, mean cross-entropy), averaged over layers.
    images, labels = batch
    kernels = [layer.kernel for layer in sr.net.aps_layers]
    grads = []
    for arch in probe["probe_archs"]:
      with tf.GradientTape() as tape:
        logits = sr.net(images, tf.constant(arch, tf.int32), training=False)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            tf.cast(labels, tf.int32), logits))
      grads.append([None if g is None else g.numpy().ravel()
                    for g in tape.gradient(loss, kernels)])
    # Layers off either arch's path (no gradient, or a zero one) have no cosine.
    cosines = [x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) for x, y in zip(*grads)
               if x is not None and y is not None and np.linalg.norm(x) > 0
               and np.linalg.norm(y) > 0]
    self.assertNotEmpty(cosines)
    self.assertAlmostEqual(probe["grad_cosine"], float(np.mean(cosines)), places=4)
    self.assertNotEqual(probe["probe_archs"][0], probe["probe_archs"][1])
    if sharing == "independent":
      self.assertEqual(probe["coupled_grad_norm"], 0.0)
    elif sharing == "ordinal":
      self.assertGreater(probe["coupled_grad_norm"], 0.0)

  @pytest.mark.slow
  def test_resume_equals_uninterrupted(self):
    # One reference run, one run stopped inside a loop, one fresh resume of it
    # with other bookkeeping (steps_per_loop and the log/checkpoint intervals
    # may change on a rerun): the end state equals the reference's.
    cfg = tiny_config("transitional", steps_per_loop=4, log_every_steps=4,
                      checkpoint_every_steps=3, analysis_every_steps=9)
    d1, d2 = tempfile.mkdtemp(), tempfile.mkdtemp()
    a = run.SearchRun(cfg, d1, progress=False)
    out = a.train()
    sr = a.searcher
    # One trace for every architecture and phase: 9 iterations (3 warm-up, 6
    # search) in loops of lengths 3, 1, 4, 1 (cut by the log and checkpoint
    # intervals), every iteration a different architecture.
    self.assertEqual(int(sr.step.numpy()), 9)
    self.assertEqual((a.runner.loop_traces, sr.train_traces, sr.reward_traces), (1, 1, 1))
    archs = {tuple(sr.train_archs(k)[0]) for k in range(9)}
    self.assertGreaterEqual(len(archs), 8)  # really different architectures
    self.assertEqual(int(sr.ctrl_steps.numpy()), 9 - sr.warmup_steps)
    for k in ("loss", "reward", "phi"):
      self.assertIn(k, out)
    b = run.SearchRun(cfg, d2, progress=False)
    b.train(stop_at=5)  # mid-epoch, after warm-up, inside the loop of steps 5..8
    self.assertEqual(int(b.searcher.step.numpy()), 5)
    resume_cfg = tiny_config("transitional", steps_per_loop=1, log_every_steps=1,
                             checkpoint_every_steps=2, analysis_every_steps=9)
    c = run.SearchRun(resume_cfg, d2, progress=False)  # fresh objects, restored from disk
    self.assertEqual(c.restore(), 5)
    c.train()
    self.assertEqual(c.runner.loop_traces, 1)
    for x, y in zip(a.searcher.checkpoint_variables(), c.searcher.checkpoint_variables()):
      np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.name)
    self.assertEqual(float(a.searcher.baseline.numpy()), float(c.searcher.baseline.numpy()))
    # One history: every log_every steps and at the end, at the stop, then
    # every step after the resume (its log_every is 1).
    def train_steps(d):
      return [json.loads(l)["step"] for l in open(os.path.join(d, "metrics.jsonl"))
              if json.loads(l)["kind"] == "train"]
    self.assertEqual(train_steps(d1), [4, 8, 9])
    self.assertEqual(train_steps(d2), [4, 5, 6, 7, 8, 9])
    analysis = [json.loads(l) for l in open(os.path.join(d2, "metrics.jsonl"))
                if json.loads(l)["kind"] == "analysis"]
    self.assertEqual([r["step"] for r in analysis], [9])  # analysis_every_steps=9
    self.assertLen(analysis[0]["probabilities"], sr.space.num_decisions)
    arch = c.pick()
    c.finish()
    loaded = archfile.load(os.path.join(d2, "arch.json"))
    self.assertEqual(loaded["widths"], arch["widths"])
    self.assertEqual(loaded["provenance"]["sharing"], "transitional")
    top = json.load(open(os.path.join(d2, "top_archs.json")))
    self.assertLen(top["architectures"], 2)
    for name in ("training.png", "phi.png", "gradients.png", "decision_probabilities.png"):
      self.assertTrue(os.path.getsize(os.path.join(d2, "plots", name)) > 1000, name)

  @pytest.mark.slow
  def test_accelerator_paths_run_the_loop_xla_static(self):
    self._check_loop({"search.static_shapes": True, "search.jit_compile": True})

  # The mixed-precision search step itself: tests/test_supernet.py
  # (AcceleratorPathTest.test_mixed_precision_step), in the suite.
  @pytest.mark.sweep
  def test_accelerator_paths_run_the_loop_mixed_bfloat16(self):
    self._check_loop({"mixed_precision": "mixed_bfloat16"})

  def _check_loop(self, overrides):
    cfg = tiny_config("transitional", steps_per_loop=9, log_every_steps=9,
                      checkpoint_every_steps=9)
    for key, value in overrides.items():
      section, _, field = key.rpartition(".")
      (cfg[section] if section else cfg)[field] = value
    r = run.SearchRun(cfg, tempfile.mkdtemp(), progress=False)
    before = [v.numpy() for v in r.searcher.net.trainable_variables]
    out = r.train()
    sr = r.searcher
    self.assertEqual((int(sr.step.numpy()), r.runner.loop_traces), (9, 1))
    self.assertTrue(np.isfinite(out["loss"]) and np.isfinite(out["ctrl_loss"]), out)
    self.assertEqual({v.dtype for v in sr.net.variables}, {"float32"})  # stored in float32
    self.assertTrue(any(not np.array_equal(b, v.numpy())
                        for b, v in zip(before, sr.net.trainable_variables)))
    # analysis_every_steps=0: no probes, not even at the end.
    with open(os.path.join(r.workdir, "metrics.jsonl")) as f:
      self.assertNotIn('"kind": "analysis"', f.read())
    if "mixed_precision" in overrides:  # the convolutions ran in the compute dtype
      self.assertNotEqual(sr.net.layers[0].compute_dtype, "float32")

  @pytest.mark.slow
  def test_static_shapes_path_matches_dynamic(self):
    # The XLA/TPU path (max width, masked) must compute the same step.
    out = []
    for static in (False, True):
      cfg = tiny_config("transitional")
      cfg.search.static_shapes = static
      sr = task_lib.SearchTask.from_config(cfg)
      batch = next(iter(sr.dataset("train", 0)))
      losses = [float(sr.supernet_step(tf.constant([a], tf.int32), batch)["loss"])
                for a in ([2, 0, 1, 2, 1, 0, 2], [0, 1, 2, 0, 0, 1, 1])]
      r = sr.reward_step(tf.constant([1, 2, 0, 1, 1, 0, 2], tf.int32), batch)
      self.assertEqual(sr.train_traces, 1)
      out.append(losses + [float(r["reward_accuracy"])])
    np.testing.assert_allclose(out[0], out[1], rtol=1e-4, atol=1e-5)

  def test_workdir_of_other_config(self):
    d = tempfile.mkdtemp()
    run.check_workdir(tiny_config("ordinal"), d)
    with self.assertRaisesRegex(run.WorkdirMismatchError, "search.sharing: saved='ordinal'"):
      run.check_workdir(tiny_config("independent"), d)
    other = tiny_config("ordinal")
    other.search.log_every_steps = 7  # bookkeeping fields may change
    run.check_workdir(other, d)


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
