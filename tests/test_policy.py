"""Policy: sampling, masking, log-prob, entropy, budget feature, tracing, checkpoint.

The REINFORCE update itself is tested through `reward_step` in test_search_dynamics.py.
"""

import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from aps_tf.policy import Policy

COUNTS = (2, 3, 5, 4)


def _cost(arch):  # toy in-graph cost: sum of (index + 1) * 10
  return tf.reduce_sum(tf.cast(arch + 1, tf.float64) * 10.0, axis=1)


class ControllerTest(parameterized.TestCase):

  def test_sample_valid_and_traced_once(self):
    c = Policy(COUNTS, hidden=16, seed=1)
    archs = []
    for i in range(20):
      a, logp, ent = c.sample(seed=[i, 7], n=8)
      archs.append(a.numpy())
      self.assertEqual(a.shape, (8, len(COUNTS)))
      self.assertTrue(np.all(logp.numpy() < 0))
      self.assertTrue(np.all(ent.numpy() > 0))
      self.assertTrue(np.all(ent.numpy() <= sum(np.log(COUNTS)) + 1e-4))
    archs = np.concatenate(archs)
    for t, n in enumerate(COUNTS):
      self.assertEqual(archs[:, t].min(), 0)
      self.assertEqual(archs[:, t].max(), n - 1)  # every valid index reachable, none beyond
    c.sample()  # generator path: same trace
    self.assertEqual(c.sample_traces, 1)

  def test_log_prob_matches_sample_and_normalises(self):
    c = Policy(COUNTS, hidden=16, seed=2, cost_fn=_cost, target=100.0)
    a, logp, ent = c.sample(seed=[3, 4], n=5)
    lp2, ent2 = c.log_prob(a)
    np.testing.assert_allclose(lp2.numpy(), logp.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent2.numpy(), ent.numpy(), rtol=1e-5, atol=1e-5)
    # Probabilities over every architecture sum to one (masking is exact).
    grid = np.array(np.meshgrid(*[range(n) for n in COUNTS], indexing="ij")).reshape(
        len(COUNTS), -1).T
    total = np.exp(c.log_prob(grid)[0].numpy().astype(np.float64)).sum()
    self.assertAlmostEqual(total, 1.0, places=4)
    self.assertEqual(c.log_prob_traces, 1)

  def test_init_range_and_gradients(self):
    c = Policy(COUNTS, hidden=16, seed=0)
    for v in c.trainable_variables:
      self.assertLessEqual(float(np.abs(v.numpy()).max()), 0.1 + 1e-7, v.name)
    with tf.GradientTape() as tape:
      lp, _ = c.log_prob_graph(tf.constant([[1, 2, 4, 3]]))
    grads = tape.gradient(lp, c.trainable_variables)
    self.assertTrue(all(g is not None for g in grads))
    self.assertEqual(len(c.trainable_variables), 9)  # embedding, 2x3 LSTM, head W, b

  def test_budget_left_definition(self):
    c = Policy(COUNTS, hidden=8, cost_fn=_cost, target=100.0)
    arch = tf.constant([[1, 2, 4, 3]])
    # before decision 2: decided [1, 2], undecided at 0 -> cost 10*(2+3+1+1) = 70
    self.assertAlmostEqual(float(c.budget_left(arch, 2)[0]), 0.3, places=5)
    self.assertAlmostEqual(float(c.budget_left(arch, 0)[0]), 0.6, places=5)
    self.assertEqual(float(c.budget_left(tf.constant([[1, 2, 4, 3]]) * 9, 4)[0]), 0.0)  # clipped

  def test_checkpoint_roundtrip(self):
    tmp = tempfile.mkdtemp()
    c1 = Policy(COUNTS, hidden=16, seed=5)
    c1.generator.skip(3)
    path = tf.train.Checkpoint(c=c1).save(tmp + "/ck")
    c2 = Policy(COUNTS, hidden=16, seed=99)
    a = c2.sample(seed=[1, 1], n=4)[1].numpy()
    tf.train.Checkpoint(c=c2).restore(path).assert_existing_objects_matched()
    np.testing.assert_allclose(c2.sample(seed=[1, 1], n=4)[1].numpy(),
                               c1.sample(seed=[1, 1], n=4)[1].numpy(), rtol=1e-6)
    self.assertFalse(np.allclose(a, c1.sample(seed=[1, 1], n=4)[1].numpy()))
    np.testing.assert_array_equal(c2.sample()[0].numpy(), c1.sample()[0].numpy())  # generator state


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
