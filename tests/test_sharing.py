"""Sharing modes, Phi (paper Eq. 4, Theorem 3.1) and the projected step (Eq. 5)."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from aps_tf import sharing


def _unpad(stack, candidates):
  return [stack[a, :, :c] for a, c in enumerate(candidates)]


def _random_candidates(rng, num=4, max_width=24):
  return tuple(sorted(rng.choice(np.arange(1, max_width + 1), num, replace=False).tolist()))


def _semi_orthogonal_stack(rng, candidates, meta):
  """Random P_a with orthonormal columns (QR of Gaussians), zero-padded."""
  out = np.zeros((len(candidates), meta, max(candidates)), np.float32)
  for a, c in enumerate(candidates):
    q, _ = np.linalg.qr(rng.normal(size=(meta, c)))
    out[a, :, :c] = q
  return out


class InitTest(parameterized.TestCase):

  @parameterized.parameters("ordinal", "independent", "transitional")
  def test_columns_unit_norm_and_padding_zero(self, mode):
    cands = (3, 5, 8)
    p = sharing.init_projection(mode, cands, 16, noise_std=1e-2, seed=0)
    norms = np.linalg.norm(p, axis=1)
    np.testing.assert_allclose(norms, sharing.column_mask(cands), atol=1e-6)

  def test_ordinal_is_identity_block(self):
    p = sharing.init_projection("ordinal", (2, 4), 6)
    np.testing.assert_array_equal(p[1, :, :4], np.eye(6)[:, :4])
    np.testing.assert_array_equal(p[0, :, :2], np.eye(6)[:, :2])

  def test_independent_is_disjoint_rows(self):
    p = sharing.init_projection("independent", (2, 3), 5)
    np.testing.assert_array_equal(p[0, :, :2], np.eye(5)[:, 0:2])
    np.testing.assert_array_equal(p[1, :, :3], np.eye(5)[:, 2:5])

  def test_transitional_starts_near_ordinal(self):
    t = sharing.init_projection("transitional", (4, 8), 12, noise_std=1e-3, seed=1)
    o = sharing.init_projection("ordinal", (4, 8), 12)
    self.assertLess(np.abs(t - o).max(), 1e-2)
    self.assertGreater(np.abs(t - o).max(), 0)

  def test_independent_needs_sum_of_candidates(self):
    with self.assertRaisesRegex(ValueError, r"meta width 10 .* needs at least 12"):
      sharing.init_projection("independent", (4, 8), 10)

  def test_bad_mode_and_candidates(self):
    with self.assertRaisesRegex(ValueError, "Unknown sharing mode"):
      sharing.init_projection("shared", (4,), 4)
    with self.assertRaisesRegex(ValueError, "strictly increasing"):
      sharing.init_projection("ordinal", (8, 4), 8)


class PhiTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 2, 3, 4)
  def test_closed_form_equals_brute_force(self, seed):
    rng = np.random.default_rng(seed)
    cq, cp = _random_candidates(rng, 3, 10), _random_candidates(rng, 4, 12)
    q = rng.normal(size=(len(cq), 20, max(cq))).astype(np.float32) * sharing.column_mask(cq)[:, None]
    p = rng.normal(size=(len(cp), 20, max(cp))).astype(np.float32) * sharing.column_mask(cp)[:, None]
    closed = float(sharing.phi(q, p))
    live = float(sharing.phi(q, p, in_candidates=cq, out_candidates=cp))
    brute = sharing.phi_brute_force(_unpad(q, cq), _unpad(p, cp))
    np.testing.assert_allclose(closed, brute, rtol=1e-4)
    np.testing.assert_allclose(live, brute, rtol=1e-4)

  @parameterized.parameters(0, 1, 2)
  def test_narrow_meta_width_form(self, seed):
    # M < sum C takes the [M, M] outer-Gram path; same number as the brute force.
    rng = np.random.default_rng(seed)
    cands = _random_candidates(rng, 4, 9)
    meta = max(cands) + 1
    self.assertLess(meta, sum(cands))
    p = rng.normal(size=(4, meta, max(cands))).astype(np.float32) * sharing.column_mask(cands)[:, None]
    brute = sum(np.sum((a.T @ b) ** 2) for i, a in enumerate(_unpad(p, cands))
                for b in _unpad(p, cands)[i:])
    np.testing.assert_allclose(float(sharing.sharing_sum(p, cands)), brute, rtol=1e-4)
    np.testing.assert_allclose(float(sharing.sharing_sum(p)), brute, rtol=1e-4)

  @parameterized.parameters(0, 1, 2, 3, 4, 5)
  def test_theorem_3_1_ordinal_max_independent_min(self, seed):
    rng = np.random.default_rng(seed)
    cq, cp = _random_candidates(rng), _random_candidates(rng)
    meta = max(sum(cq), sum(cp))
    value = lambda mode: float(sharing.phi(
        sharing.init_projection(mode, cq, meta), sharing.init_projection(mode, cp, meta)))
    ordinal, independent = value("ordinal"), value("independent")
    # Closed forms: ||Q_i^T Q_i'||^2 = min(c_i, c_i') (ordinal), c_i on the diagonal only.
    s_ord = lambda c: sum(min(c[a], c[b]) for a in range(len(c)) for b in range(a, len(c)))
    self.assertAlmostEqual(ordinal, s_ord(cq) * s_ord(cp), places=2)
    self.assertAlmostEqual(independent, sum(cq) * sum(cp), places=2)
    for _ in range(10):
      q = _semi_orthogonal_stack(rng, cq, meta)
      p = _semi_orthogonal_stack(rng, cp, meta)
      v = float(sharing.phi(q, p))
      self.assertLessEqual(v, ordinal * (1 + 1e-5))
      self.assertGreaterEqual(v, independent * (1 - 1e-5))

  def test_fixed_side_is_identity(self):
    p = sharing.init_projection("ordinal", (2, 4), 4)
    np.testing.assert_allclose(float(sharing.phi(None, p, fixed_in=3)),
                               3 * float(sharing.sharing_sum(p)))


class ProjectedStepTest(parameterized.TestCase):

  @parameterized.parameters(1e-1, 1e-3)
  def test_step_keeps_unit_norm_and_zero_padding(self, lr):
    cands = (3, 6)
    p = tf.constant(sharing.init_projection("transitional", cands, 12, 1e-2, seed=0))
    mask = tf.constant(sharing.column_mask(cands))
    grad = tf.random.normal(p.shape, seed=1)
    new = sharing.projected_step(p, grad, mask, lr).numpy()
    np.testing.assert_allclose(np.linalg.norm(new, axis=1), mask.numpy(), atol=1e-5)
    self.assertEqual(np.abs(new[0, :, 3:]).max(), 0.0)

  def test_descent_reduces_phi_towards_independent(self):
    cands = (2, 4, 6)
    meta = 12
    q = tf.Variable(sharing.init_projection("transitional", cands, meta, 1e-2, seed=0))
    p = tf.Variable(sharing.init_projection("transitional", cands, meta, 1e-2, seed=1))
    mask = tf.constant(sharing.column_mask(cands))
    start = float(sharing.phi(q, p))
    for _ in range(300):
      with tf.GradientTape() as tape:
        value = sharing.phi(q, p)
      gq, gp = tape.gradient(value, [q, p])
      q.assign(sharing.projected_step(q, gq, mask, 1e-3))
      p.assign(sharing.projected_step(p, gp, mask, 1e-3))
    end = float(sharing.phi(q, p))
    floor = float(sum(cands) ** 2)
    self.assertLess(end, 0.6 * start)
    self.assertGreaterEqual(end, floor * (1 - 1e-3))
    self.assertLess(end, 1.05 * floor)


class ReferenceSurrogateTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 2)
  def test_offdiag_l1_equals_brute_force(self, seed):
    rng = np.random.default_rng(seed)
    cands = _random_candidates(rng, 3, 8)
    p = rng.normal(size=(3, 12, max(cands))).astype(np.float32) * sharing.column_mask(cands)[:, None]
    cat = np.concatenate(_unpad(p, cands), axis=1)
    gram = cat.T @ cat
    brute = np.abs(gram).sum() - np.abs(np.diag(gram)).sum()
    np.testing.assert_allclose(float(sharing.offdiag_l1(p, cands)), brute, rtol=1e-4)
    np.testing.assert_allclose(float(sharing.offdiag_l1(p)), brute, rtol=1e-4)

  def test_zero_at_independent_positive_at_ordinal(self):
    cands = (2, 3, 4)
    self.assertEqual(float(sharing.offdiag_l1(sharing.init_projection("independent", cands, 9))), 0)
    # Ordinal: columns with the same index coincide across candidates.
    ordinal = float(sharing.offdiag_l1(sharing.init_projection("ordinal", cands, 9), cands))
    self.assertEqual(ordinal, 2 * (2 * 3 + 1 * 1))  # pairs (a<b) sharing a column, both orders

  def test_side_terms_share_one_gram(self):
    cands = (2, 5)
    p = sharing.init_projection("transitional", cands, 8, 1e-1, seed=3)
    s, obj = sharing.side_terms(p, cands, "exact")
    self.assertEqual(float(s), float(obj))
    np.testing.assert_allclose(float(s), float(sharing.sharing_sum(p)), rtol=1e-6)
    s2, obj2 = sharing.side_terms(p, cands, "reference")
    np.testing.assert_allclose(float(s2), float(s), rtol=1e-6)
    np.testing.assert_allclose(float(obj2), float(sharing.offdiag_l1(p)), rtol=1e-6)
    with self.assertRaisesRegex(ValueError, "Unknown Phi objective"):
      sharing.side_terms(p, cands, "eq4")


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
