"""The reward-BN / pick experiment's arithmetic (the runs themselves are measurements)."""

import numpy as np
from absl.testing import parameterized

from aps_tf.experiments import reward_and_pick as rp


class KendallTauTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("identical", [1, 2, 3, 4], [10, 20, 30, 40], 1.0),
      ("reversed", [1, 2, 3, 4], [4, 3, 2, 1], -1.0),
      ("mixed", [1, 2, 3, 4, 5], [3, 4, 1, 2, 5], 0.2),  # scipy.stats.kendalltau
      ("ties_tau_b", [1, 1, 2, 3], [1, 2, 2, 3], 0.8),  # scipy.stats.kendalltau
  )
  def test_values(self, x, y, expected):
    self.assertAlmostEqual(rp.kendall_tau(x, y), expected, places=9)

  def test_constant_is_nan_and_bad_shapes_raise(self):
    self.assertTrue(np.isnan(rp.kendall_tau([1, 1, 1], [1, 2, 3])))
    with self.assertRaises(ValueError):
      rp.kendall_tau([1, 2], [1, 2, 3])

  def test_markdown_lists_every_row(self):
    results = {"pick": {"bn": "batch", "seeds": [0], "target": 5e6, "rows": [
        {"seed": 0, "rule": r, "index": i, "cost": 4e6, "reward": 0.9, "reward_se": 0.01,
         "test_accuracy": 0.95} for i, r in enumerate(("best_reward", "closest_to_target"))],
        "means": {"best_reward": {"mean_test_accuracy": 0.95, "n": 1}}}}
    table = rp.markdown(results)
    self.assertIn("| 0 | closest_to_target | 1 |", table)
    self.assertIn("| mean | best_reward | | | | 0.9500 |", table)


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
