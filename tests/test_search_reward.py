"""In-graph cost tables vs aps_tf.flops.count, the reward, the budget check, beam search."""

import itertools

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from aps_tf import flops
from aps_tf.policy import Policy
from aps_tf.models import topology as topo
from aps_tf.search import beam
from aps_tf.search import reward


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
    self.assertEqual(beam.pick(rows, 100)["cost"], 104)


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
