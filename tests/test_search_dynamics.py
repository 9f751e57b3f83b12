"""Search dynamics: REINFORCE through reward_step, entropy, coupled L2, the reward
formula, the reward split, reward BN modes, warm-up freezing and the pick rules
(with the anneal warning and the release options in the same tiny search)."""

import json
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from aps_tf import archfile
from aps_tf import layers as aps_layers
from aps_tf import config_check
from aps_tf import runner
from aps_tf.search import beam as beam_lib
from aps_tf.search import task as task_lib
from aps_tf.search import run
from tests.search_configs import tiny_config


def _values(vs):
  return [np.array(v.numpy()) for v in vs]


def _bn_stats(sr):
  return [v for l in sr.net._flatten_layers()  # pylint: disable=protected-access
          if isinstance(l, aps_layers.PerCandidateBatchNorm)
          for v in (l.moving_mean, l.moving_variance)]


# One config for every controller test: reward BN 'moving' (the accuracy of a
# reward step is then one inference forward) and both reward exponents set.
# The target (tiny_config: 3e5) lies between the smallest and the largest
# architecture's cost, so both sides of the formula are reached.
ALPHA, BETA = 0.07, -0.5


def _controller_searcher(entropy_weight=0.0, weight_decay=0.0):
  cfg = tiny_config("ordinal", batch_size=64)
  cfg.search.reward.alpha, cfg.search.reward.beta = ALPHA, BETA
  cfg.search.reward.bn = "moving"
  cfg.search.controller.entropy_weight = entropy_weight
  cfg.search.controller.weight_decay = weight_decay
  return task_lib.SearchTask.from_config(cfg)


def _controller_state(sr):
  return (list(sr.policy.trainable_variables) + list(sr.ctrl_opt.variables)
          + [sr.baseline, sr.ctrl_steps, sr.policy.generator.state])


