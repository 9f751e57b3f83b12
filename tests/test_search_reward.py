"""In-graph cost tables vs aps_tf.flops.count, the reward, the budget check, beam search."""

import itertools

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from aps_tf import config_check
from aps_tf import flops
from aps_tf.policy import Policy
from aps_tf.models import topology as topo
from aps_tf.search import beam
from aps_tf.search import reward
from aps_tf.configs import base as configs_base


def _topology(name):
  if name == "resnet20":
    return topo.build_topology("resnet20", (16, 16, 1), 10, candidates=(4, 8, 16, 32))
  return topo.build_topology(name, (32, 32, 3), 10)


class CostTest(parameterized.TestCase):

  @parameterized.product(model=["resnet20", "mobilenet_v2"],
                         kind_conv=[("flops", "search"), ("flops", "full"), ("params", "full")])
  def test_tables_equal_flops_count(self, model, kind_conv):
    t = _topology(model)
    kind, conv = kind_conv
    cm = reward.CostModel(t, kind, conv)
    rng = np.random.default_rng(0)
    archs = [t.space.sample_uniform(rng) for _ in range(15)] + [t.space.smallest(),
                                                                t.space.largest()]
    got = cm.tf_cost(tf.constant(archs, tf.int32)).numpy()
    for a, g in zip(archs, got):
      ref = flops.count(t, t.space.widths(a), conv)["params" if kind == "params" else "flops"]
      self.assertEqual(int(g), ref)
      self.assertEqual(cm.cost(a), ref)

  def test_reward_formula(self):
    r = lambda acc, f: float(reward.reward(acc, f, 100.0, 0.0, -0.1))
    self.assertAlmostEqual(r(0.8, 50.0), 0.8, places=6)  # under budget: alpha = 0
    self.assertAlmostEqual(r(0.8, 200.0), 0.8 * 2.0**-0.1, places=6)
    self.assertAlmostEqual(float(reward.reward(0.5, 50.0, 100.0, 0.2, -0.1)), 0.5 * 0.5**0.2,
                           places=6)

  def test_budget_below_minimum(self):
    t = _topology("resnet20")
    cm = reward.CostModel(t, "flops", "search")
    low = cm.minimum()
    reward.check_budget(cm, low)  # exactly the minimum is allowed
    with self.assertRaisesRegex(reward.BudgetError, f"target=1000.*{low}"):
      reward.check_budget(cm, 1000.0)


class BeamTest(parameterized.TestCase):

  def test_beam_finds_top_n_exhaustively(self):
    counts = (3, 2, 3, 3)
    c = Policy(counts, hidden=8, seed=3)
    # Sharpen the policy so likelihoods differ clearly.
    c.head_kernel.assign(c.head_kernel * 30.0)
    grid = np.array(list(itertools.product(*[range(n) for n in counts])), np.int32)
    lp = c.log_prob(grid)[0].numpy()
    order = np.argsort(-lp)[:5]
    beams = beam.beam_search(c, width=len(grid), top_n=5)  # width covers every prefix
    self.assertEqual([b.arch for b in beams], grid[order].tolist())
    np.testing.assert_allclose([b.log_prob for b in beams], lp[order], rtol=1e-4, atol=1e-4)
    narrow = beam.beam_search(c, width=5, top_n=5)
    self.assertEqual(len({tuple(b.arch) for b in narrow}), 5)
    self.assertTrue(all(np.diff([b.log_prob for b in narrow]) <= 1e-9))

  def test_pick_closest_to_target(self):
    rows = [{"cost": 90, "log_prob": -1.0}, {"cost": 120, "log_prob": -0.5},
            {"cost": 104, "log_prob": -3.0}]
    self.assertEqual(beam.pick(rows, 100, "closest_to_target")["cost"], 104)
    # Without re-scored accuracies the default rule is the paper's.
    self.assertEqual(beam.pick(rows, 100)["cost"], 104)

  # The case a latency-budget search met: a beam the supernet re-scores at
  # 0.07 is 0.3% closer to the target than one at 0.99. Costs in each kind's
  # units (FLOPs, params, milliseconds).
  @parameterized.named_parameters(("flops", 41e6), ("params", 2.7e5), ("latency", 0.118))
  def test_default_pick_refuses_a_broken_beam(self, target):
    broken = {"cost": target * 1.065, "log_prob": -2.0, "reward_accuracy": 0.07,
              "reward_accuracy_se": 0.02, "reward": 0.07}
    good = {"cost": target * 1.068, "log_prob": -1.0, "reward_accuracy": 0.99,
            "reward_accuracy_se": 0.01, "reward": 0.99}
    far = {"cost": target * 1.30, "log_prob": -3.0, "reward_accuracy": 0.985,
           "reward_accuracy_se": 0.01, "reward": 0.96}
    rows = [broken, far, good]
    self.assertIs(beam.pick(rows, target, "closest_to_target"), broken)  # the paper's rule
    self.assertIs(beam.pick(rows, target), good)
    default = configs_base.get_config().search
    self.assertIs(beam.pick(rows, target, default.pick, default.pick_accuracy_fraction,
                            default.pick_accuracy_se), good)

  def test_accurate_rows_fraction_and_noise_band(self):
    rows = [{"cost": 1, "log_prob": 0.0, "reward_accuracy": a, "reward_accuracy_se": se}
            for a, se in [(0.90, 0.01), (0.885, 0.001), (0.85, 0.001), (0.80, 0.05)]]
    kept = lambda f, z: [r["reward_accuracy"] for r in beam.accurate_rows(rows, f, z)]
    self.assertEqual(kept(0.98, 0.0), [0.90, 0.885])  # 0.882 <= 0.885
    self.assertEqual(kept(1.0, 0.0), [0.90])
    self.assertEqual(kept(1.0, 2.0), [0.90, 0.885, 0.80])  # 0.10 <= 2 * hypot(.01, .05)
    # A non-finite standard error (one batch) is no band.
    one = [dict(r, reward_accuracy_se=float("nan")) for r in rows]
    self.assertEqual([r["reward_accuracy"] for r in beam.accurate_rows(one, 1.0, 2.0)], [0.90])

  def test_rules_match_config_check(self):
    self.assertEqual(config_check.PICK_RULES, beam.RULES)
    self.assertEqual(configs_base.get_config().search.pick, beam.RULES[0])
    with self.assertRaisesRegex(ValueError, "closest_accurate"):
      beam.pick([{"cost": 1, "log_prob": 0.0}], 1, "nearest")


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
