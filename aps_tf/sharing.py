"""Affine parameter sharing: projection init per mode, sharing level Phi, projected step.

A searched layer keeps, per side (input Q / output P), one projection per
candidate width. They are stored stacked and zero-padded as one array of shape
`[A, M, c_max]` (candidate, meta width, column): candidate `a` owns columns
`[:c_a]`, the rest are zero. Zero columns contribute nothing to Phi, receive a
zero gradient and stay zero under the unit-norm projection, so every function
here works on the padded stack directly and one graph serves every candidate.

Pure functions on numpy (init) or tensors (Phi, step); no Keras state here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from aps_tf import schema

MODES = schema.SHARING_MODES
# What the transition minimises per side (`aps_tf.transition`).
OBJECTIVES = schema.PHI_OBJECTIVES


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"Unknown sharing mode {mode!r}; expected one of {MODES}.")
  return mode


def check_candidates(candidates: Sequence[int], meta_width: int, mode: str,
                     where: str = "layer") -> tuple[int, ...]:
  """Validates a candidate set against the meta width for a sharing mode."""
  cands = tuple(int(c) for c in candidates)
  if not cands or any(c <= 0 for c in cands):
    raise ValueError(f"{where}: candidate widths must be positive, got {cands}.")
  if list(cands) != sorted(set(cands)):
    raise ValueError(f"{where}: candidate widths must be strictly increasing, got {cands}.")
  need = sum(cands) if mode == "independent" else cands[-1]
  if meta_width < need:
    rule = "sum of candidates" if mode == "independent" else "largest candidate"
    raise ValueError(
        f"{where}: meta width {meta_width} is too small for {mode} sharing of "
        f"candidates {cands}: needs at least {need} (the {rule}).")
  return cands


def init_projection(mode: str, candidates: Sequence[int], meta_width: int,
                    noise_std: float = 0.0, seed: int | None = None) -> np.ndarray:
  """Returns the stacked, zero-padded projections `[A, M, c_max]` for a mode.

  ordinal: candidate a is the first c_a standard basis vectors (APS-O).
  independent: candidate a takes the disjoint rows from sum(c_p, p < a) (APS-I).
  transitional: ordinal plus N(0, noise_std^2) on the live columns, columns
    renormalised (APS-T starts at maximal sharing; the noise breaks the
    symmetry, ordinal being a stationary point of Phi).
  """
  check_mode(mode)
  cands = check_candidates(candidates, meta_width, mode)
  proj = np.zeros((len(cands), meta_width, cands[-1]), np.float32)
  offset = 0
  for a, c in enumerate(cands):
    start = offset if mode == "independent" else 0
    proj[a, start + np.arange(c), np.arange(c)] = 1.0
    offset += c
  if schema.is_transitional(mode) and noise_std > 0:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, noise_std, proj.shape).astype(np.float32)
    proj = proj + noise * column_mask(cands)[:, None, :]
    proj = proj / np.maximum(np.linalg.norm(proj, axis=1, keepdims=True), 1e-12)
  return proj


def column_mask(candidates: Sequence[int]) -> np.ndarray:
  """`[A, c_max]` float mask of the live columns of each candidate."""
  cands = np.asarray(candidates)
  return (np.arange(cands.max())[None, :] < cands[:, None]).astype(np.float32)


def live_columns(candidates: Sequence[int]) -> np.ndarray:
  """Indices of the live columns in the flattened `[A * c_max]` column axis."""
  cmax = max(candidates)
  return np.concatenate([a * cmax + np.arange(c) for a, c in enumerate(candidates)])


def _gram(proj: tf.Tensor, candidates: Sequence[int] | None) -> tuple[tf.Tensor, np.ndarray]:
  """Gram matrix of the concatenated `[P_1 | ... | P_A]` and each column's owner.

  With `candidates`, the Gram matrix is built over the live columns only,
  `[sum C, sum C]` instead of `[A c_max, A c_max]` (6.7x less work for
  {4, 8, 16, 32, 64}); the padded columns are zero, so both give the same sums.
  """
  proj = tf.convert_to_tensor(proj)
  num, meta, cmax = proj.shape
  flat = tf.reshape(tf.transpose(proj, [1, 0, 2]), [meta, num * cmax])
  owner = np.repeat(np.arange(num), cmax)
  if candidates is not None:
    live = live_columns(candidates)
    flat = tf.gather(flat, live, axis=1)
    owner = owner[live]
  return tf.matmul(flat, flat, transpose_a=True), owner


def _sharing_sum_of_gram(gram: tf.Tensor, owner: np.ndarray) -> tf.Tensor:
  same_block = tf.constant(owner[:, None] == owner[None, :], gram.dtype)
  squared = tf.square(gram)
  return 0.5 * (tf.reduce_sum(squared) + tf.reduce_sum(squared * same_block))


def _offdiag_l1_of_gram(gram: tf.Tensor) -> tf.Tensor:
  return tf.reduce_sum(tf.abs(gram)) - tf.reduce_sum(tf.abs(tf.linalg.diag_part(gram)))


def sharing_sum(proj: tf.Tensor, candidates: Sequence[int] | None = None) -> tf.Tensor:
  """S = sum_{a <= b} ||P_a^T P_b||_F^2 from one Gram matrix.

  ||P_a^T P_b||_F = ||P_b^T P_a||_F, so the upper block triangle (diagonal
  included) is half of (all blocks + diagonal blocks). When the meta width M
  is below the number of live columns N (ResNet-18, MobileNetV2 spaces), the
  sum over all blocks is taken as ||F F^T||_F^2 = ||F^T F||_F^2 over the
  `[M, M]` outer Gram matrix instead (M^2 N instead of M N^2 work), and the
  diagonal blocks one candidate at a time.
  """
  proj = tf.convert_to_tensor(proj)
  num, meta, cmax = proj.shape
  if candidates is None or meta >= sum(candidates):
    return _sharing_sum_of_gram(*_gram(proj, candidates))
  flat = tf.gather(tf.reshape(tf.transpose(proj, [1, 0, 2]), [meta, num * cmax]),
                   live_columns(candidates), axis=1)
  total = tf.reduce_sum(tf.square(tf.matmul(flat, flat, transpose_b=True)))
  blocks = tf.add_n([tf.reduce_sum(tf.square(tf.matmul(proj[a, :, :c], proj[a, :, :c],
                                                       transpose_a=True)))
                     for a, c in enumerate(candidates)])
  return 0.5 * (total + blocks)


def offdiag_l1(proj: tf.Tensor, candidates: Sequence[int] | None = None) -> tf.Tensor:
  """sum_{x != y} |G_xy| over the Gram matrix G of all candidates' columns.

  The reference implementation's surrogate of Phi ("reference" objective):
  the l1 norm of the off-diagonal of the Gram matrix of one side's
  concatenated projections `[P_1 | ... | P_A]`.
  """
  return _offdiag_l1_of_gram(_gram(proj, candidates)[0])


def side_terms(proj: tf.Tensor, candidates: Sequence[int] | None,
               objective: str) -> tuple[tf.Tensor, tf.Tensor]:
  """(S, the side's objective) of one side (one Gram matrix for both).

  `objective` 'exact': the side's own sharing sum S (see `aps_tf.transition`);
  'reference': `offdiag_l1`. S is returned for logging Phi = S_Q * S_P.
  """
  check_objective(objective)
  if objective == "exact":
    s = sharing_sum(proj, candidates)
    return s, s
  gram, owner = _gram(proj, candidates)
  s = _sharing_sum_of_gram(gram, owner)
  return s, (s if objective == "exact" else _offdiag_l1_of_gram(gram))


def check_objective(objective: str) -> str:
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown Phi objective {objective!r}; expected one of {OBJECTIVES}.")
  return objective


def identity_sharing_sum(width: int) -> float:
  """S for a fixed (unsearched) side: one identity projection, ||I||_F^2."""
  return float(width)


def phi(q: tf.Tensor | None, p: tf.Tensor | None, fixed_in: int = 0,
        fixed_out: int = 0, in_candidates: Sequence[int] | None = None,
        out_candidates: Sequence[int] | None = None) -> tf.Tensor:
  """Paper Eq. 4 for one layer: Phi = S_Q * S_P (the double sum factorises).

  A side without a search decision (the stem's RGB input, the classifier's
  logits) is the identity: pass None and its width as `fixed_in`/`fixed_out`.
  Candidates, when given, restrict the Gram matrices to the live columns.
  """
  s_q = (sharing_sum(q, in_candidates) if q is not None
         else tf.constant(identity_sharing_sum(fixed_in)))
  s_p = (sharing_sum(p, out_candidates) if p is not None
         else tf.constant(identity_sharing_sum(fixed_out)))
  return s_q * s_p


def phi_brute_force(qs: Sequence[np.ndarray], ps: Sequence[np.ndarray]) -> float:
  """The literal double sum of Eq. 4 over unpadded per-candidate matrices (tests)."""
  total = 0.0
  for i in range(len(qs)):
    for i2 in range(i, len(qs)):
      for o in range(len(ps)):
        for o2 in range(o, len(ps)):
          total += (np.sum((qs[i].T @ qs[i2]) ** 2) *
                    np.sum((ps[o].T @ ps[o2]) ** 2))
  return float(total)


def normalize_columns(proj: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """Projects every live column onto the unit sphere; padded columns stay 0."""
  norm = tf.norm(proj, axis=1, keepdims=True)
  return proj / tf.maximum(norm, 1e-12) * mask[:, None, :]


def projected_step(proj: tf.Tensor, grad: tf.Tensor, mask: tf.Tensor,
                   lr: float | tf.Tensor) -> tf.Tensor:
  """Paper Eq. 5: p <- normalize(p - tau * dPhi/dp)."""
  return normalize_columns(proj - lr * grad, mask)