@pytest.mark.slow  # every task traces its reward step (seconds each)
class ReinforceTest(parameterized.TestCase):
  """The controller update of `reward_step`, one term at a time.

  A task per (entropy weight, weight decay) is built, and its reward step
  traced, once for the class; every test starts from that task's initial
  controller state (policy, optimiser moments, baseline, step count, sampler),
  restored in `_task`, as if the task were new.
  """

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tasks = {}

  def _task(self, entropy_weight=0.0, weight_decay=0.0):
    key = (entropy_weight, weight_decay)
    if key not in self._tasks:
      sr = _controller_searcher(entropy_weight, weight_decay)
      self.assertTrue(sr.ctrl_opt.built)  # its moments exist before the first step
      self._tasks[key] = (sr, _values(_controller_state(sr)))
    sr, state = self._tasks[key]
    for v, value in zip(_controller_state(sr), state):
      v.assign(value)
    return sr

  @parameterized.named_parameters(("positive", 1.0), ("negative", -1.0))
  def test_advantage_sign_moves_sampled_probability(self, sign):
    sr = self._task()
    arch = sr.policy_arch(0)
    batch = next(iter(sr.dataset("reward", 0)))
    # R is in [0, 1]: a baseline below 0 makes the advantage positive, above 1 negative.
    sr.ctrl_steps.assign(1)
    sr.baseline.assign(-1.0 if sign > 0 else 2.0)
    before = float(sr.policy.log_prob(arch)[0][0])
    out = sr.reward_step(tf.constant(arch), batch)
    self.assertEqual(np.sign(float(out["advantage"])), sign)
    after = float(sr.policy.log_prob(arch)[0][0])
    if sign > 0:
      self.assertGreater(after, before + 1e-4)
    else:
      self.assertLess(after, before - 1e-4)

  def test_zero_advantage_no_bonus_no_decay_leaves_controller(self):
    sr = self._task()
    before = _values(sr.policy.trainable_variables)
    out = sr.reward_step(tf.constant(sr.policy_arch(0)),
                         next(iter(sr.dataset("reward", 0))))
    self.assertEqual(float(out["advantage"]), 0.0)  # first step: baseline = reward
    for a, b in zip(before, sr.policy.trainable_variables):
      np.testing.assert_array_equal(a, b.numpy())

  def test_entropy_bonus_raises_entropy(self):
    sr = self._task(entropy_weight=0.1)
    arch = sr.policy_arch(0)
    before = float(sr.policy.log_prob(arch)[1][0])
    out = sr.reward_step(tf.constant(arch), next(iter(sr.dataset("reward", 0))))
    self.assertEqual(float(out["advantage"]), 0.0)
    self.assertGreater(float(sr.policy.log_prob(arch)[1][0]), before + 1e-5)

  def test_coupled_weight_decay(self):
    # Coupled L2: wd * w enters the gradient before Adam, so Adam's first step
    # moves every weight by about lr towards 0 (decoupled decay would move it
    # by lr * wd * |w|, a thousand times less).
    sr = self._task(weight_decay=1e-3)
    lr = float(sr.cfg.search.controller.lr)
    before = _values(sr.policy.trainable_variables)
    sr.reward_step(tf.constant(sr.policy_arch(0)), next(iter(sr.dataset("reward", 0))))
    for old, v in zip(before, sr.policy.trainable_variables):
      new = v.numpy()
      big = np.abs(old) > 0.05  # Adam's epsilon is negligible against wd * |w|
      self.assertTrue(big.any(), v.name)
      np.testing.assert_array_equal(np.sign(new - old)[big], -np.sign(old)[big], v.name)
      np.testing.assert_allclose(np.abs(new - old)[big], lr, rtol=0.1, err_msg=v.name)

  @parameterized.named_parameters(("below_target", "smallest"), ("above_target", "largest"))
  def test_reward_formula(self, which):
    sr = self._task()
    arch = np.array(getattr(sr.space, which)(), np.int32)
    cost = sr.cost_model.reference_cost(arch)  # the independent counter
    target = float(sr.cfg.search.reward.target)
    self.assertEqual(cost <= target, which == "smallest")
    images, labels = next(iter(sr.dataset("reward", 0)))
    logits = sr.net(images, tf.constant(arch), training=False)
    acc = float(np.mean(np.argmax(logits.numpy(), -1) == labels.numpy()))
    self.assertGreater(acc, 0.0)  # else the reward is 0 whatever the exponent
    out = sr.reward_step(tf.constant(arch), (images, labels))
    exponent = ALPHA if cost <= target else BETA
    self.assertEqual(float(out["cost"]), cost)
    self.assertAlmostEqual(float(out["reward_accuracy"]), acc, places=6)
    self.assertAlmostEqual(float(out["reward"]), acc * (cost / target) ** exponent, places=5)


class RewardBatchNormTest(parameterized.TestCase):

  @parameterized.parameters("batch", "moving")
  @pytest.mark.slow  # traces a supernet step and a reward step
  def test_reward_step_leaves_moving_statistics(self, mode):
    cfg = tiny_config("transitional")
    cfg.search.reward.bn = mode
    sr = task_lib.SearchTask.from_config(cfg)
    sr.supernet_step(tf.constant([sr.space.largest()], tf.int32), next(iter(sr.dataset("train", 0))))
    stats = _bn_stats(sr)
    before = _values(stats)
    images, labels = next(iter(sr.dataset("reward", 0)))
    arch = tf.constant(sr.space.largest(), tf.int32)
    sr.reward_step(arch, (images, labels))
    sr.reward_step(arch, (images, labels))
    for a, v in zip(before, stats):
      np.testing.assert_array_equal(a, v.numpy(), err_msg=v.name)
    logits = sr.reward_logits(images, arch).numpy()
    inference = sr.net(images, arch, training=False).numpy()
    training = sr.net(images, arch, training=True).numpy()  # updates the statistics
    self.assertFalse(np.allclose(inference, training, atol=1e-3))
    np.testing.assert_allclose(logits, training if mode == "batch" else inference,
                               rtol=1e-4, atol=1e-4)
    self.assertTrue(any(not np.array_equal(a, v.numpy()) for a, v in zip(before, stats)))


