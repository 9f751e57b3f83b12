"""The transition step (aps_tf.transition): per-side rate, update rule, both objectives."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from aps_tf import layers
from aps_tf import sharing
from aps_tf import transition

OUT = (4, 8, 12)


def _conv(in_candidates, meta_in, seed=5):
  conv = layers.APSConv2D(3, in_candidates=in_candidates, out_candidates=OUT, meta_in=meta_in,
                          meta_out=24, sharing_mode="transitional", noise_std=1e-2, seed=seed)
  conv.build()
  return conv


class PhiOptimizerTest(parameterized.TestCase):

  def test_step_on_p_does_not_depend_on_the_other_side(self):
    # Same P init (same seed); the input side is RGB (S_Q = 3) or a wide searched
    # side (S_Q in the hundreds). Paper Eq. 5 on Phi = S_Q S_P scales P's step by
    # S_Q; the per-side step must not.
    narrow, wide = _conv(None, 3), _conv((16, 32, 48, 64), 160)
    np.testing.assert_array_equal(narrow.p.numpy(), wide.p.numpy())
    for conv in (narrow, wide):
      opt = transition.PhiOptimizer([conv], "exact", lr=0.05)
      for _ in range(20):
        opt.step()
    np.testing.assert_allclose(narrow.p.numpy(), wide.p.numpy(), atol=1e-5)
    moved = np.abs(narrow.p.numpy() - _conv(None, 3).p.numpy()).max()
    self.assertGreater(moved, 1e-2)
    # Eq. 5 on Phi itself (the old step) moves the two P differently.
    a, b = _conv(None, 3), _conv((16, 32, 48, 64), 160)
    for conv, (q, cands) in ((a, (None, None)), (b, (b.q.numpy(), (16, 32, 48, 64)))):
      x = tf.constant(conv.p.numpy())
      with tf.GradientTape() as tape:
        tape.watch(x)
        value = sharing.phi(q, x, fixed_in=3, in_candidates=cands, out_candidates=OUT)
      conv.p.assign(sharing.projected_step(x, tape.gradient(value, x),
                                           conv._out.mask, 1e-3))  # pylint: disable=protected-access
    self.assertGreater(np.abs(a.p.numpy() - b.p.numpy()).max(), 1e-3)

  def test_returns_exact_phi_before_the_step(self):
    conv = _conv((16, 32, 48, 64), 160)
    before = float(conv.phi())
    opt = transition.PhiOptimizer([conv], "reference", lr=1e-2, weight=5e-3, momentum=0.9)
    value, sums = opt.step(with_sums=True)
    np.testing.assert_allclose(float(value), before, rtol=1e-5)
    self.assertLen(sums, 2)
    self.assertLess(float(conv.phi()), before)

  @parameterized.parameters("exact", "reference")
  def test_momentum_and_weight_decay_follow_sgd(self, objective):
    conv = _conv(None, 3)
    p0 = conv.p.numpy()
    lr, w, m, wd = 0.1, 0.5, 0.9, 0.01
    opt = transition.PhiOptimizer([conv], objective, lr=lr, weight=w, momentum=m,
                                  weight_decay=wd)
    mask = conv._out.mask.numpy()  # pylint: disable=protected-access

    def grad(p):
      # Written from the paper, not from aps_tf.sharing: 'exact' descends
      # Eq. 4's double sum divided by the other side's sum (here the RGB
      # input, S_Q = ||I_3||^2 = 3); 'reference' the l1 off-diagonal of the
      # Gram matrix of [P_1 | ... | P_A].
      x = tf.constant(p)
      with tf.GradientTape() as tape:
        tape.watch(x)
        blocks = [x[o, :, :c] for o, c in enumerate(OUT)]
        if objective == "exact":
          s_q = 3.0
          value = tf.add_n([s_q * tf.reduce_sum(tf.square(tf.matmul(blocks[o], blocks[o2],
                                                                    transpose_a=True)))
                            for o in range(len(OUT)) for o2 in range(o, len(OUT))]) / s_q
        else:
          f = tf.concat(blocks, axis=1)
          gram = tf.abs(tf.matmul(f, f, transpose_a=True))
          value = tf.reduce_sum(gram) - tf.linalg.trace(gram)
      return tape.gradient(value, x).numpy()

    # The direct gradient against central finite differences of the same
    # direct formula at a few entries (the tape and the formula agree).
    if objective == "exact":
      g0 = grad(p0)
      def eq4(p):
        b = [p[o, :, :c].astype(np.float64) for o, c in enumerate(OUT)]
        return sum(np.sum((b[o].T @ b[o2]) ** 2) for o in range(3) for o2 in range(o, 3))
      for idx in ((0, 0, 0), (1, 3, 5), (2, 20, 11)):
        e = np.zeros(p0.shape)
        e[idx] = 1e-3
        fd = (eq4(p0 + e) - eq4(p0 - e)) / 2e-3
        self.assertAlmostEqual(g0[idx], fd, delta=1e-3 * max(1.0, abs(fd)))

    p, v = p0, np.zeros_like(p0)
    for _ in range(3):
      opt.step()
      v = m * v + w * grad(p) + wd * p
      p = p - lr * v
      p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) * mask[:, None, :]
    np.testing.assert_allclose(conv.p.numpy(), p, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), mask, atol=1e-5)

  @parameterized.parameters(("exact", 0.05), ("reference", 0.005))
  def test_anneals_towards_independent(self, objective, lr):
    conv = _conv((2, 4, 6), 12)
    start = float(conv.phi())
    opt = transition.PhiOptimizer([conv], objective, lr=lr, weight=1.0, momentum=0.5)
    step = tf.function(opt.step)
    for _ in range(300):
      step()
    end = float(conv.phi())
    floor = float(sum((2, 4, 6)) * sum(OUT))  # independent sharing, both sides
    self.assertLess(end, 0.6 * start)
    self.assertLess(end, 1.1 * floor)
    for var, mask in conv.projections:
      np.testing.assert_allclose(np.linalg.norm(var.numpy(), axis=1), mask.numpy(), atol=1e-5)

  def test_unknown_objective(self):
    with self.assertRaisesRegex(ValueError, "Unknown Phi objective"):
      transition.PhiOptimizer([_conv(None, 3)], "eq4")


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