class RewardSplitTest(parameterized.TestCase):

  @parameterized.parameters(True, False)
  def test_augmented_and_reshuffled(self, augment):
    cfg = tiny_config("ordinal")
    cfg.search.reward.augment = augment
    sr = task_lib.SearchTask.from_config(cfg)
    first = [next(iter(sr.dataset("reward", e))) for e in (0, 1, 0)]
    plain = next(iter(sr.dataset("reward", 0, augment=False)))
    np.testing.assert_array_equal(first[0][0].numpy(), first[2][0].numpy())  # reproducible
    same_epochs = np.array_equal(first[0][0].numpy(), first[1][0].numpy())
    same_as_plain = np.array_equal(first[0][0].numpy(), plain[0].numpy())
    self.assertEqual(same_epochs, not augment)
    self.assertEqual(same_as_plain, not augment)
    train = next(iter(sr.dataset("train", 0)))
    self.assertFalse(np.array_equal(train[1].numpy(), first[0][1].numpy()))


@pytest.mark.slow  # a whole tiny search (traces the search loop, re-scores three times)
class DriverTest(parameterized.TestCase):
  """One tiny search end to end, shared by three checks that would each need
  their own: warm-up freezing, the search phase and the pick rules; the Phi
  anneal check warning in the log and metrics (moved here from
  tests/test_anneal.py); and the authors'-release options, all on, training
  the pairwise shortcuts (moved here from tests/test_release_options.py).

  The release options (pairwise supernet shortcut, kaiming-uniform meta-init,
  shared controller) change what is trained, not the driver's phases or the
  pick; a search with the default options runs in tests/test_search_loop.py.
  search.phi_lr is tiny so that Phi falls by less than 5% and both anneal
  warnings fire; P and Q still take their (small) transition steps.
  """

  def test_warmup_frozen_search_moves_then_pick(self):
    cfg = tiny_config("transitional", rescore_batches=3, phi_lr=1e-6)
    cfg.model.supernet_shortcut = "pairwise"
    cfg.model.meta_init = "kaiming_uniform"
    cfg.search.controller.kind = "shared"
    workdir = tempfile.mkdtemp()
    with self.assertLogs(level="WARNING") as logs:
      r = run.SearchRun(cfg, workdir, progress=False)
      sr = r.searcher
      # Release options: a pair shortcut per block, decayed like the convs,
      # outside the APS layers (the gradient probes' units).
      pairs = sr.net.pair_shortcuts()
      self.assertNotEmpty(pairs)
      decayed = {id(v) for v, m in zip(sr.net.trainable_variables, sr.decay_mask) if m}
      self.assertTrue(all(id(p.kernel) in decayed for p in pairs))
      self.assertEqual(len(sr.units), len(sr.net.aps_layers))
      pairs0 = _values([p.kernel for p in pairs])

      proj = [v for v, _ in sr.net.projection_variables()]
      ctrl0, proj0 = _values(sr.policy.trainable_variables), _values(proj)
      net0 = _values(sr.net.trainable_variables)
      r.train(stop_at=sr.warmup_steps)
      self.assertEqual(int(sr.step.numpy()), sr.warmup_steps)
      for a, v in zip(ctrl0 + proj0, list(sr.policy.trainable_variables) + proj):
        np.testing.assert_array_equal(a, v.numpy(), err_msg=v.name)
      self.assertEqual(float(sr.baseline.numpy()), 0.0)
      self.assertEqual(int(sr.ctrl_steps.numpy()), 0)
      self.assertTrue(any(not np.allclose(a, v.numpy())
                          for a, v in zip(net0, sr.net.trainable_variables)))
      r.train()  # the search phase
    search_steps = sr.total_steps - sr.warmup_steps
    self.assertEqual(int(sr.ctrl_steps.numpy()), search_steps)
    self.assertNotEqual(float(sr.baseline.numpy()), 0.0)
    self.assertTrue(all(not np.allclose(a, v.numpy())
                        for a, v in zip(ctrl0, sr.policy.trainable_variables)))
    # Phi steps move P/Q in the search phase only (by little at this phi_lr).
    self.assertTrue(any(not np.array_equal(a, v.numpy()) for a, v in zip(proj0, proj)))
    self.assertTrue(any(np.abs(a - p.kernel.numpy()).max() > 0
                        for a, p in zip(pairs0, sr.net.pair_shortcuts())))

    # The anneal check: forecast before the search phase, observed at its end.
    text = "\n".join(logs.output)
    self.assertIn("predicted to fall by less than 5%", text)
    self.assertIn("fell by less than 5%", text)
    records = [m for m in runner.read_metrics(workdir) if m.get("kind") == "train"]
    search = [m for m in records if m["phase"] == "search"]
    self.assertTrue(all("phi_anneal_warning" not in m for m in records
                        if m["phase"] == "warmup"))
    first = search[0]
    self.assertIn("search.phi_lr", first["phi_anneal_warning"])
    self.assertGreater(first["phi_anneal_forecast"], 0.95)
    last = search[-1]
    self.assertEqual(last["step"], sr.total_steps)
    np.testing.assert_allclose(last["phi_anneal_observed"], first["phi_anneal_forecast"],
                               atol=1e-4)
    self.assertIn("fell by less than", last["phi_anneal_warning"])

    # The pick: every rule's choice and the re-scoring's standard error are recorded.
    for rule in config_check.PICK_RULES:
      r.cfg.search.pick = rule
      arch = r.pick()
      with open(os.path.join(workdir, "top_archs.json")) as f:
        top = json.load(f)
      rows = top["architectures"]
      self.assertEqual(top["pick"], rule)
      self.assertCountEqual(top["picked_by_rule"], config_check.PICK_RULES)
      for row in rows:
        self.assertEqual(row["rescore_batches"], 3)
        self.assertGreaterEqual(row["reward_se"], 0.0)
      best = max(range(len(rows)), key=lambda i: (rows[i]["reward"], rows[i]["log_prob"]))
      closest = min(range(len(rows)), key=lambda i: abs(rows[i]["cost"] - cfg.search.reward.target))
      self.assertEqual(top["picked_by_rule"]["best_reward"], best)
      self.assertEqual(top["picked_by_rule"]["closest_to_target"], closest)
      accurate = beam_lib.accurate_rows(rows, cfg.search.pick_accuracy_fraction,
                                        cfg.search.pick_accuracy_se)
      self.assertIn(rows[top["picked_by_rule"]["closest_accurate"]], accurate)
      self.assertEqual(top["picked"], top["picked_by_rule"][rule])
      self.assertEqual(arch["widths"], rows[top["picked"]]["widths"])
      self.assertIn(rule, archfile.load(os.path.join(workdir, "arch.json"))
                    ["provenance"]["picked_by"])


class ConfigTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("bn", {"reward.bn": "train"}, "search.reward.bn"),
      ("pick", {"pick": "random"}, "search.pick"),
      ("best_reward_needs_rescore", {"pick": "best_reward", "rescore": False}, "rescore"),
      ("pick_fraction", {"pick_accuracy_fraction": 1.5}, "search.pick_accuracy_fraction"),
      ("pick_fraction_zero", {"pick_accuracy_fraction": 0}, "search.pick_accuracy_fraction"),
      ("pick_se", {"pick_accuracy_se": -1.0}, "search.pick_accuracy_se"),
      ("negative_decay", {"controller.weight_decay": -1.0}, "weight_decay"),
  )
  def test_bad_fields(self, fields, message):
    cfg = tiny_config("ordinal")
    for key, value in fields.items():
      node = cfg.search
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
    with self.assertRaisesRegex(task_lib.ConfigError, message):
      task_lib.resolve_config(cfg)

  def test_pick_may_change_on_rerun(self):
    d = tempfile.mkdtemp()
    run.check_workdir(tiny_config("ordinal"), d)
    run.check_workdir(tiny_config("ordinal", pick="best_reward", rescore_batches=8), d)
    with self.assertRaisesRegex(run.WorkdirMismatchError, "search.reward.bn"):
      other = tiny_config("ordinal")
      other.search.reward.bn = "batch" if other.search.reward.bn == "moving" else "moving"
      run.check_workdir(other, d)


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
